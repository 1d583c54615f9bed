//! The power conformance suite: one set of test bodies, run against every
//! backend: `virtual` (in-memory BMCs), `redfish` (sushy-tools' emulator,
//! fake driver, basic auth) and `ipmi` (OpenIPMI's `ipmi_sim`).
//!
//! Each body checks one claim of the power abstraction, either on the
//! backend alone or through [`BmcHost`] (a node engine per BMC in CHILD
//! context, the poller and the bounded pool): initial discovery, on, off,
//! soft off, cycle, a change behind the system's back noticed and corrected, wrong
//! credentials (PHYS_ERROR with a clear message, no hang), an unreachable
//! BMC (timeout, then the fail-to value) and 50 BMCs at once.
//!
//! The emulators must be installed (`bash .ci/run` does): a missing one
//! fails these tests.

#[path = "support/ipmi_sim.rs"]
mod ipmi_sim_support;
#[path = "support/sushy.rs"]
mod sushy;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::graph::{BuildOptions, Graph};
use engine::mutation::MutationSet;
use engine::registry::Registry;
use ipmi_sim_support::IpmiSim;
use layercake::modules::power::config::{Backends, BmcTarget, Place, power_of, set_power};
use layercake::modules::power::creds::Credentials;
use layercake::modules::power::host::{BmcHost, HostAccess, HostConfig, drive};
use layercake::modules::power::ipmi::IpmiConfig;
use layercake::modules::power::ipmi_backend::IpmiClients;
use layercake::modules::power::redfish::RedfishClients;
use layercake::modules::power::virt::VirtualFleet;
use layercake::modules::power::{Policy, PowerError, PowerOp, PowerPool, PowerState};
use proto::node::{Node, PhysState};
use proto::power::Power;
use sushy::Sushy;

/// The status poll interval of the hosts under test.
const POLL: Duration = Duration::from_millis(1000);
/// The credential names in the test credentials.
const GOOD: &str = "good";
const BAD: &str = "bad";
const VIRTUAL_PASSWORD: &str = "v-s3cret";

#[derive(Clone, Copy, Debug)]
enum Kind {
    Virtual,
    Redfish,
    Ipmi,
}

/// Fake systems per Redfish emulator process: sushy-tools keeps its state
/// in one SQLite file per process and slows down (then answers 500,
/// "database is locked") with hundreds of systems under load, so larger
/// fixtures start several emulators, like racks of separate BMCs.
const SYSTEMS_PER_EMULATOR: usize = 25;

/// Starts `ceil(n / SYSTEMS_PER_EMULATOR)` emulators.
fn sushies(n: usize, delay_max_s: u32) -> Vec<Sushy> {
    let mut v = Vec::new();
    let mut left = n;
    while left > 0 {
        let k = left.min(SYSTEMS_PER_EMULATOR);
        v.push(Sushy::start_with(k, delay_max_s));
        left -= k;
    }
    v
}

/// The emulator and system number (1-based) of Redfish BMC `i`.
fn sushy_of(v: &[Sushy], i: usize) -> (&Sushy, usize) {
    (&v[i / SYSTEMS_PER_EMULATOR], i % SYSTEMS_PER_EMULATOR + 1)
}

enum Emu {
    Virtual(VirtualFleet),
    Redfish(Vec<Sushy>),
    Ipmi(IpmiSim),
}

/// `n` BMCs of one backend and everything needed to reach them.
struct Fixture {
    emu: Emu,
    backends: Backends,
    /// Sockets bound for the test's lifetime that never answer (so no
    /// other test's emulator can get their ports).
    silent: Mutex<(Vec<std::net::TcpListener>, Vec<std::net::UdpSocket>)>,
}

fn policy() -> Policy {
    Policy {
        attempt_timeout: Duration::from_secs(1),
        retries: 1,
        backoff: Duration::from_millis(100),
        backoff_max: Duration::from_millis(500),
        settle_timeout: Duration::from_secs(20),
        settle_poll: Duration::from_millis(100),
    }
}

