//! The Redfish backend: a ComputerSystem's `PowerState` and its
//! `ComputerSystem.Reset` action (`On`, `ForceOff`, `GracefulShutdown`,
//! `ForceRestart`) over HTTP(S) with basic authentication (reqwest,
//! rustls).
//!
//! - [`Scheme`]: `https` (verify against the system roots and the
//!   configured CA file), `https-insecure` (no verification, lab BMCs) or
//!   `http`.
//! - [`RedfishClients`]: the HTTP clients of one instance (connection pools
//!   shared by every BMC), one per trust setting.
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
        })
    }

    /// `redfish HOST:PORT`.
    pub fn label(&self) -> String {
        self.label.clone()
    }

    fn err_send(&self, e: reqwest::Error) -> PowerError {
        if e.is_connect() || e.is_timeout() {
            let mut why = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                why = format!("{why}: {s}");
                src = s.source();
            }
            PowerError::Unreachable(self.label(), why)
        } else {
            PowerError::Protocol(self.label(), e.to_string())
        }
    }

    /// Sends `req` and reads a JSON body (or none); maps HTTP errors.
    async fn call(&self, req: reqwest::RequestBuilder) -> Result<Json, PowerError> {
        let resp = req
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .map_err(|e| self.err_send(e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| self.err_send(e))?;
        let body = &body[..body.len().min(BODY_BYTES_MAX)];
        let json: Json = if body.is_empty() {
            Json::Null
        } else {
            serde_json::from_slice(body).unwrap_or(Json::Null)
        };
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
