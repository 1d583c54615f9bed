//! Property test: every URL prints (`Display`) to text that parses back to
//! the same URL, and parsing arbitrary text never panics.

use engine::url::{FIELDS, Path, SERVICE_FIELDS, TYPE_PREFIX, Url};
use proptest::prelude::*;

fn path() -> impl Strategy<Value = Path> {
    let field = prop::sample::select(FIELDS.to_vec()).prop_map(|(f, _)| Path::Field(f));
    let service = (
        "[a-z0-9_.:-]{1,12}",
        prop::sample::select(SERVICE_FIELDS.to_vec()),
    )
        .prop_map(|(id, (field, _))| Path::Service { id, field });
    let extension = (
        "[a-z][a-zA-Z0-9.]{0,20}",
        prop::collection::vec("[A-Za-z0-9_.:-]{1,10}", 1..4),
    )
        .prop_map(|(msg, segments)| Path::Extension {
            type_url: format!("{TYPE_PREFIX}{msg}"),
            segments,
        });
    prop_oneof![field, service, extension]
}

proptest! {
    #[test]
    fn a_printed_url_parses_to_itself(node in prop::option::of("[a-z][a-z0-9-]{0,10}"), path in path()) {
        let u = Url { node, path };
        let text = u.to_string();
        let back: Url = text.parse().unwrap();
        prop_assert_eq!(back, u, "{}", text);
    }

    #[test]
    fn parsing_any_text_never_panics(text in "[a-zA-Z0-9/:._-]{0,40}") {
        if let Ok(u) = text.parse::<Url>() {
            let again: Url = u.to_string().parse().unwrap();
            prop_assert_eq!(again, u);
        }
    }
}
