//! Image sets (layer 1): named images run as containers on top of a
//! node's persistent layer 0, rolled by the engine only while the node is
//! not busy (Kraken's imageapi). The extension and the declarations are
//! the engine's (`engine::images`); this module runs them for real.
//!
//! - [`spec`]: [`spec::Wanted`], the image set a Cfg asks for, checked.
//! - [`store`]: tarballs: the content-addressed cache, the fetch from the
//!   parent checked against the digest, the parents' HTTP server.
//! - [`runtime`]: the OCI runtime (`runc`): root filesystems, bundles
//!   (`config.json` by `oci-spec`), run/state/delete.
//! - [`host`]: the task that performs the image steps on a node and keeps
//!   its containers alive.
//!
//! Operator docs: `docs/images.md`.

pub mod host;
pub mod runtime;
pub mod spec;
pub mod store;

use std::path::PathBuf;
use std::time::Duration;

/// The image settings of one instance (`run --images`).
#[derive(Clone, Debug)]
pub struct ImageOptions {
    /// The OCI runtime binary.
    pub runtime: PathBuf,
    /// This instance's image directory: the cache, and on a node the
    /// root filesystems, bundles and the runtime's state.
    pub dir: PathBuf,
    /// The root: the directory whose tarballs it serves.
    pub serve_dir: Option<PathBuf>,
    /// Retries of a failing image before FATAL.
    pub retries: u32,
    /// First retry backoff (doubles).
    pub backoff: Duration,
    /// How often a node checks its containers.
    pub monitor: Duration,
}

/// How long one image step (fetch, unpack, start; with retries) may take.
pub const STEP_TIMEOUT_MS: u64 = 300_000;
