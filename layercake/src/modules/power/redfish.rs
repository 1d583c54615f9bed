//! The Redfish backend: a ComputerSystem's `PowerState` and its
//! `ComputerSystem.Reset` action (`On`, `ForceOff`, `GracefulShutdown`,
//! `ForceRestart`) over HTTP(S) with basic or session authentication
//! (reqwest, rustls).
//!
//! - [`Scheme`]: `https` (verify against the system roots and the
//!   configured CA file), `https-insecure` (no verification, lab BMCs) or
//!   `http`.
//! - [`RedfishClients`]: the HTTP clients of one instance (connection pools
//!   shared by every BMC), one per trust setting.
//! - [`RedfishAuth`]: basic, or a SessionService session (`X-Auth-Token`,
//!   renewed when the BMC answers 401).
//! - [`RedfishBmc`]: one ComputerSystem; with no system id configured, the
//!   first member of `/redfish/v1/Systems` (looked up once).

use std::path::Path;
use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::Value as Json;
use tokio::sync::OnceCell;

use super::config::BmcTarget;
use super::{PowerError, PowerOp, PowerState};

/// The largest response body read from a BMC, bytes.
pub const BODY_BYTES_MAX: usize = 1 << 20;

/// How a Redfish BMC is reached and trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// TLS, certificate verified (system roots plus the CA file).
    Https,
    /// TLS without any verification (lab BMCs with self-signed certificates).
    HttpsInsecure,
    /// Plain HTTP.
    Http,
}

impl Scheme {
    /// Parses the `Power/Scheme` field (`""` is `https`).
    pub fn parse(s: &str) -> Result<Scheme, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "https" => Ok(Scheme::Https),
            "https-insecure" => Ok(Scheme::HttpsInsecure),
            "http" => Ok(Scheme::Http),
            other => Err(format!(
                "unknown Redfish scheme `{other}` (expected https, https-insecure or http)"
            )),
        }
    }

    /// 443, or 80 for plain HTTP.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            _ => 443,
        }
    }

    fn url_scheme(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            _ => "https",
        }
    }
}

/// How requests to a Redfish BMC are authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RedfishAuth {
    /// HTTP basic authentication on every request.
    Basic,
    /// A SessionService session: log in once, send `X-Auth-Token`, log in
    /// again when the BMC answers 401 (the session expired).
    Session,
}

impl RedfishAuth {
    /// Parses the `Power/Auth` field (`""` is `basic`).
    pub fn parse(s: &str) -> Result<RedfishAuth, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "basic" => Ok(RedfishAuth::Basic),
            "session" => Ok(RedfishAuth::Session),
            other => Err(format!(
                "unknown Redfish authentication `{other}` (expected basic or session)"
            )),
        }
    }
}

/// The session token header.
const TOKEN_HEADER: &str = "X-Auth-Token";

/// The HTTP clients of one instance.
#[derive(Clone)]
pub struct RedfishClients {
    verify: reqwest::Client,
    insecure: reqwest::Client,
}

