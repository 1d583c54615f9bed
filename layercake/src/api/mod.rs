//! The REST API, the event stream, `/metrics` and the dashboard, served by
//! the root (axum on its own multi-threaded runtime).
//!
//! Routes (the contract is `docs/api-openapi.yaml`):
//!
//! | route | what |
//! | --- | --- |
//! | `GET /api/v1/health` | liveness and node counts |
//! | `GET /api/v1/nodes?hosts=&group=&filter=&side=&limit=&continue=` | nodes with Cfg and Dsc (paged with `limit`) |
//! | `GET /api/v1/nodes/{name}` | one node, with its active chain |
//! | `PUT/PATCH/DELETE /api/v1/nodes/{name}` | replace, update, reset one Cfg |
//! | `POST /api/v1/cfg`, `DELETE /api/v1/cfg?...` | bulk update / reset |
//! | `POST /api/v1/plan` | plan preview |
//! | `GET /api/v1/graph`, `GET /api/v1/graph.dot` | the mutation graph |
//! | `POST /api/v1/freeze`, `POST /api/v1/thaw` | stop / resume driving |
//! | `GET /api/v1/snapshot` | every node's summary (dashboard) |
//! | `GET /api/v1/events?types=` | server-sent events |
//! | `GET /metrics` | Prometheus |
//! | `GET /` | the dashboard |
//!
//! Every error is `{"error": {"code": ..., "message": ...}}` with the
//! matching status; bodies and queries are parsed here (not by axum's
//! extractors) so that malformed input also gets a JSON error.

pub mod auth;
pub mod body;
pub mod dashboard;
pub mod keys;
pub mod listen;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value as Json, json};
use tokio::sync::{broadcast, watch};

use crate::daemon::control::{ApiError, Control, NODES_PER_COMMAND, Selection, WriteOp, clip};
use crate::daemon::model::Model;
use crate::daemon::root::{Bus, RootApp, chain_for};
use crate::daemon::view::View;
use crate::sync::Stack;
use futures_util::StreamExt;

use body::{BatchBody, BodyError, OneBody, WriteBody};

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    /// The way to the root (writes, plan inputs).
    pub ctl: Control,
    /// The root's read view (lists, nodes, snapshots: no trip through the
    /// overlay's thread).
    pub view: Arc<View>,
    /// The event stream.
    pub bus: Bus,
    /// The metrics recorder.
    pub prom: Option<PrometheusHandle>,
    /// The module set (for the graph).
    pub model: Arc<Model>,
    /// Turns true when the process shuts down (ends event streams).
    pub shutdown: watch::Receiver<bool>,
    /// Accepted bearer tokens; `None`: no authentication (loopback only).
    pub auth: Option<Arc<crate::security::tokens::Tokens>>,
    /// The keyring service (a root running with `--pki`).
    pub keys: Option<Arc<crate::daemon::keyring::KeyService>>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        (status, axum::Json(body)).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok(v: Json) -> ApiResult {
    Ok(axum::Json(v).into_response())
}

/// The router (behind [`crate::api::auth::require`] when tokens are set).
pub fn router(state: ApiState) -> Router {
    let auth = state.auth.clone();
    let r = Router::new()
        .route("/", get(dashboard::index))
        .route("/dashboard.js", get(dashboard::script))
        .route("/dashboard.css", get(dashboard::style))
        .route("/metrics", get(metrics))
        .route("/api/v1/health", get(health))
        .route("/api/v1/nodes", get(list))
        .route(
            "/api/v1/nodes/{name}",
            get(node)
                .put(put_node)
                .patch(patch_node)
                .delete(delete_node),
        )
        .route(
            "/api/v1/cfg",
            axum::routing::post(bulk_set).delete(bulk_reset),
        )
        .route("/api/v1/cfg/batch", axum::routing::post(batch))
        .route("/api/v1/plan", axum::routing::post(plan))
        .route("/api/v1/graph", get(graph))
        .route("/api/v1/graph.dot", get(graph_dot))
        .route("/api/v1/freeze", axum::routing::post(freeze))
        .route("/api/v1/thaw", axum::routing::post(thaw))
        .route("/api/v1/snapshot", get(snapshot))
        .route("/api/v1/events", get(events))
        .merge(crate::api::keys::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    match auth {
        Some(t) => r.layer(axum::middleware::from_fn_with_state(
            t,
            crate::api::auth::require,
        )),
        None => r,
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route (see docs/api-openapi.yaml)")
}

async fn method_not_allowed() -> ApiError {
    ApiError {
        status: 405,
        code: "method_not_allowed",
        message: "method not allowed on this route".into(),
    }
}

/// Decodes `%XX` and `+` in a query component.
fn percent_decode(s: &str) -> Result<String, ApiError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| ApiError::bad(format!("bad percent escape in `{s}`")))?;
                out.push(hex);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ApiError::bad("query is not UTF-8"))
}

