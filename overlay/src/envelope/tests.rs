//! Every rejection reason, boots and freshness, and a round trip.

use super::*;
use proto::overlay::{Hello, frame};

fn ring() -> KeyRing {
    KeyRing::single(1, &ClusterKey::from_seed(42))
}

fn hello() -> Frame {
    Frame {
        body: Some(frame::Body::Hello(Hello {
            in_digest: 99,
            ..Default::default()
        })),
    }
}

fn boot(bits: u64) -> Boot {
    Boot::from_random(bits)
}

/// One instance's envelope ends.
struct End {
    sealer: Sealer,
    opener: Opener,
}

impl End {
    fn new(id: NodeId, bits: u64) -> End {
        End {
            sealer: Sealer::new(id, boot(bits)),
            opener: Opener::new(id, boot(bits)),
        }
    }

    fn id(&self) -> NodeId {
        self.opener.me
    }

    /// Seals `frame` for `to` as this end knows it.
    fn seal_for(&mut self, to: NodeId, frame: &Frame) -> Vec<u8> {
        let mut out = Vec::new();
        let b = self.opener.peer_boot(to);
        self.sealer.seal(&ring(), to, b, frame, &mut out).unwrap();
        out
    }

    /// Seals `frame` for `to`, opens it there and carries the session
    /// replies both ways until there are none. Returns what `to` made of
    /// the datagram.
    fn send(&mut self, to: &mut End, frame: &Frame) -> Result<(Opened, Frame), DropReason> {
        let d = self.seal_for(to.id(), frame);
        let r = to.opener.open(&ring(), &d);
        pump(self, to);
        r
    }
}

/// Carries session datagrams between `a` and `b` until none is pending.
fn pump(a: &mut End, b: &mut End) {
    for _ in 0..8 {
        let moved = relay(a, b) | relay(b, a);
        if !moved {
            return;
        }
    }
}

/// Sends `x`'s pending session datagrams to `y`; whether there were any.
fn relay(x: &mut End, y: &mut End) -> bool {
    let mut moved = false;
    while let Some((to, echo)) = x.opener.poll_reply() {
        assert_eq!(to, y.id());
        let mut out = Vec::new();
        x.sealer.seal_session(&ring(), to, echo, &mut out).unwrap();
        let _ = y.opener.open(&ring(), &out);
        moved = true;
    }
    moved
}

/// `a` and `b` after the exchange that teaches each the other's boot.
fn pair() -> (End, End) {
    let (mut a, mut b) = (End::new(7, 70), End::new(2, 20));
    connect(&mut a, &mut b);
    (a, b)
}

/// Runs the first exchange from `a` to `b`; afterwards `a`'s frames reach
/// `b` (and `b`'s reach `a`).
fn connect(a: &mut End, b: &mut End) {
    assert_eq!(a.send(b, &hello()), Err(DropReason::Unfresh));
    assert!(a.opener.peer_boot(b.id()).is_some());
    assert!(b.opener.peer_boot(a.id()).is_some());
}

#[test]
fn round_trip() {
    let (mut a, mut b) = pair();
    let (opened, frame) = a.send(&mut b, &hello()).unwrap();
    assert_eq!(
        (opened.sender, opened.boot, opened.session),
        (7, boot(70), false)
    );
    assert_eq!(frame, hello());
    let (back, _) = b.send(&mut a, &hello()).unwrap();
    assert_eq!(back.sender, 2);
}

#[test]
fn the_first_datagram_teaches_boots_and_is_answered_not_delivered() {
    let (mut a, mut b) = (End::new(7, 70), End::new(2, 20));
    let d = a.seal_for(2, &hello());
    assert_eq!(peek_header(&d).unwrap().receiver_boot, 0);
    assert_eq!(b.opener.open(&ring(), &d), Err(DropReason::Unfresh));
    assert_eq!(b.opener.drops.get(DropReason::Unfresh), 1);
    assert_eq!(b.opener.peer_boot(7), Some(boot(70)));
    assert_eq!(b.opener.poll_reply(), Some((7, boot(70))));
    assert_eq!(b.opener.poll_reply(), None);
    let mut reply = Vec::new();
    b.sealer
        .seal_session(&ring(), 7, boot(70), &mut reply)
        .unwrap();
    assert_eq!(reply.len(), HEADER_BYTES + TAG_BYTES, "an empty frame");
    // Fresh for `a` but from a boot it meets for the first time: learned.
    assert_eq!(a.opener.open(&ring(), &reply), Err(DropReason::Unfresh));
    assert_eq!(a.opener.peer_boot(2), Some(boot(20)));
    assert_eq!(
        a.opener.poll_reply(),
        None,
        "session datagrams are not answered"
    );
    assert!(a.send(&mut b, &hello()).is_ok());
}

