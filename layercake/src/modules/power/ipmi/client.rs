//! The async client: one UDP socket for every BMC, a dispatcher task that
//! routes replies, and RMCP+ sessions cached per BMC.
//!
//! - [`IpmiClient`]: the handle (cheap to clone; all clones share one
//!   socket). Each call takes the BMC's slot lock, then a permit from a
//!   semaphore of [`IN_FLIGHT_MAX`]: calls to one BMC run one at a time,
//!   calls to different BMCs concurrently, at most `IN_FLIGHT_MAX` at once.
//! - The dispatcher task reads every datagram and hands it to the call
//!   waiting on (peer address, session ID in the header) through a bounded
//!   queue of [`ROUTE_QUEUE_MAX`]; anything else is dropped and counted.
//!   In a session the header carries our console session ID; sessionless
//!   and session-setup replies carry 0, and the one call that owns the
//!   BMC's slot owns (peer, 0) meanwhile.
//! - A cached session is reused while it has been idle less than
//!   [`SESSION_IDLE_MAX`]; if it stays silent for one attempt it is
//!   assumed expired on the BMC and a new one is set up, for reads only: a
//!   chassis control is sent exactly once (no retransmission, no new
//!   session), and no answer is [`IpmiError::Unconfirmed`].

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{Mutex as AsyncMutex, Semaphore, mpsc};
use tokio::time::Instant;
use tracing::debug;

use super::crypto::{AES_BLOCK_BYTES, CipherSuite};
use super::error::{IpmiError, completion_code_name};
use super::rmcp::{self, IpmiResponse};
use super::session::{Handshake, Session};
use super::target::{ChassisControl, IpmiConfig, IpmiTarget, Privilege};

/// Calls in flight per client (each holds one permit from start to end).
pub const IN_FLIGHT_MAX: usize = 256;
/// Datagrams queued for one waiting call before more are dropped.
pub const ROUTE_QUEUE_MAX: usize = 8;
/// BMC slots (cached sessions) kept per client; idle ones are forgotten
/// beyond this.
pub const SESSIONS_MAX: usize = 65_536;
/// A cached session idle longer than this is replaced rather than reused
/// (BMCs expire idle sessions after about 60 s; ipmi_sim sooner).
pub const SESSION_IDLE_MAX: Duration = Duration::from_secs(20);
/// The largest datagram the dispatcher reads (IPMI LAN replies are small).
const RECV_BYTES_MAX: usize = 2048;
/// Kernel socket buffers asked for, so bursts from thousands of BMCs fit.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

const NETFN_CHASSIS: u8 = 0x00;
const NETFN_APP: u8 = 0x06;
const CMD_GET_CHASSIS_STATUS: u8 = 0x01;
const CMD_CHASSIS_CONTROL: u8 = 0x02;
const CMD_GET_CHANNEL_AUTH_CAPS: u8 = 0x38;
const CMD_SET_SESSION_PRIVILEGE: u8 = 0x3b;
const CMD_CLOSE_SESSION: u8 = 0x3c;
/// RAKP status "invalid integrity check value", sent in an aborting RAKP 3.
const RAKP_STATUS_BAD_ICV: u8 = 0x0f;

type RouteKey = (SocketAddr, u32);

/// The table the dispatcher routes by.
#[derive(Default)]
struct Routes {
    map: Mutex<HashMap<RouteKey, mpsc::Sender<Vec<u8>>>>,
    dropped: AtomicU64,
}

impl Routes {
    fn register(self: &Arc<Self>, key: RouteKey) -> Result<Route, IpmiError> {
        let (tx, rx) = mpsc::channel(ROUTE_QUEUE_MAX);
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.contains_key(&key) {
            return Err(IpmiError::Protocol(format!("route {key:?} already in use")));
        }
        map.insert(key, tx);
        Ok(Route {
            routes: Arc::clone(self),
            key,
            rx,
        })
    }

    fn in_use(&self, key: &RouteKey) -> bool {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.contains_key(key)
    }

