//! Property tests of the overlay's codecs: any frame sealed into an
//! envelope opens to the same frame (once), records survive the wire
//! conversion, and a datagram with any single byte changed never opens.

use bytes::Bytes;
use overlay::envelope::{Boot, ClusterKey, DropReason, KeyRing, Opener, Sealer, peek_header};
use overlay::{Key, Kind, Record};
use proptest::prelude::*;
use proto::overlay::{Ack, Frame, Gossip, Hello, Update, frame};

fn record() -> impl Strategy<Value = Record> {
    let kind = prop_oneof![Just(Kind::Cfg), Just(Kind::Dsc)];
    let data = prop::collection::vec(any::<u8>(), 0..48);
    (any::<u32>(), kind, any::<u64>(), data).prop_map(|(node, kind, version, data)| Record {
        key: Key { node, kind },
        version,
        data: Bytes::from(data),
    })
}

fn acks() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(any::<u64>(), 0..8)
}

fn hello() -> impl Strategy<Value = Hello> {
    let a = (
        any::<u64>(),
        any::<u32>(),
        acks(),
        any::<u32>(),
        any::<bool>(),
    );
    let b = (
        any::<u32>(),
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec((any::<u32>(), any::<u64>()), 0..4),
    );
    (a, b).prop_map(|((in_digest, in_count, acks, hello_ms, seen), b)| Hello {
        in_digest,
        in_count,
        acks,
        hello_ms,
        seen,
        claim_leader: b.0,
        claim_epoch: b.1,
        fallback: b.2,
        home: b.3,
        stale: b
            .4
            .into_iter()
            .map(|(node, version)| proto::overlay::VersionHint { node, version })
            .collect(),
    })
}

fn frame() -> impl Strategy<Value = Frame> {
    let update = (any::<u64>(), prop::collection::vec(record(), 0..12), acks()).prop_map(
        |(update_seq, records, acks)| {
            frame::Body::Update(Update {
                update_seq,
                records: records.iter().map(Record::to_wire).collect(),
                acks,
            })
        },
    );
    let gossip = (any::<u32>(), prop::collection::vec(any::<u8>(), 0..200)).prop_map(|(g, p)| {
        frame::Body::Gossip(Gossip {
            group: g,
            payload: p,
        })
    });
    let body = prop_oneof![
        hello().prop_map(frame::Body::Hello),
        update,
        acks().prop_map(|acks| frame::Body::Ack(Ack { acks })),
        gossip,
    ];
    prop::option::of(body).prop_map(|body| Frame { body })
}

fn keys() -> KeyRing {
    KeyRing::single(7, &ClusterKey::from_seed(3))
}

proptest! {
    #[test]
    fn a_sealed_frame_opens_to_itself_once(f in frame(), from in 0u32..1000, bits in any::<u64>()) {
        let (mine, theirs) = (Boot::from_random(bits), Boot::from_random(!bits));
        let mut s = Sealer::new(from, mine);
        let mut o = Opener::new(5, theirs);
        // The first datagram only introduces the sender's boot.
        let mut out = Vec::new();
        s.seal(&keys(), 5, None, &f, &mut out).unwrap();
        prop_assert_eq!(o.open(&keys(), &out), Err(DropReason::Unfresh));
        s.seal(&keys(), 5, Some(theirs), &f, &mut out).unwrap();
        let h = peek_header(&out).unwrap();
        let fields = (h.key_id, h.sender, h.receiver, h.sender_boot, h.receiver_boot, h.seq);
        prop_assert_eq!(fields, (7, from, 5, mine.get(), theirs.get(), 2));
        let (opened, back) = o.open(&keys(), &out).unwrap();
        prop_assert_eq!(opened.sender, from);
        prop_assert_eq!(opened.session, f.body.is_none());
        prop_assert_eq!(back, f);
        prop_assert_eq!(o.open(&keys(), &out), Err(DropReason::Replayed));
    }

    #[test]
    fn records_survive_the_wire(r in record()) {
        prop_assert_eq!(Record::from_wire(r.to_wire()), Some(r));
    }

    #[test]
    fn no_single_byte_change_opens(f in frame(), at in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let mut out = Vec::new();
        let theirs = Boot::from_random(5);
        Sealer::new(3, Boot::from_random(3)).seal(&keys(), 5, Some(theirs), &f, &mut out).unwrap();
        let i = at.index(out.len());
        out[i] ^= flip;
        prop_assert!(Opener::new(5, theirs).open(&keys(), &out).is_err(), "byte {} changed and opened", i);
    }

    #[test]
    fn any_bytes_are_rejected_without_panic(d in prop::collection::vec(any::<u8>(), 0..1500)) {
        let _ = peek_header(&d);
        prop_assert!(Opener::new(5, Boot::from_random(5)).open(&keys(), &d).is_err());
    }
}
