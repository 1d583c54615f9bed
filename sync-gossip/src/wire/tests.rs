use super::*;
use foca::Codec;

fn id(node: NodeId, incarnation: u64) -> MemberId {
    MemberId { node, incarnation }
}

fn all_messages() -> Vec<Message<MemberId>> {
    let t = id(7, 1 << 40);
    vec![
        Message::Ping(1),
        Message::Ack(2),
        Message::PingReq {
            target: t,
            probe_number: 3,
        },
        Message::IndirectPing {
            origin: t,
            probe_number: 4,
        },
        Message::IndirectAck {
            target: t,
            probe_number: 5,
        },
        Message::ForwardedAck {
            origin: t,
            probe_number: 6,
        },
        Message::Announce,
        Message::Feed,
        Message::Gossip,
        Message::Broadcast,
        Message::TurnUndead,
    ]
}

#[test]
fn headers_round_trip() {
    for message in all_messages() {
        let h = Header {
            src: id(1, 2),
            src_incarnation: 300,
            dst: id(500, 0),
            message,
        };
        let mut buf = Vec::new();
        WireCodec.encode_header(&h, &mut buf).expect("room");
        let back = WireCodec.decode_header(&buf[..]).expect("decodes");
        assert_eq!(back, h);
    }
}

#[test]
fn members_round_trip_and_never_dirty_a_full_buffer() {
    for state in [State::Alive, State::Suspect, State::Down] {
        let m = Member::new(id(9, u64::MAX), u16::MAX, state);
        let mut buf = Vec::new();
        WireCodec.encode_member(&m, &mut buf).expect("room");
        assert_eq!(WireCodec.decode_member(&buf[..]).expect("decodes"), m);
        let mut small = [0u8; 4];
        let mut slice = &mut small[..];
        assert_eq!(
            WireCodec.encode_member(&m, &mut slice),
            Err(WireError::NoRoom)
        );
        assert_eq!(small, [0u8; 4], "untouched");
    }
}

#[test]
fn items_and_payloads_round_trip() {
    let r = Record {
        key: Key {
            node: 42,
            kind: Kind::Dsc,
        },
        version: 1 << 33,
        data: Bytes::from_static(b"state"),
    };
    for item in [
        Item::Record(r.clone()),
        Item::Acting(Acting {
            member: 3,
            epoch: 9,
        }),
    ] {
        assert_eq!(Item::decode(&item.encode()).expect("decodes"), item);
    }
    let d = Digest {
        reply: true,
        acting: Acting {
            member: 1,
            epoch: 2,
        },
        buckets: [7; DIGEST_BUCKETS],
    };
    match decode_payload(&digest_payload(&d)).expect("decodes") {
        Payload::Digest(back) => assert_eq!(*back, d),
        other => panic!("wrong payload {other:?}"),
    }
    let id = MemberId {
        node: 4,
        incarnation: 77,
    };
    match decode_payload(&down_payload(&id)).expect("decodes") {
        Payload::Down(back) => assert_eq!(back, id),
        other => panic!("wrong payload {other:?}"),
    }
    let recs = vec![r.clone(), r];
    let p = records_payload(&recs);
    assert_eq!(
        p.len(),
        RECORDS_PAYLOAD_HEADER_BYTES + 2 * record_len(&recs[0])
    );
    match decode_payload(&p).expect("decodes") {
        Payload::Records(back) => assert_eq!(back, recs),
        other => panic!("wrong payload {other:?}"),
    }
}

#[test]
fn garbage_is_an_error_never_a_panic() {
    let mut rng = crate::rng::SeededRng::new(5);
    for len in 0..200usize {
        for _ in 0..20 {
            let bytes: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
            let _ = decode_payload(&bytes);
            let _ = payload_kind(&bytes);
            let _ = Item::decode(&bytes);
            let _ = WireCodec.decode_header(&bytes[..]);
            let _ = WireCodec.decode_member(&bytes[..]);
        }
    }
}

#[test]
fn summaries_and_own_versions_round_trip_and_stay_small() {
    let acting = Acting {
        member: 300,
        epoch: 2,
    };
    let s = Summary {
        acting,
        hash: buckets_hash(&[3; DIGEST_BUCKETS]),
    };
    let p = summary_payload(&s);
    assert!(p.len() <= 16, "a summary is {} bytes", p.len());
    assert_eq!(payload_kind(&p), "gossip summary");
    match decode_payload(&p).expect("decodes") {
        Payload::Summary(back) => assert_eq!(back, s),
        other => panic!("wrong payload {other:?}"),
    }
    assert_ne!(s.hash, buckets_hash(&[4; DIGEST_BUCKETS]));
    let o = Own {
        acting,
        version: 1 << 40,
    };
    for held in [false, true] {
        let p = own_payload(&o, held);
        assert_eq!(payload_kind(&p), "gossip own version");
        match (decode_payload(&p).expect("decodes"), held) {
            (Payload::Own(back), false) | (Payload::OwnHeld(back), true) => assert_eq!(back, o),
            (other, _) => panic!("wrong payload {other:?}"),
        }
    }
}
