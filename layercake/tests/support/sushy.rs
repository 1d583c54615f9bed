//! Starts sushy-tools' Redfish emulator (`sushy-emulator`, fake driver) on a
//! free loopback port with HTTP basic authentication, for the Redfish
//! tests. Finding or starting it is required: a missing emulator FAILS the
//! test (`.ci/run` installs it into `/opt/sushy`), it is never skipped.
//!
//! The fake driver applies a power change 1 to 11 s after the request; the
//! tests shorten that to at most `delay_max_s` (0: the next read) by
//! replacing `random.randint` inside the emulator's own config file, which
//! the emulator executes as Python. The same file raises the emulator's
//! open-file limit to its hard limit: its state store opens a SQLite
//! connection per request and closes it only when collected, so a few
//! hundred systems under load run out of descriptors at the usual 1,024.
//!
//! Readiness means: this process logged that it runs on our port (not
//! another process that took the port), accepts connections, and has
//! answered one authenticated request (which builds its fake driver: built
//! lazily by concurrent first requests, two drivers would reset systems to
//! their initial state). Set `LAYERCAKE_KEEP_SUSHY=1` to keep the emulator's
//! folder (config, log, state) for debugging.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The user and password the emulator accepts.
pub const USER: &str = "admin";
/// The password of [`USER`].
pub const PASSWORD: &str = "rf-s3cret";

/// A running emulator; killed on drop.
pub struct Sushy {
    child: Child,
    port: u16,
    dir: PathBuf,
    systems: usize,
    tls: bool,
}

/// The emulator binary: `SUSHY_EMULATOR` (a path), `sushy-emulator` on PATH,
/// then `/opt/sushy/bin/sushy-emulator` and `$HOME/.local/sushy/bin/sushy-emulator`.
pub fn emulator_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SUSHY_EMULATOR") {
        return PathBuf::from(p);
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("sushy-emulator"))
                .collect()
        })
        .unwrap_or_default();
    candidates.push(PathBuf::from("/opt/sushy/bin/sushy-emulator"));
    if let Some(h) = std::env::var_os("HOME") {
        candidates.push(Path::new(&h).join(".local/sushy/bin/sushy-emulator"));
    }
    candidates.into_iter().find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "sushy-emulator not found (PATH, /opt/sushy/bin, ~/.local/sushy/bin): \
             install it with `python3 -m venv /opt/sushy && /opt/sushy/bin/pip install sushy-tools` \
             (bash .ci/run does)"
        )
    })
}

/// The Python next to the emulator (its venv, which has bcrypt), else
/// `python3` from PATH.
fn python() -> PathBuf {
    let venv = emulator_binary().with_file_name("python3");
    if venv.is_file() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// A free port never handed out before in this process (tests run in
/// parallel: two emulators must not be given the same port).
fn free_port() -> u16 {
    static TAKEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free TCP port")
            .port();
        let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
        if !taken.contains(&port) {
            taken.push(port);
            return port;
        }
    }
}

/// Attempts at starting an emulator (a port taken by another process
/// between choosing and binding it costs one).
const START_ATTEMPTS_MAX: usize = 3;

/// The id of fake system `i` (1-based).
pub fn system_id(i: usize) -> String {
    format!("sys-{i}")
}

impl Sushy {
    /// An emulator with `systems` fake systems (`sys-1` ..), all off; power
    /// changes apply at the next read.
    pub fn start(systems: usize) -> Sushy {
        Sushy::start_with(systems, 0)
    }

    /// Like [`Sushy::start`], power changes applying within `delay_max_s`.
    pub fn start_with(systems: usize, delay_max_s: u32) -> Sushy {
        Sushy::start_inner(systems, delay_max_s, None)
    }

    /// Like [`Sushy::start`], serving HTTPS with this certificate and key
    /// (PEM files).
    pub fn start_tls(systems: usize, cert: &Path, key: &Path) -> Sushy {
        Sushy::start_inner(systems, 0, Some((cert, key)))
    }

    fn start_inner(systems: usize, delay_max_s: u32, tls: Option<(&Path, &Path)>) -> Sushy {
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS_MAX {
            let mut s = Sushy::spawn(systems, delay_max_s, tls);
            match s.wait_ready() {
                Ok(()) => return s,
                Err(e) => last = e,
            }
        }
        panic!("sushy-emulator did not start after {START_ATTEMPTS_MAX} attempts: {last}");
    }

