//! The state store, the URL language, the extension registry and events.

use engine::events::{Dispatcher, Event, EventKind, Filter, Side};
use engine::registry::{AccessError, Registry};
use engine::store::{Store, StoreError};
use engine::url::{Field, Path, Url};
use engine::value::Value;
use std::sync::Arc;

const PXE: &str = "type.googleapis.com/layercake.pxe.Pxe/State";

fn store() -> Store {
    let mut s = Store::new(Arc::new(Registry::with_pxe()));
    s.create_all(["n1", "n2"]).unwrap();
    s
}

#[test]
fn urls_parse_and_print() {
    let cases = [
        "/PhysState",
        "/Services/power/State",
        "type.googleapis.com/layercake.pxe.Pxe/State",
        "n7:/RunState",
        "n7:type.googleapis.com/a.B/Map/key1",
    ];
    for c in cases {
        let u: Url = c.parse().unwrap();
        assert_eq!(u.to_string(), c);
    }
    let u: Url = "n7:/Busy".parse().unwrap();
    assert_eq!(
        (u.node.as_deref(), u.path),
        (Some("n7"), Path::Field(Field::Busy))
    );
    assert!("/NoSuchField".parse::<Url>().is_err());
    assert!("PhysState".parse::<Url>().is_err());
    assert!("type.googleapis.com/".parse::<Url>().is_err());
    assert!("/Services/x/Bogus".parse::<Url>().is_err());
}

#[test]
fn enum_values_by_name_or_number() {
    let mut s = store();
    s.set_value(Side::Cfg, "/PhysState", "POWER_ON", Some("n1"))
        .unwrap();
    assert_eq!(
        s.get_value(Side::Cfg, "n1:/PhysState", None).unwrap(),
        Value::Enum(2)
    );
    s.set_value(Side::Cfg, "n1:/PhysState", "1", None).unwrap();
    assert_eq!(s.get("n1", Side::Cfg).unwrap().phys_state, 1);
    let err = s
        .set_value(Side::Cfg, "n1:/PhysState", "POWER_SIDEWAYS", None)
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Access(AccessError::BadValue { .. })),
        "{err}"
    );
    assert!(matches!(
        s.set_value(Side::Cfg, "n1:/PhysState", "17", None),
        Err(StoreError::Access(_))
    ));
    assert_eq!(
        s.get("n1", Side::Dsc).unwrap().phys_state,
        0,
        "Dsc untouched"
    );
}

#[test]
fn extensions_services_and_cluster_urls() {
    let mut s = store();
    assert_eq!(
        s.get("n2", Side::Dsc).unwrap().extensions.len(),
        1,
        "new nodes carry every extension"
    );
    s.set_value(Side::Dsc, &format!("n2:{PXE}"), "WAIT", None)
        .unwrap();
    assert_eq!(
        s.get_value(Side::Dsc, PXE, Some("n2")).unwrap(),
        Value::Enum(2)
    );
    assert_eq!(
        s.get_value(Side::Dsc, PXE, Some("n1")).unwrap(),
        Value::Enum(0)
    );
    s.set_value(
        Side::Cfg,
        "n1:/Services/imageapi/State",
        "SERVICE_RUN",
        None,
    )
    .unwrap();
    assert_eq!(
        s.get_value(Side::Cfg, "n1:/Services/imageapi/State", None)
            .unwrap(),
        Value::Enum(3)
    );
    assert!(matches!(
        s.get_value(Side::Cfg, "n2:/Services/imageapi/State", None),
        Err(StoreError::Access(AccessError::NoSuchService(_)))
    ));
    assert!(matches!(
        s.get_value(Side::Cfg, "type.googleapis.com/x.Y/Z", Some("n1")),
        Err(StoreError::Access(AccessError::UnknownExtension(_)))
    ));
    assert!(matches!(
        s.get_value(Side::Cfg, "/PhysState", None),
        Err(StoreError::NoNode(_))
    ));
    assert!(matches!(
        s.get_value(Side::Cfg, "n9:/PhysState", None),
        Err(StoreError::NoSuchNode(_))
    ));
    s.set_value(Side::Cfg, "n1:/Platform", "ipmi", None)
        .unwrap();
    assert_eq!(s.get("n1", Side::Cfg).unwrap().platform, "ipmi");
}

