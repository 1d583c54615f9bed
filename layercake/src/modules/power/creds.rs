//! The credentials file: BMC passwords, by name, on the instance that runs
//! CHILD-context work. Secrets never enter the replicated state; a node's
//! `Power/Credential` field names an entry here.
//!
//! Format: one entry per line, `NAME ADDRESSES PASSWORD` (the password is
//! the rest of the line after the whitespace that follows the addresses,
//! trailing blanks removed); blank lines and lines starting with `#` are
//! ignored. The file must not be accessible by group or others
//! (`chmod 600`), like an ssh key.
//!
//! `ADDRESSES` binds the credential to where it may be sent (issue 12,
//! finding 8: otherwise whoever may write a Cfg could point `Address` at
//! their own host and receive the password): a comma-separated list of
//! host patterns, `*` matching any run of characters within one label,
//! never a `.` or `:` (`10.0.1.*`, `bmc-*.lab`, `*.*.*.*` for any IPv4
//! address); a lone `*` is every host. A pattern prefixed with `http:` also
//! allows plain HTTP (Redfish `Scheme: http`) to the hosts it matches;
//! without it the password only travels over TLS or IPMI's RAKP (which
//! never sends it). A BMC whose host matches no pattern gets no password:
//! the node goes to PHYS_ERROR with a message naming the credential.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The most entries a credentials file may hold.
pub const ENTRIES_MAX: usize = 65_536;
/// The largest credentials file read, bytes.
pub const FILE_BYTES_MAX: u64 = 16 << 20;

/// Why the credentials file was refused (nothing was loaded).
#[derive(Debug, thiserror::Error)]
pub enum CredsError {
    /// The file could not be read.
    #[error("credentials file {0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// Group or others may access the file.
    #[error(
        "credentials file {0} is accessible by group or others (mode {1:04o}); \
         it holds BMC passwords: run `chmod 600 {0}`"
    )]
    Permissions(PathBuf, u32),
    /// A symlink, not a regular file, or a file another user owns.
    #[error("credentials file: {0}")]
    Unsafe(String),
    /// A line is not `NAME ADDRESSES PASSWORD`.
    #[error("credentials file {0}:{1}: {2}")]
    Syntax(PathBuf, usize, String),
}

/// The most address patterns of one credential.
pub const PATTERNS_MAX: usize = 64;

/// One host pattern of a credential.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pattern {
    /// The pattern, `*` matching any run of characters (lower case).
    glob: String,
    /// Plain HTTP allowed to the hosts it matches.
    http: bool,
}

/// One credential: its password and where it may be sent.
#[derive(Clone)]
struct Entry {
    password: String,
    patterns: Vec<Pattern>,
}

/// Why a credential may not be sent to a BMC.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No entry of that name.
    #[error("credential `{0}` is not in this instance's credentials file")]
    Unknown(String),
    /// The host matches none of the entry's patterns.
    #[error("credential `{0}` is not for host `{1}` (the credentials file binds it to {2})")]
    Host(String, String, String),
    /// Plain HTTP to a host whose pattern does not allow it.
    #[error(
        "credential `{0}` may not travel over plain HTTP to `{1}` \
         (use Scheme https, or prefix its pattern with `http:` in the credentials file)"
    )]
    PlainHttp(String, String),
}

/// Passwords by credential name, each bound to host patterns (the `Debug`
/// output hides the passwords).
#[derive(Clone, Default)]
pub struct Credentials {
    by_name: HashMap<String, Entry>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.by_name.keys().collect();
        names.sort();
        f.debug_struct("Credentials")
            .field("names", &names)
            .finish()
    }
}

impl Credentials {
    /// No credentials (every BMC needing a password is refused).
    pub fn empty() -> Credentials {
        Credentials::default()
    }

