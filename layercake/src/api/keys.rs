//! The `/api/v1/keys` routes: keyring status, install, use, remove, over
//! the root's [`KeyService`] (see [`crate::daemon::keyring`]).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::response::{IntoResponse, Response};
use overlay::envelope::ClusterKey;
use serde::Deserialize;
use serde_json::json;

use super::ApiState;
use crate::daemon::control::ApiError;
use crate::daemon::keyring::{KeyService, conflict};

/// The `/api/v1/keys` routes (merged into the API's router).
pub fn routes() -> Router<ApiState> {
    use axum::routing::{delete, get, post};
    Router::new()
        .route("/api/v1/keys", get(status).post(install))
        .route("/api/v1/keys/{id}/use", post(use_key))
        .route("/api/v1/keys/{id}", delete(remove))
}

fn service(s: &ApiState) -> Result<Arc<KeyService>, ApiError> {
    s.keys.clone().ok_or_else(|| {
        conflict(
            "key rotation needs the root to run with --pki (instances fetch the ring over QUIC)"
                .into(),
        )
    })
}

fn force(q: Option<&str>) -> bool {
    q.unwrap_or("")
        .split('&')
        .any(|p| p == "force" || p == "force=true" || p == "force=1")
}

fn parse_id(id: &str) -> Result<u8, ApiError> {
    id.parse()
        .map_err(|_| ApiError::bad(format!("`{id}` is not a key id (1-255)")))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("keyring task failed: {e}")))?
}

async fn status(State(s): State<ApiState>) -> Result<Response, ApiError> {
    Ok(axum::Json(service(&s)?.status()).into_response())
}

#[derive(Deserialize, Default)]
struct InstallBody {
    id: Option<u8>,
    key: Option<String>,
}

async fn install(State(s): State<ApiState>, body: Bytes) -> Result<Response, ApiError> {
    let svc = service(&s)?;
    let b: InstallBody = if body.is_empty() {
        InstallBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("bad JSON body: {e}")))?
    };
    let key = match b.key {
        Some(k) => Some(ClusterKey::from_hex(&k).map_err(|e| ApiError::bad(format!("key: {e}")))?),
        None => None,
    };
    let id = blocking(move || svc.install(b.id, key)).await?;
    Ok(axum::Json(json!({ "id": id, "primary": false })).into_response())
}

async fn use_key(
    State(s): State<ApiState>,
    UrlPath(id): UrlPath<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let (svc, id, f) = (service(&s)?, parse_id(&id)?, force(q.as_deref()));
    blocking(move || svc.use_key(id, f)).await?;
    Ok(axum::Json(json!({ "id": id, "primary": true })).into_response())
}

async fn remove(
    State(s): State<ApiState>,
    UrlPath(id): UrlPath<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let (svc, id, f) = (service(&s)?, parse_id(&id)?, force(q.as_deref()));
    blocking(move || svc.remove(id, f)).await?;
    Ok(axum::Json(json!({ "id": id, "removed": true })).into_response())
}
