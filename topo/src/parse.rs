//! From the spanned YAML tree to a [`Topology`], checking everything and
//! pointing every error at the offending key or value.
//!
//! Checks, in schema order (the first failure is reported): types, unknown
//! and duplicate keys, missing required keys, names (characters, unique
//! across the root, sub-parents, standbys and nodes; a node in two groups),
//! unique addresses, hostlists, address patterns, durations, `hello <
//! dead`, jitter range, and that group nesting matches `levels`; then the
//! strategy rules of `rules` (gossip on every level or none, a standby in
//! every group a `hybrid` level governs).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::duration;
use crate::error::TopoError;
use crate::hostlist::{self, is_name_char};
use crate::model::{Group, Level, Member, Spans, Topology};
use crate::pattern::{AddrPattern, Vars, numeric_suffix, parse_addr};
use crate::rules::{self, RuleSpans};
use crate::sync::{JITTER_MAX, StrategyKind, SyncSettings, Transport};
use crate::yaml::{self, Kind, Node, Pos};

/// Most tiers below the root (sub-parent tiers plus the nodes' tier).
pub const LEVELS_MAX: usize = 16;
/// Longest name (a DNS name's limit).
const NAME_LEN_MAX: usize = 253;

type R<T> = Result<T, TopoError>;

/// Parses topology YAML (see [`crate::Topology::parse`]): the first error.
pub(crate) fn parse(text: &str, file: &str) -> R<Topology> {
    parse_all(text, file).map_err(|mut errs| errs.swap_remove(0))
}

/// Parses topology YAML and reports every error it can find (at least
/// one when it fails), in file order: a bad group or node entry is
/// reported and skipped, and the checks go on.
pub(crate) fn parse_all(text: &str, file: &str) -> Result<Topology, Vec<TopoError>> {
    let mut cx = Cx {
        file,
        names: HashMap::new(),
        addrs: HashMap::new(),
        group_names: Vec::new(),
        group_pos: HashMap::new(),
        levels_declared: None,
        depth_max: None,
        buf: String::new(),
        rule_spans: RuleSpans {
            default_strategy: None,
            level_strategy: Vec::new(),
            groups: Vec::new(),
        },
        errors: Vec::new(),
    };
    let root = yaml::parse(text).map_err(|(pos, msg)| {
        let hint = unquoted_hostlist_hint(text, pos.line).unwrap_or_default();
        vec![cx.err(pos, format!("YAML: {msg}{hint}"))]
    })?;
    let Some(root) = root else {
        let pos = Pos { line: 1, col: 1 };
        return Err(vec![cx.err(
            pos,
            "empty file: expected a mapping with at least `cluster` and `root`",
        )]);
    };
    let res = cx.topology(&root);
    let mut errors = std::mem::take(&mut cx.errors);
    match res {
        Ok(t) if errors.is_empty() => return Ok(t),
        Ok(_) => {}
        Err(e) => errors.push(e),
    }
    errors.sort_by_key(|e| (e.line, e.column));
    errors.dedup();
    Err(errors)
}

/// When a YAML syntax error sits on (or just after) a line with an
/// unquoted hostlist in a flow mapping (`{ hosts: n[01-10], ... }`), says
/// why: YAML reads `[` as the start of a list there.
fn unquoted_hostlist_hint(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let candidates = [line.checked_sub(1), line.checked_sub(2)];
    for l in candidates.into_iter().flatten() {
        let Some(src) = lines.get(l) else { continue };
        let Some(at) = src.find("hosts:") else {
            continue;
        };
        let value = src[at + "hosts:".len()..].trim_start();
        if value.contains('[') && !value.starts_with(['"', '\'']) {
            let shown: String = value
                .chars()
                .take_while(|c| !matches!(c, ',' | '}'))
                .collect();
            return Some(format!(
                " (line {}: the hostlist `{}` must be quoted, `hosts: \"{}\"`: unquoted, YAML reads `[` as the start of a list)",
                l + 1,
                shown.trim(),
                shown.trim()
            ));
        }
    }
    None
}

/// Who holds a name, for duplicate messages.
#[derive(Clone, Copy)]
enum Owner {
    Root,
    SubParent(u32),
    Standby(u32),
    Node(u32),
}

