//! What no request may carry, whatever the service: checked once where requests enter a service
//! (the [`ServiceHost`](crate::ServiceHost)), before any handler decides anything.
//!
//! - **Dates outside the years [`FIRST_YEAR`] to [`LAST_YEAR`].** Every date or date-time a
//!   request carries — in a body, a query string, a path, or as `occurred_at` — is refused with
//!   `date_out_of_range` when its year falls outside. chrono can represent years up to ±262,142,
//!   and a date near those ends makes the first `date + days` a handler computes overflow (a
//!   panic); no fact the collective records happened before 1900 (the oldest birth dates of the
//!   living are after it) or will happen after 2200 (use-by dates, plans and assessments run
//!   months or a few years ahead). Anything outside is a typing error, or an attack.
//! - **Invisible text controls.** A string holding a control character other than tab, line
//!   feed and carriage return (NUL...), or an explicit bidirectional formatting character
//!   (U+202A–U+202E, U+2066–U+2069: the overrides and isolates that make a label display other
//!   than it reads), is refused with `invalid_text`. Names, lot numbers, references, notes and
//!   addresses are printed on labels and statements and compared by people: text that shows
//!   other than what it holds has no place there. Implicit direction marks (U+200E, U+200F)
//!   stay allowed: right-to-left names need them.
//!
//! A date is recognised by its shape: a string that is exactly `[±]YYYY-MM-DD`, optionally
//! followed by a time (`T` or a space, then anything), with four or more year digits; a
//! `month` field shaped `[±]YYYY-MM`; a `year` field (a number, or digits as text). The
//! calendar validity of the date itself (a 30 February) is the handler's to check, with its
//! own code.

use chrono::{DateTime, Datelike, Utc};
use serde_json::Value;

use crate::ServiceError;

/// The first year a request may name.
pub const FIRST_YEAR: i32 = 1900;
/// The last year a request may name.
pub const LAST_YEAR: i32 = 2200;

/// How deep a request's JSON may nest before the walk stops looking (serde_json itself refuses
/// JSON deeper than 128 levels).
const MAX_DEPTH: usize = 256;

/// Refuses a request whose payload (or time) carries a year out of range or an invisible text
/// control; see the module's documentation.
pub fn check_request(payload: &Value, occurred_at: Option<DateTime<Utc>>) -> Result<(), ServiceError> {
    if let Some(at) = occurred_at {
        check_year(at.year(), "occurred_at")?;
    }
    check_value(payload, None, 0)
}