impl RedfishClients {
    /// Clients trusting the system roots plus `ca_file` (PEM), and one
    /// trusting anything for `https-insecure` BMCs.
    pub fn new(ca_file: Option<&Path>) -> Result<RedfishClients, String> {
        let base = || {
            reqwest::Client::builder()
                .use_rustls_tls()
                .pool_max_idle_per_host(4)
                .user_agent(concat!("layercake/", env!("CARGO_PKG_VERSION")))
        };
        let mut verify = base();
        if let Some(p) = ca_file {
            let pem = std::fs::read(p).map_err(|e| format!("BMC CA file {}: {e}", p.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("BMC CA file {}: {e}", p.display()))?;
            if certs.is_empty() {
                return Err(format!("BMC CA file {} holds no certificate", p.display()));
            }
            for c in certs {
                verify = verify.add_root_certificate(c);
            }
        }
        let verify = verify.build().map_err(|e| format!("HTTP client: {e}"))?;
        let insecure = base()
            .danger_accept_invalid_certs(true)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(RedfishClients { verify, insecure })
    }
}

/// One Redfish ComputerSystem.
#[derive(Clone)]
pub struct RedfishBmc {
    client: reqwest::Client,
    base: String,
    label: String,
    user: String,
    password: String,
    system: Arc<OnceCell<String>>,
    auth: RedfishAuth,
    /// The session token (session authentication).
    token: Arc<tokio::sync::Mutex<Option<String>>>,
}

impl RedfishBmc {
    /// The backend for `t` with `password`.
    pub fn new(
        clients: &RedfishClients,
        t: &BmcTarget,
        password: String,
    ) -> Result<RedfishBmc, PowerError> {
        let client = match t.scheme {
            Scheme::HttpsInsecure => clients.insecure.clone(),
            _ => clients.verify.clone(),
        };
        let host = if t.host.contains(':') && !t.host.starts_with('[') {
            format!("[{}]", t.host)
        } else {
            t.host.clone()
        };
        let system = Arc::new(OnceCell::new());
        if !t.system.is_empty() {
            let _ = system.set(format!("/redfish/v1/Systems/{}", t.system));
        }
        Ok(RedfishBmc {
            client,
            base: format!("{}://{host}:{}", t.scheme.url_scheme(), t.port),
            label: format!("redfish {host}:{}", t.port),
            user: t.user.clone(),
            password,
            system,
            auth: t.auth,
            token: Arc::default(),
        })
    }

    /// `redfish HOST:PORT`.
    pub fn label(&self) -> String {
        self.label.clone()
    }

    fn err_send(&self, e: reqwest::Error) -> PowerError {
        let mut why = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            why = format!("{why}: {s}");
            src = s.source();
        }
        if why.contains("certificate") {
            PowerError::Protocol(
                self.label(),
                format!(
                    "TLS: {why} (trust the BMC's CA with --bmc-ca-file, or use \
                     Scheme https-insecure for a lab BMC)"
                ),
            )
        } else if e.is_connect() || e.is_timeout() {
            PowerError::Unreachable(self.label(), why)
        } else {
            PowerError::Protocol(self.label(), why)
        }
    }

    /// Sends `req` authenticated (a session is opened or renewed as needed),
    /// reads a JSON body (or none) and maps HTTP errors.
    async fn call(&self, req: reqwest::RequestBuilder) -> Result<Json, PowerError> {
        let (status, json) = match self.auth {
            RedfishAuth::Basic => {
                self.send(req.basic_auth(&self.user, Some(&self.password)))
                    .await?
            }
            RedfishAuth::Session => {
                let again = req.try_clone();
                let token = self.session_token(false).await?;
                let first = self.send(req.header(TOKEN_HEADER, token)).await?;
                match (first.0, again) {
                    (StatusCode::UNAUTHORIZED, Some(again)) => {
                        let token = self.session_token(true).await?;
                        self.send(again.header(TOKEN_HEADER, token)).await?
                    }
                    _ => first,
                }
            }
        };
        self.check(status, json)
    }

