//! Values and their kinds: what a URL reads or writes, and the enum tables
//! that let values be written by name or by number.

use std::fmt;

/// The names and numbers of one protobuf enum.
#[derive(Debug, PartialEq, Eq)]
pub struct EnumSpec {
    /// Fully qualified enum name, e.g. `layercake.node.PhysState`.
    pub name: &'static str,
    /// `(name, number)` pairs in declaration order.
    pub values: &'static [(&'static str, i32)],
}

impl EnumSpec {
    /// Parses a value given by name (`POWER_ON`) or by number (`2`).
    pub fn parse(&self, s: &str) -> Option<i32> {
        if let Some(&(_, n)) = self.values.iter().find(|(name, _)| *name == s) {
            return Some(n);
        }
        let n: i32 = s.parse().ok()?;
        self.name_of(n).map(|_| n)
    }

    /// The name of a number, if the enum declares it.
    pub fn name_of(&self, n: i32) -> Option<&'static str> {
        self.values
            .iter()
            .find(|(_, v)| *v == n)
            .map(|(name, _)| *name)
    }

    /// True when the zero value exists and is named `*UNKNOWN` (Kraken's A1).
    pub fn has_unknown_zero(&self) -> bool {
        self.name_of(0).is_some_and(|n| n.ends_with("UNKNOWN"))
    }
}

/// `layercake.node.RunState`.
pub static RUN_STATE: EnumSpec = EnumSpec {
    name: "layercake.node.RunState",
    values: &[("UNKNOWN", 0), ("INIT", 1), ("SYNC", 2), ("ERROR", 3)],
};

/// `layercake.node.PhysState`.
pub static PHYS_STATE: EnumSpec = EnumSpec {
    name: "layercake.node.PhysState",
    values: &[
        ("PHYS_UNKNOWN", 0),
        ("POWER_OFF", 1),
        ("POWER_ON", 2),
        ("POWER_CYCLE", 3),
        ("PHYS_HANG", 4),
        ("PHYS_ERROR", 5),
    ],
};

/// `layercake.node.Busy`.
pub static BUSY: EnumSpec = EnumSpec {
    name: "layercake.node.Busy",
    values: &[("BUSY_UNKNOWN", 0), ("FREE", 1), ("BUSY", 2)],
};

/// `layercake.node.ServiceState`.
pub static SERVICE_STATE: EnumSpec = EnumSpec {
    name: "layercake.node.ServiceState",
    values: &[
        ("SERVICE_UNKNOWN", 0),
        ("SERVICE_INIT", 1),
        ("SERVICE_STOP", 2),
        ("SERVICE_RUN", 3),
        ("SERVICE_ERROR", 4),
    ],
};

/// `layercake.pxe.PxeState`.
pub static PXE_STATE: EnumSpec = EnumSpec {
    name: "layercake.pxe.PxeState",
    values: &[
        ("UNKNOWN", 0),
        ("NONE", 1),
        ("WAIT", 2),
        ("INIT", 3),
        ("COMP", 4),
    ],
};

/// The type of the value behind a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A protobuf enum.
    Enum(&'static EnumSpec),
    /// A UTF-8 string.
    Str,
    /// Raw bytes (written as UTF-8 text).
    Bytes,
    /// A boolean.
    Bool,
    /// A signed integer.
    Int,
}

/// One scalar value read from or written to a URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Value {
    /// An enum number.
    Enum(i32),
    /// A string.
    Str(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
}

impl Kind {
    /// Parses text into a value of this kind; enums by name or number.
    pub fn parse(&self, s: &str) -> Option<Value> {
        match self {
            Kind::Enum(e) => e.parse(s).map(Value::Enum),
            Kind::Str => Some(Value::Str(s.to_owned())),
            Kind::Bytes => Some(Value::Bytes(s.as_bytes().to_vec())),
            Kind::Bool => s.parse().ok().map(Value::Bool),
            Kind::Int => s.parse().ok().map(Value::Int),
        }
    }

    /// True when `v` is a valid value of this kind.
    pub fn accepts(&self, v: &Value) -> bool {
        match (self, v) {
            (Kind::Enum(e), Value::Enum(n)) => e.name_of(*n).is_some(),
            (Kind::Str, Value::Str(_)) | (Kind::Bytes, Value::Bytes(_)) => true,
            (Kind::Bool, Value::Bool(_)) | (Kind::Int, Value::Int(_)) => true,
            _ => false,
        }
    }

    /// Renders a value, enums by name.
    pub fn display(&self, v: &Value) -> String {
        match (self, v) {
            (Kind::Enum(e), Value::Enum(n)) => e.name_of(*n).map_or(n.to_string(), str::to_owned),
            _ => v.to_string(),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Enum(n) => write!(f, "{n}"),
            Value::Str(s) => f.write_str(s),
            Value::Bytes(b) => f.write_str(&String::from_utf8_lossy(b)),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
        }
    }
}
