//! The dashboard end to end in headless Chromium (`tests/browser/dashboard.mjs`,
//! playwright-core driving Debian's `/usr/bin/chromium`).
//!
//! It needs Chromium, Node.js and `npm ci` in `tests/browser`, which
//! `.ci/run`'s browser step installs before running this test with
//! `LAYERCAKE_BROWSER=1`. Without that variable the test says so and
//! returns (during `.ci/test`, which runs before the browser step); with it,
//! anything missing is a failure, never a skip.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// The browser scripts' folder, or `None` (with a note) when the browser
/// tests are not asked for.
fn browser_dir() -> Option<std::path::PathBuf> {
    if std::env::var("LAYERCAKE_BROWSER").as_deref() != Ok("1") {
        eprintln!(
            "dashboard browser test not run here: it needs LAYERCAKE_BROWSER=1 \
             (set by .ci/run's browser step, after installing chromium and playwright-core)"
        );
        return None;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: apt-get install chromium"
    );
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "run `npm ci` in {}",
        dir.display()
    );
    Some(dir)
}

/// The summary view at 15,000 nodes (100 racks; the view starts above
/// 2,000): fits one screen, counts add up, a rack expands, a rack is
/// powered off from its tile. The screenshot is left at
/// `$TMPDIR/layercake-dashboard-summary.png`. The page's snapshot comes
/// from the root's read view, not through the demo's one overlay thread
/// (which the debug build keeps busy at this size).
#[test]
fn dashboard_summary_view_at_15000_nodes() {
    let Some(dir) = browser_dir() else { return };
    let (nodes, racks) = ("15000", "100");
    let d = spawn(&[
        "demo",
        "--nodes",
        nodes,
        "--racks",
        racks,
        "--no-boot",
        "--transport",
        "udp",
        "--api",
        "127.0.0.1:0",
        "--step-min-ms",
        "50",
        "--step-max-ms",
        "400",
    ]);
    let shot = std::env::temp_dir().join("layercake-dashboard-summary.png");
    let out = Command::new("node")
        .arg(dir.join("summary.mjs"))
        .arg(format!("http://{}/", d.api))
        .arg(nodes)
        .arg(racks)
        .arg(&shot)
        .output()
        .expect("running node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "summary browser test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("summary test passed"));
}

#[test]
fn dashboard_shows_nodes_and_follows_a_ctl_set() {
    let Some(dir) = browser_dir() else { return };
    let nodes = "20";
    let d = spawn(&[
        "demo",
        "--nodes",
        nodes,
        "--racks",
        "2",
        "--api",
        "127.0.0.1:0",
        "--step-min-ms",
        "50",
        "--step-max-ms",
        "400",
    ]);
    let shot = std::env::temp_dir().join("layercake-dashboard.png");
    let out = Command::new("node")
        .arg(dir.join("dashboard.mjs"))
        .arg(format!("http://{}/", d.api))
        .arg(bin())
        .arg(&d.api)
        .arg(nodes)
        .arg(&shot)
        .output()
        .expect("running node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "browser test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("n0001 shows POWER_OFF"));
    assert!(stdout.contains("dashboard test passed"));
}