    /// The session token, logging in when there is none (or `renew`).
    async fn session_token(&self, renew: bool) -> Result<String, PowerError> {
        let mut held = self.token.lock().await;
        if renew {
            *held = None;
        }
        if let Some(t) = held.as_ref() {
            return Ok(t.clone());
        }
        let url = format!("{}/redfish/v1/SessionService/Sessions", self.base);
        let body = serde_json::json!({ "UserName": self.user, "Password": self.password });
        let resp = self
            .client
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| self.err_send(e))?;
        let status = resp.status();
        let token = resp
            .headers()
            .get(TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let label = self.label();
        match (status, token) {
            (s, Some(t)) if s.is_success() => {
                *held = Some(t.clone());
                Ok(t)
            }
            (s, None) if s.is_success() => Err(PowerError::Protocol(
                label,
                "session created without an X-Auth-Token header".into(),
            )),
            (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => Err(PowerError::AuthRefused(
                label,
                format!(
                    "session login refused (HTTP {status}) for user `{}`",
                    self.user
                ),
            )),
            (StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED, _) => {
                Err(PowerError::Unsupported(
                    label,
                    "session authentication (no SessionService; use Auth basic)".into(),
                ))
            }
            (s, _) => Err(PowerError::Protocol(
                label,
                format!("session login: HTTP {s}"),
            )),
        }
    }

    /// Sends `req`; returns the status and the JSON body (`Null` if none).
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<(StatusCode, Json), PowerError> {
        let resp = req.send().await.map_err(|e| self.err_send(e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| self.err_send(e))?;
        let body = &body[..body.len().min(BODY_BYTES_MAX)];
        let json: Json = if body.is_empty() {
            Json::Null
        } else {
            serde_json::from_slice(body).unwrap_or(Json::Null)
        };
        Ok((status, json))
    }

    /// Maps an HTTP answer to the body or an error.
    fn check(&self, status: StatusCode, json: Json) -> Result<Json, PowerError> {
        let message = || redfish_message(&json).unwrap_or_else(|| status.to_string());
        match status {
            s if s.is_success() => Ok(json),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(PowerError::AuthRefused(
                self.label(),
                format!("HTTP {status} for user `{}`", self.user),
            )),
            StatusCode::NOT_FOUND => Err(PowerError::Protocol(
                self.label(),
                format!("not found: {}", message()),
            )),
            StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED => {
                Err(PowerError::Unsupported(self.label(), message()))
            }
            _ => Err(PowerError::Protocol(
                self.label(),
                format!("HTTP {status}: {}", message()),
            )),
        }
    }

    /// The system's path, looked up once when not configured.
    async fn system_path(&self) -> Result<String, PowerError> {
        self.system
            .get_or_try_init(|| async {
                let url = format!("{}/redfish/v1/Systems", self.base);
                let j = self.call(self.client.get(url)).await?;
                j["Members"][0]["@odata.id"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| {
                        PowerError::Protocol(
                            self.label(),
                            "no ComputerSystem in /redfish/v1/Systems".into(),
                        )
                    })
            })
            .await
            .cloned()
    }

    async fn system(&self) -> Result<(String, Json), PowerError> {
        let path = self.system_path().await?;
        let j = self
            .call(self.client.get(format!("{}{path}", self.base)))
            .await?;
        Ok((path, j))
    }

    /// Reads `PowerState` (`PoweringOn` counts as off, `PoweringOff` as on:
    /// the change has not happened yet).
    pub async fn status(&self) -> Result<PowerState, PowerError> {
        let (_, j) = self.system().await?;
        match j["PowerState"].as_str() {
            Some("On") | Some("PoweringOff") => Ok(PowerState::On),
            Some("Off") | Some("PoweringOn") => Ok(PowerState::Off),
            other => Err(PowerError::Protocol(
                self.label(),
                format!("unexpected PowerState {other:?}"),
            )),
        }
    }

    /// Posts `ComputerSystem.Reset` with the reset type of `op`, after
    /// checking the system allows it.
    pub async fn control(&self, op: PowerOp) -> Result<(), PowerError> {
        let reset = match op {
            PowerOp::On => "On",
            PowerOp::Off => "ForceOff",
            PowerOp::SoftOff => "GracefulShutdown",
            PowerOp::Cycle => "ForceRestart",
        };
        let (path, j) = self.system().await?;
        let action = &j["Actions"]["#ComputerSystem.Reset"];
        if let Some(allowed) = action["ResetType@Redfish.AllowableValues"].as_array()
            && !allowed.iter().any(|v| v.as_str() == Some(reset))
        {
            return Err(PowerError::Unsupported(
                self.label(),
                format!("reset type {reset} (allowed: {allowed:?})"),
            ));
        }
        let target = action["target"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{path}/Actions/ComputerSystem.Reset"));
        let body = serde_json::json!({ "ResetType": reset });
        self.call(
            self.client
                .post(format!("{}{target}", self.base))
                .json(&body),
        )
        .await?;
        Ok(())
    }
}

/// The first message of a Redfish error body.
fn redfish_message(j: &Json) -> Option<String> {
    let e = &j["error"];
    e["@Message.ExtendedInfo"][0]["Message"]
        .as_str()
        .or_else(|| e["message"].as_str())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    //! Session authentication against a minimal in-process Redfish service
    //! (sushy-tools has no SessionService).
    use super::*;
    use crate::modules::power::config::Protocol;
    use axum::extract::State;
    use axum::http::HeaderMap;
    use axum::routing::{get, post};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    #[derive(Default)]
    struct Mock {
        logins: AtomicU32,
        valid: Mutex<Option<String>>,
        on: AtomicBool,
    }

    type Reply = (StatusCode, HeaderMap, String);

    fn authed(m: &Mock, h: &HeaderMap) -> bool {
        let got = h.get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
        got.is_some() && got == m.valid.lock().unwrap().as_deref()
    }

    async fn login(State(m): State<Arc<Mock>>, axum::Json(b): axum::Json<Json>) -> Reply {
        let mut h = HeaderMap::new();
        if b["UserName"] != "admin" || b["Password"] != "pw" {
            return (StatusCode::UNAUTHORIZED, h, String::new());
        }
        let tok = format!("tok-{}", m.logins.fetch_add(1, Ordering::SeqCst) + 1);
        *m.valid.lock().unwrap() = Some(tok.clone());
        h.insert(TOKEN_HEADER, tok.parse().unwrap());
        (StatusCode::CREATED, h, "{}".into())
    }

    async fn system(State(m): State<Arc<Mock>>, h: HeaderMap) -> Reply {
        if !authed(&m, &h) {
            return (StatusCode::UNAUTHORIZED, HeaderMap::new(), String::new());
        }
        let state = if m.on.load(Ordering::SeqCst) {
            "On"
        } else {
            "Off"
        };
        let target = "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset";
        let j = serde_json::json!({
            "PowerState": state,
            "Actions": { "#ComputerSystem.Reset": { "target": target } },
        });
        (StatusCode::OK, HeaderMap::new(), j.to_string())
    }

    async fn reset(
        State(m): State<Arc<Mock>>,
        h: HeaderMap,
        axum::Json(b): axum::Json<Json>,
    ) -> StatusCode {
        if !authed(&m, &h) {
            return StatusCode::UNAUTHORIZED;
        }
        m.on.store(b["ResetType"] == "On", Ordering::SeqCst);
        StatusCode::NO_CONTENT
    }

    #[tokio::test]
    async fn session_login_renewal_and_refusal() {
        let m = Arc::new(Mock::default());
        let app = axum::Router::new()
            .route("/redfish/v1/SessionService/Sessions", post(login))
            .route("/redfish/v1/Systems/1", get(system))
            .route(
                "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
                post(reset),
            )
            .with_state(m.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let server = tokio::spawn(async move { axum::serve(l, app).await });
        let t = BmcTarget {
            protocol: Protocol::Redfish,
            host: "127.0.0.1".into(),
            port,
            user: "admin".into(),
            credential: String::new(),
            scheme: Scheme::Http,
            system: "1".into(),
            auth: RedfishAuth::Session,
        };
        let clients = RedfishClients::new(None).unwrap();
        let b = RedfishBmc::new(&clients, &t, "pw".into()).unwrap();
        assert_eq!(b.status().await.unwrap(), PowerState::Off);
        b.control(PowerOp::On).await.unwrap();
        assert_eq!(b.status().await.unwrap(), PowerState::On);
        assert_eq!(m.logins.load(Ordering::SeqCst), 1, "one session reused");
        *m.valid.lock().unwrap() = None; // the BMC expired the session
        assert_eq!(b.status().await.unwrap(), PowerState::On);
        assert_eq!(m.logins.load(Ordering::SeqCst), 2, "logged in again on 401");
        let bad = RedfishBmc::new(&clients, &t, "nope".into()).unwrap();
        let e = bad.status().await.unwrap_err();
        assert!(matches!(e, PowerError::AuthRefused(..)), "{e}");
        assert!(e.to_string().contains("session login refused"), "{e}");
        assert_eq!(RedfishAuth::parse("").unwrap(), RedfishAuth::Basic);
        assert!(RedfishAuth::parse("kerberos").is_err());
        server.abort();
    }
}