    fn spawn(systems: usize, delay_max_s: u32, tls: Option<(&Path, &Path)>) -> Sushy {
        let bin = emulator_binary();
        let python = python();
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("lc-sushy-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("emulator folder");
        let htpasswd = dir.join("htpasswd");
        let out = Command::new(&python)
            .args([
                "-c",
                "import bcrypt,sys; print(sys.argv[1] + ':' + bcrypt.hashpw(sys.argv[2].encode(), bcrypt.gensalt(rounds=4)).decode())",
                USER,
                PASSWORD,
            ])
            .output()
            .unwrap_or_else(|e| panic!("running {} for the htpasswd file: {e}", python.display()));
        assert!(
            out.status.success(),
            "bcrypt: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&htpasswd, &out.stdout).expect("htpasswd");
        let fake: Vec<String> = (1..=systems)
            .map(|i| {
                let id = system_id(i);
                format!("{{'uuid': '{id}', 'name': '{id}', 'power_state': 'Off', 'nics': []}}")
            })
            .collect();
        let config = format!(
            "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n\
             SUSHY_EMULATOR_LISTEN_PORT = {port}\n\
             SUSHY_EMULATOR_FAKE_DRIVER = True\n\
             SUSHY_EMULATOR_STATE_DIR = '{state}'\n\
             SUSHY_EMULATOR_AUTH_FILE = '{auth}'\n\
             SUSHY_EMULATOR_FAKE_SYSTEMS = [{systems}]\n\
             import resource as _resource\n\
             _soft, _hard = _resource.getrlimit(_resource.RLIMIT_NOFILE)\n\
             _resource.setrlimit(_resource.RLIMIT_NOFILE, (_hard, _hard))\n\
             import random as _random\n\
             _randint = _random.randint\n\
             _random.randint = lambda a, b: _randint(0, {delay_max_s})\n",
            state = dir.join("state").display(),
            auth = htpasswd.display(),
            systems = fake.join(", "),
        );
        let config = match tls {
            Some((cert, key)) => format!(
                "{config}SUSHY_EMULATOR_SSL_CERT = '{}'\nSUSHY_EMULATOR_SSL_KEY = '{}'\n",
                cert.display(),
                key.display()
            ),
            None => config,
        };
        let cfg = dir.join("emulator.conf");
        std::fs::write(&cfg, config).expect("emulator config");
        let log = std::fs::File::create(dir.join("emulator.log")).expect("emulator log");
        let child = Command::new(&bin)
            .arg("--config")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        Sushy {
            child,
            port,
            dir,
            systems,
            tls: tls.is_some(),
        }
    }

    /// Waits until this emulator (not another process on the same port)
    /// says it runs and accepts connections; an error carries its log.
    fn wait_ready(&mut self) -> Result<(), String> {
        let log = || std::fs::read_to_string(self.dir.join("emulator.log")).unwrap_or_default();
        let running = format!("127.0.0.1:{}", self.port);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "exited ({status}) before listening; log:\n{}",
                    log()
                ));
            }
            let said = log()
                .lines()
                .any(|l| l.contains("Running on") && l.contains(&running));
            if said && TcpStream::connect(self.addr()).is_ok() {
                return self.warm_up();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "did not listen on {} within 30 s; log:\n{}",
            self.addr(),
            log()
        ))
    }

    /// One request that makes the emulator build its fake driver before
    /// any test traffic: sushy-tools builds it lazily and not thread-safely,
    /// and a second driver built by a concurrent first request re-inserts
    /// the initial state of systems the first one has already changed.
    fn warm_up(&self) -> Result<(), String> {
        let script = "import base64, ssl, sys, urllib.request\n\
                      req = urllib.request.Request(sys.argv[1])\n\
                      tok = base64.b64encode((sys.argv[2] + ':' + sys.argv[3]).encode()).decode()\n\
                      req.add_header('Authorization', 'Basic ' + tok)\n\
                      urllib.request.urlopen(req, timeout=30, context=ssl._create_unverified_context()).read()\n";
        let scheme = if self.tls { "https" } else { "http" };
        let url = format!("{scheme}://{}/redfish/v1/Systems", self.addr());
        let out = Command::new(python())
            .args(["-c", script, &url, USER, PASSWORD])
            .output()
            .map_err(|e| format!("warm-up: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "warm-up GET {url}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Where it listens (plain HTTP).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Number of fake systems.
    pub fn systems(&self) -> usize {
        self.systems
    }

    fn url(&self, i: usize) -> String {
        format!("http://{}/redfish/v1/Systems/{}", self.addr(), system_id(i))
    }

    /// Changes system `i`'s power directly through the emulator's own API,
    /// bypassing layercake (the button pressed behind the system's back).
    pub async fn set_power_behind_back(&self, i: usize, on: bool) {
        let reset = if on { "On" } else { "ForceOff" };
        let r = reqwest::Client::new()
            .post(format!("{}/Actions/ComputerSystem.Reset", self.url(i)))
            .basic_auth(USER, Some(PASSWORD))
            .json(&serde_json::json!({ "ResetType": reset }))
            .send()
            .await
            .expect("emulator reset");
        assert!(r.status().is_success(), "emulator reset: {}", r.status());
    }

    /// System `i`'s power state as the emulator reports it.
    /// The emulator's threaded server shares one SQLite state file and may
    /// answer 500 under load; the read is retried.
    pub async fn is_on(&self, i: usize) -> bool {
        let mut last = String::new();
        for _ in 0..10 {
            let r = reqwest::Client::new()
                .get(self.url(i))
                .basic_auth(USER, Some(PASSWORD))
                .send()
                .await
                .expect("emulator get");
            let status = r.status();
            let j: serde_json::Value = r.json().await.unwrap_or_default();
            if status.is_success() && j["PowerState"].is_string() {
                return j["PowerState"] == "On";
            }
            last = format!("HTTP {status}: {j}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("emulator: system {i}: {last}");
    }
}

impl Drop for Sushy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("LAYERCAKE_KEEP_SUSHY").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
