//! Mutation and discovery declarations, and their validation into a
//! compiled [`MutationSet`] of interned variables and guards.
//!
//! - [`MutationSpec`]: what a module declares, by URL and value text.
//! - [`ModuleDecl`]: a module's mutations and discoveries.
//! - [`MutationSet`]: the validated set: tracked variables (every mutated
//!   URL, an enum with an UNKNOWN zero), [`Mutation`]s over them, and
//!   [`Guard`]s (requirements on untracked URLs such as `/Platform`,
//!   checked against the Cfg when planning) and [`Gate`]s (requirements on
//!   untracked URLs checked against the Dsc when a step is about to start,
//!   such as "excludes Dsc `/Busy`=BUSY": the step waits while it holds).

use crate::registry::Registry;
use crate::url::{Path, Url};
use crate::value::{EnumSpec, Kind, Value};
use proto::node::Node;

/// Where a mutation runs, relative to the node it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Context {
    /// On the node itself.
    SelfNode,
    /// On the node's parent or acting sub-parent.
    Child,
    /// On any instance that manages the node.
    All,
}

/// Whether a declaration changes a value or only observes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum MutationKind {
    /// Changes a value.
    Mutation,
    /// Observes a value (from UNKNOWN); it completes once the value is known.
    Discovery,
}

/// A mutation or discovery as a module declares it (URLs and value text).
#[derive(Debug, Clone)]
pub struct MutationSpec {
    /// Unique name.
    pub name: String,
    /// Mutation or discovery.
    pub kind: MutationKind,
    /// `(url, from, to)` for each changed variable.
    pub mutates: Vec<(String, String, String)>,
    /// `(url, value)` that must hold.
    pub requires: Vec<(String, String)>,
    /// `(url, value)` that must not hold.
    pub excludes: Vec<(String, String)>,
    /// `(url, value)` that must hold in the node's Dsc before the step starts.
    pub dsc_requires: Vec<(String, String)>,
    /// `(url, value)` that must not hold in the node's Dsc before the step starts.
    pub dsc_excludes: Vec<(String, String)>,
    /// Which instance runs it.
    pub context: Context,
    /// How long the step may take.
    pub timeout_ms: u64,
    /// Value written to Dsc when the step times out.
    pub fail_to: Option<(String, String)>,
    /// Tie-breaking cost between chains of equal length.
    pub cost: u32,
}

impl MutationSpec {
    /// A mutation named `name` (SELF context, 10 s timeout, cost 1).
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            kind: MutationKind::Mutation,
            mutates: Vec::new(),
            requires: Vec::new(),
            excludes: Vec::new(),
            dsc_requires: Vec::new(),
            dsc_excludes: Vec::new(),
            context: Context::SelfNode,
            timeout_ms: 10_000,
            fail_to: None,
            cost: 1,
        }
    }
    /// A discovery named `name`.
    pub fn discovery(name: &str) -> Self {
        Self {
            kind: MutationKind::Discovery,
            ..Self::new(name)
        }
    }
    /// Adds a changed variable.
    pub fn mutates(mut self, url: &str, from: &str, to: &str) -> Self {
        self.mutates.push((url.into(), from.into(), to.into()));
        self
    }
    /// Adds a requirement.
    pub fn requires(mut self, url: &str, value: &str) -> Self {
        self.requires.push((url.into(), value.into()));
        self
    }
    /// Adds an exclusion.
    pub fn excludes(mut self, url: &str, value: &str) -> Self {
        self.excludes.push((url.into(), value.into()));
        self
    }
    /// Adds a Dsc requirement on an untracked URL: the step waits (without
    /// its timeout running) until the node's Dsc has this value.
    pub fn requires_dsc(mut self, url: &str, value: &str) -> Self {
        self.dsc_requires.push((url.into(), value.into()));
        self
    }
    /// Adds a Dsc exclusion on an untracked URL: the step waits (without its
    /// timeout running) while the node's Dsc has this value
    /// (`.excludes_dsc("/Busy", "BUSY")`).
    pub fn excludes_dsc(mut self, url: &str, value: &str) -> Self {
        self.dsc_excludes.push((url.into(), value.into()));
        self
    }
    /// Sets the context.
    pub fn context(mut self, c: Context) -> Self {
        self.context = c;
        self
    }
    /// Sets the timeout.
    pub fn timeout_ms(mut self, t: u64) -> Self {
        self.timeout_ms = t;
        self
    }
    /// Sets the fail-to value.
    pub fn fail_to(mut self, url: &str, value: &str) -> Self {
        self.fail_to = Some((url.into(), value.into()));
        self
    }
    /// Sets the cost.
    pub fn cost(mut self, c: u32) -> Self {
        self.cost = c;
        self
    }
}

