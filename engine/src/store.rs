//! The state store: per node a Cfg and a Dsc copy of `Node`, with create,
//! read, update, delete, bulk forms, and value access by URL. Every write
//! publishes [`EventKind::StateChange`] events (node, URL, side, old, new)
//! to the store's [`Dispatcher`].

use crate::events::{Dispatcher, Event, EventKind, Side};
use crate::registry::{AccessError, Registry};
use crate::url::{ParseError, Path, Url};
use crate::value::Value;
use proto::node::Node;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Why a store operation failed. The store is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No node of that name.
    #[error("no node `{0}`")]
    NoSuchNode(String),
    /// A node of that name exists already.
    #[error("node `{0}` exists")]
    Exists(String),
    /// A relative URL with no default node.
    #[error("URL `{0}` names no node")]
    NoNode(String),
    /// The URL does not parse.
    #[error(transparent)]
    Url(#[from] ParseError),
    /// The value cannot be read or written.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The store holds [`NODES_MAX`] nodes.
    #[error("store is full")]
    Full,
}

/// The most nodes one store holds.
pub const NODES_MAX: usize = 1 << 20;

/// Cfg and Dsc of every node, keyed by node name.
pub struct Store {
    registry: Arc<Registry>,
    nodes: BTreeMap<String, [Node; 2]>,
    events: Dispatcher,
}

fn idx(side: Side) -> usize {
    match side {
        Side::Cfg => 0,
        Side::Dsc => 1,
    }
}