/// A partial `sync` block with the positions of the timers.
struct Patch {
    pos: Pos,
    strategy: Option<(StrategyKind, Pos)>,
    hello: Option<(std::time::Duration, Pos)>,
    dead: Option<(std::time::Duration, Pos)>,
    jitter: Option<f64>,
    transport: Option<Transport>,
    retake: Option<bool>,
}

impl Patch {
    fn apply(&self, base: SyncSettings) -> SyncSettings {
        SyncSettings {
            strategy: self.strategy.map_or(base.strategy, |(s, _)| s),
            hello: self.hello.map_or(base.hello, |(d, _)| d),
            dead: self.dead.map_or(base.dead, |(d, _)| d),
            jitter: self.jitter.unwrap_or(base.jitter),
            transport: self.transport.unwrap_or(base.transport),
            retake: self.retake.unwrap_or(base.retake),
        }
    }
}

struct Cx<'a> {
    file: &'a str,
    names: HashMap<String, (Owner, Pos)>,
    addrs: HashMap<SocketAddr, (String, Pos)>,
    group_names: Vec<String>,
    group_pos: HashMap<String, Pos>,
    levels_declared: Option<Vec<String>>,
    depth_max: Option<usize>,
    buf: String,
    rule_spans: RuleSpans,
    /// Errors of groups and node entries already skipped, so that one
    /// run reports them all.
    errors: Vec<TopoError>,
}

/// Most errors one run collects (the rest would repeat the first ones).
const ERRORS_MAX: usize = 100;

/// The entry for `key` in a mapping, if present and not null.
fn field<'n>(entries: &'n [(Node, Node)], key: &str) -> Option<(&'n Node, &'n Node)> {
    entries
        .iter()
        .find(|(k, _)| key_text(k) == key)
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k, v))
}

fn key_text(node: &Node) -> &str {
    match &node.kind {
        Kind::Scalar { text, .. } => text,
        _ => "",
    }
}

/// Position of character `offset` (bytes) inside a single-line scalar.
fn inside(node: &Node, text: &str, offset: usize) -> Pos {
    let quote = usize::from(!matches!(node.kind, Kind::Scalar { plain: true, .. }));
    let chars = text.get(..offset).map_or(offset, |s| s.chars().count());
    node.pos.right(quote + chars)
}

