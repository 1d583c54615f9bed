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
//! | 8 | `wait` / `--wait` timed out (the nodes that did not get there are named) |
//!
//! Errors go to standard error as `error: MESSAGE`; data to standard output.

use std::collections::{BTreeMap, HashSet};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value as Json, json};

use crate::cli::DEFAULT_API;
use crate::cli::apply;
use crate::cli::http::{self, HttpError};
use crate::cli::listing::{Columns, NodeWriter};
use crate::cli::urls;
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
/// `wait` (or `--wait`) timed out.
pub const EXIT_TIMEOUT: i32 = 8;

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

/// How a command picks nodes besides its `TARGET` (a hostlist such as
/// `n[0001-0010]`, or `@GROUP`).
#[derive(Args, Debug, Clone, Default)]
pub struct SelArgs {
    /// The nodes of a group of the topology (a rack such as `r07`, or a
    /// group above racks); the same as a `@r07` target.
    #[arg(long)]
    pub group: Option<String>,
    /// Only nodes where `URL=VALUE` holds (comma-separated for several).
    #[arg(long)]
    pub filter: Option<String>,
    /// The copy `--filter` reads: `dsc` or `cfg`.
    #[arg(long, default_value = "dsc")]
    pub side: String,
    /// Every node (write commands never default to every node).
    #[arg(long)]
    pub all: bool,
}

/// What `ctl wait` and `--wait` wait for.
#[derive(Args, Debug, Clone)]
pub struct WaitArgs {
    /// Give up after this long (exit code 8 with the nodes that did not
    /// get there).
    #[arg(long, value_parser = ::topo::duration::parse_flag, default_value = "10m")]
    pub timeout: Duration,
}

/// `ctl power` actions.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum PowerAction {
    /// Cfg `/PhysState=POWER_ON`.
    On,
    /// Cfg `/PhysState=POWER_OFF`.
    Off,
    /// Off, wait until Dsc says off, then on.
    Cycle,
    /// Cfg and Dsc power state per node.
    Status,
}

