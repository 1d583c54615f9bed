//! The API's optional TLS (`--api-tls-cert FILE --api-tls-key FILE`) and
//! the start-up checks of the API's security settings.
//!
//! - [`ApiSecurityArgs`]: the options shared by `run` and `demo`.
//! - [`ApiSecurity::load`]: reads the token table and the TLS files once at
//!   start-up; refuses a non-loopback address without tokens unless
//!   `--api-no-auth` says so.
//! - [`serve`]: the accept loop for HTTPS: rustls (ring, TLS 1.2 and 1.3)
//!   through `tokio-rustls`, then hyper's HTTP/1.1 with the axum router.
//!   Plain HTTP keeps using `axum::serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::Router;
use clap::Args;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;

use crate::auth::Tokens;

/// How long a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most HTTPS connections served at once (others wait in the backlog).
pub const CONNECTIONS_MAX: usize = 1024;

/// The API's security options (`run` and `demo`).
#[derive(Args, Debug, Clone, Default)]
pub struct ApiSecurityArgs {
    /// Accepted API tokens (`ROLE NAME SHA256` lines, mode 0600; made by
    /// `layercake tokens create`). Without it the API needs no token and
    /// must listen on loopback.
    #[arg(long, value_name = "FILE")]
    pub api_tokens: Option<PathBuf>,
    /// Serve a non-loopback `--api` without tokens (not recommended).
    #[arg(long)]
    pub api_no_auth: bool,
    /// Serve the API over TLS with this certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "api_tls_key")]
    pub api_tls_cert: Option<PathBuf>,
    /// The private key (PEM, mode 0600) of `--api-tls-cert`.
    #[arg(long, value_name = "FILE", requires = "api_tls_cert")]
    pub api_tls_key: Option<PathBuf>,
}

/// The API's checked security settings.
#[derive(Clone, Default)]
pub struct ApiSecurity {
    /// Accepted tokens (`None`: no authentication).
    pub tokens: Option<Arc<Tokens>>,
    /// TLS (`None`: plain HTTP).
    pub tls: Option<Arc<ServerConfig>>,
}

impl ApiSecurity {
    /// Loads and checks the settings for an API at `addr`.
    pub fn load(a: &ApiSecurityArgs, addr: SocketAddr) -> Result<ApiSecurity> {
        let tokens = match &a.api_tokens {
            Some(p) => {
                let t = Tokens::load(p).context("--api-tokens")?;
                tracing::info!("API: {} tokens from {}", t.len(), p.display());
                Some(Arc::new(t))
            }
            None if !addr.ip().is_loopback() && !a.api_no_auth => bail!(
                "--api {addr} is not a loopback address: give --api-tokens FILE \
                 (see `layercake tokens create`), or --api-no-auth to serve it without authentication"
            ),
            None => None,
        };
        let tls = match (&a.api_tls_cert, &a.api_tls_key) {
            (Some(c), Some(k)) => Some(server_config(c, k)?),
            _ => None,
        };
        Ok(ApiSecurity { tokens, tls })
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// A rustls server configuration from PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("--api-tls-cert {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("--api-tls-cert {}: bad PEM", cert.display()))?;
    if certs.is_empty() {
        bail!(
            "--api-tls-cert {}: no certificate in the file",
            cert.display()
        );
    }
    crate::secrets::check_private(key).context("--api-tls-key")?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("--api-tls-key {}: no private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("--api-tls-cert and --api-tls-key do not form a usable pair")?;
    Ok(Arc::new(cfg))
}

/// Serves `app` over TLS until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Arc<ServerConfig>,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.wait_for(|s| *s) => return,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("API accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!("API TLS handshake with {peer}: {e}");
                    return;
                }
                Err(_) => return,
            };
            let io = hyper_util::rt::TokioIo::new(stream);
            let svc = hyper_util::service::TowerToHyperService::new(app);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!("API connection from {peer}: {e}");
            }
        });
    }
}
