//! The error type of the crate: every failure to load a topology names the
//! file, the 1-based line and column, and what is wrong.

/// A topology that could not be loaded.
///
/// `Display` prints `file:line:column: message`, the form editors and
/// terminals turn into a link. Line and column are 1-based and point at the
/// offending key or value; both are 0 when the error has no position (the
/// file could not be read).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct TopoError {
    /// The file name given to [`crate::Topology::parse`] or the path given
    /// to [`crate::Topology::load`].
    pub file: String,
    /// 1-based line (0: no position).
    pub line: usize,
    /// 1-based column in characters (0: no position).
    pub column: usize,
    /// What is wrong, in words.
    pub message: String,
}