    /// Reads `path` after checking its permissions.
    pub fn load(path: &Path) -> Result<Credentials, CredsError> {
        use crate::security::secrets::{self, SecretError};
        use std::io::Read as _;
        let io = |e| CredsError::Io(path.to_path_buf(), e);
        // Checked on the open file: not a symlink, ours, mode 0600.
        let file = secrets::open_private(path).map_err(|e| match e {
            SecretError::Exposed { mode, .. } => CredsError::Permissions(path.to_path_buf(), mode),
            SecretError::Io { source, .. } => io(source),
            e => CredsError::Unsafe(e.to_string()),
        })?;
        let mut text = String::new();
        file.take(FILE_BYTES_MAX)
            .read_to_string(&mut text)
            .map_err(io)?;
        Credentials::parse(&text)
            .map_err(|(line, msg)| CredsError::Syntax(path.to_path_buf(), line, msg))
    }

    /// Parses the text of a credentials file; errors carry the 1-based line.
    pub fn parse(text: &str) -> Result<Credentials, (usize, String)> {
        let mut by_name = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let (addresses, password) = rest
                .trim_start()
                .split_once(char::is_whitespace)
                .unwrap_or((rest.trim_start(), ""));
            let password = password.trim();
            if password.is_empty() {
                return Err((
                    i + 1,
                    format!(
                        "`{name}`: expected `NAME ADDRESSES PASSWORD` (the addresses the \
                         credential may be sent to, e.g. `10.0.1.*`, then the password)"
                    ),
                ));
            }
            let patterns =
                parse_patterns(addresses).map_err(|m| (i + 1, format!("`{name}`: {m}")))?;
            if by_name.len() >= ENTRIES_MAX {
                return Err((i + 1, format!("more than {ENTRIES_MAX} entries")));
            }
            let entry = Entry {
                password: password.to_string(),
                patterns,
            };
            if by_name.insert(name.to_string(), entry).is_some() {
                return Err((i + 1, format!("`{name}` is defined twice")));
            }
        }
        Ok(Credentials { by_name })
    }

    /// The password of credential `name` for a BMC at `host`, reached over
    /// plain HTTP when `plain_http`: only where the credentials file binds
    /// the credential.
    pub fn password_for(&self, name: &str, host: &str, plain_http: bool) -> Result<&str, Refusal> {
        let e = self
            .by_name
            .get(name)
            .ok_or_else(|| Refusal::Unknown(name.to_string()))?;
        let host_lc = host.to_ascii_lowercase();
        let matching: Vec<&Pattern> = e
            .patterns
            .iter()
            .filter(|p| glob(&p.glob, &host_lc))
            .collect();
        if matching.is_empty() {
            let bound: Vec<&str> = e.patterns.iter().map(|p| p.glob.as_str()).collect();
            return Err(Refusal::Host(
                name.to_string(),
                host.to_string(),
                bound.join(","),
            ));
        }
        if plain_http && !matching.iter().any(|p| p.http) {
            return Err(Refusal::PlainHttp(name.to_string(), host.to_string()));
        }
        Ok(&e.password)
    }

    /// Adds or replaces one entry bound to every host, plain HTTP allowed
    /// (tests and benches against local emulators).
    pub fn insert(&mut self, name: &str, password: &str) {
        let entry = Entry {
            password: password.to_string(),
            patterns: vec![Pattern {
                glob: "*".into(),
                http: true,
            }],
        };
        self.by_name.insert(name.to_string(), entry);
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// Parses `PATTERN[,PATTERN...]`, each optionally `http:`-prefixed.
fn parse_patterns(text: &str) -> Result<Vec<Pattern>, String> {
    let mut out = Vec::new();
    for raw in text.split(',') {
        let (http, glob) = match raw.strip_prefix("http:") {
            Some(g) => (true, g),
            None => (false, raw),
        };
        let ok = !glob.is_empty()
            && glob
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '*'));
        if !ok {
            return Err(format!(
                "bad address pattern `{raw}` (letters, digits, . - _ : and *)"
            ));
        }
        if out.len() >= PATTERNS_MAX {
            return Err(format!("more than {PATTERNS_MAX} address patterns"));
        }
        out.push(Pattern {
            glob: glob.to_ascii_lowercase(),
            http,
        });
    }
    Ok(out)
}