impl Cx<'_> {
    /// Records the error of an entry that is skipped; fails once
    /// [`ERRORS_MAX`] errors are collected.
    fn skip(&mut self, e: TopoError) -> R<()> {
        if self.errors.len() + 1 >= ERRORS_MAX {
            return Err(e);
        }
        self.errors.push(e);
        Ok(())
    }

    fn err(&self, pos: Pos, message: impl Into<String>) -> TopoError {
        TopoError {
            file: self.file.to_string(),
            line: pos.line,
            column: pos.col,
            message: message.into(),
        }
    }

    /// Checks that `node` is a mapping with only `keys`, each at most once.
    fn map<'n>(&self, node: &'n Node, what: &str, keys: &[&str]) -> R<&'n [(Node, Node)]> {
        let Kind::Map(entries) = &node.kind else {
            let found = node.type_name();
            return Err(self.err(
                node.pos,
                format!("expected a mapping for {what}, found {found}"),
            ));
        };
        for (i, (k, _)) in entries.iter().enumerate() {
            let Kind::Scalar { text, .. } = &k.kind else {
                return Err(self.err(k.pos, format!("keys in {what} must be plain words")));
            };
            if !keys.contains(&text.as_str()) {
                let expected = keys.join(", ");
                let msg = format!("unknown key `{text}` in {what} (expected one of: {expected})");
                return Err(self.err(k.pos, msg));
            }
            if let Some((first, _)) = entries[..i].iter().find(|(f, _)| key_text(f) == text) {
                let (l, c) = (first.pos.line, first.pos.col);
                let msg =
                    format!("duplicate key `{text}` in {what} (first at line {l}, column {c})");
                return Err(self.err(k.pos, msg));
            }
        }
        Ok(entries)
    }

    /// The value of a required key.
    fn required<'n>(
        &self,
        map: &Node,
        entries: &'n [(Node, Node)],
        key: &str,
        what: &str,
    ) -> R<&'n Node> {
        if let Some((_, v)) = field(entries, key) {
            return Ok(v);
        }
        match entries.iter().find(|(k, _)| key_text(k) == key) {
            Some((k, _)) => Err(self.err(k.pos, format!("`{key}` in {what} has no value"))),
            None => Err(self.err(map.pos, format!("missing required key `{key}` in {what}"))),
        }
    }

    fn string<'n>(&self, node: &'n Node, what: &str) -> R<&'n str> {
        match &node.kind {
            Kind::Scalar { text, .. } if !node.is_null() => Ok(text),
            _ => {
                let found = node.type_name();
                Err(self.err(
                    node.pos,
                    format!("expected a string for {what}, found {found}"),
                ))
            }
        }
    }

    fn name(&self, node: &Node, what: &str) -> R<String> {
        let name = self.string(node, what)?;
        if name.is_empty() || name.len() > NAME_LEN_MAX {
            return Err(self.err(node.pos, format!("{what} must be 1 to 253 characters long")));
        }
        if let Some((i, c)) = name.char_indices().find(|&(_, c)| !is_name_char(c)) {
            let msg = format!(
                "invalid character `{c}` in {what} `{name}` (allowed: letters, digits, `.`, `_`, `-`)"
            );
            return Err(self.err(inside(node, name, i), msg));
        }
        Ok(name.to_string())
    }

    fn describe(&self, owner: Owner) -> String {
        let g = |i: u32| &self.group_names[i as usize];
        match owner {
            Owner::Root => "the root".to_string(),
            Owner::SubParent(i) => format!("the sub-parent of group `{}`", g(i)),
            Owner::Standby(i) => format!("the standby of group `{}`", g(i)),
            Owner::Node(i) => format!("a node of group `{}`", g(i)),
        }
    }

    fn claim_name(&mut self, name: &str, owner: Owner, pos: Pos) -> R<()> {
        let Some(&(old, first)) = self.names.get(name) else {
            self.names.insert(name.to_string(), (owner, pos));
            return Ok(());
        };
        let at = format!("line {}, column {}", first.line, first.col);
        let msg = match (old, owner) {
            (Owner::Node(a), Owner::Node(b)) if a == b => {
                format!(
                    "duplicate node `{name}` in group `{}` (first at {at})",
                    self.group_names[a as usize]
                )
            }
            (Owner::Node(a), Owner::Node(b)) => format!(
                "node `{name}` is in two groups: `{}` ({at}) and `{}`",
                self.group_names[a as usize], self.group_names[b as usize]
            ),
            (old, _) => format!(
                "name `{name}` is already used by {} ({at})",
                self.describe(old)
            ),
        };
        Err(self.err(pos, msg))
    }

    fn claim_addr(&mut self, addr: SocketAddr, name: &str, pos: Pos) -> R<()> {
        if let Some((other, first)) = self.addrs.get(&addr) {
            let (l, c) = (first.line, first.col);
            let msg = format!(
                "address {addr} of `{name}` is already used by `{other}` (line {l}, column {c})"
            );
            return Err(self.err(pos, msg));
        }
        self.addrs.insert(addr, (name.to_string(), pos));
        Ok(())
    }

    fn addr(&self, node: &Node, what: &str) -> R<SocketAddr> {
        let text = self.string(node, what)?;
        parse_addr(text).map_err(|msg| self.err(node.pos, msg))
    }

    /// `{ name, addr }`; returns the member and the positions of its values.
    fn member(&mut self, node: &Node, what: &str, owner: Owner) -> R<Member> {
        let entries = self.map(node, what, &["name", "addr"])?;
        let name_node = self.required(node, entries, "name", what)?;
        let name = self.name(name_node, &format!("the name of {what}"))?;
        let addr_node = self.required(node, entries, "addr", what)?;
        let addr = self.addr(addr_node, &format!("the addr of {what}"))?;
        self.claim_name(&name, owner, name_node.pos)?;
        self.claim_addr(addr, &name, addr_node.pos)?;
        Ok(Member { name, addr })
    }

    fn topology(&mut self, root: &Node) -> R<Topology> {
        let what = "the top level";
        let keys = ["cluster", "key_file", "sync", "levels", "root", "groups"];
        let entries = self.map(root, what, &keys)?;
        let cluster = self.name(self.required(root, entries, "cluster", what)?, "`cluster`")?;
        let mut spans = Spans {
            file: self.file.to_string(),
            key_file: None,
        };
        let key_file = match field(entries, "key_file") {
            Some((_, v)) => {
                spans.key_file = Some((v.pos.line, v.pos.col));
                Some(PathBuf::from(self.string(v, "`key_file`")?))
            }
            None => None,
        };
        let defaults = match field(entries, "sync") {
            Some((_, v)) => {
                let what = "the default `sync`";
                let (s, at) = self.sync(v, what, SyncSettings::default(), "built-in")?;
                self.rule_spans.default_strategy = at;
                s
            }
            None => SyncSettings::default(),
        };
        let levels_key = field(entries, "levels");
        let mut levels = match levels_key {
            Some((_, v)) => self.levels(v, defaults)?,
            None => Vec::new(),
        };
        self.levels_declared = levels_key.map(|_| levels.iter().map(|l| l.name.clone()).collect());
        let root_node = self.required(root, entries, "root", what)?;
        let root_member = self.member(root_node, "`root`", Owner::Root)?;
        let groups = match field(entries, "groups") {
            Some((_, v)) => self.groups(v, 0)?,
            None => Vec::new(),
        };
        // Tiers the groups use: one per nesting depth plus the nodes'.
        let used = self.depth_max.map_or(1, |d| d + 2);
        match levels_key {
            Some((k, _)) if !groups.is_empty() && levels.len() != used => {
                let names: Vec<&str> = levels.iter().map(|l| l.name.as_str()).collect();
                let msg = format!(
                    "`levels` lists {} tiers ({}) but the groups use {used}: {} group tier(s) plus the nodes' tier",
                    levels.len(),
                    names.join(", "),
                    used - 1
                );
                return Err(self.err(k.pos, msg));
            }
            Some(_) => {}
            None => {
                levels = (0..used - 1)
                    .map(|d| format!("level{d}"))
                    .chain(std::iter::once("node".to_string()))
                    .map(|name| Level {
                        name,
                        sync: defaults,
                    })
                    .collect();
            }
        }
        let topo = Topology {
            cluster,
            key_file,
            defaults,
            levels,
            root: root_member,
            groups,
            spans,
        };
        rules::check(&topo, &self.rule_spans).map_err(|(pos, msg)| self.err(pos, msg))?;
        Ok(topo)
    }

    /// Parses a `sync` block over `base` and checks the result; also
    /// returns where its `strategy` was written, if it was.
    fn sync(
        &self,
        node: &Node,
        what: &str,
        base: SyncSettings,
        base_name: &str,
    ) -> R<(SyncSettings, Option<Pos>)> {
        let patch = self.patch(node, what)?;
        let s = patch.apply(base);
        if s.hello >= s.dead {
            let pos = patch.dead.or(patch.hello).map_or(patch.pos, |(_, p)| p);
            let inherited = match (patch.hello, patch.dead) {
                (Some(_), Some(_)) => String::new(),
                (None, _) => format!(" (hello from the {base_name} settings)"),
                (_, None) => format!(" (dead from the {base_name} settings)"),
            };
            let msg = format!(
                "hello ({}) must be shorter than dead ({}){inherited} in {what}",
                duration::format(s.hello),
                duration::format(s.dead)
            );
            return Err(self.err(pos, msg));
        }
        Ok((s, patch.strategy.map(|(_, p)| p)))
    }

    fn patch(&self, node: &Node, what: &str) -> R<Patch> {
        let keys = ["strategy", "hello", "dead", "jitter", "transport", "retake"];
        let entries = self.map(node, what, &keys)?;
        let word = |key: &str| -> R<Option<(&Node, &str)>> {
            match field(entries, key) {
                Some((_, v)) => Ok(Some((v, self.string(v, &format!("`{key}`"))?))),
                None => Ok(None),
            }
        };
        let mut p = Patch {
            pos: node.pos,
            strategy: None,
            hello: None,
            dead: None,
            jitter: None,
            transport: None,
            retake: None,
        };
        if let Some((v, s)) = word("strategy")? {
            let kind = s.parse().map_err(|e| self.err(v.pos, format!("{e}")))?;
            p.strategy = Some((kind, v.pos));
        }
        if let Some((v, s)) = word("transport")? {
            p.transport = Some(s.parse().map_err(|e| self.err(v.pos, format!("{e}")))?);
        }
        for key in ["hello", "dead"] {
            if let Some((v, s)) = word(key)? {
                let d = duration::parse(s).map_err(|m| self.err(v.pos, format!("`{key}`: {m}")))?;
                if d.is_zero() {
                    return Err(self.err(v.pos, format!("`{key}` must be longer than 0")));
                }
                let slot = if key == "hello" {
                    &mut p.hello
                } else {
                    &mut p.dead
                };
                *slot = Some((d, v.pos));
            }
        }
        if let Some((v, s)) = word("jitter")? {
            let j: f64 = s
                .parse()
                .ok()
                .filter(|j: &f64| j.is_finite())
                .ok_or_else(|| {
                    self.err(v.pos, format!("`jitter` must be a number, found `{s}`"))
                })?;
            if !(0.0..=JITTER_MAX).contains(&j) {
                return Err(self.err(v.pos, format!("`jitter` {s} is outside 0.0..=0.5")));
            }
            p.jitter = Some(j);
        }
        if let Some((v, s)) = word("retake")? {
            p.retake = Some(match s {
                "true" | "True" | "TRUE" => true,
                "false" | "False" | "FALSE" => false,
                _ => {
                    return Err(self.err(
                        v.pos,
                        format!("`retake` must be true or false, found `{s}`"),
                    ));
                }
            });
        }
        Ok(p)
    }

    fn levels(&mut self, node: &Node, defaults: SyncSettings) -> R<Vec<Level>> {
        let Kind::Seq(items) = &node.kind else {
            let found = node.type_name();
            return Err(self.err(
                node.pos,
                format!("expected a sequence for `levels`, found {found}"),
            ));
        };
        if items.is_empty() || items.len() > LEVELS_MAX {
            return Err(self.err(
                node.pos,
                "`levels` must list 1 to 16 tiers (the last is the nodes' tier)",
            ));
        }
        let mut levels: Vec<Level> = Vec::with_capacity(items.len());
        for item in items {
            let what = "a level";
            let entries = self.map(item, what, &["name", "sync"])?;
            let name_node = self.required(item, entries, "name", what)?;
            let name = self.name(name_node, "a level name")?;
            if levels.iter().any(|l| l.name == name) {
                return Err(self.err(name_node.pos, format!("duplicate level name `{name}`")));
            }
            let what = format!("the `sync` of level `{name}`");
            let (sync, at) = match field(entries, "sync") {
                Some((_, v)) => self.sync(v, &what, defaults, "default")?,
                None => (defaults, None),
            };
            self.rule_spans.level_strategy.push(at);
            levels.push(Level { name, sync });
        }
        Ok(levels)
    }

    fn groups(&mut self, node: &Node, depth: usize) -> R<Vec<Group>> {
        let Kind::Seq(items) = &node.kind else {
            let found = node.type_name();
            return Err(self.err(
                node.pos,
                format!("expected a sequence for `groups`, found {found}"),
            ));
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match self.group(item, depth, i as u64 + 1) {
                Ok(g) => out.push(g),
                Err(e) => self.skip(e)?,
            }
        }
        Ok(out)
    }

    fn check_depth(&mut self, pos: Pos, name: &str, depth: usize) -> R<()> {
        let declared = self.levels_declared.as_ref().map_or(LEVELS_MAX, Vec::len);
        if depth + 1 >= declared {
            let msg = match &self.levels_declared {
                Some(names) => format!(
                    "group `{name}` is in group tier {}, but `levels` ({}) has room for {} group tier(s) above the nodes' tier",
                    depth + 1,
                    names.join(", "),
                    declared - 1
                ),
                None => format!(
                    "group `{name}` is in group tier {} (at most {} allowed)",
                    depth + 1,
                    LEVELS_MAX - 1
                ),
            };
            return Err(self.err(pos, msg));
        }
        self.depth_max = Some(self.depth_max.map_or(depth, |d| d.max(depth)));
        Ok(())
    }

    fn group(&mut self, node: &Node, depth: usize, g: u64) -> R<Group> {
        let what = "a group";
        let keys = ["name", "sub_parent", "standby", "groups", "nodes"];
        let entries = self.map(node, what, &keys)?;
        let name_node = self.required(node, entries, "name", what)?;
        let name = self.name(name_node, "a group name")?;
        if let Some(first) = self.group_pos.get(&name) {
            let msg = format!(
                "duplicate group name `{name}` (first at line {}, column {})",
                first.line, first.col
            );
            return Err(self.err(name_node.pos, msg));
        }
        self.group_pos.insert(name.clone(), name_node.pos);
        self.check_depth(name_node.pos, &name, depth)?;
        let index = self.group_names.len() as u32;
        self.group_names.push(name.clone());
        self.rule_spans.groups.push(node.pos);
        let what = format!("the `sub_parent` of group `{name}`");
        let sp_node = self.required(node, entries, "sub_parent", &format!("group `{name}`"))?;
        let sub_parent = self.member(sp_node, &what, Owner::SubParent(index))?;
        let nodes = match field(entries, "nodes") {
            Some((_, v)) => self.nodes(v, index, g)?,
            None => Vec::new(),
        };
        let standby = match field(entries, "standby") {
            Some((_, v)) => Some(self.standby(v, index, &nodes)?),
            None => None,
        };
        let groups = match field(entries, "groups") {
            Some((_, v)) => self.groups(v, depth + 1)?,
            None => Vec::new(),
        };
        Ok(Group {
            name,
            sub_parent,
            standby,
            groups,
            nodes,
        })
    }

    fn standby(&mut self, node: &Node, group: u32, nodes: &[Member]) -> R<Member> {
        let gname = self.group_names[group as usize].clone();
        let what = format!("the `standby` of group `{gname}`");
        let (name_node, addr_node) = match &node.kind {
            Kind::Scalar { .. } => (node, None),
            _ => {
                let entries = self.map(node, &what, &["name", "addr"])?;
                let name_node = self.required(node, entries, "name", &what)?;
                (name_node, field(entries, "addr").map(|(_, v)| v))
            }
        };
        let name = self.name(name_node, &format!("the name of {what}"))?;
        if let Some(member) = nodes.iter().find(|m| m.name == name) {
            if let Some(a) = addr_node {
                let addr = self.addr(a, &format!("the addr of {what}"))?;
                if addr != member.addr {
                    let msg = format!(
                        "standby `{name}` is a node of group `{gname}` at {}, not {addr}",
                        member.addr
                    );
                    return Err(self.err(a.pos, msg));
                }
            }
            return Ok(member.clone());
        }
        let Some(addr_node) = addr_node else {
            let msg = format!(
                "standby `{name}` is not a node of group `{gname}`; give it as {{ name, addr }} to make it a separate member"
            );
            return Err(self.err(name_node.pos, msg));
        };
        let addr = self.addr(addr_node, &format!("the addr of {what}"))?;
        self.claim_name(&name, Owner::Standby(group), name_node.pos)?;
        self.claim_addr(addr, &name, addr_node.pos)?;
        Ok(Member { name, addr })
    }

    fn nodes(&mut self, node: &Node, group: u32, g: u64) -> R<Vec<Member>> {
        let Kind::Seq(items) = &node.kind else {
            let found = node.type_name();
            return Err(self.err(
                node.pos,
                format!("expected a sequence for `nodes`, found {found}"),
            ));
        };
        let mut out = Vec::new();
        for item in items {
            if let Err(e) = self.node_entry(item, group, g, &mut out) {
                self.skip(e)?;
            }
        }
        Ok(out)
    }

    fn node_entry(&mut self, item: &Node, group: u32, g: u64, out: &mut Vec<Member>) -> R<()> {
        let what = "a `nodes` entry";
        let entries = self.map(item, what, &["hosts", "addr"])?;
        let hosts_node = self.required(item, entries, "hosts", what)?;
        let hosts_text = self.string(hosts_node, "`hosts`")?;
        let hosts = hostlist::expand(hosts_text).map_err(|e| {
            let pos = inside(hosts_node, hosts_text, e.offset());
            self.err(pos, format!("bad hostlist `{hosts_text}`: {e}"))
        })?;
        let addr_node = self.required(item, entries, "addr", what)?;
        let addr_text = self.string(addr_node, "`addr`")?;
        let pattern = AddrPattern::parse(addr_text).map_err(|(at, msg)| {
            let pos = inside(addr_node, addr_text, at);
            self.err(pos, format!("bad address pattern `{addr_text}`: {msg}"))
        })?;
        let mut buf = std::mem::take(&mut self.buf);
        for (i, host) in hosts.into_iter().enumerate() {
            let vars = Vars {
                n: numeric_suffix(&host),
                i: i as u64 + 1,
                g,
            };
            let addr = pattern
                .fill(vars, &mut buf)
                .and_then(|()| parse_addr(&buf))
                .map_err(|msg| self.err(addr_node.pos, format!("host `{host}`: {msg}")))?;
            self.claim_name(&host, Owner::Node(group), hosts_node.pos)?;
            self.claim_addr(addr, &host, addr_node.pos)?;
            out.push(Member { name: host, addr });
        }
        self.buf = buf;
        Ok(())
    }
}
