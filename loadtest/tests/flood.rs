//! The root under a flood of garbage on real UDP (small scale): it keeps
//! its memory and the cluster still converges. The figures of record come
//! from `loadtest flood` at 2,000 nodes (docs/performance.md).

use std::process::Command;

use serde_json::Value;

#[test]
fn a_flooded_root_stays_bounded_and_the_cluster_converges() {
    let dir = std::env::temp_dir().join(format!("loadtest-flood-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("flood.json");
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args([
            "flood", "--quiet", "--nodes", "200", "--racks", "4", "--hello", "250ms", "--flood",
            "150000", "--rate", "50000", "--port", "7391", "--json",
        ])
        .arg(&json)
        .output()
        .expect("loadtest runs");
    assert!(
        out.status.success(),
        "loadtest flood failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        r["reached"], r["nodes"],
        "every node converged under the flood: {r}"
    );
    assert_eq!(r["flood_sent"], 150_000);
    let before = r["root_rss_before_mb"].as_f64().unwrap();
    let peak = r["root_rss_peak_mb"].as_f64().unwrap();
    assert!(
        peak - before < 64.0,
        "root RSS grew by {} MiB",
        peak - before
    );
    let dropped: u64 = r["root_drops_by_reason"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_u64().unwrap())
        .sum();
    let kernel = r["root_kernel_drops"].as_u64().unwrap();
    assert!(
        dropped + kernel >= 150_000,
        "every garbage datagram is dropped by the root or its kernel: {r}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
