//! Joining (phone-home) over QUIC with mutual TLS, and keyring updates.
//!
//! - The root, when it runs with `--pki`, serves [`serve`] on its topology
//!   address with the port plus [`JOIN_PORT_OFFSET`]. A client must present
//!   a certificate signed by the cluster CA (else the TLS handshake fails),
//!   name an instance of the topology other than the root, and its
//!   certificate must be valid for that name (checked with webpki). Then it
//!   gets the keyring ([`crate::daemon::keyring::WireRing`]) and its request, which
//!   lists the key ids it holds, is recorded as its acknowledgement.
//!   Every refusal is logged and counted in
//!   `kraken_join_refused_total{reason}` (`handshake`, `no_certificate`,
//!   `unknown_instance`, `name_mismatch`, `bad_request`, `busy`).
//! - Before a connection gets one of [`CONNECTIONS_MAX`] permits its
//!   client proves its address (a QUIC Retry), and it then has
//!   [`HANDSHAKE_TIMEOUT`] to finish the handshake; when every permit is
//!   taken a validated client is refused at once and retries.
//! - An instance started with `--pki` (or `--ca/--cert/--key`) calls
//!   [`join`] before it speaks the UDP overlay (retrying until the root
//!   answers), then [`poll`] keeps its ring equal to the root's.
//! - The keys travel only inside TLS 1.3 (QUIC); the server checks the
//!   client's certificate and the client checks the server's (it must be
//!   the root's: the name is the root's instance name, which must be a DNS
//!   name; there is no fallback to a name every certificate carries).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use overlay::envelope::KeyRing;
use overlay::quic::{self, Identity};
use overlay::udp::Buffers;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};

use crate::daemon::cluster::Cluster;
use crate::daemon::keyring::{KeyService, WireRing};
use crate::security::certs::Pki;

/// The join service listens on the root's port plus this (port + 1 is the
/// overlay's own QUIC endpoint in the dual driver, see `loadtest`).
pub const JOIN_PORT_OFFSET: u16 = 2;
/// Largest request or answer, bytes.
pub const MESSAGE_BYTES_MAX: usize = 16 << 10;
/// How long one join or poll exchange may take.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait between two join attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(5);
/// Join connections served at once; beyond it a validated client is
/// refused at once (it retries) rather than queued.
pub const CONNECTIONS_MAX: usize = 256;
/// How long a validated client may take to finish its handshake while it
/// holds a permit.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

const BUFFERS: Buffers = Buffers {
    recv_bytes: 1 << 20,
    send_bytes: 1 << 20,
};

/// What a joining instance sends.
#[derive(Serialize, Deserialize, Debug)]
struct Request {
    /// Its instance name (its certificate must be valid for it).
    name: String,
    /// Key ids it holds (empty on the first join).
    have: Vec<u8>,
    /// Its sending key id (0 before it has one).
    primary: u8,
}

/// The join address of the root at `addr`.
pub fn join_addr(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip(), addr.port().wrapping_add(JOIN_PORT_OFFSET))
}

fn refused(reason: &'static str, peer: SocketAddr, detail: &str) {
    metrics::counter!("kraken_join_refused_total", "reason" => reason).increment(1);
    tracing::warn!("join from {peer} refused ({reason}): {detail}");
}

/// Serves joins and keyring fetches on `ep` until the endpoint closes.
pub async fn serve(ep: quinn::Endpoint, keys: Arc<KeyService>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    for reason in [
        "handshake",
        "no_certificate",
        "unknown_instance",
        "name_mismatch",
    ] {
        metrics::counter!("kraken_join_refused_total", "reason" => reason).absolute(0);
    }
    while let Some(incoming) = ep.accept().await {
        // Address validation first: a client that cannot receive at the
        // address it sends from (spoofed Initials) never gets a permit.
        if !incoming.remote_address_validated() {
            if incoming.may_retry() {
                let _ = incoming.retry();
            } else {
                incoming.ignore();
            }
            continue;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics::counter!("kraken_join_refused_total", "reason" => "busy").increment(1);
            incoming.refuse();
            continue;
        };
        let keys = keys.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let peer = incoming.remote_address();
            let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return refused("handshake", peer, &e.to_string()),
                Err(_) => return refused("handshake", peer, "timed out"),
            };
            let _ = tokio::time::timeout(EXCHANGE_TIMEOUT, answer(&conn, &keys, peer)).await;
            // The client closes once it has read the answer.
            let _ = tokio::time::timeout(EXCHANGE_TIMEOUT, conn.closed()).await;
        });
    }
}

