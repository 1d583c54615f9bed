//! `layercake keys generate|install|use|remove|list`: the keyring CLI over
//! the root's `/api/v1/keys` (see [`crate::daemon::keyring`]).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use overlay::envelope::ClusterKey;
use serde_json::json;

use crate::security::secrets;

/// `layercake keys ...`.
#[derive(Args, Debug)]
pub struct KeysArgs {
    /// The root's API address (`host:port` or `https://host:port`); also
    /// `LAYERCAKE_API`.
    #[arg(long, env = "LAYERCAKE_API", default_value = crate::cli::DEFAULT_API, global = true)]
    pub api: String,
    /// A file holding an admin API token; else `LAYERCAKE_TOKEN`.
    #[arg(long, env = "LAYERCAKE_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// The CA certificate (PEM) of an `https://` API.
    #[arg(long, env = "LAYERCAKE_API_CA", global = true)]
    pub api_ca: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub cmd: KeysCmd,
}

/// The keyring commands.
#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Write a new random key (64 hex digits) to a new private file.
    Generate {
        /// The file (created 0600; must not exist).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Add a key to every instance, receive-only (the root generates one
    /// unless --key-file is given).
    Install {
        /// A key made by `keys generate` (sent only to a TLS or loopback API).
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
        /// The key id (default: the next free one).
        #[arg(long)]
        id: Option<u8>,
    },
    /// Make a key the sending key (once every instance holds it).
    Use {
        /// The key id.
        id: u8,
        /// Do not wait for every instance's acknowledgement.
        #[arg(long)]
        force: bool,
    },
    /// Retire a key (once no instance sends with it).
    Remove {
        /// The key id.
        id: u8,
        /// Do not wait for every instance to have switched.
        #[arg(long)]
        force: bool,
    },
    /// Show the ring: ids, primary, acknowledgements (no key material).
    List,
}

/// True if a request to `api` stays off the network or is encrypted.
fn private_channel(api: &str) -> bool {
    use std::net::ToSocketAddrs;
    if api.starts_with("https://") {
        return true;
    }
    let host = api.trim_start_matches("http://").trim_end_matches('/');
    host.to_socket_addrs()
        .map(|mut a| a.all(|a| a.ip().is_loopback()))
        .unwrap_or(false)
}

/// Runs a `keys` command; returns the exit code.
pub fn main(a: KeysArgs) -> Result<i32> {
    if let KeysCmd::Generate { out } = &a.cmd {
        let hex = secrets::random_hex(32)?;
        secrets::write_private(out, &format!("{hex}\n"))?;
        println!("new key in {}", out.display());
        return Ok(0);
    }
    let token = match &a.token_file {
        Some(f) => Some(crate::security::tokens::read_token_file(f)?),
        None => std::env::var("LAYERCAKE_TOKEN").ok(),
    };
    crate::cli::http::set_token(token);
    if let Some(ca) = &a.api_ca {
        crate::cli::http::set_tls_ca(ca.clone());
    }
    let (method, path, body) = match &a.cmd {
        KeysCmd::Generate { .. } => unreachable!("handled above"),
        KeysCmd::Install { key_file, id } => {
            let mut b = json!({});
            if let Some(i) = id {
                b["id"] = json!(i);
            }
            if let Some(f) = key_file {
                if !private_channel(&a.api) {
                    anyhow::bail!(
                        "--key-file: {} is neither https:// nor loopback, so the key would \
                         cross the network in clear; use an https:// API, or let the root \
                         generate the key (`keys install` without --key-file)",
                        a.api
                    );
                }
                let text = secrets::read_private(f)?;
                let key = ClusterKey::from_hex(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
                b["key"] = json!(secrets::hex(&key.0));
            }
            ("POST", "/api/v1/keys".to_string(), Some(b.to_string()))
        }
        KeysCmd::Use { id, force } => {
            let q = if *force { "?force=true" } else { "" };
            ("POST", format!("/api/v1/keys/{id}/use{q}"), None)
        }
        KeysCmd::Remove { id, force } => {
            let q = if *force { "?force=true" } else { "" };
            ("DELETE", format!("/api/v1/keys/{id}{q}"), None)
        }
        KeysCmd::List => ("GET", "/api/v1/keys".to_string(), None),
    };
    let r = crate::cli::http::request(&a.api, method, &path, body.as_deref().map(str::as_bytes))?;
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or(json!(null));
    if (200..300).contains(&r.status) {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let msg = v["error"]["message"]
        .as_str()
        .unwrap_or("unexpected answer");
    eprintln!("error: {msg} (HTTP {})", r.status);
    Ok(match r.status {
        401 | 403 => crate::cli::ctl::EXIT_AUTH,
        404 => crate::cli::ctl::EXIT_NOT_FOUND,
        409 => 8,
        400..=499 => crate::cli::ctl::EXIT_REJECTED,
        _ => crate::cli::ctl::EXIT_SERVER,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_uploaded_only_over_tls_or_loopback() {
        assert!(private_channel("127.0.0.1:7180"));
        assert!(private_channel("http://[::1]:7180"));
        assert!(private_channel("https://10.0.0.1:7180"));
        assert!(!private_channel("10.0.0.1:7180"));
        assert!(!private_channel("http://10.0.0.1:7180"));
    }
}
