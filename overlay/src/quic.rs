//! The QUIC driver: the same sans-io instances over `quinn`, mutual TLS.
//!
//! - [`Ca`]: a cluster certificate authority made with `rcgen`; it issues
//!   every instance an [`Identity`] (certificate and key). Both sides of a
//!   connection present a certificate the CA signed, or the handshake fails.
//! - [`endpoint`]: one QUIC endpoint per instance (its own UDP socket),
//!   server and client at once.
//! - [`spawn`]: one task per instance, like [`crate::udp::spawn`]. Each
//!   instance sends on connections it opens and receives on connections it
//!   accepts. A sealed envelope (the same as on UDP, so the sender's id is
//!   authenticated by the cluster key) travels as a QUIC datagram when it
//!   fits the path, otherwise on a unidirectional stream.
//!
//! Frames for a peer whose connection is still being set up wait in a
//! bounded queue ([`PENDING_MAX`]); beyond it they are dropped, as a lost
//! datagram would be (the protocols above re-send).
//!
//! Received envelopes pass the same per-peer checks as on UDP, with the
//! TLS identity in place of the source address: a connection is bound to
//! the instance its certificate is valid for (the certificate names the
//! instance, [`Ca::issue`]), and an envelope whose sender is another
//! instance is dropped ([`DropReason::IdentityMismatch`]; after
//! [`IDENTITY_MISMATCHES_MAX`] the connection is closed). Then the sender's
//! token bucket ([`crate::udp::PEER_DATAGRAMS_PER_S`]) is charged before
//! the envelope is opened. A stream is read up to [`STREAM_BYTES_MAX`] (one
//! datagram) and refused as `oversized` as soon as it passes it; at most
//! [`STREAMS_PER_PEER_MAX`] streams per connection are open at once. An
//! incoming connection must first prove its address with a QUIC Retry, so
//! spoofed Initials leave no handshake state behind.
//!
//! Instance names must be DNS names (letters, digits, `-`, `.`) for their
//! certificates to identify them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustc_hash::FxHashMap as HashMap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::sync::mpsc;

use crate::envelope::{DropReason, Held, Opener, Sealer, peek_header};
use crate::record::NodeId;
use crate::rng::Rng;
use crate::strategy::{Instance, MAX_DATAGRAM_BYTES, Time, Transmit};
use crate::udp::{
    Buffers, Handle, Limiter, Sealing, Shared, count_drop, monotonic_now, random_boot,
};
use std::collections::VecDeque;

/// The name every instance certificate carries and every client checks.
pub const SERVER_NAME: &str = "node.layercake";
/// ALPN protocol id.
pub const ALPN: &[u8] = b"layercake/1";
/// Frames queued per peer while its connection is being set up.
pub const PENDING_MAX: usize = 64;
/// Received envelopes queued for an instance before more are dropped.
pub const INBOX_MAX: usize = 4096;
/// Largest message accepted on a stream: one envelope, as on UDP. A
/// longer stream is refused as soon as it passes this, unbuffered.
pub const STREAM_BYTES_MAX: usize = MAX_DATAGRAM_BYTES;
/// Unidirectional streams a peer may have open on one connection at once.
pub const STREAMS_PER_PEER_MAX: u32 = 16;
/// Envelopes naming another sender than its certificate's instance after
/// which a connection is closed.
pub const IDENTITY_MISMATCHES_MAX: u32 = 4;

/// Errors setting up QUIC.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// Certificate generation or parsing failed.
    #[error("certificate: {0}")]
    Cert(String),
    /// TLS configuration was refused.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The socket could not be set up.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

fn cert_err(e: impl std::fmt::Display) -> QuicError {
    QuicError::Cert(e.to_string())
}

fn tls_err(e: impl std::fmt::Display) -> QuicError {
    QuicError::Tls(e.to_string())
}

/// A certificate and its private key.
pub struct Identity {
    /// The certificate, DER.
    pub cert: CertificateDer<'static>,
    /// The PKCS#8 private key, DER.
    pub key: Vec<u8>,
}

/// The cluster's certificate authority.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    cert: CertificateDer<'static>,
}

fn ca_params(cluster: &str) -> Result<CertificateParams, QuicError> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(
        DnType::CommonName,
        format!("layercake {cluster} cluster CA"),
    );
    Ok(p)
}

