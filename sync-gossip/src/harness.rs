//! An in-memory N-member group on the overlay's simulator, with checkers.
//!
//! - [`Harness`]: members `0..n` of one group (rank order = id order, so 0
//!   is the sub-parent and 1 its standby) on [`overlay::sim::Sim`]: seeded
//!   latency, loss, duplication, crashes, restarts and partitions.
//!   [`Harness::run_for`] advances virtual time in [`STEP`]s and drains
//!   every member's events into [`Harness::log`].
//! - Checkers return `Err(why)` instead of panicking, so a test can wait
//!   for them ([`Harness::wait_until`]) and print the seed on failure:
//!   [`Harness::agreed_acting`] (no split brain: every live member follows
//!   the same live acting member) and [`Harness::holds_everywhere`].

use std::time::Duration;

use overlay::sim::{Sim, SimConfig};
use overlay::{Key, NodeId, Record, Time};

use crate::config::{GossipConfig, GroupSpec};
use crate::core::{GossipCore, GossipEvent};
use crate::election::Acting;

/// Virtual time between two drains of the members' events.
pub const STEP: Duration = Duration::from_millis(20);

/// Most events kept in [`Harness::log`]; later ones are counted only.
pub const LOG_MAX: usize = 1 << 20;

/// An N-member group on the simulator.
pub struct Harness {
    /// The simulator (for stats and direct access).
    pub sim: Sim<GossipCore>,
    spec: GroupSpec,
    cfg: GossipConfig,
    /// Every event so far: when, which member, what.
    pub log: Vec<(Time, NodeId, GossipEvent)>,
    /// Events not kept because the log was full.
    pub log_dropped: u64,
    boots: u64,
}

impl Harness {
    /// A group of `n` members with `cfg` (its seed and incarnation are
    /// replaced per member), on a network described by `net`.
    pub fn new(n: u32, net: SimConfig, cfg: GossipConfig) -> Harness {
        let spec = GroupSpec::new(0, (0..n).collect()).expect("a valid group");
        let cores = (0..n)
            .map(|id| Self::core(&spec, &cfg, net.seed, id, Duration::ZERO, 0))
            .collect();
        Harness {
            sim: Sim::new(net, cores),
            spec,
            cfg,
            log: Vec::new(),
            log_dropped: 0,
            boots: 0,
        }
    }

    fn core(
        spec: &GroupSpec,
        cfg: &GossipConfig,
        seed: u64,
        id: NodeId,
        now: Time,
        boot: u64,
    ) -> GossipCore {
        let cfg = GossipConfig {
            seed: overlay::rng::splitmix64(seed ^ boot << 40),
            incarnation: now.as_micros() as u64 + boot,
            ..cfg.clone()
        };
        GossipCore::new(now, id, spec.clone(), cfg).expect("a valid core")
    }

    /// Number of members.
    pub fn len(&self) -> u32 {
        self.spec.len() as u32
    }

    /// Always false.
    pub fn is_empty(&self) -> bool {
        self.spec.is_empty()
    }

    /// Whether `id` is running (not crashed).
    pub fn is_up(&self, id: NodeId) -> bool {
        self.sim.get(id).is_some()
    }

    /// Member `id`, unless crashed.
    pub fn get(&self, id: NodeId) -> Option<&GossipCore> {
        self.sim.get(id)
    }

    /// Advances virtual time by `d`, draining events every [`STEP`].
    pub fn run_for(&mut self, d: Duration) {
        let end = self.sim.now() + d;
        while self.sim.now() < end {
            let next = (self.sim.now() + STEP).min(end);
            self.sim.run_until(next);
            self.drain_events();
        }
    }

    /// Runs until `check` passes (checked every [`STEP`]) or `limit` of
    /// virtual time passes; returns the time it took, or the last reason.
    pub fn wait_until(
        &mut self,
        limit: Duration,
        check: impl Fn(&Harness) -> Result<(), String>,
    ) -> Result<Duration, String> {
        let start = self.sim.now();
        loop {
            let res = check(self);
            if res.is_ok() {
                return Ok(self.sim.now() - start);
            }
            if self.sim.now() >= start + limit {
                return Err(res.expect_err("checked"));
            }
            self.run_for(STEP);
        }
    }

    /// Runs until `check` has passed at every [`STEP`] for `hold` in a
    /// row, or `limit` passes; returns when it started to hold for good.
    pub fn wait_stable(
        &mut self,
        limit: Duration,
        hold: Duration,
        check: impl Fn(&Harness) -> Result<(), String>,
    ) -> Result<Duration, String> {
        let start = self.sim.now();
        let mut since: Option<Time> = None;
        loop {
            match check(self) {
                Ok(()) => {
                    let s = *since.get_or_insert(self.sim.now());
                    if self.sim.now() >= s + hold {
                        return Ok(s - start);
                    }
                }
                Err(why) if self.sim.now() >= start + limit => return Err(why),
                Err(_) => since = None,
            }
            if self.sim.now() >= start + limit + hold {
                return Err("never held long enough".into());
            }
            self.run_for(STEP);
        }
    }

