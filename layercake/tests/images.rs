//! End to end: image sets (layer 1) on 20 `layercake run` node processes
//! on loopback, with their two sub-parents and the root, running real
//! containers through Debian's `runc` from busybox tarballs (Debian's
//! `busybox-static`) served by the root and cached by the sub-parents.
//!
//! Shown: 5 nodes marked `layercake busy`; a new image-set version rolls
//! the 15 free nodes within [`ROLL_BOUND`] while the 5 busy ones keep their
//! old container (same start time) and `ctl describe` says they wait for
//! `/Busy`; `layercake free` rolls them; a bad digest ends FATAL with a
//! readable reason while the old container keeps running; a container
//! killed behind the system's back is restarted; `/PhysState=POWER_OFF` on
//! a busy node waits until it is free. Needs root and `runc` (`.ci/deps`).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use sha2::{Digest, Sha256};

const NODES: usize = 20;
const BUSY: usize = 5;
/// How long the free nodes may take to run a new version (a loaded
/// 2-core machine running 23 processes).
const ROLL_BOUND: Duration = Duration::from_secs(60);
const IMG: &str = "type.googleapis.com/layercake.image.ImageSet";

fn name(i: usize) -> String {
    format!("n{i:02}")
}

/// A busybox root filesystem tarball whose `/etc/version` is `version`.
fn busybox_tar(dir: &Path, version: &str) -> (String, String) {
    let file = format!("busybox-{version}.tar");
    let path = dir.join(&file);
    let f = std::fs::File::create(&path).unwrap();
    let mut b = tar::Builder::new(f);
    let bb = std::fs::read("/bin/busybox").expect("busybox-static installed (/bin/busybox)");
    let mut add = |p: &str, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_cksum();
        b.append_data(&mut h, p, data).unwrap();
    };
    add("bin/busybox", &bb, 0o755);
    add("etc/version", version.as_bytes(), 0o644);
    for link in ["sh", "sleep"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, format!("bin/{link}"), "busybox")
            .unwrap();
    }
    b.finish().unwrap();
    drop(b);
    let sha = Sha256::digest(std::fs::read(&path).unwrap());
    let hex: String = sha.iter().map(|x| format!("{x:02x}")).collect();
    (file, format!("sha256:{hex}"))
}

/// Every node's Dsc as `URL -> text`, by name.
fn dsc_all(api: &str) -> HashMap<String, serde_json::Map<String, serde_json::Value>> {
    let v = get_json(api, "/api/v1/nodes");
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let d = n["dsc"].as_object().cloned().unwrap_or_default();
            (n["name"].as_str().unwrap().to_string(), d)
        })
        .collect()
}

fn val(d: &serde_json::Map<String, serde_json::Value>, url: &str) -> String {
    d.get(url)
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string()
}

fn running(d: &serde_json::Map<String, serde_json::Value>) -> String {
    val(d, &format!("{IMG}/Image/bb/Running"))
}

fn started(d: &serde_json::Map<String, serde_json::Value>) -> String {
    val(d, &format!("{IMG}/Image/bb/Started"))
}

/// `runc state` of node `i`'s container: (status, pid).
fn runc_state(data: &Path, i: usize) -> Option<(String, u64)> {
    let out = Command::new("runc")
        .arg("--root")
        .arg(data.join(name(i)).join("images/node/runc"))
        .args(["state", &format!("lc-{}-bb", name(i))])
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some((v["status"].as_str()?.to_string(), v["pid"].as_u64()?))
}

