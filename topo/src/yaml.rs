//! A small spanned YAML tree.
//!
//! `yaml-rust2`'s event parser reports a [`Marker`] for every event; this
//! module folds those events into a [`Node`] tree in which every scalar,
//! sequence and mapping keeps the 1-based line and column where it starts,
//! so that the semantic checks in `parse` can point at the offending key or
//! value. Anchors and aliases are resolved by copying (with a bound on the
//! total size, against "billion laughs" documents); tags are ignored.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Deepest nesting of sequences and mappings accepted; the topology needs
/// about four per group tier, so this leaves room for many tiers.
const NESTING_MAX: usize = 128;
/// Most nodes a document may expand to, counting alias copies.
const NODES_MAX: usize = 20_000_000;

/// A 1-based line and column in the source text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
}

impl Pos {
    /// The position `chars` characters to the right (for errors inside a
    /// single-line scalar).
    pub fn right(self, chars: usize) -> Pos {
        Pos {
            line: self.line,
            col: self.col + chars,
        }
    }
}

/// One node of the tree with the position where it starts.
#[derive(Clone, Debug)]
pub struct Node {
    /// Where the node starts (for a quoted scalar: its opening quote).
    pub pos: Pos,
    /// What the node holds.
    pub kind: Kind,
}

/// The three YAML node kinds.
#[derive(Clone, Debug)]
pub enum Kind {
    /// A scalar.
    Scalar {
        /// Its text.
        text: String,
        /// False for quoted and block scalars.
        plain: bool,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order (duplicate keys are kept for the
    /// checker to report).
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// True for an empty plain scalar, `~` and `null`.
    pub fn is_null(&self) -> bool {
        match &self.kind {
            Kind::Scalar { text, plain: true } => {
                matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL")
            }
            _ => false,
        }
    }

    /// Words for error messages: "a mapping", "a sequence", "a scalar".
    pub fn type_name(&self) -> &'static str {
        if self.is_null() {
            return "nothing (null)";
        }
        match self.kind {
            Kind::Scalar { .. } => "a scalar",
            Kind::Seq(_) => "a sequence",
            Kind::Map(_) => "a mapping",
        }
    }

    /// Number of nodes in this subtree.
    fn size(&self) -> usize {
        match &self.kind {
            Kind::Scalar { .. } => 1,
            Kind::Seq(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            Kind::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.size() + v.size())
                    .sum::<usize>()
            }
        }
    }
}

/// Parses `text` into a tree. `Ok(None)` is an empty document.
pub fn parse(text: &str) -> Result<Option<Node>, (Pos, String)> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, true) {
        return Err((pos_of(e.marker()), e.info().to_string()));
    }
    if let Some(err) = builder.error {
        return Err(err);
    }
    Ok(builder.root)
}

fn pos_of(m: &Marker) -> Pos {
    // yaml-rust2 reports 1-based lines and 0-based columns.
    Pos {
        line: m.line(),
        col: m.col() + 1,
    }
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Node, usize)>,
    root: Option<Node>,
    documents: usize,
    nodes: usize,
    error: Option<(Pos, String)>,
}

impl Builder {
    fn fail(&mut self, pos: Pos, message: &str) {
        if self.error.is_none() {
            self.error = Some((pos, message.to_string()));
        }
    }

    fn count(&mut self, pos: Pos, n: usize) {
        self.nodes += n;
        if self.nodes > NODES_MAX {
            self.fail(pos, "document too large (more than 20,000,000 nodes)");
        }
    }

    fn open(&mut self, pos: Pos, frame: Frame) {
        if self.stack.len() >= NESTING_MAX {
            self.fail(pos, "nesting too deep (more than 128 levels)");
        }
        self.count(pos, 1);
        self.stack.push(frame);
    }

    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            let size = node.size();
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let pos = pos_of(&mark);
        match ev {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    self.fail(pos, "only one YAML document is allowed");
                }
            }
            Event::Scalar(text, style, anchor, _tag) => {
                self.count(pos, 1);
                let plain = style == TScalarStyle::Plain;
                let node = Node {
                    pos,
                    kind: Kind::Scalar { text, plain },
                };
                self.finish(node, anchor);
            }
            Event::SequenceStart(anchor, _tag) => {
                let items = Vec::new();
                self.open(pos, Frame::Seq { pos, anchor, items });
            }
            Event::MappingStart(anchor, _tag) => {
                let entries = Vec::new();
                let frame = Frame::Map {
                    pos,
                    anchor,
                    entries,
                    key: None,
                };
                self.open(pos, frame);
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq { pos, anchor, items }) => {
                    let kind = Kind::Seq(items);
                    self.finish(Node { pos, kind }, anchor);
                }
                Some(Frame::Map {
                    pos,
                    anchor,
                    entries,
                    ..
                }) => {
                    // A block mapping's event points after its first key;
                    // report the mapping where that key starts.
                    let first = entries.first().map_or(pos, |(k, _)| k.pos);
                    let pos = if (first.line, first.col) < (pos.line, pos.col) {
                        first
                    } else {
                        pos
                    };
                    let kind = Kind::Map(entries);
                    self.finish(Node { pos, kind }, anchor);
                }
                None => self.fail(pos, "unbalanced YAML events"),
            },
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some((mut node, size)) => {
                    self.count(pos, size);
                    node.pos = pos;
                    self.finish(node, 0);
                }
                None => self.fail(pos, "unknown alias"),
            },
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}