fn check_value(value: &Value, key: Option<&str>, depth: usize) -> Result<(), ServiceError> {
    if depth > MAX_DEPTH {
        return Err(ServiceError::validation("too_deep", "the request nests deeper than any request may"));
    }
    match value {
        Value::String(s) => {
            check_text(s, key)?;
            if let Some(year) = date_year(s) {
                check_year(year, key.unwrap_or("a date"))?;
            } else if key == Some("month") {
                if let Some(year) = month_year(s) {
                    check_year(year, "month")?;
                }
            } else if key == Some("year") {
                if let Ok(year) = s.trim().parse::<i64>() {
                    check_year(clamp_year(year), "year")?;
                }
            }
        }
        Value::Number(n) if key == Some("year") => {
            if let Some(year) = n.as_i64() {
                check_year(clamp_year(year), "year")?;
            }
        }
        Value::Array(items) => {
            for item in items {
                check_value(item, key, depth + 1)?;
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                check_text(k, Some("a field name"))?;
                check_value(v, Some(k), depth + 1)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn clamp_year(year: i64) -> i32 {
    year.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

fn check_year(year: i32, what: &str) -> Result<(), ServiceError> {
    if (FIRST_YEAR..=LAST_YEAR).contains(&year) {
        return Ok(());
    }
    Err(ServiceError::validation(
        "date_out_of_range",
        format!("{what}: the year {year} is outside {FIRST_YEAR} to {LAST_YEAR}"),
    ))
}

/// Whether `c` may not appear in any text a request carries.
fn forbidden_char(c: char) -> bool {
    (c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn check_text(s: &str, key: Option<&str>) -> Result<(), ServiceError> {
    match s.chars().find(|c| forbidden_char(*c)) {
        None => Ok(()),
        Some(c) => Err(ServiceError::validation(
            "invalid_text",
            format!(
                "{}: the character U+{:04X} (a control or direction override) is not allowed",
                key.unwrap_or("text"),
                u32::from(c)
            ),
        )),
    }
}

/// The year of a string shaped like a date (`[±]YYYY-MM-DD`, then nothing, or a time).
fn date_year(s: &str) -> Option<i32> {
    let (year, rest) = leading_year(s)?;
    let rest = two_digits_after_dash(rest)?;
    let rest = two_digits_after_dash(rest)?;
    match rest.chars().next() {
        None | Some('T' | 't' | ' ') => Some(year),
        _ => None,
    }
}

/// The year of a string shaped exactly like a month (`[±]YYYY-MM`).
fn month_year(s: &str) -> Option<i32> {
    let (year, rest) = leading_year(s)?;
    two_digits_after_dash(rest).filter(|rest| rest.is_empty()).map(|_| year)
}

/// An optional sign and four or more digits; the year (saturated) and what follows.
fn leading_year(s: &str) -> Option<(i32, &str)> {
    let (negative, digits) = match s.as_bytes().first()? {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    let end = digits.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(digits.len());
    if end < 4 {
        return None;
    }
    // More digits than an i32 holds is out of range all the same.
    let magnitude = digits[..end].parse::<i64>().unwrap_or(i64::MAX);
    let year = clamp_year(if negative { -magnitude } else { magnitude });
    Some((year, &digits[end..]))
}

fn two_digits_after_dash(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    (b.len() >= 3 && b[0] == b'-' && b[1].is_ascii_digit() && b[2].is_ascii_digit()).then(|| &s[3..])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn code(payload: Value) -> Option<String> {
        check_request(&payload, None).err().map(|e| e.code)
    }

    #[test]
    fn dates_far_in_the_past_or_future_are_refused_wherever_they_are() {
        assert_eq!(code(json!({"assessed_on": "+262142-12-31"})).as_deref(), Some("date_out_of_range"));
        assert_eq!(code(json!({"lines": [{"date": "0000-00-00"}]})).as_deref(), Some("date_out_of_range"));
        assert_eq!(code(json!({"received_at": "1899-12-31T23:00:00Z"})).as_deref(), Some("date_out_of_range"));
        assert_eq!(code(json!({"date": "-0001-01-01"})).as_deref(), Some("date_out_of_range"));
        assert_eq!(code(json!({"to": "99999999999999999999-01-01"})).as_deref(), Some("date_out_of_range"));
        assert_eq!(code(json!({"month": "2201-01"})).as_deref(), Some("date_out_of_range"));
        assert_eq!(code(json!({"year": "12000"})).as_deref(), Some("date_out_of_range"));
        assert_eq!(code(json!({"year": 1200})).as_deref(), Some("date_out_of_range"));
        let far = "+262142-12-31T00:00:00Z".parse::<DateTime<Utc>>().ok();
        if let Some(far) = far {
            assert_eq!(check_request(&json!({}), Some(far)).unwrap_err().code, "date_out_of_range");
        }
    }

    #[test]
    fn dates_in_range_and_text_that_only_looks_like_one_pass() {
        assert_eq!(code(json!({"date": "2026-02-30", "received_at": "2026-11-23T09:00:00+01:00"})), None);
        assert_eq!(code(json!({"from": "1900-01-01", "to": "2200-12-31"})), None);
        assert_eq!(code(json!({"lot_number": "1234-56", "reference": "0001-01-01x", "month": "2026-11"})), None);
        assert_eq!(code(json!({"quantity": 12000, "note": "year 12000"})), None);
    }

    #[test]
    fn invisible_controls_are_refused_in_values_and_names() {
        assert_eq!(code(json!({"name": "a\u{0}b"})).as_deref(), Some("invalid_text"));
        assert_eq!(code(json!({"reason": "txt.exe\u{202E}gpj"})).as_deref(), Some("invalid_text"));
        assert_eq!(code(json!({"x\u{2066}": 1})).as_deref(), Some("invalid_text"));
        assert_eq!(code(json!({"csv": "a;b\r\nc;d\n", "name": "\u{200F}سلمى"})), None);
    }
}