/// Checks one client and sends it the ring.
async fn answer(conn: &quinn::Connection, keys: &KeyService, peer: SocketAddr) {
    let cert = conn
        .peer_identity()
        .and_then(|a| a.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|v| v.first().cloned());
    let Some(cert) = cert else {
        refused("no_certificate", peer, "no client certificate");
        return conn.close(1u32.into(), b"no certificate");
    };
    let Ok((mut send, mut recv)) = conn.accept_bi().await else {
        return;
    };
    let req: Request = match recv.read_to_end(MESSAGE_BYTES_MAX).await {
        Ok(b) => match serde_json::from_slice(&b) {
            Ok(r) => r,
            Err(e) => {
                refused("bad_request", peer, &e.to_string());
                return conn.close(2u32.into(), b"bad request");
            }
        },
        Err(_) => return,
    };
    if !keys.knows(&req.name) {
        refused(
            "unknown_instance",
            peer,
            &format!("`{}` is not an instance of the topology", req.name),
        );
        return conn.close(3u32.into(), b"unknown instance");
    }
    if let Err(e) = valid_for(&cert, &req.name) {
        refused(
            "name_mismatch",
            peer,
            &format!("certificate is not for `{}`: {e}", req.name),
        );
        return conn.close(4u32.into(), b"certificate name mismatch");
    }
    keys.acknowledge(&req.name, req.have, req.primary);
    let ring = serde_json::to_vec(&keys.wire()).expect("a ring serialises");
    if send.write_all(&ring).await.is_ok() {
        let _ = send.finish();
        metrics::counter!("kraken_join_answered_total").increment(1);
    }
}

/// Ok if `cert` (already checked against the CA) names `name`.
fn valid_for(cert: &CertificateDer<'_>, name: &str) -> Result<(), String> {
    let server_name = ServerName::try_from(name).map_err(|e| e.to_string())?;
    let ee = webpki::EndEntityCert::try_from(cert).map_err(|e| e.to_string())?;
    ee.verify_is_valid_for_subject_name(&server_name)
        .map_err(|e| e.to_string())
}

/// A QUIC endpoint for the join service (server) or a client.
pub fn endpoint(addr: SocketAddr, pki: &Pki) -> Result<quinn::Endpoint> {
    let id = Identity {
        cert: pki.id.cert.clone(),
        key: pki.id.key.clone(),
    };
    quic::endpoint_for(addr, &pki.ca, &id, BUFFERS, quic::Streams::Requests)
        .with_context(|| format!("QUIC endpoint at {addr}"))
}

/// One exchange with the root: reports what `ring` holds, returns the
/// root's ring.
async fn fetch(
    ep: &quinn::Endpoint,
    c: &Cluster,
    me: &str,
    ring: Option<&KeyRing>,
) -> Result<WireRing> {
    let root = &c.flat.instances[0];
    // The root's certificate must be checked against the root's own name:
    // never fall back to the name every certificate of the CA carries.
    let name = server_name_of(&root.name)?;
    let exchange = async {
        let conn = ep.connect(join_addr(root.addr), name)?.await?;
        let req = Request {
            name: me.to_string(),
            have: ring.map_or_else(Vec::new, KeyRing::ids),
            primary: ring.map_or(0, KeyRing::primary),
        };
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(&serde_json::to_vec(&req)?).await?;
        send.finish()?;
        let answer = recv.read_to_end(MESSAGE_BYTES_MAX).await;
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                let why = conn.close_reason().map_or(e.to_string(), |r| r.to_string());
                return Err(anyhow!("the root refused: {why}"));
            }
        };
        conn.close(0u32.into(), b"done");
        let ring: WireRing = serde_json::from_slice(&answer).context("the root's answer")?;
        anyhow::Ok(ring)
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            anyhow!(
                "no answer from {} within {EXCHANGE_TIMEOUT:?}",
                join_addr(root.addr)
            )
        })?
}

