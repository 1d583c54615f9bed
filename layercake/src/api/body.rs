//! The REST API's write bodies (bulk set, plan, freeze) and their parsing,
//! apart from the server so that tests and the fuzz target reach them.
//!
//! Depends on `serde` and `serde_json` only (the fuzz target includes this
//! file by path). Every parse returns a [`BodyError`]; nothing panics on a
//! request body.

use serde::Deserialize;
use serde_json::Value as Json;

/// Largest request body accepted.
pub const BODY_BYTES_MAX: usize = 4 << 20;

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Larger than [`BODY_BYTES_MAX`].
    TooLarge,
    /// Not the expected JSON; the message says where and what.
    Bad(String),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge => write!(f, "body larger than {BODY_BYTES_MAX} bytes"),
            BodyError::Bad(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for BodyError {}

/// Parses a JSON body; an empty (or blank) body is `T::default()`.
pub fn parse_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, BodyError> {
    if body.len() > BODY_BYTES_MAX {
        return Err(BodyError::TooLarge);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| BodyError::Bad(format!("bad JSON body: {e}")))
}

/// Values to write: `{"URL": "VALUE"}` or `["URL=VALUE", ...]`.
#[derive(Deserialize, Default, Debug)]
#[serde(untagged)]
pub enum Values {
    /// No values.
    #[default]
    None,
    /// `{"URL": "VALUE"}` (strings, booleans and numbers).
    Map(serde_json::Map<String, Json>),
    /// `["URL=VALUE", ...]`.
    List(Vec<String>),
}

impl Values {
    /// The `(URL, VALUE)` pairs, in the body's order.
    pub fn pairs(self) -> Result<Vec<(String, String)>, BodyError> {
        match self {
            Values::None => Ok(Vec::new()),
            Values::Map(m) => m
                .into_iter()
                .map(|(k, v)| match v {
                    Json::String(s) => Ok((k, s)),
                    Json::Bool(b) => Ok((k, b.to_string())),
                    Json::Number(n) => Ok((k, n.to_string())),
                    other => Err(BodyError::Bad(format!(
                        "value of `{k}` must be a string, not {other}"
                    ))),
                })
                .collect(),
            Values::List(l) => l
                .into_iter()
                .map(|w| {
                    w.split_once('=')
                        .map(|(u, v)| (u.trim().to_string(), v.trim().to_string()))
                        .ok_or_else(|| BodyError::Bad(format!("`{w}` is not URL=VALUE")))
                })
                .collect(),
        }
    }
}

/// The body of bulk writes, plan and freeze.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct WriteBody {
    /// A hostlist of node names.
    #[serde(default)]
    pub hosts: Option<String>,
    /// A group of the topology (`r07`).
    #[serde(default)]
    pub group: Option<String>,
    /// A URL filter (`URL=VALUE`).
    #[serde(default)]
    pub filter: Option<String>,
    /// Which side the filter reads (`cfg` or `dsc`).
    #[serde(default)]
    pub side: Option<String>,
    /// Every node.
    #[serde(default)]
    pub all: bool,
    /// What to write.
    #[serde(default)]
    pub values: Values,
    /// Start from an empty Cfg instead of merging.
    #[serde(default)]
    pub replace: bool,
}

/// The body of a write to one node: only values.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct OneBody {
    /// What to write.
    #[serde(default)]
    pub values: Values,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_parse_or_say_why() {
        let b: WriteBody =
            parse_json(br#"{"hosts":"n[1-2]","values":{"/PhysState":"POWER_ON","/x":3}}"#).unwrap();
        assert_eq!(b.hosts.as_deref(), Some("n[1-2]"));
        assert_eq!(b.values.pairs().unwrap().len(), 2);
        let b: WriteBody = parse_json(br#"{"values":["/Busy=BUSY"]}"#).unwrap();
        assert_eq!(
            b.values.pairs().unwrap(),
            vec![("/Busy".into(), "BUSY".into())]
        );
        assert!(parse_json::<WriteBody>(b"{nope").is_err());
        assert!(parse_json::<WriteBody>(br#"{"bogus":1}"#).is_err());
        let b: WriteBody = parse_json(br#"{"values":{"/a":[1]}}"#).unwrap();
        assert!(b.values.pairs().is_err());
        let b: WriteBody = parse_json(br#"{"values":["no-equals"]}"#).unwrap();
        assert!(b.values.pairs().is_err());
        assert!(parse_json::<WriteBody>(b"  \n").is_ok());
        let big = vec![b' '; BODY_BYTES_MAX + 1];
        assert_eq!(
            parse_json::<WriteBody>(&big).unwrap_err(),
            BodyError::TooLarge
        );
    }
}

/// Most entries one batch may hold.
pub const BATCH_ENTRIES_MAX: usize = 10_000;
/// A batch may select, over all its entries, at most this many times the
/// cluster's node count ...
pub const BATCH_NODES_PER_NODE: u64 = 4;
/// ... or this many nodes, whichever is more.
pub const BATCH_NODES_MIN: u64 = 100_000;

/// The body of `POST /api/v1/cfg/batch`: writes committed all or nothing.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// The writes, in order (each a bulk-write body).
    #[serde(default)]
    pub entries: Vec<WriteBody>,
    /// Validate and report only.
    #[serde(default)]
    pub dry_run: bool,
}
