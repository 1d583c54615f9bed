//! The extension registry and typed access to every value of a `Node` by
//! [`Path`]: reading, writing, kinds, and the list of addressable paths.
//!
//! - [`Extension`]: how one registered message is read and written inside
//!   an `Any` (implement it for map keys or nested fields).
//! - [`MessageExtension`]: a table-driven [`Extension`] for flat messages.
//! - [`Registry`]: all extensions by type URL; new nodes carry each one.

use crate::url::{FIELDS, Field, Path, SERVICE_FIELDS, ServiceField};
use crate::value::{BUSY, Kind, PHYS_STATE, PXE_STATE, RUN_STATE, SERVICE_STATE, Value};
use prost::Message;
use prost_types::Any;
use proto::node::{Node, ServiceInstance};
use std::collections::HashMap;
use std::sync::Arc;

/// Why a value could not be read or written. The node is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// The URL names an extension that is not registered.
    #[error("extension `{0}` is not registered")]
    UnknownExtension(String),
    /// The extension has no such field (or key path).
    #[error("unknown extension field `{0}`")]
    UnknownField(String),
    /// The node has no service with this id (reads only).
    #[error("no service `{0}` on this node")]
    NoSuchService(String),
    /// The value does not fit the URL's kind.
    #[error("value `{value}` does not fit `{url}`")]
    BadValue {
        /// The URL written.
        url: String,
        /// The offending value, as text.
        value: String,
    },
    /// The extension bytes in the node do not decode.
    #[error("extension `{0}` does not decode")]
    Decode(String),
}

/// One registered protobuf message carried as an `Any` in `Node.extensions`.
pub trait Extension: Send + Sync {
    /// Type URL, `type.googleapis.com/<pkg.Msg>`.
    fn type_url(&self) -> &str;
    /// Top-level field names (used to diff nodes).
    fn fields(&self) -> Vec<String>;
    /// The kind at a field path, or `None` if it does not exist.
    fn kind(&self, segments: &[String]) -> Option<Kind>;
    /// Reads the value at a field path.
    fn get(&self, any: &Any, segments: &[String]) -> Result<Value, AccessError>;
    /// Writes the value at a field path.
    fn set(&self, any: &mut Any, segments: &[String], v: &Value) -> Result<(), AccessError>;
    /// The message with every field at its default.
    fn default_any(&self) -> Any;
    /// Every scalar field path this message has (keyed ones included);
    /// by default the top-level [`Extension::fields`].
    fn paths(&self, any: &Any) -> Vec<Vec<String>> {
        let _ = any;
        self.fields().into_iter().map(|f| vec![f]).collect()
    }
}

/// One field of a [`MessageExtension`].
pub struct FieldDef<M> {
    /// Field name as written in URLs (`State`).
    pub name: &'static str,
    /// Its kind.
    pub kind: Kind,
    /// Reads it.
    pub get: fn(&M) -> Value,
    /// Writes it (the value has been checked against `kind`).
    pub set: fn(&mut M, &Value),
}

/// A flat message described by a table of [`FieldDef`]s.
pub struct MessageExtension<M> {
    type_url: String,
    fields: Vec<FieldDef<M>>,
}

impl<M: Message + Default> MessageExtension<M> {
    /// Describes message `full_name` (`pkg.Msg`) with these fields.
    pub fn new(full_name: &str, fields: Vec<FieldDef<M>>) -> Self {
        Self {
            type_url: format!("{}{full_name}", crate::url::TYPE_PREFIX),
            fields,
        }
    }

    fn field(&self, segments: &[String]) -> Result<&FieldDef<M>, AccessError> {
        match segments {
            [name] => self.fields.iter().find(|f| f.name == name),
            _ => None,
        }
        .ok_or_else(|| AccessError::UnknownField(segments.join("/")))
    }

    fn decode(&self, any: &Any) -> Result<M, AccessError> {
        M::decode(any.value.as_slice()).map_err(|_| AccessError::Decode(self.type_url.clone()))
    }
}

