//! REST API authentication: the axum middleware over the root's token
//! table ([`crate::security::tokens`]).
//!
//! - [`require`]: public without a token: the dashboard's static files and
//!   `GET /api/v1/health`; everything else needs `Authorization: Bearer
//!   TOKEN` (or, for `GET /api/v1/events` only, an `access_token` query
//!   parameter, which the dashboard's `EventSource` needs since it cannot
//!   set headers; the parameter is removed before the handler sees the
//!   query. Elsewhere a token in the URL is refused: URLs end up in logs). Missing or
//!   unknown token: 401; a read token on a write: 403; both with the API's
//!   JSON error body and counted in `kraken_api_refused_total{reason}`.
//! - [`needed`]: the role a route needs.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::daemon::control::ApiError;
use crate::security::tokens::{Role, Tokens};

/// The role a request needs, or `None` for the public routes.
pub fn needed(method: &Method, path: &str) -> Option<Role> {
    let read = *method == Method::GET || *method == Method::HEAD;
    let public = ["/", "/dashboard.js", "/dashboard.css", "/api/v1/health"];
    if read && public.contains(&path) {
        return None;
    }
    if read || (*method == Method::POST && path == "/api/v1/plan") {
        return Some(Role::Read);
    }
    Some(Role::Admin)
}

/// The one route whose token may come in the query (the event stream).
pub const QUERY_TOKEN_PATH: &str = "/api/v1/events";

/// The token of a request: the bearer header, else (`GET` of
/// [`QUERY_TOKEN_PATH`] only) the `access_token` query parameter, which is
/// then removed from the URI.
fn take_token(req: &mut Request) -> Option<String> {
    if let Some(v) = req.headers().get(header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_string());
    }
    if req.method() != Method::GET || req.uri().path() != QUERY_TOKEN_PATH {
        return None;
    }
    let query = req.uri().query()?;
    let mut token = None;
    let mut rest = Vec::new();
    for part in query.split('&') {
        match part.strip_prefix("access_token=") {
            Some(t) => token = Some(t.to_string()),
            None => rest.push(part),
        }
    }
    let token = token?;
    let mut pq = req.uri().path().to_string();
    if !rest.is_empty() {
        pq = format!("{pq}?{}", rest.join("&"));
    }
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = pq.parse().ok();
    if let Ok(uri) = axum::http::Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    Some(token)
}

fn refuse(status: u16, reason: &'static str, message: String) -> Response {
    metrics::counter!("kraken_api_refused_total", "reason" => reason).increment(1);
    let code = if status == 401 {
        "unauthorized"
    } else {
        "forbidden"
    };
    let mut r = ApiError {
        status,
        code,
        message,
    }
    .into_response();
    if status == 401 {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

/// The middleware: lets a request through only with a token whose role
/// covers it.
pub async fn require(State(table): State<Arc<Tokens>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let Some(need) = needed(req.method(), &path) else {
        return next.run(req).await;
    };
    let Some(token) = take_token(&mut req) else {
        tracing::debug!("API: {} {path} without a token", req.method());
        return refuse(
            401,
            "missing_token",
            "this API needs a token: send `Authorization: Bearer TOKEN` \
             (`layercake ctl --token-file FILE`; make one with `layercake tokens create`)"
                .into(),
        );
    };
    let Some(entry) = table.find(&token) else {
        tracing::debug!("API: {} {path} with an unknown token", req.method());
        return refuse(
            401,
            "unknown_token",
            "the bearer token is not in this root's token table".into(),
        );
    };
    if entry.role < need {
        tracing::warn!(
            "API: token `{}` (role {}) refused for {} {path}",
            entry.name,
            entry.role,
            req.method()
        );
        return refuse(
            403,
            "forbidden",
            format!(
                "token `{}` has role `{}`; {} {path} needs role `{need}`",
                entry.name,
                entry.role,
                req.method()
            ),
        );
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_per_route() {
        assert_eq!(needed(&Method::GET, "/"), None);
        assert_eq!(needed(&Method::GET, "/api/v1/health"), None);
        assert_eq!(needed(&Method::GET, "/api/v1/nodes"), Some(Role::Read));
        assert_eq!(needed(&Method::GET, "/metrics"), Some(Role::Read));
        assert_eq!(needed(&Method::POST, "/api/v1/plan"), Some(Role::Read));
        assert_eq!(needed(&Method::POST, "/api/v1/cfg"), Some(Role::Admin));
        assert_eq!(needed(&Method::DELETE, "/api/v1/health"), Some(Role::Admin));
    }
}
