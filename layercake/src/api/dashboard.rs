//! The web dashboard: static HTML, JavaScript and CSS compiled into the
//! binary (`include_str!`), served by the root at `/`.
//!
//! The page loads `/api/v1/events?types=snapshot,nodes` (a snapshot, then
//! batches of changed node summaries every 250 ms) and draws the cluster as
//! a grid of cells grouped by rack, coloured by PhysState with a RunState
//! border; a click shows the node's Cfg and Dsc side by side and its chain
//! (`/api/v1/nodes/{name}`). Above 2,000 nodes it opens in a summary view
//! (one tile per rack: counts by PhysState, converged; a click expands the
//! rack's cells), so 50,000 nodes fit one screen. With an admin token
//! (`#token=...`, or `#admin` on a root without tokens) racks and nodes get
//! power on/off and freeze/thaw actions, confirmed before they run.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../../assets/index.html");
const SCRIPT: &str = include_str!("../../assets/dashboard.js");
const STYLE: &str = include_str!("../../assets/dashboard.css");

fn asset(body: &'static str, mime: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(mime)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// `GET /`.
pub async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

/// `GET /dashboard.js`.
pub async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /dashboard.css`.
pub async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}
