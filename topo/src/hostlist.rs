//! Hostlist expressions, as in Slurm and pdsh: `ml[001-130]`,
//! `n[1-3,7,10-12]`, `r[1-2]n[01-02]`, `gpu1,gpu2`.
//!
//! - [`expand`] turns an expression into host names, in the order written
//!   (the first bracket group varies slowest); it does not sort or dedupe.
//! - [`count`] says how many names an expression stands for without
//!   expanding it (checked arithmetic: a count that does not fit `u64` is
//!   [`HostlistError::TooMany`]), so a caller can bound a request first.
//! - [`compress`] is its order-preserving inverse: consecutive names with
//!   the same prefix and suffix share one bracket group, so
//!   `expand(&compress(names)) == names` for every list of valid names.
//!
//! Rules: terms are separated by commas outside brackets (spaces around a
//! term are ignored); host name characters are ASCII letters, digits, `.`,
//! `_` and `-`; a range `lo-hi` is zero-padded to the number of digits
//! written in `lo` (`[001-130]` gives `001`..`130`, `[1-100]` no padding); a
//! term has at most [`BRACKETS_MAX`] bracket groups and an expression at
//! most [`HOSTS_MAX`] hosts.

use std::fmt::Write as _;

/// Most hosts one expression may expand to.
pub const HOSTS_MAX: usize = 1_000_000;
/// Most bracket groups in one term.
pub const BRACKETS_MAX: usize = 8;
/// Most digits in one bound (keeps values within `u64`).
const DIGITS_MAX: usize = 18;

/// A hostlist expression that does not parse. Every variant carries `at`,
/// the byte offset in the expression where the problem starts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostlistError {
    /// An empty expression or an empty term (`a,,b`, a trailing comma).
    #[error("empty host name")]
    Empty {
        /// Byte offset.
        at: usize,
    },
    /// A `[` without its `]`.
    #[error("unclosed `[`")]
    Unclosed {
        /// Byte offset of the `[`.
        at: usize,
    },
    /// A `]` without a `[`.
    #[error("`]` without `[`")]
    Unopened {
        /// Byte offset of the `]`.
        at: usize,
    },
    /// A `[` inside brackets.
    #[error("nested `[`")]
    Nested {
        /// Byte offset of the inner `[`.
        at: usize,
    },
    /// A character that cannot be in a host name.
    #[error("invalid character `{ch}` in host name")]
    BadChar {
        /// Byte offset.
        at: usize,
        /// The character.
        ch: char,
    },
    /// A bracket item that is not `N` or `N-M` with decimal digits.
    #[error("bad range `{text}` (expected N or N-M, at most 18 digits)")]
    BadRange {
        /// Byte offset of the item.
        at: usize,
        /// The item as written.
        text: String,
    },
    /// A range whose upper bound is below its lower bound.
    #[error("reversed range `{lo}-{hi}`")]
    Reversed {
        /// Byte offset of the range.
        at: usize,
        /// Lower bound as written.
        lo: String,
        /// Upper bound as written.
        hi: String,
    },
    /// More than [`BRACKETS_MAX`] bracket groups in one term.
    #[error("more than {BRACKETS_MAX} bracket groups in one host name")]
    TooManyBrackets {
        /// Byte offset of the term.
        at: usize,
    },
    /// The expression expands to more than [`HOSTS_MAX`] hosts.
    #[error("expands to more than {HOSTS_MAX} hosts")]
    TooMany {
        /// Byte offset of the term that crossed the limit.
        at: usize,
    },
}

impl HostlistError {
    /// Byte offset in the expression where the problem starts.
    pub fn offset(&self) -> usize {
        match self {
            HostlistError::Empty { at }
            | HostlistError::Unclosed { at }
            | HostlistError::Unopened { at }
            | HostlistError::Nested { at }
            | HostlistError::BadChar { at, .. }
            | HostlistError::BadRange { at, .. }
            | HostlistError::Reversed { at, .. }
            | HostlistError::TooManyBrackets { at }
            | HostlistError::TooMany { at } => *at,
        }
    }
}

/// True for the characters a host name may hold.
pub(crate) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Expands a hostlist expression into host names, in the order written.
///
/// The names are counted first ([`count`]): an expression of more than
/// [`HOSTS_MAX`] hosts is refused before anything is generated.
pub fn expand(expr: &str) -> Result<Vec<String>, HostlistError> {
    let mut out = Vec::new();
    for (at, term) in split_terms(expr)? {
        expand_term(term, at, &mut out)?;
    }
    Ok(out)
}

