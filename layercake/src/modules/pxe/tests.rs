//! The boot table, path checks, script rendering, and the three servers on
//! loopback (real sockets): HTTP scripts and files, TFTP downloads, DHCP
//! datagrams counted, hostile requests refused and counted.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use proptest::prelude::*;

use super::dhcp::DhcpResult;
use super::files::{FileError, FileRoot, check_path};
use super::registry::{KERNEL_ARGS_MAX, NODES_MAX, prefix_mask};
use super::script::{BootParams, DEFAULT_TEMPLATE, ScriptTemplate, TemplateError, kernel_cmdline};
use super::stats::HttpResult;
use super::tftp::TftpResult;
use super::tftp_packet::{self as wire, Packet};
use super::*;

const MAC: Mac = Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]);

fn node() -> NodeBoot {
    let mut n = NodeBoot::new("vm1", Ipv4Addr::new(10, 0, 0, 11), 24);
    n.gateway = Some(Ipv4Addr::new(10, 0, 0, 1));
    n.parent = Some("10.0.0.1:7946".parse().unwrap());
    n.kernel_args = vec!["layercake.topology=http://10.0.0.1:8080/boot/files/topo.yaml".into()];
    n
}

/// A fresh directory under the system's temporary directory.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lc-pxe-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn macs_parse_with_colons_or_dashes_and_print_with_colons() {
    assert_eq!("52:54:00:12:34:56".parse::<Mac>(), Ok(MAC));
    assert_eq!("52-54-00-12-34-56".parse::<Mac>(), Ok(MAC));
    assert!("52:54:00:12:34:5G".parse::<Mac>().is_err());
    for bad in [
        "",
        "52:54:00:12:34",
        "52:54:00:12:34:56:78",
        "525400123456",
        "5:54:00:12:34:56",
    ] {
        assert!(bad.parse::<Mac>().is_err(), "{bad}");
    }
    assert_eq!(MAC.to_string(), "52:54:00:12:34:56");
}

#[test]
fn prefix_masks() {
    assert_eq!(prefix_mask(24), Ipv4Addr::new(255, 255, 255, 0));
    assert_eq!(prefix_mask(32), Ipv4Addr::BROADCAST);
    assert_eq!(prefix_mask(0), Ipv4Addr::UNSPECIFIED);
    assert_eq!(prefix_mask(33), Ipv4Addr::BROADCAST);
}

#[test]
fn the_registry_keeps_names_and_addresses_unique() {
    let mut r = Registry::new();
    r.register(MAC, node()).unwrap();
    let other = Mac([2, 0, 0, 0, 0, 1]);
    let clash = r.register(other, node());
    assert!(matches!(clash, Err(RegistryError::NameTaken { .. })));
    let mut same_ip = node();
    same_ip.name = "vm2".into();
    assert!(matches!(
        r.register(other, same_ip),
        Err(RegistryError::AddressTaken { .. })
    ));
    // Re-registering the same MAC replaces its entry and frees the old name.
    let mut moved = node();
    moved.name = "vm9".into();
    r.register(MAC, moved).unwrap();
    assert_eq!(r.len(), 1);
    assert!(r.by_name("vm1").is_none());
    assert_eq!(r.by_name("vm9").map(|(m, _)| m), Some(MAC));
    assert_eq!(r.unregister(MAC).map(|n| n.name), Some("vm9".into()));
    assert!(r.is_empty() && r.by_ip(Ipv4Addr::new(10, 0, 0, 11)).is_none());
}

#[test]
fn the_registry_refuses_values_that_could_break_a_script_line() {
    let mut r = Registry::new();
    let with = |f: &dyn Fn(&mut NodeBoot)| {
        let mut n = node();
        f(&mut n);
        n
    };
    for bad in [
        with(&|n| n.name = "vm1\nshell".into()),
        with(&|n| n.name = "".into()),
        with(&|n| n.name = "-x".into()),
        with(&|n| n.name = "a".repeat(64)),
        with(&|n| n.prefix = 33),
        with(&|n| n.prefix = 0),
        with(&|n| n.ip = Ipv4Addr::BROADCAST),
        with(&|n| n.kernel_args = vec!["a=b c".into()]),
        with(&|n| n.kernel_args = vec!["x=${secret}".into()]),
        with(&|n| n.kernel_args = vec!["=value".into()]),
        with(&|n| n.kernel_args = vec!["k=v".into(); KERNEL_ARGS_MAX + 1]),
    ] {
        assert!(r.register(MAC, bad.clone()).is_err(), "{bad:?}");
    }
    assert!(r.is_empty());
}