impl Fixture {
    fn start(kind: Kind, n: usize) -> Fixture {
        let fleet = VirtualFleet::new();
        let mut creds = Credentials::empty();
        let (emu, good) = match kind {
            Kind::Virtual => {
                for i in 0..n {
                    fleet.machine(&vm(i)).set_password(Some(VIRTUAL_PASSWORD));
                }
                (Emu::Virtual(fleet.clone()), VIRTUAL_PASSWORD)
            }
            Kind::Redfish => (Emu::Redfish(sushies(n, 0)), sushy::PASSWORD),
            Kind::Ipmi => (
                Emu::Ipmi(IpmiSim::start_many(n).expect("starting ipmi_sim")),
                IpmiSim::PASSWORD,
            ),
        };
        creds.insert(GOOD, good);
        creds.insert(BAD, "not-the-password");
        let backends = Backends {
            creds: Arc::new(creds),
            redfish: RedfishClients::new(None).expect("HTTP clients"),
            fleet,
            ipmi: IpmiClients::new(IpmiConfig {
                timeout: Duration::from_millis(300),
                retries: 1,
            }),
        };
        Fixture {
            emu,
            backends,
            silent: Mutex::default(),
        }
    }

    /// The power extension of BMC `i` (0-based) with `credential`.
    fn power(&self, i: usize, credential: &str) -> Power {
        let mut p = match &self.emu {
            Emu::Virtual(_) => Power {
                protocol: "virtual".into(),
                address: vm(i),
                ..Power::default()
            },
            Emu::Redfish(v) => {
                let (s, sys) = sushy_of(v, i);
                Power {
                    protocol: "redfish".into(),
                    address: "127.0.0.1".into(),
                    port: u32::from(s.port()),
                    user: sushy::USER.into(),
                    scheme: "http".into(),
                    system: sushy::system_id(sys),
                    ..Power::default()
                }
            }
            Emu::Ipmi(s) => {
                let a = s.addrs()[i];
                Power {
                    protocol: "ipmi".into(),
                    address: a.ip().to_string(),
                    port: u32::from(a.port()),
                    user: IpmiSim::USER.into(),
                    ..Power::default()
                }
            }
        };
        p.credential = credential.into();
        p
    }

    /// A BMC of this protocol that never answers.
    fn unreachable(&self) -> Power {
        match &self.emu {
            Emu::Virtual(f) => {
                f.machine("vm-gone").set_reachable(false);
                Power {
                    protocol: "virtual".into(),
                    address: "vm-gone".into(),
                    credential: GOOD.into(),
                    ..Power::default()
                }
            }
            // Bound but silent: a TCP listener that never accepts (the
            // request waits for an answer until the timeout), a UDP socket
            // that never replies.
            Emu::Redfish(_) => {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let port = l.local_addr().unwrap().port();
                self.silent.lock().unwrap().0.push(l);
                Power {
                    port: u32::from(port),
                    ..self.power(0, GOOD)
                }
            }
            Emu::Ipmi(_) => {
                let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                let port = u.local_addr().unwrap().port();
                self.silent.lock().unwrap().1.push(u);
                Power {
                    port: u32::from(port),
                    ..self.power(0, GOOD)
                }
            }
        }
    }

    async fn set_behind_back(&self, i: usize, on: bool) {
        match &self.emu {
            Emu::Virtual(f) => f.machine(&vm(i)).set_power_behind_back(on),
            Emu::Redfish(v) => {
                let (s, sys) = sushy_of(v, i);
                s.set_power_behind_back(sys, on).await
            }
            Emu::Ipmi(s) => s.set_power_behind_back_of(i, on),
        }
    }

    async fn is_on(&self, i: usize) -> bool {
        match &self.emu {
            Emu::Virtual(f) => f.machine(&vm(i)).is_on(),
            Emu::Redfish(v) => {
                let (s, sys) = sushy_of(v, i);
                s.is_on(sys).await
            }
            Emu::Ipmi(s) => s.power_of(i),
        }
    }

    fn backend(&self, p: &Power) -> layercake::modules::power::Backend {
        let t = BmcTarget::resolve(p, place("x", 0)).unwrap().unwrap();
        self.backends.backend(&t).unwrap()
    }
}

fn vm(i: usize) -> String {
    format!("vm-{i}")
}

fn place(name: &str, i: usize) -> Place<'_> {
    Place {
        host: name,
        i: i as u64 + 1,
        g: 1,
    }
}

fn model() -> (Arc<Graph>, Arc<Registry>) {
    let mut reg = Registry::with_pxe();
    reg.register(Arc::new(layercake::modules::power::config::extension()))
        .unwrap();
    let set = MutationSet::build(
        &reg,
        &[engine::virt::power_module(), engine::virt::boot_module()],
    )
    .unwrap();
    let g = Graph::build(set, BuildOptions::default()).unwrap();
    (Arc::new(g), Arc::new(reg))
}

#[derive(Clone)]
struct Access {
    host: Arc<Mutex<BmcHost>>,
    epoch: Instant,
}

