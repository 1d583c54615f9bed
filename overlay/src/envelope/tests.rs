//! Every rejection reason, and a round trip.

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

fn sealed(sealer: &mut Sealer) -> Vec<u8> {
    let mut out = Vec::new();
    sealer.seal(&ring(), 2, &hello(), &mut out);
    out
}

#[test]
fn round_trip() {
    let mut s = Sealer::new(7, 1);
    let d = sealed(&mut s);
    let mut o = Opener::new(2);
    let (opened, frame) = o.open(&ring(), &d).unwrap();
    assert_eq!(opened.sender, 7);
    assert_eq!(frame, hello());
}

#[test]
fn replay_is_dropped_and_counted() {
    let mut s = Sealer::new(7, 1);
    let d = sealed(&mut s);
    let mut o = Opener::new(2);
    o.open(&ring(), &d).unwrap();
    assert_eq!(o.open(&ring(), &d), Err(DropReason::Replayed));
    assert_eq!(o.drops.get(DropReason::Replayed), 1);
}

#[test]
fn reordering_within_the_window_is_accepted_once() {
    let mut s = Sealer::new(7, 1);
    let ds: Vec<_> = (0..10).map(|_| sealed(&mut s)).collect();
    let mut o = Opener::new(2);
    for i in [9, 0, 5, 3, 1, 2, 4, 6, 8, 7] {
        o.open(&ring(), &ds[i]).unwrap();
    }
    for d in &ds {
        assert_eq!(o.open(&ring(), d), Err(DropReason::Replayed));
    }
}

#[test]
fn too_old_for_the_window_is_replayed() {
    let mut s = Sealer::new(7, 1);
    let first = sealed(&mut s);
    let mut o = Opener::new(2);
    for _ in 0..REPLAY_WINDOW + 1 {
        o.open(&ring(), &sealed(&mut s)).unwrap();
    }
    assert_eq!(o.open(&ring(), &first), Err(DropReason::Replayed));
}

#[test]
fn restart_with_a_higher_epoch_is_accepted_and_old_epoch_is_stale() {
    let mut old = Sealer::new(7, 1);
    let old_d = sealed(&mut old);
    let mut new = Sealer::new(7, 2);
    let mut o = Opener::new(2);
    o.open(&ring(), &sealed(&mut new)).unwrap();
    assert_eq!(o.open(&ring(), &old_d), Err(DropReason::StaleEpoch));
}

