//! HTTP boot: the routes iPXE clients fetch after DHCP.
//!
//! - `GET /boot/{key}.ipxe`: the node's iPXE script, `key` being its MAC
//!   (`52:54:00:12:34:56` or with `-`) or its registered name, rendered
//!   from the [`ScriptTemplate`]. An unknown key is a counted 404. When
//!   the client's address is the node's registered one, a
//!   [`PxeEvent::ScriptFetched`] is sent (the script is not secret, so
//!   anyone may read it, but only the node's own fetch is a boot signal).
//! - `GET /boot/files/{path}`: a file (kernel, initramfs) from the files
//!   root, streamed; paths are checked by [`super::files`] (a refused
//!   path is a counted 403, a missing file a counted 404); at most
//!   [`FILE_STREAMS_MAX`] at once (then a counted 503).
//!
//! - `GET /boot/identity`: the client's identity bundle (CA certificate,
//!   its certificate and key), once per boot window, to the registered
//!   address and MAC only ([`super::identity`]); refusals are a counted
//!   403 (404 when this server holds no identity for the node).
//!
//! [`router`] builds the routes on a [`HttpBoot`] state; serve it with
//! connection info (`into_make_service_with_connect_info::<SocketAddr>`)
//! so scripts know who fetched them ([`super::server`] does).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path as UrlPath, State};
use axum::http::{Extensions, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;

use super::event::{EventSink, PxeEvent};
use super::files::{FileError, FileRoot};
use super::identity::Identities;
use super::registry::{Mac, Registry};
use super::script::{BootParams, ScriptTemplate};
use super::stats::{HttpResult, IdentityResult, PxeStats};

/// Largest file served over HTTP (a layer-0 initramfs with the daemon).
pub const FILE_BYTES_MAX: u64 = 1024 * 1024 * 1024;

/// Bytes read from disk per body chunk.
const CHUNK_BYTES: usize = 64 * 1024;

/// Most file bodies streaming at once (each holds an open file and a
/// chunk buffer); beyond it a file request is answered 503 and counted.
pub const FILE_STREAMS_MAX: usize = 64;

/// The routes' shared state.
#[derive(Clone, Debug)]
pub struct HttpBoot {
    /// The boot table (shared with the DHCP task; read-locked briefly).
    pub registry: Arc<RwLock<Registry>>,
    /// Where kernels and initramfs images are.
    pub files: FileRoot,
    /// The script template.
    pub template: Arc<ScriptTemplate>,
    /// What the scripts point at.
    pub params: Arc<BootParams>,
    /// Counters.
    pub stats: Arc<PxeStats>,
    /// Where [`PxeEvent::ScriptFetched`] goes.
    pub events: EventSink,
    /// Permits for file bodies ([`FILE_STREAMS_MAX`] of them).
    pub streams: Arc<Semaphore>,
    /// Nodes' identity bundles (`None`: this server serves none).
    pub identities: Option<Arc<Identities>>,
}

/// The HTTP boot routes.
pub fn router(state: HttpBoot) -> Router {
    Router::new()
        .route("/boot/files/{*path}", get(file))
        .route("/boot/identity", get(identity))
        .route("/boot/{script}", get(script))
        .with_state(state)
}

async fn script(
    State(boot): State<HttpBoot>,
    UrlPath(script): UrlPath<String>,
    extensions: Extensions,
) -> Response {
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    let Some(key) = script.strip_suffix(".ipxe") else {
        return refuse(&boot, HttpResult::BadRequest, StatusCode::NOT_FOUND);
    };
    let found = {
        let registry = match boot.registry.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let by_mac = key.parse::<Mac>().ok().and_then(|mac| {
            let node = registry.get(&mac)?;
            Some((mac, node))
        });
        by_mac
            .or_else(|| registry.by_name(key))
            .map(|(mac, node)| (mac, node.clone()))
    };
    let Some((mac, node)) = found else {
        tracing::debug!(
            ?peer,
            key = key.escape_debug().to_string(),
            "pxe http: unknown node"
        );
        return refuse(&boot, HttpResult::UnknownNode, StatusCode::NOT_FOUND);
    };
    let body = boot.template.render(mac, &node, &boot.params);
    boot.stats.record_http(HttpResult::Script);
    boot.stats.record_http_bytes(body.len());
    match peer {
        Some(peer) if peer.ip() == node.ip => boot.events.send(PxeEvent::ScriptFetched {
            mac,
            name: node.name.clone(),
            peer,
        }),
        _ => tracing::info!(?peer, %mac, "pxe http: script fetched from another address"),
    }
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
        body,
    )
        .into_response()
}

