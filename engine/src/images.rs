//! Image sets (layer 1): the `layercake.image.ImageSet` extension and the
//! declarations of the image module, shared by the real module (layercake
//! runs containers) and any virtual one (the same URLs, states and rules).
//!
//! - [`IMAGE_STATE`]: UNKNOWN, IDLE, ACTIVE, UPDATE, ERROR, FATAL.
//! - [`extension`]: the registry extension. URLs: [`STATE_URL`] (the set's
//!   state, the tracked variable), `.../Name` (the set's name or version)
//!   and `.../Image/<name>/<Field>` with fields `Source`, `Digest`,
//!   `Command`, `State` (Cfg: wanted; Dsc: the image's state), `Running`
//!   (the digest running), `Error`, `Started` (Unix ms of the running
//!   container's start), `Restarts`. Writing an empty `Source` removes the
//!   image; at most [`IMAGES_MAX`] images, names of
//!   `[A-Za-z0-9._-]{1,32}`.
//! - [`module`]: the mutations: `image_discover` (UNKNOWN -> known, needs
//!   RunState SYNC, so a node that leaves SYNC forgets its images'
//!   state), `image_start` IDLE -> ACTIVE, `image_update` UPDATE -> ACTIVE,
//!   `image_retry` ERROR -> ACTIVE and `image_stop_*` ACTIVE/UPDATE/ERROR
//!   -> IDLE. Every one but the discovery waits while the Dsc says
//!   `/Busy`=BUSY (a gate). FATAL has no way out: the node stays there
//!   (its old containers running) until a new Cfg.
//! - [`stop_before`]: adds "images stopped" as a requirement of the
//!   mutations that leave SYNC (power off), so their chains stop the images
//!   first.

use crate::mutation::{Context, ModuleDecl, MutationSpec};
use crate::registry::{AccessError, Extension};
use crate::value::{EnumSpec, Kind, Value};
use prost::Message;
use prost_types::Any;
use proto::image::{Image, ImageSet};

/// `layercake.image.ImageState`.
pub static IMAGE_STATE: EnumSpec = EnumSpec {
    name: "layercake.image.ImageState",
    values: &[
        ("UNKNOWN", 0),
        ("IDLE", 1),
        ("ACTIVE", 2),
        ("UPDATE", 3),
        ("ERROR", 4),
        ("FATAL", 5),
    ],
};

/// The extension's type URL.
pub const TYPE_URL: &str = "type.googleapis.com/layercake.image.ImageSet";
/// The set's state: the tracked variable.
pub const STATE_URL: &str = "type.googleapis.com/layercake.image.ImageSet/State";
/// The most images in one set.
pub const IMAGES_MAX: usize = 16;
/// The longest image name.
pub const NAME_MAX: usize = 32;

const IMAGE_FIELDS: [&str; 8] = [
    "Source", "Digest", "Command", "State", "Running", "Error", "Started", "Restarts",
];

/// True for a valid image name.
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= NAME_MAX
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The `ImageSet` extension (see the module doc for its URLs).
pub struct ImageSetExtension;

/// The registry extension of image sets.
pub fn extension() -> ImageSetExtension {
    ImageSetExtension
}

fn unknown(segments: &[String]) -> AccessError {
    AccessError::UnknownField(segments.join("/"))
}

fn image_kind(field: &str) -> Option<Kind> {
    Some(match field {
        "Source" | "Digest" | "Command" | "Running" | "Error" => Kind::Str,
        "State" => Kind::Enum(&IMAGE_STATE),
        "Started" | "Restarts" => Kind::Int,
        _ => return None,
    })
}

fn get_image(i: &Image, field: &str) -> Value {
    match field {
        "Source" => Value::Str(i.source.clone()),
        "Digest" => Value::Str(i.digest.clone()),
        "Command" => Value::Str(i.command.clone()),
        "State" => Value::Enum(i.state),
        "Running" => Value::Str(i.running.clone()),
        "Error" => Value::Str(i.error.clone()),
        "Started" => Value::Int(i.started_ms),
        _ => Value::Int(i.restarts),
    }
}

