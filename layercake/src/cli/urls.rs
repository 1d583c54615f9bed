//! Short names for long state URLs on the command line: `bmc.address`
//! for `type.googleapis.com/layercake.power.Power/Address`, `net.mac` for
//! `type.googleapis.com/layercake.network.Network/Mac`, `pxe.state` for
//! the PXE extension's state, `image.state`, `image.name` and
//! `image.<image>.<field>` (`image.bb.digest`) for the image set's URLs.
//! Accepted wherever the CLI takes a URL
//! (`set`, `plan`, `wait --for`, `--filter`, `apply -f` keys); `describe`
//! shows them.

use crate::modules::power::config::POWER_TYPE_URL;
use crate::modules::pxe::network::NETWORK_TYPE_URL;

/// The BMC fields of the power extension, by short name.
const BMC_FIELDS: [(&str, &str); 9] = [
    ("protocol", "Protocol"),
    ("address", "Address"),
    ("port", "Port"),
    ("user", "User"),
    ("credential", "Credential"),
    ("scheme", "Scheme"),
    ("system", "System"),
    ("auth", "Auth"),
    ("error", "Error"),
];

/// The boot network fields of the network extension, by short name.
const NET_FIELDS: [(&str, &str); 5] = [
    ("mac", "Mac"),
    ("address", "Address"),
    ("gateway", "Gateway"),
    ("arch", "Arch"),
    ("error", "Error"),
];

/// The image fields, by short name.
const IMAGE_FIELDS: [(&str, &str); 8] = [
    ("source", "Source"),
    ("digest", "Digest"),
    ("command", "Command"),
    ("state", "State"),
    ("running", "Running"),
    ("error", "Error"),
    ("started", "Started"),
    ("restarts", "Restarts"),
];

fn expand_image(rest: &str) -> Option<String> {
    let set = engine::images::TYPE_URL;
    match rest.to_ascii_lowercase().as_str() {
        "state" => return Some(format!("{set}/State")),
        "name" => return Some(format!("{set}/Name")),
        _ => {}
    }
    let (img, f) = rest.rsplit_once('.')?;
    let (_, field) = IMAGE_FIELDS
        .iter()
        .find(|(s, _)| s.eq_ignore_ascii_case(f))?;
    engine::images::valid_name(img).then(|| format!("{set}/Image/{img}/{field}"))
}

fn shorten_image(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix(engine::images::TYPE_URL)?
        .strip_prefix('/')?;
    match rest {
        "State" => return Some("image.state".into()),
        "Name" => return Some("image.name".into()),
        _ => {}
    }
    let (img, field) = rest.strip_prefix("Image/")?.split_once('/')?;
    let (short, _) = IMAGE_FIELDS.iter().find(|(_, f)| *f == field)?;
    Some(format!("image.{img}.{short}"))
}

/// The full URL of a short name, or the word itself when it is none.
pub fn expand(url: &str) -> String {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("image.")
        && let Some(full) = expand_image(&url["image.".len()..])
    {
        return full;
    }
    if let Some(f) = lower.strip_prefix("bmc.")
        && let Some((_, field)) = BMC_FIELDS.iter().find(|(s, _)| *s == f)
    {
        return format!("{POWER_TYPE_URL}/{field}");
    }
    if let Some(f) = lower.strip_prefix("net.")
        && let Some((_, field)) = NET_FIELDS.iter().find(|(s, _)| *s == f)
    {
        return format!("{NETWORK_TYPE_URL}/{field}");
    }
    if lower == "pxe.state" || lower == "pxe" {
        return engine::virt::PXE_URL.to_string();
    }
    url.to_string()
}

/// The short name of a full URL, or the URL itself when it has none.
pub fn shorten(url: &str) -> String {
    if let Some(field) = url
        .strip_prefix(POWER_TYPE_URL)
        .and_then(|r| r.strip_prefix('/'))
        && let Some((short, _)) = BMC_FIELDS.iter().find(|(_, f)| *f == field)
    {
        return format!("bmc.{short}");
    }
    if let Some(field) = url
        .strip_prefix(NETWORK_TYPE_URL)
        .and_then(|r| r.strip_prefix('/'))
        && let Some((short, _)) = NET_FIELDS.iter().find(|(_, f)| *f == field)
    {
        return format!("net.{short}");
    }
    if url == engine::virt::PXE_URL {
        return "pxe.state".to_string();
    }
    if let Some(short) = shorten_image(url) {
        return short;
    }
    url.to_string()
}

/// `URL=VALUE` with the URL expanded.
pub fn expand_pair(pair: &str) -> String {
    match pair.split_once('=') {
        Some((u, v)) => format!("{}={v}", expand(u.trim())),
        None => pair.to_string(),
    }
}

/// The short names, for help texts.
pub fn names() -> Vec<String> {
    let mut v: Vec<String> = BMC_FIELDS.iter().map(|(s, _)| format!("bmc.{s}")).collect();
    v.extend(NET_FIELDS.iter().map(|(s, _)| format!("net.{s}")));
    v.push("pxe.state".into());
    v.extend(["image.state", "image.name"].map(String::from));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_short_names_round_trip() {
        let set = engine::images::TYPE_URL;
        assert_eq!(expand("image.state"), format!("{set}/State"));
        assert_eq!(expand("image.bb.digest"), format!("{set}/Image/bb/Digest"));
        assert_eq!(
            expand("image.Web-1.Command"),
            format!("{set}/Image/Web-1/Command")
        );
        assert_eq!(expand("image.bb.bogus"), "image.bb.bogus");
        for s in [
            "image.state",
            "image.name",
            "image.bb.running",
            "image.Web-1.source",
        ] {
            assert_eq!(shorten(&expand(s)), s);
        }
    }

    #[test]
    fn short_names_round_trip() {
        for n in names() {
            let full = expand(&n);
            assert!(full.starts_with("type.googleapis.com/"), "{n} -> {full}");
            assert_eq!(shorten(&full), n);
        }
        assert_eq!(expand("/PhysState"), "/PhysState");
        assert_eq!(expand("BMC.Address"), format!("{POWER_TYPE_URL}/Address"));
        assert_eq!(
            expand_pair("bmc.port=623"),
            format!("{POWER_TYPE_URL}/Port=623")
        );
        assert_eq!(expand("bmc.nope"), "bmc.nope");
        assert_eq!(expand("net.mac"), format!("{NETWORK_TYPE_URL}/Mac"));
    }
}
