//! Image sets in a running instance: a node's image host wired to its
//! engine, and the image server of a parent.
//!
//! - [`start_node`]: the node's [`ImageStore`] (fetching from its parent),
//!   its runtime and the [`host`](crate::modules::image::host) task, whose
//!   Dsc values go to the node's engine through
//!   [`MemberApp::image_dsc`](crate::daemon::member::MemberApp::image_dsc).
//! - [`start_server`]: a parent's (root or sub-parent) image server on TCP
//!   at its own address, caching for its children.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use engine::url::Path;
use engine::value::Value;
use overlay::udp::Handle;
use tokio::sync::mpsc;

use crate::daemon::world::MemberNode;
use crate::modules::image::ImageOptions;
use crate::modules::image::host::{self, HostConfig, Report};
use crate::modules::image::runtime::Runtime;
use crate::modules::image::store::{self, ImageStore};

/// Image host inputs queued before new ones are dropped.
pub const INPUTS_MAX: usize = 256;
/// Failed restarts in a row before an image is FATAL.
pub const RESTART_MAX: u32 = 5;

struct ToNode(Handle<MemberNode>);

impl Report for ToNode {
    fn dsc(&self, values: Vec<(Path, Value)>) {
        self.0
            .with(|n, now| n.with(now, |app, stack| app.image_dsc(stack, now, &values)));
    }
}

/// Starts node `name`'s image host (on the current `LocalSet`), fetching
/// from the image servers `upstreams` (its parent first, then up to the
/// root).
pub fn start_node(
    h: Handle<MemberNode>,
    opts: &ImageOptions,
    name: &str,
    upstreams: &[SocketAddr],
) -> Result<()> {
    let ups = upstreams.iter().map(ToString::to_string).collect();
    let store =
        ImageStore::new(opts.dir.join("cache"), ups, None).context("the node's image cache")?;
    let rt = Runtime::new(opts.runtime.clone(), opts.dir.join("node"));
    let (tx, rx) = mpsc::channel(INPUTS_MAX);
    h.with(|n, _| {
        n.with_app(|app| {
            if let Some(node) = app.node_mut() {
                node.attach_images(tx);
            }
        })
    });
    let cfg = HostConfig {
        node: name.to_owned(),
        retries: opts.retries,
        backoff: opts.backoff,
        monitor: opts.monitor,
        restart_max: RESTART_MAX,
    };
    tokio::task::spawn_local(host::run(cfg, Arc::new(store), rt, rx, ToNode(h)));
    tracing::info!("image host: runtime {}", opts.runtime.display());
    Ok(())
}

/// Starts a parent's image server on TCP `addr`: the root serves
/// `opts.serve_dir`, a sub-parent caches what it fetches from `upstreams`
/// (its parent first, then up to the root).
pub fn start_server(addr: SocketAddr, opts: &ImageOptions, upstreams: &[SocketAddr]) -> Result<()> {
    let store = ImageStore::new(
        opts.dir.join("cache"),
        upstreams.iter().map(ToString::to_string).collect(),
        opts.serve_dir.clone(),
    )
    .context("the image cache")?;
    let l = std::net::TcpListener::bind(addr)
        .with_context(|| format!("binding the image server at {addr} (TCP)"))?;
    l.set_nonblocking(true)?;
    let l = tokio::net::TcpListener::from_std(l)?;
    tracing::info!("image server on http://{addr}/images/");
    let app = store::router(Arc::new(store));
    tokio::task::spawn_local(async move {
        if let Err(e) = axum::serve(l, app).await {
            tracing::error!("image server: {e}");
        }
    });
    Ok(())
}
