//! Secret files on disk: API tokens, token tables, cluster keys, private
//! keys of certificates.
//!
//! - [`write_private`]: creates a file with mode 0600 (never overwrites one
//!   that exists, so nothing an operator stored is lost).
//! - [`read_private`]: reads a file only if no group or other permission
//!   bit is set, with a message that says which file and how to fix it.
//! - [`random_hex`]: hex digits from the operating system's random source.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a secret file could not be read or written. Nothing was changed on
/// disk by a failed call.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file is readable or writable by its group or by others.
    #[error(
        "{path}: mode {mode:04o} lets its group or others access a secret; run `chmod 600 {path}`"
    )]
    Exposed {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The file exists and would be overwritten.
    #[error("{path} already exists; remove it first or choose another name")]
    Exists {
        /// The file.
        path: String,
    },
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SecretError + '_ {
    move |source| SecretError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Fails unless `path` has no group or other permission bit.
pub fn check_private(path: &Path) -> Result<(), SecretError> {
    let mode = std::fs::metadata(path)
        .map_err(io(path))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretError::Exposed {
            path: path.display().to_string(),
            mode,
        });
    }
    Ok(())
}

/// Reads a secret file after [`check_private`].
pub fn read_private(path: &Path) -> Result<String, SecretError> {
    check_private(path)?;
    std::fs::read_to_string(path).map_err(io(path))
}

/// Creates `path` with mode 0600 holding `text`; refuses an existing file.
pub fn write_private(path: &Path, text: &str) -> Result<(), SecretError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => SecretError::Exists {
                path: path.display().to_string(),
            },
            _ => io(path)(e),
        })?;
    f.write_all(text.as_bytes()).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Appends `line` to `path`, creating it with mode 0600; an existing file
/// must already be private.
pub fn append_private(path: &Path, line: &str) -> Result<(), SecretError> {
    if path.exists() {
        check_private(path)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(line.as_bytes()).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// `bytes` random bytes from `/dev/urandom`, as lowercase hex.
pub fn random_hex(bytes: usize) -> Result<String, SecretError> {
    let p = PathBuf::from("/dev/urandom");
    let mut b = vec![0u8; bytes];
    std::fs::File::open(&p)
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(io(&p))?;
    Ok(hex(&b))
}

/// Lowercase hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_0600_and_exposed_ones_refused() {
        let dir = std::env::temp_dir().join(format!("layercake-secrets-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("s");
        write_private(&p, "x").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_private(&p).unwrap(), "x");
        assert!(matches!(
            write_private(&p, "y"),
            Err(SecretError::Exists { .. })
        ));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_private(&p).unwrap_err().to_string();
        assert!(e.contains("mode 0644") && e.contains("chmod 600"), "{e}");
        assert_eq!(random_hex(32).unwrap().len(), 64);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
