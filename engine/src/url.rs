//! The URL language: parsing and printing the addresses of values in a
//! `Node` (`/PhysState`, `/Services/<id>/State`,
//! `type.googleapis.com/<pkg.Msg>/<Field>/<key>...`, `<node>:<url>`).

use std::fmt;
use std::str::FromStr;

/// Prefix of every extension URL.
pub const TYPE_PREFIX: &str = "type.googleapis.com/";

/// A top-level scalar field of `Node`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// `/Id` (bytes).
    Id,
    /// `/Nodename`.
    Nodename,
    /// `/RunState`.
    RunState,
    /// `/PhysState`.
    PhysState,
    /// `/Arch`.
    Arch,
    /// `/Platform`.
    Platform,
    /// `/ParentId` (bytes).
    ParentId,
    /// `/Busy`.
    Busy,
}

/// Every field, in URL order.
pub const FIELDS: [(Field, &str); 8] = [
    (Field::Id, "Id"),
    (Field::Nodename, "Nodename"),
    (Field::RunState, "RunState"),
    (Field::PhysState, "PhysState"),
    (Field::Arch, "Arch"),
    (Field::Platform, "Platform"),
    (Field::ParentId, "ParentId"),
    (Field::Busy, "Busy"),
];

/// A field of one `ServiceInstance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceField {
    /// `/Services/<id>/Module`.
    Module,
    /// `/Services/<id>/State`.
    State,
    /// `/Services/<id>/ErrorMsg`.
    ErrorMsg,
}

/// Every service field, in URL order.
pub const SERVICE_FIELDS: [(ServiceField, &str); 3] = [
    (ServiceField::Module, "Module"),
    (ServiceField::State, "State"),
    (ServiceField::ErrorMsg, "ErrorMsg"),
];

/// The part of a URL inside one node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Path {
    /// A top-level field.
    Field(Field),
    /// A field of the service with this id.
    Service {
        /// Service id.
        id: String,
        /// Field of the service.
        field: ServiceField,
    },
    /// A field (and possibly map keys) of a registered extension.
    Extension {
        /// Full type URL, e.g. `type.googleapis.com/layercake.pxe.Pxe`.
        type_url: String,
        /// Field name followed by map keys or nested fields.
        segments: Vec<String>,
    },
}

/// A parsed URL: an optional node (cluster-wide form) and a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Url {
    /// The node named by `<node>:`, if any.
    pub node: Option<String>,
    /// The path inside the node.
    pub path: Path,
}

/// Why a URL could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The text is empty or has empty segments.
    #[error("malformed URL `{0}`")]
    Malformed(String),
    /// A top-level name that `Node` does not have.
    #[error("unknown field in URL `{0}`")]
    UnknownField(String),
}

impl FromStr for Url {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let (node, rest) = match s.split_once(':') {
            Some((n, r)) if !n.contains('/') && !n.is_empty() => (Some(n.to_owned()), r),
            _ => (None, s),
        };
        Ok(Url {
            node,
            path: rest.parse()?,
        })
    }
}

impl FromStr for Path {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError::Malformed(s.to_owned());
        let body = s.strip_prefix('/').unwrap_or(s);
        if let Some(ext) = body.strip_prefix(TYPE_PREFIX) {
            let mut parts = ext.split('/');
            let msg = parts.next().filter(|m| !m.is_empty()).ok_or_else(bad)?;
            let segments: Vec<String> = parts.map(str::to_owned).collect();
            if segments.is_empty() || segments.iter().any(String::is_empty) {
                return Err(bad());
            }
            return Ok(Path::Extension {
                type_url: format!("{TYPE_PREFIX}{msg}"),
                segments,
            });
        }
        if !s.starts_with('/') {
            return Err(bad());
        }
        let parts: Vec<&str> = body.split('/').collect();
        match parts.as_slice() {
            ["Services", id, f] if !id.is_empty() => {
                let field = SERVICE_FIELDS.iter().find(|(_, n)| n == f);
                let (field, _) = field.ok_or_else(|| ParseError::UnknownField(s.to_owned()))?;
                Ok(Path::Service {
                    id: (*id).to_owned(),
                    field: *field,
                })
            }
            [name] => FIELDS
                .iter()
                .find(|(_, n)| n == name)
                .map(|(f, _)| Path::Field(*f))
                .ok_or_else(|| ParseError::UnknownField(s.to_owned())),
            _ => Err(ParseError::UnknownField(s.to_owned())),
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Field(x) => {
                let name = FIELDS.iter().find(|(g, _)| g == x).map_or("?", |(_, n)| n);
                write!(f, "/{name}")
            }
            Path::Service { id, field } => {
                let name = SERVICE_FIELDS
                    .iter()
                    .find(|(g, _)| g == field)
                    .map_or("?", |(_, n)| n);
                write!(f, "/Services/{id}/{name}")
            }
            Path::Extension { type_url, segments } => {
                write!(f, "{type_url}/{}", segments.join("/"))
            }
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some(n) => write!(f, "{n}:{}", self.path),
            None => write!(f, "{}", self.path),
        }
    }
}