impl Store {
    /// An empty store using `registry` for extensions.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self {
            registry,
            nodes: BTreeMap::new(),
            events: Dispatcher::new(),
        }
    }

    /// The dispatcher that receives this store's events.
    pub fn events(&mut self) -> &mut Dispatcher {
        &mut self.events
    }

    /// The registry in use.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Node names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    /// Creates a node whose two copies carry every registered extension.
    pub fn create(&mut self, name: &str) -> Result<(), StoreError> {
        if self.nodes.contains_key(name) {
            return Err(StoreError::Exists(name.to_owned()));
        }
        if self.nodes.len() >= NODES_MAX {
            return Err(StoreError::Full);
        }
        let n = self.registry.new_node(name);
        self.nodes.insert(name.to_owned(), [n.clone(), n]);
        Ok(())
    }

    /// Creates many nodes; stops at the first error (earlier ones stay).
    pub fn create_all<'a>(
        &mut self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<usize, StoreError> {
        let mut count = 0;
        for n in names {
            self.create(n)?;
            count += 1;
        }
        Ok(count)
    }

    /// One copy of a node.
    pub fn get(&self, name: &str, side: Side) -> Option<&Node> {
        self.nodes.get(name).map(|c| &c[idx(side)])
    }

    /// Replaces one copy; returns how many values changed (one event each).
    pub fn update(&mut self, name: &str, side: Side, node: Node) -> Result<usize, StoreError> {
        let copies = self
            .nodes
            .get_mut(name)
            .ok_or_else(|| StoreError::NoSuchNode(name.to_owned()))?;
        let old = std::mem::replace(&mut copies[idx(side)], node);
        let new = &copies[idx(side)];
        let changes = diff(&self.registry, &old, new);
        for (url, o, n) in &changes {
            let e = change_event(name, url.clone(), side, o.clone(), n.clone());
            self.events.publish(&e);
        }
        Ok(changes.len())
    }

    /// Replaces one copy without computing or publishing its changes: for
    /// a holder that nobody watches at the moment (the root's event stream
    /// with no subscriber), where a diff per update would be wasted work.
    pub fn replace_quiet(&mut self, name: &str, side: Side, node: Node) -> Result<(), StoreError> {
        let copies = self
            .nodes
            .get_mut(name)
            .ok_or_else(|| StoreError::NoSuchNode(name.to_owned()))?;
        copies[idx(side)] = node;
        Ok(())
    }

    /// Replaces one copy with what state sync delivered: publishes one
    /// [`EventKind::Sync`] event, then the value changes.
    pub fn update_from_sync(
        &mut self,
        name: &str,
        side: Side,
        node: Node,
    ) -> Result<usize, StoreError> {
        if !self.nodes.contains_key(name) {
            return Err(StoreError::NoSuchNode(name.to_owned()));
        }
        let e = Event {
            kind: EventKind::Sync,
            node: name.to_owned(),
            url: String::new(),
            side,
            old: None,
            new: None,
        };
        self.events.publish(&e);
        self.update(name, side, node)
    }

    /// Applies [`Store::update`] to many nodes; returns the total change count.
    pub fn update_all(
        &mut self,
        side: Side,
        nodes: Vec<(String, Node)>,
    ) -> Result<usize, StoreError> {
        nodes
            .into_iter()
            .try_fold(0, |acc, (name, n)| Ok(acc + self.update(&name, side, n)?))
    }

    /// Deletes a node and both copies.
    pub fn delete(&mut self, name: &str) -> Result<(), StoreError> {
        self.nodes
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| StoreError::NoSuchNode(name.to_owned()))
    }

    /// Deletes many nodes; returns how many existed.
    pub fn delete_all<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) -> usize {
        names
            .into_iter()
            .filter(|n| self.nodes.remove(*n).is_some())
            .count()
    }

    /// Reads a value by URL; `default_node` serves URLs without `<node>:`.
    pub fn get_value(
        &self,
        side: Side,
        url: &str,
        default_node: Option<&str>,
    ) -> Result<Value, StoreError> {
        let (name, u) = resolve(url, default_node)?;
        let node = self.get(&name, side).ok_or(StoreError::NoSuchNode(name))?;
        Ok(self.registry.get(node, &u.path)?)
    }

    /// Writes a value given as text (enums by name or number) by URL.
    pub fn set_value(
        &mut self,
        side: Side,
        url: &str,
        text: &str,
        default_node: Option<&str>,
    ) -> Result<(), StoreError> {
        let (name, u) = resolve(url, default_node)?;
        let v = self.registry.parse_value(&u.path, text)?;
        self.set_parsed(side, &name, &u, v)
    }

    fn set_parsed(&mut self, side: Side, name: &str, u: &Url, v: Value) -> Result<(), StoreError> {
        let copies = self
            .nodes
            .get_mut(name)
            .ok_or_else(|| StoreError::NoSuchNode(name.to_owned()))?;
        let node = &mut copies[idx(side)];
        let old = self.registry.get(node, &u.path).ok();
        self.registry.set(node, &u.path, &v)?;
        if old.as_ref() != Some(&v) {
            let e = change_event(name, u.path.to_string(), side, old, Some(v));
            self.events.publish(&e);
        }
        Ok(())
    }
}

fn resolve(url: &str, default_node: Option<&str>) -> Result<(String, Url), StoreError> {
    let u: Url = url.parse()?;
    let name = u.node.clone().or(default_node.map(str::to_owned));
    Ok((name.ok_or_else(|| StoreError::NoNode(url.to_owned()))?, u))
}

fn change_event(
    node: &str,
    url: String,
    side: Side,
    old: Option<Value>,
    new: Option<Value>,
) -> Event {
    Event {
        kind: EventKind::StateChange,
        node: node.to_owned(),
        url,
        side,
        old,
        new,
    }
}

type Change = (String, Option<Value>, Option<Value>);

/// Every URL whose value differs between `old` and `new`.
pub fn diff(reg: &Registry, old: &Node, new: &Node) -> Vec<Change> {
    if old == new {
        return Vec::new();
    }
    // Both nodes name the registry's extension paths; only services differ.
    let mut paths = reg.paths(old);
    let mut seen: std::collections::HashSet<Path> = paths.iter().cloned().collect();
    for p in reg.paths(new) {
        if seen.insert(p.clone()) {
            paths.push(p);
        }
    }
    let mut out = Vec::new();
    for p in paths {
        let (a, b) = (reg.get(old, &p).ok(), reg.get(new, &p).ok());
        if a != b {
            out.push((p.to_string(), a, b));
        }
    }
    out
}
