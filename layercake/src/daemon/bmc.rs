//! The bridge between an instance's `MemberApp` and the power driver
//! task ([`crate::modules::power::host::drive`]): [`start_driver`].

use std::time::Duration;

use overlay::udp::Handle;

use crate::daemon::world::MemberNode;
use crate::modules::power::host::{BmcHost, HostAccess, drive};
use crate::modules::power::setup::PowerSetup;

/// How often the driver wakes without a BMC answer (deadlines, polls).
pub const DRIVER_TICK: Duration = Duration::from_millis(50);

struct MemberAccess(Handle<MemberNode>);

impl HostAccess for MemberAccess {
    fn with_host<R>(&self, f: impl FnOnce(&mut BmcHost, u64) -> R) -> R {
        self.0
            .with(|n, now| n.with(now, |app, stack| app.with_bmc(stack, now, f)))
    }
}

/// Spawns (on the current `LocalSet`) the task that runs `h`'s BMC calls.
pub fn start_driver(h: Handle<MemberNode>, setup: &PowerSetup) {
    let pool = setup.pool();
    tokio::task::spawn_local(drive(MemberAccess(h), pool, DRIVER_TICK));
}
