//! The core modules stay sans-io, and the engine depends on `proto` only.

const CORE: [&str; 13] = [
    "events.rs",
    "executor.rs",
    "graph.rs",
    "lib.rs",
    "mutation.rs",
    "node.rs",
    "planner.rs",
    "registry.rs",
    "store.rs",
    "url.rs",
    "value.rs",
    "virt.rs",
    "virt_images.rs",
];
const FORBIDDEN: [&str; 8] = [
    "tokio",
    "Instant::now",
    "SystemTime",
    "thread_rng",
    "rand::rng(",
    "std::net",
    "std::thread",
    "OsRng",
];

#[test]
fn core_modules_use_no_io_clock_or_ambient_rng() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
    for f in CORE {
        let text = std::fs::read_to_string(format!("{dir}/{f}")).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for bad in FORBIDDEN {
                assert!(
                    !code.contains(bad),
                    "{f}:{}: core module mentions `{bad}`",
                    i + 1
                );
            }
        }
    }
}

#[test]
fn engine_depends_on_no_other_workspace_crate_but_proto() {
    let toml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    for crate_name in [
        "overlay",
        "topo",
        "sync-tree",
        "sync-gossip",
        "layercake",
        "loadtest",
    ] {
        let dep = format!("\n{crate_name}");
        assert!(
            !toml.contains(&dep),
            "engine must not depend on {crate_name}"
        );
    }
}
