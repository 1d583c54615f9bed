//! Property test: any generated topology, with any sync settings, writes
//! back (`to_yaml`) to text that parses to the same topology and flattens
//! to the same instances.

use std::time::Duration;

use proptest::prelude::*;
use topo::generate::{GenSpec, generate};
use topo::{StrategyKind, SyncSettings, Topology, Transport};

fn sync() -> impl Strategy<Value = SyncSettings> {
    let strategy = prop_oneof![
        Just(StrategyKind::Tree),
        Just(StrategyKind::Hybrid),
        Just(StrategyKind::Gossip)
    ];
    let transport = prop_oneof![Just(Transport::Udp), Just(Transport::Quic)];
    (
        strategy,
        1u64..10_000,
        2u64..8,
        0u32..=50,
        transport,
        any::<bool>(),
    )
        .prop_map(
            |(strategy, hello_ms, deads, jitter_pct, transport, retake)| SyncSettings {
                strategy,
                hello: Duration::from_millis(hello_ms),
                dead: Duration::from_millis(hello_ms * deads),
                jitter: jitter_pct as f64 / 100.0,
                transport,
                retake,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn to_yaml_then_parse_is_the_identity(
        nodes in 1usize..3000,
        racks in 1usize..40,
        levels in 2usize..=3,
        sync in sync(),
    ) {
        let spec = GenSpec {
            cluster: "prop".into(),
            nodes,
            racks: racks.min(nodes),
            levels,
            sync,
        };
        let t = generate(&spec);
        let yaml = t.to_yaml();
        let back = Topology::parse(&yaml, "prop.yaml").unwrap();
        prop_assert!(back == t, "round trip differs:\n{}", yaml);
        prop_assert_eq!(back.flatten().instances.len(), t.flatten().instances.len());
    }
}