impl Ca {
    /// A new CA with a fresh ECDSA P-256 key.
    pub fn generate(cluster: &str) -> Result<Ca, QuicError> {
        let params = ca_params(cluster)?;
        let key = KeyPair::generate().map_err(cert_err)?;
        let cert = params.self_signed(&key).map_err(cert_err)?.der().clone();
        Ok(Ca { params, key, cert })
    }

    /// The CA's certificate and key, PEM.
    pub fn to_pem(&self) -> (String, String) {
        let cert = pem_block("CERTIFICATE", &self.cert);
        (cert, self.key.serialize_pem())
    }

    /// Loads a CA written by [`Ca::to_pem`] for the same cluster name.
    pub fn from_pem(cluster: &str, cert_pem: &str, key_pem: &str) -> Result<Ca, QuicError> {
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(cert_err)?;
        let key = KeyPair::from_pem(key_pem).map_err(cert_err)?;
        Ok(Ca {
            params: ca_params(cluster)?,
            key,
            cert,
        })
    }

    /// The CA certificate (what peers are checked against).
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// Issues an identity for the instance called `name`.
    pub fn issue(&self, name: &str) -> Result<Identity, QuicError> {
        let params = CertificateParams::new(vec![name.to_string(), SERVER_NAME.to_string()])
            .map_err(cert_err)?;
        let key = KeyPair::generate().map_err(cert_err)?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).map_err(cert_err)?;
        Ok(Identity {
            cert: cert.der().clone(),
            key: key.serialize_der(),
        })
    }
}

fn pem_block(label: &str, der: &[u8]) -> String {
    use std::fmt::Write;
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, &b| acc << 8 | b as u32) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        let _ = writeln!(out, "{}", std::str::from_utf8(line).expect("ascii"));
    }
    let _ = writeln!(out, "-----END {label}-----");
    out
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &CertificateDer<'static>) -> Result<Arc<rustls::RootCertStore>, QuicError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).map_err(tls_err)?;
    Ok(Arc::new(roots))
}

fn key_der(id: &Identity) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key.clone()))
}

fn server_config(
    ca: &CertificateDer<'static>,
    id: &Identity,
    streams: Streams,
) -> Result<quinn::ServerConfig, QuicError> {
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
            .build()
            .map_err(tls_err)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![id.cert.clone()], key_der(id))
        .map_err(tls_err)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicServerConfig::try_from(tls).map_err(tls_err)?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(quic));
    cfg.transport_config(transport(streams));
    Ok(cfg)
}

fn client_config(
    ca: &CertificateDer<'static>,
    id: &Identity,
    streams: Streams,
) -> Result<quinn::ClientConfig, QuicError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(vec![id.cert.clone()], key_der(id))
        .map_err(tls_err)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(tls_err)?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    cfg.transport_config(transport(streams));
    Ok(cfg)
}

/// Which streams a connection allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Streams {
    /// The overlay's envelopes: unidirectional streams only, at most
    /// [`STREAMS_PER_PEER_MAX`] open.
    Envelopes,
    /// Request and answer (the join): bidirectional streams only, at most
    /// [`REQUESTS_PER_PEER_MAX`] open.
    Requests,
}

/// Bidirectional streams a peer may have open at once on a request
/// endpoint ([`Streams::Requests`]).
pub const REQUESTS_PER_PEER_MAX: u32 = 4;

fn transport(streams: Streams) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    let (uni, bidi) = match streams {
        Streams::Envelopes => (STREAMS_PER_PEER_MAX, 0),
        Streams::Requests => (0, REQUESTS_PER_PEER_MAX),
    };
    t.max_concurrent_uni_streams(uni.into());
    t.max_concurrent_bidi_streams(bidi.into());
    t.max_idle_timeout(Some(Duration::from_secs(60).try_into().expect("in range")));
    Arc::new(t)
}

/// A QUIC endpoint for one instance's envelopes at `addr`, trusting `ca`.
pub fn endpoint(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    id: &Identity,
    buffers: Buffers,
) -> Result<quinn::Endpoint, QuicError> {
    endpoint_for(addr, ca, id, buffers, Streams::Envelopes)
}

/// A QUIC endpoint at `addr`, trusting `ca`, for `streams`.
pub fn endpoint_for(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    id: &Identity,
    buffers: Buffers,
    streams: Streams,
) -> Result<quinn::Endpoint, QuicError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_recv_buffer_size(buffers.recv_bytes)?;
    s.set_send_buffer_size(buffers.send_bytes)?;
    s.bind(&addr.into())?;
    let runtime = Arc::new(quinn::TokioRuntime);
    let mut ep = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config(ca, id, streams)?),
        s.into(),
        runtime,
    )?;
    ep.set_default_client_config(client_config(ca, id, streams)?);
    Ok(ep)
}