#[test]
fn replay_is_dropped_and_counted() {
    let (mut a, mut b) = pair();
    let d = a.seal_for(2, &hello());
    b.opener.open(&ring(), &d).unwrap();
    assert_eq!(b.opener.open(&ring(), &d), Err(DropReason::Replayed));
    assert_eq!(b.opener.drops.get(DropReason::Replayed), 1);
}

#[test]
fn reordering_within_the_window_is_accepted_once() {
    let (mut a, mut b) = pair();
    let ds: Vec<_> = (0..10).map(|_| a.seal_for(2, &hello())).collect();
    for i in [9, 0, 5, 3, 1, 2, 4, 6, 8, 7] {
        b.opener.open(&ring(), &ds[i]).unwrap();
    }
    for d in &ds {
        assert_eq!(b.opener.open(&ring(), d), Err(DropReason::Replayed));
    }
}

#[test]
fn too_old_for_the_window_is_replayed() {
    let (mut a, mut b) = pair();
    let first = a.seal_for(2, &hello());
    for _ in 0..REPLAY_WINDOW + 1 {
        b.opener.open(&ring(), &a.seal_for(2, &hello())).unwrap();
    }
    assert_eq!(b.opener.open(&ring(), &first), Err(DropReason::Replayed));
}

fn update(fill: u8) -> Frame {
    Frame {
        body: Some(frame::Body::Update(proto::overlay::Update {
            update_seq: 1,
            records: vec![proto::overlay::Record {
                node: 1,
                kind: 2,
                version: 2,
                data: vec![fill; 64].into(),
            }],
            acks: vec![],
        })),
    }
}

/// Issue 12, finding 2: the key was derived from `(sender, epoch)` with the
/// epoch from the wall clock, so two boots with one clock reading sealed
/// with one key and one nonce sequence (plaintext XOR leaked, tags
/// forgeable). The key now rests on each boot's random bits.
#[test]
fn nonce_unique_when_clock_repeats() {
    // Two boots of sender 7 on a machine whose clock reads the same each
    // time: nothing of the clock reaches the envelope; each boot draws.
    let mut a = Sealer::new(7, boot(0x1111));
    let mut b = Sealer::new(7, boot(0x2222));
    let (f1, f2) = (update(0x11), update(0x22));
    let (mut d1, mut d2) = (Vec::new(), Vec::new());
    a.seal(&ring(), 2, None, &f1, &mut d1).unwrap();
    b.seal(&ring(), 2, None, &f2, &mut d2).unwrap();
    let body = |d: &[u8]| d[HEADER_BYTES..d.len() - TAG_BYTES].to_vec();
    let xor = |x: &[u8], y: &[u8]| x.iter().zip(y).map(|(p, q)| p ^ q).collect::<Vec<u8>>();
    let pt_xor = xor(&f1.encode_to_vec(), &f2.encode_to_vec());
    assert_ne!(xor(&body(&d1), &body(&d2)), pt_xor, "key and nonce reused");
    // The boot is in the header (and the associated data).
    assert_eq!(peek_header(&d1).unwrap().sender_boot, 0x1111);
    assert_eq!(Boot::from_random(0).get(), 1, "zero is reserved");
}

/// Issue 12, finding 2: a sender restarted with its clock stepped back was
/// refused as `stale_epoch` until every receiver restarted. Boots are
/// ordered by the receiver's first sight, not by any clock.
#[test]
fn restarted_sender_with_clock_stepped_back_is_accepted() {
    let (mut before, mut r) = pair();
    before.send(&mut r, &hello()).unwrap();
    let old = before.seal_for(2, &hello());
    // Restarted (any boot bits: no clock is involved).
    let mut after = End::new(7, 5);
    assert_eq!(after.send(&mut r, &hello()), Err(DropReason::Unfresh));
    let (o, _) = after.send(&mut r, &hello()).unwrap();
    assert_eq!(o.boot, boot(5));
    // The old boot's datagrams are refused from now on, without decrypting.
    assert_eq!(r.opener.open(&ring(), &old), Err(DropReason::StaleEpoch));
    // Receiver-initiated: a restarted sender learns from the receiver's
    // datagram and gets in as well.
    let mut again = End::new(7, 3);
    assert_eq!(r.send(&mut again, &hello()), Err(DropReason::Unfresh));
    assert!(again.send(&mut r, &hello()).is_ok());
    assert!(r.send(&mut again, &hello()).is_ok());
}

