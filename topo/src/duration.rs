//! The one duration grammar of the project: topology timers, command-line
//! flags and reports all write durations the same way.
//!
//! A duration is a decimal number and a unit, with nothing between them:
//! `100us`, `250ms`, `1s`, `1.5s`, `2m`, `1h`. Units are `us`, `ms`, `s`,
//! `m` and `h`; a bare number (`2`) is an error, because `2` could mean
//! seconds or milliseconds. At most [`MAX`] (24 h). Values are exact to the
//! nanosecond: no floating point is involved.
//!
//! - [`parse`]: text to [`Duration`]; accepts zero (callers that refuse
//!   zero say so in their own words, at their own position).
//! - [`parse_flag`]: the same grammar for command-line flags (a clap
//!   `value_parser`); refuses zero.
//! - [`format`]: [`Duration`] to text in the largest exact unit; [`parse`]
//!   reads it back to the same value.
//!
//! ```
//! use std::time::Duration;
//! use topo::duration;
//!
//! assert_eq!(duration::parse("1.5s"), Ok(Duration::from_millis(1500)));
//! assert_eq!(duration::format(Duration::from_secs(120)), "2m");
//! assert!(duration::parse("2").is_err());
//! assert!(duration::parse_flag("0s").is_err());
//! ```

use std::time::Duration;

/// The longest duration accepted.
pub const MAX: Duration = Duration::from_secs(24 * 3600);

/// Most digits before or after the decimal point (keeps the arithmetic in
/// `u128` far from overflow).
const DIGITS_MAX: usize = 12;

/// The units, largest first (the order [`format`] tries them in).
const UNITS_NS: [(&str, u128); 5] = [
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
];

/// What every error message offers as examples.
const EXAMPLES: &str = "250ms, 1s, 1.5s, 2m";

/// Parses a duration: a decimal number and a unit (`us`, `ms`, `s`, `m`,
/// `h`), at most [`MAX`]. Zero (`0s`) is accepted.
///
/// The error is a message in words that quotes `text`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = |why: String| {
        format!(
            "bad duration `{text}`: {why}; write a number and a unit (us, ms, s, m or h), e.g. {EXAMPLES}"
        )
    };
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(bad("no number".to_string()));
    }
    if unit.is_empty() {
        return Err(bad("no unit".to_string()));
    }
    let unit_ns = UNITS_NS
        .iter()
        .find(|(u, _)| *u == unit)
        .map(|(_, ns)| *ns)
        .ok_or_else(|| bad(format!("unknown unit `{unit}`")))?;
    let not_number = || bad(format!("`{number}` is not a decimal number"));
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let digits_ok = |s: &str| s.len() <= DIGITS_MAX && s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits_ok(whole) || !digits_ok(frac) || number.ends_with('.') {
        return Err(not_number());
    }
    let whole: u128 = whole.parse().map_err(|_| not_number())?;
    let mut ns = whole * unit_ns;
    if !frac.is_empty() {
        let scale = 10u128.pow(frac.len() as u32);
        let frac_value: u128 = frac.parse().map_err(|_| not_number())?;
        ns += frac_value * unit_ns / scale;
    }
    if ns > MAX.as_nanos() {
        return Err(format!("duration `{text}` is longer than 24h"));
    }
    Ok(Duration::from_nanos(ns as u64))
}

/// Parses a command-line flag's duration: the grammar of [`parse`], but
/// zero is refused (a zero interval or timeout is always a mistake on a
/// command line). Meant as a clap `value_parser`.
pub fn parse_flag(text: &str) -> Result<Duration, String> {
    let d = parse(text)?;
    if d.is_zero() {
        return Err(format!(
            "duration `{text}` is zero; give a positive one such as {EXAMPLES}"
        ));
    }
    Ok(d)
}

/// Writes a duration in the largest unit that keeps it exact (`1500ms`,
/// `2m`); a value finer than a microsecond is written in seconds with up
/// to nine decimals. [`parse`] reads the result back to the same value
/// (for durations up to [`MAX`]).
pub fn format(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".to_string();
    }
    for (unit, unit_ns) in UNITS_NS {
        if ns.is_multiple_of(unit_ns) {
            return format!("{}{unit}", ns / unit_ns);
        }
    }
    let text = format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000);
    format!("{}s", text.trim_end_matches('0'))
}
