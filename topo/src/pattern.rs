//! Address patterns of `nodes` entries: `127.0.{g}.{n+10}:7000`.
//!
//! A pattern is literal text with `{var op op ...}` holes. Variables: `n`,
//! the numeric suffix of the host name (`n0042` gives 42); `i`, the 1-based
//! index of the host within its `hosts` expansion; `g`, the 1-based index of
//! the group among its siblings. Operations `+K -K *K /K %K` (K a decimal
//! integer) apply left to right: `{n/250%250+1}`. The filled-in text must
//! parse as a socket address; [`parse_addr`] explains why one does not.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

/// A pattern variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Var {
    N,
    I,
    G,
}

#[derive(Clone, Debug)]
enum Part {
    Lit(String),
    Hole(Var, Vec<(u8, i64)>),
}

/// The values of the variables for one host.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Vars {
    /// Numeric suffix of the host name, if it has one.
    pub n: Option<u64>,
    /// 1-based index within the `hosts` expansion.
    pub i: u64,
    /// 1-based index of the group among its siblings.
    pub g: u64,
}

/// A parsed address pattern.
#[derive(Clone, Debug)]
pub(crate) struct AddrPattern {
    parts: Vec<Part>,
}

impl AddrPattern {
    /// Parses a pattern; an error carries the byte offset of the problem.
    pub fn parse(text: &str) -> Result<AddrPattern, (usize, String)> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                Some(i) if rest.as_bytes()[i] == b'}' => {
                    return Err((offset + i, "`}` without `{`".to_string()));
                }
                Some(i) => {
                    if i > 0 {
                        parts.push(Part::Lit(rest[..i].to_string()));
                    }
                    let close = rest[i..]
                        .find('}')
                        .ok_or((offset + i, "unclosed `{`".to_string()))?;
                    let hole = &rest[i + 1..i + close];
                    parts.push(parse_hole(hole, offset + i + 1)?);
                    rest = &rest[i + close + 1..];
                    offset += i + close + 1;
                }
                None => {
                    parts.push(Part::Lit(rest.to_string()));
                    rest = "";
                }
            }
        }
        Ok(AddrPattern { parts })
    }

    /// Fills in the holes. Errors: `{n}` without a numeric suffix, a
    /// negative value or an overflow.
    pub fn fill(&self, vars: Vars, out: &mut String) -> Result<(), String> {
        out.clear();
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Hole(var, ops) => {
                    let v = match var {
                        Var::N => vars
                            .n
                            .ok_or("the host name has no numeric suffix for `{n}`")?,
                        Var::I => vars.i,
                        Var::G => vars.g,
                    };
                    let mut v = i64::try_from(v).map_err(|_| "value too large")?;
                    for &(op, k) in ops {
                        v = apply(v, op, k).ok_or("arithmetic overflow")?;
                    }
                    if v < 0 {
                        return Err(format!("pattern value {v} is negative"));
                    }
                    let _ = write!(out, "{v}");
                }
            }
        }
        Ok(())
    }
}

fn apply(v: i64, op: u8, k: i64) -> Option<i64> {
    match op {
        b'+' => v.checked_add(k),
        b'-' => v.checked_sub(k),
        b'*' => v.checked_mul(k),
        b'/' => v.checked_div(k),
        _ => v.checked_rem(k),
    }
}

fn parse_hole(hole: &str, at: usize) -> Result<Part, (usize, String)> {
    let var = match hole.as_bytes().first() {
        Some(b'n') => Var::N,
        Some(b'i') => Var::I,
        Some(b'g') => Var::G,
        _ => {
            let msg = format!("unknown pattern variable `{{{hole}}}` (expected n, i or g)");
            return Err((at, msg));
        }
    };
    let mut ops = Vec::new();
    let mut rest = &hole[1..];
    let mut offset = at + 1;
    while let Some(&op) = rest.as_bytes().first() {
        if !b"+-*/%".contains(&op) {
            let msg = format!("expected one of + - * / % in `{{{hole}}}`");
            return Err((offset, msg));
        }
        let len = rest[1..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len() - 1);
        let k: i64 = rest[1..1 + len]
            .parse()
            .ok()
            .filter(|k| *k <= 1_000_000_000_000)
            .ok_or((
                offset + 1,
                format!("expected a number after `{}`", op as char),
            ))?;
        if k == 0 && (op == b'/' || op == b'%') {
            return Err((offset, "division by zero".to_string()));
        }
        ops.push((op, k));
        rest = &rest[1 + len..];
        offset += 1 + len;
    }
    Ok(Part::Hole(var, ops))
}