/// `ctl` subcommands.
#[derive(Subcommand, Debug)]
pub enum CtlCmd {
    /// List nodes: `get nodes [TARGET]`.
    Get {
        /// The resource: `nodes` (or `node`).
        resource: String,
        /// Which nodes (a hostlist or `@GROUP`; default all).
        target: Option<String>,
        /// Selectors.
        #[command(flatten)]
        sel: SelArgs,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Nodes per request: the list is fetched and printed in pages of
        /// this many (1 to 10000); 0 fetches it in one response.
        #[arg(long, default_value_t = CHUNK_SIZE_DEFAULT, value_parser = clap::value_parser!(u16).range(0..=10_000))]
        chunk_size: u16,
    },
    /// One node in full: Cfg and Dsc side by side and its active chain.
    Describe {
        /// The node.
        node: String,
        /// Output format (table: side by side).
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Image-set rollouts: `rollout status [TARGET] [--wait]`.
    Rollout {
        /// `status`.
        action: String,
        /// Which nodes (a hostlist or `@GROUP`; default all).
        hosts: Option<String>,
        /// Wait (with a progress bar) until no node is rolling or waiting.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long (exit 1).
        #[arg(long, value_parser = ::topo::duration::parse_flag)]
        timeout: Option<std::time::Duration>,
    },
    /// Set Cfg values: `set [TARGET] URL=VALUE...` (short URLs such as
    /// `bmc.address` are accepted).
    Set {
        /// `TARGET` (a hostlist or `@GROUP`; or use --group, --filter,
        /// --all) then `URL=VALUE` pairs, e.g. `/PhysState=POWER_ON`.
        #[arg(required = true, value_name = "TARGET|URL=VALUE")]
        words: Vec<String>,
        /// Selectors.
        #[command(flatten)]
        sel: SelArgs,
        /// Start from an empty Cfg instead of the current one.
        #[arg(long)]
        replace: bool,
        /// Then wait until the nodes converge.
        #[arg(long)]
        wait: bool,
        /// How long `--wait` waits.
        #[command(flatten)]
        wait_args: WaitArgs,
    },
    /// Apply a file of Cfg changes (YAML or JSON; see docs/cli.md), all or
    /// nothing.
    Apply {
        /// The file (`-` for standard input).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Check the file and show what each entry would change; commit
        /// nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Reset Cfg to empty (nothing wanted): `delete TARGET`.
    Delete {
        /// Which nodes (a hostlist or `@GROUP`).
        target: Option<String>,
        /// Selectors.
        #[command(flatten)]
        sel: SelArgs,
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
    /// Wait until nodes converge or a Dsc value holds on every one.
    Wait {
        /// Which nodes (a hostlist or `@GROUP`; default: the selectors).
        target: Option<String>,
        /// Selectors.
        #[command(flatten)]
        sel: SelArgs,
        /// `converged`, or `URL=VALUE[,URL=VALUE...]` on the Dsc.
        #[arg(long = "for", default_value = "converged")]
        for_: String,
        /// How long to wait.
        #[command(flatten)]
        wait_args: WaitArgs,
    },
    /// Power: `power on|off|cycle|status TARGET`.
    Power {
        /// What to do.
        #[arg(value_enum)]
        action: PowerAction,
        /// Which nodes (a hostlist or `@GROUP`).
        target: Option<String>,
        /// Selectors.
        #[command(flatten)]
        sel: SelArgs,
        /// Wait until the Dsc power state is the one asked for.
        #[arg(long)]
        wait: bool,
        /// How long to wait.
        #[command(flatten)]
        wait_args: WaitArgs,
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
    /// Stop the engines of the selected nodes from driving.
    Freeze {
        /// Which nodes (a hostlist or `@GROUP`; every node needs --all).
        target: Option<String>,
        /// Selectors.
        #[command(flatten)]
        sel: SelArgs,
    },
    /// Let frozen nodes be driven again.
    Thaw {
        /// Which nodes (a hostlist or `@GROUP`; every node needs --all).
        target: Option<String>,
        /// Selectors.
        #[command(flatten)]
        sel: SelArgs,
    },
    /// The root's health.
    Health,
}

/// A selection: a target word and the selector flags, as the API's
/// `hosts`, `group`, `filter`, `side` and `all`.
#[derive(Debug, Default, Clone)]
struct Selected {
    hosts: Option<String>,
    group: Option<String>,
    filter: Option<String>,
    side: String,
    all: bool,
}

impl Selected {
    fn new(target: Option<&str>, sel: &SelArgs) -> R<Selected> {
        let usage = |m: String| Fail {
            code: EXIT_USAGE,
            message: m,
        };
        let mut out = Selected {
            side: sel.side.clone(),
            all: sel.all,
            group: sel
                .group
                .clone()
                .map(|g| g.trim_start_matches('@').to_string()),
            ..Selected::default()
        };
        if let Some(t) = target.map(str::trim).filter(|t| !t.is_empty()) {
            if let Some(g) = t.strip_prefix('@') {
                if out.group.is_some() {
                    return Err(usage(format!("`{t}` and --group both name a group")));
                }
                out.group = Some(g.to_string());
            } else {
                topo::hostlist::count(t).map_err(|e| Fail {
                    code: EXIT_REJECTED,
                    message: format!("bad hostlist `{t}`: {e}"),
                })?;
                out.hosts = Some(t.to_string());
            }
        }
        if let Some(f) = &sel.filter {
            let pairs: Vec<String> = f
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(urls::expand_pair)
                .collect();
            if let Some(bad) = pairs.iter().find(|p| !p.contains('=')) {
                return Err(usage(format!("--filter: `{bad}` is not URL=VALUE")));
            }
            out.filter = Some(pairs.join(","));
        }
        if !matches!(out.side.as_str(), "dsc" | "cfg") {
            return Err(usage(format!(
                "--side must be dsc or cfg, not `{}`",
                out.side
            )));
        }
        Ok(out)
    }

    /// True when the user named which nodes.
    fn explicit(&self) -> bool {
        self.hosts.is_some() || self.group.is_some() || self.filter.is_some() || self.all
    }

    /// Refuses a write that names no nodes.
    fn required(self, verb: &str) -> R<Selected> {
        if self.explicit() {
            return Ok(self);
        }
        Err(Fail {
            code: EXIT_USAGE,
            message: format!(
                "`{verb}` needs to know which nodes: a hostlist, @GROUP, --group, --filter \
                 URL=VALUE or --all (it never defaults to every node)"
            ),
        })
    }

    fn body(&self) -> Json {
        let mut b = json!({});
        if let Some(h) = &self.hosts {
            b["hosts"] = json!(h);
        }
        if let Some(g) = &self.group {
            b["group"] = json!(g);
        }
        if let Some(f) = &self.filter {
            b["filter"] = json!(f);
            b["side"] = json!(self.side);
        }
        if self.all {
            b["all"] = json!(true);
        }
        b
    }

    fn query(&self) -> String {
        let mut q = Vec::new();
        if let Some(h) = &self.hosts {
            q.push(format!("hosts={}", enc(h)));
        }
        if let Some(g) = &self.group {
            q.push(format!("group={}", enc(g)));
        }
        if let Some(f) = &self.filter {
            q.push(format!("filter={}&side={}", enc(f), enc(&self.side)));
        }
        if self.all {
            q.push("all=true".into());
        }
        q.join("&")
    }
}

/// A failure with its exit code.
#[derive(Debug)]
struct Fail {
    code: i32,
    message: String,
}

type R<T> = Result<T, Fail>;

impl From<HttpError> for Fail {
    fn from(e: HttpError) -> Fail {
        let code = match e {
            // Unreachable, or not reachable as configured (an https://
            // API without --api-ca, an unusable address).
            HttpError::Connect { .. } | HttpError::Setup(_) => EXIT_UNREACHABLE,
            _ => EXIT_SERVER,
        };
        Fail {
            code,
            message: e.to_string(),
        }
    }
}

/// Nodes per request of `get nodes`, `wait`, `power status` and `rollout status`
/// (`--chunk-size`): a page is about 3 MB of JSON and 33 MiB of client
/// RSS; at 15,000 nodes pages of 1000 were faster than 2000, 5000 or one
/// response (docs/performance.md).
pub const CHUNK_SIZE_DEFAULT: u16 = 1000;

/// A failure to write standard output.
fn write_failed(e: std::io::Error) -> Fail {
    Fail {
        code: EXIT_SERVER,
        message: format!("writing standard output: {e}"),
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

/// `URL=VALUE` words, short URLs expanded.
fn pairs(values: &[String]) -> R<Vec<String>> {
    if values.is_empty() {
        return Err(Fail {
            code: EXIT_USAGE,
            message: "no URL=VALUE given (e.g. /PhysState=POWER_ON)".into(),
        });
    }
    for v in values {
        if !v.contains('=') {
            return Err(Fail {
                code: EXIT_USAGE,
                message: format!("`{v}` is not URL=VALUE (e.g. /PhysState=POWER_ON)"),
            });
        }
    }
    Ok(values.iter().map(|v| urls::expand_pair(v)).collect())
}

/// The `N` of a root's "entry N: ..." message.
fn entry_number(message: &str) -> Option<usize> {
    let rest = &message[message.find("entry ")? + "entry ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// What `wait` waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Goal {
    /// Dsc matches Cfg.
    Converged,
    /// These Dsc values hold.
    Values(Vec<(String, String)>),
}

impl Goal {
    fn parse(text: &str) -> R<Goal> {
        if text.trim() == "converged" {
            return Ok(Goal::Converged);
        }
        let mut out = Vec::new();
        for p in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((u, v)) = p.split_once('=') else {
                return Err(Fail {
                    code: EXIT_USAGE,
                    message: format!("--for: `{p}` is neither `converged` nor URL=VALUE"),
                });
            };
            out.push((urls::expand(u.trim()), v.trim().to_string()));
        }
        if out.is_empty() {
            return Err(Fail {
                code: EXIT_USAGE,
                message: "--for needs `converged` or URL=VALUE".into(),
            });
        }
        Ok(Goal::Values(out))
    }

    /// True when node `n` (as the API lists it) is there.
    fn holds(&self, n: &Json) -> bool {
        match self {
            Goal::Converged => n["converged"].as_bool() == Some(true),
            Goal::Values(vs) => vs
                .iter()
                .all(|(u, v)| n["dsc"][u.as_str()].as_str() == Some(v.as_str())),
        }
    }
}

impl std::fmt::Display for Goal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Goal::Converged => f.write_str("converged"),
            Goal::Values(vs) => {
                let parts: Vec<String> = vs
                    .iter()
                    .map(|(u, v)| format!("{}={v}", urls::shorten(u)))
                    .collect();
                f.write_str(&parts.join(","))
            }
        }
    }
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
                target,
                sel,
                output,
                chunk_size,
            } => {
                if !matches!(resource.as_str(), "nodes" | "node" | "no") {
                    return Err(Fail {
                        code: EXIT_USAGE,
                        message: format!("unknown resource `{resource}` (try `get nodes`)"),
                    });
                }
                let sel = Selected::new(target.as_deref(), &sel)?;
                self.get_nodes(&sel, output, usize::from(chunk_size))
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
                words,
                sel,
                replace,
                wait,
                wait_args,
            } => {
                let (target, values) = match words.split_first() {
                    Some((first, rest)) if !first.contains('=') => (Some(first.as_str()), rest),
                    _ => (None, &words[..]),
                };
                let sel = Selected::new(target, &sel)?.required("set")?;
                let mut body = sel.body();
                body["values"] = json!(pairs(values)?);
                body["replace"] = json!(replace);
                let v = self.call("POST", "/api/v1/cfg", Some(body))?;
                println!(
                    "{} node(s) matched, {} Cfg changed",
                    v["matched"], v["changed"]
                );
                if wait {
                    self.wait(&sel, &Goal::Converged, wait_args.timeout)?;
                }
                Ok(())
            }
            CtlCmd::Apply { file, dry_run } => self.apply(&file, dry_run),
            CtlCmd::Delete { target, sel } => {
                let sel = Selected::new(target.as_deref(), &sel)?.required("delete")?;
                let v = self.call("DELETE", &format!("/api/v1/cfg?{}", sel.query()), None)?;
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
            CtlCmd::Wait {
                target,
                sel,
                for_,
                wait_args,
            } => {
                let sel = Selected::new(target.as_deref(), &sel)?;
                let goal = Goal::parse(&for_)?;
                self.wait(&sel, &goal, wait_args.timeout)
            }
            CtlCmd::Power {
                action,
                target,
                sel,
                wait,
                wait_args,
            } => {
                let sel = Selected::new(target.as_deref(), &sel)?;
                self.power(action, sel, wait, wait_args.timeout)
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
            CtlCmd::Freeze { target, sel } => {
                let sel = Selected::new(target.as_deref(), &sel)?.required("freeze")?;
                self.freeze("freeze", &sel)
            }
            CtlCmd::Thaw { target, sel } => {
                let sel = Selected::new(target.as_deref(), &sel)?.required("thaw")?;
                self.freeze("thaw", &sel)
            }
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
        use crate::cli::rollout::Counts;
        if action != "status" {
            return Err(Fail {
                code: EXIT_USAGE,
                message: format!("unknown rollout action `{action}` (try `rollout status`)"),
            });
        }
        let none = SelArgs {
            side: "dsc".into(),
            ..SelArgs::default()
        };
        let sel = Selected::new(hosts, &none)?;
        let count = |sel: &Selected| -> R<Counts> {
            let mut c = Counts::default();
            self.pages(sel, CHUNK_SIZE_DEFAULT.into(), |nodes| {
                c.add(&nodes);
                Ok(())
            })?;
            Ok(c)
        };
        let t0 = std::time::Instant::now();
        let mut c = count(&sel)?;
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
                c = count(&sel)?;
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
                code: EXIT_TIMEOUT,
                message: "timed out waiting for the rollout".into(),
            });
        }
        Ok(())
    }

