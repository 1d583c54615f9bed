//! `cargo run --release -p engine --example bench -- [NODES] [SEED]`:
//! prints the engine benchmark report as JSON.

fn main() {
    let mut args = std::env::args().skip(1);
    let nodes = args.next().and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let seed = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let report = engine::bench::run(nodes, seed);
    println!(
        "{}",
        serde_json::to_string_pretty(&report).expect("report serializes")
    );
}
