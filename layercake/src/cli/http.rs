//! A minimal blocking HTTP/1.1 client for `layercake ctl` (one request per
//! connection, `Connection: close`), so the CLI needs no HTTP stack.
//!
//! - [`request`]: sends a request and reads the whole response (bodies with
//!   `Content-Length`, chunked, or up to the end of the stream).
//! - [`stream_lines`]: sends a GET and hands each line of a streaming
//!   (chunked) body to a callback, for the event stream.
//!
//! Every failure is a [`HttpError`]; nothing here panics on what the
//! server sends.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest response body read.
pub const BODY_BYTES_MAX: usize = 256 << 20;
/// Longest response header line.
const LINE_BYTES_MAX: usize = 64 << 10;
/// How long a connection attempt and a read may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The server could not be reached.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The connection failed mid-way.
    #[error("talking to the API: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent something that is not HTTP/1.1 as expected.
    #[error("malformed response: {0}")]
    Malformed(String),
}

/// A response: status and body.
#[derive(Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

/// The bearer token sent with every request (set once by `ctl`).
static TOKEN: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// Sets the bearer token of every later request (first call wins).
pub fn set_token(token: Option<String>) {
    let _ = TOKEN.set(token.filter(|t| !t.is_empty()));
}

/// The CA that an `https://` API's certificate must chain to.
static TLS_CA: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Sets the CA file for `https://` addresses (first call wins).
pub fn set_tls_ca(path: std::path::PathBuf) {
    let _ = TLS_CA.set(path);
}

/// A connection to the API: plain TCP, or TLS over TCP (`https://ADDR`).
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.set_read_timeout(t),
            Conn::Tls(s) => s.sock.set_read_timeout(t),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// `host:port` without an `http://` or `https://` prefix, and whether TLS.
fn host_of(addr: &str) -> (&str, bool) {
    match addr.strip_prefix("https://") {
        Some(h) => (h.trim_end_matches('/'), true),
        None => (
            addr.trim_start_matches("http://").trim_end_matches('/'),
            false,
        ),
    }
}

fn tls_client(host: &str) -> Result<rustls::ClientConnection, HttpError> {
    use rustls::pki_types::pem::PemObject;
    let bad = |m: String| HttpError::Connect {
        addr: host.to_string(),
        source: std::io::Error::other(m),
    };
    let ca = TLS_CA.get().ok_or_else(|| {
        bad("an https:// API needs --api-ca FILE (the CA of its certificate)".into())
    })?;
    let ca_err = |e: &dyn std::fmt::Display| bad(format!("--api-ca {}: {e}", ca.display()));
    let mut roots = rustls::RootCertStore::empty();
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(ca).map_err(|e| ca_err(&e))?;
    for c in certs {
        roots
            .add(c.map_err(|e| ca_err(&e))?)
            .map_err(|e| ca_err(&e))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let name = name
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let name =
        rustls::pki_types::ServerName::try_from(name).map_err(|e| bad(format!("`{host}`: {e}")))?;
    rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).map_err(|e| bad(e.to_string()))
}

fn connect(addr: &str) -> Result<Conn, HttpError> {
    let (host, tls) = host_of(addr);
    let tcp = connect_tcp(host)?;
    if !tls {
        return Ok(Conn::Plain(tcp));
    }
    let client = tls_client(host)?;
    Ok(Conn::Tls(Box::new(rustls::StreamOwned::new(client, tcp))))
}

fn connect_tcp(addr: &str) -> Result<TcpStream, HttpError> {
    let err = |source| HttpError::Connect {
        addr: addr.to_string(),
        source,
    };
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs().map_err(err)?.collect();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, Duration::from_secs(5)) {
            Ok(s) => {
                s.set_read_timeout(Some(TIMEOUT))?;
                s.set_write_timeout(Some(TIMEOUT))?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(err(last))
}

fn send(
    s: &mut Conn,
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<(), HttpError> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\nUser-Agent: layercake-ctl\r\n"
    );
    if let Some(Some(t)) = TOKEN.get() {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    if let Some(b) = body {
        s.write_all(b)?;
    }
    s.flush()?;
    Ok(())
}

fn read_line(r: &mut impl BufRead) -> Result<String, HttpError> {
    let mut buf = Vec::new();
    let n = r
        .by_ref()
        .take(LINE_BYTES_MAX as u64)
        .read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Err(HttpError::Malformed("connection closed early".into()));
    }
    if buf.last() != Some(&b'\n') {
        return Err(HttpError::Malformed("header line too long".into()));
    }
    Ok(String::from_utf8_lossy(&buf).trim_end().to_string())
}

struct Head {
    status: u16,
    length: Option<usize>,
    chunked: bool,
}