    fn freeze(&self, what: &str, sel: &Selected) -> R<()> {
        let v = self.call("POST", &format!("/api/v1/{what}"), Some(sel.body()))?;
        println!(
            "{what}: {} node(s) matched, {} Cfg changed",
            v["matched"], v["changed"]
        );
        Ok(())
    }

    fn power(&self, action: PowerAction, sel: Selected, wait: bool, timeout: Duration) -> R<()> {
        if action == PowerAction::Status {
            return self.power_status(&sel);
        }
        let verb = match action {
            PowerAction::On => "power on",
            PowerAction::Off => "power off",
            _ => "power cycle",
        };
        let sel = sel.required(verb)?;
        let set = |state: &str| -> R<()> {
            let mut body = sel.body();
            body["values"] = json!([format!("/PhysState={state}")]);
            let v = self.call("POST", "/api/v1/cfg", Some(body))?;
            println!(
                "{verb}: {} node(s) matched, {} Cfg changed",
                v["matched"], v["changed"]
            );
            Ok(())
        };
        let is = |state: &str| Goal::Values(vec![("/PhysState".into(), state.into())]);
        match action {
            PowerAction::On => set("POWER_ON")?,
            PowerAction::Off => set("POWER_OFF")?,
            _ => {
                // Declaratively: off, seen off, then on.
                set("POWER_OFF")?;
                self.wait(&sel, &is("POWER_OFF"), timeout)?;
                set("POWER_ON")?;
            }
        }
        if wait {
            let want = if action == PowerAction::Off {
                "POWER_OFF"
            } else {
                "POWER_ON"
            };
            self.wait(&sel, &is(want), timeout)?;
        }
        Ok(())
    }

