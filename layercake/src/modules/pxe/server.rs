//! The async shells: tokio tasks that own the sockets and feed the cores.
//!
//! - [`PxeServers::start`]: binds DHCP (UDP, every address, broadcast
//!   replies, optionally pinned to one interface), TFTP (UDP) and HTTP
//!   (TCP) and spawns one task each; returns the handle and the
//!   [`PxeEvent`] receiver.
//! - [`PxeServers::register`] / [`PxeServers::unregister`]: the boot
//!   table (the only writer; the tasks read it).
//! - [`PxeServers::counters`]: a snapshot of the counters that are also
//!   exported through `metrics` (see [`super::stats`]).
//!
//! Tasks: the DHCP task owns [`DhcpCore`] and answers one datagram at a
//! time (the kernel's socket buffer is the only queue). The TFTP task owns
//! the listening socket and [`TftpServer`]; each accepted transfer gets
//! its own socket (its transfer id) and task, at most [`TRANSFERS_MAX`] at
//! once (a semaphore; beyond it an ERROR "busy"). The HTTP task is
//! `axum::serve`; file bodies are bounded by
//! [`super::http::FILE_STREAMS_MAX`] (connections themselves are not: put
//! the boot network behind the sub-parent, not on a public interface).
//! Dropping the handle (or [`PxeServers::shutdown`]) aborts every task,
//! transfers included; HTTP bodies in flight end with their connection.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};

use super::dhcp::{self, BootFiles, DhcpConfig, DhcpCore, DhcpEvent, ScriptKey};
use super::event::{EventSink, PxeEvent};
use super::files::FileRoot;
use super::http::{FILE_STREAMS_MAX, HttpBoot, router};
use super::identity::{Identities, NeighbourCheck};
use super::registry::{Mac, NodeBoot, Registry, RegistryError};
use super::script::{BootParams, ScriptTemplate};
use super::stats::{PxeCounters, PxeStats};
use super::tftp::{
    self, Accept, Status, TRANSFERS_MAX, TftpLimits, TftpResult, TftpServer, Transfer,
};
use super::tftp_packet::{self, ErrorCode};

/// Pause after a socket error before reading again, so a persistent error
/// cannot spin a core.
const SOCKET_ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// Everything the servers need.
#[derive(Clone, Debug)]
pub struct PxeConfig {
    /// This instance's address on the boot network: DHCP server id,
    /// TFTP next-server, the host of every URL; TFTP and HTTP bind it.
    pub server_ip: Ipv4Addr,
    /// The interface the boot network is on. Pins the DHCP socket to it
    /// (`SO_BINDTODEVICE`), which broadcast replies need when the host
    /// has several interfaces or no default route. `None`: any.
    pub interface: Option<String>,
    /// DHCP port (67; tests use another).
    pub dhcp_port: u16,
    /// TFTP listening port (69; 0: any free port).
    pub tftp_port: u16,
    /// HTTP port (0: any free port).
    pub http_port: u16,
    /// Directory served by TFTP (the iPXE binaries).
    pub tftp_root: PathBuf,
    /// Directory served under `/boot/files/` (kernel, initramfs).
    pub http_root: PathBuf,
    /// The iPXE script template.
    pub template: ScriptTemplate,
    /// Kernel and initramfs names, shared kernel arguments (its
    /// `base_url` is filled in from `server_ip` and the bound HTTP port).
    pub kernel: String,
    /// See `kernel`.
    pub initrd: String,
    /// Kernel arguments for every node (`console=ttyS0`).
    pub kernel_args: Vec<String>,
    /// Boot files of firmware PXE clients.
    pub boot_files: BootFiles,
    /// DHCP lease time.
    pub lease_secs: u32,
    /// Whether script URLs name nodes by MAC or by name.
    pub script_key: ScriptKey,
    /// TFTP limits.
    pub tftp_limits: TftpLimits,
    /// Nodes' identity bundles (`certs issue --out DIR` output), served
    /// once per boot window (`None`: none served).
    pub identities: Option<PathBuf>,
    /// How an identity request's MAC is checked.
    pub neighbour_check: NeighbourCheck,
}

impl PxeConfig {
    /// Standard ports (67, 69, 8080), layer-0 defaults, one root for
    /// TFTP and HTTP files.
    pub fn new(server_ip: Ipv4Addr, root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let params = BootParams::new(String::new());
        PxeConfig {
            server_ip,
            interface: None,
            dhcp_port: dhcp::SERVER_PORT,
            tftp_port: 69,
            http_port: 8080,
            tftp_root: root.clone(),
            http_root: root,
            template: ScriptTemplate::default(),
            kernel: params.kernel,
            initrd: params.initrd,
            kernel_args: params.kernel_args,
            boot_files: BootFiles::default(),
            lease_secs: 3600,
            script_key: ScriptKey::Mac,
            tftp_limits: TftpLimits::default(),
            identities: None,
            neighbour_check: NeighbourCheck::Arp,
        }
    }
}

