//! API tokens: roles, the root's token table and its reloading.
//!
//! - [`Role`]: `read` (every GET, and `POST /api/v1/plan`, which runs
//!   nothing) or `admin` (everything, including Cfg writes, freeze, thaw).
//! - [`TokenTable`]: the root's table of accepted tokens, one line per
//!   token: `ROLE NAME SHA256-HEX`. Only the SHA-256 of a token is stored,
//!   so the table itself is not a credential; it must still be private
//!   (mode 0600, see [`crate::security::secrets`]) because whoever can write
//!   it can add a token.
//! - [`Tokens`]: the table a running root uses, reloaded from its file on
//!   SIGHUP ([`reload_on_hangup`]; a bad file keeps the old table).
//! - [`new_token`], [`create`]: what `layercake tokens create` does.
//!
//! The HTTP side (the axum middleware) is `crate::api::auth`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};

use crate::security::secrets::{self, SecretError};

/// Prefix of every token (lets scanners and people recognise one).
pub const TOKEN_PREFIX: &str = "lct_";
/// Most tokens a table may hold (each request scans the table).
pub const TOKENS_MAX: usize = 4096;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads only.
    Read,
    /// Reads and writes.
    Admin,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Read => "read",
            Role::Admin => "admin",
        })
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "read" => Ok(Role::Read),
            "admin" => Ok(Role::Admin),
            _ => Err(format!("unknown role `{s}` (use `read` or `admin`)")),
        }
    }
}

/// Why a token table or token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file is not private, missing, or unreadable.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A line of the table is malformed.
    #[error("{file}:{line}: {message}")]
    Syntax {
        /// The table file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A table without any token (every request would be refused).
    #[error("{0}: no token in the table (add one with `layercake tokens create`)")]
    Empty(String),
    /// A token file does not hold a token.
    #[error("{0}: expected one token (`{TOKEN_PREFIX}` and 64 hex digits)")]
    NotAToken(String),
}

/// One accepted token.
#[derive(Clone, Debug)]
pub struct Entry {
    /// What it may do.
    pub role: Role,
    /// Who holds it (for logs and 403 messages).
    pub name: String,
    hash: [u8; 32],
}

/// The tokens a root accepts.
#[derive(Clone, Debug, Default)]
pub struct TokenTable {
    entries: Vec<Entry>,
}

fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Equality that takes the same time wherever the inputs differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl TokenTable {
    /// Parses a table; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<TokenTable, AuthError> {
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |message: String| AuthError::Syntax {
                file: file.to_string(),
                line: i + 1,
                message,
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [role, name, hash] = fields[..] else {
                return Err(bad(format!(
                    "expected `ROLE NAME SHA256` (3 fields), found {}",
                    fields.len()
                )));
            };
            let role = role.parse().map_err(bad)?;
            let hash = unhex32(hash)
                .ok_or_else(|| bad("the SHA-256 must be 64 hex digits".to_string()))?;
            if entries.len() >= TOKENS_MAX {
                return Err(bad(format!("more than {TOKENS_MAX} tokens")));
            }
            entries.push(Entry {
                role,
                name: name.to_string(),
                hash,
            });
        }
        Ok(TokenTable { entries })
    }

    /// The accepted tokens' roles and holders, in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Loads a private table file.
    pub fn load(path: &Path) -> Result<TokenTable, AuthError> {
        let text = secrets::read_private(path)?;
        TokenTable::parse(&text, &path.display().to_string())
    }

    /// Tokens in the table.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if the table holds no token (every request is then refused).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry of `token`, if accepted. Every entry is compared (in
    /// constant time), so timing tells nothing about which one matched.
    pub fn find(&self, token: &str) -> Option<&Entry> {
        let h = sha256(token);
        let mut found = None;
        for e in &self.entries {
            if same(&e.hash, &h) && found.is_none() {
                found = Some(e);
            }
        }
        found
    }
}

/// The root's live token table: reloaded from its file on SIGHUP.
pub struct Tokens {
    path: PathBuf,
    table: RwLock<TokenTable>,
}