/// A module's declarations.
#[derive(Debug, Clone, Default)]
pub struct ModuleDecl {
    /// Module name.
    pub name: String,
    /// Its mutations and discoveries.
    pub mutations: Vec<MutationSpec>,
}

/// Index of a tracked variable.
pub type VarId = u16;
/// Index of a mutation in its [`MutationSet`].
pub type MutationId = u32;
/// Index of a guard in its [`MutationSet`] (0: no guard).
pub type GuardId = u8;
/// Index of a gate in its [`MutationSet`] (0: no gate).
pub type GateId = u8;

/// A tracked variable: a mutated URL with an enum kind.
#[derive(Debug, Clone)]
pub struct Var {
    /// Its URL text.
    pub url: String,
    /// Its parsed path.
    pub path: Path,
    /// Its enum.
    pub spec: &'static EnumSpec,
}

/// Requirements and exclusions on untracked URLs, checked against a node's Cfg.
#[derive(Debug, Clone, PartialEq)]
pub struct Guard {
    /// `(path, value)` that must hold.
    pub requires: Vec<(Path, Value)>,
    /// `(path, value)` that must not hold.
    pub excludes: Vec<(Path, Value)>,
}

/// Requirements and exclusions on untracked URLs, checked against a node's
/// Dsc when a step is about to start: while the gate is closed the step
/// waits (no module call, no timeout) and starts as soon as it opens.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    /// `(path, value)` that must hold in Dsc.
    pub requires: Vec<(Path, Value)>,
    /// `(path, value)` that must not hold in Dsc.
    pub excludes: Vec<(Path, Value)>,
    /// The conditions as declared, for descriptions
    /// (`excludes Dsc /Busy=BUSY`).
    pub text: String,
}

/// A validated mutation over tracked variables.
#[derive(Debug, Clone)]
pub struct Mutation {
    /// Unique name.
    pub name: String,
    /// Declaring module.
    pub module: String,
    /// Mutation or discovery.
    pub kind: MutationKind,
    /// `(var, from, to)`.
    pub mutates: Vec<(VarId, i32, i32)>,
    /// `(var, value)` that must hold.
    pub requires: Vec<(VarId, i32)>,
    /// `(var, value)` that must not hold.
    pub excludes: Vec<(VarId, i32)>,
    /// Guard on untracked URLs (Cfg, planning).
    pub guard: GuardId,
    /// Gate on untracked URLs (Dsc, step start).
    pub gate: GateId,
    /// Which instance runs it.
    pub context: Context,
    /// Step timeout.
    pub timeout_ms: u64,
    /// `(var, value)` written on timeout.
    pub fail_to: Option<(VarId, i32)>,
    /// Tie-breaking cost.
    pub cost: u32,
}

