//! Live progress: a progress bar on a terminal, and Prometheus gauges when
//! `--metrics ADDR` is given.

use std::cell::RefCell;
use std::net::SocketAddr;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

/// The run's progress display and metrics.
pub struct Progress {
    bar: RefCell<Option<ProgressBar>>,
    quiet: bool,
}

impl Progress {
    /// A display; `quiet` hides the bar. With `metrics`, serves
    /// `/metrics` on that address while the run lasts.
    pub fn new(quiet: bool, metrics: Option<SocketAddr>) -> Result<Progress> {
        if let Some(addr) = metrics {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .with_http_listener(addr)
                .install()
                .with_context(|| format!("starting the metrics exporter on {addr}"))?;
            eprintln!("metrics: http://{addr}/metrics");
        }
        Ok(Progress {
            bar: RefCell::new(None),
            quiet,
        })
    }

    /// Starts a phase counting towards `total` (0: no bar).
    pub fn phase(&self, name: &str, total: usize) {
        self.finish();
        metrics::gauge!("loadtest_phase_total").set(total as f64);
        if self.quiet || total == 0 {
            return;
        }
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>14} [{bar:40}] {pos}/{len} nodes, {msg} {elapsed}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(name.to_string());
        *self.bar.borrow_mut() = Some(bar);
    }

    /// Nodes reached so far and datagrams sent.
    pub fn set(&self, reached: usize, datagrams: u64) {
        metrics::gauge!("loadtest_reached").set(reached as f64);
        metrics::gauge!("loadtest_datagrams").set(datagrams as f64);
        if let Some(b) = self.bar.borrow().as_ref() {
            b.set_position(reached as u64);
            b.set_message(format!("{datagrams} datagrams"));
        }
    }

    /// Ends the current bar.
    pub fn finish(&self) {
        if let Some(b) = self.bar.borrow_mut().take() {
            b.finish();
        }
    }
}
