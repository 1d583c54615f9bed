//! Declaration validation: inconsistent declarations are rejected clearly.

use engine::mutation::{DeclError, ModuleDecl, MutationSet, MutationSpec};
use engine::registry::Registry;

fn check(spec: MutationSpec) -> Result<MutationSet, DeclError> {
    let ok = MutationSpec::new("base").mutates("/PhysState", "POWER_OFF", "POWER_ON");
    MutationSet::build(
        &Registry::with_pxe(),
        &[ModuleDecl {
            name: "m".into(),
            mutations: vec![ok, spec],
        }],
    )
}

#[test]
fn valid_declarations_compile() {
    let set = check(
        MutationSpec::new("boot")
            .mutates("/RunState", "UNKNOWN", "INIT")
            .requires("/PhysState", "POWER_ON")
            .requires("/Platform", "ipmi")
            .excludes("/Busy", "BUSY")
            .fail_to("/PhysState", "PHYS_HANG"),
    )
    .unwrap();
    assert_eq!(set.vars.len(), 2);
    assert_eq!(set.guards.len(), 2);
    assert_eq!(set.mutations[1].requires, [(0, 2)]);
}

#[test]
fn rejects_unknown_url() {
    let e = check(MutationSpec::new("x").mutates("/Bogus", "A", "B")).unwrap_err();
    assert!(matches!(e, DeclError::UnknownUrl { .. }), "{e}");
    let e = check(MutationSpec::new("x").mutates("type.googleapis.com/no.Such/State", "A", "B"))
        .unwrap_err();
    assert!(matches!(e, DeclError::UnknownUrl { .. }), "{e}");
    let e = check(MutationSpec::new("x").mutates("n1:/RunState", "UNKNOWN", "INIT")).unwrap_err();
    assert!(matches!(e, DeclError::UnknownUrl { .. }), "{e}");
}

#[test]
fn rejects_unknown_enum_value() {
    let e = check(MutationSpec::new("x").mutates("/RunState", "UNKNOWN", "BOOTED")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "mutation `x`: `BOOTED` is not a value of `/RunState`"
    );
    let e = check(
        MutationSpec::new("x")
            .mutates("/RunState", "UNKNOWN", "INIT")
            .requires("/PhysState", "ON"),
    )
    .unwrap_err();
    assert!(matches!(e, DeclError::UnknownValue { .. }), "{e}");
}

#[test]
fn rejects_mutated_variable_without_unknown_zero() {
    let e = check(MutationSpec::new("x").mutates("/Platform", "a", "b")).unwrap_err();
    assert!(matches!(e, DeclError::NoUnknownZero { .. }), "{e}");
    let e = check(MutationSpec::new("x").mutates(
        "/Services/s/State",
        "SERVICE_UNKNOWN",
        "SERVICE_RUN",
    ));
    assert!(e.is_ok(), "ServiceState has an UNKNOWN zero");
}

#[test]
fn rejects_requirement_on_a_mutated_url() {
    let e = check(
        MutationSpec::new("x")
            .mutates("/RunState", "UNKNOWN", "INIT")
            .requires("/RunState", "SYNC"),
    )
    .unwrap_err();
    assert!(matches!(e, DeclError::ConditionOnMutated { .. }), "{e}");
    let e = check(
        MutationSpec::new("x")
            .mutates("/RunState", "UNKNOWN", "INIT")
            .excludes("/RunState", "SYNC"),
    )
    .unwrap_err();
    assert!(matches!(e, DeclError::ConditionOnMutated { .. }), "{e}");
}

#[test]
fn rejects_other_inconsistencies() {
    let e = check(MutationSpec::new("x").mutates("/RunState", "INIT", "INIT")).unwrap_err();
    assert!(matches!(e, DeclError::BadMutates(_)), "{e}");
    let e = check(MutationSpec::new("x")).unwrap_err();
    assert!(matches!(e, DeclError::BadMutates(_)), "{e}");
    let e = check(MutationSpec::new("base").mutates("/RunState", "UNKNOWN", "INIT")).unwrap_err();
    assert_eq!(e, DeclError::Duplicate("base".into()));
    let e = check(
        MutationSpec::new("x")
            .mutates("/RunState", "UNKNOWN", "INIT")
            .fail_to("/Busy", "BUSY"),
    )
    .unwrap_err();
    assert!(matches!(e, DeclError::FailToUntracked { .. }), "{e}");
}