/// Issue 12, finding 4: the replay window lives in memory, so a restarted
/// receiver accepted captured datagrams again (old Cfg, old acks). A
/// datagram must echo the receiver's current boot.
#[test]
fn replay_after_receiver_restart_is_dropped() {
    let (mut s, mut r) = pair();
    let captured: Vec<Vec<u8>> = (0..3).map(|_| s.seal_for(2, &hello())).collect();
    for d in &captured {
        r.opener.open(&ring(), d).unwrap();
    }
    let mut restarted = End::new(2, 21);
    for d in &captured {
        assert_eq!(
            restarted.opener.open(&ring(), d),
            Err(DropReason::Unfresh),
            "replayed capture"
        );
    }
    assert_eq!(restarted.opener.drops.get(DropReason::Unfresh), 3);
    // The live sender gets through after one exchange.
    pump(&mut s, &mut restarted);
    assert!(s.send(&mut restarted, &hello()).is_ok());
    for d in &captured {
        assert!(restarted.opener.open(&ring(), d).is_err());
    }
}

/// After a receiver restarts, a sender that was talking with it both ways
/// gets through after one exchange: it echoes the boot it just saw proven
/// alive, not the one it delivered from before.
#[test]
fn a_restarted_receiver_is_reached_after_one_exchange() {
    let (mut s, mut r) = pair();
    assert!(s.send(&mut r, &hello()).is_ok());
    assert!(r.send(&mut s, &hello()).is_ok(), "s delivers from r's boot");
    let mut restarted = End::new(2, 22);
    assert_eq!(s.send(&mut restarted, &hello()), Err(DropReason::Unfresh));
    assert_eq!(s.opener.peer_boot(2), Some(boot(22)));
    assert!(s.send(&mut restarted, &hello()).is_ok());
    assert!(restarted.send(&mut s, &hello()).is_ok());
}

#[test]
fn a_replayed_old_boot_does_not_mislead_a_receiver() {
    let (mut old, mut r) = pair();
    let captured = old.seal_for(2, &hello());
    let mut new = End::new(7, 71);
    connect(&mut new, &mut r);
    assert!(new.send(&mut r, &hello()).is_ok());
    // The old boot's datagram is refused before decryption, and the
    // receiver keeps echoing the new boot.
    assert_eq!(
        r.opener.open(&ring(), &captured),
        Err(DropReason::StaleEpoch)
    );
    assert_eq!(r.opener.peer_boot(7), Some(boot(71)));
    assert_eq!(r.opener.poll_reply(), None);
    assert!(r.send(&mut new, &hello()).is_ok());
}

#[test]
fn tampered_byte_anywhere_fails_authentication() {
    let (mut a, b) = pair();
    let d = a.seal_for(2, &hello());
    for i in 3..d.len() {
        let mut t = d.clone();
        t[i] ^= 0x40;
        let mut o = Opener::new(2, b.opener.boot());
        let r = o.open(&ring(), &t);
        // The addressee is checked on the header, before decryption.
        let want = match i {
            3 => DropReason::UnknownKey,
            8..12 => DropReason::Misdirected,
            _ => DropReason::AuthFailed,
        };
        assert_eq!(r, Err(want), "byte {i}");
    }
}

#[test]
fn a_datagram_for_another_instance_is_misdirected() {
    let mut out = Vec::new();
    Sealer::new(7, boot(1))
        .seal(&ring(), 3, None, &hello(), &mut out)
        .unwrap();
    assert_eq!(
        Opener::new(2, boot(2)).open(&ring(), &out),
        Err(DropReason::Misdirected)
    );
}

#[test]
fn sequences_count_per_receiver() {
    let (mut a, mut b) = pair();
    let mut out = Vec::new();
    for _ in 0..200 {
        a.sealer.seal(&ring(), 3, None, &hello(), &mut out).unwrap();
    }
    let late_for_2 = a.seal_for(2, &hello());
    assert_eq!(peek_header(&late_for_2).unwrap().seq, 2);
    assert!(b.opener.open(&ring(), &late_for_2).is_ok());
}

#[test]
fn forged_with_another_key_fails() {
    let other = KeyRing::single(1, &ClusterKey::from_seed(43));
    let mut out = Vec::new();
    Sealer::new(7, boot(1))
        .seal(&other, 2, None, &hello(), &mut out)
        .unwrap();
    assert_eq!(
        Opener::new(2, boot(2)).open(&ring(), &out),
        Err(DropReason::AuthFailed)
    );
}

