//! YAML output for the CLI with `yaml-rust2` (the project's YAML parser):
//! [`to_yaml`] writes a JSON value as block YAML (`ctl get -o yaml`),
//! `apply -f` reads its files strictly through `topo::yaml` (positions).

use serde_json::Value as Json;
use yaml_rust2::{Yaml, YamlEmitter};

fn to_yaml_value(v: &Json) -> Yaml {
    match v {
        Json::Null => Yaml::Null,
        Json::Bool(b) => Yaml::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Integer(i),
            None => Yaml::Real(n.to_string()),
        },
        Json::String(s) => Yaml::String(s.clone()),
        Json::Array(a) => Yaml::Array(a.iter().map(to_yaml_value).collect()),
        Json::Object(m) => Yaml::Hash(
            m.iter()
                .map(|(k, v)| (Yaml::String(k.clone()), to_yaml_value(v)))
                .collect(),
        ),
    }
}

/// A JSON value as block YAML (`yaml-rust2`'s emitter), without the
/// document marker.
pub fn to_yaml(v: &Json) -> String {
    let mut out = String::new();
    let mut e = YamlEmitter::new(&mut out);
    if e.dump(&to_yaml_value(v)).is_err() {
        // The emitter only fails on writer errors; a String never fails.
        return String::new();
    }
    let mut text = out
        .strip_prefix("---\n")
        .or_else(|| out.strip_prefix("---"))
        .unwrap_or(&out)
        .trim_start_matches(' ')
        .to_string();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use yaml_rust2::YamlLoader;

    #[test]
    fn yaml_round_trips_through_the_parser() {
        let v = json!({
            "nodes": [
                {"name": "n0001", "cfg": {"/PhysState": "POWER_ON", "type.googleapis.com/layercake.pxe.Pxe/State": "COMP"}, "chain": []},
                {"name": "n0002", "converged": true, "empty": {}, "odd": "yes: no"},
            ],
            "count": 2,
        });
        let text = to_yaml(&v);
        let docs = YamlLoader::load_from_str(&text).unwrap();
        assert_eq!(docs, vec![to_yaml_value(&v)], "{text}");
    }
}