    /// `power status`: Cfg and Dsc power, BMC protocol and error per node,
    /// written page by page.
    fn power_status(&self, sel: &Selected) -> R<()> {
        let head = ["NAME", "CFG", "DSC", "BMC", "ERROR"];
        let mut table = Columns::new(head.map(str::to_string).to_vec(), self.color);
        let bmc = urls::expand("bmc.protocol");
        let err = urls::expand("bmc.error");
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        self.pages(sel, CHUNK_SIZE_DEFAULT.into(), |nodes| {
            let rows: Vec<Vec<String>> = nodes
                .iter()
                .map(|n| {
                    let get = |side: &str, url: &str| {
                        n[side][url]
                            .as_str()
                            .filter(|s| !s.is_empty())
                            .unwrap_or("-")
                            .to_string()
                    };
                    vec![
                        n["name"].as_str().unwrap_or("?").to_string(),
                        get("cfg", "/PhysState"),
                        get("dsc", "/PhysState"),
                        get("cfg", &bmc),
                        get("dsc", &err),
                    ]
                })
                .collect();
            table.write(&mut out, &rows).map_err(write_failed)?;
            out.flush().map_err(write_failed)
        })?;
        table.finish(&mut out).map_err(write_failed)?;
        out.flush().map_err(write_failed)
    }

