//! `ctl apply -f`: the file's strict reading. Every key is known or
//! refused with its `FILE:LINE:COLUMN` and the valid keys; booleans are
//! booleans; hostlists and URLs are checked before anything is sent. The
//! result is the body of one `POST /api/v1/cfg/batch`: the root commits
//! the whole file in one transaction, or nothing.
//!
//! ```yaml
//! nodes:
//!   - hosts: c[0101-0116]    # or name:, group:, filter: (+ side:), all: true
//!     values: {/PhysState: POWER_ON}
//!     replace: false
//!   - name: c0201            # the shape `get nodes -o yaml` prints
//!     cfg: {/PhysState: POWER_OFF}
//! ```

use serde_json::{Map, Value as Json, json};
use topo::yaml::{Kind, Node, Pos};

use crate::cli::urls;

/// Keys of an entry that select nodes.
const SELECT_KEYS: [&str; 6] = ["hosts", "name", "group", "filter", "side", "all"];
/// Keys of an entry that say what to write.
const WRITE_KEYS: [&str; 3] = ["values", "cfg", "replace"];
/// Keys `get nodes -o yaml` prints that are read-only: accepted, ignored.
const READ_ONLY_KEYS: [&str; 5] = ["rack", "dsc", "converged", "frozen", "chain"];

/// One entry of the file: where it starts and its batch body.
#[derive(Debug)]
pub struct Entry {
    /// Where the entry starts.
    pub pos: Pos,
    /// The entry as a bulk-write body.
    pub body: Json,
}

/// A problem in the file, at a position.
#[derive(Debug, PartialEq, Eq)]
pub struct FileError {
    /// Where.
    pub pos: Pos,
    /// What.
    pub message: String,
}

impl FileError {
    fn at(pos: Pos, message: impl Into<String>) -> FileError {
        FileError {
            pos,
            message: message.into(),
        }
    }

    /// `FILE:LINE:COLUMN: MESSAGE`.
    pub fn show(&self, file: &str) -> String {
        format!(
            "{file}:{}:{}: {}",
            self.pos.line, self.pos.col, self.message
        )
    }
}

fn scalar(n: &Node) -> Option<(&str, bool)> {
    match &n.kind {
        Kind::Scalar { text, plain } => Some((text.as_str(), *plain)),
        _ => None,
    }
}

fn string(n: &Node, key: &str) -> Result<String, FileError> {
    match scalar(n) {
        Some((t, _)) if !n.is_null() => Ok(t.to_string()),
        _ => Err(FileError::at(
            n.pos,
            format!("`{key}` must be a string, not {}", n.type_name()),
        )),
    }
}

fn boolean(n: &Node, key: &str) -> Result<bool, FileError> {
    match scalar(n) {
        Some(("true", true)) => Ok(true),
        Some(("false", true)) => Ok(false),
        _ => Err(FileError::at(
            n.pos,
            format!(
                "`{key}` must be true or false, not {}",
                scalar(n).map_or_else(|| n.type_name().to_string(), |(t, _)| format!("`{t}`"))
            ),
        )),
    }
}

fn mapping<'a>(n: &'a Node, what: &str) -> Result<&'a [(Node, Node)], FileError> {
    match &n.kind {
        Kind::Map(m) => Ok(m),
        _ => Err(FileError::at(
            n.pos,
            format!("{what} must be a mapping, not {}", n.type_name()),
        )),
    }
}

/// `URL: VALUE` pairs, URLs expanded and checked, values as text.
fn values(n: &Node, key: &str) -> Result<Map<String, Json>, FileError> {
    let mut out = Map::new();
    for (k, v) in mapping(n, &format!("`{key}`"))? {
        let url = urls::expand(&string(k, "a URL")?);
        if let Err(e) = url.parse::<engine::url::Url>() {
            return Err(FileError::at(k.pos, format!("bad URL `{url}`: {e}")));
        }
        let text = match scalar(v) {
            Some((t, _)) if !v.is_null() => t.to_string(),
            _ => {
                return Err(FileError::at(
                    v.pos,
                    format!(
                        "the value of `{url}` must be a scalar, not {}",
                        v.type_name()
                    ),
                ));
            }
        };
        if out.insert(url.clone(), Json::String(text)).is_some() {
            return Err(FileError::at(k.pos, format!("`{url}` given twice")));
        }
    }
    Ok(out)
}