impl Tokens {
    /// Loads the table at `path` (private, at least one token).
    pub fn load(path: &Path) -> Result<Tokens, AuthError> {
        let table = TokenTable::load(path)?;
        if table.is_empty() {
            return Err(AuthError::Empty(path.display().to_string()));
        }
        Ok(Tokens {
            path: path.to_path_buf(),
            table: RwLock::new(table),
        })
    }

    /// Tokens in the table now.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// True when no token is accepted.
    pub fn is_empty(&self) -> bool {
        self.read().len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, TokenTable> {
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry of `token`, if accepted now.
    pub fn find(&self, token: &str) -> Option<Entry> {
        self.read().find(token).cloned()
    }

    /// Reads the file again; on any error the current table stays.
    pub fn reload(&self) -> Result<usize, AuthError> {
        let fresh = TokenTable::load(&self.path)?;
        if fresh.is_empty() {
            return Err(AuthError::Empty(self.path.display().to_string()));
        }
        let n = fresh.len();
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(n)
    }
}

/// Reloads `tokens` on every SIGHUP (adds and revokes tokens without a
/// restart); runs until the process ends.
pub async fn reload_on_hangup(tokens: Arc<Tokens>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("API tokens: cannot listen for SIGHUP; restart the root to reload");
        return;
    };
    while hup.recv().await.is_some() {
        match tokens.reload() {
            Ok(n) => tracing::info!("API tokens: reloaded {n} from {}", tokens.path.display()),
            Err(e) => tracing::error!("API tokens: reload failed, keeping the old table: {e}"),
        }
    }
}

/// A new random token: [`TOKEN_PREFIX`] and 64 hex digits (256 bits).
pub fn new_token() -> Result<String, SecretError> {
    Ok(format!("{TOKEN_PREFIX}{}", secrets::random_hex(32)?))
}

/// The table line that accepts `token` as `name` with `role`.
pub fn table_line(role: Role, name: &str, token: &str) -> String {
    format!("{role} {name} {}\n", secrets::hex(&sha256(token)))
}

/// Reads a client's token file (private, one token).
pub fn read_token_file(path: &Path) -> Result<String, AuthError> {
    let text = secrets::read_private(path)?;
    let t = text.trim();
    if !t.starts_with(TOKEN_PREFIX) || t.len() != TOKEN_PREFIX.len() + 64 {
        return Err(AuthError::NotAToken(path.display().to_string()));
    }
    Ok(t.to_string())
}

/// `layercake tokens create`: a new token written to `out` (0600, never
/// overwritten) and its hash appended to the table `table`.
pub fn create(role: Role, name: &str, out: &Path, table: &Path) -> anyhow::Result<()> {
    if name.is_empty() || name.contains(char::is_whitespace) || name.contains('#') {
        anyhow::bail!("--name must be one word without `#` (got `{name}`)");
    }
    if table.exists() {
        TokenTable::load(table)?;
    }
    let token = new_token()?;
    secrets::write_private(out, &format!("{token}\n"))?;
    secrets::append_private(table, &table_line(role, name, &token))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_parse_and_find_tokens() {
        let t1 = new_token().unwrap();
        let t2 = new_token().unwrap();
        assert_ne!(t1, t2);
        let text = format!(
            "# comment\n{}\n{}",
            table_line(Role::Admin, "alice", &t1).trim(),
            table_line(Role::Read, "bob", &t2)
        );
        let t = TokenTable::parse(&text, "tokens").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.find(&t1).unwrap().role, Role::Admin);
        assert_eq!(t.find(&t2).unwrap().name, "bob");
        assert!(t.find("lct_nope").is_none());
        let e = TokenTable::parse("admin x\n", "tokens").unwrap_err();
        assert_eq!(
            e.to_string(),
            "tokens:1: expected `ROLE NAME SHA256` (3 fields), found 2"
        );
        let e = TokenTable::parse("\nroot x abc\n", "t").unwrap_err();
        assert!(e.to_string().starts_with("t:2: unknown role `root`"), "{e}");
    }
}
