//! The cluster's certificates: `layercake certs init|issue` and loading an
//! instance's identity for the QUIC join (`--pki DIR` or `--ca/--cert/--key`).
//!
//! - `certs init --dir DIR --cluster NAME`: a new CA (`overlay::quic::Ca`,
//!   ECDSA P-256): `DIR/ca.crt`, `DIR/ca.key` (0600) and `DIR/ca.cluster`.
//! - `certs issue --dir DIR --name NAME [--out DIR2]`: an instance's
//!   certificate (SANs: `NAME` and `node.layercake`) and key (0600) in
//!   `DIR2/NAME.crt`, `DIR2/NAME.key`, with a copy of `ca.crt`; `DIR2` is the
//!   instance's `--pki` directory. With `--topology FILE`, `NAME` must be an
//!   instance of it.
//! - [`Pki`]: the files an instance presents and trusts.
//!
//! Existing files are never overwritten; private keys are written 0600 and
//! refused when group or others may read them.

use std::path::Path;

use anyhow::{Context, Result, bail};
use overlay::quic::{Ca, Identity};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::security::secrets;

/// What an instance presents and trusts on QUIC.
pub struct Pki {
    /// The cluster CA.
    pub ca: CertificateDer<'static>,
    /// This instance's certificate and key.
    pub id: Identity,
}

impl Pki {
    /// Reads the CA certificate, an instance certificate and its private
    /// key (refused unless 0600) from PEM files.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Pki> {
        let ca = read_cert(ca)?;
        let cert = read_cert(cert)?;
        let pem = secrets::read_private(key)?;
        let der = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .with_context(|| format!("{}: no PKCS#8 private key", key.display()))?;
        Ok(Pki {
            ca,
            id: Identity {
                cert,
                key: der.secret_pkcs8_der().to_vec(),
            },
        })
    }
}

fn read_cert(path: &Path) -> Result<CertificateDer<'static>> {
    CertificateDer::from_pem_file(path)
        .with_context(|| format!("{}: cannot read a PEM certificate", path.display()))
}

/// Makes a new CA for `cluster` in `dir` (created if missing): `ca.crt`,
/// `ca.key` (0600), `ca.cluster`. Refuses a directory that holds one.
pub fn init_ca(dir: &Path, cluster: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for f in ["ca.crt", "ca.key", "ca.cluster"] {
        if dir.join(f).exists() {
            bail!(
                "{} already exists; a CA is made once",
                dir.join(f).display()
            );
        }
    }
    let ca = Ca::generate(cluster)?;
    let (cert, key) = ca.to_pem();
    secrets::write_private(&dir.join("ca.key"), &key)?;
    write_public(&dir.join("ca.crt"), &cert)?;
    write_public(&dir.join("ca.cluster"), &format!("{cluster}\n"))?;
    Ok(())
}

/// Issues `name`'s certificate from the CA in `dir` into `out`.
pub fn issue(dir: &Path, name: &str, out: &Path) -> Result<()> {
    let ca = load_ca(dir)?;
    let id = ca.issue(name)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let key_pem = pem("PRIVATE KEY", &id.key);
    secrets::write_private(&out.join(format!("{name}.key")), &key_pem)?;
    write_public(
        &out.join(format!("{name}.crt")),
        &pem("CERTIFICATE", &id.cert),
    )?;
    let ca_copy = out.join("ca.crt");
    if !ca_copy.exists() {
        let text = std::fs::read_to_string(dir.join("ca.crt"))?;
        write_public(&ca_copy, &text)?;
    }
    Ok(())
}

/// Loads the CA (certificate, key, cluster name) from `dir`.
pub fn load_ca(dir: &Path) -> Result<Ca> {
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f)).with_context(|| {
            format!(
                "{}: run `layercake certs init` first",
                dir.join(f).display()
            )
        })
    };
    let cluster = read("ca.cluster")?;
    let key = secrets::read_private(&dir.join("ca.key"))?;
    Ok(Ca::from_pem(cluster.trim(), &read("ca.crt")?, &key)?)
}

/// Writes a public file (certificate, cluster name); never overwrites.
pub fn write_public(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist)", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// A PEM block.
fn pem(label: &str, der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len() * 4 / 3 + 4);
    for chunk in der.chunks(3) {
        let mut n = 0u32;
        for (i, b) in chunk.iter().enumerate() {
            n |= u32::from(*b) << (16 - 8 * i);
        }
        for i in 0..4 {
            b64.push(if i <= chunk.len() {
                B64[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_issue_and_load() {
        let dir = std::env::temp_dir().join(format!("layercake-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        init_ca(&dir.join("ca"), "t").unwrap();
        issue(&dir.join("ca"), "n01", &dir.join("n01")).unwrap();
        assert!(
            issue(&dir.join("ca"), "n01", &dir.join("n01")).is_err(),
            "no overwrite"
        );
        let d = dir.join("n01");
        let pki = Pki::load(&d.join("ca.crt"), &d.join("n01.crt"), &d.join("n01.key")).unwrap();
        assert!(!pki.id.key.is_empty());
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("ca/ca.key")), 0o600);
        assert_eq!(mode(&dir.join("n01/n01.key")), 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pem_round_trips() {
        let der: Vec<u8> = (0..=255u8).collect();
        let text = pem("CERTIFICATE", &der);
        let back = CertificateDer::from_pem_slice(text.as_bytes()).unwrap();
        assert_eq!(back.as_ref(), der.as_slice());
    }
}
