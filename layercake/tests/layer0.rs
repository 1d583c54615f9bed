//! Layer 0: `examples/netboot-lab/build-layer0.sh` builds the kernel and
//! initramfs around this build's `layercake` binary, and `--check` boots
//! them in QEMU (TCG) in test mode: the NIC comes up by DHCP, the binary
//! runs (its libraries are in the image), a marker is printed, the machine
//! powers off.
//!
//! Needs Debian's `linux-image-amd64`, `busybox-static`, `cpio`, `kmod` and
//! `qemu-system-x86`; the script fails naming the one that is missing.

use std::process::Command;

#[test]
fn layer0_builds_and_boots_to_its_marker() {
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = std::env::temp_dir().join(format!("lc-layer0-{}", std::process::id()));
    let result = Command::new("bash")
        .arg(format!("{repo}/examples/netboot-lab/build-layer0.sh"))
        .args(["-b", env!("CARGO_BIN_EXE_layercake"), "--check", "-o"])
        .arg(&out)
        .output()
        .expect("running bash");
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    let _ = std::fs::remove_dir_all(&out);
    assert!(result.status.success(), "{stdout}\n{stderr}");
    eprintln!("{stdout}");
    let marker = stdout
        .lines()
        .find(|l| l.contains("LAYER0-MARKER"))
        .unwrap_or_else(|| panic!("no marker:\n{stdout}\n{stderr}"));
    assert!(marker.contains("name=vm1"), "{marker}");
    assert!(marker.contains("address=10.0.2.15/24"), "{marker}");
    assert!(marker.contains("layercake-runs=yes"), "{marker}");
}
