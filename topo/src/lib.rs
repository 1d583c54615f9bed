//! Cluster topology for Kraken/Layercake: who the root is, how nodes are
//! grouped into racks and rows under sub-parents, where every instance
//! listens, and the sync settings of each tier's links.
//!
//! - [`Topology`]: loaded from YAML with [`Topology::load`] or
//!   [`Topology::parse`]; every error ([`TopoError`]) names the file, line
//!   and column. [`Topology::to_yaml`] writes it back compactly.
//!   [`Topology::check_key_file`] checks that the cluster key file is safe
//!   to read (for the commands that read it).
//! - [`Flat`]: [`Topology::flatten`] numbers every instance (root = 0,
//!   parents before children) for the overlay.
//! - [`hostlist`]: `ml[001-130]` expressions.
//! - [`generate`]: large synthetic topologies on loopback.
//! - [`duration`]: the one duration grammar (`250ms`, `1.5s`, `2m`), for
//!   topology timers and command-line flags alike.
//!
//! The format is described in `docs/topology.md`.
//!
//! ```
//! let yaml = r#"
//! cluster: demo
//! root: { name: root, addr: "127.0.0.1:7000" }
//! groups:
//!   - name: r1
//!     sub_parent: { name: r1-sp, addr: "127.0.1.1:7000" }
//!     nodes:
//!       - { hosts: "n[01-10]", addr: "127.0.2.{n}:7000" }
//! "#;
//! let topo = topo::Topology::parse(yaml, "demo.yaml").unwrap();
//! let flat = topo.flatten();
//! assert_eq!(flat.instances.len(), 12);
//! assert_eq!(flat.by_name("n07").map(|id| flat.instances[id as usize].parent), Some(Some(1)));
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod duration;
mod emit;
mod error;
mod flat;
pub mod generate;
pub mod hostlist;
mod key_file;
mod model;
mod parse;
mod pattern;
mod rules;
mod sync;
pub mod yaml;

#[cfg(test)]
mod tests;

pub use error::TopoError;
pub use flat::{Flat, FlatGroup, Instance, Role};
pub use hostlist::HostlistError;
pub use model::{Group, Level, Member, Spans, Topology};
pub use parse::LEVELS_MAX;
pub use pattern::fill_pattern;
pub use sync::{StrategyKind, SyncSettings, Transport, UnknownName};
