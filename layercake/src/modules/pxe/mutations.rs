//! The pxe module's declarations, after Kraken's: the PXE client state
//! (`type.googleapis.com/layercake.pxe.Pxe/State`) and `/RunState`.
//!
//! | mutation | PXE | RunState | context | timeout, fail to |
//! | --- | --- | --- | --- | --- |
//! | `pxe_discover` | UNKNOWN -> NONE (discovery) | | CHILD | 5 s |
//! | `pxe_wait` | NONE -> WAIT (arms the DHCP entry) | | CHILD, POWER_ON | [`WAIT_TIMEOUT_MS`], PHYS_HANG |
//! | `pxe_init` | WAIT -> INIT (the firmware fetched its script) | UNKNOWN -> INIT | CHILD, POWER_ON | [`INIT_TIMEOUT_MS`], PHYS_HANG |
//! | `boot_sync` | INIT -> COMP (the node's agent says hello) | INIT -> SYNC | SELF, POWER_ON | [`SYNC_TIMEOUT_MS`], PHYS_HANG |
//! | `pxe_reset_wait/init/comp` | -> NONE (disarms) | | CHILD, POWER_OFF | 5 s |
//!
//! The same declarations drive the virtual machines of `demo` and of
//! nodes without a BMC (their virtual world performs them), and the real
//! boot of BMC nodes with a `Network/Mac` on the instance that does their
//! CHILD-context work (`crate::modules::power::host`): names and URLs are
//! the engine's virtual boot module's, only the timeouts and the
//! `pxe_wait` fail-to differ.

use engine::mutation::{Context, ModuleDecl, MutationSpec};
use engine::virt::PXE_URL;

/// `pxe_wait`: arming the DHCP entry is local and quick.
pub const WAIT_TIMEOUT_MS: u64 = 10_000;
/// `pxe_init`: from the armed entry to the script fetched (firmware POST,
/// DHCP, the iPXE script).
pub const INIT_TIMEOUT_MS: u64 = 90_000;
/// `boot_sync`: from the script to the agent's hello (kernel and
/// initramfs download, layer 0's start, the join); TCG virtual machines
/// and large initramfs images need most of it.
pub const SYNC_TIMEOUT_MS: u64 = 180_000;

/// The module declaration.
pub fn module() -> ModuleDecl {
    let on = |s: MutationSpec| s.requires("/PhysState", "POWER_ON");
    let reset = |from: &str| {
        MutationSpec::new(&format!("pxe_reset_{}", from.to_lowercase()))
            .mutates(PXE_URL, from, "NONE")
            .requires("/PhysState", "POWER_OFF")
            .context(Context::Child)
            .timeout_ms(5_000)
    };
    ModuleDecl {
        name: "pxe".into(),
        mutations: vec![
            MutationSpec::discovery("pxe_discover")
                .mutates(PXE_URL, "UNKNOWN", "NONE")
                .context(Context::Child)
                .timeout_ms(5_000),
            on(MutationSpec::new("pxe_wait")
                .mutates(PXE_URL, "NONE", "WAIT")
                .context(Context::Child)
                .timeout_ms(WAIT_TIMEOUT_MS)
                .fail_to("/PhysState", "PHYS_HANG")),
            on(MutationSpec::new("pxe_init")
                .mutates(PXE_URL, "WAIT", "INIT")
                .mutates("/RunState", "UNKNOWN", "INIT")
                .context(Context::Child)
                .timeout_ms(INIT_TIMEOUT_MS)
                .fail_to("/PhysState", "PHYS_HANG")),
            on(MutationSpec::new("boot_sync")
                .mutates("/RunState", "INIT", "SYNC")
                .mutates(PXE_URL, "INIT", "COMP")
                .context(Context::SelfNode)
                .timeout_ms(SYNC_TIMEOUT_MS)
                .fail_to("/PhysState", "PHYS_HANG")),
            reset("WAIT"),
            reset("INIT"),
            reset("COMP"),
        ],
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use engine::executor::Relation;
    use engine::graph::{BuildOptions, Graph};
    use engine::mutation::MutationSet;
    use engine::node::NodeEngine;
    use engine::registry::Registry;
    use engine::virt;

    use super::*;

    fn chain(boot: engine::mutation::ModuleDecl) -> (usize, Vec<String>) {
        let reg = Arc::new(Registry::with_pxe());
        let set = MutationSet::build(&reg, &[virt::power_module(), boot]).unwrap();
        let g = Arc::new(Graph::build(set, BuildOptions::default()).unwrap());
        let states = g.node_count();
        let mut e = NodeEngine::new(g, reg.clone(), Relation::All, "n1");
        e.handle_dsc(reg.new_node("n1"), 0);
        let mut cfg = reg.new_node("n1");
        cfg.phys_state = 2;
        cfg.run_state = 2;
        e.set_cfg(cfg, 0).unwrap();
        (states, e.chain_names())
    }

    /// Same variables, values and states as the engine's virtual boot
    /// module, and the same chain from nothing known to booted.
    #[test]
    fn plans_like_the_virtual_boot_module() {
        let (ours, virt) = (chain(module()), chain(virt::boot_module()));
        assert_eq!(ours, virt);
        assert_eq!(
            ours.1,
            [
                "power_discover",
                "power_on",
                "pxe_discover",
                "pxe_wait",
                "pxe_init",
                "boot_sync"
            ]
        );
    }
}
