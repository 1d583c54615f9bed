//! Image tarballs: a content-addressed cache (`<dir>/<sha256>.tar`), the
//! fetch from the parent over HTTP checked against the digest, and the
//! HTTP server every parent runs for its children.
//!
//! The root serves the files of its image directory (checked against the
//! digest asked for); a sub-parent serves from its cache and fetches a
//! missing tarball once from its own parent (concurrent requests for the
//! same digest wait for that one fetch), so a rack pulls each image from
//! the root once; a node fetches from its parent into its own cache.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::spec::parse_digest;

/// The largest tarball fetched or served (bytes).
pub const IMAGE_BYTES_MAX: u64 = 512 << 20;
/// How long one fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a tarball could not be had. Nothing was cached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The content does not hash to the digest asked for.
    #[error("digest mismatch: {image} has sha256:{got}, the Cfg asks for sha256:{want}")]
    Digest {
        /// The image source.
        image: String,
        /// The digest asked for.
        want: String,
        /// The digest found.
        got: String,
    },
    /// No such tarball (on this server, or no upstream to ask).
    #[error("no image `{0}` here and no parent to ask")]
    NotFound(String),
    /// No upstream could be reached.
    #[error("fetching {image}: no image server reachable ({reason})")]
    Unreachable {
        /// The image source.
        image: String,
        /// Each server tried and its error.
        reason: String,
    },
    /// The upstream answered an error or the transfer failed.
    #[error("fetching {image} from {from}: {reason}")]
    Fetch {
        /// The image source.
        image: String,
        /// The server asked (`host:port`).
        from: String,
        /// What went wrong.
        reason: String,
    },
    /// A local file operation failed.
    #[error("image cache {0}")]
    Io(String),
}

/// Where tarballs come from and where they are kept.
pub struct ImageStore {
    dir: PathBuf,
    upstreams: Vec<String>,
    served: Option<PathBuf>,
    client: reqwest::Client,
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    fetched: std::sync::atomic::AtomicU64,
}

fn io(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(format!("{what}: {e}"))
}

impl ImageStore {
    /// A store caching in `dir`, fetching misses from the first reachable
    /// of `upstreams` (`ip:port` of the parent's image server, then the
    /// grandparent's, ... up to the root) and, on the root, serving the
    /// files of `served`.
    pub fn new(
        dir: PathBuf,
        upstreams: Vec<String>,
        served: Option<PathBuf>,
    ) -> Result<ImageStore, StoreError> {
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir.display().to_string(), e))?;
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| io("HTTP client", e))?;
        Ok(ImageStore {
            dir,
            upstreams,
            served,
            client,
            flights: Mutex::new(HashMap::new()),
            fetched: Default::default(),
        })
    }

    /// Tarballs fetched from upstream so far (cache misses).
    pub fn fetched(&self) -> u64 {
        self.fetched.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The path of the tarball `source` with SHA-256 `sha256` (hex): from
    /// the cache, the served directory, or fetched and checked.
    pub async fn get(&self, source: &str, sha256: &str) -> Result<PathBuf, StoreError> {
        let cached = self.dir.join(format!("{sha256}.tar"));
        if cached.is_file() {
            return Ok(cached);
        }
        if let Some(dir) = &self.served
            && !source.starts_with("http://")
        {
            let p = dir.join(source);
            if p.is_file() {
                let got = hash_file(&p).await?;
                if got != sha256 {
                    return Err(StoreError::Digest {
                        image: source.into(),
                        want: sha256.into(),
                        got,
                    });
                }
                return Ok(p);
            }
        }
        let flight = {
            let mut f = self.flights.lock().expect("not poisoned");
            f.entry(sha256.to_owned()).or_default().clone()
        };
        let _one = flight.lock().await;
        if cached.is_file() {
            return Ok(cached);
        }
        let urls: Vec<String> = if source.starts_with("http://") {
            vec![source.to_owned()]
        } else {
            self.upstreams
                .iter()
                .map(|up| format!("http://{up}/images/{source}?digest=sha256:{sha256}"))
                .collect()
        };
        if urls.is_empty() {
            return Err(StoreError::NotFound(source.into()));
        }
        let mut unreachable = Vec::new();
        for url in &urls {
            match self.fetch(url, source, sha256, &cached).await {
                Ok(()) => break,
                // Why: a dead sub-parent must not stop its rack; the next
                // level up serves the same content (checked by digest).
                Err(StoreError::Unreachable { reason, .. }) => {
                    tracing::warn!("image {source}: {reason}; trying the next level up");
                    unreachable.push(reason);
                }
                Err(e) => return Err(e),
            }
        }
        if unreachable.len() == urls.len() {
            return Err(StoreError::Unreachable {
                image: source.into(),
                reason: unreachable.join("; "),
            });
        }
        let n = self
            .fetched
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!("layercake_image_fetches_total").increment(1);
        tracing::info!(
            "image {source} (sha256:{}) fetched and cached ({} fetches so far)",
            &sha256[..12],
            n + 1
        );
        Ok(cached)
    }

    async fn fetch(
        &self,
        url: &str,
        source: &str,
        sha256: &str,
        to: &Path,
    ) -> Result<(), StoreError> {
        let from = url
            .strip_prefix("http://")
            .and_then(|r| r.split('/').next())
            .unwrap_or(url)
            .to_owned();
        let err = |reason: String| StoreError::Fetch {
            image: source.to_owned(),
            from: from.clone(),
            reason,
        };
        let mut resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| StoreError::Unreachable {
                image: source.to_owned(),
                reason: format!("{from}: {e}"),
            })?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            let body: String = body.chars().take(600).collect();
            return Err(err(format!("{status}: {}", body.trim())));
        }
        let tmp = to.with_extension(format!("part{}", std::process::id()));
        let mut f = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| io(&tmp.display().to_string(), e))?;
        let mut h = Sha256::new();
        let mut len: u64 = 0;
        let r: Result<(), StoreError> = async {
            while let Some(chunk) = resp.chunk().await.map_err(|e| err(e.to_string()))? {
                len = len.saturating_add(chunk.len() as u64);
                if len > IMAGE_BYTES_MAX {
                    return Err(err(format!("larger than {IMAGE_BYTES_MAX} bytes")));
                }
                h.update(&chunk);
                f.write_all(&chunk).await.map_err(|e| io("write", e))?;
            }
            f.flush().await.map_err(|e| io("flush", e))?;
            let got = hex(&h.finalize());
            if got != sha256 {
                return Err(StoreError::Digest {
                    image: source.into(),
                    want: sha256.into(),
                    got,
                });
            }
            Ok(())
        }
        .await;
        match r {
            Ok(()) => tokio::fs::rename(&tmp, to)
                .await
                .map_err(|e| io("rename", e)),
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The SHA-256 (hex) of a file.
pub async fn hash_file(p: &Path) -> Result<String, StoreError> {
    let p = p.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(&p).map_err(|e| io(&p.display().to_string(), e))?;
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h).map_err(|e| io(&p.display().to_string(), e))?;
        Ok(hex(&h.finalize()))
    })
    .await
    .map_err(|e| io("hash task", e))?
}