fn set_image(i: &mut Image, field: &str, v: &Value) {
    match (field, v) {
        ("Source", Value::Str(s)) => i.source = s.clone(),
        ("Digest", Value::Str(s)) => i.digest = s.clone(),
        ("Command", Value::Str(s)) => i.command = s.clone(),
        ("State", Value::Enum(n)) => i.state = *n,
        ("Running", Value::Str(s)) => i.running = s.clone(),
        ("Error", Value::Str(s)) => i.error = s.clone(),
        ("Started", Value::Int(n)) => i.started_ms = *n,
        ("Restarts", Value::Int(n)) => i.restarts = *n,
        _ => {}
    }
}

impl ImageSetExtension {
    fn decode(any: &Any) -> Result<ImageSet, AccessError> {
        ImageSet::decode(any.value.as_slice()).map_err(|_| AccessError::Decode(TYPE_URL.into()))
    }
}

impl Extension for ImageSetExtension {
    fn type_url(&self) -> &str {
        TYPE_URL
    }
    fn fields(&self) -> Vec<String> {
        vec!["State".into(), "Name".into()]
    }
    fn kind(&self, segments: &[String]) -> Option<Kind> {
        match segments {
            [f] if f == "State" => Some(Kind::Enum(&IMAGE_STATE)),
            [f] if f == "Name" => Some(Kind::Str),
            [img, name, field] if img == "Image" && valid_name(name) => image_kind(field),
            _ => None,
        }
    }
    fn get(&self, any: &Any, segments: &[String]) -> Result<Value, AccessError> {
        self.kind(segments).ok_or_else(|| unknown(segments))?;
        let m = Self::decode(any)?;
        Ok(match segments {
            [f] if f == "State" => Value::Enum(m.state),
            [f] if f == "Name" => Value::Str(m.name),
            [_, name, field] => match m.images.get(name) {
                Some(i) => get_image(i, field),
                None => get_image(&Image::default(), field),
            },
            _ => return Err(unknown(segments)),
        })
    }
    fn set(&self, any: &mut Any, segments: &[String], v: &Value) -> Result<(), AccessError> {
        let kind = self.kind(segments).ok_or_else(|| unknown(segments))?;
        let bad = || AccessError::BadValue {
            url: format!("{TYPE_URL}/{}", segments.join("/")),
            value: v.to_string(),
        };
        if !kind.accepts(v) {
            return Err(bad());
        }
        let mut m = Self::decode(any)?;
        match (segments, v) {
            ([f], Value::Enum(n)) if f == "State" => m.state = *n,
            ([f], Value::Str(s)) if f == "Name" => m.name = s.clone(),
            ([_, name, field], Value::Str(s)) if field == "Source" && s.is_empty() => {
                m.images.remove(name);
            }
            ([_, name, field], v) => {
                if !m.images.contains_key(name) && m.images.len() >= IMAGES_MAX {
                    return Err(bad());
                }
                set_image(m.images.entry(name.clone()).or_default(), field, v);
            }
            _ => return Err(bad()),
        }
        any.value = m.encode_to_vec();
        Ok(())
    }
    fn default_any(&self) -> Any {
        Any {
            type_url: TYPE_URL.into(),
            value: ImageSet::default().encode_to_vec(),
        }
    }
    fn paths(&self, any: &Any) -> Vec<Vec<String>> {
        let mut out: Vec<Vec<String>> = self.fields().into_iter().map(|f| vec![f]).collect();
        if let Ok(m) = Self::decode(any) {
            let mut names: Vec<&String> = m.images.keys().collect();
            names.sort();
            for n in names {
                for f in IMAGE_FIELDS {
                    out.push(vec!["Image".into(), n.clone(), f.into()]);
                }
            }
        }
        out
    }
}

/// The image module's declarations (SELF context: the node runs them).
/// `step_timeout_ms` bounds one start/update/stop (fetch, unpack, start).
pub fn module(step_timeout_ms: u64) -> ModuleDecl {
    let step = |name: &str, from: &str, to: &str| {
        MutationSpec::new(name)
            .mutates(STATE_URL, from, to)
            .requires("/RunState", "SYNC")
            .excludes_dsc("/Busy", "BUSY")
            .context(Context::SelfNode)
            .timeout_ms(step_timeout_ms)
    };
    ModuleDecl {
        name: "image".into(),
        mutations: vec![
            MutationSpec::discovery("image_discover")
                .mutates(STATE_URL, "UNKNOWN", "IDLE")
                .requires("/RunState", "SYNC")
                .context(Context::SelfNode)
                .timeout_ms(step_timeout_ms),
            step("image_start", "IDLE", "ACTIVE").fail_to(STATE_URL, "ERROR"),
            step("image_update", "UPDATE", "ACTIVE").fail_to(STATE_URL, "ERROR"),
            step("image_retry", "ERROR", "ACTIVE").fail_to(STATE_URL, "ERROR"),
            step("image_stop_active", "ACTIVE", "IDLE"),
            step("image_stop_update", "UPDATE", "IDLE"),
            step("image_stop_error", "ERROR", "IDLE"),
        ],
    }
}