/// The name a client checks the root's certificate against: the root's
/// instance name, which must be a DNS name (certificates name instances
/// as DNS names); never [`quic::SERVER_NAME`], which every certificate of
/// the cluster CA carries (issue 12, finding 11).
fn server_name_of(root: &str) -> Result<&str> {
    if root.eq_ignore_ascii_case(quic::SERVER_NAME) || ServerName::try_from(root).is_err() {
        return Err(anyhow!(
            "the root's name `{root}` is not a DNS name of its own, so its certificate \
             cannot be told from any other instance's: rename the root in the topology"
        ));
    }
    Ok(root)
}

/// Joins: fetches the ring from the root, retrying until it answers.
pub async fn join(ep: &quinn::Endpoint, c: &Cluster, me: &str) -> KeyRing {
    let mut wait = Duration::from_millis(250);
    loop {
        match fetch(ep, c, me, None).await.map(|w| w.to_ring()) {
            Ok(Ok(ring)) => {
                tracing::info!(
                    "joined: keyring of {} keys, primary {}",
                    ring.ids().len(),
                    ring.primary()
                );
                return ring;
            }
            Ok(Err(e)) => tracing::warn!("join: unusable keyring from the root: {e}"),
            Err(e) => tracing::warn!("join: {e:#} (retrying in {wait:?})"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RETRY_MAX);
    }
}

/// Keeps `ring` equal to the root's, fetching every `every`; after a
/// change it fetches again at once, so the root learns it quickly.
pub async fn poll(
    ep: quinn::Endpoint,
    c: Arc<Cluster>,
    me: String,
    mut ring: KeyRing,
    every: Duration,
) {
    loop {
        let changed = match fetch(&ep, &c, &me, Some(&ring)).await {
            Ok(w) => match w.apply(&mut ring) {
                Ok(ch) => ch,
                Err(e) => {
                    tracing::warn!("keyring from the root not applied: {e}");
                    false
                }
            },
            Err(e) => {
                tracing::debug!("keyring poll: {e:#}");
                false
            }
        };
        if changed {
            tracing::info!("keyring now {:?}, primary {}", ring.ids(), ring.primary());
            continue;
        }
        tokio::time::sleep(every).await;
    }
}

/// What [`keyring`] needs to know about the process.
pub struct Setup<'a> {
    /// The cluster.
    pub cluster: &'a Arc<Cluster>,
    /// The first hosted instance (the root when it is hosted).
    pub me: u32,
    /// The cluster key, if this process has one.
    pub key: Option<overlay::envelope::ClusterKey>,
    /// The instance's certificate, if it runs with `--pki`.
    pub pki: Option<&'a Pki>,
    /// How often a joined instance fetches the ring.
    pub poll: Duration,
}