/// A declaration the engine rejects. Nothing was registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeclError {
    /// The URL does not parse or names nothing.
    #[error("mutation `{mutation}`: unknown URL `{url}`: {reason}")]
    UnknownUrl {
        /// The mutation.
        mutation: String,
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The value is not valid for the URL (e.g. an unknown enum name).
    #[error("mutation `{mutation}`: `{value}` is not a value of `{url}`")]
    UnknownValue {
        /// The mutation.
        mutation: String,
        /// The URL.
        url: String,
        /// The value text.
        value: String,
    },
    /// A mutated URL that is not an enum with an UNKNOWN zero value.
    #[error("mutation `{mutation}`: `{url}` has no UNKNOWN zero value")]
    NoUnknownZero {
        /// The mutation.
        mutation: String,
        /// The URL.
        url: String,
    },
    /// A requirement or exclusion on a URL the same mutation mutates.
    #[error("mutation `{mutation}`: requires or excludes its own mutated URL `{url}`")]
    ConditionOnMutated {
        /// The mutation.
        mutation: String,
        /// The URL.
        url: String,
    },
    /// `fail_to` on a URL that no mutation mutates.
    #[error("mutation `{mutation}`: fail_to URL `{url}` is not a mutated variable")]
    FailToUntracked {
        /// The mutation.
        mutation: String,
        /// The URL.
        url: String,
    },
    /// Empty `mutates`, a repeated URL, or from == to.
    #[error("mutation `{0}`: mutates nothing, repeats a URL, or has from == to")]
    BadMutates(String),
    /// Two declarations share a name.
    #[error("duplicate mutation name `{0}`")]
    Duplicate(String),
    /// A Dsc condition on a tracked URL (tracked values are Dsc already:
    /// declare it with `requires`/`excludes`).
    #[error("mutation `{mutation}`: Dsc condition on tracked URL `{url}` (use requires/excludes)")]
    DscOnTracked {
        /// The mutation.
        mutation: String,
        /// The URL.
        url: String,
    },
    /// More variables or guards than the engine supports.
    #[error("too many {0}")]
    TooMany(&'static str),
}

/// The most tracked variables.
pub const VARS_MAX: usize = 16;
/// The most distinct guards (a node's guard set is a `u64` mask).
pub const GUARDS_MAX: usize = 64;
/// The most distinct gates (a node's open gates are a `u64` mask).
pub const GATES_MAX: usize = 64;

/// Validated declarations: variables, mutations and guards.
#[derive(Debug, Clone)]
pub struct MutationSet {
    /// Tracked variables.
    pub vars: Vec<Var>,
    /// Mutations, in declaration order.
    pub mutations: Vec<Mutation>,
    /// Guards; index 0 is the empty guard.
    pub guards: Vec<Guard>,
    /// Gates; index 0 is the empty gate (always open).
    pub gates: Vec<Gate>,
}

impl MutationSet {
    /// Validates every module's declarations.
    pub fn build(reg: &Registry, modules: &[ModuleDecl]) -> Result<Self, DeclError> {
        let specs: Vec<(&str, &MutationSpec)> = modules
            .iter()
            .flat_map(|m| m.mutations.iter().map(|s| (m.name.as_str(), s)))
            .collect();
        let mut set = MutationSet {
            vars: Vec::new(),
            mutations: Vec::new(),
            guards: vec![Guard::empty()],
            gates: vec![Gate {
                requires: Vec::new(),
                excludes: Vec::new(),
                text: String::new(),
            }],
        };
        for (_, s) in &specs {
            set.collect_vars(reg, s)?;
        }
        for (module, s) in specs {
            if set.mutations.iter().any(|m| m.name == s.name) {
                return Err(DeclError::Duplicate(s.name.clone()));
            }
            let m = set.compile(reg, module, s)?;
            set.mutations.push(m);
        }
        Ok(set)
    }

    /// The tracked variable for `url`, if any.
    pub fn var(&self, url: &str) -> Option<VarId> {
        let path: Path = url.parse().ok()?;
        self.vars
            .iter()
            .position(|v| v.path == path)
            .map(|i| i as VarId)
    }

    /// The mutation named `name`.
    pub fn mutation(&self, name: &str) -> Option<MutationId> {
        self.mutations
            .iter()
            .position(|m| m.name == name)
            .map(|i| i as MutationId)
    }

    /// The bit mask of guards that `cfg` satisfies.
    pub fn guard_mask(&self, reg: &Registry, cfg: &Node) -> u64 {
        let mut mask = 0;
        for (i, g) in self.guards.iter().enumerate() {
            let holds = |(p, v): &(Path, Value)| reg.get(cfg, p).ok().as_ref() == Some(v);
            if g.requires.iter().all(holds) && !g.excludes.iter().any(holds) {
                mask |= 1 << i;
            }
        }
        mask
    }

    /// The bit mask of gates that `dsc` opens (bit 0, the empty gate, is
    /// always set).
    pub fn gate_mask(&self, reg: &Registry, dsc: &Node) -> u64 {
        let mut mask = 0;
        for (i, g) in self.gates.iter().enumerate() {
            let holds = |(p, v): &(Path, Value)| reg.get(dsc, p).ok().as_ref() == Some(v);
            if g.requires.iter().all(holds) && !g.excludes.iter().any(holds) {
                mask |= 1 << i;
            }
        }
        mask
    }

    /// What mutation `m` waits for while its gate is closed
    /// (`excludes Dsc /Busy=BUSY`); empty when it has no gate.
    pub fn gate_text(&self, m: MutationId) -> &str {
        let g = self.mutations[m as usize].gate;
        &self.gates[g as usize].text
    }

    fn collect_vars(&mut self, reg: &Registry, s: &MutationSpec) -> Result<(), DeclError> {
        if s.mutates.is_empty() {
            return Err(DeclError::BadMutates(s.name.clone()));
        }
        for (url, _, _) in &s.mutates {
            let path = parse_path(s, url)?;
            if self.vars.iter().any(|v| v.path == path) {
                continue;
            }
            let no_zero = || DeclError::NoUnknownZero {
                mutation: s.name.clone(),
                url: url.clone(),
            };
            let spec = match reg.kind(&path) {
                Ok(Kind::Enum(e)) if e.has_unknown_zero() => e,
                Ok(_) => return Err(no_zero()),
                Err(e) => return Err(unknown_url(s, url, e.to_string())),
            };
            if self.vars.len() >= VARS_MAX {
                return Err(DeclError::TooMany("variables"));
            }
            self.vars.push(Var {
                url: path.to_string(),
                path,
                spec,
            });
        }
        Ok(())
    }

    fn compile(
        &mut self,
        reg: &Registry,
        module: &str,
        s: &MutationSpec,
    ) -> Result<Mutation, DeclError> {
        let mut mutates = Vec::new();
        for (url, from, to) in &s.mutates {
            let v = self.var(url).expect("collected");
            let (f, t) = (self.enum_value(s, v, from)?, self.enum_value(s, v, to)?);
            if f == t || mutates.iter().any(|(w, _, _)| *w == v) {
                return Err(DeclError::BadMutates(s.name.clone()));
            }
            mutates.push((v, f, t));
        }
        let mut guard = Guard::empty();
        let requires = self.conditions(reg, s, &s.requires, &mutates, &mut guard.requires)?;
        let excludes = self.conditions(reg, s, &s.excludes, &mutates, &mut guard.excludes)?;
        let gate = self.gate(reg, s)?;
        let fail_to = match &s.fail_to {
            None => None,
            Some((url, val)) => {
                let v = self.var(url).ok_or_else(|| DeclError::FailToUntracked {
                    mutation: s.name.clone(),
                    url: url.clone(),
                })?;
                Some((v, self.enum_value(s, v, val)?))
            }
        };
        Ok(Mutation {
            name: s.name.clone(),
            module: module.to_owned(),
            kind: s.kind,
            mutates,
            requires,
            excludes,
            guard: self.intern_guard(guard)?,
            gate,
            context: s.context,
            timeout_ms: s.timeout_ms,
            fail_to,
            cost: s.cost,
        })
    }

    fn conditions(
        &self,
        reg: &Registry,
        s: &MutationSpec,
        conds: &[(String, String)],
        mutates: &[(VarId, i32, i32)],
        untracked: &mut Vec<(Path, Value)>,
    ) -> Result<Vec<(VarId, i32)>, DeclError> {
        let mut out = Vec::new();
        for (url, val) in conds {
            let path = parse_path(s, url)?;
            match self.var(url) {
                Some(v) if mutates.iter().any(|(w, _, _)| *w == v) => {
                    return Err(DeclError::ConditionOnMutated {
                        mutation: s.name.clone(),
                        url: url.clone(),
                    });
                }
                Some(v) => out.push((v, self.enum_value(s, v, val)?)),
                None => {
                    let value = reg.parse_value(&path, val).map_err(|e| match e {
                        crate::registry::AccessError::BadValue { .. } => bad_value(s, url, val),
                        other => unknown_url(s, url, other.to_string()),
                    })?;
                    untracked.push((path, value));
                }
            }
        }
        Ok(out)
    }

    fn gate(&mut self, reg: &Registry, s: &MutationSpec) -> Result<GateId, DeclError> {
        if s.dsc_requires.is_empty() && s.dsc_excludes.is_empty() {
            return Ok(0);
        }
        let mut text = Vec::new();
        let mut conds = |list: &[(String, String)], word: &str| {
            let mut out = Vec::new();
            for (url, val) in list {
                let path = parse_path(s, url)?;
                if self.var(url).is_some() {
                    return Err(DeclError::DscOnTracked {
                        mutation: s.name.clone(),
                        url: url.clone(),
                    });
                }
                let value = reg.parse_value(&path, val).map_err(|e| match e {
                    crate::registry::AccessError::BadValue { .. } => bad_value(s, url, val),
                    other => unknown_url(s, url, other.to_string()),
                })?;
                text.push(format!("{word} Dsc {path}={val}"));
                out.push((path, value));
            }
            Ok(out)
        };
        let requires = conds(&s.dsc_requires, "requires")?;
        let excludes = conds(&s.dsc_excludes, "excludes")?;
        let gate = Gate {
            requires,
            excludes,
            text: text.join(", "),
        };
        if let Some(i) = self
            .gates
            .iter()
            .position(|g| g.requires == gate.requires && g.excludes == gate.excludes)
        {
            return Ok(i as GateId);
        }
        if self.gates.len() >= GATES_MAX {
            return Err(DeclError::TooMany("gates"));
        }
        self.gates.push(gate);
        Ok((self.gates.len() - 1) as GateId)
    }

    fn enum_value(&self, s: &MutationSpec, v: VarId, text: &str) -> Result<i32, DeclError> {
        let var = &self.vars[v as usize];
        var.spec
            .parse(text)
            .ok_or_else(|| bad_value(s, &var.url, text))
    }

    fn intern_guard(&mut self, g: Guard) -> Result<GuardId, DeclError> {
        if let Some(i) = self.guards.iter().position(|h| *h == g) {
            return Ok(i as GuardId);
        }
        if self.guards.len() >= GUARDS_MAX {
            return Err(DeclError::TooMany("guards"));
        }
        self.guards.push(g);
        Ok((self.guards.len() - 1) as GuardId)
    }
}

impl Guard {
    fn empty() -> Self {
        Guard {
            requires: Vec::new(),
            excludes: Vec::new(),
        }
    }
}

fn parse_path(s: &MutationSpec, url: &str) -> Result<Path, DeclError> {
    let u: Url = url
        .parse()
        .map_err(|e: crate::url::ParseError| unknown_url(s, url, e.to_string()))?;
    if u.node.is_some() {
        return Err(unknown_url(
            s,
            url,
            "cluster-wide URLs cannot be declared".into(),
        ));
    }
    Ok(u.path)
}

fn unknown_url(s: &MutationSpec, url: &str, reason: String) -> DeclError {
    DeclError::UnknownUrl {
        mutation: s.name.clone(),
        url: url.to_owned(),
        reason,
    }
}

fn bad_value(s: &MutationSpec, url: &str, value: &str) -> DeclError {
    DeclError::UnknownValue {
        mutation: s.name.clone(),
        url: url.to_owned(),
        value: value.to_owned(),
    }
}
