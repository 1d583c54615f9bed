//! [`GossipCore`]: one member's sans-io core for one group.
//!
//! Inputs take `now`; outputs are polled. After every `handle_*`,
//! [`GossipCore::publish`] or [`GossipCore::leave`], drain in this order:
//! [`GossipCore::poll_transmit`] until `None`, [`GossipCore::poll_event`]
//! until `None`, then re-arm the timer with [`GossipCore::poll_timeout`].

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use foca::OwnedNotification;
use overlay::record::Applied;
use overlay::{Key, Kind, NodeId, Record, Time, Transmit};
use proto::overlay::{Frame, frame::Body};

use crate::config::{FOCA_PACKET_MAX_BYTES, GossipConfig, GroupSpec, Mode};
use crate::election::{self, Acting};
use crate::error::{ConfigError, GossipError};
use crate::identity::MemberId;
use crate::replica::{Handler, Replica, Shared};
use crate::rng::SeededRng;
use crate::runtime::{Outbox, Queues};
use crate::wire::{
    self, DIGEST_BUCKETS, Digest, Item, Own, Payload, RECORD_DATA_MAX_BYTES, Summary,
};

/// Most events waiting for [`GossipCore::poll_event`].
pub const EVENTS_MAX: usize = 8192;

/// Most frames of records pushed in answer to one digest.
pub const PUSH_FRAMES_MAX: usize = 16;
/// Members that hold the whole group's records (rack mode): the
/// best-ranked live ones, the acting member and its likely successors,
/// plus the followed acting member if it is not among them. Every other
/// member holds only its own records: only a holder is elected while one
/// lives, and holding 200 members' records in each of 200 members was
/// the rack's square in memory and anti-entropy (issue 14).
pub const HOLDERS: usize = 4;

/// Most records waiting for the next poll to be replicated.
pub const OUTGOING_MAX: usize = 4096;

/// Random members announced to at a join, besides the two best-ranked.
pub const SEEDS_RANDOM: usize = 2;

/// Rounds of the drain loop after one input (foca notifications, then
/// records and claims, then the election, which may call foca again).
const SETTLE_ROUNDS_MAX: usize = 4;

/// The foca instance of a core.
type Swim = foca::Foca<MemberId, wire::WireCodec, SeededRng, Handler>;

/// What the application learns from a [`GossipCore`].
#[derive(Clone, Debug, PartialEq)]
pub enum GossipEvent {
    /// A member of the group became reachable (joined, returned, or
    /// refuted a suspicion after being declared down).
    MemberUp(NodeId),
    /// The group declared a member down.
    MemberDown(NodeId),
    /// A record of the group, newer than the held one, arrived.
    Delivered(Record),
    /// The followed acting sub-parent changed (another member, or a new
    /// epoch).
    ActingChanged {
        /// The member now acting for the group.
        acting: NodeId,
        /// Its claim's epoch.
        epoch: u64,
    },
}

/// Counters of a core (for metrics and tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GossipStats {
    /// Frames for another group, or not gossip.
    pub frames_ignored: u64,
    /// Frames from a node outside the group.
    pub frames_foreign: u64,
    /// Payloads that did not decode.
    pub malformed: u64,
    /// Errors foca returned (bad packets, mostly).
    pub foca_errors: u64,
    /// Claims of the acting role made by this member.
    pub claims: u64,
    /// Digests sent.
    pub digests_sent: u64,
    /// Anti-entropy summaries sent (a full digest follows only when the
    /// two sides differ).
    pub summaries_sent: u64,
    /// Frames of records pushed by anti-entropy.
    pub push_frames: u64,
    /// Records pushed by peers that were newer than ours.
    pub pushed_newer: u64,
    /// Automatic rejoins after being declared down.
    pub rejoins: u64,
    /// Events lost to [`EVENTS_MAX`].
    pub events_dropped: u64,
    /// Records foca would not queue for broadcast (flat mode).
    pub broadcasts_refused: u64,
    /// Times this member, watching the acting one, declared it down.
    pub watch_downs: u64,
    /// Times this member became a holder of the group's records.
    pub holder_starts: u64,
    /// Records forgotten on ceasing to be a holder.
    pub records_forgotten: u64,
    /// Pushed records of other members dropped by a non-holder.
    pub records_not_held: u64,
    /// Published records not replicated because [`OUTGOING_MAX`] were
    /// waiting (anti-entropy still spreads them).
    pub replication_dropped: u64,
}

/// A watcher's view of the acting member it watches.
#[derive(Clone, Copy, Debug)]
struct Watch {
    target: NodeId,
    seq: u64,
    last_ack: Time,
    next_ping: Time,
}