/// Parses a query string into `(key, value)` pairs.
fn query_pairs(q: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for part in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        out.push((percent_decode(k)?, percent_decode(v)?));
    }
    Ok(out)
}

fn selection_from_query(q: Option<&str>) -> Result<Selection, ApiError> {
    let mut sel = Selection::default();
    for (k, v) in query_pairs(q)? {
        match k.as_str() {
            "hosts" => sel.hosts = Some(v),
            "filter" => sel.filter = Some(v),
            "side" => sel.side = Some(v),
            "group" => sel.group = Some(v),
            "all" => sel.all = v.is_empty() || v == "true" || v == "1",
            "types" => {}
            _ => return Err(ApiError::bad(format!("unknown query parameter `{k}`"))),
        }
    }
    Ok(sel)
}

/// A write body's selection, `URL=VALUE` pairs and `replace` flag.
type Split = (Selection, Vec<(String, String)>, bool);

/// The selection, pairs and `replace` flag of a write body.
fn split(b: WriteBody) -> Result<Split, ApiError> {
    let sel = Selection {
        hosts: b.hosts,
        group: b.group,
        filter: b.filter,
        side: b.side,
        all: b.all,
    };
    let pairs = b.values.pairs().map_err(|e| ApiError::bad(e.to_string()))?;
    Ok((sel, pairs, b.replace))
}

fn parse_body<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    body::parse_json(body).map_err(|e| match e {
        BodyError::TooLarge => ApiError {
            status: 413,
            code: "too_large",
            message: e.to_string(),
        },
        BodyError::Bad(m) => ApiError::bad(m),
    })
}

async fn health(State(s): State<ApiState>) -> ApiResult {
    ok(s.ctl.read(|r, s| r.health(s)).await?)
}

/// Serves `GET /metrics` (and `GET /health`) alone, for an instance that
/// has no API (`run --metrics ADDR`), until `stop` turns true. It runs on
/// the overlay's thread: a render is a string copy of a few kilobytes.
pub async fn metrics_only(
    l: tokio::net::TcpListener,
    prom: PrometheusHandle,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let body = prom.render();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body) }
            }),
        )
        .route("/health", get(|| async { "ok\n" }));
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(l, app).with_graceful_shutdown(shutdown).await {
        tracing::error!("metrics server: {e}");
    }
}

async fn metrics(State(s): State<ApiState>) -> Response {
    let text = s
        .prom
        .as_ref()
        .map_or_else(String::new, PrometheusHandle::render);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        text,
    )
        .into_response()
}

/// Most nodes one page of `GET /api/v1/nodes` holds (`limit`).
pub const PAGE_MAX: usize = 10_000;

/// `limit` and `continue` of a list request, and the rest of its query.
fn paging(q: Option<&str>) -> Result<(Option<usize>, usize, String), ApiError> {
    let (mut limit, mut from, mut rest) = (None, 0, Vec::new());
    for part in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        match k {
            "limit" => {
                let n: usize = percent_decode(v)?.parse().map_err(|_| {
                    ApiError::bad(format!(
                        "limit must be a number of nodes, not `{}`",
                        clip(v)
                    ))
                })?;
                if n == 0 || n > PAGE_MAX {
                    return Err(ApiError::bad(format!(
                        "limit must be 1 to {PAGE_MAX}, not {n}"
                    )));
                }
                limit = Some(n);
            }
            "continue" => from = decode_continue(&percent_decode(v)?)?,
            _ => rest.push(part),
        }
    }
    Ok((limit, from, rest.join("&")))
}

/// The opaque `continue` token of a page that ends before node `i`.
fn encode_continue(i: usize) -> String {
    format!("n{i:x}")
}

fn decode_continue(t: &str) -> Result<usize, ApiError> {
    t.strip_prefix('n')
        .and_then(|x| usize::from_str_radix(x, 16).ok())
        .ok_or_else(|| {
            ApiError::bad(format!(
                "bad continue token `{}` (pass back the `continue` of the previous page)",
                clip(t)
            ))
        })
}