async fn file(State(boot): State<HttpBoot>, UrlPath(path): UrlPath<String>) -> Response {
    let Ok(permit) = boot.streams.clone().try_acquire_owned() else {
        return refuse(&boot, HttpResult::Busy, StatusCode::SERVICE_UNAVAILABLE);
    };
    let opened = boot.files.open(&path, FILE_BYTES_MAX);
    let (file, len) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            let (result, status) = match &e {
                FileError::Refused(_) | FileError::OutsideRoot => {
                    (HttpResult::Refused, StatusCode::FORBIDDEN)
                }
                FileError::NotFound | FileError::NotAFile => {
                    (HttpResult::NotFound, StatusCode::NOT_FOUND)
                }
                FileError::TooLarge(_) | FileError::Io(_) => {
                    (HttpResult::Io, StatusCode::INTERNAL_SERVER_ERROR)
                }
            };
            if e.is_refusal() {
                tracing::warn!(path = path.escape_debug().to_string(), "pxe http: {e}");
            }
            return refuse(&boot, result, status);
        }
    };
    boot.stats.record_http(HttpResult::File);
    let stats = boot.stats.clone();
    let reader = tokio::fs::File::from_std(file);
    // The permit lives in the stream's state: released when the body ends
    // or the client goes away.
    let stream = futures_util::stream::unfold(Some((reader, permit)), move |state| {
        let stats = stats.clone();
        async move {
            let (mut reader, permit) = state?;
            let mut buf = vec![0u8; CHUNK_BYTES];
            match reader.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    stats.record_http_bytes(n);
                    let next = Some((reader, permit));
                    Some((Ok::<Bytes, std::io::Error>(Bytes::from(buf)), next))
                }
                Err(e) => {
                    stats.record_http(HttpResult::Io);
                    Some((Err(e), None))
                }
            }
        }
    });
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::CONTENT_LENGTH, HeaderValue::from(len)),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn identity(State(boot): State<HttpBoot>, extensions: Extensions) -> Response {
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let result = match (&boot.identities, peer) {
        (Some(ids), Some(std::net::IpAddr::V4(ip))) => {
            let registry = match boot.registry.read() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            ids.bundle(&registry, ip)
        }
        (None, _) => Err(IdentityResult::Missing),
        (Some(_), _) => Err(IdentityResult::NotInWindow),
    };
    match result {
        Ok(text) => {
            boot.stats.record_identity(IdentityResult::Served);
            boot.stats.record_http_bytes(text.len());
            let headers = [
                (header::CONTENT_TYPE, HeaderValue::from_static("text/plain")),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ];
            (headers, text).into_response()
        }
        Err(why) => {
            boot.stats.record_identity(why);
            tracing::info!(?peer, reason = why.label(), "pxe http: identity refused");
            let status = match why {
                IdentityResult::Missing => StatusCode::NOT_FOUND,
                _ => StatusCode::FORBIDDEN,
            };
            (status, format!("{}\n", why.label())).into_response()
        }
    }
}

fn refuse(boot: &HttpBoot, result: HttpResult, status: StatusCode) -> Response {
    boot.stats.record_http(result);
    (status, format!("{}\n", result.label())).into_response()
}
