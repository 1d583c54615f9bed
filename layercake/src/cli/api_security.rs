//! The API security flags of `run` and `demo`.

use std::path::PathBuf;

use clap::Args;

use crate::security::tls::ApiSecurityOptions;

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

impl ApiSecurityArgs {
    /// The options these flags give.
    pub fn options(&self) -> ApiSecurityOptions {
        ApiSecurityOptions {
            api_tokens: self.api_tokens.clone(),
            api_no_auth: self.api_no_auth,
            api_tls_cert: self.api_tls_cert.clone(),
            api_tls_key: self.api_tls_key.clone(),
        }
    }
}