#[test]
fn header_checks() {
    let (mut a, mut b) = pair();
    let d = a.seal_for(2, &hello());
    let o = &mut b.opener;
    let before = o.drops.total();
    assert_eq!(o.open(&ring(), &d[..10]), Err(DropReason::Truncated));
    assert_eq!(o.open(&ring(), &[]), Err(DropReason::Truncated));
    assert_eq!(
        o.open(&ring(), &vec![0u8; MAX_DATAGRAM_BYTES + 1]),
        Err(DropReason::Oversized)
    );
    let mut m = d.clone();
    m[0] = b'X';
    assert_eq!(o.open(&ring(), &m), Err(DropReason::BadMagic));
    let mut v = d.clone();
    v[2] = 1;
    assert_eq!(o.open(&ring(), &v), Err(DropReason::BadVersion), "v1");
    let mut z = d.clone();
    z[12..20].fill(0);
    assert_eq!(o.open(&ring(), &z), Err(DropReason::AuthFailed), "boot 0");
    assert_eq!(o.drops.total() - before, 6);
}

#[test]
fn authentic_garbage_is_malformed() {
    // A sender with the key that seals bytes which are not a Frame.
    let keys = ring();
    let mut out = Vec::new();
    write_header(&mut out, 1, [7, 2], [70, 20], 1);
    let header: [u8; HEADER_BYTES] = out[..].try_into().unwrap();
    let mut body = vec![0xff, 0xff, 0xff, 0xff];
    derive(&keys.get(1).unwrap(), 7, 70)
        .encrypt_in_place(&nonce(&header), &header, &mut body)
        .unwrap();
    out.extend_from_slice(&body);
    let mut o = Opener::new(2, boot(20));
    // Known boot of 7 first (it must have been seen), then the garbage.
    let mut first = Vec::new();
    Sealer::new(7, boot(70))
        .seal(&keys, 2, Some(boot(20)), &hello(), &mut first)
        .unwrap();
    assert_eq!(o.open(&keys, &first), Err(DropReason::Unfresh));
    assert_eq!(o.open(&keys, &out), Err(DropReason::Malformed));
}

#[test]
fn key_rotation_accepts_old_and_new() {
    let mut a = KeyRing::single(1, &ClusterKey::from_seed(1));
    a.insert(2, &ClusterKey::from_seed(2));
    let mut b = KeyRing::single(1, &ClusterKey::from_seed(1));
    b.insert(2, &ClusterKey::from_seed(2));
    assert!(b.set_primary(2));
    let mut out = Vec::new();
    Sealer::new(3, boot(3))
        .seal(&b, 2, None, &hello(), &mut out)
        .unwrap();
    assert_eq!(out[3], 2);
    // Authentic (it is answered), though not yet fresh.
    let mut o = Opener::new(2, boot(2));
    assert_eq!(o.open(&a, &out), Err(DropReason::Unfresh));
    assert_eq!(o.poll_reply(), Some((3, boot(3))));
    assert!(!b.set_primary(9));
}

#[test]
fn shared_rings_rotate_at_run_time() {
    let ring = KeyRing::single(1, &ClusterKey::from_seed(1));
    let mut admin = ring.share();
    admin.insert(2, &ClusterKey::from_seed(2));
    assert_eq!(ring.ids(), vec![1, 2]);
    assert!(!admin.remove(1), "the primary cannot be retired");
    assert!(admin.set_primary(2));
    let mut out = Vec::new();
    Sealer::new(3, boot(3))
        .seal(&ring, 2, None, &hello(), &mut out)
        .unwrap();
    assert_eq!(out[3], 2);
    assert!(admin.remove(1));
    assert!(!admin.remove(7));
    assert_eq!((ring.ids(), ring.primary()), (vec![2], 2));
    let old = KeyRing::single(1, &ClusterKey::from_seed(1));
    let mut stale = Vec::new();
    Sealer::new(4, boot(4))
        .seal(&old, 2, None, &hello(), &mut stale)
        .unwrap();
    assert_eq!(
        Opener::new(2, boot(2)).open(&ring, &stale),
        Err(DropReason::UnknownKey)
    );
}

#[test]
fn key_parsing() {
    assert!(ClusterKey::from_hex(&"ab".repeat(32)).is_ok());
    assert_eq!(ClusterKey::from_hex("abc").err(), Some(KeyError::Length(3)));
    assert_eq!(
        ClusterKey::from_hex(&"zz".repeat(32)).err(),
        Some(KeyError::NotHex)
    );
}