fn hostlist(n: &Node, key: &str) -> Result<String, FileError> {
    let h = string(n, key)?;
    topo::hostlist::count(&h)
        .map_err(|e| FileError::at(n.pos, format!("bad hostlist `{h}`: {e}")))?;
    Ok(h)
}

fn entry(n: &Node) -> Result<Entry, FileError> {
    let map = mapping(n, "an entry of `nodes`")?;
    let mut body = Map::new();
    let mut seen: Vec<String> = Vec::new();
    let mut vals = None;
    let mut cfg = None;
    let mut replace = None;
    for (k, v) in map {
        let key = string(k, "a key")?;
        if seen.contains(&key) {
            return Err(FileError::at(k.pos, format!("`{key}` given twice")));
        }
        match key.as_str() {
            "hosts" | "name" => {
                if body.contains_key("hosts") {
                    return Err(FileError::at(
                        k.pos,
                        "give either `hosts` or `name`, not both",
                    ));
                }
                body.insert("hosts".into(), json!(hostlist(v, &key)?));
            }
            "group" => {
                let g = string(v, "group")?;
                body.insert("group".into(), json!(g.trim_start_matches('@')));
            }
            "filter" => {
                let f = string(v, "filter")?;
                let mut parts = Vec::new();
                for p in f.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let Some((u, _)) = p.split_once('=') else {
                        return Err(FileError::at(v.pos, format!("`{p}` is not URL=VALUE")));
                    };
                    if let Err(e) = urls::expand(u.trim()).parse::<engine::url::Url>() {
                        return Err(FileError::at(v.pos, format!("bad URL `{u}`: {e}")));
                    }
                    parts.push(urls::expand_pair(p));
                }
                body.insert("filter".into(), json!(parts.join(",")));
            }
            "side" => {
                let s = string(v, "side")?;
                if s != "cfg" && s != "dsc" {
                    return Err(FileError::at(
                        v.pos,
                        format!("`side` must be cfg or dsc, not `{s}`"),
                    ));
                }
                body.insert("side".into(), json!(s));
            }
            "all" => {
                body.insert("all".into(), json!(boolean(v, "all")?));
            }
            "values" => vals = Some(values(v, "values")?),
            "cfg" => cfg = Some(values(v, "cfg")?),
            "replace" => replace = Some((k.pos, boolean(v, "replace")?)),
            k2 if READ_ONLY_KEYS.contains(&k2) => {}
            other => {
                let valid: Vec<&str> = SELECT_KEYS
                    .iter()
                    .chain(&WRITE_KEYS)
                    .chain(&READ_ONLY_KEYS)
                    .copied()
                    .collect();
                return Err(FileError::at(
                    k.pos,
                    format!(
                        "unknown key `{other}` (valid keys: {}; {} are read-only and ignored)",
                        valid[..SELECT_KEYS.len() + WRITE_KEYS.len()].join(", "),
                        READ_ONLY_KEYS.join(", ")
                    ),
                ));
            }
        }
        seen.push(key);
    }
    let selects = ["hosts", "group", "filter", "all"]
        .iter()
        .any(|k| body.get(*k).is_some_and(|v| v != &json!(false)));
    if !selects {
        return Err(FileError::at(
            n.pos,
            "the entry selects no node: give `hosts` (or `name`), `group`, `filter` or `all: true`",
        ));
    }
    match (vals, cfg) {
        (Some(v), None) => {
            if v.is_empty() {
                return Err(FileError::at(n.pos, "`values` is empty"));
            }
            body.insert("values".into(), Json::Object(v));
            body.insert("replace".into(), json!(replace.is_some_and(|(_, r)| r)));
        }
        (None, Some(mut c)) => {
            if let Some((p, _)) = replace {
                return Err(FileError::at(
                    p,
                    "`replace` goes with `values`; `cfg` always replaces",
                ));
            }
            c.remove("/Nodename");
            if c.is_empty() {
                return Err(FileError::at(
                    n.pos,
                    "`cfg` is empty (to reset a node use `ctl delete`)",
                ));
            }
            body.insert("values".into(), Json::Object(c));
            body.insert("replace".into(), json!(true));
        }
        (Some(_), Some(_)) => {
            return Err(FileError::at(
                n.pos,
                "give either `values` or `cfg`, not both",
            ));
        }
        (None, None) => {
            return Err(FileError::at(
                n.pos,
                "the entry writes nothing: give `values` (merged) or `cfg` (replaces)",
            ));
        }
    }
    Ok(Entry {
        pos: n.pos,
        body: Json::Object(body),
    })
}

