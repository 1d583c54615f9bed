//! End to end: Debian's iPXE ROM, in a QEMU virtual machine (TCG), boots
//! from our DHCP, HTTP and TFTP servers on a bridge in a fresh network
//! namespace.
//!
//! The machine's ROM takes a DHCP lease from [`PxeServers`] (as a
//! registered MAC), fetches its iPXE script over HTTP, and the script
//! chains a second script over TFTP (`tftp://${next-server}/...`), so all
//! three servers are crossed. A DISCOVER from an unregistered MAC is sent
//! too and must be ignored and counted. The test prints the time from
//! QEMU's start to the lease and to the script fetch.
//!
//! Needs root (namespaces, a tap device) and Debian's `qemu-system-x86`
//! and `ipxe-qemu` packages; without them it fails naming what is
//! missing (`.ci/run` installs them). Run it alone with
//! `cargo test -p layercake --test pxe_servers -- --nocapture`.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Message, MessageType};
use dhcproto::{Encodable, Encoder};
use layercake::modules::pxe::dhcp::DhcpResult;
use layercake::modules::pxe::stats::HttpResult;
use layercake::modules::pxe::tftp::TftpResult;
use layercake::modules::pxe::{
    Mac, NodeBoot, PxeConfig, PxeCounters, PxeEvent, PxeServers, dhcp::ClientKind,
    script::ScriptTemplate,
};

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 10);
const MAC: Mac = Mac([0x52, 0x54, 0x00, 0x4c, 0x43, 0x01]);
const HTTP_PORT: u16 = 8080;
const ROM: &str = "/usr/lib/ipxe/qemu/pxe-virtio.rom";
/// The whole boot must be done by then (TCG is slow, but not this slow).
const BOOT_DEADLINE: Duration = Duration::from_secs(120);

/// The HTTP script: says who it is for, then chains the TFTP one.
const SCRIPT: &str = "#!ipxe\n\
echo LAYERCAKE-HTTP-SCRIPT {name} {ip}/{prefix}\n\
chain tftp://${{next-server}}/second.ipxe\n";

/// The TFTP script: a marker, then off (or back to the BIOS).
const SECOND: &str = "#!ipxe\necho LAYERCAKE-TFTP-SCRIPT\npoweroff || exit\n";

