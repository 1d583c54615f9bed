//! The API's security settings, checked at start-up: the token table and
//! the TLS configuration (`--api-tls-cert FILE --api-tls-key FILE`).
//!
//! - [`ApiSecurityOptions`]: what the operator asked for.
//! - [`ApiSecurity::load`]: reads the token table and the TLS files once;
//!   refuses a non-loopback address without tokens unless `--api-no-auth`
//!   says so.
//! - [`server_config`]: a rustls server configuration from PEM files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::security::tokens::Tokens;

/// The API's security options (`--api-tokens`, `--api-no-auth`,
/// `--api-tls-cert`, `--api-tls-key`).
#[derive(Debug, Clone, Default)]
pub struct ApiSecurityOptions {
    /// Accepted API tokens (`ROLE NAME SHA256` lines, mode 0600; made by
    /// `layercake tokens create`). Without it the API needs no token and
    /// must listen on loopback.
    pub api_tokens: Option<PathBuf>,
    /// Serve a non-loopback `--api` without tokens (not recommended).
    pub api_no_auth: bool,
    /// Serve the API over TLS with this certificate chain (PEM).
    pub api_tls_cert: Option<PathBuf>,
    /// The private key (PEM, mode 0600) of `--api-tls-cert`.
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
    pub fn load(a: &ApiSecurityOptions, addr: SocketAddr) -> Result<ApiSecurity> {
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
    crate::security::secrets::check_private(key).context("--api-tls-key")?;
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