/// Reads an apply file (YAML, or JSON which is YAML) strictly.
pub fn parse(text: &str) -> Result<Vec<Entry>, FileError> {
    let start = Pos { line: 1, col: 1 };
    let root = topo::yaml::parse(text)
        .map_err(|(pos, m)| FileError::at(pos, format!("not YAML: {m}")))?
        .ok_or_else(|| FileError::at(start, "the file is empty (expected `nodes:`)"))?;
    let mut nodes = None;
    for (k, v) in mapping(&root, "the file")? {
        match string(k, "a key")?.as_str() {
            "nodes" => nodes = Some(v),
            other => {
                return Err(FileError::at(
                    k.pos,
                    format!("unknown key `{other}` (the file holds one key: `nodes`)"),
                ));
            }
        }
    }
    let nodes =
        nodes.ok_or_else(|| FileError::at(root.pos, "expected a top-level `nodes:` list"))?;
    let Kind::Seq(items) = &nodes.kind else {
        return Err(FileError::at(
            nodes.pos,
            format!("`nodes` must be a list, not {}", nodes.type_name()),
        ));
    };
    if items.is_empty() {
        return Err(FileError::at(nodes.pos, "`nodes` is empty"));
    }
    items.iter().map(entry).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> FileError {
        parse(text).unwrap_err()
    }

    #[test]
    fn a_good_file_becomes_batch_bodies() {
        let e = parse(
            "nodes:\n  - hosts: n[1-2]\n    values:\n      /PhysState: POWER_ON\n      /Busy: 2\n  - name: n3\n    rack: r1\n    cfg: {/Nodename: n3, /PhysState: POWER_OFF}\n  - group: '@r07'\n    values: {bmc.port: 623}\n",
        )
        .unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].body["values"]["/Busy"], "2");
        assert_eq!(e[0].body["replace"], false);
        assert_eq!(e[1].body["replace"], true);
        assert!(e[1].body["values"].get("/Nodename").is_none());
        assert_eq!(e[1].pos.line, 6);
        assert_eq!(e[2].body["group"], "r07");
        assert_eq!(
            e[2].body["values"][urls::expand("bmc.port")],
            "623",
            "{:?}",
            e[2].body
        );
    }

    #[test]
    fn typos_are_refused_with_their_position() {
        let e =
            err("nodes:\n  - hosts: n1\n    replce: true\n    values: {/PhysState: POWER_ON}\n");
        assert_eq!((e.pos.line, e.pos.col), (3, 5), "{e:?}");
        assert!(e.message.contains("unknown key `replce`"), "{}", e.message);
        assert!(e.message.contains("replace"), "{}", e.message);
        let e = err("nodes:\n  - hots: n1\n    values: {/PhysState: POWER_ON}\n");
        assert_eq!(e.pos.line, 2);
        let e = err("nodez: []\n");
        assert!(e.message.contains("nodez"), "{}", e.message);
    }

    #[test]
    fn booleans_are_booleans() {
        let e =
            err("nodes:\n  - hosts: n1\n    replace: yes\n    values: {/PhysState: POWER_ON}\n");
        assert_eq!(e.pos.line, 3);
        assert!(e.message.contains("true or false"), "{}", e.message);
    }

    #[test]
    fn hostlists_and_urls_are_checked_before_sending() {
        let e = err("nodes:\n  - hosts: 'n[1-'\n    values: {/PhysState: POWER_ON}\n");
        assert!(e.message.contains("bad hostlist"), "{}", e.message);
        let e = err("nodes:\n  - hosts: n1\n    values: {PhysState: POWER_ON}\n");
        assert!(e.message.contains("bad URL"), "{}", e.message);
        let e = err("nodes:\n  - values: {/PhysState: POWER_ON}\n");
        assert!(e.message.contains("selects no node"), "{}", e.message);
        let e = err("nodes:\n  - hosts: n1\n");
        assert!(e.message.contains("writes nothing"), "{}", e.message);
        let e = err("nodes:\n  - hosts: n1\n    values: {/PhysState: [a]}\n");
        assert!(e.message.contains("scalar"), "{}", e.message);
    }

    #[test]
    fn broken_yaml_points_at_the_line() {
        let e = err("nodes:\n  - hosts: n1\n    values: {/PhysState: POWER_ON\n");
        assert!(e.pos.line >= 3, "{e:?}");
        assert!(e.message.starts_with("not YAML"), "{}", e.message);
    }
}
