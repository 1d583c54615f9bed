//! The credentials file: BMC passwords, by name, on the instance that runs
//! CHILD-context work. Secrets never enter the replicated state; a node's
//! `Power/Credential` field names an entry here.
//!
//! Format: one entry per line, `NAME PASSWORD` (the password is the rest of
//! the line after the whitespace that follows the name, trailing blanks
//! removed); blank lines and lines starting with `#` are ignored. The file
//! must not be accessible by group or others (`chmod 600`), like an ssh key.

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
    /// A line is not `NAME PASSWORD`.
    #[error("credentials file {0}:{1}: {2}")]
    Syntax(PathBuf, usize, String),
}

/// Passwords by credential name (the `Debug` output hides them).
#[derive(Clone, Default)]
pub struct Credentials {
    by_name: HashMap<String, String>,
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
        use std::io::Read as _;
        use std::os::unix::fs::PermissionsExt as _;
        let io = |e| CredsError::Io(path.to_path_buf(), e);
        let file = std::fs::File::open(path).map_err(io)?;
        let mode = file.metadata().map_err(io)?.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(CredsError::Permissions(path.to_path_buf(), mode));
        }
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
            let Some((name, password)) = line.split_once(char::is_whitespace) else {
                return Err((i + 1, format!("`{name}` has no password", name = line)));
            };
            let password = password.trim();
            if password.is_empty() {
                return Err((i + 1, format!("`{name}` has no password")));
            }
            if by_name.len() >= ENTRIES_MAX {
                return Err((i + 1, format!("more than {ENTRIES_MAX} entries")));
            }
            if by_name
                .insert(name.to_string(), password.to_string())
                .is_some()
            {
                return Err((i + 1, format!("`{name}` is defined twice")));
            }
        }
        Ok(Credentials { by_name })
    }

    /// The password of credential `name`.
    pub fn password(&self, name: &str) -> Option<&str> {
        self.by_name.get(name).map(String::as_str)
    }

    /// Adds or replaces one entry (tests, benches).
    pub fn insert(&mut self, name: &str, password: &str) {
        self.by_name.insert(name.to_string(), password.to_string());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_passwords() {
        let c = Credentials::parse("# lab\nlab-ipmi  s3cret \n\nlab-rf pass word\n").unwrap();
        assert_eq!(c.password("lab-ipmi"), Some("s3cret"));
        assert_eq!(c.password("lab-rf"), Some("pass word"));
        assert_eq!(c.len(), 2);
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn rejects_bad_lines() {
        assert_eq!(Credentials::parse("a\n").unwrap_err().0, 1);
        assert_eq!(Credentials::parse("a x\na y\n").unwrap_err().0, 2);
    }

    #[test]
    fn refuses_group_readable_files() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("lc-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("creds");
        std::fs::write(&p, "a b\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = Credentials::load(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Credentials::load(&p).unwrap().password("a"), Some("b"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
