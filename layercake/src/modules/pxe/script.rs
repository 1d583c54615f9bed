//! Per-node iPXE scripts, rendered from a template.
//!
//! - [`ScriptTemplate`]: parsed once (unknown placeholders are an error
//!   then, not at boot time); `{name}`-style placeholders, `{{` and `}}`
//!   for literal braces. [`DEFAULT_TEMPLATE`] boots layer 0.
//! - [`BootParams`]: what every node of this server shares (the HTTP
//!   base URL, the kernel and initramfs file names, fixed kernel
//!   arguments such as `console=ttyS0`).
//! - [`kernel_cmdline`]: the node's kernel command line, the contract
//!   with layer 0's `/init` (`examples/netboot-lab/build-layer0.sh`):
//!   `layercake.name=`, `layercake.mac=`, `layercake.ip=ADDR/PREFIX`,
//!   `layercake.gw=`, `layercake.parent=`, `layercake.server=`, then the
//!   node's own kernel arguments and the shared ones.
//!
//! Nothing secret is rendered: every value comes from the registry (which
//! refuses spaces, quotes and `$`) or the server's configuration.

use std::fmt::Write as _;

use super::registry::{Mac, NodeBoot};

/// Largest template accepted.
pub const TEMPLATE_BYTES_MAX: usize = 16 * 1024;

/// The layer-0 boot script: fetch the kernel and initramfs over HTTP and
/// boot them with the node's command line.
pub const DEFAULT_TEMPLATE: &str = "#!ipxe\n\
echo layercake: booting {name} ({ip}/{prefix}) from {server}\n\
kernel {kernel} {cmdline}\n\
initrd {initrd}\n\
boot\n";

/// A placeholder a template may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Var {
    Name,
    Mac,
    Ip,
    Prefix,
    Netmask,
    Gateway,
    Parent,
    Server,
    Kernel,
    Initrd,
    Cmdline,
}

impl Var {
    fn parse(name: &str) -> Option<Var> {
        Some(match name {
            "name" => Var::Name,
            "mac" => Var::Mac,
            "ip" => Var::Ip,
            "prefix" => Var::Prefix,
            "netmask" => Var::Netmask,
            "gateway" => Var::Gateway,
            "parent" => Var::Parent,
            "server" => Var::Server,
            "kernel" => Var::Kernel,
            "initrd" => Var::Initrd,
            "cmdline" => Var::Cmdline,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// Why a template was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Larger than [`TEMPLATE_BYTES_MAX`].
    #[error("template too large ({0} bytes)")]
    TooLarge(usize),
    /// A `{` without its `}`, or a lone `}`.
    #[error("unbalanced brace at byte {0}")]
    Unbalanced(usize),
    /// A placeholder this renderer does not know.
    #[error(
        "unknown placeholder {{{0}}} (known: name, mac, ip, prefix, netmask, gateway, parent, server, kernel, initrd, cmdline)"
    )]
    Unknown(String),
}

/// A parsed iPXE script template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptTemplate {
    parts: Vec<Part>,
}

impl Default for ScriptTemplate {
    fn default() -> Self {
        match ScriptTemplate::parse(DEFAULT_TEMPLATE) {
            Ok(t) => t,
            Err(e) => unreachable!("the default template parses: {e}"),
        }
    }
}

impl ScriptTemplate {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        if text.len() > TEMPLATE_BYTES_MAX {
            return Err(TemplateError::TooLarge(text.len()));
        }
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        let mut at = 0usize;
        while let Some(i) = rest.find(['{', '}']) {
            literal.push_str(&rest[..i]);
            let tail = &rest[i..];
            let consumed = if tail.starts_with("{{") {
                literal.push('{');
                2
            } else if tail.starts_with("}}") {
                literal.push('}');
                2
            } else if tail.starts_with('}') {
                return Err(TemplateError::Unbalanced(at + i));
            } else {
                let close = tail.find('}').ok_or(TemplateError::Unbalanced(at + i))?;
                let name = &tail[1..close];
                let var = Var::parse(name).ok_or_else(|| TemplateError::Unknown(name.into()))?;
                if !literal.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut literal)));
                }
                parts.push(Part::Var(var));
                close + 1
            };
            at += i + consumed;
            rest = &tail[consumed..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(ScriptTemplate { parts })
    }

    /// The script for one node.
    pub fn render(&self, mac: Mac, node: &NodeBoot, params: &BootParams) -> String {
        let mut out = String::with_capacity(512);
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => push_var(&mut out, *v, mac, node, params),
            }
        }
        out
    }
}

fn push_var(out: &mut String, var: Var, mac: Mac, node: &NodeBoot, params: &BootParams) {
    // Writing to a String cannot fail.
    let _ = match var {
        Var::Name => write!(out, "{}", node.name),
        Var::Mac => write!(out, "{mac}"),
        Var::Ip => write!(out, "{}", node.ip),
        Var::Prefix => write!(out, "{}", node.prefix),
        Var::Netmask => write!(out, "{}", node.netmask()),
        Var::Gateway => match node.gateway {
            Some(gw) => write!(out, "{gw}"),
            None => Ok(()),
        },
        Var::Parent => match node.parent {
            Some(p) => write!(out, "{p}"),
            None => Ok(()),
        },
        Var::Server => write!(out, "{}", params.base_url),
        Var::Kernel => write!(out, "{}", params.file_url(&params.kernel)),
        Var::Initrd => write!(out, "{}", params.file_url(&params.initrd)),
        Var::Cmdline => write!(out, "{}", kernel_cmdline(mac, node, params)),
    };
}

/// What every node of one server shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootParams {
    /// The HTTP base the scripts and files are served from, without a
    /// trailing slash (`http://10.0.0.1:8080`).
    pub base_url: String,
    /// The kernel's file name under the HTTP files root.
    pub kernel: String,
    /// The initramfs's file name under the HTTP files root.
    pub initrd: String,
    /// Kernel arguments for every node (`console=ttyS0`, `quiet`); trusted
    /// configuration, appended last.
    pub kernel_args: Vec<String>,
}

impl BootParams {
    /// Layer 0's defaults under `base_url`: `vmlinuz`, `initrd.img`, a
    /// serial console.
    pub fn new(base_url: impl Into<String>) -> Self {
        BootParams {
            base_url: base_url.into(),
            kernel: "vmlinuz".into(),
            initrd: "initrd.img".into(),
            kernel_args: vec!["console=ttyS0".into()],
        }
    }

    /// The URL of a file under the HTTP files root.
    pub fn file_url(&self, file: &str) -> String {
        format!("{}/boot/files/{file}", self.base_url)
    }
}

/// The node's kernel command line (the contract with layer 0's init).
pub fn kernel_cmdline(mac: Mac, node: &NodeBoot, params: &BootParams) -> String {
    let mut line = format!(
        "layercake.name={} layercake.mac={mac} layercake.ip={}/{}",
        node.name, node.ip, node.prefix
    );
    if let Some(gw) = node.gateway {
        let _ = write!(line, " layercake.gw={gw}");
    }
    if let Some(parent) = node.parent {
        let _ = write!(line, " layercake.parent={parent}");
    }
    let _ = write!(line, " layercake.server={}", params.base_url);
    for arg in node.kernel_args.iter().chain(&params.kernel_args) {
        line.push(' ');
        line.push_str(arg);
    }
    line
}
