//! The boot chain of one BMC node in a [`BmcHost`] with the virtual power
//! backend: power on, arm, script, agent hello, agent silence (booted
//! again), power off and on (reset first). The servers are played by the
//! test (it answers the host's [`BootCmd`]s).

use std::sync::Arc;
use std::time::Duration;

use engine::graph::{BuildOptions, Graph};
use engine::mutation::MutationSet;
use engine::registry::Registry;
use engine::url::Path;
use engine::value::Value;
use engine::virt::{self, PXE_URL};
use proto::node::Node;
use proto::power::Power;

use super::BootCmd;
use super::pxe_state::{COMP, INIT, NONE, WAIT};
use crate::modules::power::config::{Backends, Place, set_power};
use crate::modules::power::creds::Credentials;
use crate::modules::power::host::{BmcHost, HostConfig, run_job};
use crate::modules::power::ipmi::IpmiConfig;
use crate::modules::power::ipmi_backend::IpmiClients;
use crate::modules::power::redfish::RedfishClients;
use crate::modules::power::virt::VirtualFleet;
use crate::modules::power::{Policy, PowerPool};
use crate::modules::pxe::network::{Network, set_network};
use crate::modules::pxe::registry::Mac;

const MAC: Mac = Mac([0x52, 0x54, 0, 0, 0, 0x11]);

struct Bench {
    host: BmcHost,
    reg: Arc<Registry>,
    pool: PowerPool,
    now: u64,
    armed: bool,
    cmds: Vec<BootCmd>,
}

impl Bench {
    fn new() -> Bench {
        let mut reg = Registry::with_pxe();
        reg.register(Arc::new(crate::modules::power::config::extension()))
            .unwrap();
        reg.register(Arc::new(super::super::network::extension()))
            .unwrap();
        let set = MutationSet::build(
            &reg,
            &[virt::power_module(), super::super::mutations::module()],
        )
        .unwrap();
        let graph = Arc::new(Graph::build(set, BuildOptions::default()).unwrap());
        let reg = Arc::new(reg);
        let backends = Backends {
            creds: Arc::new(Credentials::empty()),
            redfish: RedfishClients::new(None).unwrap(),
            fleet: VirtualFleet::new(),
            ipmi: IpmiClients::new(IpmiConfig {
                timeout: Duration::from_millis(100),
                retries: 0,
            }),
        };
        let cfg = HostConfig {
            poll_interval: Duration::from_secs(1),
            frozen: None,
        };
        let mut host = BmcHost::new(graph, reg.clone(), backends, cfg).unwrap();
        host.enable_boot().unwrap();
        Bench {
            host,
            reg,
            pool: PowerPool::new(4, Policy::default()),
            now: 0,
            armed: false,
            cmds: Vec::new(),
        }
    }

    fn cfg(&mut self, phys: i32, run: i32) {
        let mut cfg = self.reg.new_node("vm1");
        cfg.phys_state = phys;
        cfg.run_state = run;
        let power = Power {
            protocol: "virtual".into(),
            ..Power::default()
        };
        set_power(&mut cfg, &power);
        let net = Network {
            mac: MAC.to_string(),
            address: "10.0.0.11/24".into(),
            ..Network::default()
        };
        set_network(&mut cfg, &net);
        let place = Place {
            host: "vm1",
            i: 1,
            g: 1,
        };
        assert!(self.host.handle_cfg(7, place, cfg, self.now));
    }

