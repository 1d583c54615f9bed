//! Busy from the node itself (Kraken's `freebusy`): the node's agent
//! socket, its tiny line protocol, and the hook an in-process scheduler
//! integration uses.
//!
//! - [`Board`]: who says the node is busy. The node is BUSY while at least
//!   one source (`cli` by default, `slurm`, ...) holds it busy, FREE
//!   otherwise; each source frees only itself.
//! - [`Request`] and [`parse`]: one line per request, `busy [SOURCE]`,
//!   `free [SOURCE]` or `status`; the answer is one line, `BUSY`/`FREE`
//!   (followed by the busy sources) or `error: ...`.
//! - [`bind`]: the agent's Unix socket, mode 0660, in a directory that
//!   is not group- or world-writable; a symlink at the path is refused, a
//!   stale socket replaced.
//! - [`request`]: the client side (`layercake busy`), which refuses a
//!   socket path that is a symlink.
//! - [`BusyHook`]: a cloneable handle the agent's owner hands to modules
//!   (a scheduler's prolog/epilog integration) to report Busy in process.
//!
//! Nothing here knows the engine: the daemon turns the board's state into
//! the node's Dsc `/Busy`.

use std::collections::BTreeSet;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// The longest request line accepted (bytes).
pub const LINE_MAX: usize = 256;
/// The most distinct busy sources a board holds.
pub const SOURCES_MAX: usize = 64;
/// How long a client waits for the agent's answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// The default source of `layercake busy`.
pub const DEFAULT_SOURCE: &str = "cli";

/// One request to the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `source` holds the node busy.
    Busy(String),
    /// `source` no longer holds the node busy.
    Free(String),
    /// Only report.
    Status,
}

/// Who holds the node busy.
#[derive(Clone, Debug, Default)]
pub struct Board {
    sources: BTreeSet<String>,
}

impl Board {
    /// Applies a request; returns the answer line (without newline).
    pub fn apply(&mut self, r: &Request) -> String {
        match r {
            Request::Busy(s) if !self.sources.contains(s) && self.sources.len() >= SOURCES_MAX => {
                return format!("error: {SOURCES_MAX} sources hold the node busy already");
            }
            Request::Busy(s) => {
                self.sources.insert(s.clone());
            }
            Request::Free(s) => {
                self.sources.remove(s);
            }
            Request::Status => {}
        }
        self.status()
    }

    /// True while any source holds the node busy.
    pub fn is_busy(&self) -> bool {
        !self.sources.is_empty()
    }

    /// `BUSY cli,slurm` or `FREE`.
    pub fn status(&self) -> String {
        if self.is_busy() {
            let s: Vec<&str> = self.sources.iter().map(String::as_str).collect();
            format!("BUSY {}", s.join(","))
        } else {
            "FREE".to_owned()
        }
    }
}

/// Parses one request line.
pub fn parse(line: &str) -> Result<Request, String> {
    let mut words = line.split_whitespace();
    let verb = words.next().ok_or("empty request")?;
    let source = words.next().unwrap_or(DEFAULT_SOURCE);
    if words.next().is_some() {
        return Err("too many words (want `busy|free|status [SOURCE]`)".into());
    }
    let ok = !source.is_empty()
        && source.len() <= 64
        && source
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !ok {
        return Err(format!(
            "bad source `{source}` (1-64 characters of A-Z a-z 0-9 - _ .)"
        ));
    }
    match verb {
        "busy" => Ok(Request::Busy(source.to_owned())),
        "free" => Ok(Request::Free(source.to_owned())),
        "status" => Ok(Request::Status),
        v => Err(format!("unknown request `{v}` (want busy, free or status)")),
    }
}

/// A request with the channel its answer goes back on.
pub type Envelope = (Request, oneshot::Sender<String>);

/// The in-process hook: modules report Busy through it like the socket's
/// clients do.
#[derive(Clone, Debug)]
pub struct BusyHook(mpsc::Sender<Envelope>);

impl BusyHook {
    /// A hook and the receiver the agent's owner serves.
    pub fn channel() -> (BusyHook, mpsc::Receiver<Envelope>) {
        let (tx, rx) = mpsc::channel(64);
        (BusyHook(tx), rx)
    }

    /// Sends `r`; returns the answer line (`None`: the agent is gone).
    pub async fn send(&self, r: Request) -> Option<String> {
        let (tx, rx) = oneshot::channel();
        self.0.send((r, tx)).await.ok()?;
        rx.await.ok()
    }
}