/// The number of host names `expr` expands to, computed without expanding
/// it (cost linear in the expression's length, whatever it stands for).
/// Parse errors are those of [`expand`]; a count beyond `u64` is
/// [`HostlistError::TooMany`]. Unlike [`expand`] it does not apply
/// [`HOSTS_MAX`]: the caller chooses its own bound.
pub fn count(expr: &str) -> Result<u64, HostlistError> {
    let mut total: u64 = 0;
    for (at, term) in split_terms(expr)? {
        let n = term_count(&parse_term(term, at)?).ok_or(HostlistError::TooMany { at })?;
        total = total.checked_add(n).ok_or(HostlistError::TooMany { at })?;
    }
    Ok(total)
}

/// Names one parsed term stands for; `None` when that overflows `u64`.
fn term_count(segs: &[Seg<'_>]) -> Option<u64> {
    let mut count: u64 = 1;
    for seg in segs {
        if let Seg::Set(ranges) = seg {
            let mut n: u64 = 0;
            for &(lo, hi, _) in ranges {
                // parse_set guarantees lo <= hi.
                n = n.checked_add(hi.checked_sub(lo)?.checked_add(1)?)?;
            }
            count = count.checked_mul(n)?;
        }
    }
    Some(count)
}

/// Splits at top-level commas, trimming spaces; checks bracket balance.
fn split_terms(expr: &str) -> Result<Vec<(usize, &str)>, HostlistError> {
    let mut terms = Vec::new();
    let mut open: Option<usize> = None;
    let mut start = 0;
    for (i, c) in expr.char_indices() {
        match (c, open) {
            ('[', None) => open = Some(i),
            ('[', Some(_)) => return Err(HostlistError::Nested { at: i }),
            (']', None) => return Err(HostlistError::Unopened { at: i }),
            (']', Some(_)) => open = None,
            (',', None) => {
                terms.push(trimmed(expr, start, i)?);
                start = i + 1;
            }
            _ => {}
        }
    }
    if let Some(at) = open {
        return Err(HostlistError::Unclosed { at });
    }
    terms.push(trimmed(expr, start, expr.len())?);
    Ok(terms)
}

fn trimmed(expr: &str, start: usize, end: usize) -> Result<(usize, &str), HostlistError> {
    let raw = &expr[start..end];
    let lead = raw.len() - raw.trim_start().len();
    let term = raw.trim();
    if term.is_empty() {
        return Err(HostlistError::Empty { at: start + lead });
    }
    Ok((start + lead, term))
}

/// One part of a term: literal text or a bracket group of
/// `(lo, hi, width)` ranges.
enum Seg<'a> {
    Lit(&'a str),
    Set(Vec<(u64, u64, usize)>),
}

fn expand_term(term: &str, at: usize, out: &mut Vec<String>) -> Result<(), HostlistError> {
    let segs = parse_term(term, at)?;
    let too_many = HostlistError::TooMany { at };
    let count = term_count(&segs).ok_or_else(|| too_many.clone())?;
    let total = u64::try_from(out.len())
        .ok()
        .and_then(|held| held.checked_add(count))
        .ok_or_else(|| too_many.clone())?;
    if total > HOSTS_MAX as u64 {
        return Err(too_many);
    }
    // Below HOSTS_MAX, so it fits usize.
    out.reserve(usize::try_from(count).map_err(|_| too_many)?);
    let mut cur = String::with_capacity(term.len() + 8);
    generate(&segs, &mut cur, out);
    Ok(())
}

fn generate(segs: &[Seg<'_>], cur: &mut String, out: &mut Vec<String>) {
    let Some((first, rest)) = segs.split_first() else {
        out.push(cur.clone());
        return;
    };
    let len = cur.len();
    match first {
        Seg::Lit(s) => {
            cur.push_str(s);
            generate(rest, cur, out);
        }
        Seg::Set(ranges) => {
            for &(lo, hi, width) in ranges {
                for v in lo..=hi {
                    let _ = write!(cur, "{v:0width$}");
                    generate(rest, cur, out);
                    cur.truncate(len);
                }
            }
        }
    }
    cur.truncate(len);
}

fn parse_term(term: &str, at: usize) -> Result<Vec<Seg<'_>>, HostlistError> {
    let mut segs = Vec::new();
    let mut rest = term;
    let mut offset = at;
    let mut brackets = 0;
    while !rest.is_empty() {
        if let Some(inner) = rest.strip_prefix('[') {
            brackets += 1;
            if brackets > BRACKETS_MAX {
                return Err(HostlistError::TooManyBrackets { at });
            }
            // split_terms checked that every `[` has its `]`.
            let close = inner.find(']').unwrap_or(inner.len());
            segs.push(Seg::Set(parse_set(&inner[..close], offset + 1)?));
            let used = close + 2;
            rest = &rest[used.min(rest.len())..];
            offset += used;
        } else {
            let end = rest.find('[').unwrap_or(rest.len());
            let lit = &rest[..end];
            if let Some((i, ch)) = lit.char_indices().find(|&(_, c)| !is_name_char(c)) {
                return Err(HostlistError::BadChar { at: offset + i, ch });
            }
            segs.push(Seg::Lit(lit));
            rest = &rest[end..];
            offset += end;
        }
    }
    Ok(segs)
}

fn parse_set(inner: &str, at: usize) -> Result<Vec<(u64, u64, usize)>, HostlistError> {
    let mut ranges = Vec::new();
    let mut offset = at;
    for item in inner.split(',') {
        let bad = || HostlistError::BadRange {
            at: offset,
            text: item.to_string(),
        };
        let (lo_s, hi_s) = item.split_once('-').unwrap_or((item, item));
        let number = |s: &str| {
            let ok =
                !s.is_empty() && s.len() <= DIGITS_MAX && s.bytes().all(|b| b.is_ascii_digit());
            if ok { s.parse::<u64>().ok() } else { None }
        };
        let lo = number(lo_s).ok_or_else(bad)?;
        let hi = number(hi_s).ok_or_else(bad)?;
        if hi < lo {
            return Err(HostlistError::Reversed {
                at: offset,
                lo: lo_s.to_string(),
                hi: hi_s.to_string(),
            });
        }
        ranges.push((lo, hi, lo_s.len()));
        offset += item.len() + 1;
    }
    Ok(ranges)
}

/// Splits a name into prefix, its last run of digits (at most 18) and
/// suffix.
fn split_number(name: &str) -> Option<(&str, &str, &str)> {
    let end = name.rfind(|c: char| c.is_ascii_digit())? + 1;
    let start = name[..end]
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    let digits = &name[start..end];
    (digits.len() <= DIGITS_MAX).then(|| (&name[..start], digits, &name[end..]))
}

fn decimal_width(v: u64) -> usize {
    v.checked_ilog10().map_or(1, |l| l as usize + 1)
}

/// Compresses host names into a hostlist expression, keeping their order:
/// `["n01","n02","n03","x","n05"]` gives `n[01-03],x,n05`.
///
/// Names must be valid host names (see the module doc); sort them first for
/// the shortest result.
pub fn compress(names: &[String]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < names.len() {
        if !out.is_empty() {
            out.push(',');
        }
        let Some((prefix, _, suffix)) = split_number(&names[i]) else {
            out.push_str(&names[i]);
            i += 1;
            continue;
        };
        let mut ranges: Vec<(u64, u64, usize)> = Vec::new();
        let mut j = i;
        while let Some((p, digits, s)) = names.get(j).and_then(|n| split_number(n)) {
            if p != prefix || s != suffix {
                break;
            }
            let v: u64 = digits.parse().unwrap_or(0);
            match ranges.last_mut() {
                // `v` continues the range if it prints the same at its width.
                Some(last)
                    if last.1.checked_add(1) == Some(v)
                        && digits.len() == last.2.max(decimal_width(v)) =>
                {
                    last.1 = v;
                }
                _ => ranges.push((v, v, digits.len())),
            }
            j += 1;
        }
        if j == i + 1 {
            out.push_str(&names[i]);
        } else {
            out.push_str(prefix);
            out.push('[');
            for (k, &(lo, hi, w)) in ranges.iter().enumerate() {
                if k > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{lo:0w$}");
                if hi > lo {
                    let _ = write!(out, "-{hi:0w$}");
                }
            }
            out.push(']');
            out.push_str(suffix);
        }
        i = j;
    }
    out
}