#[test]
fn crud_and_bulk() {
    let mut s = store();
    assert_eq!(s.create("n1"), Err(StoreError::Exists("n1".into())));
    let mut n = s.get("n1", Side::Cfg).unwrap().clone();
    n.phys_state = 2;
    n.arch = "x86_64".into();
    assert_eq!(s.update("n1", Side::Cfg, n.clone()).unwrap(), 2);
    assert_eq!(
        s.update_all(Side::Dsc, vec![("n1".into(), n.clone()), ("n2".into(), n)])
            .unwrap(),
        2 + 4
    );
    assert_eq!(s.names().collect::<Vec<_>>(), ["n1", "n2"]);
    let sync = s
        .events()
        .subscribe(Filter {
            kinds: vec![EventKind::Sync],
            ..Default::default()
        })
        .unwrap();
    let mut d = s.get("n2", Side::Dsc).unwrap().clone();
    d.busy = 2;
    assert_eq!(s.update_from_sync("n2", Side::Dsc, d).unwrap(), 1);
    assert_eq!(s.events().poll(sync).unwrap().node, "n2");
    assert_eq!(s.delete_all(["n1", "n9"]), 1);
    assert_eq!(s.delete("n1"), Err(StoreError::NoSuchNode("n1".into())));
}

#[test]
fn writes_produce_filtered_change_events() {
    let mut s = store();
    let all = s.events().subscribe(Filter::default()).unwrap();
    let n2_pxe = s
        .events()
        .subscribe(Filter {
            kinds: vec![EventKind::StateChange],
            node: Some("n2".into()),
            url_prefix: Some("type.googleapis.com/".into()),
        })
        .unwrap();
    s.set_value(Side::Dsc, "n1:/PhysState", "POWER_OFF", None)
        .unwrap();
    s.set_value(Side::Dsc, &format!("n2:{PXE}"), "NONE", None)
        .unwrap();
    s.set_value(Side::Dsc, &format!("n2:{PXE}"), "NONE", None)
        .unwrap();
    let e = s.events().poll(all).unwrap();
    assert_eq!(
        e,
        Event {
            kind: EventKind::StateChange,
            node: "n1".into(),
            url: "/PhysState".into(),
            side: Side::Dsc,
            old: Some(Value::Enum(0)),
            new: Some(Value::Enum(1)),
        }
    );
    assert_eq!(s.events().poll(all).unwrap().url, PXE);
    assert!(
        s.events().poll(all).is_none(),
        "an unchanged write is silent"
    );
    let e = s.events().poll(n2_pxe).unwrap();
    assert_eq!((e.node.as_str(), e.new), ("n2", Some(Value::Enum(1))));
    assert!(s.events().poll(n2_pxe).is_none());
}

#[test]
fn dispatcher_queues_are_bounded() {
    let mut d = Dispatcher::new();
    let id = d
        .subscribe(Filter {
            kinds: vec![EventKind::Mutation],
            ..Default::default()
        })
        .unwrap();
    let ev = |kind| Event {
        kind,
        node: "n".into(),
        url: "u".into(),
        side: Side::Cfg,
        old: None,
        new: None,
    };
    d.publish(&ev(EventKind::Sync));
    assert!(d.poll(id).is_none());
    for _ in 0..engine::events::SUB_QUEUE_MAX + 5 {
        d.publish(&ev(EventKind::Mutation));
    }
    assert_eq!(d.dropped(id), 5);
    d.unsubscribe(id);
    assert!(d.poll(id).is_none());
}