    /// Runs BMC jobs and answers boot commands for `ms` of virtual time.
    async fn run(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.now += 50;
            self.host.handle_timeout(self.now);
            while let Some(j) = self.host.poll_job() {
                let r = run_job(&self.pool, j).await;
                self.host.handle_result(r, self.now);
            }
            while let Some(cmd) = self.host.poll_boot() {
                match &cmd {
                    BootCmd::Arm { child, net, .. } => {
                        assert_eq!((*child, net.mac), (7, MAC));
                        self.armed = true;
                        self.host.handle_armed(7, Ok(()), self.now);
                    }
                    BootCmd::Disarm { mac, .. } => {
                        assert_eq!(*mac, MAC);
                        self.armed = false;
                    }
                }
                self.cmds.push(cmd);
            }
        }
    }

    fn dsc(&self) -> Node {
        self.host.dsc(7).unwrap()
    }

    fn pxe(&self) -> i32 {
        let url: Path = PXE_URL.parse().unwrap();
        match self.reg.get(&self.dsc(), &url) {
            Ok(Value::Enum(x)) => x,
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_node_boots_is_seen_dead_boots_again_and_is_reset_after_power_off() {
    let mut b = Bench::new();
    b.cfg(2, 2);
    b.run(2_000).await;
    assert_eq!(b.dsc().phys_state, 2, "powered on through the BMC");
    assert_eq!(b.pxe(), WAIT, "the boot window opened");
    assert!(b.armed);
    // The node's firmware fetched its script.
    b.host.handle_script_fetched(MAC, b.now);
    assert_eq!((b.pxe(), b.dsc().run_state), (INIT, 1));
    // A script fetched by another MAC changes nothing.
    b.host.handle_script_fetched(Mac([0; 6]), b.now);
    // Its agent said hello: booted, the window closed.
    b.host.handle_agent(7, true, b.now);
    b.run(200).await;
    assert_eq!((b.pxe(), b.dsc().run_state), (COMP, 2));
    assert!(!b.armed, "the entry is disarmed once the agent is up");
    // Silence: seen dead, the chain opens a new window.
    b.host.handle_agent(7, false, b.now);
    b.run(500).await;
    assert_eq!((b.pxe(), b.dsc().run_state), (WAIT, 0));
    assert!(b.armed);
    b.host.handle_script_fetched(MAC, b.now);
    b.host.handle_agent(7, true, b.now);
    b.run(200).await;
    assert_eq!((b.pxe(), b.dsc().run_state), (COMP, 2));
    // Off while the window is open: it closes at once.
    b.host.handle_agent(7, false, b.now);
    b.run(500).await;
    assert!(b.armed, "re-armed after the silence");
    b.cfg(1, 0);
    b.run(2_000).await;
    assert_eq!(b.dsc().phys_state, 1);
    assert!(!b.armed, "the window closed with the power");
    b.cfg(2, 2);
    b.run(2_000).await;
    b.host.handle_script_fetched(MAC, b.now);
    b.host.handle_agent(7, true, b.now);
    b.run(200).await;
    assert_eq!((b.pxe(), b.dsc().run_state), (COMP, 2));
    // Powered off by Cfg, then on again: PXE reset first, then a full boot.
    b.cfg(1, 0);
    b.run(2_000).await;
    b.host.handle_agent(7, false, b.now);
    assert_eq!(b.dsc().phys_state, 1);
    assert_eq!(b.pxe(), COMP, "nothing to reset while off and unasked");
    b.cfg(2, 2);
    b.run(2_000).await;
    assert_eq!((b.dsc().phys_state, b.pxe()), (2, WAIT));
    let arms = b
        .cmds
        .iter()
        .filter(|c| matches!(c, BootCmd::Arm { .. }))
        .count();
    assert_eq!(arms, 5, "{:?}", b.cmds);
    assert_ne!(NONE, WAIT);
}

#[tokio::test]
async fn a_refused_entry_fails_the_wait_step_to_phys_hang() {
    let mut b = Bench::new();
    b.cfg(2, 2);
    // Power on, but refuse the entry.
    for _ in 0..40 {
        b.now += 50;
        b.host.handle_timeout(b.now);
        while let Some(j) = b.host.poll_job() {
            let r = run_job(&b.pool, j).await;
            b.host.handle_result(r, b.now);
        }
        if let Some(BootCmd::Arm { .. }) = b.host.poll_boot() {
            b.host.handle_armed(7, Err("address taken".into()), b.now);
            break;
        }
    }
    let dsc = b.dsc();
    assert_eq!(dsc.phys_state, proto::node::PhysState::PhysHang as i32);
    let net = super::super::network::network_of(&dsc).unwrap();
    assert_eq!(net.error, "address taken");
}

#[tokio::test]
async fn a_stray_dsc_of_a_driven_node_is_published_over() {
    let mut b = Bench::new();
    b.cfg(2, 2);
    b.run(500).await;
    let first = b.host.dsc_changes(|_| None);
    assert_eq!(first.len(), 1);
    assert!(b.host.dsc_changes(|_| None).is_empty(), "unchanged");
    // Our own record coming back changes nothing.
    b.host.reassert(7, &first[0].1);
    assert!(b.host.dsc_changes(|_| None).is_empty());
    // The node's own process announced an all-unknown Dsc.
    b.host.reassert(7, b"stray");
    let again = b.host.dsc_changes(|_| None);
    assert_eq!(again.len(), 1, "published again, above the stray record");
}
