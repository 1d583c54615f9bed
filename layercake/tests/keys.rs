//! End to end: instances with certificates join over QUIC with mutual TLS
//! and get the keyring (no key file on the nodes), the keyring rotates
//! (generate -> install -> use -> remove) while Cfg writes go on and every
//! node keeps converging, and joins with a foreign or misnamed certificate
//! are refused and counted.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::*;

/// A UDP port free on 127.0.0.1 with port + 2 (the join port) free too.
fn free_port_pair() -> u16 {
    loop {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p < 65534 && std::net::UdpSocket::bind(("127.0.0.1", p + 2)).is_ok() {
            return p;
        }
    }
}

/// A topology without a key file: root, one rack `r01`, nodes n01..nNN.
fn topology(dir: &Path, nodes: usize, net: u8) -> PathBuf {
    let port = free_port_pair();
    let yaml = format!(
        "cluster: test\nsync: {{ hello: 300ms, dead: 1200ms }}\n\
         root: {{ name: root, addr: \"127.0.0.1:{port}\" }}\n\
         groups:\n  - name: r01\n    sub_parent: {{ name: r01-sp, addr: \"127.0.{net}.1:{port}\" }}\n\
         \x20   nodes:\n      - {{ hosts: \"n[01-{nodes:02}]\", addr: \"127.0.{net}.{{n+10}}:{port}\" }}\n"
    );
    write_file(dir, "cluster.yaml", &yaml)
}

fn lc(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("LAYERCAKE_LOG", "warn")
        .env_remove("LAYERCAKE_TOKEN")
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn certs(dir: &Path, ca: &str, names: &[&str], out: &str) {
    let ca_dir = dir.join(ca);
    if !ca_dir.join("ca.crt").exists() {
        ok(&lc(&[
            "certs",
            "init",
            "--dir",
            ca_dir.to_str().unwrap(),
            "--cluster",
            "test",
        ]));
    }
    for n in names {
        let o = dir.join(out);
        ok(&lc(&[
            "certs",
            "issue",
            "--dir",
            ca_dir.to_str().unwrap(),
            "--name",
            n,
            "--out",
            o.to_str().unwrap(),
        ]));
    }
}

fn run_args<'a>(topo: &'a str, id: &'a str, pki: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        "--topology",
        topo,
        "--id",
        id,
        "--pki",
        pki,
        "--key-poll",
        "300ms",
        "--step-min-ms",
        "20",
        "--step-max-ms",
        "100",
    ]
}

fn keys(api: &str, args: &[&str]) -> Output {
    let mut a = vec!["keys", "--api", api];
    a.extend_from_slice(args);
    lc(&a)
}

/// Flips every node's PhysState and waits until every Dsc follows.
fn flip_and_converge(api: &str, nodes: usize, phys: &str) {
    let o = ctl(api, &["set", "n[01-03]", &format!("/PhysState={phys}")]);
    ok(&o);
    let done = || {
        let v = get_json(api, "/api/v1/nodes");
        let n = v["nodes"].as_array().unwrap();
        n.len() == nodes
            && n.iter()
                .all(|x| x["dsc"]["/PhysState"] == phys && x["converged"] == true)
    };
    assert!(
        wait_until(30, done),
        "nodes did not converge to {phys}: {}",
        get_json(api, "/api/v1/nodes")
    );
}

