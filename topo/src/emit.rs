//! `Topology::to_yaml`: writes the format `parse` reads, compactly.
//!
//! Nodes are re-compressed: starting at each node, every candidate address
//! pattern (see `pattern::candidates`) is tried on the longest run of
//! following nodes with the same name stem and increasing numbers; the
//! longest run that the pattern reproduces exactly becomes one
//! `{ hosts, addr }` entry. Anything else is written explicitly. Patterns
//! are checked with the parser's own evaluator, so the output always
//! round-trips.

use std::fmt::Write as _;

use crate::duration;
use crate::hostlist;
use crate::model::{Group, Member, Topology};
use crate::pattern::{AddrPattern, Vars, candidates, numeric_suffix, parse_addr, stem};
use crate::sync::SyncSettings;

/// Writes the topology (see [`Topology::to_yaml`]).
pub(crate) fn to_yaml(t: &Topology) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "cluster: {}", scalar(&t.cluster));
    if let Some(k) = &t.key_file {
        let _ = writeln!(out, "key_file: {}", quoted(&k.to_string_lossy()));
    }
    out.push_str("sync:\n");
    let d = &t.defaults;
    let _ = writeln!(out, "  strategy: {}", d.strategy);
    let _ = writeln!(out, "  hello: {}", duration::format(d.hello));
    let _ = writeln!(out, "  dead: {}", duration::format(d.dead));
    let _ = writeln!(out, "  jitter: {:?}", d.jitter);
    let _ = writeln!(out, "  transport: {}", d.transport);
    let _ = writeln!(out, "  retake: {}", d.retake);
    out.push_str("levels:\n");
    for level in &t.levels {
        let _ = writeln!(out, "  - name: {}", scalar(&level.name));
        let diff = sync_diff(&level.sync, d);
        if !diff.is_empty() {
            let _ = writeln!(out, "    sync: {{ {diff} }}");
        }
    }
    let _ = writeln!(out, "root: {}", member(&t.root));
    if !t.groups.is_empty() {
        out.push_str("groups:\n");
        for g in &t.groups {
            group(&mut out, g, 2);
        }
    }
    out
}

fn sync_diff(s: &SyncSettings, d: &SyncSettings) -> String {
    let mut parts = Vec::new();
    if s.strategy != d.strategy {
        parts.push(format!("strategy: {}", s.strategy));
    }
    if s.hello != d.hello {
        parts.push(format!("hello: {}", duration::format(s.hello)));
    }
    if s.dead != d.dead {
        parts.push(format!("dead: {}", duration::format(s.dead)));
    }
    if s.jitter != d.jitter {
        parts.push(format!("jitter: {:?}", s.jitter));
    }
    if s.transport != d.transport {
        parts.push(format!("transport: {}", s.transport));
    }
    if s.retake != d.retake {
        parts.push(format!("retake: {}", s.retake));
    }
    parts.join(", ")
}

fn member(m: &Member) -> String {
    format!(
        "{{ name: {}, addr: {} }}",
        scalar(&m.name),
        quoted(&m.addr.to_string())
    )
}

fn group(out: &mut String, g: &Group, indent: usize) {
    let pad = " ".repeat(indent);
    let _ = writeln!(out, "{pad}- name: {}", scalar(&g.name));
    let _ = writeln!(out, "{pad}  sub_parent: {}", member(&g.sub_parent));
    if let Some(s) = &g.standby {
        let _ = writeln!(out, "{pad}  standby: {}", member(s));
    }
    if !g.nodes.is_empty() {
        let _ = writeln!(out, "{pad}  nodes:");
        for (hosts, addr) in node_entries(&g.nodes) {
            let _ = writeln!(
                out,
                "{pad}    - {{ hosts: {}, addr: {} }}",
                quoted(&hosts),
                quoted(&addr)
            );
        }
    }
    if !g.groups.is_empty() {
        let _ = writeln!(out, "{pad}  groups:");
        for child in &g.groups {
            group(out, child, indent + 4);
        }
    }
}

/// `(hosts, addr)` entries that expand back to exactly `nodes`.
fn node_entries(nodes: &[Member]) -> Vec<(String, String)> {
    let mut entries = Vec::new();
    let mut i = 0;
    while i < nodes.len() {
        let first = &nodes[i];
        let run = stem_run(&nodes[i..]);
        let mut best: Option<(usize, String)> = None;
        if run > 1 {
            for text in candidates(&first.name, first.addr, nodes.get(i + 1).map(|m| m.addr)) {
                let len = matching(&text, &nodes[i..i + run]);
                if len > 1 && best.as_ref().is_none_or(|(l, _)| len > *l) {
                    best = Some((len, text));
                }
            }
        }
        match best {
            Some((len, text)) => {
                let names: Vec<String> = nodes[i..i + len].iter().map(|m| m.name.clone()).collect();
                entries.push((hostlist::compress(&names), text));
                i += len;
            }
            None => {
                entries.push((first.name.clone(), first.addr.to_string()));
                i += 1;
            }
        }
    }
    entries
}

/// Length of the run of names with the first one's stem and strictly
/// increasing numeric suffixes.
fn stem_run(nodes: &[Member]) -> usize {
    let Some(mut prev) = nodes.first().and_then(|m| numeric_suffix(&m.name)) else {
        return 1;
    };
    let s = stem(&nodes[0].name);
    let mut len = 1;
    for m in &nodes[1..] {
        match numeric_suffix(&m.name) {
            Some(n) if n > prev && stem(&m.name) == s => prev = n,
            _ => break,
        }
        len += 1;
    }
    len
}

/// How many leading nodes the pattern reproduces (with `i` counted from
/// the first).
fn matching(text: &str, nodes: &[Member]) -> usize {
    let Ok(pattern) = AddrPattern::parse(text) else {
        return 0;
    };
    let mut buf = String::new();
    for (k, m) in nodes.iter().enumerate() {
        let vars = Vars {
            n: numeric_suffix(&m.name),
            i: k as u64 + 1,
            g: 0,
        };
        let ok = pattern.fill(vars, &mut buf).is_ok() && parse_addr(&buf).ok() == Some(m.addr);
        if !ok {
            return k;
        }
    }
    nodes.len()
}

/// A plain scalar when that is unambiguous, else a quoted one.
fn scalar(s: &str) -> String {
    let plain = s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars().all(crate::hostlist::is_name_char)
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
        );
    if plain { s.to_string() } else { quoted(s) }
}

/// A double-quoted YAML scalar.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