fn fail_without(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install Debian's {package} \
         (apt-get install -y --no-install-recommends qemu-system-x86 ipxe-qemu)"
    );
}

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with a bridge (our address) and a tap port for
/// QEMU; deleted (with its interfaces) on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn create() -> Netns {
        let name = format!("lcpxe{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        let n = ns.name.as_str();
        let server = format!("{SERVER_IP}/24");
        run(&["ip", "-n", n, "link", "set", "lo", "up"]);
        run(&["ip", "-n", n, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", n, "addr", "add", &server, "dev", "br0"]);
        run(&["ip", "-n", n, "link", "set", "br0", "up"]);
        run(&["ip", "-n", n, "tuntap", "add", "dev", "tap0", "mode", "tap"]);
        run(&["ip", "-n", n, "link", "set", "tap0", "master", "br0"]);
        run(&["ip", "-n", n, "link", "set", "tap0", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// What the server thread reports.
enum Report {
    Started,
    Event(PxeEvent, Instant),
    Counters(PxeCounters),
}

/// Runs the servers inside the namespace, on their own thread and
/// runtime (a socket belongs to the namespace of the thread that made it).
fn serve_in(ns: &str, root: PathBuf, tx: mpsc::Sender<Report>, stop: mpsc::Receiver<()>) {
    let netns = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    // SAFETY: setns on a valid namespace fd; it only changes this thread's
    // network namespace, which is what the sockets below must live in.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut config = PxeConfig::new(SERVER_IP, &root);
        config.interface = Some("br0".into());
        config.http_port = HTTP_PORT;
        config.template = ScriptTemplate::parse(SCRIPT).unwrap();
        let (servers, mut events) = PxeServers::start(config).await.unwrap();
        servers
            .register(MAC, NodeBoot::new("vm1", NODE_IP, 24))
            .unwrap();
        probe_unknown_mac().await;
        tx.send(Report::Started).unwrap();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                Some(event) = events.recv() => {
                    let _ = tx.send(Report::Event(event, Instant::now()));
                }
                _ = tick.tick() => {
                    if stop.try_recv().is_ok() || tx.send(Report::Counters(servers.counters())).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

/// A DISCOVER from a MAC nobody registered, to the server's port.
async fn probe_unknown_mac() {
    let stranger = [0x52, 0x54, 0x00, 0xde, 0xad, 0x01];
    let mut m = Message::new_with_id(
        7,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &stranger,
    );
    m.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Discover));
    let mut bytes = Vec::new();
    m.encode(&mut Encoder::new(&mut bytes)).unwrap();
    let socket = tokio::net::UdpSocket::bind(SocketAddr::new(SERVER_IP.into(), 0))
        .await
        .unwrap();
    socket
        .send_to(&bytes, SocketAddr::new(SERVER_IP.into(), 67))
        .await
        .unwrap();
}

/// QEMU booting from the network through Debian's iPXE ROM; killed on drop.
struct Vm {
    child: Child,
    console: PathBuf,
}

impl Vm {
    fn start(ns: &str, console: PathBuf) -> Vm {
        let mac = MAC.to_string();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "qemu-system-x86_64"])
            .args(["-machine", "pc,accel=tcg", "-m", "128", "-nographic"])
            .args(["-monitor", "none", "-no-reboot"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .args(["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"])
            .arg("-device")
            // Debian's pxe-virtio.rom is built for the modern (non-transitional)
            // device id; SeaBIOS skips it on a transitional device.
            .arg(format!(
                "virtio-net-pci,disable-legacy=on,netdev=n0,mac={mac},romfile={ROM}"
            ))
            .args(["-boot", "n"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting qemu-system-x86_64 (Debian package qemu-system-x86)");
        Vm { child, console }
    }

    fn console(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ipxe_rom_in_qemu_takes_a_lease_and_fetches_its_scripts() {
    assert_eq!(
        unsafe_free_euid(),
        0,
        "this test needs root (network namespaces, tap devices)"
    );
    fail_without("/usr/bin/qemu-system-x86_64", "qemu-system-x86");
    fail_without(ROM, "ipxe-qemu");

    let dir = std::env::temp_dir().join(format!("lc-pxe-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("second.ipxe"), SECOND).unwrap();
    let ns = Netns::create();

    let (tx, rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel();
    let name = ns.name.clone();
    let root = dir.clone();
    let server = std::thread::spawn(move || serve_in(&name, root, tx, stop_rx));
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(10)),
        Ok(Report::Started)
    ));

    let started = Instant::now();
    let vm = Vm::start(&ns.name, dir.join("console.log"));
    let mut acked = None;
    let mut fetched = None;
    let mut counters = PxeCounters::default();
    while started.elapsed() < BOOT_DEADLINE {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(Report::Event(
                PxeEvent::Acked {
                    mac, client, ip, ..
                },
                at,
            )) => {
                assert_eq!((mac, ip), (MAC, NODE_IP));
                eprintln!("DHCP ACK ({}) after {:?}", client.as_str(), at - started);
                if client == ClientKind::Ipxe {
                    acked.get_or_insert(at - started);
                }
            }
            Ok(Report::Event(PxeEvent::ScriptFetched { mac, peer, .. }, at)) => {
                assert_eq!((mac, peer.ip()), (MAC, NODE_IP.into()));
                eprintln!("script fetched after {:?}", at - started);
                fetched.get_or_insert(at - started);
            }
            Ok(Report::Counters(c)) => counters = c,
            Ok(Report::Started) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the server thread died"),
        }
        if fetched.is_some() && counters.tftp(TftpResult::Completed) >= 1 {
            break;
        }
    }
    let console = vm.console();
    drop(vm);
    eprintln!("console:\n{}", console.replace('\r', ""));
    let _ = stop_tx.send(());
    let _ = server.join();
    let _ = std::fs::remove_dir_all(&dir);

    let context = format!("counters: {counters:#?}\nconsole:\n{console}");
    let acked = acked.unwrap_or_else(|| panic!("no DHCP ACK for iPXE\n{context}"));
    let fetched = fetched.unwrap_or_else(|| panic!("the script was not fetched\n{context}"));
    assert!(counters.dhcp(DhcpResult::Offer) >= 1, "{context}");
    assert!(counters.dhcp(DhcpResult::Ack) >= 1, "{context}");
    assert_eq!(counters.dhcp(DhcpResult::IgnoredUnknownMac), 1, "{context}");
    assert!(counters.http(HttpResult::Script) >= 1, "{context}");
    assert!(counters.tftp(TftpResult::Completed) >= 1, "{context}");
    assert!(counters.tftp_bytes >= SECOND.len() as u64, "{context}");
    eprintln!(
        "pxe e2e (TCG): QEMU start -> iPXE DHCP ACK {acked:?}, -> script fetched {fetched:?}"
    );
}

/// The effective user id, read from /proc (no unsafe call needed).
fn unsafe_free_euid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX)
}
