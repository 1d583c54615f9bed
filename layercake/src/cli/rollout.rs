//! `ctl rollout status HOSTLIST [--wait]`: how far an image-set rollout
//! got, from the nodes' Cfg and Dsc as the root holds them.
//!
//! A node whose Cfg names images is **rolled** when every image it wants
//! active runs the Cfg's digest (Dsc `Running` = Cfg `Digest`, state
//! ACTIVE), **failed** when the set or a wanted image is FATAL, **waiting
//! (busy)** when neither and its Dsc says `/Busy`=BUSY, else **rolling**.

use serde_json::{Map, Value as Json};

/// The image set's URL prefix.
pub const IMG: &str = "type.googleapis.com/layercake.image.ImageSet";
/// The image set's state.
pub const STATE_URL: &str = engine::images::STATE_URL;

/// Where each node of a rollout stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Nodes whose Cfg names images.
    pub total: usize,
    /// Running what Cfg asks for.
    pub rolled: usize,
    /// Not rolled and busy.
    pub waiting: usize,
    /// Rolling now (or about to).
    pub rolling: usize,
    /// FATAL: the failed nodes' names.
    pub failed: Vec<String>,
}

fn text<'a>(m: &'a Map<String, Json>, url: &str) -> &'a str {
    m.get(url).and_then(Json::as_str).unwrap_or("")
}

/// Counts the nodes of an API node list (`GET /api/v1/nodes`).
pub fn count(list: &Json) -> Counts {
    let mut c = Counts::default();
    c.add(list["nodes"].as_array().map_or(&[][..], Vec::as_slice));
    c
}

impl Counts {
    /// Adds the nodes of one page of the API's node list.
    pub fn add(&mut self, nodes: &[Json]) {
        for n in nodes {
            self.add_one(n);
        }
    }

    /// Counts one node (one whose Cfg names no image is not counted).
    fn add_one(&mut self, n: &Json) {
        let empty = Map::new();
        let cfg = n["cfg"].as_object().unwrap_or(&empty);
        let dsc = n["dsc"].as_object().unwrap_or(&empty);
        let prefix = format!("{IMG}/Image/");
        let wanted: Vec<&str> = cfg
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix)?.strip_suffix("/Digest"))
            .filter(|name| text(cfg, &format!("{prefix}{name}/State")) != "IDLE")
            .collect();
        if wanted.is_empty() {
            return;
        }
        self.total += 1;
        let img = |name: &str, f: &str| format!("{prefix}{name}/{f}");
        let fatal = text(dsc, &format!("{IMG}/State")) == "FATAL"
            || wanted
                .iter()
                .any(|w| text(dsc, &img(w, "State")) == "FATAL");
        let rolled = wanted.iter().all(|w| {
            text(dsc, &img(w, "Running")) == text(cfg, &img(w, "Digest"))
                && text(dsc, &img(w, "State")) == "ACTIVE"
        });
        if fatal {
            self.failed
                .push(n["name"].as_str().unwrap_or("?").to_owned());
        } else if rolled {
            self.rolled += 1;
        } else if text(dsc, "/Busy") == "BUSY" {
            self.waiting += 1;
        } else {
            self.rolling += 1;
        }
    }

    /// True when nothing is still rolling or waiting.
    pub fn done(&self) -> bool {
        self.rolling == 0 && self.waiting == 0
    }

    /// One line: `rolled 15/20, waiting (busy) 5, rolling 0, failed 0`.
    pub fn line(&self) -> String {
        format!(
            "rolled {}/{}, waiting (busy) {}, rolling {}, failed {}",
            self.rolled,
            self.total,
            self.waiting,
            self.rolling,
            self.failed.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, running: &str, state: &str, busy: &str) -> Json {
        json!({
            "name": name,
            "cfg": {
                format!("{IMG}/Image/bb/Digest"): "sha256:b",
                format!("{IMG}/Image/bb/State"): "ACTIVE",
            },
            "dsc": {
                format!("{IMG}/Image/bb/Running"): running,
                format!("{IMG}/Image/bb/State"): state,
                "/Busy": busy,
            },
        })
    }

    #[test]
    fn nodes_are_counted_by_where_they_stand() {
        let list = json!({"nodes": [
            node("n1", "sha256:b", "ACTIVE", "FREE"),
            node("n2", "sha256:a", "UPDATE", "BUSY"),
            node("n3", "sha256:a", "UPDATE", "FREE"),
            node("n4", "sha256:a", "FATAL", "FREE"),
            json!({"name": "n5", "cfg": {}, "dsc": {}}),
        ]});
        let c = count(&list);
        assert_eq!((c.total, c.rolled, c.waiting, c.rolling), (4, 1, 1, 1));
        assert_eq!(c.failed, ["n4"]);
        assert!(!c.done());
        assert_eq!(
            c.line(),
            "rolled 1/4, waiting (busy) 1, rolling 1, failed 1"
        );
    }
}