    fn deliver(&self, key: RouteKey, d: &[u8]) {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let sent = map
            .get(&key)
            .is_some_and(|tx| tx.try_send(d.to_vec()).is_ok());
        if !sent {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A registered route; unregisters itself when dropped.
struct Route {
    routes: Arc<Routes>,
    key: RouteKey,
    rx: mpsc::Receiver<Vec<u8>>,
}

impl Drop for Route {
    fn drop(&mut self) {
        let mut map = self.routes.map.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&self.key);
    }
}

/// Who a cached session was set up for.
#[derive(Clone, PartialEq, Eq)]
struct Identity {
    user: String,
    password: String,
    privilege: Privilege,
    cipher_suite: u8,
}

impl Identity {
    fn of(t: &IpmiTarget) -> Identity {
        Identity {
            user: t.user.clone(),
            password: t.password.clone(),
            privilege: t.privilege,
            cipher_suite: t.cipher_suite,
        }
    }
}

struct Cached {
    session: Session,
    identity: Identity,
    last_used: Instant,
}

/// One BMC's state; its lock serialises the calls to that BMC.
#[derive(Default)]
struct Slot {
    cached: Option<Cached>,
}

struct Inner {
    socket: Arc<UdpSocket>,
    dual_stack: bool,
    routes: Arc<Routes>,
    slots: Mutex<HashMap<SocketAddr, Arc<AsyncMutex<Slot>>>>,
    permits: Semaphore,
    cfg: IpmiConfig,
    sessionless_rq_seq: AtomicU8,
    dispatcher: tokio::task::AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.dispatcher.abort();
    }
}

/// An IPMI v2.0 / RMCP+ client for many BMCs over one UDP socket.
///
/// Clones share the socket, the dispatcher and the session cache; every
/// method takes `&self` and may be called from many tasks at once. The
/// dispatcher task stops when the last clone is dropped (sessions left open
/// on BMCs then expire there; call [`IpmiClient::close`] to end one).
#[derive(Clone)]
pub struct IpmiClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for IpmiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpmiClient")
            .field("local_addr", &self.inner.socket.local_addr().ok())
            .finish_non_exhaustive()
    }
}

fn bind_socket() -> io::Result<(std::net::UdpSocket, bool)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let dual = (|| {
        let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_only_v6(false)?;
        s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)).into())?;
        Ok::<_, io::Error>(s)
    })();
    let (s, dual_stack) = match dual {
        Ok(s) => (s, true),
        Err(e) => {
            debug!(error = %e, "no dual-stack IPv6 socket; binding 0.0.0.0:0");
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into())?;
            (s, false)
        }
    };
    // Larger buffers are a wish, not a requirement (limits may cap them).
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    s.set_nonblocking(true)?;
    Ok((s.into(), dual_stack))
}

/// The form addresses take in keys: IPv4-mapped IPv6 turned back into IPv4.
fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => a,
        },
        SocketAddr::V4(_) => a,
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], IpmiError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| IpmiError::Io(io::Error::other(e.to_string())))?;
    Ok(b)
}

async fn dispatch(socket: Arc<UdpSocket>, routes: Arc<Routes>) {
    let mut buf = vec![0u8; RECV_BYTES_MAX];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let d = buf.get(..n).unwrap_or_default();
                match rmcp::route_session_id(d) {
                    Some(sid) => routes.deliver((canonical(from), sid), d),
                    None => {
                        routes.dropped.fetch_add(1, Ordering::Relaxed);
                        debug!(%from, bytes = n, "dropped an unroutable datagram");
                    }
                }
            }
            Err(e) => {
                // Transient (e.g. ICMP reported on some platforms): pause so
                // a persistent error cannot spin the task.
                debug!(error = %e, "IPMI socket receive error");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Whether a command may be sent more than once (retransmitted, or again
/// in a new session after a silent one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resend {
    /// A read: repeating it changes nothing.
    Yes,
    /// A command the BMC acts on: sent once, whatever happens.
    No,
}

fn cc_error(what: &str, cc: u8) -> IpmiError {
    let msg = format!(
        "{what}: completion code 0x{cc:02x} ({})",
        completion_code_name(cc)
    );
    match cc {
        0xd4 => IpmiError::AuthRefused(msg),
        0xc1 | 0xcc | 0xd5 | 0xd6 => IpmiError::Unsupported(msg),
        _ => IpmiError::Protocol(msg),
    }
}

fn step_name(netfn: u8, cmd: u8) -> &'static str {
    match (netfn, cmd) {
        (NETFN_CHASSIS, CMD_GET_CHASSIS_STATUS) => "get chassis status",
        (NETFN_CHASSIS, CMD_CHASSIS_CONTROL) => "chassis control",
        (NETFN_APP, CMD_SET_SESSION_PRIVILEGE) => "set session privilege level",
        (NETFN_APP, CMD_CLOSE_SESSION) => "close session",
        _ => "IPMI command",
    }
}

