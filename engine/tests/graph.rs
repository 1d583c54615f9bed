//! The virtual module set's graph: phases, epistemology and exports.

mod common;

#[test]
fn epistemology_of_the_virtual_set() {
    let (_, g) = common::virtual_set();
    let set = g.set();
    let (ps, rs, pxe) = (
        set.var("/PhysState").unwrap(),
        set.var("/RunState").unwrap(),
        set.var(engine::virt::PXE_URL).unwrap(),
    );
    let know = g.epistemology();
    assert_eq!(know[ps as usize], [vec![]], "power is always knowable");
    assert_eq!(
        know[rs as usize],
        [vec![(ps, 2)]],
        "RunState is knowable only while POWER_ON"
    );
    assert_eq!(know[pxe as usize], [vec![]]);
    for s in 0..g.node_count() as u32 {
        let st = g.state(s);
        assert!(
            st[rs as usize] == 0 || st[ps as usize] == 2,
            "unreal state {:?}",
            g.label(s)
        );
    }
    assert!(
        g.raw_state_count() > g.node_count(),
        "stripping merged states"
    );
}

#[test]
fn exports_json_and_dot() {
    let (_, g) = common::virtual_set();
    let j = g.to_json();
    assert_eq!(j["nodes"].as_array().unwrap().len(), g.node_count());
    assert_eq!(j["edges"].as_array().unwrap().len(), g.edge_count());
    assert_eq!(j["vars"][0], "/PhysState");
    assert!(
        j["edges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "FailTo")
    );
    let dot = g.to_dot();
    assert!(dot.starts_with("digraph epistemic {"));
    assert!(dot.contains("(all unknown)"));
    assert!(dot.contains("label=\"power_on\""));
    assert!(dot.contains("style=dashed"));
    assert_eq!(dot.matches(" -> ").count(), g.edge_count());
}
