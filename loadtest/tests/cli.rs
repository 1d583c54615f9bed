//! End-to-end runs of the `loadtest` binary: the simulator's determinism,
//! a real-UDP run on loopback, a topology file, and bad input.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn loadtest(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .output()
        .expect("loadtest runs")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loadtest-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs a scenario and returns its JSON report.
fn report(args: &[&str], name: &str) -> Value {
    let path = tmp(name);
    let mut all = vec!["run", "--quiet", "--json", path.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = loadtest(&all);
    assert!(
        out.status.success(),
        "loadtest {all:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn check_converged(r: &Value) {
    assert_eq!(r["reached"], r["nodes"], "every node converged: {r}");
    assert!(r["max_datagram_bytes"].as_u64().unwrap() <= 1400);
    assert!(r["converge_p99_s"].as_f64().unwrap() > 0.0);
    assert!(r["root_rx_datagrams_per_hello"].as_f64().unwrap() <= 2.0);
}

#[test]
fn sim_runs_replay_exactly_from_their_seed() {
    let args = [
        "--net", "sim", "--nodes", "300", "--racks", "3", "--loss", "0.02", "--hello", "1s",
        "--seed", "9",
    ];
    let mut a = report(&args, "a.json");
    let mut b = report(&args, "b.json");
    check_converged(&a);
    for k in ["wall_s", "peak_rss_mb"] {
        a.as_object_mut().unwrap().remove(k);
        b.as_object_mut().unwrap().remove(k);
    }
    assert_eq!(a, b);
    let mut other = vec!["--seed", "10"];
    other.extend_from_slice(&args[..args.len() - 2]);
    let mut c = report(&other, "c.json");
    c.as_object_mut().unwrap().remove("wall_s");
    c.as_object_mut().unwrap().remove("peak_rss_mb");
    assert_ne!(a, c, "another seed, another run");
}

#[test]
fn three_levels_converge_in_simulation() {
    let r = report(
        &[
            "--net", "sim", "--nodes", "400", "--racks", "8", "--levels", "3",
        ],
        "levels.json",
    );
    check_converged(&r);
    assert_eq!(
        r["sub_parents"],
        8 + 3,
        "8 racks under ceil(sqrt(8)) = 3 rows"
    );
}

#[test]
fn real_udp_on_loopback_converges() {
    let r = report(
        &[
            "--net",
            "udp",
            "--nodes",
            "300",
            "--racks",
            "3",
            "--hello",
            "250ms",
            "--workers",
            "3",
            "--port",
            "7301",
        ],
        "udp.json",
    );
    check_converged(&r);
    assert_eq!(r["net"], "udp");
    assert_eq!(r["workers"], 3);
    assert_eq!(r["datagrams_rejected"], 0);
}

#[test]
fn every_link_over_quic_with_mutual_tls_converges() {
    let r = report(
        &[
            "--net",
            "udp",
            "--transport",
            "quic",
            "--nodes",
            "200",
            "--racks",
            "4",
            "--hello",
            "250ms",
            "--port",
            "7302",
        ],
        "quic.json",
    );
    check_converged(&r);
    assert_eq!(r["transport"], "quic");
}

/// `--scenario loss`: a clean initial sync, then 5 % loss on the measured
/// change; every change still arrives.
#[test]
fn the_loss_scenario_loses_no_update() {
    let r = report(
        &[
            "--net",
            "sim",
            "--nodes",
            "300",
            "--racks",
            "3",
            "--hello",
            "1s",
            "--scenario",
            "loss",
        ],
        "loss.json",
    );
    check_converged(&r);
    assert_eq!(r["scenario"], "loss");
    assert_eq!(r["loss"], 0.05);
    assert_eq!(r["lost_updates"], 0);
}

/// `--strategy gossip`: the flat baseline converges too, at a higher
/// steady cost per node than the tree.
#[test]
fn the_flat_gossip_baseline_converges_and_costs_more() {
    let args = |s: &'static str| {
        vec![
            "--net",
            "sim",
            "--nodes",
            "60",
            "--racks",
            "2",
            "--hello",
            "1s",
            "--strategy",
            s,
        ]
    };
    let g = report(&args("gossip"), "gossip.json");
    let t = report(&args("tree"), "tree-60.json");
    assert_eq!(g["reached"], 60, "{g}");
    assert_eq!(g["strategy"], "gossip");
    let cost = |r: &Value| r["steady_bytes_per_node_per_s"].as_f64().unwrap();
    assert!(
        cost(&g) > 2.0 * cost(&t),
        "gossip {} vs tree {}",
        cost(&g),
        cost(&t)
    );
}

/// `--transport auto`: the rack tier says `transport: quic`, so the
/// root's links to the sub-parents ride QUIC and the nodes' links UDP.
#[test]
fn a_tier_marked_quic_uses_quic_and_the_rest_udp() {
    let topo = tmp("quic-tier.yaml");
    std::fs::write(
        &topo,
        r#"cluster: lt
sync: { strategy: tree, hello: 250ms, dead: 1s }
levels:
  - name: rack
    sync: { transport: quic }
  - name: node
root: { name: root, addr: "127.0.20.1:7304" }
groups:
  - name: r1
    sub_parent: { name: r1-sp, addr: "127.0.20.2:7304" }
    nodes:
      - hosts: "a[001-040]"
        addr: "127.0.21.{n}:7304"
  - name: r2
    sub_parent: { name: r2-sp, addr: "127.0.20.3:7304" }
    nodes:
      - hosts: "b[001-040]"
        addr: "127.0.22.{n}:7304"
"#,
    )
    .unwrap();
    let r = report(
        &[
            "--net",
            "udp",
            "--transport",
            "auto",
            "--topology",
            topo.to_str().unwrap(),
        ],
        "auto.json",
    );
    check_converged(&r);
    assert_eq!(r["transport"], "auto");
    let p = &r["paths"];
    assert!(p["quic_tx"].as_u64().unwrap() > 0, "{p}");
    assert!(
        p["udp_tx"].as_u64().unwrap() > 10 * p["quic_tx"].as_u64().unwrap(),
        "the nodes' tier stays on UDP: {p}"
    );
    assert_eq!(p["fallbacks"], 0, "{p}");
}

#[test]
fn killed_sub_parents_lose_no_update_and_the_cluster_rehomes() {
    let args = [
        "--net",
        "sim",
        "--nodes",
        "400",
        "--racks",
        "8",
        "--hello",
        "1s",
        "--scenario",
        "failover",
        "--kill-subparents",
        "2",
        "--restore",
    ];
    let r = report(&args, "failover.json");
    assert_eq!(r["reached"], r["nodes"], "{r}");
    assert_eq!(r["kill_subparents"], 2);
    assert_eq!(r["lost_updates"], 0);
    assert_eq!(r["acting_per_group_max"], 1);
    let rehome = r["rehome_p99_s"].as_f64().unwrap();
    assert!(rehome > 0.0 && rehome < 10.0, "rehome {rehome}");
}

#[test]
fn hybrid_elects_one_acting_sub_parent_per_killed_rack() {
    let args = [
        "--net",
        "sim",
        "--strategy",
        "hybrid",
        "--nodes",
        "200",
        "--racks",
        "4",
        "--hello",
        "1s",
        "--scenario",
        "failover",
        "--kill-subparents",
        "2",
        "--restore",
    ];
    let r = report(&args, "hybrid.json");
    assert_eq!(r["strategy"], "hybrid");
    assert_eq!(r["reached"], r["nodes"], "{r}");
    assert_eq!(r["lost_updates"], 0);
    assert_eq!(r["acting_per_group_max"], 1);
}

#[test]
fn hybrid_failover_on_real_udp() {
    let args = [
        "--net",
        "udp",
        "--strategy",
        "hybrid",
        "--nodes",
        "200",
        "--racks",
        "4",
        "--hello",
        "500ms",
        "--scenario",
        "failover",
        "--kill-subparents",
        "1",
        "--restore",
        "--port",
        "7303",
    ];
    let r = report(&args, "udp-failover.json");
    assert_eq!(r["reached"], r["nodes"], "{r}");
    assert_eq!(r["lost_updates"], 0);
    assert_eq!(r["acting_per_group_max"], 1);
}

#[test]
fn a_cut_off_rack_gets_every_change_after_the_heal() {
    let args = [
        "--net",
        "sim",
        "--strategy",
        "hybrid",
        "--nodes",
        "200",
        "--racks",
        "4",
        "--hello",
        "1s",
        "--scenario",
        "partition",
        "--kill-subparents",
        "1",
        "--cut-for",
        "5s",
    ];
    let r = report(&args, "partition.json");
    assert_eq!(r["scenario"], "partition");
    assert_eq!(r["reached"], r["nodes"], "{r}");
    assert_eq!(r["lost_updates"], 0);
    assert_eq!(r["acting_per_group_max"], 1);
    assert!(
        r["converge_p99_s"].as_f64().unwrap() >= 4.5,
        "the cut rack waits for the heal"
    );
}

#[test]
fn a_roll_with_busy_nodes_interrupts_none_of_them() {
    let r = report(
        &[
            "--net",
            "sim",
            "--engine",
            "--scenario",
            "roll",
            "--nodes",
            "100",
            "--racks",
            "4",
            "--hello",
            "500ms",
            "--busy-fraction",
            "0.3",
            "--free-after",
            "2s",
            "--image-start",
            "500ms",
        ],
        "roll.json",
    );
    assert_eq!(r["scenario"], "roll");
    assert_eq!(r["busy_nodes"], 30);
    assert_eq!(r["rolled"], 100, "{r}");
    assert_eq!(r["busy_interrupted"], 0, "{r}");
    let free_p99 = r["roll_free_p99_s"].as_f64().unwrap();
    assert!(free_p99 <= 2.0 + 0.5, "{r}");
    assert!(r["roll_freed_p99_s"].as_f64().unwrap() <= 2.0 + 0.5, "{r}");
}

#[test]
fn a_topology_file_is_accepted() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../topo/examples/small.yaml");
    let r = report(&["--net", "sim", "--topology", file], "file.json");
    check_converged(&r);
}