fn read_head(r: &mut impl BufRead) -> Result<Head, HttpError> {
    let status_line = read_line(r)?;
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or("");
    let status = parts.next().and_then(|s| s.parse().ok());
    let Some(status) = status.filter(|_| version.starts_with("HTTP/1.")) else {
        return Err(HttpError::Malformed(format!("status line `{status_line}`")));
    };
    let mut head = Head {
        status,
        length: None,
        chunked: false,
    };
    for _ in 0..256 {
        let line = read_line(r)?;
        if line.is_empty() {
            return Ok(head);
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err(HttpError::Malformed(format!("header `{line}`")));
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "content-length" => head.length = v.trim().parse().ok(),
            "transfer-encoding" => head.chunked = v.to_ascii_lowercase().contains("chunked"),
            _ => {}
        }
    }
    Err(HttpError::Malformed("too many headers".into()))
}

/// Reads one chunk of a chunked body; `None` at the last chunk.
fn read_chunk(r: &mut impl BufRead) -> Result<Option<Vec<u8>>, HttpError> {
    let line = read_line(r)?;
    let size_text = line.split(';').next().unwrap_or("").trim();
    let size = usize::from_str_radix(size_text, 16)
        .map_err(|_| HttpError::Malformed(format!("chunk size `{line}`")))?;
    if size > BODY_BYTES_MAX {
        return Err(HttpError::Malformed("chunk too large".into()));
    }
    if size == 0 {
        return Ok(None);
    }
    let mut buf = vec![0; size];
    r.read_exact(&mut buf)?;
    let _ = read_line(r)?;
    Ok(Some(buf))
}

/// Sends one request to `addr` (`host:port`) and reads the response.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<Response, HttpError> {
    let mut s = connect(addr)?;
    send(&mut s, host_of(addr).0, method, path, body)?;
    let mut r = BufReader::new(s);
    let head = read_head(&mut r)?;
    let mut out = Vec::new();
    if head.chunked {
        while let Some(c) = read_chunk(&mut r)? {
            if out.len() + c.len() > BODY_BYTES_MAX {
                return Err(HttpError::Malformed("body too large".into()));
            }
            out.extend_from_slice(&c);
        }
    } else if let Some(n) = head.length {
        if n > BODY_BYTES_MAX {
            return Err(HttpError::Malformed("body too large".into()));
        }
        out.resize(n, 0);
        r.read_exact(&mut out)?;
    } else {
        r.take(BODY_BYTES_MAX as u64).read_to_end(&mut out)?;
    }
    Ok(Response {
        status: head.status,
        body: out,
    })
}

/// GETs `path` and calls `line` for each line of the streamed body until
/// the server ends it or `line` returns false. A non-2xx answer is
/// returned whole instead.
pub fn stream_lines(
    addr: &str,
    path: &str,
    mut line: impl FnMut(&str) -> bool,
) -> Result<Option<Response>, HttpError> {
    let mut s = connect(addr)?;
    s.set_read_timeout(None)?;
    send(&mut s, host_of(addr).0, "GET", path, None)?;
    let mut r = BufReader::new(s);
    let head = read_head(&mut r)?;
    if !(200..300).contains(&head.status) {
        let mut body = Vec::new();
        r.take(BODY_BYTES_MAX as u64).read_to_end(&mut body)?;
        return Ok(Some(Response {
            status: head.status,
            body,
        }));
    }
    let mut pending = Vec::new();
    loop {
        let chunk = if head.chunked {
            read_chunk(&mut r)?
        } else {
            let mut buf = vec![0; 8192];
            let n = r.read(&mut buf)?;
            buf.truncate(n);
            (n > 0).then_some(buf)
        };
        let Some(c) = chunk else { return Ok(None) };
        pending.extend_from_slice(&c);
        while let Some(i) = pending.iter().position(|&b| b == b'\n') {
            let l: Vec<u8> = pending.drain(..=i).collect();
            if !line(String::from_utf8_lossy(&l).trim_end_matches(['\r', '\n'])) {
                return Ok(None);
            }
        }
        if pending.len() > BODY_BYTES_MAX {
            return Err(HttpError::Malformed("event line too long".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_decode() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        let mut r = BufReader::new(&raw[..]);
        let h = read_head(&mut r).unwrap();
        assert!(h.chunked && h.status == 200);
        assert_eq!(read_chunk(&mut r).unwrap().unwrap(), b"abc");
        assert_eq!(read_chunk(&mut r).unwrap().unwrap(), b"de");
        assert!(read_chunk(&mut r).unwrap().is_none());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for raw in [
            &b"garbage\r\n\r\n"[..],
            b"HTTP/1.1 xx\r\n",
            b"",
            b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        ] {
            let mut r = BufReader::new(raw);
            assert!(read_head(&mut r).is_err());
        }
        let mut r = BufReader::new(&b"zz\r\n"[..]);
        assert!(read_chunk(&mut r).is_err());
    }
}
