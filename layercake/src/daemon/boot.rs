//! Network boot on a running instance: the boot servers
//! ([`crate::modules::pxe::PxeServers`]) of an instance that drives BMC
//! children, wired to its [`BmcHost`] (which runs the pxe module's steps
//! in each child's engine).
//!
//! - [`BootOptions`]: `run --boot-server ...` (see `docs/boot.md`).
//! - [`start`]: binds the servers and spawns the task that carries the
//!   host's [`BootCmd`]s to them (arm: register the node's DHCP entry
//!   with its kernel arguments; disarm) and their events back (a node's
//!   firmware fetched its script).
//!
//! The task runs on the instance's `LocalSet`, like the BMC driver
//! (`crate::daemon::bmc`).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use overlay::udp::Handle;
use tokio::sync::mpsc;

use crate::daemon::world::MemberNode;
use crate::modules::power::host::BmcHost;
use crate::modules::pxe::child::BootCmd;
use crate::modules::pxe::identity::NeighbourCheck;
use crate::modules::pxe::network::NodeNet;
use crate::modules::pxe::script::ScriptTemplate;
use crate::modules::pxe::{NodeBoot, PxeConfig, PxeEvent, PxeServers};

/// How often the task looks for the host's boot commands without an event.
pub const BOOT_TICK: Duration = Duration::from_millis(50);

/// The topology file layer 0 fetches, if present in the boot root.
pub const TOPOLOGY_FILE: &str = "topology.yaml";

/// Network boot settings of an instance (`run --boot-server ...`).
#[derive(Clone, Debug)]
pub struct BootOptions {
    /// This instance's address on the boot network.
    pub server_ip: Ipv4Addr,
    /// The boot network's interface (pins DHCP to it).
    pub interface: Option<String>,
    /// Served files: iPXE binaries (TFTP), `vmlinuz`, `initrd.img` and
    /// `topology.yaml` (HTTP).
    pub root: PathBuf,
    /// DHCP port (67).
    pub dhcp_port: u16,
    /// TFTP port (69).
    pub tftp_port: u16,
    /// HTTP port.
    pub http_port: u16,
    /// Nodes' identity bundles (`certs issue --out DIR`), served once per
    /// boot window.
    pub identities: Option<PathBuf>,
    /// Kernel arguments for every node (`console=ttyS0`).
    pub kernel_args: Vec<String>,
    /// An iPXE script template file (default: layer 0's).
    pub template: Option<PathBuf>,
}

/// What the task adds to every node's entry.
struct Extras {
    /// This instance's sync address (the node's parent).
    parent: SocketAddr,
    /// The topology's URL, when the boot root holds one.
    topology: Option<String>,
    /// Identities are served: layer 0 fetches its own.
    identity: bool,
}

/// Binds the boot servers for the instance behind `h` (its sync address
/// `parent`) and spawns the task that connects them to its BMC host.
/// Call inside the `LocalSet`.
pub async fn start(h: Handle<MemberNode>, o: &BootOptions, parent: SocketAddr) -> Result<()> {
    let mut config = PxeConfig::new(o.server_ip, &o.root);
    config.interface = o.interface.clone();
    config.dhcp_port = o.dhcp_port;
    config.tftp_port = o.tftp_port;
    config.http_port = o.http_port;
    config.identities = o.identities.clone();
    config.neighbour_check = NeighbourCheck::Arp;
    if !o.kernel_args.is_empty() {
        config.kernel_args = o.kernel_args.clone();
    }
    if let Some(t) = &o.template {
        let text = std::fs::read_to_string(t)
            .with_context(|| format!("reading the iPXE template {}", t.display()))?;
        config.template = ScriptTemplate::parse(&text)
            .with_context(|| format!("the iPXE template {}", t.display()))?;
    }
    let (servers, events) = PxeServers::start(config)
        .await
        .context("starting the boot servers (--boot-server)")?;
    crate::modules::pxe::stats::describe_metrics();
    let base = format!("http://{}:{}", o.server_ip, servers.http_addr().port());
    let extras = Extras {
        parent,
        topology: o
            .root
            .join(TOPOLOGY_FILE)
            .is_file()
            .then(|| format!("{base}/boot/files/{TOPOLOGY_FILE}")),
        identity: o.identities.is_some(),
    };
    println!("boot: DHCP {}, HTTP {base}", servers.dhcp_addr());
    tokio::task::spawn_local(run(h, servers, events, extras));
    Ok(())
}

fn with_host<R>(h: &Handle<MemberNode>, f: impl FnOnce(&mut BmcHost, u64) -> R) -> R {
    h.with(|n, now| n.with(now, |app, stack| app.with_bmc(stack, now, f)))
}

/// Carries commands and events between the host and the servers forever.
///
/// # Cancel safety
/// Dropping the future drops the servers (every DHCP entry with them).
async fn run(
    h: Handle<MemberNode>,
    servers: PxeServers,
    mut events: mpsc::Receiver<PxeEvent>,
    extras: Extras,
) {
    loop {
        loop {
            let cmds: Vec<BootCmd> = with_host(&h, |host, _| {
                std::iter::from_fn(|| host.poll_boot()).collect()
            });
            if cmds.is_empty() {
                break;
            }
            for cmd in cmds {
                apply(&h, &servers, &extras, cmd);
            }
        }
        tokio::select! {
            event = events.recv() => match event {
                Some(PxeEvent::ScriptFetched { mac, .. }) => {
                    with_host(&h, |host, now| host.handle_script_fetched(mac, now));
                }
                Some(PxeEvent::Acked { .. }) => {}
                None => return,
            },
            _ = tokio::time::sleep(BOOT_TICK) => {}
        }
    }
}

fn apply(h: &Handle<MemberNode>, servers: &PxeServers, extras: &Extras, cmd: BootCmd) {
    match cmd {
        BootCmd::Arm { child, name, net } => {
            let mac = net.mac;
            let entry = node_boot(&name, &net, extras);
            let result = servers.register(mac, entry).map_err(|e| e.to_string());
            if result.is_ok() {
                tracing::info!(%mac, node = name, ip = %net.ip, "boot: window open (DHCP entry armed)");
            }
            with_host(h, |host, now| host.handle_armed(child, result, now));
        }
        BootCmd::Disarm { mac, .. } => {
            if let Some(n) = servers.unregister(mac) {
                tracing::info!(%mac, node = n.name, "boot: window closed (DHCP entry disarmed)");
            }
        }
    }
}

/// The servers' entry for a node: its network, its parent and what layer
/// 0 needs to join (the topology's URL, whether to fetch its identity).
fn node_boot(name: &str, net: &NodeNet, extras: &Extras) -> NodeBoot {
    let mut entry = NodeBoot::new(name, net.ip, net.prefix);
    entry.gateway = net.gateway;
    entry.arch = net.arch;
    entry.parent = Some(extras.parent);
    if let Some(url) = &extras.topology {
        entry.kernel_args.push(format!("layercake.topology={url}"));
    }
    if extras.identity {
        entry.kernel_args.push("layercake.identity=fetch".into());
    }
    entry
}
