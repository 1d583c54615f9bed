//! `layercake ctl`: the command-line client of the root's API, in the style
//! of `kubectl` and `wwctl`.
//!
//! Exit codes a script can rely on (also in `docs/cli.md`):
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | success |
//! | 1 | the server failed (5xx) or answered something unexpected |
//! | 2 | bad command line (usage) |
//! | 3 | the API could not be reached |
//! | 4 | a node or route does not exist (404) |
//! | 5 | the request was rejected (other 4xx: bad URL, value, hostlist) |
//! | 6 | `apply -f`: the file could not be read or parsed |
//! | 7 | not authorised (401, 403) or an unusable `--token-file` |
//!
//! Errors go to standard error as `error: MESSAGE`; data to standard output.

use std::collections::{BTreeMap, HashSet};
use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value as Json, json};

use crate::cli::DEFAULT_API;
use crate::cli::http::{self, HttpError};
use crate::cli::yaml;

/// Success.
pub const EXIT_OK: i32 = 0;
/// Server error or unexpected answer.
pub const EXIT_SERVER: i32 = 1;
/// Usage error (clap uses 2 as well).
pub const EXIT_USAGE: i32 = 2;
/// The API could not be reached.
pub const EXIT_UNREACHABLE: i32 = 3;
/// Not found.
pub const EXIT_NOT_FOUND: i32 = 4;
/// Rejected request.
pub const EXIT_REJECTED: i32 = 5;
/// Unreadable input file.
pub const EXIT_INPUT: i32 = 6;
/// Not authorised (HTTP 401 or 403), or an unusable token file.
pub const EXIT_AUTH: i32 = 7;

/// `layercake ctl`.
#[derive(Args, Debug)]
pub struct CtlArgs {
    /// The root's API address (`host:port`, or `https://host:port`); also
    /// `LAYERCAKE_API`.
    #[arg(long, env = "LAYERCAKE_API", default_value = DEFAULT_API, global = true)]
    pub api: String,
    /// Never colour the output (also `NO_COLOR`).
    #[arg(long, global = true)]
    pub no_color: bool,
    /// A file holding the API token (mode 0600); else `LAYERCAKE_TOKEN`.
    #[arg(long, env = "LAYERCAKE_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// The CA certificate (PEM) of an `https://` API.
    #[arg(long, env = "LAYERCAKE_API_CA", global = true)]
    pub api_ca: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub cmd: CtlCmd,
}

/// Output formats of `get`.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Output {
    /// The main states, one row per node.
    Table,
    /// More columns (PXE, frozen).
    Wide,
    /// The API's JSON.
    Json,
    /// The same as YAML.
    Yaml,
}