#[test]
fn tampered_byte_anywhere_fails_authentication() {
    let mut s = Sealer::new(7, 1);
    let d = sealed(&mut s);
    for i in 3..d.len() {
        let mut t = d.clone();
        t[i] ^= 0x40;
        let r = Opener::new(2).open(&ring(), &t);
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
    Sealer::new(7, 1).seal(&ring(), 3, &hello(), &mut out);
    assert_eq!(
        Opener::new(2).open(&ring(), &out),
        Err(DropReason::Misdirected)
    );
}

#[test]
fn sequences_count_per_receiver() {
    let mut s = Sealer::new(7, 1);
    let mut out = Vec::new();
    for _ in 0..200 {
        s.seal(&ring(), 3, &hello(), &mut out);
    }
    let late_for_2 = sealed(&mut s);
    let mut o = Opener::new(2);
    assert!(o.open(&ring(), &late_for_2).is_ok());
}

#[test]
fn forged_with_another_key_fails() {
    let other = KeyRing::single(1, &ClusterKey::from_seed(43));
    let mut out = Vec::new();
    Sealer::new(7, 1).seal(&other, 2, &hello(), &mut out);
    assert_eq!(
        Opener::new(2).open(&ring(), &out),
        Err(DropReason::AuthFailed)
    );
}

#[test]
fn header_checks() {
    let mut s = Sealer::new(7, 1);
    let d = sealed(&mut s);
    let mut o = Opener::new(2);
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
    v[2] = 9;
    assert_eq!(o.open(&ring(), &v), Err(DropReason::BadVersion));
    assert_eq!(o.drops.total(), 5);
}

#[test]
fn authentic_garbage_is_malformed() {
    // A sender with the key that seals bytes which are not a Frame.
    let keys = ring();
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(1);
    out.extend_from_slice(&7u32.to_be_bytes());
    out.extend_from_slice(&2u32.to_be_bytes());
    out.extend_from_slice(&1u64.to_be_bytes());
    out.extend_from_slice(&1u64.to_be_bytes());
    let header: [u8; HEADER_BYTES] = out[..].try_into().unwrap();
    let mut body = vec![0xff, 0xff, 0xff, 0xff];
    derive(&keys.get(1).unwrap(), 7, 1)
        .encrypt_in_place(&nonce(&header), &header, &mut body)
        .unwrap();
    out.extend_from_slice(&body);
    assert_eq!(Opener::new(2).open(&keys, &out), Err(DropReason::Malformed));
}

#[test]
fn key_rotation_accepts_old_and_new() {
    let mut a = KeyRing::single(1, &ClusterKey::from_seed(1));
    a.insert(2, &ClusterKey::from_seed(2));
    let mut b = KeyRing::single(1, &ClusterKey::from_seed(1));
    b.insert(2, &ClusterKey::from_seed(2));
    assert!(b.set_primary(2));
    let mut out = Vec::new();
    Sealer::new(3, 1).seal(&b, 2, &hello(), &mut out);
    assert_eq!(out[3], 2);
    assert!(Opener::new(2).open(&a, &out).is_ok());
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
    Sealer::new(3, 1).seal(&ring, 2, &hello(), &mut out);
    assert_eq!(out[3], 2);
    assert!(admin.remove(1));
    assert!(!admin.remove(7));
    assert_eq!((ring.ids(), ring.primary()), (vec![2], 2));
    let old = KeyRing::single(1, &ClusterKey::from_seed(1));
    let mut stale = Vec::new();
    Sealer::new(4, 1).seal(&old, 2, &hello(), &mut stale);
    assert_eq!(
        Opener::new(2).open(&ring, &stale),
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
        let _ = Opener::new(2).open(&ring(), &d);
    }

    #[test]
    fn random_bytes_behind_a_valid_header_never_panic(tail in proptest::collection::vec(proptest::num::u8::ANY, 0..1400)) {
        let mut d = sealed(&mut Sealer::new(1, 1))[..HEADER_BYTES].to_vec();
        d.extend_from_slice(&tail);
        let _ = Opener::new(2).open(&ring(), &d);
    }
}

#[test]
fn cheap_checks_run_before_decryption() {
    let mut s = Sealer::new(7, 1);
    let d = sealed(&mut s);
    let mut o = Opener::new(2).with_senders(5);
    assert_eq!(o.open(&ring(), &d), Err(DropReason::UnknownSender));
    let mut o = Opener::new(2);
    o.open(&ring(), &d).unwrap();
    // A replayed header with a broken tag is rejected as replayed: the
    // window is consulted before any decryption.
    let mut t = d.clone();
    let last = t.len() - 1;
    t[last] ^= 1;
    assert_eq!(o.open(&ring(), &t), Err(DropReason::Replayed));
    // A forged datagram never moves the window.
    let mut f = sealed(&mut s);
    let last = f.len() - 1;
    f[last] ^= 1;
    assert_eq!(o.open(&ring(), &f), Err(DropReason::AuthFailed));
    assert!(o.open(&ring(), &sealed(&mut s)).is_ok());
}

#[test]
fn peek_header_reads_every_field() {
    let mut s = Sealer::new(7, 9);
    let d = sealed(&mut s);
    let h = peek_header(&d).unwrap();
    assert_eq!(
        (h.key_id, h.sender, h.receiver, h.epoch, h.seq),
        (1, 7, 2, 9, 1)
    );
    assert_eq!(peek_header(&d[..20]), Err(DropReason::Truncated));
}
