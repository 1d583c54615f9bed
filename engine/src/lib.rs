//! Kraken's state engine: the declarative core that turns "what the admin
//! wants" (Cfg) and "what is really there" (Dsc) into mutation chains.
//!
//! - [`value`], [`url`], [`registry`]: values, the URL language, the
//!   extension registry and typed access to `Node` fields.
//! - [`store`], [`events`]: the Cfg/Dsc store and the event dispatcher.
//! - [`mutation`]: module declarations and their validation.
//! - [`graph`]: the epistemic state graph (three phases, JSON/DOT export).
//! - [`planner`]: fewest-step chains by table lookup, and plan preview.
//! - [`executor`]: the per-node chain state machine (sans-io).
//! - [`node`]: [`node::NodeEngine`], one node's engine, sans-io.
//! - [`images`]: the image-set extension and the image module's
//!   declarations (layer 1), shared by real and virtual image modules.
//! - [`virt`]: virtual power and boot modules on virtual time.
//! - [`virt_images`]: a virtual image module (simulated container start
//!   times, the real module's states and Busy rules).
//! - [`shell`]: the thin tokio shell that runs module calls.
//! - [`bench`]: the `loadtest engine` benchmark.
//!
//! **Invariant:** every module except [`shell`] and [`bench`] is sans-io:
//! no tokio, no wall clock, no ambient randomness (a test greps for them).
//! The engine depends on `proto` only among workspace crates.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod bench;
pub mod driver;
pub mod events;
pub mod executor;
pub mod graph;
pub mod images;
pub mod mutation;
pub mod node;
pub mod planner;
pub mod registry;
pub mod shell;
pub mod store;
pub mod url;
pub mod value;
pub mod virt;
pub mod virt_images;