#[test]
fn bad_input_exits_non_zero_with_a_message() {
    let cases: [(&[&str], &str); 11] = [
        (&["run", "--scenario", "roll"], "--net sim --engine"),
        (
            &[
                "run",
                "--engine",
                "--scenario",
                "roll",
                "--busy-fraction",
                "1.5",
            ],
            "--busy-fraction",
        ),
        (
            &[
                "run",
                "--engine",
                "--scenario",
                "roll",
                "--free-after",
                "40s",
            ],
            "--free-after",
        ),
        (&["run", "--transport", "tcp"], "tcp"),
        (&["run", "--transport", "quic"], "--net udp"),
        (&["run", "--strategy", "mesh"], "mesh"),
        (&["run", "--hello", "fast"], "fast"),
        // One duration grammar (topo::duration): a unit is required and
        // a flag's duration is never zero.
        (&["run", "--hello", "2"], "bad duration `2`: no unit"),
        (&["campaign", "--fault-window", "0s"], "`0s` is zero"),
        (&["run", "--nodes", "5", "--racks", "10"], "--racks"),
        (
            &["run", "--topology", "/nonexistent.yaml"],
            "nonexistent.yaml",
        ),
    ];
    for (args, needle) in cases {
        let out = loadtest(args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(needle),
            "{args:?}: message should name `{needle}`: {err}"
        );
    }
}