#[test]
fn the_registry_is_bounded() {
    let mut r = Registry::new();
    for i in 0..u32::try_from(NODES_MAX).unwrap() {
        let ip = Ipv4Addr::from(0x0a00_0001 + i);
        let [_, _, a, b] = i.to_be_bytes();
        r.register(
            Mac([2, 0, 0, 0, a, b]),
            NodeBoot::new(format!("n{i}"), ip, 8),
        )
        .unwrap();
    }
    let fresh = NodeBoot::new("fresh", Ipv4Addr::new(192, 168, 0, 1), 24);
    assert_eq!(r.register(MAC, fresh), Err(RegistryError::Full(NODES_MAX)));
}

#[test]
fn paths_are_checked_before_any_file_system_access() {
    for bad in [
        "",
        "/etc/passwd",
        "../x",
        "a/../../b",
        "a/..",
        "a\0b",
        "a\\b",
        "a\nb",
        &"x".repeat(300),
    ] {
        assert!(
            matches!(check_path(bad), Err(FileError::Refused(_))),
            "{bad:?}"
        );
    }
    assert_eq!(check_path("./a//b/./c").unwrap(), PathBuf::from("a/b/c"));
    assert!(check_path(".").is_err());
}

#[test]
fn files_are_served_from_the_root_only_and_links_out_are_refused() {
    let dir = temp_dir("root");
    let outside = temp_dir("outside");
    std::fs::write(dir.join("vmlinuz"), b"kernel").unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::fs::write(outside.join("secret"), b"secret").unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), dir.join("escape")).unwrap();
    std::os::unix::fs::symlink(dir.join("vmlinuz"), dir.join("sub/alias")).unwrap();
    let root = FileRoot::new(&dir).unwrap();
    let (_, len) = root.open("vmlinuz", 100).unwrap();
    assert_eq!(len, 6);
    assert!(
        root.open("sub/alias", 100).is_ok(),
        "a link inside the root is fine"
    );
    assert!(matches!(
        root.open("escape", 100),
        Err(FileError::OutsideRoot)
    ));
    assert!(matches!(root.open("sub", 100), Err(FileError::NotAFile)));
    assert!(matches!(root.open("nope", 100), Err(FileError::NotFound)));
    assert!(matches!(
        root.open("vmlinuz", 5),
        Err(FileError::TooLarge(6))
    ));
    assert!(matches!(
        root.open("../outside/secret", 100),
        Err(FileError::Refused(_))
    ));
    assert!(FileRoot::new(dir.join("vmlinuz")).is_err());
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&outside);
}

#[test]
fn the_default_script_boots_layer0_with_the_node_command_line() {
    let params = BootParams::new("http://10.0.0.1:8080");
    let script = ScriptTemplate::default().render(MAC, &node(), &params);
    assert!(script.starts_with("#!ipxe\n"));
    assert!(script.contains("kernel http://10.0.0.1:8080/boot/files/vmlinuz layercake.name=vm1 "));
    assert!(script.contains("\ninitrd http://10.0.0.1:8080/boot/files/initrd.img\nboot\n"));
    assert_eq!(
        kernel_cmdline(MAC, &node(), &params),
        "layercake.name=vm1 layercake.mac=52:54:00:12:34:56 layercake.ip=10.0.0.11/24 \
         layercake.gw=10.0.0.1 layercake.parent=10.0.0.1:7946 \
         layercake.server=http://10.0.0.1:8080 \
         layercake.topology=http://10.0.0.1:8080/boot/files/topo.yaml console=ttyS0"
    );
    assert_eq!(
        ScriptTemplate::parse(DEFAULT_TEMPLATE),
        Ok(ScriptTemplate::default())
    );
}