    fn drain_events(&mut self) {
        let now = self.sim.now();
        for id in 0..self.len() {
            let mut got = Vec::new();
            self.sim.with(id, |c, _| {
                while let Some(e) = c.poll_event() {
                    got.push(e);
                }
            });
            for e in got {
                if self.log.len() < LOG_MAX {
                    self.log.push((now, id, e));
                } else {
                    self.log_dropped += 1;
                }
            }
        }
    }

    /// Crashes `id`: it loses its state and stops answering.
    pub fn crash(&mut self, id: NodeId) {
        self.sim.crash(id);
    }

    /// Restarts `id` with a fresh core and a higher incarnation.
    pub fn restart(&mut self, id: NodeId) {
        self.boots += 1;
        let core = Self::core(
            &self.spec,
            &self.cfg,
            self.sim.now().as_nanos() as u64,
            id,
            self.sim.now(),
            self.boots,
        );
        self.sim.restart(id, core);
    }

    /// Cuts the group in two: members in `side_b` on one side, the rest on
    /// the other.
    pub fn partition(&mut self, side_b: &[NodeId]) {
        let sides = (0..self.len())
            .map(|id| side_b.contains(&id) as u8)
            .collect();
        self.sim.set_partition(Some(sides));
    }

    /// Heals a partition.
    pub fn heal(&mut self) {
        self.sim.set_partition(None);
    }

    /// Publishes `r` at member `id`.
    pub fn publish(&mut self, id: NodeId, r: Record) {
        self.sim
            .with(id, |c, now| c.publish(now, r))
            .expect("member is up")
            .expect("publish accepted");
    }

    /// Ok with the claim every live member in `among` follows, if they all
    /// follow the same one and its member is up and in `among`.
    pub fn agreed_acting_among(&self, among: &[NodeId]) -> Result<Acting, String> {
        let mut seen: Option<(NodeId, Acting)> = None;
        for &id in among {
            let Some(core) = self.get(id) else { continue };
            let a = core.acting();
            match seen {
                None => seen = Some((id, a)),
                Some((first, b)) if a != b => {
                    return Err(format!(
                        "member {first} follows {b:?} but member {id} follows {a:?}"
                    ));
                }
                Some(_) => {}
            }
        }
        let (_, a) = seen.ok_or("no live member")?;
        if !self.is_up(a.member) || !among.contains(&a.member) {
            return Err(format!(
                "everyone follows {a:?} but that member is down or elsewhere"
            ));
        }
        Ok(a)
    }

    /// [`Harness::agreed_acting_among`] over the whole group.
    pub fn agreed_acting(&self) -> Result<Acting, String> {
        let all: Vec<NodeId> = (0..self.len()).collect();
        self.agreed_acting_among(&all)
    }

    /// Ok when every live member holds `r`'s version of `r.key` or newer.
    pub fn holds_everywhere(&self, r: &Record) -> Result<(), String> {
        for id in 0..self.len() {
            let Some(core) = self.get(id) else { continue };
            let held = core.get(r.key).map(|h| h.version);
            if held.is_none_or(|v| v < r.version) {
                return Err(format!(
                    "member {id} holds {held:?} of {:?}, want {}",
                    r.key, r.version
                ));
            }
        }
        Ok(())
    }

    /// Ok when every live member that holds the group's records
    /// ([`GossipCore::is_holder`]) holds `r`'s version of `r.key` or newer,
    /// and at least [`crate::HOLDERS`] live members (or all, if fewer) do.
    pub fn holders_hold(&self, r: &Record) -> Result<(), String> {
        let (mut live, mut holders) = (0, 0);
        for id in 0..self.len() {
            let Some(core) = self.get(id) else { continue };
            live += 1;
            if !core.is_holder() {
                continue;
            }
            holders += 1;
            let held = core.get(r.key).map(|h| h.version);
            if held.is_none_or(|v| v < r.version) {
                return Err(format!(
                    "holder {id} holds {held:?} of {:?}, want {}",
                    r.key, r.version
                ));
            }
        }
        if holders < crate::HOLDERS.min(live) {
            return Err(format!("{holders} holders among {live} live members"));
        }
        Ok(())
    }

    /// Ok when every live member holds every key in `keys` at the version
    /// member `reference` holds.
    pub fn replicas_match(&self, reference: NodeId, keys: &[Key]) -> Result<(), String> {
        let base = self.get(reference).ok_or("reference is down")?;
        for &k in keys {
            let want = base.get(k).ok_or(format!("reference lacks {k:?}"))?;
            self.holds_everywhere(&want)?;
        }
        Ok(())
    }
}
