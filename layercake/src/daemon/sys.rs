//! The one place that calls into libc: raising the open-file limit (every
//! hosted instance has its own UDP socket; the demo opens one per node),
//! restoring the default SIGPIPE action for the CLI, and lowering the
//! scheduling priority of the API's threads.
#![allow(unsafe_code)]

/// Raises the open-file soft limit to the hard limit; returns the new soft
/// limit.
pub fn raise_nofile() -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `l` is a valid, writable rlimit; the calls only read and
    // write it and change this process's own limit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return 0;
        }
        let want = libc::rlimit {
            rlim_cur: l.rlim_max,
            rlim_max: l.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
            return want.rlim_cur;
        }
    }
    l.rlim_cur
}

/// Restores the default SIGPIPE action, so that `layercake ctl ... | head`
/// ends quietly like other Unix tools instead of failing to print.
pub fn default_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL installs no handler
    // code; it is async-signal-safe and affects only this process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The nice value of the API's threads ([`lower_thread_priority`]).
pub const API_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority to nice `nice` (Linux
/// schedules threads, so only this thread changes): the API's threads run
/// at a lower priority than the overlay's, so a burst of large reads
/// takes CPU the overlay does not need rather than CPU it does. Returns
/// false when the kernel refused.
pub fn lower_thread_priority(nice: i32) -> bool {
    // SAFETY: gettid has no arguments and cannot fail; setpriority with
    // PRIO_PROCESS and a thread id changes only that thread's nice value.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) == 0
    }
}

/// Waits for SIGINT or SIGTERM.
pub async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
