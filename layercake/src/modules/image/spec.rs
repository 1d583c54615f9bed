//! The image set a Cfg asks for ([`Wanted`]), read from the node's
//! `layercake.image.ImageSet` extension and checked.

use std::collections::BTreeMap;

use engine::images::{TYPE_URL, valid_name};
use prost::Message;
use proto::image::{ImageSet, ImageState};
use proto::node::Node;

/// The longest command line (bytes).
pub const COMMAND_MAX: usize = 4096;

/// One image as the Cfg asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WantedImage {
    /// Tarball name on the parent's image server, or an `http://` URL.
    pub source: String,
    /// The tarball's digest, lower-case hex of its SHA-256.
    pub sha256: String,
    /// The command line, split on whitespace.
    pub command: Vec<String>,
    /// Run it (`ACTIVE`) or not (`IDLE`).
    pub active: bool,
}

/// The image set a Cfg asks for, by image name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    /// The set's name or version.
    pub name: String,
    /// Images by name; those that do not check are in `invalid`.
    pub images: BTreeMap<String, WantedImage>,
    /// Images the Cfg names that cannot run, with the reason.
    pub invalid: BTreeMap<String, String>,
}

/// The `ImageSet` extension of `node` (default when missing or undecodable).
pub fn image_set(node: &Node) -> ImageSet {
    node.extensions
        .iter()
        .find(|a| a.type_url == TYPE_URL)
        .and_then(|a| ImageSet::decode(a.value.as_slice()).ok())
        .unwrap_or_default()
}

/// `sha256:<64 hex>` -> the hex, lower case.
pub fn parse_digest(d: &str) -> Result<String, String> {
    let hex = d
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("digest `{d}` does not start with `sha256:`"))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("digest `{d}` is not sha256: and 64 hex digits"));
    }
    Ok(hex.to_ascii_lowercase())
}

fn check_source(s: &str) -> Result<(), String> {
    if s.starts_with("http://") {
        return Ok(());
    }
    let ok = !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "source `{s}` is neither an http:// URL nor a file name of [A-Za-z0-9._-]"
        ))
    }
}

impl Wanted {
    /// What `cfg` asks for.
    pub fn from_cfg(cfg: &Node) -> Wanted {
        let set = image_set(cfg);
        let mut w = Wanted {
            name: set.name.clone(),
            ..Wanted::default()
        };
        for (name, img) in &set.images {
            let checked = (|| {
                if !valid_name(name) {
                    return Err(format!("image name `{name}` is not valid"));
                }
                check_source(&img.source)?;
                let sha256 = parse_digest(&img.digest)?;
                if img.command.len() > COMMAND_MAX {
                    return Err(format!("command longer than {COMMAND_MAX} bytes"));
                }
                let command: Vec<String> =
                    img.command.split_whitespace().map(str::to_owned).collect();
                if command.is_empty() {
                    return Err("no command".into());
                }
                Ok(WantedImage {
                    source: img.source.clone(),
                    sha256,
                    command,
                    active: img.state != ImageState::Idle as i32,
                })
            })();
            match checked {
                Ok(i) => {
                    w.images.insert(name.clone(), i);
                }
                Err(e) => {
                    w.invalid.insert(name.clone(), e);
                }
            }
        }
        w
    }

    /// True when the Cfg's image sets differ in what would run.
    pub fn differs(&self, other: &Wanted) -> bool {
        self.images != other.images || self.invalid != other.invalid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_checked() {
        let h = "ab".repeat(32);
        assert_eq!(parse_digest(&format!("sha256:{h}")).unwrap(), h);
        assert!(parse_digest(&h).is_err());
        assert!(parse_digest("sha256:xyz").is_err());
        assert!(check_source("../etc/passwd").is_err());
        assert!(check_source("busybox-1.tar").is_ok());
    }
}