#[test]
fn templates_with_unknown_or_unbalanced_placeholders_are_refused() {
    assert_eq!(
        ScriptTemplate::parse("{nmae}"),
        Err(TemplateError::Unknown("nmae".into()))
    );
    assert_eq!(
        ScriptTemplate::parse("a {name"),
        Err(TemplateError::Unbalanced(2))
    );
    assert_eq!(
        ScriptTemplate::parse("a } b"),
        Err(TemplateError::Unbalanced(2))
    );
    let t = ScriptTemplate::parse("{{literal}} {netmask} {gateway}").unwrap();
    let out = t.render(MAC, &node(), &BootParams::new("http://s"));
    assert_eq!(out, "{literal} 255.255.255.0 10.0.0.1");
    let big = "x".repeat(super::script::TEMPLATE_BYTES_MAX + 1);
    assert!(matches!(
        ScriptTemplate::parse(&big),
        Err(TemplateError::TooLarge(_))
    ));
}

proptest! {
    /// Any template text parses or is refused, never panics; what parses
    /// renders.
    #[test]
    fn any_template_parses_or_is_refused(text in "[a-z{}\n ]{0,64}") {
        if let Ok(t) = ScriptTemplate::parse(&text) {
            let _ = t.render(MAC, &node(), &BootParams::new("http://s"));
        }
    }

    /// Any path is refused or stays relative without `..`.
    #[test]
    fn checked_paths_never_climb(path in "[a-z./\\\\]{0,24}") {
        if let Ok(p) = check_path(&path) {
            prop_assert!(p.is_relative());
            prop_assert!(p.components().all(|c| matches!(c, std::path::Component::Normal(_))));
        }
    }
}

/// The servers on loopback with ports chosen by the kernel, `root` served.
async fn servers(root: &std::path::Path) -> (PxeServers, tokio::sync::mpsc::Receiver<PxeEvent>) {
    let mut config = PxeConfig::new(Ipv4Addr::LOCALHOST, root);
    config.dhcp_port = 0;
    config.tftp_port = 0;
    config.http_port = 0;
    config.tftp_limits.timeout = Duration::from_millis(200);
    PxeServers::start(config).await.unwrap()
}

/// A GET with the path sent as is (a URL library would resolve `..`).
async fn raw_get(server: SocketAddr, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: boot\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let head = String::from_utf8_lossy(&response[..response.len().min(12)]).to_string();
    head[9..12].parse().unwrap()
}

async fn get(url: String) -> (u16, Vec<u8>) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn http_serves_scripts_and_files_refuses_traversal_and_counts() {
    let dir = temp_dir("http");
    std::fs::write(dir.join("vmlinuz"), vec![7u8; 200_000]).unwrap();
    let (servers, mut events) = servers(&dir).await;
    let mut local = NodeBoot::new("vm1", Ipv4Addr::LOCALHOST, 8);
    local.gateway = Some(Ipv4Addr::new(127, 0, 0, 254));
    servers.register(MAC, local).unwrap();
    let base = format!("http://{}", servers.http_addr());

    let (status, body) = get(format!("{base}/boot/52:54:00:12:34:56.ipxe")).await;
    assert_eq!(status, 200);
    let script = String::from_utf8(body).unwrap();
    assert!(script.contains("layercake.name=vm1"), "{script}");
    assert!(
        script.contains(&format!("kernel {base}/boot/files/vmlinuz ")),
        "{script}"
    );
    let (status, _) = get(format!("{base}/boot/vm1.ipxe")).await;
    assert_eq!(status, 200);
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap();
    assert!(
        matches!(event, Some(PxeEvent::ScriptFetched { mac: MAC, .. })),
        "{event:?}"
    );

    let (status, body) = get(format!("{base}/boot/files/vmlinuz")).await;
    assert_eq!((status, body.len()), (200, 200_000));
    for (path, code) in [
        ("/boot/files/../../etc/passwd", 403),
        ("/boot/files/%2e%2e/%2e%2e/etc/passwd", 403),
        ("/boot/files/%2fetc%2fpasswd", 403),
        ("/boot/files/nope", 404),
        ("/boot/52:54:00:00:00:00.ipxe", 404),
        ("/boot/vm1.txt", 404),
    ] {
        assert_eq!(raw_get(servers.http_addr(), path).await, code, "{path}");
    }
    let c = servers.counters();
    assert_eq!(c.http(HttpResult::Script), 2);
    assert_eq!(c.http(HttpResult::File), 1);
    assert!(c.http_bytes >= 200_000);
    assert!(c.http(HttpResult::Refused) >= 2, "{c:?}");
    assert_eq!(c.http(HttpResult::NotFound), 1);
    assert_eq!(c.http(HttpResult::UnknownNode), 1);
    assert_eq!(c.http(HttpResult::BadRequest), 1);
    servers.unregister(MAC);
    let (status, _) = get(format!("{base}/boot/vm1.ipxe")).await;
    assert_eq!(status, 404);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TFTP client: downloads `name` with `options`, returns the bytes.
async fn tftp_get(
    server: SocketAddr,
    name: &str,
    options: &[(&str, &str)],
) -> Result<Vec<u8>, String> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket
        .send_to(&wire::encode_rrq(name, "octet", options), server)
        .await
        .unwrap();
    let block_bytes = options
        .iter()
        .find(|(k, _)| *k == "blksize")
        .map_or(512, |(_, v)| v.parse::<usize>().unwrap());
    let mut got = Vec::new();
    let mut buf = vec![0u8; 2000];
    loop {
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
            .await
            .map_err(|_| "timeout".to_string())?
            .unwrap();
        match Packet::decode(&buf[..n]).map_err(|e| e.to_string())? {
            Packet::Oack(_) => {
                socket.send_to(&wire::encode_ack(0), from).await.unwrap();
            }
            Packet::Data { block, data } => {
                got.extend_from_slice(data);
                socket
                    .send_to(&wire::encode_ack(block), from)
                    .await
                    .unwrap();
                if data.len() < block_bytes {
                    return Ok(got);
                }
            }
            Packet::Error { code, message } => return Err(format!("{code:?}: {message}")),
            other => return Err(format!("unexpected {other:?}")),
        }
    }
}