fn refuse_symlink(path: &Path) -> io::Result<Option<std::fs::Metadata>> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is a symlink: refused", path.display()),
        )),
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Binds the agent socket at `path` with mode 0660. Its directory is
/// created (0755) when missing and must not be writable by group or
/// others; a symlink or a non-socket file at `path` is refused, a socket
/// a running agent answers on is refused, a stale one replaced.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        if refuse_symlink(dir)?.is_none() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o022 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} is writable by group or others (mode {:o}): refused",
                    dir.display(),
                    mode & 0o777
                ),
            ));
        }
    }
    match refuse_symlink(path)? {
        Some(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by a running agent", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Some(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket: refused", path.display()),
            ));
        }
        None => {}
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(l)
}

/// Serves the socket: each connection sends one request line and gets one
/// answer line; requests go to `hook`. Runs until the hook's receiver is
/// gone.
pub async fn serve(listener: UnixListener, hook: BusyHook) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let hook = hook.clone();
        tokio::task::spawn_local(async move {
            let _ = tokio::time::timeout(CLIENT_TIMEOUT, answer(stream, hook)).await;
        });
    }
}

async fn answer(stream: UnixStream, hook: BusyHook) -> io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let n = BufReader::new(r.take(LINE_MAX as u64))
        .read_line(&mut line)
        .await?;
    let reply = if n >= LINE_MAX && !line.ends_with('\n') {
        format!("error: request longer than {LINE_MAX} bytes")
    } else {
        match parse(line.trim()) {
            Ok(req) => hook
                .send(req)
                .await
                .unwrap_or_else(|| "error: the agent is shutting down".into()),
            Err(e) => format!("error: {e}"),
        }
    };
    w.write_all(reply.as_bytes()).await?;
    w.write_all(b"\n").await?;
    w.shutdown().await
}

/// Sends one request line to the agent at `path`; returns its answer. A
/// symlink at `path` is refused.
pub async fn request(path: &Path, line: &str) -> io::Result<String> {
    refuse_symlink(path)?;
    let fut = async {
        let mut s = UnixStream::connect(path).await?;
        s.write_all(line.as_bytes()).await?;
        s.write_all(b"\n").await?;
        let mut out = String::new();
        BufReader::new(s.take(LINE_MAX as u64 * 4))
            .read_line(&mut out)
            .await?;
        Ok(out.trim_end().to_owned())
    };
    tokio::time::timeout(CLIENT_TIMEOUT, fut)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the agent did not answer"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_is_busy_while_any_source_holds_it() {
        let mut b = Board::default();
        assert_eq!(b.apply(&parse("busy").unwrap()), "BUSY cli");
        assert_eq!(b.apply(&parse("busy slurm").unwrap()), "BUSY cli,slurm");
        assert_eq!(b.apply(&parse("free").unwrap()), "BUSY slurm");
        assert!(b.is_busy());
        assert_eq!(b.apply(&parse("free slurm").unwrap()), "FREE");
        assert_eq!(b.apply(&Request::Status), "FREE");
    }

    #[test]
    fn bad_requests_are_refused_clearly() {
        assert!(parse("").is_err());
        assert!(parse("sleep").unwrap_err().contains("unknown request"));
        assert!(parse("busy a b").is_err());
        assert!(parse("busy ../x").unwrap_err().contains("bad source"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_socket_is_0660_and_symlinks_are_refused() {
        let dir = std::env::temp_dir().join(format!("lc-busy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let sock = dir.join("agent.sock");
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let l = bind(&sock).unwrap();
                let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o660);
                let (hook, mut rx) = BusyHook::channel();
                tokio::task::spawn_local(serve(l, hook));
                tokio::task::spawn_local(async move {
                    let mut board = Board::default();
                    while let Some((r, tx)) = rx.recv().await {
                        let _ = tx.send(board.apply(&r));
                    }
                });
                assert_eq!(request(&sock, "busy").await.unwrap(), "BUSY cli");
                assert!(request(&sock, "nap").await.unwrap().starts_with("error:"));
                let link = dir.join("link.sock");
                std::os::unix::fs::symlink(&sock, &link).unwrap();
                assert!(request(&link, "free").await.is_err(), "symlink refused");
                assert!(bind(&link).is_err(), "bind refuses a symlink");
                let e = bind(&sock).unwrap_err();
                assert_eq!(
                    e.kind(),
                    io::ErrorKind::AddrInUse,
                    "a live agent's socket is kept"
                );
                assert_eq!(request(&sock, "free").await.unwrap(), "FREE");
            })
            .await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