/// Parses a socket address, explaining a failure: a missing port, a port
/// out of range, an IPv4 octet above 255, a malformed IPv6 address.
pub(crate) fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("address `{text}` has no port (expected IP:PORT)"));
    };
    if port.parse::<u16>().is_err() {
        return Err(format!(
            "address `{text}`: port `{port}` is not a number in 0..=65535"
        ));
    }
    if host.starts_with('[') {
        return Err(format!(
            "address `{text}`: `{host}` is not a bracketed IPv6 address"
        ));
    }
    if host.contains(':') {
        return Err(format!(
            "address `{text}`: write IPv6 addresses in brackets, as [::1]:7000"
        ));
    }
    let octets: Vec<&str> = host.split('.').collect();
    let numbers: Vec<Option<u64>> = octets.iter().map(|o| o.parse::<u64>().ok()).collect();
    if octets.len() == 4
        && numbers.iter().all(Option::is_some)
        && let Some(big) = numbers.iter().flatten().find(|v| **v > 255)
    {
        return Err(format!("address `{text}`: octet {big} > 255"));
    }
    Err(format!(
        "address `{text}`: `{host}` is not an IP address (host names are not resolved)"
    ))
}

/// The numeric suffix of a host name (`n0042` gives 42), if it ends in at
/// most 18 digits.
pub(crate) fn numeric_suffix(name: &str) -> Option<u64> {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 || digits > 18 {
        return None;
    }
    name[name.len() - digits..].parse().ok()
}

/// The prefix of a name before its numeric suffix.
pub(crate) fn stem(name: &str) -> &str {
    name.trim_end_matches(|c: char| c.is_ascii_digit())
}

/// Candidate patterns that may describe a run of hosts starting with
/// `name` at `addr` (`next`: the second host's address, for strides):
/// used by `to_yaml` to re-compress expanded nodes.
pub(crate) fn candidates(name: &str, addr: SocketAddr, next: Option<SocketAddr>) -> Vec<String> {
    let mut out = Vec::new();
    let n0 = numeric_suffix(name).and_then(|n| i64::try_from(n).ok());
    let port = i64::from(addr.port());
    let offset = |base: i64, value: i64| match value - base {
        0 => String::new(),
        d if d > 0 => format!("+{d}"),
        d => format!("{d}"),
    };
    match addr.ip() {
        IpAddr::V4(ip) => {
            let [a, b, c, d] = ip.octets().map(i64::from);
            if let Some(n) = n0 {
                out.push(format!("{a}.{b}.{c}.{{n{}}}:{port}", offset(n, d)));
                for (hi, base) in [(62_500, 250), (65_536, 256)] {
                    let (o2, o3, o4) = (n / hi, n / base % base, n % base);
                    out.push(format!(
                        "{a}.{{n/{hi}{}}}.{{n/{base}%{base}{}}}.{{n%{base}{}}}:{port}",
                        offset(o2, b),
                        offset(o3, c),
                        offset(o4, d)
                    ));
                }
                out.push(format!("{ip}:{{n{}}}", offset(n, port)));
            }
            out.push(format!("{a}.{b}.{c}.{{i{}}}:{port}", offset(1, d)));
            out.push(format!("{ip}:{{i{}}}", offset(1, port)));
            if let Some(SocketAddr::V4(next)) = next {
                let step = i64::from(next.ip().octets()[3]) - d;
                if step > 1 {
                    out.push(format!(
                        "{a}.{b}.{c}.{{i*{step}{}}}:{port}",
                        offset(step, d)
                    ));
                }
                let step = i64::from(next.port()) - port;
                if step > 1 {
                    out.push(format!("{ip}:{{i*{step}{}}}", offset(step, port)));
                }
            }
        }
        IpAddr::V6(ip) => {
            if let Some(n) = n0 {
                out.push(format!("[{ip}]:{{n{}}}", offset(n, port)));
            }
            out.push(format!("[{ip}]:{{i{}}}", offset(1, port)));
        }
    }
    out
}

/// Fills the address-pattern text `pattern` (same syntax as `nodes` entries:
/// `{n}`, `{i}`, `{g}` with `+ - * / %` operations) for host `host`, the
/// `i`-th (1-based) of its entry, in the `g`-th group. The result is text;
/// it is not checked to be a socket address. Used by applications for
/// per-node values such as BMC addresses.
pub fn fill_pattern(pattern: &str, host: &str, i: u64, g: u64) -> Result<String, String> {
    let p = AddrPattern::parse(pattern)
        .map_err(|(at, msg)| format!("bad pattern `{pattern}` at byte {at}: {msg}"))?;
    let mut out = String::new();
    let vars = Vars {
        n: numeric_suffix(host),
        i,
        g,
    };
    p.fill(vars, &mut out)
        .map_err(|e| format!("pattern `{pattern}` for host {host}: {e}"))?;
    Ok(out)
}