fn metric(api: &str, line_start: &str) -> f64 {
    let (st, m) = http(api, "GET", "/metrics", None);
    assert_eq!(st, 200);
    m.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Retries a keys command while the root answers 409 (acknowledgements
/// pending), for up to `secs`.
fn keys_until_ok(api: &str, args: &[&str], secs: u64) -> String {
    let t0 = std::time::Instant::now();
    let mut last = None;
    let done = wait_until(secs, || {
        let o = keys(api, args);
        let success = o.status.success();
        last = Some(o);
        success
    });
    let o = last.unwrap();
    assert!(
        done,
        "keys {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!(
        "keys {args:?} accepted after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn keyring_rotates_while_the_cluster_keeps_converging() {
    let dir = temp_dir("keys");
    let topo = topology(&dir, 3, 91);
    let t = topo.display().to_string();
    let names = ["root", "r01-sp", "n01", "n02", "n03"];
    certs(&dir, "ca", &names, "pki");
    let pki = dir.join("pki").display().to_string();
    let data = dir.join("data").display().to_string();
    let mut root_args = run_args(&t, "root", &pki);
    root_args.extend(["--data-dir", &data, "--api", "127.0.0.1:0"]);
    let root = spawn(&root_args);
    let mut members = Vec::new();
    for id in &names[1..] {
        members.push(spawn_quiet(&run_args(&t, id, &pki)));
    }
    // The nodes have no key file: they joined over QUIC for the ring.
    ok(&ctl(
        &root.api,
        &["set", "n[01-03]", "/PhysState=POWER_ON", "/RunState=SYNC"],
    ));
    assert!(
        wait_until(40, || converged(&root.api) == 3),
        "no convergence after joining"
    );
    let status = ok(&keys(&root.api, &["list"]));
    assert!(status.contains("\"primary\": 1"), "{status}");
    assert!(
        !status.contains("\"key\""),
        "the API must not show key material: {status}"
    );

    // Cfg writes go on during the whole rotation.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (api, stop, writes) = (root.api.clone(), stop.clone(), writes.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let body = format!(r#"{{"hosts":"n[01-03]","values":{{"/Platform":"p{i}"}}}}"#);
                let (st, b) = http(&api, "POST", "/api/v1/cfg", Some(&body));
                assert_eq!(st, 200, "{b}");
                writes.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };

    let k2 = dir.join("k2.key");
    ok(&lc(&["keys", "generate", "--out", k2.to_str().unwrap()]));
    let out = ok(&keys(
        &root.api,
        &["install", "--key-file", k2.to_str().unwrap()],
    ));
    assert!(out.contains("\"id\": 2"), "{out}");
    flip_and_converge(&root.api, 3, "POWER_OFF");
    // `use` waits (409) until every instance holds key 2.
    keys_until_ok(&root.api, &["use", "2"], 20);
    flip_and_converge(&root.api, 3, "POWER_ON");
    // The root generates key 3 itself (no key leaves it); remove key 1
    // once nobody sends with it.
    let out = ok(&keys(&root.api, &["install"]));
    assert!(out.contains("\"id\": 3"), "{out}");
    keys_until_ok(&root.api, &["remove", "1"], 20);
    flip_and_converge(&root.api, 3, "POWER_OFF");
    let o = keys(&root.api, &["remove", "2"]);
    assert_eq!(
        o.status.code(),
        Some(8),
        "the sending key cannot be removed"
    );
    keys_until_ok(&root.api, &["use", "3"], 20);
    keys_until_ok(&root.api, &["remove", "2"], 20);
    flip_and_converge(&root.api, 3, "POWER_ON");
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(writes.load(Ordering::Relaxed) >= 20);
    eprintln!(
        "{} Cfg writes during the rotation",
        writes.load(Ordering::Relaxed)
    );
    let status = ok(&keys(&root.api, &["list"]));
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["primary"], 3, "{status}");
    assert_eq!(v["keys"].as_array().unwrap().len(), 1, "{status}");
    // No datagram reached the root under a key it did not hold.
    let drops = |r: &str| {
        metric(
            &root.api,
            &format!("kraken_sync_dropped_total{{reason=\"{r}\"}}"),
        )
    };
    assert_eq!(drops("unknown_key"), 0.0);
    assert_eq!(drops("auth_failed"), 0.0);
    // ... and the root never lost its link to the sub-parent.
    let down = metric(&root.api, "kraken_sync_peer_events_total{event=\"down\"}");
    assert_eq!(down, 0.0, "a link went down during the rotation");

    // The ring is durable: a root killed and restarted keeps key 3, and
    // the nodes (which kept it) converge with it.
    let mut root = root;
    root.child.kill().unwrap();
    let _ = root.child.wait();
    let root2 = spawn(&root_args);
    let status = ok(&keys(&root2.api, &["list"]));
    assert!(status.contains("\"primary\": 3"), "{status}");
    flip_and_converge(&root2.api, 3, "POWER_OFF");
    drop(root2);
    drop(members);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn joins_with_a_foreign_or_misnamed_certificate_are_refused() {
    let dir = temp_dir("join-refused");
    let topo = topology(&dir, 2, 92);
    let t = topo.display().to_string();
    certs(&dir, "ca", &["root", "r01-sp", "n01", "ghost"], "pki");
    certs(&dir, "other-ca", &["n02"], "other");
    let pki = dir.join("pki").display().to_string();
    let data = dir.join("data").display().to_string();
    let mut root_args = run_args(&t, "root", &pki);
    root_args.extend(["--data-dir", &data, "--api", "127.0.0.1:0"]);
    let root = spawn(&root_args);
    let sp = spawn_quiet(&run_args(&t, "r01-sp", &pki));
    let n01 = spawn_quiet(&run_args(&t, "n01", &pki));
    ok(&ctl(&root.api, &["set", "n[01-02]", "/PhysState=POWER_ON"]));
    let refused = |reason: &str| {
        metric(
            &root.api,
            &format!("kraken_join_refused_total{{reason=\"{reason}\"}}"),
        )
    };

    // n02 with a certificate from another CA (it trusts the right CA).
    let ca = dir.join("pki/ca.crt").display().to_string();
    let (c, k) = (dir.join("other/n02.crt"), dir.join("other/n02.key"));
    let mut a = run_args(&t, "n02", &pki)[..5].to_vec();
    a.extend([
        "--ca",
        &ca,
        "--cert",
        c.to_str().unwrap(),
        "--key",
        k.to_str().unwrap(),
    ]);
    let foreign = spawn_quiet(&a);
    assert!(
        wait_until(20, || refused("handshake") >= 1.0),
        "foreign certificate not refused"
    );
    drop(foreign);

    // n02 presenting ghost's certificate (a name not in the topology).
    let (c, k) = (dir.join("pki/ghost.crt"), dir.join("pki/ghost.key"));
    let mut a = run_args(&t, "n02", &pki)[..5].to_vec();
    a.extend([
        "--ca",
        &ca,
        "--cert",
        c.to_str().unwrap(),
        "--key",
        k.to_str().unwrap(),
    ]);
    let ghost = spawn_quiet(&a);
    assert!(
        wait_until(20, || refused("name_mismatch") >= 1.0),
        "misnamed certificate not refused"
    );

    // n01 joined and converges; n02 never got the ring, so it never
    // speaks the overlay: no Dsc, never converged.
    assert!(wait_until(30, || {
        get_json(&root.api, "/api/v1/nodes/n01")["converged"] == true
    }));
    std::thread::sleep(std::time::Duration::from_secs(2));
    let n02 = get_json(&root.api, "/api/v1/nodes/n02");
    assert_eq!(n02["converged"], false, "{n02}");
    assert!(
        n02["dsc"].is_null() || n02["dsc"]["/PhysState"] != "POWER_ON",
        "{n02}"
    );
    let status = ok(&keys(&root.api, &["list"]));
    assert!(
        status.contains("n02"),
        "n02 must not hold the key: {status}"
    );
    // So a new key cannot become the sending key: n02 never acknowledges
    // it (409, exit 8, naming n02), unless forced.
    ok(&keys(&root.api, &["install"]));
    let o = keys(&root.api, &["use", "2"]);
    assert_eq!(o.status.code(), Some(8));
    assert!(String::from_utf8_lossy(&o.stderr).contains("n02"));
    ok(&keys(&root.api, &["use", "2", "--force"]));
    drop((ghost, n01, sp, root));
    let _ = std::fs::remove_dir_all(dir);
}