/// Runs a view read on the blocking pool (a large selection or filter
/// does not hold an API worker).
async fn on_view<R: Send + 'static>(
    s: &ApiState,
    f: impl FnOnce(&View) -> R + Send + 'static,
) -> Result<R, ApiError> {
    let view = s.view.clone();
    tokio::task::spawn_blocking(move || f(&view))
        .await
        .map_err(|e| ApiError::internal(format!("read task failed: {e}")))
}

/// A JSON body streamed in pieces: `head`, the rendered nodes `idx`
/// (comma-separated, one shard's worth per piece, rendered on the blocking
/// pool), then `tail`. Memory per request: the index list and one piece.
fn stream_nodes(
    view: Arc<View>,
    idx: Vec<usize>,
    head: String,
    tail: String,
    render: fn(&View, usize, &crate::daemon::view::LeafState) -> Bytes,
) -> Response {
    let pieces: Vec<Vec<usize>> = idx
        .chunks(NODES_PER_COMMAND)
        .map(<[usize]>::to_vec)
        .collect();
    let first = futures_util::stream::once(async move { Ok::<_, Infallible>(Bytes::from(head)) });
    let body =
        futures_util::stream::iter(pieces.into_iter().enumerate()).then(move |(k, piece)| {
            let view = view.clone();
            async move {
                let bytes = tokio::task::spawn_blocking(move || {
                    let states = view.states(&piece);
                    let mut out = Vec::with_capacity(piece.len() * 256);
                    for (j, (&i, st)) in piece.iter().zip(&states).enumerate() {
                        if k > 0 || j > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(&render(&view, i, st));
                    }
                    Bytes::from(out)
                })
                .await
                .unwrap_or_default();
                Ok::<_, Infallible>(bytes)
            }
        });
    let last = futures_util::stream::once(async move { Ok::<_, Infallible>(Bytes::from(tail)) });
    let stream = first.chain(body).chain(last);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

async fn list(State(s): State<ApiState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let (limit, from, rest) = paging(q.as_deref())?;
    let sel = selection_from_query(Some(&rest))?;
    s.ctl.check(&sel, 0)?;
    let (idx, next) = match limit {
        Some(limit) => on_view(&s, move |v| v.page(&sel, from, limit)).await??,
        None => (on_view(&s, move |v| v.select(&sel)).await??, None),
    };
    let tail = match next {
        Some(i) => format!("],\"continue\":\"{}\"}}", encode_continue(i)),
        None => "]}".to_string(),
    };
    Ok(stream_nodes(
        s.view.clone(),
        idx,
        "{\"nodes\":[".into(),
        tail,
        View::detail,
    ))
}

/// Every node's summary and the counters, as JSON text.
async fn snapshot_text(s: &ApiState) -> Result<String, ApiError> {
    on_view(s, |v| {
        let mut out = String::from("{\"nodes\":[");
        for shard in 0..v.shard_count() {
            for (i, st) in v.shard_states(shard) {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&String::from_utf8_lossy(&v.summary(i, &st)));
            }
        }
        out.push_str("],\"counters\":");
        out.push_str(&v.counters().to_string());
        out.push('}');
        out
    })
    .await
}

async fn node(State(s): State<ApiState>, UrlPath(name): UrlPath<String>) -> ApiResult {
    ok(on_view(&s, move |v| v.detail_full(&name)).await??)
}

async fn write_one(s: &ApiState, name: String, body: &Bytes, replace: bool) -> ApiResult {
    let one: OneBody = parse_body(body)?;
    let values = one
        .values
        .pairs()
        .map_err(|e| ApiError::bad(e.to_string()))?;
    let sel = one_node(&name)?;
    let res = s.ctl.write(sel, WriteOp::Set { values, replace }).await?;
    ok(json!(res))
}

/// A selection of exactly the node `name` (a plain name, not a hostlist).
fn one_node(name: &str) -> Result<Selection, ApiError> {
    if name.contains(['[', ',']) {
        return Err(ApiError::bad(format!(
            "`{name}` is not a node name (use /api/v1/cfg for hostlists)"
        )));
    }
    Ok(Selection {
        hosts: Some(name.to_string()),
        ..Selection::default()
    })
}