/// True when `text` matches `pattern`, where `*` matches any run of
/// characters within one label (never a `.` or `:`), so `10.0.1.*` is not
/// `10.0.1.7.evil.example`; a lone `*` matches every host. Dynamic
/// programming: `O(len(pattern) *
/// len(text))`, whatever the stars.
fn glob(pattern: &str, text: &str) -> bool {
    if pattern == "*" {
        return true; // a lone `*`: every host
    }
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    // ok[j]: pattern[..i] matches text[..j].
    let mut ok = vec![false; t.len() + 1];
    ok[0] = true;
    for &pc in p {
        let mut next = vec![false; t.len() + 1];
        if pc == b'*' {
            next[0] = ok[0];
            for j in 1..=t.len() {
                next[j] = ok[j] || (next[j - 1] && !matches!(t[j - 1], b'.' | b':'));
            }
        } else {
            for j in 1..=t.len() {
                next[j] = ok[j - 1] && t[j - 1] == pc;
            }
        }
        ok = next;
    }
    ok[t.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_addresses_and_passwords() {
        let c = Credentials::parse(
            "# lab\nlab-ipmi 10.0.1.*  s3cret \n\nlab-rf http:127.0.0.1,bmc-*.lab pass word\n",
        )
        .unwrap();
        assert_eq!(c.password_for("lab-ipmi", "10.0.1.7", false), Ok("s3cret"));
        assert_eq!(c.password_for("lab-rf", "127.0.0.1", true), Ok("pass word"));
        assert_eq!(
            c.password_for("lab-rf", "BMC-3.lab", false),
            Ok("pass word")
        );
        assert_eq!(c.len(), 2);
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    /// Issue 12, finding 8: a credential goes only to the hosts its entry
    /// names, and over plain HTTP only where a pattern allows it. On the
    /// old code any `Address` and `Scheme: http` got the password.
    #[test]
    fn finding8_credentials_are_bound_to_their_addresses() {
        let c = Credentials::parse("rack 10.0.1.*,http:10.0.9.5 s3cret\n").unwrap();
        assert!(matches!(
            c.password_for("rack", "203.0.113.9", false),
            Err(Refusal::Host(..))
        ));
        assert!(matches!(
            c.password_for("rack", "10.0.1.7.evil.example", false),
            Err(Refusal::Host(..))
        ));
        assert!(matches!(
            c.password_for("rack", "10.0.1.7", true),
            Err(Refusal::PlainHttp(..))
        ));
        assert_eq!(c.password_for("rack", "10.0.9.5", true), Ok("s3cret"));
        assert!(matches!(
            c.password_for("other", "10.0.1.7", false),
            Err(Refusal::Unknown(..))
        ));
        // The old two-field line binds nothing: refused with a message.
        let e = Credentials::parse("rack s3cret\n").unwrap_err();
        assert!(e.1.contains("NAME ADDRESSES PASSWORD"), "{e:?}");
    }

    #[test]
    fn globs_match_whole_hosts() {
        assert!(glob("*", "anything"));
        assert!(glob("*", "any.thing"));
        assert!(!glob("a*", "a.b"));
        assert!(glob("*.*.*.*", "192.0.2.1"));
        assert!(glob("10.0.1.*", "10.0.1.200"));
        assert!(!glob("10.0.1.*", "10.0.10.2"));
        assert!(glob("bmc-*.lab", "bmc-7.lab"));
        assert!(!glob("bmc-*.lab", "bmc-7.lab.evil"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXcYYb"));
        assert!(glob("exact", "exact") && !glob("exact", "exactly"));
    }

    #[test]
    fn rejects_bad_lines() {
        assert_eq!(Credentials::parse("a\n").unwrap_err().0, 1);
        assert_eq!(Credentials::parse("a * x\na * y\n").unwrap_err().0, 2);
        assert_eq!(Credentials::parse("a 10.0.0.1/8 x\n").unwrap_err().0, 1);
    }

    #[test]
    fn refuses_group_readable_files() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("lc-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("creds");
        std::fs::write(&p, "a * b\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = Credentials::load(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = Credentials::load(&p).unwrap();
        assert_eq!(c.password_for("a", "h", false), Ok("b"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