enum Peer {
    Connecting(Vec<Bytes>),
    Ready(quinn::Connection),
}

/// Outgoing connections of one endpoint: opened on first use, frames
/// queued (at most [`PENDING_MAX`]) while the handshake runs. Shared by
/// this driver and [`crate::dual`].
pub(crate) struct Links {
    ep: quinn::Endpoint,
    peers: HashMap<NodeId, Peer>,
    /// Finished handshakes: `(peer, connection or failure)`.
    pub(crate) done: mpsc::UnboundedReceiver<(NodeId, Option<quinn::Connection>)>,
    done_tx: mpsc::UnboundedSender<(NodeId, Option<quinn::Connection>)>,
}

impl Links {
    /// Outgoing connections of `ep`; incoming ones feed `inbox`, their
    /// peers' identities checked against `shared`'s names.
    pub(crate) fn new(
        ep: quinn::Endpoint,
        inbox: mpsc::Sender<Inbound>,
        shared: Arc<Shared>,
    ) -> Links {
        tokio::task::spawn_local(accept_loop(ep.clone(), inbox, shared));
        let (done_tx, done) = mpsc::unbounded_channel();
        Links {
            ep,
            peers: HashMap::default(),
            done,
            done_tx,
        }
    }

    /// Sends `bytes` to `to` at `addr`; false when it had to be dropped.
    pub(crate) fn send(&mut self, to: NodeId, addr: SocketAddr, bytes: Bytes) -> bool {
        match self.peers.get_mut(&to) {
            Some(Peer::Ready(conn)) if conn.close_reason().is_none() => {
                send_on(conn, bytes);
                true
            }
            Some(Peer::Connecting(q)) if q.len() < PENDING_MAX => {
                q.push(bytes);
                true
            }
            Some(Peer::Connecting(_)) => false,
            _ => self.connect(to, addr, bytes),
        }
    }

    fn connect(&mut self, to: NodeId, addr: SocketAddr, first: Bytes) -> bool {
        let Ok(connecting) = self.ep.connect(addr, SERVER_NAME) else {
            return false;
        };
        self.peers.insert(to, Peer::Connecting(vec![first]));
        let done = self.done_tx.clone();
        tokio::task::spawn_local(async move {
            let _ = done.send((to, connecting.await.ok()));
        });
        true
    }

    /// A handshake finished: flushes the queue. Returns the frames lost
    /// (the handshake failed).
    pub(crate) fn connected(&mut self, peer: NodeId, conn: Option<quinn::Connection>) -> u64 {
        let Some(Peer::Connecting(q)) = self.peers.remove(&peer) else {
            return 0;
        };
        match conn {
            Some(conn) => {
                for b in q {
                    send_on(&conn, b);
                }
                self.peers.insert(peer, Peer::Ready(conn));
                0
            }
            None => q.len() as u64,
        }
    }
}

/// Starts `inst` on `ep` in the current `LocalSet`, with a fresh envelope
/// boot.
///
/// # Errors
/// If the operating system has no random source
/// ([`crate::udp::random_boot`]).
pub fn spawn<I: Instance + 'static>(
    inst: I,
    ep: quinn::Endpoint,
    shared: Arc<Shared>,
) -> std::io::Result<Handle<I>> {
    let boot = random_boot()?;
    let h = Handle::new(inst);
    let me = h.inner.borrow().id();
    let (inbox_tx, inbox) = mpsc::channel(INBOX_MAX);
    let task = Task {
        h: h.clone(),
        held: Held::default(),
        retry: VecDeque::new(),
        links: Links::new(ep, inbox_tx, shared.clone()),
        inbox,
        limiter: Limiter::default(),
        sealer: Sealer::new(me, boot),
        opener: Opener::new(me, boot).with_senders(shared.addrs.len() as u32),
        rng: Rng::new(shared.epoch ^ me as u64),
        shared,
    };
    tokio::task::spawn_local(task.run());
    Ok(h)
}

/// An envelope received over QUIC, with the verdict of the checks made
/// where it was read (the connection's identity, the stream's length).
pub(crate) struct Inbound {
    /// The envelope.
    pub(crate) data: Bytes,
    /// `Err` if it must be dropped, and why (the instance counts it).
    pub(crate) verdict: Result<(), DropReason>,
}