impl<M: Message + Default> Extension for MessageExtension<M> {
    fn type_url(&self) -> &str {
        &self.type_url
    }
    fn fields(&self) -> Vec<String> {
        self.fields.iter().map(|f| f.name.to_owned()).collect()
    }
    fn kind(&self, segments: &[String]) -> Option<Kind> {
        self.field(segments).ok().map(|f| f.kind)
    }
    fn get(&self, any: &Any, segments: &[String]) -> Result<Value, AccessError> {
        let f = self.field(segments)?;
        Ok((f.get)(&self.decode(any)?))
    }
    fn set(&self, any: &mut Any, segments: &[String], v: &Value) -> Result<(), AccessError> {
        let f = self.field(segments)?;
        if !f.kind.accepts(v) {
            let url = format!("{}/{}", self.type_url, segments.join("/"));
            return Err(AccessError::BadValue {
                url,
                value: v.to_string(),
            });
        }
        let mut m = self.decode(any)?;
        (f.set)(&mut m, v);
        any.value = m.encode_to_vec();
        Ok(())
    }
    fn default_any(&self) -> Any {
        Any {
            type_url: self.type_url.clone(),
            value: M::default().encode_to_vec(),
        }
    }
}

/// The boot module's `layercake.pxe.Pxe` extension (field `State`).
pub fn pxe_extension() -> MessageExtension<proto::pxe::Pxe> {
    MessageExtension::new(
        "layercake.pxe.Pxe",
        vec![FieldDef {
            name: "State",
            kind: Kind::Enum(&PXE_STATE),
            get: |m| Value::Enum(m.state),
            set: |m, v| {
                if let Value::Enum(n) = v {
                    m.state = *n;
                }
            },
        }],
    )
}

/// Registered extensions and typed access to node values.
#[derive(Default, Clone)]
pub struct Registry {
    exts: Vec<Arc<dyn Extension>>,
    by_url: HashMap<String, usize>,
}

/// The most extensions one registry holds.
pub const EXTENSIONS_MAX: usize = 256;

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry holding the [`pxe_extension`].
    pub fn with_pxe() -> Self {
        let mut r = Self::new();
        r.register(Arc::new(pxe_extension()))
            .expect("fresh registry");
        r
    }

    /// Registers an extension; fails if its type URL is taken or the table is full.
    pub fn register(&mut self, ext: Arc<dyn Extension>) -> Result<(), AccessError> {
        let url = ext.type_url().to_owned();
        if self.by_url.contains_key(&url) || self.exts.len() >= EXTENSIONS_MAX {
            return Err(AccessError::UnknownExtension(format!(
                "{url} (duplicate or table full)"
            )));
        }
        self.by_url.insert(url, self.exts.len());
        self.exts.push(ext);
        Ok(())
    }

    /// A new node named `name` carrying every registered extension.
    pub fn new_node(&self, name: &str) -> Node {
        Node {
            id: name.as_bytes().to_vec(),
            nodename: name.to_owned(),
            extensions: self.exts.iter().map(|e| e.default_any()).collect(),
            ..Default::default()
        }
    }

    fn ext(&self, type_url: &str) -> Result<&Arc<dyn Extension>, AccessError> {
        let i = self.by_url.get(type_url);
        i.map(|&i| &self.exts[i])
            .ok_or_else(|| AccessError::UnknownExtension(type_url.to_owned()))
    }

    /// The kind of the value at `path`.
    pub fn kind(&self, path: &Path) -> Result<Kind, AccessError> {
        Ok(match path {
            Path::Field(f) => field_kind(*f),
            Path::Service {
                field: ServiceField::State,
                ..
            } => Kind::Enum(&SERVICE_STATE),
            Path::Service { .. } => Kind::Str,
            Path::Extension { type_url, segments } => {
                let k = self.ext(type_url)?.kind(segments);
                k.ok_or_else(|| AccessError::UnknownField(path.to_string()))?
            }
        })
    }

    /// Parses text into a value for `path` (enums by name or number).
    pub fn parse_value(&self, path: &Path, text: &str) -> Result<Value, AccessError> {
        let bad = || AccessError::BadValue {
            url: path.to_string(),
            value: text.to_owned(),
        };
        self.kind(path)?.parse(text).ok_or_else(bad)
    }

    /// Reads the value at `path`; a missing extension reads as its default.
    pub fn get(&self, node: &Node, path: &Path) -> Result<Value, AccessError> {
        match path {
            Path::Field(f) => Ok(get_field(node, *f)),
            Path::Service { id, field } => {
                let s = node.services.iter().find(|s| &s.id == id);
                let s = s.ok_or_else(|| AccessError::NoSuchService(id.clone()))?;
                Ok(get_service(s, *field))
            }
            Path::Extension { type_url, segments } => {
                let ext = self.ext(type_url)?;
                match node.extensions.iter().find(|a| &a.type_url == type_url) {
                    Some(any) => ext.get(any, segments),
                    None => ext.get(&ext.default_any(), segments),
                }
            }
        }
    }

    /// Writes the value at `path`, creating a missing service or extension.
    pub fn set(&self, node: &mut Node, path: &Path, v: &Value) -> Result<(), AccessError> {
        let kind = self.kind(path)?;
        if !kind.accepts(v) {
            return Err(AccessError::BadValue {
                url: path.to_string(),
                value: v.to_string(),
            });
        }
        match path {
            Path::Field(f) => set_field(node, *f, v),
            Path::Service { id, field } => set_service(service_mut(node, id), *field, v),
            Path::Extension { type_url, segments } => {
                let ext = self.ext(type_url)?;
                let pos = node.extensions.iter().position(|a| &a.type_url == type_url);
                let pos = pos.unwrap_or_else(|| {
                    node.extensions.push(ext.default_any());
                    node.extensions.len() - 1
                });
                ext.set(&mut node.extensions[pos], segments, v)?;
            }
        }
        Ok(())
    }

    /// Every scalar path that `node` has: fields, services, extension fields.
    pub fn paths(&self, node: &Node) -> Vec<Path> {
        let mut out: Vec<Path> = FIELDS.iter().map(|(f, _)| Path::Field(*f)).collect();
        for s in &node.services {
            for (field, _) in SERVICE_FIELDS {
                out.push(Path::Service {
                    id: s.id.clone(),
                    field,
                });
            }
        }
        for e in &self.exts {
            let any = node.extensions.iter().find(|a| a.type_url == e.type_url());
            let paths = match any {
                Some(a) => e.paths(a),
                None => e.paths(&e.default_any()),
            };
            for segments in paths {
                let type_url = e.type_url().to_owned();
                out.push(Path::Extension { type_url, segments });
            }
        }
        out
    }
}

