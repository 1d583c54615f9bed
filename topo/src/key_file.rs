//! [`crate::Topology::check_key_file`]: the cluster key file is a regular
//! file that only its owner may access.

use std::io::ErrorKind;
use std::path::Path;

use crate::error::TopoError;
use crate::model::Topology;

/// Checks `t.key_file` (see [`Topology::check_key_file`]).
pub(crate) fn check(t: &Topology) -> Result<(), TopoError> {
    let Some(path) = &t.key_file else {
        return Ok(());
    };
    problem(path).map_or(Ok(()), |message| {
        let (line, column) = t.spans.key_file.unwrap_or((0, 0));
        Err(TopoError {
            file: t.spans.file.clone(),
            line,
            column,
            message,
        })
    })
}

/// What is wrong with the key file at `path`, in words, with the fix.
fn problem(path: &Path) -> Option<String> {
    let shown = path.display();
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Some(format!(
                "key_file `{shown}` does not exist; create it with `layercake topo key > {shown}` \
                 and `chmod 600 {shown}`"
            ));
        }
        Err(e) => return Some(format!("cannot inspect key_file `{shown}`: {e}")),
    };
    if meta.file_type().is_symlink() {
        return Some(format!(
            "key_file `{shown}` is a symbolic link; name the key file itself (a link can be \
             pointed at another file)"
        ));
    }
    if !meta.is_file() {
        return Some(format!("key_file `{shown}` is not a regular file"));
    }
    mode_problem(&meta, &shown.to_string())
}

/// Group or others may access the file.
#[cfg(unix)]
fn mode_problem(meta: &std::fs::Metadata, shown: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "key_file `{shown}` has mode {mode:04o}: group or others may access it; \
             run `chmod 600 {shown}`"
        )
    })
}

/// Other systems have no mode bits to check.
#[cfg(not(unix))]
fn mode_problem(_: &std::fs::Metadata, _: &str) -> Option<String> {
    None
}