impl IpmiClient {
    /// Binds the client's socket (`[::]:0` dual-stack, or `0.0.0.0:0` where
    /// IPv6 is unavailable) and starts the dispatcher task. Must be called
    /// within a tokio runtime.
    pub async fn bind(cfg: IpmiConfig) -> Result<IpmiClient, IpmiError> {
        let (std_socket, dual_stack) = bind_socket()?;
        let socket = Arc::new(UdpSocket::from_std(std_socket)?);
        let routes = Arc::new(Routes::default());
        let task = tokio::spawn(dispatch(Arc::clone(&socket), Arc::clone(&routes)));
        debug!(local = ?socket.local_addr().ok(), dual_stack, "IPMI client bound");
        Ok(IpmiClient {
            inner: Arc::new(Inner {
                socket,
                dual_stack,
                routes,
                slots: Mutex::new(HashMap::new()),
                permits: Semaphore::new(IN_FLIGHT_MAX),
                cfg,
                sessionless_rq_seq: AtomicU8::new(0),
                dispatcher: task.abort_handle(),
            }),
        })
    }

    /// The local address of the client's socket.
    pub fn local_addr(&self) -> Result<SocketAddr, IpmiError> {
        Ok(self.inner.socket.local_addr()?)
    }

    /// Datagrams received that no call was waiting for (late replies to
    /// retransmissions, strangers, garbage).
    pub fn dropped_datagrams(&self) -> u64 {
        self.inner.routes.dropped.load(Ordering::Relaxed)
    }

    /// Whether the chassis power is on (Get Chassis Status, NetFn chassis
    /// 0x00, command 0x01, bit 0 of "current power state").
    ///
    /// # Cancel safety
    /// Cancelling drops the call; the cached session stays usable.
    pub async fn power_is_on(&self, t: &IpmiTarget) -> Result<bool, IpmiError> {
        let r = self
            .command(t, NETFN_CHASSIS, CMD_GET_CHASSIS_STATUS, &[], Resend::Yes)
            .await?;
        if r.cc != 0 {
            return Err(cc_error("get chassis status", r.cc));
        }
        let state = r
            .data
            .first()
            .ok_or_else(|| IpmiError::Protocol("get chassis status: empty response".into()))?;
        Ok(state & 0x01 != 0)
    }

    /// Sends a Chassis Control command (NetFn chassis 0x00, command 0x02).
    /// A BMC that rejects the action as invalid (e.g. no soft shutdown)
    /// yields `Unsupported`.
    ///
    /// The command is sent once: no retransmission, no new session after a
    /// silent one, since the BMC may have acted on a request whose answer
    /// was lost (a second cycle or reset would hit the machine again). No
    /// answer is [`IpmiError::Unconfirmed`]; the caller reads the power
    /// state and decides (`power::Backend::command`).
    ///
    /// # Cancel safety
    /// Cancelling after the request left may still let the BMC act on it.
    pub async fn chassis_control(
        &self,
        t: &IpmiTarget,
        c: ChassisControl,
    ) -> Result<(), IpmiError> {
        let r = self
            .command(
                t,
                NETFN_CHASSIS,
                CMD_CHASSIS_CONTROL,
                &[c.code()],
                Resend::No,
            )
            .await?;
        if r.cc != 0 {
            return Err(cc_error(&format!("chassis control {c:?}"), r.cc));
        }
        Ok(())
    }