#[test]
fn key_from_hex_refuses_non_ascii_without_panicking() {
    // 64 bytes, but 32 two-byte characters: slicing by bytes would split
    // a character (issue 12, finding 11).
    let text = "é".repeat(32);
    assert_eq!(text.len(), 64);
    assert_eq!(ClusterKey::from_hex(&text).err(), Some(KeyError::NotHex));
    let mixed = format!("{}é{}", "a".repeat(31), "b".repeat(31));
    assert_eq!(ClusterKey::from_hex(&mixed).err(), Some(KeyError::NotHex));
    assert!(ClusterKey::from_hex(&"+1".repeat(32)).is_err(), "no signs");
}

proptest::proptest! {
    #[test]
    fn random_bytes_never_panic(d in proptest::collection::vec(proptest::num::u8::ANY, 0..1500)) {
        let _ = Opener::new(2, boot(2)).open(&ring(), &d);
    }

    #[test]
    fn random_bytes_behind_a_valid_header_never_panic(tail in proptest::collection::vec(proptest::num::u8::ANY, 0..1400)) {
        let (mut a, mut b) = pair();
        let mut d = a.seal_for(2, &hello())[..HEADER_BYTES].to_vec();
        d.extend_from_slice(&tail);
        let _ = b.opener.open(&ring(), &d);
    }
}

#[test]
fn cheap_checks_run_before_decryption() {
    let (mut a, mut b) = pair();
    let d = a.seal_for(2, &hello());
    let mut o = Opener::new(2, b.opener.boot()).with_senders(5);
    assert_eq!(o.open(&ring(), &d), Err(DropReason::UnknownSender));
    b.opener.open(&ring(), &d).unwrap();
    // A replayed header with a broken tag is rejected as replayed: the
    // window is consulted before any decryption.
    let mut t = d.clone();
    let last = t.len() - 1;
    t[last] ^= 1;
    assert_eq!(b.opener.open(&ring(), &t), Err(DropReason::Replayed));
    // A forged datagram never moves the window.
    let mut f = a.seal_for(2, &hello());
    let last = f.len() - 1;
    f[last] ^= 1;
    assert_eq!(b.opener.open(&ring(), &f), Err(DropReason::AuthFailed));
    assert!(b.opener.open(&ring(), &a.seal_for(2, &hello())).is_ok());
    // Forged unfresh datagrams create no state and ask for no reply.
    let mut g = Vec::new();
    Sealer::new(4, boot(4))
        .seal(
            &KeyRing::single(1, &ClusterKey::from_seed(9)),
            2,
            None,
            &hello(),
            &mut g,
        )
        .unwrap();
    assert_eq!(b.opener.open(&ring(), &g), Err(DropReason::AuthFailed));
    assert_eq!((b.opener.peer_boot(4), b.opener.poll_reply()), (None, None));
}

#[test]
fn boots_per_sender_are_bounded_and_keep_the_current_one() {
    let (mut s, mut r) = pair();
    assert!(s.send(&mut r, &hello()).is_ok());
    for bits in 100..100 + 2 * BOOTS_PER_SENDER_MAX as u64 {
        let mut other = End::new(7, bits);
        let d = other.seal_for(2, &hello());
        assert_eq!(r.opener.open(&ring(), &d), Err(DropReason::Unfresh));
    }
    assert!(r.opener.peers[&7].boots.len() <= BOOTS_PER_SENDER_MAX);
    assert_eq!(r.opener.peer_boot(7), Some(boot(70)), "the current boot");
    assert!(s.send(&mut r, &hello()).is_ok());
}

#[test]
fn exhausted_sequences_are_refused_not_reused() {
    let mut s = Sealer::new(7, boot(7));
    s.seqs.insert(2, u64::MAX);
    let mut out = vec![1, 2, 3];
    assert_eq!(
        s.seal(&ring(), 2, None, &hello(), &mut out),
        Err(SealError::SequenceExhausted(2))
    );
    assert!(out.is_empty());
}

#[test]
fn peek_header_reads_every_field() {
    let (mut a, _b) = pair();
    let d = a.seal_for(2, &hello());
    let h = peek_header(&d).unwrap();
    assert_eq!(
        (
            h.key_id,
            h.sender,
            h.receiver,
            h.sender_boot,
            h.receiver_boot,
            h.seq
        ),
        (1, 7, 2, 70, 20, 2)
    );
    assert_eq!(peek_header(&d[..20]), Err(DropReason::Truncated));
}