impl HostAccess for Access {
    fn with_host<R>(&self, f: impl FnOnce(&mut BmcHost, u64) -> R) -> R {
        let now = self.epoch.elapsed().as_millis() as u64;
        f(&mut self.host.lock().unwrap(), now)
    }
}

/// A [`BmcHost`] driven by [`drive`] on the test's runtime.
struct Harness {
    access: Access,
    registry: Arc<Registry>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Harness {
    fn new(f: &Fixture, concurrency: usize) -> Harness {
        let (graph, registry) = model();
        let host = BmcHost::new(
            graph,
            registry.clone(),
            f.backends.clone(),
            HostConfig {
                poll_interval: POLL,
                frozen: None,
            },
        )
        .unwrap();
        let access = Access {
            host: Arc::new(Mutex::new(host)),
            epoch: Instant::now(),
        };
        let pool = PowerPool::new(concurrency, policy());
        let task = tokio::spawn(drive(access.clone(), pool, Duration::from_millis(20)));
        Harness {
            access,
            registry,
            task,
        }
    }

    /// Gives node `i` the Cfg `phys` (None: no wanted power state) and BMC `p`.
    fn set_cfg(&self, i: usize, phys: Option<PhysState>, p: &Power) {
        let name = format!("n{:04}", i + 1);
        let mut cfg = self.registry.new_node(&name);
        cfg.phys_state = phys.map_or(0, |s| s as i32);
        set_power(&mut cfg, p);
        let drives = self
            .access
            .with_host(|h, now| h.handle_cfg(i as u32, place(&name, i), cfg, now));
        assert!(drives, "the host drives a node with a BMC");
    }

    fn dsc(&self, i: usize) -> Node {
        self.access
            .with_host(|h, _| h.dsc(i as u32))
            .expect("a driven node")
    }

    /// Waits until node `i`'s Dsc PhysState is `want`; panics after `within`
    /// with the node's last Dsc.
    async fn wait_phys(&self, i: usize, want: PhysState, within: Duration) -> Duration {
        let t0 = Instant::now();
        loop {
            let d = self.dsc(i);
            if d.phys_state == want as i32 {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < within,
                "node {i}: Dsc PhysState {:?} after {within:?}, want {want:?} (Power/Error: {:?})",
                PhysState::try_from(d.phys_state),
                power_of(&d).map(|p| p.error)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn error_of(d: &Node) -> String {
    power_of(d).map(|p| p.error).unwrap_or_default()
}

// ---- the test bodies --------------------------------------------------------

async fn initial_discovery(kind: Kind) {
    let f = Fixture::start(kind, 2);
    f.set_behind_back(1, true).await;
    let b0 = f.backend(&f.power(0, GOOD));
    assert_eq!(b0.status(&policy()).await.unwrap(), PowerState::Off);
    let h = Harness::new(&f, 8);
    for i in 0..2 {
        h.set_cfg(i, None, &f.power(i, GOOD));
    }
    h.wait_phys(0, PhysState::PowerOff, 2 * POLL + Duration::from_secs(5))
        .await;
    h.wait_phys(1, PhysState::PowerOn, 2 * POLL + Duration::from_secs(5))
        .await;
    assert!(
        !f.is_on(0).await && f.is_on(1).await,
        "discovery changes nothing"
    );
}

async fn power_on(kind: Kind) {
    let f = Fixture::start(kind, 1);
    let h = Harness::new(&f, 8);
    h.set_cfg(0, Some(PhysState::PowerOn), &f.power(0, GOOD));
    let took = h
        .wait_phys(0, PhysState::PowerOn, Duration::from_secs(30))
        .await;
    assert!(f.is_on(0).await, "the machine is on");
    eprintln!("{kind:?}: power on in {took:?}");
}

async fn power_off(kind: Kind) {
    let f = Fixture::start(kind, 1);
    f.set_behind_back(0, true).await;
    let h = Harness::new(&f, 8);
    h.set_cfg(0, Some(PhysState::PowerOff), &f.power(0, GOOD));
    h.wait_phys(0, PhysState::PowerOff, Duration::from_secs(30))
        .await;
    assert!(!f.is_on(0).await, "the machine is off");
}

async fn cycle(kind: Kind) {
    let f = Fixture::start(kind, 1);
    let b = f.backend(&f.power(0, GOOD));
    let p = policy();
    assert_eq!(
        b.perform(PowerOp::Cycle, &p).await.unwrap(),
        PowerState::On,
        "cycling an off machine powers it on"
    );
    assert!(f.is_on(0).await);
    assert_eq!(b.perform(PowerOp::Cycle, &p).await.unwrap(), PowerState::On);
    assert!(f.is_on(0).await, "on again after the cycle");
    assert_eq!(b.perform(PowerOp::Off, &p).await.unwrap(), PowerState::Off);
    assert!(!f.is_on(0).await);
}

async fn soft_off(kind: Kind) {
    let f = Fixture::start(kind, 1);
    f.set_behind_back(0, true).await;
    let b = f.backend(&f.power(0, GOOD));
    assert_eq!(
        b.perform(PowerOp::SoftOff, &policy()).await.unwrap(),
        PowerState::Off
    );
    assert!(!f.is_on(0).await, "off after a graceful shutdown");
}

async fn external_change_is_corrected(kind: Kind) {
    let f = Fixture::start(kind, 1);
    let h = Harness::new(&f, 8);
    h.set_cfg(0, Some(PhysState::PowerOn), &f.power(0, GOOD));
    h.wait_phys(0, PhysState::PowerOn, Duration::from_secs(30))
        .await;
    f.set_behind_back(0, false).await;
    let t0 = Instant::now();
    assert!(!f.is_on(0).await, "the machine went off behind our back");
    // Noticed at the next poll (at most one interval), then powered on.
    let within = 2 * POLL + Duration::from_secs(3);
    while !f.is_on(0).await {
        assert!(t0.elapsed() < within, "not corrected within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.wait_phys(0, PhysState::PowerOn, within).await;
    eprintln!("{kind:?}: corrected in {:?}", t0.elapsed());
}

async fn wrong_credentials(kind: Kind) {
    let f = Fixture::start(kind, 1);
    let b = f.backend(&f.power(0, BAD));
    let t0 = Instant::now();
    let e = b.status(&policy()).await.unwrap_err();
    assert!(matches!(e, PowerError::AuthRefused(..)), "{e}");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "refused quickly, not a hang"
    );
    assert!(e.to_string().contains("refused authentication"), "{e}");
    let h = Harness::new(&f, 8);
    h.set_cfg(0, Some(PhysState::PowerOn), &f.power(0, BAD));
    h.wait_phys(0, PhysState::PhysError, Duration::from_secs(10))
        .await;
    let msg = error_of(&h.dsc(0));
    assert!(msg.contains("refused authentication"), "{msg}");
    assert!(!f.is_on(0).await, "nothing was done");
    // A credential missing from the file is named.
    h.set_cfg(0, Some(PhysState::PowerOn), &f.power(0, "missing"));
    let msg = error_of(&h.dsc(0));
    assert!(msg.contains("`missing` is not in"), "{msg}");
    // Fixing the credential clears the error and powers the node on.
    h.set_cfg(0, Some(PhysState::PowerOn), &f.power(0, GOOD));
    h.wait_phys(0, PhysState::PowerOn, Duration::from_secs(30))
        .await;
}

async fn unreachable_bmc(kind: Kind) {
    let f = Fixture::start(kind, 1);
    let p = f.unreachable();
    let b = f.backend(&p);
    let t0 = Instant::now();
    let e = b.status(&policy()).await.unwrap_err();
    assert!(matches!(e, PowerError::Unreachable(..)), "{e}");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "bounded by the policy"
    );
    let h = Harness::new(&f, 8);
    h.set_cfg(0, Some(PhysState::PowerOn), &p);
    h.wait_phys(0, PhysState::PhysHang, Duration::from_secs(15))
        .await;
    let msg = error_of(&h.dsc(0));
    assert!(msg.contains("unreachable"), "{msg}");
}

async fn fifty_at_once(kind: Kind) {
    const N: usize = 50;
    let f = Fixture::start(kind, N);
    let h = Harness::new(&f, 64);
    let t0 = Instant::now();
    for i in 0..N {
        h.set_cfg(i, Some(PhysState::PowerOn), &f.power(i, GOOD));
    }
    for i in 0..N {
        h.wait_phys(i, PhysState::PowerOn, Duration::from_secs(60))
            .await;
    }
    let took = t0.elapsed();
    for i in 0..N {
        assert!(f.is_on(i).await, "BMC {i} is on");
    }
    eprintln!("{kind:?}: {N} BMCs powered on in {took:?}");
}

/// Redfish over HTTPS: a self-signed BMC certificate is refused by default
/// with a message naming the certificate, accepted with `--bmc-ca-file`
/// trusting it, and with `Scheme: https-insecure`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redfish_tls_trust() {
    let dir = std::env::temp_dir().join(format!("lc-rf-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert, key) = (dir.join("bmc.crt"), dir.join("bmc.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let s = Sushy::start_tls(1, &cert, &key);
    let mut creds = Credentials::empty();
    creds.insert(GOOD, sushy::PASSWORD);
    let backends = |ca: Option<&std::path::Path>| Backends {
        creds: Arc::new(creds.clone()),
        redfish: RedfishClients::new(ca).expect("HTTP clients"),
        fleet: VirtualFleet::new(),
        ipmi: IpmiClients::new(IpmiConfig::default()),
    };
    let power = |scheme: &str| Power {
        protocol: "redfish".into(),
        address: "127.0.0.1".into(),
        port: u32::from(s.port()),
        user: sushy::USER.into(),
        credential: GOOD.into(),
        scheme: scheme.into(),
        system: sushy::system_id(1),
        ..Power::default()
    };
    let status = |b: &Backends, p: &Power| {
        let t = BmcTarget::resolve(p, place("x", 0)).unwrap().unwrap();
        let b = b.backend(&t).unwrap();
        async move { b.status(&policy()).await }
    };
    let e = status(&backends(None), &power("https")).await.unwrap_err();
    assert!(e.to_string().contains("certificate"), "{e}");
    assert_eq!(
        status(&backends(Some(&cert)), &power("https"))
            .await
            .unwrap(),
        PowerState::Off
    );
    assert_eq!(
        status(&backends(None), &power("https-insecure"))
            .await
            .unwrap(),
        PowerState::Off
    );
    let _ = std::fs::remove_dir_all(&dir);
}

macro_rules! conformance {
    ($backend:ident, $kind:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn initial_discovery() {
                super::initial_discovery($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn power_on() {
                super::power_on($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn power_off() {
                super::power_off($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cycle() {
                super::cycle($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn soft_off() {
                super::soft_off($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn external_change_is_corrected() {
                super::external_change_is_corrected($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn wrong_credentials() {
                super::wrong_credentials($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn unreachable_bmc() {
                super::unreachable_bmc($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn fifty_at_once() {
                super::fifty_at_once($kind).await
            }
        }
    };
}

conformance!(virtual_bmc, Kind::Virtual);
conformance!(redfish, Kind::Redfish);
conformance!(ipmi, Kind::Ipmi);

// ---- the scale figure (docs/performance.md) ---------------------------------

/// Powers on `LAYERCAKE_BENCH_BMCS` (default 200) BMCs of one backend
/// through one host and its pool (`LAYERCAKE_BENCH_CONCURRENCY`, default
/// 64, the `--bmc-concurrency` default) and prints the wall time from the
/// Cfg change to the last Dsc POWER_ON. Redfish: `LAYERCAKE_BENCH_DELAY_S`
/// (default 0) is the emulator's longest power-change delay (its own
/// default is 11).
async fn bench(kind: Kind) {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let n = env("LAYERCAKE_BENCH_BMCS", 200);
    let conc = env("LAYERCAKE_BENCH_CONCURRENCY", 64);
    let delay = env("LAYERCAKE_BENCH_DELAY_S", 0) as u32;
    let t_start = Instant::now();
    let f = match kind {
        Kind::Redfish => {
            let mut f = Fixture::start(Kind::Virtual, 0);
            f.emu = Emu::Redfish(sushies(n, delay));
            f.backends.creds = Arc::new({
                let mut c = Credentials::empty();
                c.insert(GOOD, sushy::PASSWORD);
                c
            });
            f
        }
        k => Fixture::start(k, n),
    };
    let started = t_start.elapsed();
    let h = Harness::new(&f, conc);
    let t0 = Instant::now();
    for i in 0..n {
        h.set_cfg(i, Some(PhysState::PowerOn), &f.power(i, GOOD));
    }
    for i in 0..n {
        h.wait_phys(i, PhysState::PowerOn, Duration::from_secs(300))
            .await;
    }
    let took = t0.elapsed();
    for i in 0..n {
        assert!(f.is_on(i).await, "BMC {i} is on");
    }
    println!(
        "{kind:?}: {n} BMCs powered on in {took:?} (concurrency {conc}; emulators started in {started:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "scale figure: cargo test --release -p layercake --test power_conformance -- --ignored --nocapture bench_"]
async fn bench_virtual() {
    bench(Kind::Virtual).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "scale figure: cargo test --release -p layercake --test power_conformance -- --ignored --nocapture bench_"]
async fn bench_redfish() {
    bench(Kind::Redfish).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "scale figure: cargo test --release -p layercake --test power_conformance -- --ignored --nocapture bench_"]
async fn bench_ipmi() {
    bench(Kind::Ipmi).await
}