    /// Closes the cached session with the target's BMC, if any (Close
    /// Session, one attempt, errors ignored) and forgets it; the next call
    /// to that BMC sets up a new session.
    pub async fn close(&self, t: &IpmiTarget) {
        let addr = canonical(t.addr);
        let slot = {
            let slots = self.inner.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.get(&addr).cloned()
        };
        let Some(slot) = slot else { return };
        let mut slot = slot.lock().await;
        if let Some(c) = slot.cached.take() {
            self.close_cached(addr, c).await;
        }
    }

    /// Sends Close Session for a cached session once and forgets it.
    async fn close_without_waiting(&self, addr: SocketAddr, mut c: Cached) {
        let s = &mut c.session;
        let data = s.bmc_sid.to_le_bytes();
        let msg = rmcp::encode_request(NETFN_APP, CMD_CLOSE_SESSION, s.next_rq_seq(), &data);
        let Ok(iv) = random_bytes::<AES_BLOCK_BYTES>() else {
            return;
        };
        let seq = s.next_out_seq();
        let pkt = rmcp::encode_v2(rmcp::PAYLOAD_IPMI, s.bmc_sid, seq, &msg, Some(&s.keys), &iv);
        let _ = self.send(addr, &pkt).await;
    }

    /// Sends Close Session for a cached session (one attempt, errors
    /// ignored).
    async fn close_cached(&self, addr: SocketAddr, mut c: Cached) {
        let Ok(mut route) = self.inner.routes.register((addr, c.session.console_sid)) else {
            return;
        };
        let data = c.session.bmc_sid.to_le_bytes();
        let r = self
            .session_command(
                addr,
                &mut route,
                &mut c.session,
                NETFN_APP,
                CMD_CLOSE_SESSION,
                &data,
                1,
            )
            .await;
        debug!(%addr, ok = r.as_ref().is_ok_and(|r| r.cc == 0), "closed IPMI session");
    }

    /// Runs one command in the target's session, setting one up first if
    /// there is none (or the cached one is stale or silent). With
    /// [`Resend::No`] the request is sent exactly once.
    async fn command(
        &self,
        t: &IpmiTarget,
        netfn: u8,
        cmd: u8,
        data: &[u8],
        resend: Resend,
    ) -> Result<IpmiResponse, IpmiError> {
        let addr = canonical(t.addr);
        let identity = Identity::of(t);
        let slot = self.slot(addr);
        let mut slot = slot.lock().await;
        // After the slot lock: calls queued on one BMC hold no permits.
        let _permit = self
            .inner
            .permits
            .acquire()
            .await
            .map_err(|_| IpmiError::Protocol("client shut down".into()))?;
        let fresh = |c: &Cached| c.identity == identity && c.last_used.elapsed() < SESSION_IDLE_MAX;
        let mut silent = false;
        if let Some(c) = slot.cached.as_mut().filter(|c| fresh(c)) {
            let mut route = self.inner.routes.register((addr, c.session.console_sid))?;
            let attempt = self
                .session_command(addr, &mut route, &mut c.session, netfn, cmd, data, 1)
                .await;
            match attempt {
                Ok(r) => {
                    c.last_used = Instant::now();
                    return Ok(r);
                }
                Err(IpmiError::Timeout { step, .. }) if resend == Resend::No => {
                    slot.cached = None;
                    return Err(IpmiError::Unconfirmed { addr, step });
                }
                Err(IpmiError::Timeout { .. }) => {
                    debug!(%addr, "cached IPMI session silent; setting up a new one");
                    silent = true;
                }
                Err(e) => {
                    slot.cached = None;
                    return Err(e);
                }
            }
        }
        if let Some(old) = slot.cached.take().filter(|_| !silent) {
            // Replaced for its age or for another user, privilege or suite:
            // end it politely rather than leave it to the BMC's timeout, but
            // without waiting (the BMC may have expired it already).
            self.close_without_waiting(addr, old).await;
        }
        let (mut session, mut route) = self.establish(addr, t).await?;
        let attempts = match resend {
            Resend::Yes => self.inner.cfg.attempts(),
            Resend::No => 1,
        };
        let r = self
            .session_command(addr, &mut route, &mut session, netfn, cmd, data, attempts)
            .await
            .map_err(|e| match (e, resend) {
                (IpmiError::Timeout { step, .. }, Resend::No) => {
                    IpmiError::Unconfirmed { addr, step }
                }
                (e, _) => e,
            })?;
        slot.cached = Some(Cached {
            session,
            identity,
            last_used: Instant::now(),
        });
        Ok(r)
    }

