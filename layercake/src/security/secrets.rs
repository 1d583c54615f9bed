//! Secret files on disk: API tokens, token tables, cluster keys, private
//! keys of certificates.
//!
//! - [`write_private`]: creates a file with mode 0600 (never overwrites one
//!   that exists, so nothing an operator stored is lost).
//! - [`open_private`], [`read_private`]: open a secret file without
//!   following a symlink and check the opened file itself (no path check
//!   followed by a second open, which a swapped file would pass): a regular
//!   file, owned by this user or root, no group or other permission bit;
//!   the message says which file and how to fix it.
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
    /// The path is a symlink, not a regular file, or owned by someone
    /// else.
    #[error("{path}: {why}; a secret file must be a regular file of its own, owned by this user")]
    Unsafe {
        /// The file.
        path: String,
        /// What is wrong with it.
        why: String,
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

/// Largest secret file read.
pub const SECRET_BYTES_MAX: u64 = 16 << 20;

/// Opens `path` for reading as a secret: never through a symlink
/// (`O_NOFOLLOW`), and only if the opened file is a regular file owned by
/// this process's user (or root) with no group or other permission bit.
/// The checks are made on the open file, so the file read is the file
/// checked.
pub fn open_private(path: &Path) -> Result<std::fs::File, SecretError> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                SecretError::Unsafe {
                    path: path.display().to_string(),
                    why: "it is a symlink".into(),
                }
            } else {
                io(path)(e)
            }
        })?;
    check_open(path, &f)?;
    Ok(f)
}

/// The checks of [`open_private`] on an open file.
fn check_open(path: &Path, f: &std::fs::File) -> Result<(), SecretError> {
    use std::os::unix::fs::MetadataExt;
    let meta = f.metadata().map_err(io(path))?;
    let unsafe_ = |why: String| SecretError::Unsafe {
        path: path.display().to_string(),
        why,
    };
    if !meta.file_type().is_file() {
        return Err(unsafe_("it is not a regular file".into()));
    }
    let me = euid().map_err(io(path))?;
    if meta.uid() != me && meta.uid() != 0 {
        return Err(unsafe_(format!(
            "it is owned by uid {}, not by this user (uid {me})",
            meta.uid()
        )));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretError::Exposed {
            path: path.display().to_string(),
            mode,
        });
    }
    Ok(())
}

/// This process's effective user id: the owner of `/proc/self` (the crate
/// has no unsafe code for `geteuid`; the process is not setuid, so the
/// directory is its own).
fn euid() -> std::io::Result<u32> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata("/proc/self")?.uid())
}

/// Fails unless `path` passes [`open_private`]'s checks.
pub fn check_private(path: &Path) -> Result<(), SecretError> {
    open_private(path).map(drop)
}

/// Reads a secret file opened with [`open_private`] (at most
/// [`SECRET_BYTES_MAX`] bytes).
pub fn read_private(path: &Path) -> Result<String, SecretError> {
    let f = open_private(path)?;
    let mut text = String::new();
    f.take(SECRET_BYTES_MAX)
        .read_to_string(&mut text)
        .map_err(io(path))?;
    Ok(text)
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
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                SecretError::Unsafe {
                    path: path.display().to_string(),
                    why: "it is a symlink".into(),
                }
            } else {
                io(path)(e)
            }
        })?;
    check_open(path, &f)?;
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

    /// Issue 12, finding 11: a secret is read from the file that was
    /// checked: a symlink to a private file is refused (the old code
    /// checked the target through the path, then opened the path again),
    /// and so are a directory and a file another user owns.
    #[test]
    fn finding11_secret_files_are_checked_on_the_open_file() {
        use std::os::unix::fs::symlink;
        let dir = std::env::temp_dir().join(format!("layercake-secrets11-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let real = dir.join("real");
        write_private(&real, "k").unwrap();
        let link = dir.join("link");
        symlink(&real, &link).unwrap();
        let e = read_private(&link).unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
        assert!(append_private(&link, "x").is_err());
        assert!(read_private(&dir).is_err());
        if euid().unwrap() == 0 {
            let theirs = dir.join("theirs");
            write_private(&theirs, "k").unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
            let e = read_private(&theirs).unwrap_err().to_string();
            assert!(e.contains("owned by uid 65534"), "{e}");
        }
        assert_eq!(read_private(&real).unwrap(), "k");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
