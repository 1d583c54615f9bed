//! Fuzz target: the frame and record decoders behind the envelope, and a
//! tree core fed whatever decodes. Must never panic; an authentic frame
//! must survive a seal and open round trip unchanged.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use overlay::envelope::{Boot, ClusterKey, KeyRing, Opener, Sealer};
use overlay::strategy::MAX_DATAGRAM_BYTES;
use overlay::tree::Tree;
use overlay::{Instance, Record};
use proto::overlay::{Frame, frame};
use proto::prost::Message;
use sync_tree::{TreeConfig, TreeCore};

fn tree() -> Arc<Tree> {
    static TREE: OnceLock<Arc<Tree>> = OnceLock::new();
    TREE.get_or_init(|| {
        let topo = topo::generate::generate(&topo::generate::GenSpec {
            cluster: "fuzz".into(),
            nodes: 6,
            racks: 2,
            levels: 2,
            sync: topo::SyncSettings::default(),
        });
        Arc::new(Tree::from_flat(&topo.flatten()).expect("a generated tree is valid"))
    })
    .clone()
}

fuzz_target!(|data: &[u8]| {
    let Some((&from, body)) = data.split_first() else {
        return;
    };
    let Ok(f) = Frame::decode(body) else {
        return;
    };
    if let Some(frame::Body::Update(u)) = &f.body {
        for r in &u.records {
            let _ = Record::from_wire(r.clone());
        }
    }
    let keys = KeyRing::single(1, &ClusterKey::from_seed(1));
    let mut out = Vec::new();
    let (mine, theirs) = (Boot::from_random(3), Boot::from_random(1));
    let mut sealer = Sealer::new(3, mine);
    let mut opener = Opener::new(1, theirs);
    // The first datagram introduces the sender's boot; the second opens.
    sealer
        .seal(&keys, 1, None, &f, &mut out)
        .expect("sequences left");
    if out.len() <= MAX_DATAGRAM_BYTES {
        assert!(opener.open(&keys, &out).is_err(), "not fresh");
        sealer
            .seal(&keys, 1, Some(theirs), &f, &mut out)
            .expect("sequences left");
        let (_, back) = opener.open(&keys, &out).expect("our own datagram opens");
        assert_eq!(back, f);
    }
    // A sub-parent (id 1) handles the frame as if from any instance.
    let mut core = TreeCore::new(1, tree(), TreeConfig::default(), Duration::from_secs(1));
    let now = Duration::from_secs(2);
    core.handle_frame(now, u32::from(from % 10), f);
    core.handle_timeout(now + Duration::from_secs(1));
    while core.poll_transmit().is_some() {}
    let _ = core.poll_timeout();
});
