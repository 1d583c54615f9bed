//! Files served to booting machines, from under one directory only.
//!
//! - [`check_path`]: the pure part: a client's path to a relative path,
//!   or why it is refused (`..`, absolute, NUL, backslash, control
//!   characters, too long). No file system access.
//! - [`FileRoot::open`]: resolves the checked path under the root,
//!   follows symbolic links and refuses the result if it is not inside the
//!   root (a link pointing out), then opens the regular file.
//! - [`FileError::is_refusal`]: which errors are hostile input (counted as
//!   such by TFTP and HTTP) rather than a missing file.
//!
//! The check is on the canonical path at open time; the root directory
//! must not be writable by anyone who should not choose what is served
//! (a link swapped between the check and the open is not defended).

use std::fs::File;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Longest path a client may ask for.
pub const PATH_BYTES_MAX: usize = 255;

/// Why a file is not served.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The path is refused as hostile or invalid (the reason says why).
    #[error("path refused: {0}")]
    Refused(&'static str),
    /// The path resolves, through a symbolic link, outside the root.
    #[error("path leaves the root directory")]
    OutsideRoot,
    /// No such file.
    #[error("file not found")]
    NotFound,
    /// Not a regular file (a directory, a device).
    #[error("not a regular file")]
    NotAFile,
    /// Larger than the caller's limit.
    #[error("file too large ({0} bytes)")]
    TooLarge(u64),
    /// Another I/O error (permissions, ...).
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl FileError {
    /// Whether this is a refused path (traversal and the like) rather
    /// than a file that is missing or unreadable.
    pub fn is_refusal(&self) -> bool {
        matches!(self, FileError::Refused(_) | FileError::OutsideRoot)
    }
}

/// Checks a client's path and returns it as a relative path. Refuses
/// empty, too long, absolute (a leading `/`), NUL, backslash, control
/// characters and any `..` component; `.` and repeated `/` are dropped.
pub fn check_path(requested: &str) -> Result<PathBuf, FileError> {
    if requested.is_empty() {
        return Err(FileError::Refused("empty path"));
    }
    if requested.len() > PATH_BYTES_MAX {
        return Err(FileError::Refused("path too long"));
    }
    if requested.starts_with('/') {
        return Err(FileError::Refused("absolute path"));
    }
    if requested.contains('\0') {
        return Err(FileError::Refused("NUL in path"));
    }
    if requested.contains('\\') {
        return Err(FileError::Refused("backslash in path"));
    }
    if requested.chars().any(char::is_control) {
        return Err(FileError::Refused("control character in path"));
    }
    let mut out = PathBuf::new();
    for component in Path::new(requested).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(FileError::Refused("'..' in path")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(FileError::Refused("absolute path"));
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(FileError::Refused("empty path"));
    }
    Ok(out)
}

/// A directory whose regular files may be served.
#[derive(Clone, Debug)]
pub struct FileRoot {
    dir: PathBuf,
}

impl FileRoot {
    /// The root at `dir` (canonicalized; must be a directory).
    pub fn new(dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref().canonicalize()?;
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", dir.display()),
            ));
        }
        Ok(FileRoot { dir })
    }

    /// The canonical root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens the regular file at `requested` under the root, with its
    /// length; refuses it beyond `max_bytes`.
    pub fn open(&self, requested: &str, max_bytes: u64) -> Result<(File, u64), FileError> {
        let relative = check_path(requested)?;
        let full = self.dir.join(relative);
        let real = match full.canonicalize() {
            Ok(real) => real,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(FileError::NotFound),
            Err(e) => return Err(FileError::Io(e)),
        };
        if !real.starts_with(&self.dir) {
            return Err(FileError::OutsideRoot);
        }
        let file = File::open(&real)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(FileError::NotAFile);
        }
        if meta.len() > max_bytes {
            return Err(FileError::TooLarge(meta.len()));
        }
        Ok((file, meta.len()))
    }
}
