//! The API's accept loop, for plain HTTP and HTTPS alike (rustls through
//! `tokio-rustls`, then hyper's HTTP/1.1 with the axum router). The TLS
//! settings are [`crate::security::tls`].
//!
//! Nobody authenticates before the first request, so a connection costs
//! the server what an anonymous client chooses; this module bounds it
//! (issue 12, finding 5):
//!
//! - at most [`CONNECTIONS_MAX`] connections at once ([`Slots`]); when
//!   every slot is taken, a new connection evicts the oldest one that has
//!   no request in flight (still in its handshake, or idle between
//!   requests), so idle connections cannot lock out a new client such as
//!   a `/api/v1/health` probe; when every slot serves a request, the new
//!   connection is closed;
//! - the TLS handshake within [`HANDSHAKE_TIMEOUT`], a request's headers
//!   within [`HEADER_TIMEOUT`] (hyper), its response started within
//!   [`REQUEST_TIMEOUT`] (else 408: a body dribbled in cannot hold a slot
//!   for ever), and a connection without a request in flight is closed
//!   after [`IDLE_TIMEOUT`] without a byte either way;
//! - everything counted in `kraken_api_connections_closed_total{reason}`.
//!
//! A slot is released whenever its connection's task ends, whatever ends
//! it (timeout, eviction, error, client close).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use http_body_util::BodyExt;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, watch};
use tower_service::Service;

/// How long a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's headers once started.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection without a request in flight may stay silent.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request may take until its response starts (a body sent
/// slowly included); an event stream's response starts at once.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Most API connections served at once.
pub const CONNECTIONS_MAX: usize = 1024;
/// How often a connection's watchdog looks at its idle time.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// One admitted connection's shared state.
pub struct Conn {
    id: u64,
    /// Requests in flight (until their response body ends).
    in_flight: AtomicUsize,
    /// Milliseconds since [`Slots`] was made, at the last byte either way.
    last_io_ms: AtomicU64,
    /// Woken to close the connection (eviction).
    kill: Notify,
}

/// The connection table: at most `max` connections, in accept order.
pub struct Slots {
    max: usize,
    base: Instant,
    next: AtomicU64,
    conns: Mutex<VecDeque<Arc<Conn>>>,
}

/// What [`Slots::admit`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// A free slot.
    Free,
    /// The oldest connection without a request in flight was evicted.
    Evicted,
}