fn busy(data: &Path, i: usize, verb: &str) {
    let sock = data.join(name(i)).join("agent.sock");
    let out = Command::new(bin())
        .arg(verb)
        .arg("--socket")
        .arg(&sock)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "layercake {verb} on {}: {}",
        name(i),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn set(api: &str, hosts: &str, values: &[String]) {
    let mut args = vec!["set".to_string(), hosts.to_string()];
    args.extend(values.iter().cloned());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ctl(api, &a);
    assert!(
        out.status.success(),
        "ctl set: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn image_values(set_name: &str, file: &str, digest: &str) -> Vec<String> {
    // The CLI's short names (`image.bb.digest` for
    // `type.googleapis.com/layercake.image.ImageSet/Image/bb/Digest`).
    vec![
        "image.state=ACTIVE".to_string(),
        format!("image.name={set_name}"),
        format!("image.bb.source={file}"),
        format!("image.bb.digest={digest}"),
        "image.bb.command=/bin/sleep 1000000".to_string(),
        "image.bb.state=ACTIVE".to_string(),
    ]
}

/// Removes every container the nodes left (they outlive their
/// processes), then the test's directory.
struct Containers(PathBuf, PathBuf);

impl Drop for Containers {
    fn drop(&mut self) {
        for i in 1..=NODES {
            let root = self.0.join(name(i)).join("images/node/runc");
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(["delete", "--force", &format!("lc-{}-bb", name(i))])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn wait_all(
    api: &str,
    secs: u64,
    nodes: &[usize],
    f: impl Fn(&serde_json::Map<String, serde_json::Value>) -> bool,
) -> bool {
    wait_until(secs, || {
        let all = dsc_all(api);
        nodes.iter().all(|&i| all.get(&name(i)).is_some_and(&f))
    })
}

#[test]
fn image_sets_roll_free_nodes_and_wait_for_busy_ones() {
    assert!(
        Command::new("runc")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "runc is needed (apt-get install runc; see .ci/deps)"
    );
    let dir = temp_dir("images");
    let data = dir.join("data");
    let images = dir.join("served");
    std::fs::create_dir_all(&images).unwrap();
    let cleanup = Containers(data.clone(), dir.clone());
    let (v1, d1) = busybox_tar(&images, "v1");
    let (v2, d2) = busybox_tar(&images, "v2");
    write_file(&dir, "cluster.key", &"ef".repeat(32));
    let port = free_udp_port();
    let topo = format!(
        "cluster: images\nkey_file: cluster.key\nsync: {{ hello: 500ms, dead: 2s }}\n\
         root: {{ name: admin, addr: \"127.0.0.1:{port}\" }}\ngroups:\n  \
         - name: r01\n    sub_parent: {{ name: r01-sp, addr: \"127.0.91.1:{port}\" }}\n    \
         nodes:\n      - {{ hosts: \"n[01-10]\", addr: \"127.0.91.{{n+10}}:{port}\" }}\n  \
         - name: r02\n    sub_parent: {{ name: r02-sp, addr: \"127.0.92.1:{port}\" }}\n    \
         nodes:\n      - {{ hosts: \"n[11-20]\", addr: \"127.0.92.{{n+10}}:{port}\" }}\n"
    );
    let topo = write_file(&dir, "cluster.yaml", &topo)
        .display()
        .to_string();
    let d = |n: &str| data.join(n).display().to_string();
    let served = images.display().to_string();
    let root = spawn(&[
        "run",
        "--topology",
        &topo,
        "--id",
        "admin",
        "--data-dir",
        &d("admin"),
        "--api",
        "127.0.0.1:0",
        "--images",
        "--image-dir",
        &served,
    ]);
    let mut procs = Vec::new();
    for sp in ["r01-sp", "r02-sp"] {
        procs.push(spawn_quiet(&[
            "run",
            "--topology",
            &topo,
            "--id",
            sp,
            "--data-dir",
            &d(sp),
            "--images",
        ]));
    }
    for i in 1..=NODES {
        let n = name(i);
        let sock = data.join(&n).join("agent.sock").display().to_string();
        procs.push(spawn_quiet(&[
            "run",
            "--topology",
            &topo,
            "--id",
            &n,
            "--data-dir",
            &d(&n),
            "--images",
            "--agent-socket",
            &sock,
            "--step-min-ms",
            "50",
            "--step-max-ms",
            "200",
            "--image-backoff",
            "200ms",
        ]));
    }
    let api = root.api.clone();
    let all: Vec<usize> = (1..=NODES).collect();
    let hosts = format!("n[01-{NODES:02}]");

    // Boot and run version 1 everywhere.
    let t = Instant::now();
    let mut boot = vec![
        "/PhysState=POWER_ON".to_string(),
        "/RunState=SYNC".to_string(),
        "type.googleapis.com/layercake.pxe.Pxe/State=COMP".to_string(),
    ];
    boot.extend(image_values("v1", &v1, &d1));
    set(&api, &hosts, &boot);
    assert!(
        wait_all(&api, 180, &all, |d| running(d) == d1
            && val(d, &format!("{IMG}/State")) == "ACTIVE"),
        "not every node runs v1: {:?}",
        dsc_all(&api)
            .iter()
            .map(|(n, d)| (
                n.clone(),
                running(d),
                val(d, &format!("{IMG}/Image/bb/Error"))
            ))
            .collect::<Vec<_>>()
    );
    eprintln!("{NODES} nodes booted and run v1 in {:?}", t.elapsed());
    for i in &all {
        let s = runc_state(&data, *i).expect("the container exists");
        assert_eq!(s.0, "running", "{}", name(*i));
    }

    // Five nodes busy; remember their containers' start times.
    let busy_nodes: Vec<usize> = (1..=BUSY).collect();
    let free_nodes: Vec<usize> = (BUSY + 1..=NODES).collect();
    for &i in &busy_nodes {
        busy(&data, i, "busy");
    }
    assert!(
        wait_all(&api, 30, &busy_nodes, |d| val(d, "/Busy") == "BUSY"),
        "Busy not reported"
    );
    let before = dsc_all(&api);
    let pids: Vec<u64> = busy_nodes
        .iter()
        .map(|&i| runc_state(&data, i).unwrap().1)
        .collect();

    // Version 2: the free nodes roll, the busy ones wait.
    let t0 = Instant::now();
    set(&api, &hosts, &image_values("v2", &v2, &d2));
    assert!(
        wait_all(&api, ROLL_BOUND.as_secs(), &free_nodes, |d| running(d)
            == d2),
        "the {} free nodes did not run v2 within {ROLL_BOUND:?}",
        free_nodes.len()
    );
    let roll = t0.elapsed();
    eprintln!(
        "{} free nodes rolled to v2 in {roll:?} (bound {ROLL_BOUND:?})",
        free_nodes.len()
    );
    let now = dsc_all(&api);
    for (k, &i) in busy_nodes.iter().enumerate() {
        let n = name(i);
        assert_eq!(running(&now[&n]), d1, "{n} is busy: still v1");
        assert_eq!(
            started(&now[&n]),
            started(&before[&n]),
            "{n}: same container start"
        );
        assert_eq!(
            runc_state(&data, i).unwrap().1,
            pids[k],
            "{n}: same container process"
        );
        assert_eq!(val(&now[&n], &format!("{IMG}/State")), "UPDATE");
    }
    let desc = ctl(&api, &["describe", &name(1)]);
    let text = String::from_utf8_lossy(&desc.stdout);
    assert!(
        text.contains("Waiting:") && text.contains("image_update") && text.contains("/Busy=BUSY"),
        "describe says what the chain waits for: {text}"
    );
    let st = ctl(&api, &["rollout", "status", &hosts]);
    let line = String::from_utf8_lossy(&st.stdout);
    assert!(st.status.success(), "{line}");
    assert_eq!(
        line.trim(),
        format!(
            "rolled {}/{NODES}, waiting (busy) {BUSY}, rolling 0, failed 0",
            NODES - BUSY
        )
    );

    // Free: they roll.
    let t1 = Instant::now();
    for &i in &busy_nodes {
        busy(&data, i, "free");
    }
    assert!(
        wait_all(&api, ROLL_BOUND.as_secs(), &busy_nodes, |d| running(d)
            == d2),
        "freed nodes did not roll within {ROLL_BOUND:?}"
    );
    eprintln!(
        "{BUSY} freed nodes rolled to v2 in {:?} after `layercake free`",
        t1.elapsed()
    );

    // A bad digest: FATAL with the reason; the old container keeps running.
    let bad = format!("sha256:{}", "0".repeat(64));
    let victim = NODES;
    let pid = runc_state(&data, victim).unwrap().1;
    set(&api, &name(victim), &image_values("v3-broken", &v2, &bad));
    let img_state = format!("{IMG}/Image/bb/State");
    assert!(
        wait_all(&api, 60, &[victim], |d| val(d, &img_state) == "FATAL"),
        "bad digest not FATAL: {:?}",
        dsc_all(&api)[&name(victim)]
    );
    let dv = &dsc_all(&api)[&name(victim)];
    let err = val(dv, &format!("{IMG}/Image/bb/Error"));
    eprintln!("bad digest: {err}");
    assert!(err.contains("digest mismatch"), "readable reason: {err}");
    assert_eq!(running(dv), d2, "the old image still runs");
    let st = ctl(&api, &["rollout", "status", &hosts]);
    assert!(!st.status.success(), "a failed rollout exits non-zero");
    assert!(String::from_utf8_lossy(&st.stdout).contains("failed 1"));
    assert_eq!(runc_state(&data, victim), Some(("running".into(), pid)));

    // A container killed behind the system's back is restarted.
    let k = NODES - 1;
    let (_, kpid) = runc_state(&data, k).unwrap();
    let was = started(&dsc_all(&api)[&name(k)]);
    let t2 = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-9", &kpid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert!(
        wait_all(&api, 30, &[k], |d| started(d) != was
            && val(d, &format!("{IMG}/Image/bb/Restarts")) == "1"),
        "killed container not restarted"
    );
    assert!(wait_until(10, || runc_state(&data, k)
        .is_some_and(|(s, p)| s == "running" && p != kpid)));
    eprintln!("killed container restarted in {:?}", t2.elapsed());

    // POWER_OFF on a busy node waits until it is free.
    let p = 2;
    busy(&data, p, "busy");
    assert!(wait_all(&api, 30, &[p], |d| val(d, "/Busy") == "BUSY"));
    set(&api, &name(p), &["/PhysState=POWER_OFF".to_string()]);
    std::thread::sleep(Duration::from_secs(5));
    let dp = &dsc_all(&api)[&name(p)];
    assert_eq!(
        val(dp, "/PhysState"),
        "POWER_ON",
        "a busy node is not powered off"
    );
    assert_eq!(runc_state(&data, p).map(|s| s.0), Some("running".into()));
    let desc = ctl(&api, &["describe", &name(p)]);
    let text = String::from_utf8_lossy(&desc.stdout);
    assert!(
        text.contains("Waiting:") && text.contains("/Busy=BUSY"),
        "{text}"
    );
    let t3 = Instant::now();
    busy(&data, p, "free");
    assert!(
        wait_all(&api, 60, &[p], |d| val(d, "/PhysState") == "POWER_OFF"),
        "freed node not powered off"
    );
    assert_eq!(
        runc_state(&data, p),
        None,
        "images stopped before power off"
    );
    eprintln!("power off after `free`: {:?}", t3.elapsed());
    drop(procs);
    drop(root);
    drop(cleanup);
}