/// One member's gossip core for one group.
pub struct GossipCore {
    node: NodeId,
    group: Arc<GroupSpec>,
    cfg: GossipConfig,
    foca: Swim,
    shared: Shared,
    q: Queues,
    rng: SeededRng,
    alive: BTreeSet<NodeId>,
    events: VecDeque<GossipEvent>,
    stats: GossipStats,
    next_anti_entropy: Time,
    next_feed: Time,
    catch_up_peer: Option<NodeId>,
    next_join: Option<Time>,
    claim_not_before: Time,
    claim_at: Option<Time>,
    watch: Option<Watch>,
    /// Members declared down since last seen up.
    down_seen: BTreeSet<NodeId>,
    /// When foca first reported this member joined.
    active_since: Option<Time>,
    /// Whether this member held the group's records at the last look.
    holding: bool,
    /// Records published since the last flush, for the other holders.
    outgoing: Vec<Record>,
    /// When `outgoing` leaves.
    flush_at: Option<Time>,
}

impl GossipCore {
    /// Starts `node`'s core for `group` at `now` and announces it to the
    /// group's two best-ranked members and [`SEEDS_RANDOM`] random ones.
    pub fn new(
        now: Time,
        node: NodeId,
        group: GroupSpec,
        cfg: GossipConfig,
    ) -> Result<Self, ConfigError> {
        cfg.validate()?;
        if !group.contains(node) {
            return Err(ConfigError::NotAMember(node));
        }
        let group = Arc::new(group);
        let shared = Shared::new(Replica::new(group.clone()));
        let seed = overlay::rng::splitmix64(cfg.seed ^ u64::from(node) << 32);
        let me = MemberId {
            node,
            incarnation: cfg.incarnation,
        };
        let foca = foca::Foca::with_custom_broadcast(
            me,
            cfg.foca_config(group.len()),
            SeededRng::new(seed),
            wire::WireCodec,
            Handler::new(shared.clone()),
        );
        let mut core = GossipCore {
            node,
            foca,
            shared,
            q: Queues::default(),
            rng: SeededRng::new(!seed),
            alive: BTreeSet::new(),
            events: VecDeque::new(),
            stats: GossipStats::default(),
            next_anti_entropy: now + cfg.anti_entropy_interval,
            next_feed: now + cfg.feed_interval,
            catch_up_peer: None,
            next_join: (group.len() > 1).then_some(now),
            claim_not_before: now + cfg.claim_holdoff,
            claim_at: None,
            watch: None,
            down_seen: BTreeSet::new(),
            active_since: None,
            holding: true,
            outgoing: Vec::new(),
            flush_at: None,
            group,
            cfg,
        };
        core.join(now);
        Ok(core)
    }

    /// This member's node id.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The group.
    pub fn group(&self) -> &GroupSpec {
        &self.group
    }

    /// The followed acting claim. Until it hears one, a core follows the
    /// topology's sub-parent at epoch 0.
    pub fn acting(&self) -> Acting {
        self.shared.lock().acting()
    }

    /// Whether this member believes `node` alive (itself always).
    pub fn is_alive(&self, node: NodeId) -> bool {
        node == self.node || self.alive.contains(&node)
    }

    /// The other members believed alive, by id.
    pub fn alive(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.alive.iter().copied()
    }

    /// The held record for `key`.
    pub fn get(&self, key: Key) -> Option<Record> {
        self.shared.lock().get(key)
    }

    /// Number of records held.
    pub fn records(&self) -> usize {
        self.shared.lock().len()
    }

    /// Counters.
    pub fn stats(&self) -> GossipStats {
        self.stats.clone()
    }

    /// This member's current SWIM identity (the incarnation rises on each
    /// automatic rejoin).
    pub fn identity(&self) -> MemberId {
        *self.foca.identity()
    }

    /// Stores `record` and spreads it to the group: a member's own Dsc, or
    /// a Cfg the sub-parent (or acting one) learned from above.
    pub fn publish(&mut self, now: Time, record: Record) -> Result<(), GossipError> {
        if !self.group.contains(record.key.node) {
            return Err(GossipError::NotInGroup(record.key.node));
        }
        if record.data.len() > RECORD_DATA_MAX_BYTES {
            return Err(GossipError::TooLarge {
                bytes: record.data.len(),
                max: RECORD_DATA_MAX_BYTES,
            });
        }
        {
            let mut r = self.shared.lock();
            let held = r.version(record.key);
            if r.apply(&record) == Applied::Stale {
                let held = held.unwrap_or(0);
                return Err(GossipError::Stale {
                    offered: record.version,
                    held,
                });
            }
        }
        match self.cfg.mode {
            Mode::Rack => self.replicate(now, record),
            // A refused broadcast (foca's queue is full) still spreads
            // through anti-entropy.
            Mode::Flat => {
                if self.broadcast(now, &Item::Record(record)).is_err() {
                    self.stats.broadcasts_refused += 1;
                }
            }
        }
        self.settle(now);
        Ok(())
    }