    fn slot(&self, addr: SocketAddr) -> Arc<AsyncMutex<Slot>> {
        let mut slots = self.inner.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() >= SESSIONS_MAX && !slots.contains_key(&addr) {
            // Forget slots nobody is using; their BMCs expire the sessions.
            slots.retain(|_, s| Arc::strong_count(s) > 1);
        }
        Arc::clone(slots.entry(addr).or_default())
    }

    async fn send(&self, addr: SocketAddr, pkt: &[u8]) -> Result<(), IpmiError> {
        let to = match addr {
            SocketAddr::V4(v4) if self.inner.dual_stack => {
                SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            _ => addr,
        };
        self.inner.socket.send_to(pkt, to).await?;
        Ok(())
    }

    /// Sends what `make` builds and waits for a datagram `accept` takes
    /// (`None`: ignore it and keep waiting), retransmitting up to
    /// `attempts` times with growing timeouts.
    #[allow(clippy::too_many_arguments)]
    async fn exchange<S, T>(
        &self,
        addr: SocketAddr,
        route: &mut Route,
        step: &'static str,
        attempts: u32,
        state: &mut S,
        mut make: impl FnMut(&mut S) -> Result<Vec<u8>, IpmiError>,
        mut accept: impl FnMut(&mut S, &[u8]) -> Option<Result<T, IpmiError>>,
    ) -> Result<T, IpmiError> {
        assert!(attempts >= 1);
        for attempt in 0..attempts {
            let pkt = make(state)?;
            self.send(addr, &pkt).await?;
            let deadline = Instant::now() + self.inner.cfg.attempt_timeout(attempt);
            loop {
                match tokio::time::timeout_at(deadline, route.rx.recv()).await {
                    Ok(Some(d)) => {
                        if let Some(r) = accept(state, &d) {
                            return r;
                        }
                    }
                    Ok(None) => return Err(IpmiError::Protocol("reply route closed".into())),
                    Err(_) => break,
                }
            }
            debug!(%addr, step, attempt, "no answer from BMC");
        }
        Err(IpmiError::Timeout {
            addr,
            step,
            attempts,
        })
    }

    /// Sends one IPMI request inside an active session and returns the
    /// matching response (any completion code).
    #[allow(clippy::too_many_arguments)]
    async fn session_command(
        &self,
        addr: SocketAddr,
        route: &mut Route,
        s: &mut Session,
        netfn: u8,
        cmd: u8,
        data: &[u8],
        attempts: u32,
    ) -> Result<IpmiResponse, IpmiError> {
        let rq_seq = s.next_rq_seq();
        let msg = rmcp::encode_request(netfn, cmd, rq_seq, data);
        let make = |s: &mut Session| {
            let seq = s.next_out_seq();
            let iv = random_bytes::<AES_BLOCK_BYTES>()?;
            Ok(rmcp::encode_v2(
                rmcp::PAYLOAD_IPMI,
                s.bmc_sid,
                seq,
                &msg,
                Some(&s.keys),
                &iv,
            ))
        };
        let accept = |s: &mut Session, d: &[u8]| {
            let p = match rmcp::decode_v2(d, Some(&s.keys)) {
                Ok(p) => p,
                Err(e) => {
                    debug!(%addr, error = %e, "dropped a session datagram");
                    return None;
                }
            };
            if p.payload_type != rmcp::PAYLOAD_IPMI || p.session_id != s.console_sid {
                return None;
            }
            if !s.accept_in_seq(p.seq) {
                debug!(%addr, seq = p.seq, "dropped a replayed session datagram");
                return None;
            }
            let r = rmcp::decode_response(&p.payload).ok()?;
            let ours = r.rq_seq == rq_seq && r.cmd == cmd && r.netfn == netfn + 1;
            ours.then_some(Ok(r))
        };
        self.exchange(
            addr,
            route,
            step_name(netfn, cmd),
            attempts,
            s,
            make,
            accept,
        )
        .await
    }

    /// Sets up a session: Get Channel Authentication Capabilities, Open
    /// Session, RAKP 1 to 4, then Set Session Privilege Level. Returns the
    /// session and the route its replies arrive on.
    async fn establish(
        &self,
        addr: SocketAddr,
        t: &IpmiTarget,
    ) -> Result<(Session, Route), IpmiError> {
        let suite = CipherSuite::from_id(t.cipher_suite)?;
        // Sessionless and session-setup replies carry session ID 0: they
        // arrive on (addr, 0), which this call owns (the slot lock
        // serialises calls per BMC).
        let mut setup = self.inner.routes.register((addr, 0))?;
        self.check_rmcp_plus(addr, &mut setup, t.privilege).await?;
        let (sid, route) = self.fresh_route(addr)?;
        let mut hs = Handshake::new(
            suite,
            t.privilege,
            &t.user,
            &t.password,
            sid,
            random_bytes()?,
        )?;
        let attempts = self.inner.cfg.attempts();
        let open = hs.open_session_request();
        let reply = self
            .setup_exchange(
                addr,
                &mut setup,
                "open session",
                attempts,
                rmcp::PAYLOAD_OPEN_SESSION_REQUEST,
                &open,
                rmcp::PAYLOAD_OPEN_SESSION_RESPONSE,
            )
            .await?;
        let rakp1 = hs.handle_open_session_response(&reply)?;
        let reply = self
            .setup_exchange(
                addr,
                &mut setup,
                "RAKP 1",
                attempts,
                rmcp::PAYLOAD_RAKP1,
                &rakp1,
                rmcp::PAYLOAD_RAKP2,
            )
            .await?;
        let rakp3 = match hs.handle_rakp2(&reply) {
            Ok(m) => m,
            Err(e) => {
                // Tell the BMC so it frees the half-open session at once.
                let abort = hs.rakp3_error(RAKP_STATUS_BAD_ICV);
                let pkt = rmcp::encode_v2(rmcp::PAYLOAD_RAKP3, 0, 0, &abort, None, &[0; 16]);
                let _ = self.send(addr, &pkt).await;
                return Err(e);
            }
        };
        let reply = self
            .setup_exchange(
                addr,
                &mut setup,
                "RAKP 3",
                attempts,
                rmcp::PAYLOAD_RAKP3,
                &rakp3,
                rmcp::PAYLOAD_RAKP4,
            )
            .await?;
        drop(setup);
        let mut route = route;
        let mut session = hs.handle_rakp4(&reply)?;
        debug!(%addr, console_sid = sid, bmc_sid = session.bmc_sid, suite = suite.id, "IPMI session up");
        if t.privilege > Privilege::User {
            let level = [t.privilege.code()];
            let r = self
                .session_command(
                    addr,
                    &mut route,
                    &mut session,
                    NETFN_APP,
                    CMD_SET_SESSION_PRIVILEGE,
                    &level,
                    attempts,
                )
                .await?;
            if r.cc != 0 {
                let e = cc_error(
                    &format!("set session privilege level {:?}", t.privilege),
                    r.cc,
                );
                return Err(IpmiError::AuthRefused(e.to_string()));
            }
        }
        Ok((session, route))
    }

    /// Picks a random, unused, non-zero console session ID and registers
    /// its route.
    fn fresh_route(&self, addr: SocketAddr) -> Result<(u32, Route), IpmiError> {
        for _ in 0..16 {
            let sid = u32::from_le_bytes(random_bytes()?);
            if sid != 0 && !self.inner.routes.in_use(&(addr, sid)) {
                return Ok((sid, self.inner.routes.register((addr, sid))?));
            }
        }
        Err(IpmiError::Protocol("no free console session ID".into()))
    }

    /// One session-setup round trip: sends `payload` in clear as
    /// `out_type` and returns the payload of the first `in_type` reply.
    #[allow(clippy::too_many_arguments)]
    async fn setup_exchange(
        &self,
        addr: SocketAddr,
        route: &mut Route,
        step: &'static str,
        attempts: u32,
        out_type: u8,
        payload: &[u8],
        in_type: u8,
    ) -> Result<Vec<u8>, IpmiError> {
        let pkt = rmcp::encode_v2(out_type, 0, 0, payload, None, &[0; 16]);
        let make = |_: &mut ()| Ok(pkt.clone());
        let accept = |_: &mut (), d: &[u8]| match rmcp::decode_v2(d, None) {
            Ok(p) if p.payload_type == in_type => Some(Ok(p.payload)),
            Ok(_) => None,
            Err(e) => {
                debug!(%addr, step, error = %e, "dropped a session-setup datagram");
                None
            }
        };
        self.exchange(addr, route, step, attempts, &mut (), make, accept)
            .await
    }

    /// Get Channel Authentication Capabilities (sessionless, IPMI v1.5
    /// framing): the BMC must answer and support IPMI v2.0.
    async fn check_rmcp_plus(
        &self,
        addr: SocketAddr,
        route: &mut Route,
        privilege: Privilege,
    ) -> Result<(), IpmiError> {
        let rq_seq = self
            .inner
            .sessionless_rq_seq
            .fetch_add(1, Ordering::Relaxed)
            & 0x3f;
        // 0x8e: ask for IPMI v2.0 extended data, about this channel.
        let msg = rmcp::encode_request(
            NETFN_APP,
            CMD_GET_CHANNEL_AUTH_CAPS,
            rq_seq,
            &[0x8e, privilege.code()],
        );
        let pkt = rmcp::encode_v15_sessionless(&msg);
        let make = |_: &mut ()| Ok(pkt.clone());
        let accept = |_: &mut (), d: &[u8]| {
            let msg = rmcp::decode_v15_sessionless(d).ok()?;
            let r = rmcp::decode_response(&msg).ok()?;
            if r.rq_seq != rq_seq || r.cmd != CMD_GET_CHANNEL_AUTH_CAPS || r.netfn != NETFN_APP + 1
            {
                return None;
            }
            Some(auth_caps_verdict(&r))
        };
        let attempts = self.inner.cfg.attempts();
        self.exchange(
            addr,
            route,
            "get channel authentication capabilities",
            attempts,
            &mut (),
            make,
            accept,
        )
        .await
    }
}

/// Whether a Get Channel Authentication Capabilities reply allows RMCP+.
fn auth_caps_verdict(r: &IpmiResponse) -> Result<(), IpmiError> {
    if r.cc != 0 {
        let e = cc_error("get channel authentication capabilities", r.cc);
        return Err(IpmiError::Unsupported(format!("{e} (no IPMI v2.0?)")));
    }
    // data: channel, auth type support (bit 7: v2.0 data), status,
    // extended capabilities (bit 1: IPMI v2.0 connections), OEM (4).
    let v2_data = r.data.get(1).is_some_and(|b| b & 0x80 != 0);
    let v2 = r.data.get(3).is_some_and(|b| b & 0x02 != 0);
    if v2_data && v2 {
        Ok(())
    } else {
        Err(IpmiError::Unsupported(
            "the BMC does not offer IPMI v2.0 (RMCP+)".into(),
        ))
    }
}

#[cfg(test)]
pub(super) fn auth_caps_verdict_for_tests(r: &IpmiResponse) -> Result<(), IpmiError> {
    auth_caps_verdict(r)
}