    /// Polls the selected nodes until every one meets `goal`.
    fn wait(&self, sel: &Selected, goal: &Goal, timeout: Duration) -> R<()> {
        let t0 = Instant::now();
        let tty = std::io::stderr().is_terminal();
        let mut bar: Option<indicatif::ProgressBar> = None;
        let mut last = None;
        loop {
            // Page by page: the client holds one page and the names of
            // the nodes not there yet.
            let (mut total, mut missing) = (0usize, Vec::new());
            self.pages(sel, CHUNK_SIZE_DEFAULT.into(), |nodes| {
                total += nodes.len();
                missing.extend(
                    nodes
                        .iter()
                        .filter(|n| !goal.holds(n))
                        .map(|n| n["name"].as_str().unwrap_or("?").to_string()),
                );
                Ok(())
            })?;
            let done = total - missing.len();
            if tty {
                let b = bar.get_or_insert_with(|| {
                    let b = indicatif::ProgressBar::new(total as u64);
                    b.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{spinner} {pos}/{len} {msg} [{elapsed}] {wide_bar}",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                    );
                    b.set_message(goal.to_string());
                    b
                });
                b.set_length(total as u64);
                b.set_position(done as u64);
            } else if last != Some(done) {
                eprintln!("waiting for {goal}: {done}/{total}");
                last = Some(done);
            }
            if missing.is_empty() {
                if let Some(b) = bar {
                    b.finish_and_clear();
                }
                println!(
                    "{total} node(s) {goal} after {:.1} s",
                    t0.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            if t0.elapsed() >= timeout {
                if let Some(b) = bar {
                    b.abandon();
                }
                return Err(Fail {
                    code: EXIT_TIMEOUT,
                    message: format!(
                        "timed out after {}: {} of {total} node(s) not {goal}: {}",
                        ::topo::duration::format(timeout),
                        missing.len(),
                        topo::hostlist::compress(&missing)
                    ),
                });
            }
            // Poll gently on large selections.
            let pause = if total > 5000 { 1000 } else { 300 };
            std::thread::sleep(
                Duration::from_millis(pause).min(timeout - t0.elapsed().min(timeout)),
            );
        }
    }

    fn apply(&self, file: &std::path::Path, dry_run: bool) -> R<()> {
        let input = |m: String| Fail {
            code: EXIT_INPUT,
            message: m,
        };
        let name = if file.as_os_str() == "-" {
            "<stdin>".to_string()
        } else {
            file.display().to_string()
        };
        let text = if file.as_os_str() == "-" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| input(format!("reading standard input: {e}")))?;
            s
        } else {
            std::fs::read_to_string(file).map_err(|e| input(format!("reading {name}: {e}")))?
        };
        let entries = apply::parse(&text).map_err(|e| input(e.show(&name)))?;
        let body = json!({
            "entries": entries.iter().map(|e| e.body.clone()).collect::<Vec<_>>(),
            "dry_run": dry_run,
        });
        let v = self
            .call("POST", "/api/v1/cfg/batch", Some(body))
            .map_err(|mut f| {
                // "entry N: ..." from the root: point at the entry's line.
                if let Some(pos) = entry_number(&f.message)
                    .and_then(|k| k.checked_sub(1))
                    .and_then(|k| entries.get(k))
                    .map(|e| e.pos)
                {
                    f.message = format!(
                        "{name}:{}:{}: {} (nothing applied)",
                        pos.line, pos.col, f.message
                    );
                } else {
                    f.message = format!("{name}: {} (nothing applied)", f.message);
                }
                f
            })?;
        let per = v["entries"].as_array().cloned().unwrap_or_default();
        if dry_run {
            for (e, r) in entries.iter().zip(&per) {
                let hosts = r["hosts"].as_str().unwrap_or("");
                println!(
                    "{name}:{}: {} matched, {} would change{}{}",
                    e.pos.line,
                    r["matched"],
                    r["changed"],
                    if hosts.is_empty() { "" } else { ": " },
                    hosts
                );
            }
            println!(
                "dry run: {} entr(ies) valid, {} node(s) would change; nothing applied",
                entries.len(),
                v["changed"]
            );
        } else {
            println!(
                "applied {} entr(ies) in one transaction: {} node(s) changed",
                entries.len(),
                v["changed"]
            );
        }
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
        let r = http::stream_events(&self.api, "/api/v1/events?types=change,lagged", |data| {
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

    /// `get nodes`: pages of `chunk` nodes (0: one response), each written
    /// to standard output as it arrives.
    fn get_nodes(&self, sel: &Selected, output: Output, chunk: usize) -> R<()> {
        let stdout = std::io::stdout().lock();
        let mut w = NodeWriter::new(std::io::BufWriter::new(stdout), output, self.color);
        self.pages(sel, chunk, |nodes| w.page(nodes).map_err(write_failed))?;
        w.finish().map_err(write_failed)
    }

    /// Fetches the selected nodes in pages of `chunk` (0: one response) and
    /// hands each page's `nodes` to `each`, in order. A failed page stops
    /// the walk; the pages before it have been handed over.
    fn pages(
        &self,
        sel: &Selected,
        chunk: usize,
        mut each: impl FnMut(Vec<Json>) -> R<()>,
    ) -> R<()> {
        let query = sel.query();
        let sep = if query.is_empty() { "" } else { "&" };
        let mut token: Option<String> = None;
        loop {
            let path = match (&token, chunk) {
                (_, 0) => format!("/api/v1/nodes?{query}"),
                (None, n) => format!("/api/v1/nodes?{query}{sep}limit={n}"),
                (Some(t), n) => format!("/api/v1/nodes?{query}{sep}limit={n}&continue={}", enc(t)),
            };
            let mut v = self.call("GET", &path, None)?;
            let Json::Array(nodes) = v["nodes"].take() else {
                return Err(Fail {
                    code: EXIT_SERVER,
                    message: "the API's node list has no `nodes` array".into(),
                });
            };
            each(nodes)?;
            let next = match v.get("continue") {
                None | Some(Json::Null) => return Ok(()),
                Some(Json::String(t)) if !t.is_empty() && token.as_ref() != Some(t) => t.clone(),
                Some(other) => {
                    // A token that does not move would loop forever.
                    return Err(Fail {
                        code: EXIT_SERVER,
                        message: format!("the API's `continue` token {other} does not advance"),
                    });
                }
            };
            token = Some(next);
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

fn pretty(v: &Json) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// The columns of `get nodes` (`wide`: the extra ones).
pub(crate) fn header(wide: bool) -> Vec<String> {
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

/// One node's `get nodes` row, as the API lists the node.
pub(crate) fn row(n: &Json, wide: bool) -> Vec<String> {
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
        println!("{}", table_line(r, &width, i == 0, color));
    }
}

/// One table line: each cell but the last padded to its column's `width`
/// and two spaces; a header is never painted.
pub(crate) fn table_line(r: &[String], width: &[usize], is_header: bool, color: bool) -> String {
    let mut line = String::new();
    for (c, cell) in r.iter().enumerate() {
        if is_header {
            line.push_str(cell);
        } else {
            line.push_str(&paint(cell, color));
        }
        if c + 1 < r.len() {
            let w = width.get(c).copied().unwrap_or(0);
            let pad = w.saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad + 2));
        }
    }
    line
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
    fn wait_goals() {
        assert_eq!(Goal::parse("converged").unwrap(), Goal::Converged);
        let g = Goal::parse("/PhysState=POWER_ON,pxe.state=COMP").unwrap();
        let n = json!({"dsc": {"/PhysState": "POWER_ON", (engine::virt::PXE_URL): "COMP"}});
        assert!(g.holds(&n));
        let n = json!({"dsc": {"/PhysState": "POWER_OFF"}});
        assert!(!g.holds(&n));
        assert!(Goal::parse("nonsense").is_err());
        assert_eq!(entry_number("entry 12: bad URL"), Some(12));
        assert_eq!(entry_number("bad"), None);
    }

    #[test]
    fn selections() {
        let none = SelArgs {
            side: "dsc".into(),
            ..SelArgs::default()
        };
        let s = Selected::new(Some("@r07"), &none).unwrap();
        assert_eq!(s.group.as_deref(), Some("r07"));
        assert!(s.clone().required("set").is_ok());
        assert!(
            Selected::new(None, &none)
                .unwrap()
                .required("freeze")
                .is_err()
        );
        assert!(Selected::new(Some("n[1-"), &none).is_err());
        let f = SelArgs {
            filter: Some("/PhysState=PHYS_ERROR".into()),
            ..none.clone()
        };
        let s = Selected::new(None, &f).unwrap();
        assert_eq!(s.query(), "filter=/PhysState%3DPHYS_ERROR&side=dsc");
    }
}