impl Slots {
    /// A table of at most `max` connections.
    pub fn new(max: usize) -> Slots {
        assert!(max > 0, "at least one connection");
        Slots {
            max,
            base: Instant::now(),
            next: AtomicU64::new(0),
            conns: Mutex::new(VecDeque::with_capacity(max)),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Admits a new connection, evicting the oldest one without a request
    /// in flight when the table is full; `None` when every slot serves a
    /// request.
    pub fn admit(&self) -> Option<(Arc<Conn>, Admission)> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let mut how = Admission::Free;
        if conns.len() >= self.max {
            let idle = conns
                .iter()
                .position(|c| c.in_flight.load(Ordering::Acquire) == 0)?;
            if let Some(victim) = conns.remove(idle) {
                victim.kill.notify_one();
            }
            how = Admission::Evicted;
        }
        let conn = Arc::new(Conn {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            in_flight: AtomicUsize::new(0),
            last_io_ms: AtomicU64::new(self.now_ms()),
            kill: Notify::new(),
        });
        conns.push_back(conn.clone());
        Some((conn, how))
    }

    /// Frees `conn`'s slot (no-op once evicted).
    fn release(&self, conn: &Conn) {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = conns.iter().position(|c| c.id == conn.id) {
            conns.remove(i);
        }
    }

    /// Connections held now.
    pub fn len(&self) -> usize {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no connection is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when `conn` has had no request in flight and no byte either
    /// way for `idle`.
    fn idle_for(&self, conn: &Conn, idle: Duration) -> bool {
        let quiet = self
            .now_ms()
            .saturating_sub(conn.last_io_ms.load(Ordering::Relaxed));
        conn.in_flight.load(Ordering::Acquire) == 0 && u128::from(quiet) >= idle.as_millis()
    }
}

/// Counts a request in flight until dropped (with its response body).
struct InFlight(Arc<Conn>);

impl InFlight {
    fn new(conn: Arc<Conn>) -> InFlight {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(conn)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A stream that stamps its connection's last I/O time on every byte.
struct Watched<T> {
    inner: T,
    conn: Arc<Conn>,
    slots: Arc<Slots>,
}

impl<T> Watched<T> {
    fn stamp(&self, n: usize) {
        if n > 0 {
            self.conn
                .last_io_ms
                .store(self.slots.now_ms(), Ordering::Relaxed);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        self.stamp(n);
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = r {
            self.stamp(n);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn closed(reason: &'static str) {
    metrics::counter!("kraken_api_connections_closed_total", "reason" => reason).increment(1);
}

/// Serves `app` (over TLS with `tls`) until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<Arc<ServerConfig>>,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Slots::new(CONNECTIONS_MAX));
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("API accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        let Some((conn, how)) = slots.admit() else {
            closed("full");
            tracing::debug!("API: {peer} refused, every connection serves a request");
            continue;
        };
        if how == Admission::Evicted {
            closed("evicted");
        }
        let (acceptor, app, slots) = (acceptor.clone(), app.clone(), slots.clone());
        tokio::spawn(async move {
            let io = Watched {
                inner: tcp,
                conn: conn.clone(),
                slots: slots.clone(),
            };
            tokio::select! {
                () = conn.kill.notified() => {}
                () = watchdog(&slots, &conn) => closed("idle"),
                () = connection(io, acceptor, app, conn.clone(), peer) => {}
            }
            slots.release(&conn);
        });
    }
}

/// Returns once `conn` has been idle for [`IDLE_TIMEOUT`].
async fn watchdog(slots: &Slots, conn: &Conn) {
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        if slots.idle_for(conn, IDLE_TIMEOUT) {
            return;
        }
    }
}

/// One connection: the TLS handshake (if any), then HTTP/1.1.
async fn connection(
    io: Watched<tokio::net::TcpStream>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    conn: Arc<Conn>,
    peer: std::net::SocketAddr,
) {
    let Some(acceptor) = acceptor else {
        return http(io, app, conn, peer).await;
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
        Ok(Ok(s)) => http(s, app, conn, peer).await,
        Ok(Err(e)) => tracing::debug!("API TLS handshake with {peer}: {e}"),
        Err(_) => closed("handshake_timeout"),
    }
}

async fn http<I>(io: I, app: Router, conn: Arc<Conn>, peer: std::net::SocketAddr)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let mut app = app.clone();
        let busy = InFlight::new(conn.clone());
        async move {
            let resp =
                match tokio::time::timeout(REQUEST_TIMEOUT, app.call(req.map(Body::new))).await {
                    Ok(r) => r?,
                    Err(_) => {
                        closed("request_timeout");
                        let e = crate::daemon::control::ApiError {
                            status: 408,
                            code: "request_timeout",
                            message: format!(
                                "no response within {REQUEST_TIMEOUT:?} (a body sent too slowly?)"
                            ),
                        };
                        axum::response::IntoResponse::into_response(e)
                    }
                };
            // The request stays in flight until its body is sent (an
            // event stream stays in flight for as long as it runs).
            Ok::<_, std::convert::Infallible>(resp.map(move |b| {
                Body::new(b.map_frame(move |f| {
                    let _ = &busy;
                    f
                }))
            }))
        }
    });
    let io = hyper_util::rt::TokioIo::new(io);
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    if let Err(e) = b.serve_connection(io, svc).await {
        tracing::debug!("API connection from {peer}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12, finding 5: a full table evicts the oldest connection
    /// without a request in flight, never one that serves a request.
    #[test]
    fn finding5_a_full_table_evicts_the_oldest_idle_connection() {
        let s = Slots::new(3);
        let (a, _) = s.admit().unwrap();
        let (b, _) = s.admit().unwrap();
        let (c, how) = s.admit().unwrap();
        assert_eq!(how, Admission::Free);
        let busy = InFlight::new(a.clone());
        let (_d, how) = s.admit().unwrap();
        assert_eq!(how, Admission::Evicted);
        assert_eq!(s.len(), 3);
        let conns: Vec<u64> = s.conns.lock().unwrap().iter().map(|c| c.id).collect();
        assert!(conns.contains(&a.id) && !conns.contains(&b.id) && conns.contains(&c.id));
        let _c_busy = InFlight::new(c.clone());
        drop(busy);
        s.admit().unwrap();
        assert_eq!(s.len(), 3);
        let _all: Vec<_> = s
            .conns
            .lock()
            .unwrap()
            .iter()
            .map(|c| InFlight::new(c.clone()))
            .collect();
        assert!(s.admit().is_none(), "every slot serves a request");
        s.release(&c);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn idle_means_no_request_and_no_byte() {
        let s = Slots::new(2);
        let (a, _) = s.admit().unwrap();
        assert!(s.idle_for(&a, Duration::ZERO));
        assert!(!s.idle_for(&a, Duration::from_secs(60)));
        let busy = InFlight::new(a.clone());
        assert!(!s.idle_for(&a, Duration::ZERO));
        drop(busy);
        assert!(s.idle_for(&a, Duration::ZERO));
    }
}
