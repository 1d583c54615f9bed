//! Containers through an OCI runtime (Debian's `runc`; the binary is a
//! setting): root filesystems unpacked once per digest, bundles whose
//! `config.json` is written with `oci-spec`, and the runtime's `run`,
//! `state` and `delete` commands.
//!
//! Layout under the state directory: `rootfs/<sha256>/` (read-only root
//! filesystems, shared by every container of that digest),
//! `bundles/<id>/config.json` and `runc.log`, and `runc/` (the runtime's
//! own state, `--root`).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use oci_spec::runtime::{Root, Spec};
use tokio::process::Command;

/// Why a container operation failed (the message is shown in Dsc).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// Unpacking the root filesystem failed.
    #[error("unpacking {0}")]
    Unpack(String),
    /// Writing the bundle failed.
    #[error("writing the bundle: {0}")]
    Bundle(String),
    /// The runtime refused or failed.
    #[error("{runtime} {op}: {reason}")]
    Runtime {
        /// The runtime binary.
        runtime: String,
        /// The operation.
        op: String,
        /// Its error output or status.
        reason: String,
    },
}

/// One OCI runtime and the directories it works in.
#[derive(Clone, Debug)]
pub struct Runtime {
    runc: PathBuf,
    dir: PathBuf,
}

impl Runtime {
    /// The runtime binary `runc` working under `dir`.
    pub fn new(runc: PathBuf, dir: PathBuf) -> Runtime {
        Runtime { runc, dir }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.runc);
        c.arg("--root").arg(self.dir.join("runc"));
        c.stdin(Stdio::null());
        c.kill_on_drop(true);
        c
    }

    fn err(&self, op: &str, reason: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::Runtime {
            runtime: self.runc.display().to_string(),
            op: op.to_owned(),
            reason: reason.to_string(),
        }
    }

    /// The root filesystem of digest `sha256` (unpacked from `tar` once).
    pub async fn rootfs(&self, tar: &Path, sha256: &str) -> Result<PathBuf, RuntimeError> {
        let dest = self.dir.join("rootfs").join(sha256);
        if dest.is_dir() {
            return Ok(dest);
        }
        let (tar, d) = (tar.to_owned(), dest.clone());
        tokio::task::spawn_blocking(move || {
            let tmp = d.with_extension("unpacking");
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
            let f = std::fs::File::open(&tar).map_err(|e| format!("{}: {e}", tar.display()))?;
            let mut a = tar::Archive::new(f);
            a.set_preserve_permissions(true);
            a.unpack(&tmp)
                .map_err(|e| format!("{}: {e}", tar.display()))?;
            for dir in ["proc", "dev", "sys", "tmp"] {
                let _ = std::fs::create_dir_all(tmp.join(dir));
            }
            std::fs::rename(&tmp, &d).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| RuntimeError::Unpack(e.to_string()))?
        .map_err(RuntimeError::Unpack)?;
        Ok(dest)
    }

    /// Writes the bundle of container `id`: `config.json` running
    /// `command` in `rootfs` (read-only), no terminal.
    pub fn bundle(
        &self,
        id: &str,
        rootfs: &Path,
        command: &[String],
    ) -> Result<PathBuf, RuntimeError> {
        let dir = self.dir.join("bundles").join(id);
        std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::Bundle(e.to_string()))?;
        let mut spec = Spec::default();
        let mut root = Root::default();
        root.set_path(rootfs.to_owned());
        root.set_readonly(Some(true));
        spec.set_root(Some(root));
        spec.set_hostname(Some(id.to_owned()));
        let mut process = spec.process().clone().unwrap_or_default();
        process.set_terminal(Some(false));
        process.set_args(Some(command.to_vec()));
        spec.set_process(Some(process));
        spec.save(dir.join("config.json"))
            .map_err(|e| RuntimeError::Bundle(e.to_string()))?;
        Ok(dir)
    }

    /// Starts container `id` from `bundle`, detached.
    pub async fn run(&self, id: &str, bundle: &Path) -> Result<(), RuntimeError> {
        let log = bundle.join("runc.log");
        let _ = std::fs::remove_file(&log);
        let status = self
            .cmd()
            .arg("--log")
            .arg(&log)
            .args(["run", "--detach", "--bundle"])
            .arg(bundle)
            .arg(id)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .map_err(|e| self.err("run", e))?;
        if status.success() {
            return Ok(());
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let last = text.lines().last().unwrap_or("").to_owned();
        let msg = serde_json::from_str::<serde_json::Value>(&last)
            .ok()
            .and_then(|v| v["msg"].as_str().map(str::to_owned))
            .unwrap_or(last);
        Err(self.err(
            "run",
            format!("{status}: {}", msg.chars().take(300).collect::<String>()),
        ))
    }

    /// The status of container `id` (`running`, `stopped`, ...); `None`
    /// when the runtime does not know it.
    pub async fn status(&self, id: &str) -> Result<Option<String>, RuntimeError> {
        let out = self
            .cmd()
            .args(["state", id])
            .output()
            .await
            .map_err(|e| self.err("state", e))?;
        if !out.status.success() {
            let e = String::from_utf8_lossy(&out.stderr);
            if e.contains("does not exist") || e.contains("not exist") {
                return Ok(None);
            }
            return Err(self.err("state", e.trim()));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| self.err("state", e))?;
        Ok(v["status"].as_str().map(str::to_owned))
    }

    /// Kills and deletes container `id` (no error when it does not exist).
    pub async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let out = self
            .cmd()
            .args(["delete", "--force", id])
            .output()
            .await
            .map_err(|e| self.err("delete", e))?;
        let e = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || e.contains("does not exist") || e.contains("not exist") {
            Ok(())
        } else {
            Err(self.err("delete", e.trim()))
        }
    }

    /// The ids of the containers the runtime knows.
    pub async fn list(&self) -> Result<Vec<String>, RuntimeError> {
        let out = self
            .cmd()
            .args(["list", "--quiet"])
            .output()
            .await
            .map_err(|e| self.err("list", e))?;
        if !out.status.success() {
            return Err(self.err("list", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect())
    }
}