    /// Sends a fresh record straight to the holders ([`HOLDERS`]): they
    /// are the ones that may have to serve the group; a holder that missed
    /// it catches up by anti-entropy. An epidemic broadcast of every
    /// record to every member costs a rack of `n` members about
    /// `n * max_transmissions` copies of each change, which dominated the
    /// traffic of 100-member racks.
    ///
    /// Only a holder sends: a member's own Dsc reaches the acting member
    /// through the tree, which shares it, and the member's own-version
    /// check repairs what that missed. Records published within half a
    /// probe round trip (a twentieth of a hello: the acting member sharing
    /// a wave of Cfg from above and of Dsc from its members) leave
    /// together, in as few frames as fit: one frame per record and holder
    /// made the hybrid's convergence wave several times the tree's
    /// datagrams.
    fn replicate(&mut self, now: Time, record: Record) {
        if !self.holds_all() {
            return;
        }
        if self.outgoing.len() >= OUTGOING_MAX {
            self.stats.replication_dropped += 1;
            return;
        }
        self.outgoing.push(record);
        self.flush_at.get_or_insert(now + self.cfg.probe_rtt / 2);
    }

    /// Sends the records published since the last flush to the other
    /// holders, packed into frames.
    fn flush_replication(&mut self) {
        self.flush_at = None;
        if self.outgoing.is_empty() {
            return;
        }
        let records = std::mem::take(&mut self.outgoing);
        let targets: Vec<NodeId> = self
            .holders()
            .into_iter()
            .filter(|&m| m != self.node && self.alive.contains(&m))
            .collect();
        for t in targets {
            self.send_packed(t, &records, usize::MAX);
        }
    }

    /// Sends `records` to `to` in frames of at most
    /// [`FOCA_PACKET_MAX_BYTES`], at most `frames_max` frames; returns how
    /// many frames went.
    fn send_packed(&mut self, to: NodeId, records: &[Record], frames_max: usize) -> usize {
        let mut batch: Vec<Record> = Vec::new();
        let mut bytes = wire::RECORDS_PAYLOAD_HEADER_BYTES;
        let mut frames = 0;
        for r in records {
            let len = wire::record_len(r);
            if bytes + len > FOCA_PACKET_MAX_BYTES && !batch.is_empty() {
                if frames + 1 >= frames_max {
                    break;
                }
                self.send_records(to, &mut batch);
                frames += 1;
                bytes = wire::RECORDS_PAYLOAD_HEADER_BYTES;
            }
            bytes += len;
            batch.push(r.clone());
        }
        if !batch.is_empty() {
            self.send_records(to, &mut batch);
            frames += 1;
        }
        frames
    }

    /// Leaves the group (a clean shutdown): the others see it down at once
    /// instead of after a suspicion.
    pub fn leave(&mut self, now: Time) {
        self.call_foca(now, |f, out| f.leave_cluster(out));
        self.settle(now);
    }

    /// Handles a frame from `from`; anything but this group's gossip from a
    /// member is counted and dropped.
    pub fn handle_frame(&mut self, now: Time, from: NodeId, frame: Frame) {
        let Some(Body::Gossip(g)) = frame.body else {
            self.stats.frames_ignored += 1;
            return;
        };
        if g.group != self.group.group() {
            self.stats.frames_ignored += 1;
            return;
        }
        if !self.group.contains(from) || from == self.node {
            self.stats.frames_foreign += 1;
            return;
        }
        match wire::decode_payload(&g.payload) {
            Ok(Payload::Foca(data)) => self.call_foca(now, |f, out| f.handle_data(data, out)),
            Ok(Payload::Digest(d)) => self.on_digest(from, &d),
            Ok(Payload::Summary(s)) => self.on_summary(from, &s),
            Ok(Payload::Own(o)) => self.on_own(from, o),
            Ok(Payload::OwnHeld(o)) => self.on_own_held(from, o),
            Ok(Payload::Records(rs)) => self.on_records(now, from, rs),
            Ok(Payload::Down(id)) => self.on_down_hint(now, id),
            Ok(Payload::Watch(seq)) => {
                self.q
                    .send(from, self.group.group(), wire::watch_payload(seq, true));
            }
            Ok(Payload::WatchAck(_)) => {
                if let Some(w) = self.watch.as_mut().filter(|w| w.target == from) {
                    w.last_ack = now;
                }
            }
            Ok(Payload::Claim(a)) => {
                // News goes on through foca too: a member the direct
                // message missed hears it from everyone, not only from the
                // claimant.
                if self.shared.lock().follow(a) {
                    let _ = self.broadcast(now, &Item::Acting(a));
                }
            }
            Err(_) => self.stats.malformed += 1,
        }
        self.settle(now);
    }

