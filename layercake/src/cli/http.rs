//! The CLI's HTTP client: `reqwest` (rustls, the same stack the Redfish
//! backend uses) driven by a current-thread Tokio runtime, and
//! `eventsource-stream` for the event stream.
//!
//! - [`request`]: sends a request and reads the whole response (at most
//!   [`BODY_BYTES_MAX`]).
//! - [`stream_events`]: GETs a server-sent event stream and hands each
//!   event's data to a callback.
//!
//! The bearer token ([`set_token`]) and the CA of an `https://` API
//! ([`set_tls_ca`]) are set once per process. Every failure is a
//! [`HttpError`]; a server that cannot be reached says how to point the CLI
//! at the right one.

use std::sync::OnceLock;
use std::time::Duration;

use futures_util::StreamExt;

/// Largest response body read.
pub const BODY_BYTES_MAX: usize = 256 << 20;
/// How long a request may take (the event stream has no limit).
const TIMEOUT: Duration = Duration::from_secs(60);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The server could not be reached.
    #[error(
        "cannot reach the API at {addr}: {cause} (is the root running? point --api or \
         LAYERCAKE_API at its API address)"
    )]
    Connect {
        /// The address.
        addr: String,
        /// The cause, in words.
        cause: String,
    },
    /// The client could not be set up (bad `--api-ca`, bad address).
    #[error("{0}")]
    Setup(String),
    /// The request failed mid-way.
    #[error("talking to the API: {0}")]
    Transfer(String),
    /// The answer was unusable (too large, not an event stream).
    #[error("malformed response: {0}")]
    Malformed(String),
}

/// A response: status and body.
#[derive(Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

/// The bearer token sent with every request (set once by `ctl`).
static TOKEN: OnceLock<Option<String>> = OnceLock::new();

/// Sets the bearer token of every later request (first call wins).
pub fn set_token(token: Option<String>) {
    let _ = TOKEN.set(token.filter(|t| !t.is_empty()));
}

/// The CA that an `https://` API's certificate must chain to.
static TLS_CA: OnceLock<std::path::PathBuf> = OnceLock::new();

/// Sets the CA file for `https://` addresses (first call wins).
pub fn set_tls_ca(path: std::path::PathBuf) {
    let _ = TLS_CA.set(path);
}

/// The process's runtime and client, built on first use.
struct Stack {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

static STACK: OnceLock<Result<Stack, String>> = OnceLock::new();

fn stack() -> Result<&'static Stack, HttpError> {
    STACK
        .get_or_init(build)
        .as_ref()
        .map_err(|e| HttpError::Setup(e.clone()))
}

fn build() -> Result<Stack, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the HTTP client: {e}"))?;
    let mut b = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .tls_built_in_root_certs(false)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = TLS_CA.get() {
        let pem = std::fs::read(ca).map_err(|e| format!("--api-ca {}: {e}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("--api-ca {}: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "--api-ca {}: no PEM certificate in the file",
                ca.display()
            ));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    let client = b
        .build()
        .map_err(|e| format!("setting up the HTTP client: {e}"))?;
    Ok(Stack { rt, client })
}

/// `http://host:port` or `https://host:port` for an `--api` value.
fn base_url(addr: &str) -> Result<String, HttpError> {
    let a = addr.trim_end_matches('/');
    if a.starts_with("https://") {
        if TLS_CA.get().is_none() {
            return Err(HttpError::Setup(format!(
                "{a}: an https:// API needs --api-ca FILE (the CA of its certificate)"
            )));
        }
        return Ok(a.to_string());
    }
    if a.starts_with("http://") {
        return Ok(a.to_string());
    }
    if a.is_empty() || a.contains("://") {
        return Err(HttpError::Setup(format!(
            "`{addr}` is not an API address (HOST:PORT, http://HOST:PORT or https://HOST:PORT)"
        )));
    }
    Ok(format!("http://{a}"))
}

