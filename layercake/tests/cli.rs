//! End-to-end tests of the `layercake` binary: the demo converging, the
//! API's error JSON, ctl's exit codes, `topo check` on a broken file, the
//! root's persistence across SIGKILL, and a cluster of `run` processes.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

/// A small real topology: a root, one rack and `nodes` nodes on loopback.
fn small_topology(dir: &std::path::Path, nodes: usize) -> std::path::PathBuf {
    let port = free_udp_port();
    write_file(dir, "cluster.key", &"ab".repeat(32));
    let yaml = format!(
        "cluster: test\nkey_file: cluster.key\nsync: {{ hello: 500ms, dead: 2s }}\n\
         root: {{ name: root, addr: \"127.0.0.1:{port}\" }}\n\
         groups:\n  - name: r01\n    sub_parent: {{ name: r01-sp, addr: \"127.0.77.1:{port}\" }}\n\
         \x20   nodes:\n      - {{ hosts: \"n[01-{nodes:02}]\", addr: \"127.0.77.{{n+10}}:{port}\" }}\n"
    );
    write_file(dir, "cluster.yaml", &yaml)
}

#[test]
fn demo_converges_and_reports() {
    let out = std::process::Command::new(bin())
        .args([
            "demo",
            "--nodes",
            "40",
            "--racks",
            "4",
            "--for",
            "10s",
            "--api",
            "127.0.0.1:0",
        ])
        .args(["--step-min-ms", "50", "--step-max-ms", "300"])
        .env("LAYERCAKE_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.lines().any(|l| l == "converged 40/40"), "{stdout}");
    assert!(stdout.contains("dashboard: http://"), "{stdout}");
}

#[test]
fn api_and_ctl_against_a_running_demo() {
    let d = spawn(&[
        "demo",
        "--nodes",
        "30",
        "--racks",
        "3",
        "--api",
        "127.0.0.1:0",
        "--step-min-ms",
        "50",
        "--step-max-ms",
        "300",
    ]);
    assert!(
        wait_until(30, || converged(&d.api) == 30),
        "demo did not converge"
    );

    // get nodes prints one row per node (plus the header).
    let o = ctl(&d.api, &["get", "nodes", "n[0001-0010]"]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(text.lines().count(), 11, "{text}");
    assert!(text.lines().nth(1).unwrap().starts_with("n0001"));
    get_nodes_pages_like_one_response(&d.api);

    // set turns nodes off; the root sees their Dsc follow.
    let o = ctl(&d.api, &["set", "n[0001-0005]", "/PhysState=POWER_OFF"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let off = || {
        let v = get_json(&d.api, "/api/v1/nodes?filter=/PhysState%3DPOWER_OFF");
        v["nodes"].as_array().unwrap().len() == 5
    };
    assert!(wait_until(20, off), "nodes did not power off");

    // Plan preview groups nodes by chain and runs nothing.
    let o = ctl(&d.api, &["plan", "n[0006-0010]", "/PhysState=POWER_OFF"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("n[0006-0010] (5): power_off"));
    let v = get_json(&d.api, "/api/v1/nodes/n0006");
    assert_eq!(v["dsc"]["/PhysState"], "POWER_ON");

    // Output formats.
    let o = ctl(&d.api, &["get", "nodes", "n0001", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["nodes"][0]["cfg"]["/PhysState"], "POWER_OFF");
    let o = ctl(&d.api, &["get", "nodes", "n0001", "-o", "yaml"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("/PhysState: POWER_OFF"));
    let o = ctl(&d.api, &["graph", "--dot"]);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("digraph"));

    // Exit codes a script relies on.
    assert_eq!(
        ctl(&d.api, &["set", "n9999", "/PhysState=POWER_ON"])
            .status
            .code(),
        Some(4)
    );
    assert_eq!(
        ctl(&d.api, &["set", "n0001", "/Bogus=1"]).status.code(),
        Some(5)
    );
    assert_eq!(
        ctl(&d.api, &["set", "n0001", "/PhysState=SIDEWAYS"])
            .status
            .code(),
        Some(5)
    );
    assert_eq!(
        ctl(&d.api, &["set", "n[0001", "/PhysState=POWER_ON"])
            .status
            .code(),
        Some(5)
    );
    assert_eq!(
        ctl(&d.api, &["set", "n0001", "PhysState"]).status.code(),
        Some(2)
    );
    assert_eq!(ctl(&d.api, &["frobnicate"]).status.code(), Some(2));
    assert_eq!(ctl("127.0.0.1:1", &["get", "nodes"]).status.code(), Some(3));
    let missing = std::env::temp_dir().join("layercake-no-such-file.yaml");
    assert_eq!(
        ctl(&d.api, &["apply", "-f", missing.to_str().unwrap()])
            .status
            .code(),
        Some(6)
    );

    // apply -f, then freeze and thaw.
    let dir = temp_dir("apply");
    let f = write_file(
        &dir,
        "apply.yaml",
        "nodes:\n  - hosts: \"n[0001-0002]\"\n    values:\n      /PhysState: POWER_ON\n",
    );
    let o = ctl(&d.api, &["apply", "-f", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        get_json(&d.api, "/api/v1/nodes/n0002")["cfg"]["/PhysState"],
        "POWER_ON"
    );
    assert!(ctl(&d.api, &["freeze", "n0030"]).status.success());
    assert_eq!(get_json(&d.api, "/api/v1/nodes/n0030")["frozen"], true);
    // Write verbs never default to every node.
    assert_eq!(ctl(&d.api, &["thaw"]).status.code(), Some(2));
    assert!(ctl(&d.api, &["thaw", "--all"]).status.success());
    assert_eq!(get_json(&d.api, "/api/v1/nodes/n0030")["frozen"], false);

    // Metrics.
    let (st, m) = http(&d.api, "GET", "/metrics", None);
    assert_eq!(st, 200);
    assert!(m.contains("kraken_convergence_seconds_bucket"), "{m}");
    assert!(m.contains("kraken_mutations_started_total{mutation=\"power_on\"}"));
    let _ = std::fs::remove_dir_all(dir);
}

/// `get nodes` in pages smaller than the list prints what one response
/// prints, byte for byte, in every format and with selectors; its JSON is
/// one valid document holding what the API lists.
fn get_nodes_pages_like_one_response(api: &str) {
    let out = |args: &[&str]| {
        let o = ctl(api, args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    let cases: [&[&str]; 5] = [
        &["-o", "json"],
        &["-o", "yaml"],
        &["-o", "wide"],
        &["@r02", "-o", "json"],
        &["--filter", "/PhysState=POWER_ON", "n[0003-0029]"],
    ];
    for case in cases {
        let run = |chunk: &str| {
            let mut args = vec!["get", "nodes", "--chunk-size", chunk];
            args.extend_from_slice(case);
            out(&args)
        };
        // The demo is converged; a late Dsc change would show as a
        // difference, so compare a few times before calling it one.
        let same = wait_until(10, || run("4") == run("0"));
        assert!(same, "{case:?}: pages of 4 differ from one response");
    }
    let paged: serde_json::Value =
        serde_json::from_str(&out(&["get", "nodes", "-o", "json", "--chunk-size", "7"])).unwrap();
    let nodes = paged["nodes"].as_array().unwrap();
    let names: Vec<&str> = nodes.iter().map(|n| n["name"].as_str().unwrap()).collect();
    let want: Vec<String> = (1..=30).map(|i| format!("n{i:04}")).collect();
    assert_eq!(names, want, "every node once, in order");
    let whole = get_json(api, "/api/v1/nodes");
    assert_eq!(
        paged.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["nodes"]
    );
    assert_eq!(nodes.len(), whole["nodes"].as_array().unwrap().len());
    // A page size the API refuses is a usage error.
    let o = ctl(api, &["get", "nodes", "--chunk-size", "10001"]);
    assert_eq!(o.status.code(), Some(2));
}

/// `ctl apply` is strict and atomic; selectors; `wait`; `power`.
#[test]
fn apply_selectors_wait_and_power() {
    let d = spawn(&[
        "demo",
        "--nodes",
        "20",
        "--racks",
        "2",
        "--api",
        "127.0.0.1:0",
        "--step-min-ms",
        "50",
        "--step-max-ms",
        "300",
    ]);
    assert!(
        wait_until(30, || converged(&d.api) == 20),
        "demo did not converge"
    );
    let dir = temp_dir("apply-strict");
    let cfg_of = |n: &str| get_json(&d.api, &format!("/api/v1/nodes/{n}"))["cfg"].clone();
    let before: Vec<_> = (1..=20).map(|i| cfg_of(&format!("n{i:04}"))).collect();
    let unchanged = || {
        (1..=20)
            .map(|i| cfg_of(&format!("n{i:04}")))
            .collect::<Vec<_>>()
            == before
    };

    // A typo: rejected with file:line:column, the valid keys, nothing changed.
    let f = write_file(
        &dir,
        "typo.yaml",
        "nodes:\n  - hosts: n0001\n    values: {/PhysState: POWER_OFF}\n  - hosts: n0002\n    replce: true\n    values: {/PhysState: POWER_OFF}\n",
    );
    let o = ctl(&d.api, &["apply", "-f", f.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(6), "{err}");
    assert!(err.contains("typo.yaml:5:5: unknown key `replce`"), "{err}");
    assert!(err.contains("replace"), "{err}");
    assert!(unchanged(), "a rejected file changed Cfg");

    // The fifth entry is bad (a value the root refuses): nothing applied.
    let mut text = String::from("nodes:\n");
    for i in 1..=4 {
        text.push_str(&format!(
            "  - hosts: n{i:04}\n    values: {{/PhysState: POWER_OFF}}\n"
        ));
    }
    text.push_str("  - hosts: n0005\n    values: {/PhysState: SIDEWAYS}\n");
    let f = write_file(&dir, "fifth.yaml", &text);
    let o = ctl(&d.api, &["apply", "-f", f.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "{err}");
    assert!(err.contains("fifth.yaml:10:5: entry 5"), "{err}");
    assert!(err.contains("nothing applied"), "{err}");
    assert!(unchanged(), "a batch with a bad fifth entry changed Cfg");

    // --dry-run shows the plan and changes nothing.
    let good = text.replace("SIDEWAYS", "POWER_OFF");
    let f = write_file(&dir, "good.yaml", &good);
    let o = ctl(&d.api, &["apply", "-f", f.to_str().unwrap(), "--dry-run"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("5 node(s) would change"), "{out}");
    assert!(unchanged(), "a dry run changed Cfg");

    // Selectors: a group, and a filter on Dsc.
    let o = ctl(&d.api, &["get", "nodes", "@r02"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(out.lines().count(), 11, "{out}");
    assert!(out.lines().skip(1).all(|l| l.contains("r02")), "{out}");
    let o = ctl(&d.api, &["set", "--group", "r01", "/PhysState=POWER_OFF"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        ctl(&d.api, &["get", "nodes", "@nope"]).status.code(),
        Some(4)
    );

    // wait: succeeds once r01 is off; times out naming the nodes that are not.
    let o = ctl(
        &d.api,
        &[
            "wait",
            "@r01",
            "--for",
            "/PhysState=POWER_OFF",
            "--timeout",
            "30s",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = ctl(
        &d.api,
        &[
            "get",
            "nodes",
            "--filter",
            "/PhysState=POWER_OFF",
            "-o",
            "json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["nodes"].as_array().unwrap().len(), 10);
    let o = ctl(
        &d.api,
        &[
            "wait",
            "n[0001-0012]",
            "--for",
            "/PhysState=POWER_OFF",
            "--timeout",
            "1s",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(8), "{err}");
    assert!(err.contains("n[0011-0012]"), "{err}");

    // power: on with --wait, status, and no selection refused.
    let o = ctl(
        &d.api,
        &["power", "on", "@r01", "--wait", "--timeout", "30s"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = ctl(&d.api, &["power", "status", "n[0001-0002]"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert!(out.lines().nth(1).unwrap().contains("POWER_ON"), "{out}");
    assert_eq!(ctl(&d.api, &["power", "off"]).status.code(), Some(2));
    let o = ctl(&d.api, &["set", "n0001", "/PhysState=POWER_ON", "--wait"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = std::fs::remove_dir_all(dir);
}

/// Completions, man pages and the hostlist helper.
#[test]
fn completions_man_pages_and_hostlist_tools() {
    let run = |args: &[&str]| {
        std::process::Command::new(bin())
            .args(args)
            .output()
            .unwrap()
    };
    for (shell, marker) in [
        ("bash", "complete"),
        ("zsh", "#compdef"),
        ("fish", "complete -c"),
    ] {
        let o = run(&["completions", shell]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{shell}");
        assert!(text.contains(marker), "{shell}: {text}");
        assert!(text.contains("ctl") && text.contains("wait"), "{shell}");
    }
    let dir = temp_dir("man");
    let o = run(&["man", "--out", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for page in [
        "layercake.1",
        "layercake-ctl.1",
        "layercake-ctl-apply.1",
        "layercake-topo-check.1",
    ] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap_or_default();
        assert!(text.contains(".TH"), "{page}: {text}");
    }
    let o = run(&["hostlist", "expand", "n[1-3],gpu1"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "n1\nn2\nn3\ngpu1\n");
    let o = run(&["hostlist", "compress", "n3", "n1", "n2"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "n[1-3]");
    let o = run(&["hostlist", "count", "n[0-999999999]"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "1000000000");
    let o = run(&["hostlist", "expand", "n[0-999999999]"]);
    assert!(!o.status.success());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn api_errors_are_json_with_the_right_status() {
    let d = spawn(&[
        "demo",
        "--nodes",
        "10",
        "--racks",
        "2",
        "--api",
        "127.0.0.1:0",
        "--no-boot",
    ]);
    let check = |method: &str, path: &str, body: Option<&str>, status: u16, code: &str| {
        let (st, b) = http(&d.api, method, path, body);
        assert_eq!(st, status, "{method} {path}: {b}");
        let v: serde_json::Value =
            serde_json::from_str(&b).unwrap_or_else(|_| panic!("not JSON: {b}"));
        assert_eq!(v["error"]["code"], code, "{b}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    };
    check("GET", "/api/v1/nodes/n9999", None, 404, "not_found");
    check("GET", "/api/v1/nope", None, 404, "not_found");
    check("POST", "/api/v1/cfg", Some("{not json"), 400, "bad_request");
    check(
        "POST",
        "/api/v1/cfg",
        Some(r#"{"values":{"/PhysState":"POWER_ON"}}"#),
        400,
        "bad_request",
    );
    check(
        "POST",
        "/api/v1/cfg",
        Some(r#"{"hosts":"n0001","values":{"/PhysState":"UP"}}"#),
        400,
        "bad_request",
    );
    check(
        "POST",
        "/api/v1/cfg",
        Some(r#"{"hosts":"n0001","values":{"/Id":"x"}}"#),
        400,
        "bad_request",
    );
    check("GET", "/api/v1/nodes?hosts=n%5B1", None, 400, "bad_request");
    check("GET", "/api/v1/nodes?wat=1", None, 400, "bad_request");
    check("DELETE", "/api/v1/health", None, 405, "method_not_allowed");
    let (st, b) = http(
        &d.api,
        "PATCH",
        "/api/v1/nodes/n0001",
        Some(r#"{"values":{"/Platform":"x86"}}"#),
    );
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        get_json(&d.api, "/api/v1/nodes/n0001")["cfg"]["/Platform"],
        "x86"
    );
}

#[test]
fn topo_check_names_the_line_of_a_broken_file() {
    let dir = temp_dir("topo");
    let bad = write_file(
        &dir,
        "bad.yaml",
        "cluster: x\nroot: { name: root, addr: \"127.0.0.1:7000\" }\ngroups:\n  - name: r1\n    sub_parent: { name: sp, addr: \"127.0.0.2:7000\" }\n    nodes:\n      - { hosts: \"n[05-01]\", addr: \"127.0.1.{n}:7000\" }\n",
    );
    let o = std::process::Command::new(bin())
        .args(["topo", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.yaml:7:"), "{err}");
    assert!(err.contains("reversed range"), "{err}");

    let good = small_topology(&dir, 3);
    let o = std::process::Command::new(bin())
        .args(["topo", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("3 nodes, 1 sub-parents"));

    let o = std::process::Command::new(bin())
        .args([
            "topo",
            "gen",
            "--nodes",
            "20",
            "--racks",
            "2",
            "--demo-port",
            "7000",
        ])
        .output()
        .unwrap();
    assert!(o.status.success());
    let generated = write_file(&dir, "gen.yaml", &String::from_utf8_lossy(&o.stdout));
    let o = std::process::Command::new(bin())
        .args(["topo", "check"])
        .arg(&generated)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("20 nodes, 2 sub-parents"));

    // Every error, not only the first; the unquoted hostlist explained.
    let two = write_file(
        &dir,
        "two.yaml",
        "cluster: x\nroot: { name: root, addr: \"127.0.0.1:7000\" }\ngroups:\n  - name: r1\n    sub_parent: { name: sp, addr: \"127.0.0.2:7000\" }\n    nodes:\n      - { hosts: \"n[05-01]\", addr: \"127.0.1.{n}:7000\" }\n      - { hosts: \"m1\", addr: \"nowhere\" }\n",
    );
    let o = std::process::Command::new(bin())
        .args(["topo", "check"])
        .arg(&two)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("two.yaml:7:") && err.contains("two.yaml:8:"),
        "{err}"
    );
    assert!(err.contains("2 errors"), "{err}");
    let flow = write_file(
        &dir,
        "flow.yaml",
        "cluster: x\nroot: { name: root, addr: \"127.0.0.1:7000\" }\ngroups:\n  - name: r1\n    sub_parent: { name: sp, addr: \"127.0.0.2:7000\" }\n    nodes:\n      - { hosts: n[01-05], addr: \"127.0.1.{n}:7000\" }\n",
    );
    let o = std::process::Command::new(bin())
        .args(["topo", "check"])
        .arg(&flow)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("must be quoted"), "{err}");

    // gen never writes what check rejects (dead = 4 x 7h is over 24 h).
    let o = std::process::Command::new(bin())
        .args([
            "topo", "gen", "--nodes", "20", "--racks", "2", "--hello", "7h",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("check` rejects"));

    // topo key --out makes a private key file; check verifies the mode.
    use std::os::unix::fs::PermissionsExt;
    let key = dir.join("new.key");
    let o = std::process::Command::new(bin())
        .args(["topo", "key", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let exposed = dir.join("cluster.key");
    std::fs::set_permissions(&exposed, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = std::process::Command::new(bin())
        .args(["topo", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let _ = std::fs::remove_dir_all(dir);
}

/// The root acknowledges a write only once it is durable: a root killed
/// with SIGKILL while writes are in flight serves every acknowledged write
/// after a restart, and the running nodes (one `run` process each)
/// converge to it: every node's Dsc reaches the Cfg the restarted root
/// serves.
#[test]
fn restart_after_sigkill_serves_every_acknowledged_write() {
    const NODES: usize = 8;
    let dir = temp_dir("restart");
    let topo = small_topology(&dir, NODES);
    let data = dir.join("data");
    let args = |_: ()| {
        vec![
            "run".to_string(),
            "--topology".into(),
            topo.display().to_string(),
            "--id".into(),
            "root".into(),
            "--data-dir".into(),
            data.display().to_string(),
            "--api".into(),
            "127.0.0.1:0".into(),
        ]
    };
    let a1 = args(());
    let root = spawn(&a1.iter().map(String::as_str).collect::<Vec<_>>());
    let t = topo.display().to_string();
    let mut members = Vec::new();
    let names: Vec<String> = std::iter::once("r01-sp".to_string())
        .chain((1..=NODES).map(|n| format!("n{n:02}")))
        .collect();
    for id in &names {
        members.push(spawn_quiet(&[
            "run",
            "--topology",
            &t,
            "--id",
            id,
            "--step-min-ms",
            "20",
            "--step-max-ms",
            "100",
        ]));
    }
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (api, acked, stop) = (root.api.clone(), acked.clone(), stop.clone());
        writers.push(std::thread::spawn(move || {
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let node = format!("n{:02}", (i * 4 + w) % NODES + 1);
                let value = format!("w{w}-{i}");
                // PhysState is tracked (the node's Dsc follows it);
                // Platform names the write.
                let phys = if i % 3 == 0 { "POWER_OFF" } else { "POWER_ON" };
                let body = format!(
                    r#"{{"hosts":"{node}","values":{{"/Platform":"{value}","/PhysState":"{phys}"}}}}"#
                );
                match std::panic::catch_unwind(|| http(&api, "POST", "/api/v1/cfg", Some(&body))) {
                    Ok((200, _)) => acked.lock().unwrap().push((node, value)),
                    _ => break,
                }
            }
        }));
    }
    assert!(
        wait_until(30, || acked.lock().unwrap().len() >= 200),
        "too few writes acknowledged"
    );
    let mut root = root;
    root.child.kill().unwrap(); // SIGKILL, writes still in flight
    let _ = root.child.wait();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.join();
    }
    let acked = acked.lock().unwrap().clone();
    // The last acknowledged value of each node must be served after restart.
    let mut want = std::collections::BTreeMap::new();
    for (node, value) in &acked {
        want.insert(node.clone(), value.clone());
    }
    let a2 = args(());
    let root2 = spawn(&a2.iter().map(String::as_str).collect::<Vec<_>>());
    let v = get_json(&root2.api, "/api/v1/nodes");
    let nodes = v["nodes"].as_array().unwrap();
    for (node, value) in &want {
        let n = nodes.iter().find(|n| n["name"] == node.as_str()).unwrap();
        let got = n["cfg"]["/Platform"].as_str().unwrap();
        // A later unacknowledged write may have committed too; it must come
        // from the same writer with a higher sequence.
        if got != value {
            let (gw, gi) = got[1..].split_once('-').unwrap();
            let (ww, wi) = value[1..].split_once('-').unwrap();
            assert!(
                gw == ww && gi.parse::<u64>().unwrap() > wi.parse::<u64>().unwrap(),
                "{node}: acknowledged {value}, served {got}"
            );
        }
    }
    assert!(want.len() >= NODES.min(acked.len()));
    // Liveness: the nodes kept running through the crash; every node's Dsc
    // converges to the Cfg the restarted root serves.
    let synced = || {
        let v = get_json(&root2.api, "/api/v1/nodes");
        let nodes = v["nodes"].as_array().unwrap().clone();
        nodes.len() == NODES
            && nodes
                .iter()
                .all(|n| n["cfg"]["/PhysState"] == n["dsc"]["/PhysState"] && n["converged"] == true)
    };
    let t0 = std::time::Instant::now();
    assert!(
        wait_until(60, synced),
        "nodes did not converge after the restart: {}",
        get_json(&root2.api, "/api/v1/nodes")
    );
    eprintln!(
        "{} writes acknowledged before SIGKILL; every node's Dsc matched the restarted root's Cfg {:.1} s after it served",
        acked.len(),
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(converged(&root2.api), NODES as u64);
    drop(root2);
    drop(members);
    let _ = std::fs::remove_dir_all(dir);
}

/// One process per instance (`layercake run`): the root, a sub-parent and
/// three nodes converge on a Cfg written through ctl, and again after the
/// root restarts.
#[test]
fn run_processes_form_a_cluster() {
    let dir = temp_dir("run");
    let topo = small_topology(&dir, 3);
    let data = dir.join("data");
    let t = topo.display().to_string();
    let d = data.display().to_string();
    let root = spawn(&[
        "run",
        "--topology",
        &t,
        "--id",
        "root",
        "--data-dir",
        &d,
        "--api",
        "127.0.0.1:0",
        "--step-max-ms",
        "300",
    ]);
    let mut others = Vec::new();
    for id in ["r01-sp", "n01", "n02", "n03"] {
        others.push(spawn_quiet(&[
            "run",
            "--topology",
            &t,
            "--id",
            id,
            "--step-max-ms",
            "300",
        ]));
    }
    let o = ctl(
        &root.api,
        &["set", "n[01-03]", "/PhysState=POWER_ON", "/RunState=SYNC"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let on = |api: &str| {
        let v = get_json(api, "/api/v1/nodes?filter=/RunState%3DSYNC");
        v["nodes"].as_array().unwrap().len() == 3 && converged(api) == 3
    };
    assert!(
        wait_until(30, || on(&root.api)),
        "the cluster did not converge"
    );
    drop(root);
    std::thread::sleep(Duration::from_millis(300));
    let root = spawn(&[
        "run",
        "--topology",
        &t,
        "--id",
        "root",
        "--data-dir",
        &d,
        "--api",
        "127.0.0.1:0",
    ]);
    assert!(
        wait_until(30, || on(&root.api)),
        "the cluster did not converge after the root restarted"
    );
    drop(others);
    let _ = std::fs::remove_dir_all(dir);
}

/// SIGTERM stops a root gracefully: it exits 0 soon, and its data stays.
#[test]
fn sigterm_shuts_down_gracefully() {
    let dir = temp_dir("sigterm");
    let data = dir.join("data");
    let d = data.display().to_string();
    let mut p = spawn(&[
        "demo",
        "--nodes",
        "10",
        "--racks",
        "1",
        "--api",
        "127.0.0.1:0",
        "--data-dir",
        &d,
    ]);
    assert!(wait_until(30, || converged(&p.api) == 10));
    let pid = p.child.id().to_string();
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(st.success());
    let mut code = None;
    assert!(
        wait_until(15, || {
            code = p.child.try_wait().unwrap().map(|s| s.code());
            code.is_some()
        }),
        "no exit within 15 s of SIGTERM"
    );
    assert_eq!(code, Some(Some(0)));
    assert!(data.join("cfg.redb").exists());
    let _ = std::fs::remove_dir_all(dir);
}