/// `ctl` subcommands.
#[derive(Subcommand, Debug)]
pub enum CtlCmd {
    /// List nodes: `get nodes [HOSTLIST]`.
    Get {
        /// The resource: `nodes` (or `node`).
        resource: String,
        /// Which nodes (a hostlist such as `n[0001-0010]`; default all).
        hosts: Option<String>,
        /// Only nodes where `URL=VALUE` holds (comma-separated for several).
        #[arg(long)]
        filter: Option<String>,
        /// The copy `--filter` reads.
        #[arg(long, default_value = "dsc")]
        side: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// One node in full: Cfg and Dsc side by side and its active chain.
    Describe {
        /// The node.
        node: String,
        /// Output format (table: side by side).
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Image-set rollouts: `rollout status HOSTLIST [--wait]`.
    Rollout {
        /// `status`.
        action: String,
        /// Which nodes (default all).
        hosts: Option<String>,
        /// Wait (with a progress bar) until no node is rolling or waiting.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long (exit 1).
        #[arg(long, value_parser = ::topo::duration::parse_flag)]
        timeout: Option<std::time::Duration>,
    },
    /// Set Cfg values: `set HOSTLIST URL=VALUE...`.
    Set {
        /// Which nodes.
        hosts: String,
        /// `URL=VALUE` pairs, e.g. `/PhysState=POWER_ON`.
        #[arg(required = true)]
        values: Vec<String>,
        /// Start from an empty Cfg instead of the current one.
        #[arg(long)]
        replace: bool,
    },
    /// Apply a file of Cfg changes (YAML or JSON; see docs/cli.md).
    Apply {
        /// The file (`-` for standard input).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Reset Cfg to empty (nothing wanted): `delete HOSTLIST`.
    Delete {
        /// Which nodes.
        hosts: String,
    },
    /// Show the chains that would run, without running them.
    Plan {
        /// Which nodes.
        hosts: String,
        /// `URL=VALUE` pairs.
        #[arg(required = true)]
        values: Vec<String>,
        /// Output format (table: nodes grouped by chain).
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Follow the event stream (value changes) until interrupted.
    Watch {
        /// Only these nodes.
        hosts: Option<String>,
        /// Print the raw JSON of each event.
        #[arg(long)]
        json: bool,
    },
    /// The mutation graph (JSON, or Graphviz with `--dot`).
    Graph {
        /// Graphviz DOT instead of JSON.
        #[arg(long)]
        dot: bool,
    },
    /// Stop the engines of nodes (default: all) from driving.
    Freeze {
        /// Which nodes (default all).
        hosts: Option<String>,
    },
    /// Let frozen nodes be driven again (default: all).
    Thaw {
        /// Which nodes (default all).
        hosts: Option<String>,
    },
    /// The root's health.
    Health,
}

/// A failure with its exit code.
struct Fail {
    code: i32,
    message: String,
}

type R<T> = Result<T, Fail>;

impl From<HttpError> for Fail {
    fn from(e: HttpError) -> Fail {
        let code = match e {
            HttpError::Connect { .. } => EXIT_UNREACHABLE,
            _ => EXIT_SERVER,
        };
        Fail {
            code,
            message: e.to_string(),
        }
    }
}

/// Runs a `ctl` command; returns the exit code.
pub fn main(a: CtlArgs) -> i32 {
    crate::daemon::sys::default_sigpipe();
    let color =
        !a.no_color && std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal();
    let token = match a.token_file {
        Some(f) => crate::security::tokens::read_token_file(&f).map(Some),
        None => Ok(std::env::var("LAYERCAKE_TOKEN")
            .ok()
            .map(|t| t.trim().to_string())),
    };
    match token {
        Ok(t) => http::set_token(t),
        Err(e) => {
            eprintln!("error: --token-file: {e}");
            return EXIT_AUTH;
        }
    }
    if let Some(ca) = a.api_ca {
        http::set_tls_ca(ca);
    }
    let c = Client { api: a.api, color };
    match c.run(a.cmd) {
        Ok(()) => EXIT_OK,
        Err(f) => {
            eprintln!("error: {}", f.message);
            f.code
        }
    }
}

/// Percent-encodes a query component.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn pairs(values: &[String]) -> R<Vec<String>> {
    for v in values {
        if !v.contains('=') {
            return Err(Fail {
                code: EXIT_USAGE,
                message: format!("`{v}` is not URL=VALUE (e.g. /PhysState=POWER_ON)"),
            });
        }
    }
    Ok(values.to_vec())
}

struct Client {
    api: String,
    color: bool,
}

impl Client {
    fn call(&self, method: &str, path: &str, body: Option<Json>) -> R<Json> {
        let bytes = body.map(|b| b.to_string().into_bytes());
        let r = http::request(&self.api, method, path, bytes.as_deref())?;
        let parsed: Option<Json> = serde_json::from_slice(&r.body).ok();
        if (200..300).contains(&r.status) {
            return parsed.ok_or_else(|| Fail {
                code: EXIT_SERVER,
                message: format!("the API answered {} with a body that is not JSON", r.status),
            });
        }
        let message = parsed
            .as_ref()
            .and_then(|j| j["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&r.body).trim().to_string());
        let code = match r.status {
            404 => EXIT_NOT_FOUND,
            401 | 403 => EXIT_AUTH,
            400..=499 => EXIT_REJECTED,
            _ => EXIT_SERVER,
        };
        Err(Fail {
            code,
            message: format!("{message} (HTTP {})", r.status),
        })
    }

    fn text(&self, path: &str) -> R<String> {
        let r = http::request(&self.api, "GET", path, None)?;
        if !(200..300).contains(&r.status) {
            return Err(Fail {
                code: EXIT_SERVER,
                message: format!("HTTP {}", r.status),
            });
        }
        Ok(String::from_utf8_lossy(&r.body).into_owned())
    }

    fn run(&self, cmd: CtlCmd) -> R<()> {
        match cmd {
            CtlCmd::Get {
                resource,
                hosts,
                filter,
                side,
                output,
            } => {
                if !matches!(resource.as_str(), "nodes" | "node" | "no") {
                    return Err(Fail {
                        code: EXIT_USAGE,
                        message: format!("unknown resource `{resource}` (try `get nodes`)"),
                    });
                }
                let mut q = Vec::new();
                if let Some(h) = hosts {
                    q.push(format!("hosts={}", enc(&h)));
                }
                if let Some(f) = filter {
                    q.push(format!("filter={}&side={}", enc(&f), enc(&side)));
                }
                let v = self.call("GET", &format!("/api/v1/nodes?{}", q.join("&")), None)?;
                self.print_nodes(&v, output);
                Ok(())
            }
            CtlCmd::Rollout {
                action,
                hosts,
                wait,
                timeout,
            } => self.rollout(&action, hosts.as_deref(), wait, timeout),
            CtlCmd::Describe { node, output } => {
                let v = self.call("GET", &format!("/api/v1/nodes/{}", enc(&node)), None)?;
                match output {
                    Output::Json => println!("{}", pretty(&v)),
                    Output::Yaml => print!("{}", yaml::to_yaml(&v)),
                    _ => self.print_detail(&v),
                }
                Ok(())
            }
            CtlCmd::Set {
                hosts,
                values,
                replace,
            } => {
                let body = json!({ "hosts": hosts, "values": pairs(&values)?, "replace": replace });
                let v = self.call("POST", "/api/v1/cfg", Some(body))?;
                println!(
                    "{} node(s) matched, {} Cfg changed",
                    v["matched"], v["changed"]
                );
                Ok(())
            }
            CtlCmd::Apply { file } => self.apply(&file),
            CtlCmd::Delete { hosts } => {
                let v = self.call(
                    "DELETE",
                    &format!("/api/v1/cfg?hosts={}", enc(&hosts)),
                    None,
                )?;
                println!(
                    "{} node(s) matched, {} Cfg reset",
                    v["matched"], v["changed"]
                );
                Ok(())
            }
            CtlCmd::Plan {
                hosts,
                values,
                output,
            } => {
                let body = json!({ "hosts": hosts, "values": pairs(&values)? });
                let v = self.call("POST", "/api/v1/plan", Some(body))?;
                match output {
                    Output::Json => println!("{}", pretty(&v)),
                    Output::Yaml => print!("{}", yaml::to_yaml(&v)),
                    _ => print_plan(&v),
                }
                Ok(())
            }
            CtlCmd::Watch { hosts, json } => self.watch(hosts.as_deref(), json),
            CtlCmd::Graph { dot } => {
                if dot {
                    print!("{}", self.text("/api/v1/graph.dot")?);
                } else {
                    println!("{}", pretty(&self.call("GET", "/api/v1/graph", None)?));
                }
                Ok(())
            }
            CtlCmd::Freeze { hosts } => self.freeze("freeze", hosts),
            CtlCmd::Thaw { hosts } => self.freeze("thaw", hosts),
            CtlCmd::Health => {
                println!("{}", pretty(&self.call("GET", "/api/v1/health", None)?));
                Ok(())
            }
        }
    }

    fn rollout(
        &self,
        action: &str,
        hosts: Option<&str>,
        wait: bool,
        timeout: Option<std::time::Duration>,
    ) -> R<()> {
        use crate::cli::rollout::count;
        if action != "status" {
            return Err(Fail {
                code: EXIT_USAGE,
                message: format!("unknown rollout action `{action}` (try `rollout status`)"),
            });
        }
        let path = match hosts {
            Some(h) => format!("/api/v1/nodes?hosts={}", enc(h)),
            None => "/api/v1/nodes".to_owned(),
        };
        let t0 = std::time::Instant::now();
        let mut c = count(&self.call("GET", &path, None)?);
        if wait && !c.done() {
            let bar = indicatif::ProgressBar::new(c.total as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} rolled  {msg}")
                    .expect("a valid template"),
            );
            while !c.done() && timeout.is_none_or(|t| t0.elapsed() < t) {
                bar.set_position(c.rolled as u64);
                bar.set_message(c.line());
                std::thread::sleep(std::time::Duration::from_millis(500));
                c = count(&self.call("GET", &path, None)?);
            }
            bar.finish_and_clear();
        }
        println!("{}", c.line());
        if !c.failed.is_empty() {
            return Err(Fail {
                code: EXIT_SERVER,
                message: format!("rollout failed on {}", c.failed.join(",")),
            });
        }
        if wait && !c.done() {
            return Err(Fail {
                code: EXIT_SERVER,
                message: "timed out waiting for the rollout".into(),
            });
        }
        Ok(())
    }

    fn freeze(&self, what: &str, hosts: Option<String>) -> R<()> {
        let body = match hosts {
            Some(h) => json!({ "hosts": h }),
            None => json!({ "all": true }),
        };
        let v = self.call("POST", &format!("/api/v1/{what}"), Some(body))?;
        println!(
            "{what}: {} node(s) matched, {} Cfg changed",
            v["matched"], v["changed"]
        );
        Ok(())
    }

    fn apply(&self, file: &PathBuf) -> R<()> {
        let input = |m: String| Fail {
            code: EXIT_INPUT,
            message: m,
        };
        let text = if file.as_os_str() == "-" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| input(format!("reading standard input: {e}")))?;
            s
        } else {
            std::fs::read_to_string(file)
                .map_err(|e| input(format!("reading {}: {e}", file.display())))?
        };
        let doc = yaml::parse(&text).map_err(|e| input(format!("{}: {e}", file.display())))?;
        let entries = doc["nodes"].as_array().ok_or_else(|| {
            input(format!(
                "{}: expected a top-level `nodes:` list",
                file.display()
            ))
        })?;
        let mut bodies = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            bodies.push(
                apply_entry(e)
                    .map_err(|m| input(format!("{}: nodes[{i}]: {m}", file.display())))?,
            );
        }
        let (mut matched, mut changed) = (0, 0);
        for b in bodies {
            let v = self.call("POST", "/api/v1/cfg", Some(b))?;
            matched += v["matched"].as_u64().unwrap_or(0);
            changed += v["changed"].as_u64().unwrap_or(0);
        }
        println!(
            "applied {} entr(ies): {matched} node(s) matched, {changed} Cfg changed",
            entries.len()
        );
        Ok(())
    }

    fn watch(&self, hosts: Option<&str>, raw: bool) -> R<()> {
        let only: Option<HashSet<String>> = match hosts {
            Some(h) => Some(
                topo::hostlist::expand(h)
                    .map_err(|e| Fail {
                        code: EXIT_USAGE,
                        message: format!("bad hostlist `{h}`: {e}"),
                    })?
                    .into_iter()
                    .collect(),
            ),
            None => None,
        };
        let color = self.color;
        let r = http::stream_lines(&self.api, "/api/v1/events?types=change,lagged", |line| {
            let Some(data) = line.strip_prefix("data:") else {
                return true;
            };
            let Ok(v) = serde_json::from_str::<Json>(data.trim()) else {
                return true;
            };
            if v.get("missed").is_some() {
                eprintln!("warning: missed {} events (too slow)", v["missed"]);
                return true;
            }
            let node = v["node"].as_str().unwrap_or("?");
            if only.as_ref().is_some_and(|o| !o.contains(node)) {
                return true;
            }
            if raw {
                println!("{v}");
            } else {
                let show = |x: &Json| x.as_str().map_or("-".to_string(), str::to_string);
                let new = show(&v["new"]);
                println!(
                    "{node} {} {} {} -> {}",
                    v["side"].as_str().unwrap_or("?"),
                    v["url"].as_str().unwrap_or("?"),
                    show(&v["old"]),
                    paint(&new, color),
                );
            }
            true
        })?;
        if let Some(r) = r {
            return Err(Fail {
                code: EXIT_SERVER,
                message: format!(
                    "event stream refused: HTTP {} {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ),
            });
        }
        Ok(())
    }

    fn print_nodes(&self, v: &Json, output: Output) {
        match output {
            Output::Json => println!("{}", pretty(v)),
            Output::Yaml => print!("{}", yaml::to_yaml(v)),
            Output::Table | Output::Wide => {
                let wide = output == Output::Wide;
                let mut rows = vec![header(wide)];
                for n in v["nodes"].as_array().into_iter().flatten() {
                    rows.push(row(n, wide));
                }
                print_table(&rows, self.color);
            }
        }
    }

    fn print_detail(&self, v: &Json) {
        println!("Name:      {}", v["name"].as_str().unwrap_or("?"));
        println!("Rack:      {}", v["rack"].as_str().unwrap_or("?"));
        println!("Converged: {}", v["converged"]);
        println!("Frozen:    {}", v["frozen"]);
        let chain = v["chain"].as_array().map(|c| {
            let names: Vec<&str> = c.iter().filter_map(Json::as_str).collect();
            if names.is_empty() {
                "(none: converged)".to_string()
            } else {
                names.join(" -> ")
            }
        });
        println!(
            "Chain:     {}",
            chain.unwrap_or_else(|| "(no chain reaches Cfg)".into())
        );
        if let Some(w) = v["waiting"].as_str() {
            println!("Waiting:   {w}");
        }
        let mut urls: BTreeMap<&str, (String, String)> = BTreeMap::new();
        for (side, slot) in [("cfg", 0), ("dsc", 1)] {
            for (k, x) in v[side].as_object().into_iter().flatten() {
                let e = urls.entry(k.as_str()).or_default();
                let s = x.as_str().unwrap_or("").to_string();
                if slot == 0 { e.0 = s } else { e.1 = s }
            }
        }
        let mut rows = vec![vec!["URL".to_string(), "CFG".into(), "DSC".into()]];
        rows.extend(
            urls.into_iter()
                .map(|(k, (c, d))| vec![k.to_string(), c, d]),
        );
        print_table(&rows, self.color);
    }
}

/// One `apply -f` entry as a `/api/v1/cfg` body: `hosts` or `name`, and
/// `values` (merged) or `cfg` (replaces, as printed by `get -o yaml`).
fn apply_entry(e: &Json) -> Result<Json, String> {
    let hosts = e["hosts"]
        .as_str()
        .or(e["name"].as_str())
        .ok_or("needs `hosts` or `name`")?;
    let (values, replace) = match (&e["values"], &e["cfg"]) {
        (Json::Object(v), Json::Null) => (v.clone(), e["replace"].as_bool().unwrap_or(false)),
        (Json::Null, Json::Object(c)) => {
            let mut c = c.clone();
            c.remove("/Nodename");
            (c, true)
        }
        _ => return Err("needs either a `values:` or a `cfg:` mapping".into()),
    };
    let values: serde_json::Map<String, Json> = values
        .into_iter()
        .map(|(k, v)| {
            let s = match v {
                Json::String(s) => s,
                other => other.to_string(),
            };
            (k, Json::String(s))
        })
        .collect();
    Ok(json!({ "hosts": hosts, "values": values, "replace": replace }))
}

fn pretty(v: &Json) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

fn header(wide: bool) -> Vec<String> {
    let mut h = vec![
        "NAME",
        "RACK",
        "CFG PHYS",
        "DSC PHYS",
        "CFG RUN",
        "DSC RUN",
        "CONVERGED",
    ];
    if wide {
        h.extend(["CFG PXE", "DSC PXE", "FROZEN", "BUSY", "IMAGES"]);
    }
    h.into_iter().map(str::to_string).collect()
}

fn row(n: &Json, wide: bool) -> Vec<String> {
    let get = |side: &str, url: &str| n[side][url].as_str().unwrap_or("-").to_string();
    let pxe = engine::virt::PXE_URL;
    let mut r = vec![
        n["name"].as_str().unwrap_or("?").to_string(),
        n["rack"].as_str().unwrap_or("").to_string(),
        get("cfg", "/PhysState"),
        get("dsc", "/PhysState"),
        get("cfg", "/RunState"),
        get("dsc", "/RunState"),
        if n["converged"].as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        }
        .to_string(),
    ];
    if wide {
        r.push(get("cfg", pxe));
        r.push(get("dsc", pxe));
        r.push(
            if n["frozen"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            }
            .to_string(),
        );
        r.push(get("dsc", "/Busy"));
        r.push(get("dsc", crate::cli::rollout::STATE_URL));
    }
    r
}

/// ANSI colour for a state name on a terminal.
fn paint(s: &str, color: bool) -> String {
    if !color {
        return s.to_string();
    }
    let code = match s {
        "POWER_ON" | "SYNC" | "COMP" | "yes" => "32",
        "POWER_OFF" => "34",
        "INIT" | "WAIT" | "POWER_CYCLE" | "no" => "33",
        "ERROR" | "PHYS_HANG" | "PHYS_ERROR" => "31",
        "UNKNOWN" | "PHYS_UNKNOWN" | "-" => "2",
        _ => return s.to_string(),
    };
    format!("\x1b[{code}m{s}\x1b[0m")
}

fn print_table(rows: &[Vec<String>], color: bool) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (i, r) in rows.iter().enumerate() {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            let pad = " ".repeat(width[c] - cell.chars().count());
            let shown = if i == 0 {
                cell.clone()
            } else {
                paint(cell, color)
            };
            line.push_str(&shown);
            if c + 1 < r.len() {
                line.push_str(&pad);
                line.push_str("  ");
            }
        }
        println!("{line}");
    }
}