/// Why the servers did not start. Nothing is left running.
#[derive(Debug, thiserror::Error)]
pub enum PxeError {
    /// A socket could not be bound (port in use, no permission for a port
    /// below 1024, no such interface).
    #[error("binding the {what} socket on {addr}: {source}")]
    Bind {
        /// Which server.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// A files root is missing or not a directory.
    #[error("files root {path}: {source}")]
    Root {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The running servers. Dropping it stops them.
#[derive(Debug)]
pub struct PxeServers {
    registry: Arc<RwLock<Registry>>,
    stats: Arc<PxeStats>,
    dhcp_addr: SocketAddr,
    tftp_addr: SocketAddr,
    http_addr: SocketAddr,
    identities: Option<Arc<Identities>>,
    tasks: Vec<JoinHandle<()>>,
}

impl PxeServers {
    /// Binds the three servers and starts their tasks (on the current
    /// tokio runtime). Events arrive on the returned receiver, at most
    /// [`super::event::EVENTS_MAX`] waiting.
    pub async fn start(config: PxeConfig) -> Result<(Self, mpsc::Receiver<PxeEvent>), PxeError> {
        let root = |path: &PathBuf| {
            FileRoot::new(path).map_err(|source| PxeError::Root {
                path: path.clone(),
                source,
            })
        };
        let tftp_root = root(&config.tftp_root)?;
        let http_root = root(&config.http_root)?;
        let ip = IpAddr::V4(config.server_ip);
        let dhcp_bind = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), config.dhcp_port);
        let dhcp_socket = bind_udp("DHCP", dhcp_bind, true, config.interface.as_deref()).await?;
        let tftp_socket =
            bind_udp("TFTP", SocketAddr::new(ip, config.tftp_port), false, None).await?;
        let http_bind = SocketAddr::new(ip, config.http_port);
        let http_listener = TcpListener::bind(http_bind)
            .await
            .map_err(|source| bind_error("HTTP", http_bind, source))?;
        let addr = |what, r: std::io::Result<SocketAddr>, fallback| {
            r.map_err(|source| bind_error(what, fallback, source))
        };
        let dhcp_addr = addr("DHCP", dhcp_socket.local_addr(), dhcp_bind)?;
        let tftp_addr = addr("TFTP", tftp_socket.local_addr(), dhcp_bind)?;
        let http_addr = addr("HTTP", http_listener.local_addr(), http_bind)?;

        let base_url = format!("http://{}:{}", config.server_ip, http_addr.port());
        let registry = Arc::new(RwLock::new(Registry::new()));
        let stats = Arc::new(PxeStats::new());
        let (events, rx) = EventSink::channel(stats.clone());
        let identities = config
            .identities
            .as_ref()
            .map(|dir| Arc::new(Identities::new(dir, config.neighbour_check)));
        let dhcp_core = DhcpCore::new(DhcpConfig {
            server_ip: config.server_ip,
            lease_secs: config.lease_secs,
            boot_files: config.boot_files.clone(),
            script_base_url: base_url.clone(),
            script_key: config.script_key,
        });
        let http = HttpBoot {
            registry: registry.clone(),
            files: http_root,
            template: Arc::new(config.template.clone()),
            params: Arc::new(BootParams {
                base_url,
                kernel: config.kernel.clone(),
                initrd: config.initrd.clone(),
                kernel_args: config.kernel_args.clone(),
            }),
            stats: stats.clone(),
            events: events.clone(),
            streams: Arc::new(Semaphore::new(FILE_STREAMS_MAX)),
            identities: identities.clone(),
        };
        let epoch = Instant::now();
        let dhcp_task = DhcpTask {
            socket: dhcp_socket,
            core: dhcp_core,
            registry: registry.clone(),
            stats: stats.clone(),
            events,
            epoch,
        };
        let tftp_task = TftpTask {
            socket: tftp_socket,
            server: TftpServer::new(config.tftp_limits),
            root: tftp_root,
            bind_ip: ip,
            stats: stats.clone(),
            permits: Arc::new(Semaphore::new(TRANSFERS_MAX)),
            epoch,
        };
        let service = router(http).into_make_service_with_connect_info::<SocketAddr>();
        let tasks = vec![
            tokio::spawn(dhcp_task.run()),
            tokio::spawn(tftp_task.run()),
            tokio::spawn(async move {
                if let Err(e) = axum::serve(http_listener, service).await {
                    tracing::error!("pxe http: server stopped: {e}");
                }
            }),
        ];
        tracing::info!(%dhcp_addr, %tftp_addr, %http_addr, "pxe: boot servers started");
        let servers = PxeServers {
            registry,
            stats,
            dhcp_addr,
            tftp_addr,
            http_addr,
            identities,
            tasks,
        };
        Ok((servers, rx))
    }

    /// Boots `mac` as `node` from now on (replacing its previous entry):
    /// its boot window opens (its identity may be served once again).
    /// Refused, table unchanged, when the entry is invalid or clashes.
    pub fn register(&self, mac: Mac, node: NodeBoot) -> Result<(), RegistryError> {
        let mut registry = match self.registry.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        registry.register(mac, node)?;
        if let Some(ids) = &self.identities {
            ids.open_window(mac);
        }
        Ok(())
    }

    /// Stops booting `mac`: DHCP ignores it and its script is a 404.
    pub fn unregister(&self, mac: Mac) -> Option<NodeBoot> {
        let mut registry = match self.registry.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        registry.unregister(mac)
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> PxeCounters {
        self.stats.snapshot()
    }

    /// The DHCP socket's address.
    pub fn dhcp_addr(&self) -> SocketAddr {
        self.dhcp_addr
    }

    /// The TFTP listening address.
    pub fn tftp_addr(&self) -> SocketAddr {
        self.tftp_addr
    }

    /// The HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Stops every task (the same as dropping the handle).
    pub fn shutdown(self) {}
}

impl Drop for PxeServers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn bind_error(what: &'static str, addr: SocketAddr, source: std::io::Error) -> PxeError {
    PxeError::Bind { what, addr, source }
}

async fn bind_udp(
    what: &'static str,
    addr: SocketAddr,
    broadcast: bool,
    interface: Option<&str>,
) -> Result<UdpSocket, PxeError> {
    let err = |source| bind_error(what, addr, source);
    let socket = UdpSocket::bind(addr).await.map_err(err)?;
    if broadcast {
        socket.set_broadcast(true).map_err(err)?;
    }
    if let Some(device) = interface {
        socket.bind_device(Some(device.as_bytes())).map_err(err)?;
    }
    Ok(socket)
}

/// The DHCP task: one datagram at a time through the core.
struct DhcpTask {
    socket: UdpSocket,
    core: DhcpCore,
    registry: Arc<RwLock<Registry>>,
    stats: Arc<PxeStats>,
    events: EventSink,
    epoch: Instant,
}

impl DhcpTask {
    async fn run(mut self) {
        // One byte more than the largest datagram, to see oversized ones.
        let mut buf = vec![0u8; dhcp::DATAGRAM_BYTES_MAX + 1];
        loop {
            let (n, from) = match self.socket.recv_from(&mut buf).await {
                Ok(received) => received,
                Err(e) => {
                    tracing::warn!("pxe dhcp: receive: {e}");
                    tokio::time::sleep(SOCKET_ERROR_BACKOFF).await;
                    continue;
                }
            };
            let SocketAddr::V4(source) = from else {
                continue;
            };
            let handled = {
                let registry = match self.registry.read() {
                    Ok(guard) => guard,
                    Err(poisoned) => poisoned.into_inner(),
                };
                self.core
                    .handle(self.epoch.elapsed(), &buf[..n], source, &registry)
            };
            self.stats.record_dhcp(handled.result);
            if let Some(reply) = handled.reply
                && let Err(e) = self.socket.send_to(&reply.bytes, reply.to).await
            {
                tracing::warn!(to = %reply.to, "pxe dhcp: send: {e}");
            }
            while let Some(DhcpEvent::Acked {
                mac,
                name,
                ip,
                client,
                ..
            }) = self.core.poll_event()
            {
                tracing::info!(%mac, %name, %ip, client = client.as_str(), "pxe dhcp: ACK");
                self.events.send(PxeEvent::Acked {
                    mac,
                    name,
                    ip,
                    client,
                });
            }
        }
    }
}

/// The TFTP listener: accepts requests, starts transfers.
struct TftpTask {
    socket: UdpSocket,
    server: TftpServer,
    root: FileRoot,
    bind_ip: IpAddr,
    stats: Arc<PxeStats>,
    permits: Arc<Semaphore>,
    epoch: Instant,
}

impl TftpTask {
    async fn run(self) {
        let mut buf = vec![0u8; tftp::DATAGRAM_BYTES_MAX + 1];
        // Dropped with this task, which aborts every transfer.
        let mut transfers = JoinSet::new();
        loop {
            let received = tokio::select! {
                r = self.socket.recv_from(&mut buf) => r,
                Some(_) = transfers.join_next(), if !transfers.is_empty() => continue,
            };
            let (n, peer) = match received {
                Ok(received) => received,
                Err(e) => {
                    tracing::warn!("pxe tftp: receive: {e}");
                    tokio::time::sleep(SOCKET_ERROR_BACKOFF).await;
                    continue;
                }
            };
            let now = self.epoch.elapsed();
            let accept = self
                .server
                .accept(now, &buf[..n], peer, |name, max| self.root.open(name, max));
            match accept {
                Accept::Start(transfer) => self.start(*transfer, peer, &mut transfers).await,
                Accept::Refuse { result, packet } => {
                    self.stats.record_tftp(result);
                    self.send(&packet, peer).await;
                }
                Accept::Drop(result) => self.stats.record_tftp(result),
            }
        }
    }

    async fn start(
        &self,
        transfer: Transfer<std::fs::File>,
        peer: SocketAddr,
        transfers: &mut JoinSet<()>,
    ) {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.stats.record_tftp(TftpResult::RefusedBusy);
            let packet = tftp_packet::encode_error(ErrorCode::Undefined, "server busy");
            self.send(&packet, peer).await;
            return;
        };
        // A new socket: its port is the server's transfer id (RFC 1350).
        let socket = match UdpSocket::bind(SocketAddr::new(self.bind_ip, 0)).await {
            Ok(socket) => socket,
            Err(e) => {
                tracing::warn!("pxe tftp: transfer socket: {e}");
                self.stats.record_tftp(TftpResult::ReadError);
                return;
            }
        };
        self.stats.record_tftp(TftpResult::Started);
        let run = TransferTask {
            socket,
            transfer,
            stats: self.stats.clone(),
            epoch: self.epoch,
            _permit: permit,
        };
        transfers.spawn(run.run());
    }

    async fn send(&self, packet: &[u8], peer: SocketAddr) {
        if let Err(e) = self.socket.send_to(packet, peer).await {
            tracing::debug!(%peer, "pxe tftp: send: {e}");
        }
    }
}

/// One transfer on its own socket.
struct TransferTask {
    socket: UdpSocket,
    transfer: Transfer<std::fs::File>,
    stats: Arc<PxeStats>,
    epoch: Instant,
    /// Held until the transfer ends (bounds concurrent transfers).
    _permit: OwnedSemaphorePermit,
}

impl TransferTask {
    async fn run(mut self) {
        let peer = self.transfer.peer();
        let mut buf = vec![0u8; tftp::DATAGRAM_BYTES_MAX + 1];
        loop {
            while let Some(tx) = self.transfer.poll_transmit() {
                if tx.data_bytes > 0 {
                    self.stats.record_tftp_bytes(tx.data_bytes);
                }
                if let Err(e) = self.socket.send_to(tx.bytes, peer).await {
                    tracing::debug!(%peer, "pxe tftp: send: {e}");
                }
            }
            match self.transfer.status() {
                Status::Running => {}
                Status::Completed => {
                    self.stats.record_tftp(TftpResult::Completed);
                    return;
                }
                Status::Failed(result) => {
                    self.stats.record_tftp(result);
                    return;
                }
            }
            let Some(deadline) = self.transfer.poll_timeout() else {
                return;
            };
            let wake = tokio::time::Instant::from_std(self.epoch + deadline);
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) if from == peer && n <= tftp::DATAGRAM_BYTES_MAX => {
                        self.transfer.handle_datagram(self.epoch.elapsed(), &buf[..n]);
                    }
                    Ok((_, from)) if from != peer => {
                        // RFC 1350: answer a stranger, leave the transfer be.
                        self.stats.record_tftp(TftpResult::UnknownTransferId);
                        let packet = tftp_packet::encode_error(
                            ErrorCode::UnknownTransferId,
                            "unknown transfer id",
                        );
                        let _ = self.socket.send_to(&packet, from).await;
                    }
                    Ok(_) => self.stats.record_tftp(TftpResult::IgnoredOversized),
                    Err(e) => {
                        tracing::debug!(%peer, "pxe tftp: receive: {e}");
                        tokio::time::sleep(SOCKET_ERROR_BACKOFF).await;
                    }
                },
                _ = tokio::time::sleep_until(wake) => {
                    self.transfer.handle_timeout(self.epoch.elapsed());
                }
            }
        }
    }
}