/// Makes the mutations named in `names` (those that leave SYNC, such as
/// `power_off`) require the images stopped: they exclude ACTIVE, UPDATE
/// and ERROR, so their chains run `image_stop_*` first.
pub fn stop_before(modules: &mut [ModuleDecl], names: &[&str]) {
    for m in modules.iter_mut().flat_map(|d| d.mutations.iter_mut()) {
        if names.contains(&m.name.as_str()) {
            for s in ["ACTIVE", "UPDATE", "ERROR"] {
                m.excludes.push((STATE_URL.into(), s.into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;
    use std::sync::Arc;

    #[test]
    fn power_off_stops_the_images_first_and_an_update_is_one_step() {
        use crate::graph::{BuildOptions, Graph};
        use crate::mutation::MutationSet;
        use crate::planner::Planner;
        use crate::virt;
        let mut reg = Registry::with_pxe();
        reg.register(Arc::new(extension())).unwrap();
        let mut mods = [virt::power_module(), virt::boot_module(), module(60_000)];
        stop_before(&mut mods, &["power_off"]);
        let set = MutationSet::build(&reg, &mods).unwrap();
        let g = Arc::new(Graph::build(set, BuildOptions::default()).unwrap());
        let var = |u: &str| g.set().var(u).unwrap() as usize;
        let (p, r, x, i) = (
            var("/PhysState"),
            var("/RunState"),
            var(virt::PXE_URL),
            var(STATE_URL),
        );
        let mut on = vec![0; g.set().vars.len()];
        (on[p], on[r], on[x], on[i]) = (2, 2, 4, 2);
        let mut planner = Planner::new(g.clone());
        let mut off = vec![0; on.len()];
        off[p] = 1;
        let plan = planner.preview(&[(on.clone(), u64::MAX)], &off).unwrap();
        let names = planner.describe(plan[0].as_ref().unwrap());
        assert_eq!(names, ["image_stop_active", "power_off"]);
        let mut upd = on.clone();
        upd[i] = 3;
        let plan = planner.preview(&[(upd, u64::MAX)], &on).unwrap();
        assert_eq!(
            planner.describe(plan[0].as_ref().unwrap()),
            ["image_update"]
        );
        let mut fatal = on.clone();
        fatal[i] = 5;
        let plan = planner.preview(&[(fatal, u64::MAX)], &on).unwrap();
        assert!(plan[0].is_none(), "FATAL waits for a new Cfg");
        let mut dsc = on.clone();
        dsc[r] = 0;
        g.strip(&mut dsc);
        assert_eq!(dsc[i], 0, "image state is unknowable outside SYNC");
    }

    #[test]
    fn image_urls_read_and_write() {
        let mut reg = Registry::with_pxe();
        reg.register(Arc::new(extension())).unwrap();
        let mut n = reg.new_node("n1");
        let p = |u: &str| u.parse::<crate::url::Path>().unwrap();
        let src = p(&format!("{TYPE_URL}/Image/bb/Source"));
        reg.set(&mut n, &src, &Value::Str("bb.tar".into())).unwrap();
        let st = p(&format!("{TYPE_URL}/Image/bb/State"));
        let v = reg.parse_value(&st, "ACTIVE").unwrap();
        reg.set(&mut n, &st, &v).unwrap();
        assert_eq!(reg.get(&n, &st).unwrap(), Value::Enum(2));
        assert_eq!(reg.get(&n, &src).unwrap(), Value::Str("bb.tar".into()));
        let listed = reg.paths(&n);
        assert!(listed.contains(&st), "keyed paths are listed");
        assert!(
            reg.set(
                &mut n,
                &p(&format!("{TYPE_URL}/Image/{}/Source", "x".repeat(40))),
                &Value::Str("x".into())
            )
            .is_err()
        );
        reg.set(&mut n, &src, &Value::Str(String::new())).unwrap();
        assert!(
            !reg.paths(&n).contains(&st),
            "an empty Source removes the image"
        );
    }
}