    /// Runs everything due at `now`: foca's timers, anti-entropy, join
    /// retries, a claim held back by the hold-off.
    pub fn handle_timeout(&mut self, now: Time) {
        while let Some(timer) = self.q.timers.pop_due(now) {
            self.call_foca(now, |f, out| f.handle_timer(timer, out));
        }
        if self.next_join.is_some_and(|t| t <= now) {
            self.join(now);
        }
        if self.next_anti_entropy <= now {
            self.anti_entropy(now);
        }
        if self.next_feed <= now {
            self.feed(now);
        }
        if self.flush_at.is_some_and(|t| t <= now) {
            self.flush_replication();
        }
        if self.claim_at.is_some_and(|t| t <= now) {
            self.claim_at = None;
        }
        self.settle(now);
        self.watch_tick(now);
    }

    /// The next frame to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.q.transmits.pop_front();
        if t.is_none() {
            shrink_idle(&mut self.q.transmits);
        }
        t
    }

    /// The next event for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<GossipEvent> {
        let e = self.events.pop_front();
        if e.is_none() {
            shrink_idle(&mut self.events);
        }
        e
    }

    /// When [`GossipCore::handle_timeout`] should next run.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        [
            self.q.timers.next_at(),
            Some(self.next_anti_entropy),
            Some(self.next_feed),
            self.flush_at,
            self.next_join,
            self.claim_at,
            self.watch.map(|w| w.next_ping),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ------------------------------------------------------------ internals

    fn call_foca(
        &mut self,
        now: Time,
        f: impl FnOnce(&mut Swim, Outbox<'_>) -> Result<(), foca::Error>,
    ) {
        let out = Outbox {
            queues: &mut self.q,
            now,
            group: self.group.group(),
        };
        if f(&mut self.foca, out).is_err() {
            self.stats.foca_errors += 1;
        }
    }

    fn broadcast(&mut self, now: Time, item: &Item) -> Result<(), GossipError> {
        self.foca.add_broadcast(&item.encode())?;
        self.call_foca(now, |f, out| f.broadcast(out));
        Ok(())
    }

    fn push_event(&mut self, e: GossipEvent) {
        if self.events.len() >= EVENTS_MAX {
            self.stats.events_dropped += 1;
            return;
        }
        self.events.push_back(e);
    }

    /// Turns what the last calls produced into events and runs the
    /// election, until nothing changes (at most [`SETTLE_ROUNDS_MAX`]).
    fn settle(&mut self, now: Time) {
        for _ in 0..SETTLE_ROUNDS_MAX {
            let notes = std::mem::take(&mut self.q.notes);
            let quiet = notes.is_empty();
            for n in notes {
                self.on_note(now, n);
            }
            self.drain_replica(now);
            self.elect(now);
            self.update_holding();
            if quiet && self.q.notes.is_empty() {
                return;
            }
        }
    }

    fn drain_replica(&mut self, now: Time) {
        let mut out = Vec::new();
        let claim = {
            let mut r = self.shared.lock();
            while let Some(rec) = r.pop_delivered() {
                out.push(rec);
            }
            r.take_claim_heard().then(|| r.acting())
        };
        for rec in out {
            self.push_event(GossipEvent::Delivered(rec));
        }
        if let Some(a) = claim {
            // Give a newly heard acting member the hold-off to show up in
            // our view before we judge it dead and claim over it (after a
            // partition heals, the claim often arrives before the member).
            self.claim_not_before = self.claim_not_before.max(now + self.cfg.claim_holdoff);
            self.push_event(GossipEvent::ActingChanged {
                acting: a.member,
                epoch: a.epoch,
            });
        }
    }

    fn on_note(&mut self, now: Time, n: OwnedNotification<MemberId>) {
        match n {
            OwnedNotification::MemberUp(id)
                if self.group.contains(id.node) && id.node != self.node =>
            {
                self.down_seen.remove(&id.node);
                if self.alive.insert(id.node) {
                    self.push_event(GossipEvent::MemberUp(id.node));
                }
                if self.acting().member == self.node {
                    // Bring a newcomer (or a restarted member) up to date:
                    // a holder gets the records, anyone the claim.
                    if self.holders().contains(&id.node) {
                        self.send_digest(id.node, true);
                    } else {
                        let claim = wire::claim_payload(&self.acting());
                        self.q.send(id.node, self.group.group(), claim);
                    }
                }
            }
            OwnedNotification::MemberDown(id) if self.alive.remove(&id.node) => {
                self.down_seen.insert(id.node);
                self.push_event(GossipEvent::MemberDown(id.node));
                self.hint_candidate(id);
            }
            OwnedNotification::Active => {
                self.next_join = None;
                self.active_since.get_or_insert(now);
                self.catch_up_now();
            }
            OwnedNotification::Idle => self.next_join = Some(now),
            OwnedNotification::Rejoin(_) => {
                // foca resets to disconnected after renewing its identity
                // and only reconnects when someone writes to the new one:
                // if a whole side of a healed partition renews at once,
                // nobody would. Announcing to the seeds breaks the tie.
                self.stats.rejoins += 1;
                self.next_join = Some(now);
            }
            _ => {}
        }
    }

    /// When the acting member goes down, tells the member that should
    /// take over (in our view) directly, so failover does not wait for
    /// foca's random dissemination to reach it.
    fn hint_candidate(&mut self, down: MemberId) {
        let current = self.acting();
        if self.cfg.mode == Mode::Flat || down.node != current.member {
            return;
        }
        let alive = |n| n == self.node || self.alive.contains(&n);
        let cand = election::candidate(&self.group, current, self.cfg.retake, alive);
        if let Some(c) = cand.filter(|&c| c != self.node) {
            self.q
                .send(c, self.group.group(), wire::down_payload(&down));
        }
    }

    /// Applies a down hint as foca would apply the same gossip: it only
    /// takes effect on this exact identity, and foca spreads it.
    fn on_down_hint(&mut self, now: Time, id: MemberId) {
        if id.node == self.node || !self.group.contains(id.node) {
            return;
        }
        let known = self.foca.iter_membership_state().any(|m| *m.id() == id);
        if known {
            let down = foca::Member::new(id, 0, foca::State::Down);
            self.call_foca(now, |f, out| f.apply_many(std::iter::once(down), true, out));
        }
    }

    /// Claims the acting role if this member is the candidate, does not
    /// act yet, and the hold-off has passed (else arms `claim_at`).
    fn elect(&mut self, now: Time) {
        if self.cfg.mode == Mode::Flat {
            return;
        }
        let current = self.acting();
        let alive = |n| self.believed_alive(now, n, current.member);
        let cand = election::candidate(&self.group, current, self.cfg.retake, alive);
        let claim = (cand == Some(self.node))
            .then(|| election::claim(self.node, current))
            .flatten();
        let Some(claim) = claim else {
            self.claim_at = None;
            return;
        };
        if now < self.claim_not_before {
            self.claim_at = Some(self.claim_not_before);
            return;
        }
        self.claim_at = None;
        self.claim_not_before = now + self.cfg.claim_holdoff;
        self.stats.claims += 1;
        {
            let mut r = self.shared.lock();
            r.follow(claim);
            r.take_claim_heard();
        }
        self.push_event(GossipEvent::ActingChanged {
            acting: claim.member,
            epoch: claim.epoch,
        });
        // A refused broadcast still spreads through digests.
        let _ = self.broadcast(now, &Item::Acting(claim));
        // Tell every member at once: re-homing should not wait for
        // foca's rounds to reach the last member.
        let payload = wire::claim_payload(&claim);
        let members: Vec<NodeId> = self.alive.iter().copied().collect();
        for m in members {
            self.q.send(m, self.group.group(), payload.clone());
        }
    }

    /// Whether `n` counts as alive for the election. The followed acting
    /// member counts as alive until it was seen going down, or, if it was
    /// never seen at all, until this member has been part of the group for
    /// an announce interval: a member that has not heard of everyone yet
    /// (a busy boot) must not claim over a live sub-parent.
    fn believed_alive(&self, now: Time, n: NodeId, acting: NodeId) -> bool {
        if n == self.node || self.alive.contains(&n) {
            return true;
        }
        let settled = self
            .active_since
            .is_some_and(|t| now.saturating_sub(t) >= self.cfg.announce_interval);
        n == acting && !self.down_seen.contains(&n) && !settled
    }

    /// Whether this member watches `acting`: one of the
    /// [`GossipConfig::watchers`] best-ranked live members after it.
    fn is_watcher_of(&self, acting: NodeId) -> bool {
        self.group
            .ranked()
            .iter()
            .copied()
            .filter(|&m| m != acting && (m == self.node || self.alive.contains(&m)))
            .take(self.cfg.watchers)
            .any(|m| m == self.node)
    }

    /// A watcher pings the acting member every watch interval and declares
    /// it down after a watch timeout without an answer: its successors
    /// learn of its death in about one timeout, whatever the group's size
    /// (random SWIM probing leaves a given member unprobed for a while).
    fn watch_tick(&mut self, now: Time) {
        let acting = self.acting().member;
        // Not while the group is still forming: a busy boot delays answers
        // past the timeout and would depose a live sub-parent.
        let settled = self
            .active_since
            .is_some_and(|t| now.saturating_sub(t) >= self.cfg.announce_interval);
        let watching = self.cfg.mode == Mode::Rack
            && settled
            && acting != self.node
            && self.alive.contains(&acting)
            && self.is_watcher_of(acting);
        if !watching {
            self.watch = None;
            return;
        }
        let w = match self.watch {
            Some(w) if w.target == acting => w,
            _ => Watch {
                target: acting,
                seq: 0,
                last_ack: now,
                next_ping: now,
            },
        };
        if now.saturating_sub(w.last_ack) >= self.cfg.watch_timeout {
            self.watch = None;
            self.stats.watch_downs += 1;
            let id = self
                .foca
                .iter_membership_state()
                .map(|m| *m.id())
                .find(|id| id.node == acting);
            if let Some(id) = id {
                self.on_down_hint(now, id);
                self.settle(now);
            }
            return;
        }
        let mut w = w;
        if w.next_ping <= now {
            w.seq += 1;
            w.next_ping = now + self.cfg.watch_interval;
            self.q.send(
                acting,
                self.group.group(),
                wire::watch_payload(w.seq, false),
            );
        }
        self.watch = Some(w);
    }

    /// Announces to the two best-ranked members and a few random ones;
    /// repeats every two probe periods until foca reports `Active`.
    fn join(&mut self, now: Time) {
        let ranked = self.group.ranked();
        let mut seeds: Vec<NodeId> = ranked
            .iter()
            .copied()
            .filter(|&n| n != self.node)
            .take(2)
            .collect();
        for _ in 0..SEEDS_RANDOM {
            let n = ranked[self.rng.below(ranked.len() as u64) as usize];
            if n != self.node && !seeds.contains(&n) {
                seeds.push(n);
            }
        }
        for n in seeds {
            let to = MemberId {
                node: n,
                incarnation: 0,
            };
            self.call_foca(now, |f, out| f.announce(to, out));
        }
        self.next_join = Some(now + self.join_retry());
    }

    /// Time between two join attempts: a fifth of the announce interval
    /// (one hello), whatever the probe period.
    fn join_retry(&self) -> Time {
        self.cfg.announce_interval / 5
    }

    /// While this member's view lacks some members, announces itself to a
    /// random member, whose feed lists up to about 100 members. Nothing is
    /// sent once every member is known (foca's periodic announce sent a
    /// full feed every interval regardless).
    fn feed(&mut self, now: Time) {
        self.next_feed = now + self.cfg.feed_interval;
        if self.cfg.mode == Mode::Flat {
            // foca's own periodic announce runs there (the baseline).
            return;
        }
        let known = self.foca.iter_membership_state().len();
        let others = self.group.len().saturating_sub(1);
        if known >= others || others == 0 {
            return;
        }
        let ranked = self.group.ranked();
        let n = ranked[self.rng.below(ranked.len() as u64) as usize];
        if n == self.node {
            return;
        }
        let to = MemberId {
            node: n,
            incarnation: 0,
        };
        self.call_foca(now, |f, out| f.announce(to, out));
    }

    // --------------------------------------------------------- anti-entropy

    fn digest(&self, reply: bool) -> Digest {
        let r = self.shared.lock();
        Digest {
            reply,
            acting: r.acting(),
            buckets: r.buckets(),
        }
    }

    fn send_digest(&mut self, to: NodeId, reply: bool) {
        let payload = wire::digest_payload(&self.digest(reply));
        self.q.send(to, self.group.group(), payload);
        self.stats.digests_sent += 1;
    }

    /// One round, to the peer whose push just brought news or else a
    /// random one, then re-arms with ±25 % jitter. A holder sends a
    /// [`Summary`] to another holder (flat mode: to any member); any
    /// other member tells a holder the version of its own Dsc.
    fn anti_entropy(&mut self, now: Time) {
        let holding = self.holds_all();
        let pool = self.sync_peers();
        let peer = self.catch_up_peer.take().or_else(|| {
            (!pool.is_empty()).then(|| pool[self.rng.below(pool.len() as u64) as usize])
        });
        match peer {
            Some(p) if holding => self.send_summary(p),
            Some(p) => self.send_own(p),
            None => {}
        }
        let factor = 0.75 + 0.5 * (self.rng.below(1000) as f64 / 1000.0);
        self.next_anti_entropy = now + self.cfg.anti_entropy_interval.mul_f64(factor);
    }

    /// A summary of what this member holds: its claim and one hash of its
    /// digest buckets (a dozen bytes instead of the 260 of a digest).
    fn send_summary(&mut self, to: NodeId) {
        let s = {
            let r = self.shared.lock();
            Summary {
                acting: r.acting(),
                hash: wire::buckets_hash(&r.buckets()),
            }
        };
        self.q
            .send(to, self.group.group(), wire::summary_payload(&s));
        self.stats.summaries_sent += 1;
    }

    /// Anti-entropy's first step: nothing more when the peer holds the
    /// same records and follows the same claim; else the full exchange
    /// (our digest, asking for theirs). A member that holds only its own
    /// records (the sender's view is behind) answers with its claim if
    /// the claims differ, never with records it does not keep.
    fn on_summary(&mut self, from: NodeId, s: &Summary) {
        self.shared.lock().follow(s.acting);
        let mine = self.digest(false);
        if !self.holds_all() {
            if mine.acting != s.acting {
                let claim = wire::claim_payload(&mine.acting);
                self.q.send(from, self.group.group(), claim);
            }
            return;
        }
        if mine.acting == s.acting && wire::buckets_hash(&mine.buckets) == s.hash {
            return;
        }
        self.send_digest(from, true);
    }

    /// The version of this member's own Dsc it holds (0: none).
    fn own_version(&self, node: NodeId) -> u64 {
        let key = Key {
            node,
            kind: Kind::Dsc,
        };
        self.shared.lock().version(key).unwrap_or(0)
    }

    /// Tells holder `to` our claim and our own Dsc's version.
    fn send_own(&mut self, to: NodeId) {
        let o = Own {
            acting: self.acting(),
            version: self.own_version(self.node),
        };
        self.q
            .send(to, self.group.group(), wire::own_payload(&o, false));
        self.stats.summaries_sent += 1;
    }

    /// A member's own Dsc version: answered (with what this holder holds
    /// of it and this holder's claim) only when the member's is newer or
    /// the claims differ; in sync, nothing is sent.
    fn on_own(&mut self, from: NodeId, o: Own) {
        self.shared.lock().follow(o.acting);
        let held = self.own_version(from);
        let acting = self.acting();
        if held < o.version || acting != o.acting {
            let reply = Own {
                acting,
                version: held,
            };
            self.q
                .send(from, self.group.group(), wire::own_payload(&reply, true));
        }
    }

    /// A holder's answer: follow its claim, push our Dsc if it is behind.
    fn on_own_held(&mut self, from: NodeId, o: Own) {
        self.shared.lock().follow(o.acting);
        let key = Key {
            node: self.node,
            kind: Kind::Dsc,
        };
        let mine = self.shared.lock().get(key);
        if let Some(r) = mine.filter(|r| r.version > o.version) {
            self.send_records(from, &mut vec![r]);
        }
    }

    /// The members that hold the group's records in this member's view
    /// ([`HOLDERS`]): the best-ranked ones it believes alive (itself
    /// included) and the followed acting member.
    fn holders(&self) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = self
            .group
            .ranked()
            .iter()
            .copied()
            .filter(|&m| m == self.node || self.alive.contains(&m))
            .take(HOLDERS)
            .collect();
        let acting = self.acting().member;
        if !out.contains(&acting) {
            out.push(acting);
        }
        out
    }

    /// Whether this member holds the whole group's records (always in
    /// flat mode): one of the [`HOLDERS`] best-ranked live members in its
    /// view, or the acting one.
    pub fn is_holder(&self) -> bool {
        self.holds_all()
    }

    /// [`GossipCore::holders`] contains this member, without building
    /// the list: it runs after every input (a profile of 10,000 UDP
    /// instances had `settle` on top).
    fn holds_all(&self) -> bool {
        if self.cfg.mode == Mode::Flat || self.acting().member == self.node {
            return true;
        }
        let mut live = 0;
        for &m in self.group.ranked() {
            if m == self.node {
                return true;
            }
            if self.alive.contains(&m) {
                live += 1;
                if live == HOLDERS {
                    return false;
                }
            }
        }
        false
    }

    /// Starts holding (catch up at once from another holder) or stops
    /// (forget the others' records) when the view moved this member in
    /// or out of the holders.
    fn update_holding(&mut self) {
        let now_holding = self.holds_all();
        if now_holding == self.holding {
            return;
        }
        self.holding = now_holding;
        if now_holding {
            self.stats.holder_starts += 1;
            self.catch_up_now();
        } else {
            let dropped = self.shared.lock().keep_only(self.node);
            self.stats.records_forgotten += dropped as u64;
        }
    }

    /// Who this member reconciles with: any live member in flat mode,
    /// else the live holders other than itself.
    fn sync_peers(&self) -> Vec<NodeId> {
        if self.cfg.mode == Mode::Flat {
            self.alive.iter().copied().collect()
        } else {
            self.holders()
                .into_iter()
                .filter(|&m| m != self.node && self.alive.contains(&m))
                .collect()
        }
    }

    /// Asks for what this member lacks right away: a holder sends its
    /// digest to up to two other holders, any other member its own
    /// Dsc's version to one holder.
    fn catch_up_now(&mut self) {
        let others = self.sync_peers();
        if self.holds_all() {
            for p in others.into_iter().take(2) {
                self.send_digest(p, true);
            }
        } else if let Some(&p) = others.first() {
            self.send_own(p);
        }
    }

    /// Follows a better claim, pushes what differs, and answers with our
    /// digest when asked and anything differs.
    fn on_digest(&mut self, from: NodeId, d: &Digest) {
        self.shared.lock().follow(d.acting);
        let mine = self.digest(false);
        let mut differ = [false; DIGEST_BUCKETS];
        for (i, flag) in differ.iter_mut().enumerate() {
            *flag = mine.buckets[i] != d.buckets[i];
        }
        if differ.iter().any(|&f| f) {
            self.push_records(from, &differ);
        }
        let claims_differ = mine.acting != d.acting;
        if d.reply && (claims_differ || differ.iter().any(|&f| f)) {
            self.send_digest(from, false);
        }
    }

    /// Sends the held records of the flagged buckets, buckets in random
    /// order (so repeated rounds make progress), at most
    /// [`PUSH_FRAMES_MAX`] frames.
    fn push_records(&mut self, to: NodeId, differ: &[bool; DIGEST_BUCKETS]) {
        let mut records = self.shared.lock().records_in(differ);
        let start = self.rng.below(records.len().max(1) as u64) as usize;
        records.rotate_left(start);
        self.send_packed(to, &records, PUSH_FRAMES_MAX);
    }

    fn send_records(&mut self, to: NodeId, batch: &mut Vec<Record>) {
        let payload = wire::records_payload(batch);
        batch.clear();
        self.q.send(to, self.group.group(), payload);
        self.stats.push_frames += 1;
    }

    /// Applies pushed records; if any was news, asks the same peer again
    /// soon (catch-up after a restart takes a few quick rounds).
    ///
    /// A holder passes on to the other holders what a member that is not
    /// one pushed (its own Dsc, after an own-version check): that member
    /// told only this holder.
    fn on_records(&mut self, now: Time, from: NodeId, records: Vec<Record>) {
        let mut newer = 0;
        let holding = self.holds_all();
        let forward = holding && self.cfg.mode == Mode::Rack && !self.holders().contains(&from);
        let mut onward = Vec::new();
        {
            let mut r = self.shared.lock();
            for rec in records {
                if !self.group.contains(rec.key.node) {
                    r.rejected += 1;
                } else if !holding && rec.key.node != self.node {
                    // Not a holder: the sender's view is behind ours.
                    self.stats.records_not_held += 1;
                } else if forward {
                    if r.apply_remote(rec.clone()) == Applied::Newer {
                        newer += 1;
                        onward.push(rec);
                    }
                } else if r.apply_remote(rec) == Applied::Newer {
                    newer += 1;
                }
            }
        }
        for rec in onward {
            self.replicate(now, rec);
        }
        self.stats.pushed_newer += newer;
        if newer > 0 {
            self.catch_up_peer = Some(from);
            self.next_anti_entropy = self.next_anti_entropy.min(now + self.cfg.probe_rtt);
        }
    }
}

/// Capacity an empty queue keeps; a burst (a group forming: one
/// `MemberUp` per member) grows a queue to hundreds of entries, which a
/// core would otherwise keep for good (issue 14: 8 KB per member of a
/// 200-member rack).
const IDLE_QUEUE_CAPACITY: usize = 16;

fn shrink_idle<T>(q: &mut VecDeque<T>) {
    if q.is_empty() && q.capacity() > 4 * IDLE_QUEUE_CAPACITY {
        q.shrink_to(IDLE_QUEUE_CAPACITY);
    }
}

impl overlay::Instance for GossipCore {
    fn id(&self) -> NodeId {
        self.node
    }

    fn handle_frame(&mut self, now: Time, from: NodeId, frame: Frame) {
        GossipCore::handle_frame(self, now, from, frame);
    }

    fn handle_timeout(&mut self, now: Time) {
        GossipCore::handle_timeout(self, now);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        GossipCore::poll_transmit(self)
    }

    fn poll_timeout(&mut self) -> Option<Time> {
        GossipCore::poll_timeout(self)
    }
}