fn print_plan(v: &Json) {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in v["nodes"].as_array().into_iter().flatten() {
        let name = n["name"].as_str().unwrap_or("?").to_string();
        let key = if n["reachable"].as_bool() != Some(true) {
            "(no chain reaches this Cfg)".to_string()
        } else {
            let steps: Vec<&str> = n["chain"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Json::as_str)
                .collect();
            if steps.is_empty() {
                "(nothing to do)".to_string()
            } else {
                steps.join(" -> ")
            }
        };
        groups.entry(key).or_default().push(name);
    }
    for (chain, names) in groups {
        println!(
            "{} ({}): {chain}",
            topo::hostlist::compress(&names),
            names.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_encoding() {
        assert_eq!(enc("n[0001-0010]"), "n%5B0001-0010%5D");
        assert_eq!(enc("/PhysState=POWER_OFF"), "/PhysState%3DPOWER_OFF");
    }

    #[test]
    fn apply_entries() {
        let e = json!({"hosts": "n[1-2]", "values": {"/PhysState": "POWER_ON", "/Busy": 2}});
        let b = apply_entry(&e).unwrap();
        assert_eq!(b["values"]["/Busy"], "2");
        assert_eq!(b["replace"], false);
        let e = json!({"name": "n1", "cfg": {"/Nodename": "n1", "/PhysState": "POWER_OFF"}});
        let b = apply_entry(&e).unwrap();
        assert_eq!(b["replace"], true);
        assert!(b["values"].get("/Nodename").is_none());
        assert!(apply_entry(&json!({"values": {}})).is_err());
        assert!(apply_entry(&json!({"hosts": "n1"})).is_err());
    }
}