/// One HTTP/1.0 exchange with the API (the answer ends with the
/// connection, so a streamed body needs no chunked decoding): status and
/// body.
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the API");
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// `--api --hold`: the product's root runs the UDP run, and its REST API
/// answers during the hold: health, pages that walk every node once, the
/// full list, one node with its chain, a bad `limit`, and a Cfg write
/// through the API that every node converges on.
#[test]
fn the_products_root_serves_its_api_during_the_hold() {
    use std::io::BufRead;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args([
            "run",
            "--quiet",
            "--net",
            "udp",
            "--nodes",
            "300",
            "--racks",
            "3",
            "--hello",
            "250ms",
            "--workers",
            "3",
            "--port",
            "7321",
            "--api",
            &addr,
            "--hold",
            "120s",
        ])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    loop {
        let line = lines
            .next()
            .expect("loadtest ended before its hold")
            .unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.starts_with("holding for") {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    let json = |s: &str| -> Value { serde_json::from_str(s).unwrap() };
    let (st, body) = http(&addr, "GET", "/api/v1/health", "");
    assert_eq!(st, 200, "{body}\n{log}");
    let h = json(&body);
    assert_eq!(
        (h["nodes"].as_u64(), h["converged"].as_u64()),
        (Some(300), Some(300)),
        "{h}"
    );
    // Pages of 128 walk every node once, in order.
    let (mut names, mut next) = (Vec::new(), None::<String>);
    loop {
        let path = match &next {
            Some(c) => format!("/api/v1/nodes?limit=128&continue={c}"),
            None => "/api/v1/nodes?limit=128".into(),
        };
        let (st, body) = http(&addr, "GET", &path, "");
        assert_eq!(st, 200, "{body}");
        let page = json(&body);
        let nodes = page["nodes"].as_array().unwrap();
        assert!(nodes.len() <= 128);
        names.extend(
            nodes
                .iter()
                .map(|n| n["name"].as_str().unwrap().to_string()),
        );
        match page["continue"].as_str() {
            Some(c) => next = Some(c.to_string()),
            None => break,
        }
    }
    let want: Vec<String> = (1..=300).map(|i| format!("n{i:03}")).collect();
    assert_eq!(names, want);
    let (st, body) = http(&addr, "GET", "/api/v1/nodes", "");
    assert_eq!(st, 200);
    let all = json(&body);
    let all = all["nodes"].as_array().unwrap();
    assert_eq!(all.len(), 300);
    assert!(
        all.iter()
            .all(|n| n["converged"] == true && n["dsc"]["/RunState"] == "SYNC")
    );
    let (st, body) = http(&addr, "GET", "/api/v1/nodes/n150", "");
    assert_eq!(st, 200, "{body}");
    assert!(json(&body).get("chain").is_some(), "{body}");
    let (st, body) = http(&addr, "GET", "/api/v1/nodes?limit=0", "");
    assert_eq!(st, 400, "{body}");
    // A write through the API: every node's Dsc follows (the probe's
    // leaves mirror their Cfg) and the root counts them converged again.
    let (st, body) = http(
        &addr,
        "POST",
        "/api/v1/cfg",
        r#"{"all": true, "values": {"/PhysState": "POWER_OFF"}}"#,
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(json(&body)["changed"], 300, "{body}");
    let t0 = std::time::Instant::now();
    loop {
        let (_, body) = http(
            &addr,
            "GET",
            "/api/v1/nodes?filter=/PhysState=POWER_OFF",
            "",
        );
        let n = json(&body)["nodes"].as_array().unwrap().len();
        let h = json(&http(&addr, "GET", "/api/v1/health", "").1);
        if n == 300 && h["converged"] == 300 {
            break;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(30),
            "{n} of 300 powered off, health {h}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The product's metrics: the state gauges the root's flush sets, and
    // its convergence histogram (the write above converged). The gauges
    // are set by a flush every 250 ms, so they may trail the health
    // answer by one flush (more on a loaded machine): poll them.
    let t0 = std::time::Instant::now();
    loop {
        let (st, text) = http(&addr, "GET", "/metrics", "");
        assert_eq!(st, 200);
        if text.contains("kraken_nodes_converged 300") {
            assert!(text.contains("kraken_convergence_seconds"), "{text}");
            break;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(30),
            "the gauges never showed 300 converged: {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A running `loadtest`, killed if a test fails before it ends.
struct Run(std::process::Child);

impl Drop for Run {
    fn drop(&mut self) {
        // A child already reaped is not signalled again.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The processes whose command line holds every one of `words` (each a
/// whole argument or a run of whole arguments, such as `--port 7343`).
fn processes_with(words: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let line: Vec<String> = raw
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let line = format!(" {} ", line.join(" "));
        if words.iter().all(|w| line.contains(&format!(" {w} "))) {
            found.push(format!("{}:{line}", e.file_name().to_string_lossy()));
        }
    }
    found
}

/// A worker that cannot bind its address (another run holds it) ends the
/// run at once: non-zero, naming the worker and the bind error, with no
/// worker left behind.
#[test]
fn a_worker_that_fails_at_start_ends_the_run() {
    // Node 30 of 30 is the last instance: the last of 3 workers holds it.
    let port = "7343";
    let _taken = std::net::UdpSocket::bind(format!("127.1.0.31:{port}")).unwrap();
    let mut run = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["run", "--quiet", "--net", "udp", "--nodes", "30"])
        .args(["--racks", "3", "--workers", "3", "--port", port])
        .env("RUST_BACKTRACE", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map(Run)
        .unwrap();
    // Bounded: before the fix the run waited 300 s for the last worker.
    let status = exits_within(&mut run.0, 30);
    let mut err = String::new();
    std::io::Read::read_to_string(&mut run.0.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(err.contains("Address already in use"), "{err}");
    assert!(
        err.contains("worker 2 (pid") && err.contains("exited (exit status: 1)"),
        "{err}"
    );
    let left = processes_with(&["worker", &format!("--port {port}")]);
    assert!(left.is_empty(), "workers left behind: {left:?}");
}

/// Waits up to `secs` for `child` to exit, else fails.
fn exits_within(child: &mut std::process::Child, secs: u64) -> std::process::ExitStatus {
    let t0 = std::time::Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t0.elapsed() > std::time::Duration::from_secs(secs) {
            panic!("the run did not end within {secs} s after its worker failed");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A worker killed during `--hold` ends the held run: non-zero, naming the
/// worker and its signal, with no worker left behind.
#[test]
fn a_worker_killed_during_the_hold_ends_the_run() {
    use std::io::BufRead;
    let port = "7347";
    let mut run = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["run", "--quiet", "--net", "udp", "--nodes", "30"])
        .args(["--racks", "3", "--workers", "3", "--port", port])
        .args(["--hello", "250ms", "--hold", "300s", "--api", "127.0.0.1:0"])
        .env("RUST_BACKTRACE", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map(Run)
        .unwrap();
    let mut lines = std::io::BufReader::new(run.0.stderr.take().unwrap()).lines();
    let mut log = String::new();
    while !log.contains("holding for") {
        let line = lines
            .next()
            .expect("loadtest ended before its hold")
            .unwrap();
        log.push_str(&line);
        log.push('\n');
    }
    let workers = processes_with(&["worker", &format!("--port {port}"), "--lo 1"]);
    assert_eq!(workers.len(), 1, "{workers:?}");
    let pid = workers[0].split(':').next().unwrap();
    assert!(
        Command::new("kill")
            .args(["-9", pid])
            .status()
            .unwrap()
            .success()
    );
    let status = exits_within(&mut run.0, 30);
    log.extend(lines.map_while(Result::ok).map(|l| l + "\n"));
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(&format!("worker 1 (pid {pid}, instances 1..")) && log.contains("SIGKILL"),
        "{log}"
    );
    let left = processes_with(&["worker", &format!("--port {port}")]);
    assert!(left.is_empty(), "workers left behind: {left:?}");
}
