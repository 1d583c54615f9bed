//! `transport: quic` on a level works in `layercake run`: separate
//! processes with certificates from the cluster CA (`--pki`), the nodes'
//! level pinned to QUIC; the nodes join, converge, and their `/metrics`
//! show frames sent over QUIC (the dual driver), none falling back.

mod common;

use std::process::{Command, Output};

use common::*;

fn lc(args: &[&str]) -> Output {
    let o = Command::new(bin())
        .args(args)
        .env("LAYERCAKE_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn free_tcp() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_level_pinned_to_quic_runs_over_quic() {
    let dir = temp_dir("quic-run");
    let d = dir.to_str().unwrap();
    let (ca, pki) = (format!("{d}/ca"), format!("{d}/pki"));
    lc(&["certs", "init", "--dir", &ca, "--cluster", "q"]);
    for n in ["root", "sp", "n1", "n2"] {
        lc(&["certs", "issue", "--dir", &ca, "--name", n, "--out", &pki]);
    }
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let net = 78;
    let topo = write_file(
        &dir,
        "topo.yaml",
        &format!(
            "cluster: q\nsync: {{ hello: 500ms, dead: 2s }}\nlevels:\n  - name: rack\n  - name: node\n    sync: {{ transport: quic }}\n\
             root: {{ name: root, addr: \"127.0.{net}.1:{port}\" }}\ngroups:\n  - name: r1\n\
             \x20   sub_parent: {{ name: sp, addr: \"127.0.{net}.2:{port}\" }}\n    nodes:\n\
             \x20     - {{ hosts: \"n[1-2]\", addr: \"127.0.{net}.{{n+2}}:{port}\" }}\n"
        ),
    );
    let t = topo.to_str().unwrap();
    let data = format!("{d}/db");
    let base = [
        "--topology",
        t,
        "--pki",
        &pki,
        "--step-min-ms",
        "20",
        "--step-max-ms",
        "100",
    ];
    let mut root_args = vec![
        "run",
        "--id",
        "root",
        "--data-dir",
        &data,
        "--api",
        "127.0.0.1:0",
    ];
    root_args.extend(base);
    let root = spawn(&root_args);
    let m1 = format!("127.0.0.1:{}", free_tcp());
    let mut procs = Vec::new();
    for (id, metrics) in [("sp", None), ("n1", Some(m1.as_str())), ("n2", None)] {
        let mut a = vec!["run", "--id", id];
        a.extend(base);
        if let Some(m) = metrics {
            a.extend(["--metrics", m]);
        }
        procs.push(spawn_quiet(&a));
    }
    let o = ctl(
        &root.api,
        &["set", "n[1-2]", "/PhysState=POWER_ON", "/RunState=SYNC"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        wait_until(60, || converged(&root.api) == 2),
        "the nodes did not converge over QUIC"
    );
    // The path counters are sampled every 2 s.
    let quic_frames = || {
        let text = scrape(&m1).unwrap_or_default();
        prom_value(
            &text,
            "kraken_sync_quic_frames_total",
            &[("instance", "n1")],
        )
    };
    assert!(
        wait_until(10, || quic_frames().is_some_and(|v| v > 0.0)),
        "no frame over QUIC: {:?}",
        quic_frames()
    );
    let text = scrape(&m1).expect("n1 serves its metrics");
    let fallbacks = prom_value(
        &text,
        "kraken_sync_quic_fallbacks_total",
        &[("instance", "n1")],
    );
    assert_eq!(fallbacks, Some(0.0), "a pinned link is not a fallback");
    drop(procs);
    drop(root);
    let _ = std::fs::remove_dir_all(dir);
}
