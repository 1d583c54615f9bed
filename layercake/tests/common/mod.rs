//! Helpers shared by the end-to-end tests: spawning the binary, finding
//! the API address it prints, raw HTTP requests, and the ctl client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_layercake")
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("layercake-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A running `layercake` process, killed on drop.
pub struct Proc {
    pub child: Child,
    pub api: String,
    pub lines: mpsc::Receiver<String>,
    /// A data directory this helper chose, removed on drop.
    pub data_dir: Option<PathBuf>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(d) = &self.data_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Spawns `layercake ARGS` and waits (at most 60 s) for it to print its
/// API address (`api: http://ADDR/api/v1`); other stdout lines stay
/// readable from `lines`.
pub fn spawn(args: &[&str]) -> Proc {
    spawn_with_api(args, true)
}

/// Spawns without waiting for an API line.
pub fn spawn_quiet(args: &[&str]) -> Proc {
    spawn_with_api(args, false)
}

fn spawn_with_api(args: &[&str], wait_api: bool) -> Proc {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    let mut data_dir = None;
    // A demo killed by a test cannot remove its default data directory:
    // give it one under the test's temporary folder instead.
    if args.first() == Some(&"demo") && !args.contains(&"--data-dir") {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("layercake-test-demo-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        cmd.arg("--data-dir").arg(&dir);
        data_dir = Some(dir);
    }
    let mut child = cmd
        .env("LAYERCAKE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning layercake");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut api = String::new();
    if wait_api {
        let deadline = Instant::now() + Duration::from_secs(60);
        while api.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let l = rx
                .recv_timeout(left)
                .expect("layercake did not print its API address");
            if let Some(rest) = l.strip_prefix("api: http://") {
                api = rest.trim_end_matches("/api/v1").to_string();
            }
        }
    }
    Proc {
        child,
        api,
        lines: rx,
        data_dir,
    }
}

/// One raw HTTP/1.1 request; returns (status, body).
pub fn http(api: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(api).expect("connecting to the API");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// GET returning JSON (panics on a non-200 answer).
pub fn get_json(api: &str, path: &str) -> serde_json::Value {
    let (st, body) = http(api, "GET", path, None);
    assert_eq!(st, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Runs `layercake ctl --api API ARGS`.
pub fn ctl(api: &str, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("ctl")
        .arg("--api")
        .arg(api)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("running ctl")
}

/// Polls `f` every 200 ms until it is true or `secs` pass.
pub fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    f()
}

/// The number of converged nodes the root reports.
pub fn converged(api: &str) -> u64 {
    get_json(api, "/api/v1/health")["converged"]
        .as_u64()
        .unwrap_or(0)
}

/// Writes `text` to `dir/name`.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    if name.ends_with(".key") {
        // Secrets are 0600, as `topo check` and `run` require.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    p
}

/// The Prometheus text an instance serves at `http://ADDR/metrics`, or
/// `None` while nothing listens there (a process starting or killed).
pub fn scrape(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    Some(
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        },
    )
}

/// The value of the sample `name` in Prometheus text `text` whose labels
/// include every `(label, value)` of `labels` (the first such line).
pub fn prom_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|l| {
        if l.starts_with('#') {
            return None;
        }
        let (series, value) = l.rsplit_once(' ')?;
        let (metric, set) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        if metric != name {
            return None;
        }
        let all = labels
            .iter()
            .all(|(k, v)| set.split(',').any(|p| p == format!("{k}=\"{v}\"")));
        if all { value.parse().ok() } else { None }
    })
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