async fn put_node(
    State(s): State<ApiState>,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> ApiResult {
    write_one(&s, name, &body, true).await
}

async fn patch_node(
    State(s): State<ApiState>,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> ApiResult {
    write_one(&s, name, &body, false).await
}

async fn delete_node(State(s): State<ApiState>, UrlPath(name): UrlPath<String>) -> ApiResult {
    let res = s.ctl.write(one_node(&name)?, WriteOp::Reset).await?;
    ok(json!(res))
}

async fn bulk_set(State(s): State<ApiState>, body: Bytes) -> ApiResult {
    let (sel, values, replace) = split(parse_body::<WriteBody>(&body)?)?;
    let res = s.ctl.write(sel, WriteOp::Set { values, replace }).await?;
    ok(json!(res))
}

async fn batch(State(s): State<ApiState>, body: Bytes) -> ApiResult {
    let b = parse_body::<BatchBody>(&body)?;
    if b.entries.is_empty() {
        return Err(ApiError::bad("a batch needs at least one entry"));
    }
    if b.entries.len() > body::BATCH_ENTRIES_MAX {
        return Err(ApiError::bad(format!(
            "a batch holds at most {} entries (got {})",
            body::BATCH_ENTRIES_MAX,
            b.entries.len()
        )));
    }
    // Costed here, before the root sees it: every entry's selection and
    // values, and the nodes all entries may touch together.
    let nodes = s.ctl.nodes();
    let budget = (nodes as u64)
        .saturating_mul(body::BATCH_NODES_PER_NODE)
        .max(body::BATCH_NODES_MIN);
    let mut total: u64 = 0;
    let mut entries = Vec::with_capacity(b.entries.len());
    for (k, e) in b.entries.into_iter().enumerate() {
        let at = |e: ApiError| ApiError {
            message: format!("entry {}: {}", k + 1, e.message),
            ..e
        };
        let (sel, values, replace) = split(e).map_err(at)?;
        s.ctl.check(&sel, values.len()).map_err(at)?;
        total = total.saturating_add(sel.cost(nodes).map_err(at)?);
        if total > budget {
            return Err(ApiError::bad(format!(
                "entry {}: the batch selects more than {budget} nodes in all (at most {} times \
                 the cluster); split it",
                k + 1,
                body::BATCH_NODES_PER_NODE
            )));
        }
        entries.push((sel, WriteOp::Set { values, replace }));
    }
    ok(json!(s.ctl.batch(entries, b.dry_run).await?))
}

async fn bulk_reset(State(s): State<ApiState>, RawQuery(q): RawQuery) -> ApiResult {
    let sel = selection_from_query(q.as_deref())?;
    let res = s.ctl.write(sel, WriteOp::Reset).await?;
    ok(json!(res))
}

async fn plan(State(s): State<ApiState>, body: Bytes) -> ApiResult {
    let (mut sel, values, _) = split(parse_body::<WriteBody>(&body)?)?;
    if values.is_empty() {
        return Err(ApiError::bad("plan needs `values` (URL=VALUE pairs)"));
    }
    if sel.is_empty() {
        sel.all = true;
    }
    s.ctl.check(&sel, values.len())?;
    let (sel, values) = (Arc::new(sel), Arc::new(values));
    let idx = {
        let sel = sel.clone();
        on_view(&s, move |v| v.select_hosts(&sel)).await??
    };
    let mut chunks: Vec<Vec<usize>> = idx
        .chunks(NODES_PER_COMMAND)
        .map(<[usize]>::to_vec)
        .collect();
    if chunks.is_empty() {
        chunks.push(Vec::new()); // the values are still checked
    }
    let reads: Vec<_> = chunks
        .into_iter()
        .map(|c| {
            let (sel, values) = (sel.clone(), values.clone());
            move |r: &mut RootApp, _: &Stack| r.plan_inputs(&sel, &c, &values)
        })
        .collect();
    let mut inputs = Vec::with_capacity(idx.len());
    for part in s.ctl.read_all(reads).await? {
        inputs.extend(part?);
    }
    // Planning is the expensive part: on the blocking pool, off the
    // overlay's thread and the API's one worker.
    let model = s.model.clone();
    let nodes = tokio::task::spawn_blocking(move || {
        let mut planner = engine::planner::Planner::new(model.graph.clone());
        inputs
            .iter()
            .map(|i| {
                let chain = chain_for(&model, &mut planner, &i.dsc, &i.cfg);
                json!({ "name": i.name, "reachable": chain.is_some(), "chain": chain.unwrap_or_default() })
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| ApiError::internal(format!("plan task failed: {e}")))?;
    ok(json!({ "nodes": nodes }))
}

async fn graph(State(s): State<ApiState>) -> ApiResult {
    ok(s.model.graph.to_json())
}

async fn graph_dot(State(s): State<ApiState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/vnd.graphviz; charset=utf-8"),
        )],
        s.model.graph.to_dot(),
    )
        .into_response()
}

async fn freeze_op(s: &ApiState, body: &Bytes, frozen: bool) -> ApiResult {
    let (mut sel, values, _) = split(parse_body::<WriteBody>(body)?)?;
    if !values.is_empty() {
        return Err(ApiError::bad("freeze and thaw take no values"));
    }
    if sel.is_empty() {
        sel.all = true;
    }
    let res = s.ctl.write(sel, WriteOp::Freeze(frozen)).await?;
    ok(json!(res))
}

async fn freeze(State(s): State<ApiState>, body: Bytes) -> ApiResult {
    freeze_op(&s, &body, true).await
}

async fn thaw(State(s): State<ApiState>, body: Bytes) -> ApiResult {
    freeze_op(&s, &body, false).await
}

async fn snapshot(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let text = snapshot_text(&s).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        text,
    )
        .into_response())
}