/// The keyring a process starts with, and the root's [`KeyService`]:
/// a root with `--pki` loads its stored ring and serves joins; another
/// instance with `--pki` joins (until the root answers or a signal comes:
/// then `None`) and keeps polling; without `--pki`, the one cluster key.
pub async fn keyring(
    s: Setup<'_>,
    db: Option<&Arc<crate::daemon::persist::CfgDb>>,
    upload_ok: bool,
) -> Result<Option<(KeyRing, Option<Arc<KeyService>>)>> {
    let inst = &s.cluster.flat.instances[s.me as usize];
    match (s.pki, db) {
        (None, _) => {
            let key = s
                .key
                .context("no cluster key (the topology's key_file, or --pki)")?;
            Ok(Some((KeyRing::single(1, &key), None)))
        }
        (Some(pki), Some(db)) => {
            let names = s
                .cluster
                .flat
                .instances
                .iter()
                .skip(1)
                .map(|i| i.name.clone());
            let svc = KeyService::open(db.clone(), s.key, names.collect(), upload_ok)?;
            let svc = Arc::new(svc);
            let addr = join_addr(inst.addr);
            let ep = endpoint(addr, pki)?;
            tracing::info!("join service (QUIC, mutual TLS) on {addr}");
            tokio::spawn(serve(ep, svc.clone()));
            Ok(Some((svc.ring(), Some(svc))))
        }
        (Some(pki), None) => {
            let ep = endpoint(SocketAddr::new(inst.addr.ip(), 0), pki)?;
            let ring = tokio::select! {
                r = join(&ep, s.cluster, &inst.name) => r,
                r = crate::daemon::sys::wait_for_signal() => { r?; return Ok(None) }
            };
            let task = poll(
                ep,
                s.cluster.clone(),
                inst.name.clone(),
                ring.share(),
                s.poll,
            );
            tokio::task::spawn_local(task);
            Ok(Some((ring, None)))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use overlay::quic::Ca;

    use super::*;
    use crate::daemon::cluster::demo_topology;
    use crate::daemon::persist::CfgDb;

    fn pki(ca: &Ca, name: &str) -> Pki {
        Pki {
            ca: ca.cert().clone(),
            id: ca.issue(name).unwrap(),
        }
    }

    /// Issue 12, finding 5: a flood of Initials from an address that never
    /// answers (as a spoofed source would) takes no join permit, so a
    /// real join right after it is answered at once. On the old code each
    /// Initial took one of the 256 permits for up to 5 s before its
    /// handshake, and the join waited for them (4.1 s measured).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn finding5_unvalidated_initials_take_no_join_permit() {
        let port = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap().port() - 2
        };
        let t =
            demo_topology(2, 1, port, Duration::from_secs(1), topo::StrategyKind::Tree).unwrap();
        let c = Cluster::new(t).unwrap();
        let root = &c.flat.instances[0];
        let ca = Ca::generate(&c.topo.cluster).unwrap();
        let dir = tempdir();
        let db = Arc::new(CfgDb::open(&dir).unwrap());
        let names = c.flat.instances[1..]
            .iter()
            .map(|i| i.name.clone())
            .collect();
        let keys = Arc::new(KeyService::open(db, None, names, true).unwrap());
        let server = endpoint(join_addr(root.addr), &pki(&ca, &root.name)).unwrap();
        tokio::spawn(serve(server.clone(), keys));
        let member = c.flat.instances[1].name.clone();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        // Each client's first datagram is caught and sent on from a socket
        // that never reads: the server's answers go nowhere, like answers
        // to a spoofed source.
        let spoofed = tokio::net::UdpSocket::bind(any).await.unwrap();
        let mut buf = vec![0u8; 2048];
        let mut quiet = Vec::new();
        for _ in 0..CONNECTIONS_MAX + 144 {
            let catch = tokio::net::UdpSocket::bind(any).await.unwrap();
            let ep = endpoint(any, &pki(&ca, &member)).unwrap();
            let connecting = ep.connect(catch.local_addr().unwrap(), &root.name).unwrap();
            let (n, _) = catch.recv_from(&mut buf).await.unwrap();
            spoofed
                .send_to(&buf[..n], join_addr(root.addr))
                .await
                .unwrap();
            // Kept, so that nothing (a close) follows the first datagram.
            quiet.push((catch, ep, connecting));
            // Paced, so that the server's socket buffer does not drop them.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let t0 = Instant::now();
        let client = endpoint(any, &pki(&ca, &member)).unwrap();
        let ring = fetch(&client, &c, &member, None).await;
        assert!(ring.is_ok(), "join after the flood: {ring:?}");
        // Old code: about 4 s (the permits held until their 5 s timeout).
        let took = t0.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "join after the flood took {took:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Issue 12, finding 11: a root whose name is not a DNS name is not
    /// checked against the name every certificate carries.
    #[test]
    fn finding11_the_root_name_is_never_replaced_by_the_common_name() {
        assert_eq!(server_name_of("root").unwrap(), "root");
        assert!(server_name_of(quic::SERVER_NAME).is_err());
        assert!(server_name_of("bad name").is_err());
    }

    fn tempdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "lc-join-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
