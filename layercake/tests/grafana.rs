//! The Grafana dashboard (`docs/grafana-dashboard.json`) against a real
//! Prometheus (Debian's `prometheus`, installed by `.ci/deps`) scraping a
//! running demo: every panel's every query is valid PromQL and returns
//! data, and every metric it names is documented in `docs/metrics.md`.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn repo_file(rel: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Percent-encodes a query parameter.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Runs one instant query; returns Prometheus's JSON answer.
fn query(prom: &str, expr: &str) -> serde_json::Value {
    let (status, body) = http(
        prom,
        "GET",
        &format!("/api/v1/query?query={}", enc(expr)),
        None,
    );
    let v: serde_json::Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("`{expr}`: HTTP {status}, not JSON ({e}): {body}"));
    assert_eq!(v["status"], "success", "`{expr}`: {body}");
    v
}

/// Metric names in a PromQL expression (words that start like ours or
/// like the standard process metrics).
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        if ["kraken_", "layercake_", "process_"]
            .iter()
            .any(|p| word.starts_with(p))
        {
            // Histogram series are documented by their base name.
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| word.strip_suffix(s))
                .unwrap_or(&word)
                .to_string();
            if !out.contains(&base) {
                out.push(base);
            }
        }
        word.clear();
    }
    out
}

#[test]
fn every_dashboard_panel_works_against_a_real_prometheus() {
    let Ok(prom_bin) = which("prometheus") else {
        panic!("`prometheus` is not installed: run `bash .ci/deps` (Debian's prometheus package)");
    };
    let dashboard: serde_json::Value =
        serde_json::from_str(&repo_file("docs/grafana-dashboard.json")).unwrap();
    let metrics_doc = repo_file("docs/metrics.md");
    let mut targets = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap().to_string();
            let legend = t["legendFormat"].as_str().unwrap_or("").to_string();
            targets.push((p["title"].as_str().unwrap().to_string(), expr, legend));
        }
    }
    assert!(targets.len() >= 15, "{} queries", targets.len());
    for (title, expr, legend) in &targets {
        for name in metric_names(expr) {
            assert!(
                metrics_doc.contains(&format!("`{name}")),
                "panel `{title}`: `{name}` is not in docs/metrics.md"
            );
        }
        // Quantile legends name their quantile (`p50`, `p99`).
        if let Some(q) = expr.strip_prefix("histogram_quantile(") {
            let q: f64 = q.split(',').next().unwrap().trim().parse().unwrap();
            if legend.starts_with('p') {
                let want = format!("p{}", (q * 100.0).round());
                assert!(
                    legend.starts_with(&want),
                    "panel `{title}`: legend `{legend}` for {q}"
                );
            }
        }
    }

    // A demo with some activity: writes, mutations, convergence.
    let d = spawn(&[
        "demo",
        "--nodes",
        "40",
        "--racks",
        "4",
        "--api",
        "127.0.0.1:0",
        "--step-min-ms",
        "50",
        "--step-max-ms",
        "300",
    ]);
    assert!(
        wait_until(60, || converged(&d.api) == 40),
        "demo did not converge"
    );
    let dir = temp_dir("grafana");
    let port = free_tcp_port();
    let cfg = write_file(
        &dir,
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: layercake\n    static_configs:\n      - targets: [\"{}\"]\n",
            d.api
        ),
    );
    let mut prom = std::process::Command::new(prom_bin)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting prometheus");
    let prom_addr = format!("127.0.0.1:{port}");
    // Prometheus answers 503 until its storage is ready: poll until it
    // answers, then until it has scraped the demo.
    let up = wait_until(60, || {
        std::net::TcpStream::connect(&prom_addr).is_ok()
            && http(&prom_addr, "GET", "/-/ready", None).0 == 200
            && query(&prom_addr, "up{job=\"layercake\"}")["data"]["result"][0]["value"][1] == "1"
    });
    assert!(up, "Prometheus never scraped the demo");
    let t0 = Instant::now();
    for round in 0..3 {
        let state = if round % 2 == 0 {
            "POWER_OFF"
        } else {
            "POWER_ON"
        };
        let (st, body) = http(
            &d.api,
            "POST",
            "/api/v1/cfg",
            Some(&format!(
                "{{\"hosts\":\"n[0001-0020]\",\"values\":{{\"/PhysState\":\"{state}\"}}}}"
            )),
        );
        assert_eq!(st, 200, "{body}");
        assert!(
            wait_until(60, || converged(&d.api) == 40),
            "demo did not converge after a write"
        );
    }
    // Enough scrapes after the activity for rate() over 1m windows.
    if let Some(rest) = Duration::from_secs(8).checked_sub(t0.elapsed()) {
        std::thread::sleep(rest);
    }
    std::thread::sleep(Duration::from_secs(3));

    let mut empty = Vec::new();
    for (title, expr, _) in &targets {
        let v = query(&prom_addr, expr);
        let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
        if result.is_empty() {
            empty.push(format!("`{title}`: {expr}"));
        }
    }
    let _ = prom.kill();
    let _ = prom.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        empty.is_empty(),
        "queries without data:\n{}",
        empty.join("\n")
    );
}

/// The path of `name` on `PATH`.
fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}