/// What a connection's certificate proves: the instance it is bound to,
/// once an envelope named an instance the certificate is valid for.
pub(crate) struct PeerCert {
    cert: CertificateDer<'static>,
    bound: Option<NodeId>,
    mismatches: u32,
}

impl PeerCert {
    /// A connection whose peer presented `cert` (already checked against
    /// the cluster CA by the TLS handshake).
    pub(crate) fn new(cert: CertificateDer<'static>) -> PeerCert {
        PeerCert {
            cert,
            bound: None,
            mismatches: 0,
        }
    }

    /// Whether the envelope `d` may come from this connection: its sender
    /// is the instance the certificate names (`names` by id). The first
    /// match binds the connection; the certificate is only parsed until
    /// then.
    pub(crate) fn check(&mut self, names: &[String], d: &[u8]) -> Result<(), DropReason> {
        let h = peek_header(d)?;
        match self.bound {
            Some(b) if b == h.sender => return Ok(()),
            Some(_) => return Err(self.mismatch()),
            None => {}
        }
        let name = names
            .get(h.sender as usize)
            .ok_or(DropReason::UnknownSender)?;
        if !valid_for(&self.cert, name) {
            return Err(self.mismatch());
        }
        self.bound = Some(h.sender);
        Ok(())
    }

    fn mismatch(&mut self) -> DropReason {
        self.mismatches = self.mismatches.saturating_add(1);
        DropReason::IdentityMismatch
    }

    /// Whether the peer sent as others often enough to be cut off.
    pub(crate) fn exhausted(&self) -> bool {
        self.mismatches >= IDENTITY_MISMATCHES_MAX
    }
}

/// Whether `cert` (signed by the cluster CA) is valid for the DNS name
/// `name`; never for [`SERVER_NAME`], which every certificate carries.
fn valid_for(cert: &CertificateDer<'_>, name: &str) -> bool {
    if name.eq_ignore_ascii_case(SERVER_NAME) {
        return false;
    }
    let Ok(server_name) = ServerName::try_from(name) else {
        return false;
    };
    webpki::EndEntityCert::try_from(cert)
        .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&server_name).is_ok())
}

