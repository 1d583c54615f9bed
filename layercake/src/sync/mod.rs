//! The one sync stack (filled in by the next commit).