fn classify(addr: &str, e: reqwest::Error) -> HttpError {
    if e.is_connect() {
        // The innermost cause says "Connection refused" and the like.
        let mut cause: &dyn std::error::Error = &e;
        while let Some(inner) = cause.source() {
            cause = inner;
        }
        HttpError::Connect {
            addr: addr.to_string(),
            cause: cause.to_string(),
        }
    } else if e.is_timeout() {
        HttpError::Transfer(format!("no answer from {addr} within {TIMEOUT:?}"))
    } else {
        HttpError::Transfer(e.to_string())
    }
}

fn prepare(
    s: &Stack,
    addr: &str,
    method: &str,
    path: &str,
) -> Result<reqwest::RequestBuilder, HttpError> {
    let url = format!("{}{path}", base_url(addr)?);
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|_| HttpError::Setup(format!("bad method `{method}`")))?;
    let mut r = s.client.request(method, url);
    if let Some(Some(t)) = TOKEN.get() {
        r = r.bearer_auth(t);
    }
    Ok(r)
}

async fn read_body(addr: &str, mut resp: reqwest::Response) -> Result<Vec<u8>, HttpError> {
    let mut out = Vec::new();
    while let Some(c) = resp.chunk().await.map_err(|e| classify(addr, e))? {
        if out.len().saturating_add(c.len()) > BODY_BYTES_MAX {
            return Err(HttpError::Malformed(format!(
                "body larger than {BODY_BYTES_MAX} bytes"
            )));
        }
        out.extend_from_slice(&c);
    }
    Ok(out)
}

/// Sends one request to `addr` (`host:port` or a URL) and reads the
/// response.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<Response, HttpError> {
    let s = stack()?;
    let mut r = prepare(s, addr, method, path)?.timeout(TIMEOUT);
    if let Some(b) = body {
        r = r
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(b.to_vec());
    }
    s.rt.block_on(async {
        let resp = r.send().await.map_err(|e| classify(addr, e))?;
        let status = resp.status().as_u16();
        let body = read_body(addr, resp).await?;
        Ok(Response { status, body })
    })
}

/// GETs the server-sent event stream at `path` and calls `data` with each
/// event's data until the server ends the stream or `data` returns false.
/// A non-2xx answer is returned whole instead.
pub fn stream_events(
    addr: &str,
    path: &str,
    mut data: impl FnMut(&str) -> bool,
) -> Result<Option<Response>, HttpError> {
    use eventsource_stream::Eventsource;
    let s = stack()?;
    let r = prepare(s, addr, "GET", path)?;
    s.rt.block_on(async {
        let resp = r.send().await.map_err(|e| classify(addr, e))?;
        let status = resp.status().as_u16();
        if !resp.status().is_success() {
            let body = read_body(addr, resp).await?;
            return Ok(Some(Response { status, body }));
        }
        let chunks = futures_util::stream::unfold(resp, |mut resp| async move {
            match resp.chunk().await {
                Ok(Some(c)) => Some((Ok(c), resp)),
                Ok(None) => None,
                Err(e) => Some((Err(e), resp)),
            }
        });
        let mut events = std::pin::pin!(chunks.eventsource());
        while let Some(ev) = events.next().await {
            let ev = ev.map_err(|e| HttpError::Malformed(format!("event stream: {e}")))?;
            if !data(&ev.data) {
                break;
            }
        }
        Ok(None)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_addresses() {
        assert_eq!(base_url("127.0.0.1:8080").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(base_url("http://h:1/").unwrap(), "http://h:1");
        assert!(base_url("ftp://h:1").is_err());
        assert!(base_url("").is_err());
    }

    #[test]
    fn a_closed_port_says_how_to_fix_it() {
        // Bind then drop: the port is (almost surely) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = request(&format!("127.0.0.1:{port}"), "GET", "/", None).unwrap_err();
        assert!(matches!(e, HttpError::Connect { .. }), "{e:?}");
        assert!(e.to_string().contains("LAYERCAKE_API"), "{e}");
    }
}
