//! YAML for the CLI without a serde YAML crate: [`to_yaml`] writes a JSON
//! value as block YAML (`ctl get -o yaml`), [`parse`] reads a YAML (or
//! JSON) document into a JSON value (`ctl apply -f`), with `yaml-rust2`.

use serde_json::Value as Json;
use yaml_rust2::{Yaml, YamlLoader};

/// A scalar written so that YAML reads it back as the same string.
fn scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
        && !s.starts_with(['-', '.'])
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "~"
        )
        && s.parse::<f64>().is_err();
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
    }
}

fn emit(v: &Json, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Json::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                out.push_str(&format!("{pad}{}:", scalar(k)));
                inline_or_block(v, indent, out);
            }
        }
        Json::Array(a) if !a.is_empty() => {
            for v in a {
                out.push_str(&format!("{pad}-"));
                match v {
                    Json::Object(m) if !m.is_empty() => {
                        // The first key goes on the dash's line.
                        let mut first = true;
                        for (k, v) in m {
                            if first {
                                out.push_str(&format!(" {}:", scalar(k)));
                                first = false;
                            } else {
                                out.push_str(&format!("{pad}  {}:", scalar(k)));
                            }
                            inline_or_block(v, indent + 2, out);
                        }
                    }
                    _ => inline_or_block(v, indent, out),
                }
            }
        }
        other => {
            out.push_str(&pad);
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

fn inline_or_block(v: &Json, indent: usize, out: &mut String) {
    match v {
        Json::Object(m) if !m.is_empty() => {
            out.push('\n');
            emit(v, indent + 2, out);
        }
        Json::Array(a) if !a.is_empty() => {
            out.push('\n');
            emit(v, indent + 2, out);
        }
        other => {
            out.push(' ');
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

fn inline(v: &Json) -> String {
    match v {
        Json::Null => "null".into(),
        Json::Bool(b) => b.to_string(),
        Json::Number(n) => n.to_string(),
        Json::String(s) => scalar(s),
        Json::Array(_) => "[]".into(),
        Json::Object(_) => "{}".into(),
    }
}

/// `v` as a block YAML document.
pub fn to_yaml(v: &Json) -> String {
    let mut out = String::new();
    emit(v, 0, &mut out);
    out
}

/// Why a document could not be read.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    /// Not YAML.
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// Not exactly one document.
    #[error("expected one YAML document, found {0}")]
    Documents(usize),
    /// A construct JSON cannot hold.
    #[error("{0}")]
    Unsupported(String),
}

fn to_json(y: &Yaml) -> Result<Json, YamlError> {
    Ok(match y {
        Yaml::Real(s) => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| Json::String(s.clone()), Json::Number),
        Yaml::Integer(i) => Json::from(*i),
        Yaml::String(s) => Json::String(s.clone()),
        Yaml::Boolean(b) => Json::Bool(*b),
        Yaml::Null => Json::Null,
        Yaml::Array(a) => Json::Array(a.iter().map(to_json).collect::<Result<_, _>>()?),
        Yaml::Hash(h) => {
            let mut m = serde_json::Map::new();
            for (k, v) in h {
                let key = match k {
                    Yaml::String(s) | Yaml::Real(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    other => {
                        return Err(YamlError::Unsupported(format!("unsupported key {other:?}")));
                    }
                };
                m.insert(key, to_json(v)?);
            }
            Json::Object(m)
        }
        Yaml::Alias(_) | Yaml::BadValue => {
            return Err(YamlError::Unsupported("aliases are not supported".into()));
        }
    })
}

/// Reads one YAML (or JSON) document.
pub fn parse(text: &str) -> Result<Json, YamlError> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| YamlError::Syntax {
        line: e.marker().line(),
        column: e.marker().col() + 1,
        message: e.info().to_string(),
    })?;
    if docs.len() != 1 {
        return Err(YamlError::Documents(docs.len()));
    }
    to_json(&docs[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        assert_eq!(parse(&text).unwrap(), v, "{text}");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = parse("a: 1\nb: [unclosed\n").unwrap_err().to_string();
        assert!(e.starts_with("line "), "{e}");
    }
}