#[tokio::test]
async fn tftp_downloads_refuses_writes_and_traversal_and_counts() {
    let dir = temp_dir("tftp");
    let data: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(dir.join("undionly.kpxe"), &data).unwrap();
    let (servers, _events) = servers(&dir).await;
    let server = servers.tftp_addr();
    assert_eq!(tftp_get(server, "undionly.kpxe", &[]).await.unwrap(), data);
    let big = tftp_get(
        server,
        "undionly.kpxe",
        &[("blksize", "1468"), ("tsize", "0")],
    )
    .await;
    assert_eq!(big.unwrap(), data);
    assert!(
        tftp_get(server, "../../etc/passwd", &[])
            .await
            .unwrap_err()
            .contains("AccessViolation")
    );
    assert!(
        tftp_get(server, "nope", &[])
            .await
            .unwrap_err()
            .contains("FileNotFound")
    );
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket
        .send_to(&wire::encode_wrq("x", "octet", &[]), server)
        .await
        .unwrap();
    let mut buf = [0u8; 600];
    let (n, _) = socket.recv_from(&mut buf).await.unwrap();
    assert!(matches!(
        Packet::decode(&buf[..n]),
        Ok(Packet::Error { .. })
    ));
    socket.send_to(b"\xff\xffgarbage", server).await.unwrap();
    // Wait until the last transfer is reaped and the garbage counted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let c = loop {
        let c = servers.counters();
        if c.tftp(TftpResult::Completed) == 2 && c.tftp(TftpResult::IgnoredMalformed) == 1 {
            break c;
        }
        assert!(tokio::time::Instant::now() < deadline, "{c:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(c.tftp(TftpResult::Started), 2);
    assert_eq!(c.tftp(TftpResult::RefusedTraversal), 1);
    assert_eq!(c.tftp(TftpResult::RefusedNotFound), 1);
    assert_eq!(c.tftp(TftpResult::RefusedWrite), 1);
    assert_eq!(c.tftp_bytes, 2 * data.len() as u64);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_transfer_whose_client_vanishes_times_out_and_frees_its_slot() {
    let dir = temp_dir("vanish");
    std::fs::write(dir.join("f"), vec![1u8; 5000]).unwrap();
    let (servers, _events) = servers(&dir).await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket
        .send_to(&wire::encode_rrq("f", "octet", &[]), servers.tftp_addr())
        .await
        .unwrap();
    // 200 ms timeout, 5 retries: gone after about 1.2 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while servers.counters().tftp(TftpResult::TimedOut) == 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        servers.counters().tftp_bytes,
        6 * 512,
        "first block and five retransmissions"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn dhcp_datagrams_are_counted_by_result() {
    let dir = temp_dir("dhcp");
    let (servers, _events) = servers(&dir).await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), servers.dhcp_addr().port());
    socket.send_to(b"garbage", target).await.unwrap();
    socket.send_to(&vec![0u8; 2000], target).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let c = servers.counters();
        if c.dhcp(DhcpResult::IgnoredTruncated) == 1 && c.dhcp(DhcpResult::IgnoredOversized) == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{c:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn file_bodies_beyond_the_stream_limit_are_refused_with_503() {
    use std::sync::{Arc, RwLock};

    let dir = temp_dir("busy");
    std::fs::write(dir.join("vmlinuz"), b"kernel").unwrap();
    let stats = Arc::new(super::stats::PxeStats::new());
    let (events, _rx) = super::event::EventSink::channel(stats.clone());
    let boot = super::http::HttpBoot {
        registry: Arc::new(RwLock::new(Registry::new())),
        files: FileRoot::new(&dir).unwrap(),
        template: Arc::new(ScriptTemplate::default()),
        params: Arc::new(BootParams::new("http://127.0.0.1")),
        stats: stats.clone(),
        events,
        streams: Arc::new(tokio::sync::Semaphore::new(0)),
        identities: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = super::http::router(boot).into_make_service_with_connect_info::<SocketAddr>();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    assert_eq!(raw_get(addr, "/boot/files/vmlinuz").await, 503);
    assert_eq!(stats.snapshot().http(HttpResult::Busy), 1);
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_identity_is_served_once_to_the_registered_address_only() {
    use std::os::unix::fs::PermissionsExt as _;
    use std::sync::{Arc, RwLock};

    use super::identity::{Identities, NeighbourCheck};
    use super::stats::IdentityResult;

    let dir = temp_dir("identity");
    for (f, text) in [("ca.crt", "CA"), ("vm1.crt", "CERT"), ("vm1.key", "KEY")] {
        std::fs::write(dir.join(f), text).unwrap();
    }
    let key = dir.join("vm1.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let stats = Arc::new(super::stats::PxeStats::new());
    let (events, _rx) = super::event::EventSink::channel(stats.clone());
    let registry = Arc::new(RwLock::new(Registry::new()));
    let boot = super::http::HttpBoot {
        registry: registry.clone(),
        files: FileRoot::new(&dir).unwrap(),
        template: Arc::new(ScriptTemplate::default()),
        params: Arc::new(BootParams::new("http://127.0.0.1")),
        stats: stats.clone(),
        events,
        streams: Arc::new(tokio::sync::Semaphore::new(1)),
        identities: Some(Arc::new(Identities::new(&dir, NeighbourCheck::Off))),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = super::http::router(boot).into_make_service_with_connect_info::<SocketAddr>();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    // No boot window open for this address.
    assert_eq!(raw_get(addr, "/boot/identity").await, 403);
    let mac = Mac([0x52, 0x54, 0, 0, 0, 1]);
    let node = NodeBoot::new("vm1", Ipv4Addr::LOCALHOST, 8);
    registry.write().unwrap().register(mac, node).unwrap();
    assert_eq!(raw_get(addr, "/boot/identity").await, 200);
    assert_eq!(raw_get(addr, "/boot/identity").await, 403, "only once");
    let c = stats.snapshot();
    assert_eq!(c.identity(IdentityResult::Served), 1);
    assert_eq!(c.identity(IdentityResult::NotInWindow), 1);
    assert_eq!(c.identity(IdentityResult::AlreadyServed), 1);
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_cores_are_sans_io() {
    // The fuzz targets include these files without tokio; this keeps the
    // clock and ambient randomness out too.
    for (file, text) in [
        ("registry.rs", include_str!("registry.rs")),
        ("dhcp.rs", include_str!("dhcp.rs")),
        ("tftp.rs", include_str!("tftp.rs")),
        ("tftp_packet.rs", include_str!("tftp_packet.rs")),
        ("files.rs", include_str!("files.rs")),
        ("script.rs", include_str!("script.rs")),
        ("child.rs", include_str!("child.rs")),
        ("network.rs", include_str!("network.rs")),
        ("mutations.rs", include_str!("mutations.rs")),
    ] {
        for banned in ["tokio", "Instant::now", "SystemTime", "rand::", "UdpSocket"] {
            assert!(!text.contains(banned), "{file} mentions {banned}");
        }
    }
}