async fn accept_loop(ep: quinn::Endpoint, inbox: mpsc::Sender<Inbound>, shared: Arc<Shared>) {
    while let Some(incoming) = ep.accept().await {
        // A client proves its address (a Retry) before the endpoint keeps
        // any state for its handshake: spoofed Initials cost nothing.
        if !incoming.remote_address_validated() {
            if incoming.may_retry() {
                let _ = incoming.retry();
            } else {
                incoming.ignore();
            }
            continue;
        }
        let inbox = inbox.clone();
        let shared = shared.clone();
        tokio::task::spawn_local(async move {
            let Ok(conn) = incoming.await else {
                return;
            };
            let cert = conn
                .peer_identity()
                .and_then(|a| a.downcast::<Vec<CertificateDer<'static>>>().ok())
                .and_then(|v| v.first().cloned());
            match cert {
                Some(cert) => read_loop(conn, PeerCert::new(cert), inbox, shared).await,
                None => conn.close(1u32.into(), b"no certificate"),
            }
        });
    }
}

/// Forwards everything a connection carries into the instance's inbox,
/// with the verdict of the identity and length checks.
async fn read_loop(
    conn: quinn::Connection,
    mut peer: PeerCert,
    inbox: mpsc::Sender<Inbound>,
    shared: Arc<Shared>,
) {
    let (streams_tx, mut streams) =
        mpsc::channel::<Result<Bytes, DropReason>>(STREAMS_PER_PEER_MAX as usize);
    loop {
        let got = tokio::select! {
            d = conn.read_datagram() => match d {
                Ok(d) => Ok(d),
                Err(_) => return,
            },
            Some(m) = streams.recv() => m,
            s = conn.accept_uni() => match s {
                Ok(s) => {
                    tokio::task::spawn_local(read_stream(s, streams_tx.clone()));
                    continue;
                }
                Err(_) => return,
            },
        };
        let inbound = match got {
            Ok(data) => {
                let verdict = peer.check(&shared.names, &data);
                Inbound { data, verdict }
            }
            Err(reason) => Inbound {
                data: Bytes::new(),
                verdict: Err(reason),
            },
        };
        let _ = inbox.try_send(inbound);
        if peer.exhausted() {
            conn.close(2u32.into(), b"sender is not the certificate's instance");
            return;
        }
    }
}

/// Reads one stream of at most [`STREAM_BYTES_MAX`]; a longer one is
/// stopped as soon as it passes the bound.
async fn read_stream(mut s: quinn::RecvStream, out: mpsc::Sender<Result<Bytes, DropReason>>) {
    let m = match s.read_to_end(STREAM_BYTES_MAX).await {
        Ok(m) => Ok(Bytes::from(m)),
        Err(quinn::ReadToEndError::TooLong) => {
            let _ = s.stop(0u32.into());
            Err(DropReason::Oversized)
        }
        Err(_) => return,
    };
    let _ = out.send(m).await;
}

struct Task<I> {
    h: Handle<I>,
    /// Frames sent before the peer\'s boot was known, and those due again.
    held: Held,
    retry: VecDeque<Transmit>,
    links: Links,
    inbox: mpsc::Receiver<Inbound>,
    limiter: Limiter,
    sealer: Sealer,
    opener: Opener,
    rng: Rng,
    shared: Arc<Shared>,
}

impl<I: Instance> Task<I> {
    async fn run(mut self) {
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        let mut armed: Option<Time> = None;
        let mut tx = Vec::with_capacity(MAX_DATAGRAM_BYTES);
        loop {
            self.flush(&mut tx);
            let deadline = self.h.inner.borrow_mut().poll_timeout();
            if deadline != armed {
                armed = deadline;
                if let Some(d) = deadline {
                    let wait = d.saturating_sub(monotonic_now());
                    sleep.as_mut().reset(tokio::time::Instant::now() + wait);
                }
            }
            tokio::select! {
                biased;
                Some(d) = self.inbox.recv() => self.receive(&d),
                Some((peer, conn)) = self.links.done.recv() => {
                    let lost = self.links.connected(peer, conn);
                    self.h.traffic.borrow_mut().tx_errors += lost;
                }
                _ = &mut sleep, if armed.is_some() => {
                    armed = None;
                    self.h.inner.borrow_mut().handle_timeout(monotonic_now());
                }
                _ = self.h.wake.notified() => {}
            }
        }
    }

    fn receive(&mut self, inbound: &Inbound) {
        let d = &inbound.data[..];
        let checked = inbound
            .verdict
            .and_then(|()| self.limiter.check_quic(self.shared.addrs.len(), d));
        if let Err(reason) = checked {
            count_drop(&self.h, &mut self.opener, reason);
            return;
        }
        let from = self
            .h
            .deliver(&mut self.opener, &mut self.rng, &self.shared, d);
        crate::udp::release_after(&mut self.held, &mut self.retry, &self.opener, from, d);
        let mut out = Vec::new();
        while let Some((peer, echo)) = self.opener.poll_reply() {
            if self
                .sealer
                .seal_session(&self.shared.keys, peer, echo, &mut out)
                .is_ok()
            {
                self.send(peer, Bytes::copy_from_slice(&out));
            }
        }
    }

    fn flush(&mut self, tx: &mut Vec<u8>) {
        loop {
            let next = self.retry.pop_front();
            let Some(t) = next.or_else(|| self.h.inner.borrow_mut().poll_transmit()) else {
                return;
            };
            let mut sealing = Sealing {
                opener: &self.opener,
                held: &mut self.held,
                sealer: &mut self.sealer,
                keys: &self.shared.keys,
                traffic: &self.h.traffic,
            };
            if !sealing.seal(&t, tx) {
                continue;
            }
            let bytes = Bytes::copy_from_slice(tx);
            let mut c = self.h.traffic.borrow_mut();
            c.tx_datagrams += 1;
            c.tx_bytes += bytes.len() as u64;
            c.tx_max_bytes = c.tx_max_bytes.max(bytes.len());
            drop(c);
            self.send(t.to, bytes);
        }
    }

    fn send(&mut self, to: NodeId, bytes: Bytes) {
        let Some(&addr) = self.shared.addrs.get(to as usize) else {
            return;
        };
        if !self.links.send(to, addr, bytes) {
            self.h.traffic.borrow_mut().tx_errors += 1;
        }
    }
}

/// A QUIC datagram when it fits the path, else a unidirectional stream.
fn send_on(conn: &quinn::Connection, bytes: Bytes) {
    if conn.max_datagram_size().is_some_and(|m| bytes.len() <= m)
        && conn.send_datagram(bytes.clone()).is_ok()
    {
        return;
    }
    let conn = conn.clone();
    tokio::task::spawn_local(async move {
        if let Ok(mut s) = conn.open_uni().await {
            let _ = s.write_all(&bytes).await;
            let _ = s.finish();
        }
    });
}

#[cfg(test)]
mod tests;