/// Server-sent events: a `snapshot` first, then `change` and `nodes`
/// messages (`types=change,nodes` narrows them); `lagged` when this client
/// fell more than the bus capacity behind (reload the snapshot).
async fn events(State(s): State<ApiState>, RawQuery(q): RawQuery) -> ApiResult {
    let mut types: Option<Vec<String>> = None;
    for (k, v) in query_pairs(q.as_deref())? {
        match k.as_str() {
            "types" => types = Some(v.split(',').map(str::to_string).collect()),
            _ => return Err(ApiError::bad(format!("unknown query parameter `{k}`"))),
        }
    }
    let wants = move |t: &str| types.as_ref().is_none_or(|ts| ts.iter().any(|x| x == t));
    let rx = s.bus.subscribe();
    let first = if wants("snapshot") {
        Some(snapshot_text(&s).await?)
    } else {
        None
    };
    let state = (rx, s.shutdown.clone(), first, wants);
    let stream = futures_util::stream::unfold(
        state,
        |(mut rx, mut stop, first, wants)| async move {
            if let Some(snap) = first {
                let e = SseEvent::default().event("snapshot").data(snap);
                return Some((Ok::<_, Infallible>(e), (rx, stop, None, wants)));
            }
            loop {
                if *stop.borrow() {
                    return None;
                }
                tokio::select! {
                    m = rx.recv() => match m {
                        Ok(m) if wants(m.event) => {
                            let e = SseEvent::default().event(m.event).data(m.data.clone());
                            return Some((Ok(e), (rx, stop, None, wants)));
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            let e = SseEvent::default().event("lagged").data(json!({"missed": n}).to_string());
                            return Some((Ok(e), (rx, stop, None, wants)));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                    _ = stop.changed() => return None,
                }
            }
        },
    );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode() {
        let p = query_pairs(Some(
            "hosts=n%5B0001-0002%5D&filter=/PhysState%3DPOWER_OFF&all",
        ))
        .unwrap();
        assert_eq!(p[0], ("hosts".into(), "n[0001-0002]".into()));
        assert_eq!(p[1], ("filter".into(), "/PhysState=POWER_OFF".into()));
        assert_eq!(p[2], ("all".into(), String::new()));
        assert!(query_pairs(Some("hosts=%zz")).is_err());
        assert!(selection_from_query(Some("bogus=1")).is_err());
    }

    #[test]
    fn values_accept_maps_and_lists() {
        let b: WriteBody = parse_body(&Bytes::from_static(
            br#"{"hosts":"n1","values":{"/PhysState":"POWER_ON"}}"#,
        ))
        .unwrap();
        assert_eq!(
            split(b).unwrap().1,
            vec![("/PhysState".into(), "POWER_ON".into())]
        );
        let b: WriteBody =
            parse_body(&Bytes::from_static(br#"{"values":["/Busy=BUSY"]}"#)).unwrap();
        assert_eq!(split(b).unwrap().1, vec![("/Busy".into(), "BUSY".into())]);
        assert!(parse_body::<WriteBody>(&Bytes::from_static(b"{nope")).is_err());
        assert!(parse_body::<WriteBody>(&Bytes::from_static(br#"{"bogus":1}"#)).is_err());
    }
}
