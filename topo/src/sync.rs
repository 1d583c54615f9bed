//! Per-level sync settings: the strategy, the hello and dead timers, jitter,
//! transport and failover behaviour of the links between one tier and its
//! parent.
//!
//! - [`SyncSettings`]: the effective settings of one link kind.
//! - [`StrategyKind`], [`Transport`]: closed choices with the YAML names as
//!   their `FromStr`/`Display` forms.
//! - Durations are written and read with [`crate::duration`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Largest jitter fraction accepted.
pub(crate) const JITTER_MAX: f64 = 0.5;

/// How state is synchronised over the links of one tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum StrategyKind {
    /// OSPF-style hellos between parent and child (`tree`).
    #[default]
    Tree,
    /// Tree upward plus SWIM gossip among siblings (`hybrid`).
    Hybrid,
    /// Flat gossip, for comparison only (`gossip`).
    Gossip,
}

/// The datagram transport of a tier's links.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Transport {
    /// Plain UDP datagrams, QUIC only as a fallback (`udp`).
    #[default]
    Udp,
    /// QUIC for everything (`quic`).
    Quic,
}

/// A word that names no variant of [`StrategyKind`] or [`Transport`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{found}` (expected one of: {expected})")]
pub struct UnknownName {
    /// What was being parsed ("strategy", "transport").
    pub what: &'static str,
    /// The word found.
    pub found: String,
    /// The accepted words, comma separated.
    pub expected: &'static str,
}

impl StrategyKind {
    /// The YAML name.
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyKind::Tree => "tree",
            StrategyKind::Hybrid => "hybrid",
            StrategyKind::Gossip => "gossip",
        }
    }
}

impl FromStr for StrategyKind {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        match s {
            "tree" => Ok(StrategyKind::Tree),
            "hybrid" => Ok(StrategyKind::Hybrid),
            "gossip" => Ok(StrategyKind::Gossip),
            _ => Err(UnknownName {
                what: "strategy",
                found: s.to_string(),
                expected: "tree, hybrid, gossip",
            }),
        }
    }
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Transport {
    /// The YAML name.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Quic => "quic",
        }
    }
}

impl FromStr for Transport {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        match s {
            "udp" => Ok(Transport::Udp),
            "quic" => Ok(Transport::Quic),
            _ => Err(UnknownName {
                what: "transport",
                found: s.to_string(),
                expected: "udp, quic",
            }),
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The effective settings of the links between an instance of one tier and
/// its parent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SyncSettings {
    /// The sync strategy.
    pub strategy: StrategyKind,
    /// Interval between hellos.
    pub hello: Duration,
    /// Silence after which the peer is declared dead; always > `hello`.
    pub dead: Duration,
    /// Random spread of timers, as a fraction in `0.0..=0.5`.
    pub jitter: f64,
    /// The datagram transport.
    pub transport: Transport,
    /// After a failover, the original sub-parent takes its role back when
    /// it returns.
    pub retake: bool,
}

impl Default for SyncSettings {
    /// `tree`, hello 2 s, dead 8 s, jitter 0.1, `udp`, retake.
    ///
    /// Kraken used 10 s / 40 s. Changes never wait for a hello (they are
    /// sent as triggered updates), so the hello only bounds failure
    /// detection; 2 s keeps the steady load of a 500-node rack at 500
    /// datagrams per second each way.
    fn default() -> Self {
        SyncSettings {
            strategy: StrategyKind::Tree,
            hello: Duration::from_secs(2),
            dead: Duration::from_secs(8),
            jitter: 0.1,
            transport: Transport::Udp,
            retake: true,
        }
    }
}
