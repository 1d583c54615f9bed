//! Round trips and garbage input for the generated codecs.

use crate::node::{Node, PhysState, RunState};
use crate::overlay::{Frame, Hello, Record, RecordKind, Update, frame};
use prost::Message;

#[test]
fn node_round_trip() {
    let n = Node {
        nodename: "n0001".into(),
        run_state: RunState::Sync as i32,
        phys_state: PhysState::PowerOn as i32,
        ..Default::default()
    };
    let bytes = n.encode_to_vec();
    assert_eq!(Node::decode(bytes.as_slice()).unwrap(), n);
}

#[test]
fn frame_round_trip() {
    let f = Frame {
        body: Some(frame::Body::Update(Update {
            update_seq: 7,
            records: vec![Record {
                node: 3,
                kind: RecordKind::Dsc as i32,
                version: 9,
                data: vec![1, 2, 3].into(),
            }],
            acks: vec![1, 2],
        })),
    };
    let bytes = f.encode_to_vec();
    assert_eq!(Frame::decode(bytes.as_slice()).unwrap(), f);
    let h = Frame {
        body: Some(frame::Body::Hello(Hello::default())),
    };
    assert_eq!(Frame::decode(h.encode_to_vec().as_slice()).unwrap(), h);
}

#[test]
fn garbage_and_truncated_input_is_an_error_not_a_panic() {
    let mut state = 0x1234_5678_u64;
    for len in 0..300 {
        let buf: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let _ = Frame::decode(buf.as_slice());
        let _ = Node::decode(buf.as_slice());
    }
    let good = Frame {
        body: Some(frame::Body::Hello(Hello {
            acks: vec![1, 2, 3],
            ..Default::default()
        })),
    }
    .encode_to_vec();
    for cut in 0..good.len() {
        let _ = Frame::decode(&good[..cut]);
    }
    assert!(Frame::decode(&[0xff, 0xff, 0xff][..]).is_err());
}