fn field_kind(f: Field) -> Kind {
    match f {
        Field::Id | Field::ParentId => Kind::Bytes,
        Field::Nodename | Field::Arch | Field::Platform => Kind::Str,
        Field::RunState => Kind::Enum(&RUN_STATE),
        Field::PhysState => Kind::Enum(&PHYS_STATE),
        Field::Busy => Kind::Enum(&BUSY),
    }
}

fn get_field(n: &Node, f: Field) -> Value {
    match f {
        Field::Id => Value::Bytes(n.id.clone()),
        Field::Nodename => Value::Str(n.nodename.clone()),
        Field::RunState => Value::Enum(n.run_state),
        Field::PhysState => Value::Enum(n.phys_state),
        Field::Arch => Value::Str(n.arch.clone()),
        Field::Platform => Value::Str(n.platform.clone()),
        Field::ParentId => Value::Bytes(n.parent_id.clone()),
        Field::Busy => Value::Enum(n.busy),
    }
}

fn set_field(n: &mut Node, f: Field, v: &Value) {
    match (f, v) {
        (Field::Id, Value::Bytes(b)) => n.id = b.clone(),
        (Field::Nodename, Value::Str(s)) => n.nodename = s.clone(),
        (Field::RunState, Value::Enum(e)) => n.run_state = *e,
        (Field::PhysState, Value::Enum(e)) => n.phys_state = *e,
        (Field::Arch, Value::Str(s)) => n.arch = s.clone(),
        (Field::Platform, Value::Str(s)) => n.platform = s.clone(),
        (Field::ParentId, Value::Bytes(b)) => n.parent_id = b.clone(),
        (Field::Busy, Value::Enum(e)) => n.busy = *e,
        _ => unreachable!("kind checked by Registry::set"),
    }
}

fn get_service(s: &ServiceInstance, f: ServiceField) -> Value {
    match f {
        ServiceField::Module => Value::Str(s.module.clone()),
        ServiceField::State => Value::Enum(s.state),
        ServiceField::ErrorMsg => Value::Str(s.error_msg.clone()),
    }
}

fn set_service(s: &mut ServiceInstance, f: ServiceField, v: &Value) {
    match (f, v) {
        (ServiceField::Module, Value::Str(x)) => s.module = x.clone(),
        (ServiceField::State, Value::Enum(e)) => s.state = *e,
        (ServiceField::ErrorMsg, Value::Str(x)) => s.error_msg = x.clone(),
        _ => unreachable!("kind checked by Registry::set"),
    }
}

fn service_mut<'a>(n: &'a mut Node, id: &str) -> &'a mut ServiceInstance {
    let pos = n
        .services
        .iter()
        .position(|s| s.id == id)
        .unwrap_or_else(|| {
            n.services.push(ServiceInstance {
                id: id.to_owned(),
                ..Default::default()
            });
            n.services.len() - 1
        });
    &mut n.services[pos]
}