#[derive(serde::Deserialize)]
struct DigestQuery {
    digest: String,
}

async fn serve_image(
    State(store): State<Arc<ImageStore>>,
    UrlPath(file): UrlPath<String>,
    Query(q): Query<DigestQuery>,
) -> Response {
    let ok_name = !file.is_empty()
        && !file.starts_with('.')
        && file.len() <= 128
        && file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok_name {
        return (StatusCode::BAD_REQUEST, "bad image name").into_response();
    }
    let sha = match parse_digest(&q.digest) {
        Ok(s) => s,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let path = match store.get(&file, &sha).await {
        Ok(p) => p,
        Err(e @ StoreError::NotFound(_)) => {
            return (StatusCode::NOT_FOUND, e.to_string()).into_response();
        }
        Err(e @ StoreError::Digest { .. }) => {
            return (StatusCode::CONFLICT, e.to_string()).into_response();
        }
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    match tokio::fs::metadata(&path).await {
        Ok(m) if m.len() <= IMAGE_BYTES_MAX => {}
        _ => return (StatusCode::INTERNAL_SERVER_ERROR, "image unreadable").into_response(),
    }
    match tokio::fs::read(&path).await {
        Ok(b) => (StatusCode::OK, b).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The image server's routes: `GET /images/{file}?digest=sha256:<hex>`.
pub fn router(store: Arc<ImageStore>) -> Router {
    Router::new()
        .route("/images/{file}", get(serve_image))
        .with_state(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lc-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dead_parent_is_skipped_digests_are_checked_and_hits_are_cached() {
        let served = temp("served");
        std::fs::write(served.join("a.tar"), b"layer one").unwrap();
        let sha = hex(&Sha256::digest(b"layer one"));
        let root_cache = temp("root");
        let root = ImageStore::new(root_cache.clone(), vec![], Some(served.clone())).unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(l, router(Arc::new(root))).await });
        // A port nothing listens on stands for a dead sub-parent.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_addr = dead.local_addr().unwrap().to_string();
        drop(dead);
        let cache = temp("node");
        let node = ImageStore::new(cache.clone(), vec![dead_addr, addr], None).unwrap();
        let p = node.get("a.tar", &sha).await.unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"layer one");
        assert_eq!(node.fetched(), 1);
        node.get("a.tar", &sha).await.unwrap();
        assert_eq!(node.fetched(), 1, "the second get is a cache hit");
        let e = node.get("a.tar", &"0".repeat(64)).await.unwrap_err();
        assert!(e.to_string().contains("digest mismatch"), "{e}");
        assert!(node.get("b.tar", &"1".repeat(64)).await.is_err());
        for d in [served, cache, root_cache] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
