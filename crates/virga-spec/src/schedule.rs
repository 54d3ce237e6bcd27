//! Schedule expressions, as EventBridge writes them: `rate(5 minutes)` and
//! `cron(minutes hours day-of-month month day-of-week year)`, in UTC.
//!
//! Which day a `cron(...)` fires on is the `croner` crate's to work out
//! (`L`, `W`, `#`, years, weekdays numbered 1-7 = SUN-SAT in its Quartz
//! mode): it passes every example of EventBridge's documentation (see the
//! tests). What is EventBridge's own stays here: `rate(...)`, the fields and
//! characters each field takes, value ranges named per field (croner's
//! messages do not say which field), `?` in exactly one of day-of-month and
//! day-of-week, years 1970-2199, and a lone `L` in day-of-week (Saturday;
//! croner takes it but never fires).

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};

/// The longest period of a rate: longer ones would never fire, and would
/// overflow the clocks that time them.
const MAX_RATE_MS: u64 = 36_500 * 86_400_000;

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// Every so many milliseconds, from when the schedule starts.
    Rate {
        every_ms: u64,
    },
    Cron(Cron),
}

/// A parsed `cron(...)` expression (boxed: croner's is some 300 bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct Cron(Box<croner::Cron>);

/// Why an expression was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("schedule {expression:?}: {message}; use rate(N minutes|hours|days|seconds) or cron(min hour day month weekday year)")]
pub struct ScheduleError {
    pub expression: String,
    pub message: String,
}

/// What one cron field takes, as EventBridge documents it.
struct FieldRule {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names standing for `min`, `min + 1`, ...
    names: &'static [&'static str],
    /// The characters besides digits (and names) the field allows.
    special: &'static str,
    /// The letter a value may end in: `15W` (nearest weekday), `6L` (last
    /// Friday of the month).
    suffix: Option<char>,
}

const MONTHS: &[&str] = &[
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

const FIELDS: [FieldRule; 6] = [
    FieldRule {
        name: "minutes",
        min: 0,
        max: 59,
        names: &[],
        special: ",-*/",
        suffix: None,
    },
    FieldRule {
        name: "hours",
        min: 0,
        max: 23,
        names: &[],
        special: ",-*/",
        suffix: None,
    },
    FieldRule {
        name: "day-of-month",
        min: 1,
        max: 31,
        names: &[],
        special: ",-*?/LW",
        suffix: Some('W'),
    },
    FieldRule {
        name: "month",
        min: 1,
        max: 12,
        names: MONTHS,
        special: ",-*/",
        suffix: None,
    },
    FieldRule {
        name: "day-of-week",
        min: 1,
        max: 7,
        names: DAYS,
        special: ",-*?L#",
        suffix: Some('L'),
    },
    FieldRule {
        name: "year",
        min: 1970,
        max: 2199,
        names: &[],
        special: ",-*/",
        suffix: None,
    },
];

impl FieldRule {
    /// Checks `text` against the rule, saying which field is wrong and how.
    fn check(&self, text: &str) -> Result<(), String> {
        let name = self.name;
        if let Some(c) = text.chars().find(|&c| {
            !(c.is_ascii_digit()
                || self.special.contains(c)
                || (!self.names.is_empty() && c.is_ascii_alphabetic()))
        }) {
            let allowed: Vec<String> = self.special.chars().map(String::from).collect();
            return Err(format!(
                "{name}: {c:?} is not allowed; use numbers{} and {}",
                if self.names.is_empty() { "" } else { ", names" },
                allowed.join(" ")
            ));
        }
        if text.contains('?') && text != "?" {
            return Err(format!("{name}: ? stands alone, as the whole field"));
        }
        for part in text.split(',') {
            let (base, step) = match part.split_once('/') {
                Some((base, step)) => (base, Some(step)),
                None => (part, None),
            };
            if let Some(step) = step {
                if !step.parse::<u32>().is_ok_and(|s| s > 0) {
                    return Err(format!(
                        "{name}: bad step in {part:?}: use a whole number from 1"
                    ));
                }
            }
            if base == "*" || base == "?" {
                continue;
            }
            let base = match base.split_once('#') {
                Some((day, nth)) => {
                    if !nth.parse::<u32>().is_ok_and(|n| (1..=5).contains(&n)) {
                        return Err(format!(
                            "{name}: {part:?}: # takes 1 to 5 (the nth such weekday of the month)"
                        ));
                    }
                    day
                }
                None => base,
            };
            match base.split_once('-') {
                Some((lo, hi)) => {
                    if let (Some(lo), Some(hi)) = (self.value(lo, part)?, self.value(hi, part)?) {
                        if lo > hi {
                            return Err(format!("{name}: range {base:?} runs backwards"));
                        }
                    }
                }
                None => {
                    self.value(base, part)?;
                }
            }
        }
        Ok(())
    }

    /// The number `v` stands for (a name or a number, with its `L` or `W`
    /// taken off), or `None` for a bare `L` or `LW`.
    fn value(&self, v: &str, part: &str) -> Result<Option<u32>, String> {
        let name = self.name;
        if self.special.contains('L') && (v == "L" || (v == "LW" && self.suffix == Some('W'))) {
            return Ok(None);
        }
        let v = self.suffix.and_then(|s| v.strip_suffix(s)).unwrap_or(v);
        if let Some(i) = self.names.iter().position(|n| n.eq_ignore_ascii_case(v)) {
            return Ok(Some(i as u32 + self.min));
        }
        let n: u32 = v.parse().map_err(|_| {
            if self.names.is_empty() {
                format!("{name}: {v:?} in {part:?} is not a number")
            } else {
                format!(
                    "{name}: {v:?} in {part:?} is not a number or one of {}",
                    self.names.join(" ")
                )
            }
        })?;
        if n < self.min || n > self.max {
            return Err(format!(
                "{name}: {n} is outside {}..={}",
                self.min, self.max
            ));
        }
        Ok(Some(n))
    }
}

impl Schedule {
    pub fn parse(expression: &str) -> Result<Schedule, ScheduleError> {
        let err = |message: String| ScheduleError {
            expression: expression.to_string(),
            message,
        };
        let e = expression.trim();
        if let Some(inner) = e.strip_prefix("rate(").and_then(|r| r.strip_suffix(')')) {
            let mut parts = inner.split_whitespace();
            let n: u64 = parts
                .next()
                .and_then(|n| n.parse().ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| err("rate needs a positive whole number".into()))?;
            let unit_ms = match parts.next() {
                Some("second" | "seconds") => 1_000,
                Some("minute" | "minutes") => 60_000,
                Some("hour" | "hours") => 3_600_000,
                Some("day" | "days") => 86_400_000,
                other => return Err(err(format!("unknown unit {other:?}"))),
            };
            if parts.next().is_some() {
                return Err(err("rate takes a number and a unit".into()));
            }
            let every_ms = n
                .checked_mul(unit_ms)
                .filter(|ms| *ms <= MAX_RATE_MS)
                .ok_or_else(|| err("a rate is at most 36500 days (a century)".into()))?;
            return Ok(Schedule::Rate { every_ms });
        }
        if let Some(inner) = e.strip_prefix("cron(").and_then(|r| r.strip_suffix(')')) {
            return Cron::parse(inner).map(Schedule::Cron).map_err(err);
        }
        Err(err("not a rate(...) or cron(...) expression".into()))
    }

    /// The first firing strictly after `after` (for a rate: one period after it).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Rate { every_ms } => after
                .checked_add_signed(Duration::try_milliseconds(i64::try_from(*every_ms).ok()?)?),
            Schedule::Cron(c) => c.next_after(after),
        }
    }
}

impl Cron {
    /// Parses the fields inside `cron(...)`.
    fn parse(inner: &str) -> Result<Cron, String> {
        let f: Vec<&str> = inner.split_whitespace().collect();
        if !(f.len() == 5 || f.len() == 6) {
            return Err(format!(
                "cron takes 6 fields (5 without year), got {}",
                f.len()
            ));
        }
        for (rule, text) in FIELDS.iter().zip(&f) {
            rule.check(text)?;
        }
        match (f[2] == "?", f[4] == "?") {
            (true, false) | (false, true) => {}
            (true, true) => {
                return Err("day-of-month and day-of-week cannot both be ?: put * in day-of-month for every day, e.g. cron(0 12 * * ? *)".into())
            }
            (false, false) => {
                return Err("day-of-month and day-of-week cannot both be set: put ? in one of them, e.g. cron(0 12 * * ? *) or cron(0 18 ? * MON-FRI *)".into())
            }
        }
        // EventBridge's lone `L` in day-of-week is the last day of the week.
        let weekday: Vec<&str> = f[4]
            .split(',')
            .map(|d| if d == "L" { "SAT" } else { d })
            .collect();
        let weekday = weekday.join(",");
        // croner counts seconds first; EventBridge fires on the minute.
        let pattern = format!(
            "0 {} {} {} {} {} {}",
            f[0],
            f[1],
            f[2],
            f[3],
            weekday,
            f.get(5).unwrap_or(&"*")
        );
        CronParser::builder()
            .seconds(Seconds::Required)
            .year(Year::Required)
            // Weekdays 1-7 = SUN-SAT, as EventBridge numbers them.
            .alternative_weekdays(true)
            // `0/15`: start and step, as EventBridge writes them.
            .sloppy_ranges(true)
            .build()
            .parse(&pattern)
            .map(|c| Cron(Box::new(c)))
            .map_err(|e| e.to_string())
    }

    fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.0.find_next_occurrence(&after, false).ok()
    }
}

/// A schedule as a manifest wrote it, parsed once (at deploy): it serialises
/// back to the very text it was read from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ScheduleExpression {
    text: String,
    schedule: Schedule,
}

impl ScheduleExpression {
    pub fn parse(text: &str) -> Result<ScheduleExpression, ScheduleError> {
        Ok(ScheduleExpression {
            schedule: Schedule::parse(text)?,
            text: text.to_string(),
        })
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// The same text always parses to the same schedule.
impl PartialEq for ScheduleExpression {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl fmt::Display for ScheduleExpression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl TryFrom<String> for ScheduleExpression {
    type Error = ScheduleError;

    fn try_from(text: String) -> Result<Self, ScheduleError> {
        ScheduleExpression::parse(&text)
    }
}

impl From<ScheduleExpression> for String {
    fn from(e: ScheduleExpression) -> String {
        e.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn rates_parse_in_every_unit() {
        assert_eq!(
            Schedule::parse("rate(5 minutes)").unwrap(),
            Schedule::Rate { every_ms: 300_000 }
        );
        assert_eq!(
            Schedule::parse("rate(1 hour)").unwrap(),
            Schedule::Rate {
                every_ms: 3_600_000
            }
        );
        assert_eq!(
            Schedule::parse("rate(2 seconds)").unwrap(),
            Schedule::Rate { every_ms: 2_000 }
        );
        assert!(Schedule::parse("rate(0 minutes)").is_err());
        assert!(Schedule::parse("rate(5 fortnights)").is_err());
        assert!(Schedule::parse("every 5 minutes")
            .unwrap_err()
            .to_string()
            .contains("rate("));
    }

    #[test]
    fn rates_past_a_century_are_refused_not_overflowed() {
        assert_eq!(
            Schedule::parse("rate(36500 days)").unwrap(),
            Schedule::Rate {
                every_ms: 36_500 * 86_400_000
            }
        );
        for long in ["rate(36501 days)", "rate(18446744073709551615 seconds)"] {
            let e = Schedule::parse(long).unwrap_err();
            assert!(e.message.contains("36500 days"), "{e}");
        }
        let far = Schedule::Rate { every_ms: u64::MAX };
        assert_eq!(far.next_after(at("2026-11-23T10:30:00Z")), None);
    }

    #[test]
    fn cron_finds_the_next_firing() {
        // Every day at 12:00 UTC.
        let noon = Schedule::parse("cron(0 12 * * ? *)").unwrap();
        assert_eq!(
            noon.next_after(at("2026-11-23T10:30:00Z")),
            Some(at("2026-11-23T12:00:00Z"))
        );
        assert_eq!(
            noon.next_after(at("2026-11-23T12:00:00Z")),
            Some(at("2026-11-24T12:00:00Z"))
        );
        // Every 15 minutes.
        let q = Schedule::parse("cron(0/15 * * * ? *)").unwrap();
        assert_eq!(
            q.next_after(at("2026-11-23T10:16:10Z")),
            Some(at("2026-11-23T10:30:00Z"))
        );
        // 18:00 Monday to Friday (2026-11-28 is a Saturday).
        let weekdays = Schedule::parse("cron(0 18 ? * MON-FRI *)").unwrap();
        assert_eq!(
            weekdays.next_after(at("2026-11-27T19:00:00Z")),
            Some(at("2026-11-30T18:00:00Z"))
        );
        // 08:00 on the first day of every month.
        let first = Schedule::parse("cron(0 8 1 * ? *)").unwrap();
        assert_eq!(
            first.next_after(at("2026-11-23T00:00:00Z")),
            Some(at("2026-12-01T08:00:00Z"))
        );
        // A year that has passed never fires.
        assert_eq!(
            Schedule::parse("cron(0 8 1 1 ? 2020)")
                .unwrap()
                .next_after(at("2026-01-01T00:00:00Z")),
            None
        );
    }

    #[test]
    fn bad_cron_fields_are_explained() {
        assert!(Schedule::parse("cron(61 * * * ? *)")
            .unwrap_err()
            .message
            .contains("0..=59"));
        assert!(Schedule::parse("cron(* * *)")
            .unwrap_err()
            .message
            .contains("6 fields"));
        assert!(Schedule::parse("cron(5-1 * * * ? *)").is_err());
    }

    /// The examples of EventBridge's cron documentation (and its `L`, `W`
    /// and `#` wildcards), each with the firing AWS gives it.
    /// 2026-11-23 is a Monday.
    #[test]
    fn eventbridge_examples_fire_when_aws_says() {
        for (expression, after, next) in [
            // 10:00 every day.
            (
                "cron(0 10 * * ? *)",
                "2026-11-23T10:30:00Z",
                "2026-11-24T10:00:00Z",
            ),
            // 12:15 every day.
            (
                "cron(15 12 * * ? *)",
                "2026-11-23T10:30:00Z",
                "2026-11-23T12:15:00Z",
            ),
            // 18:00 Monday to Friday.
            (
                "cron(0 18 ? * MON-FRI *)",
                "2026-11-27T19:00:00Z",
                "2026-11-30T18:00:00Z",
            ),
            // 08:00 on the first day of the month.
            (
                "cron(0 8 1 * ? *)",
                "2026-11-23T10:30:00Z",
                "2026-12-01T08:00:00Z",
            ),
            // Every 15 minutes.
            (
                "cron(0/15 * * * ? *)",
                "2026-11-23T10:16:10Z",
                "2026-11-23T10:30:00Z",
            ),
            // Every 10 minutes, Monday to Friday (from a Saturday).
            (
                "cron(0/10 * ? * MON-FRI *)",
                "2026-11-28T10:00:00Z",
                "2026-11-30T00:00:00Z",
            ),
            // Every 5 minutes from 08:00 to 17:55, Monday to Friday.
            (
                "cron(0/5 8-17 ? * MON-FRI *)",
                "2026-11-23T17:52:00Z",
                "2026-11-23T17:55:00Z",
            ),
            (
                "cron(0/5 8-17 ? * MON-FRI *)",
                "2026-11-27T17:55:00Z",
                "2026-11-30T08:00:00Z",
            ),
            // 09:00 on the first Monday of the month.
            (
                "cron(0 9 ? * 2#1 *)",
                "2026-11-23T10:30:00Z",
                "2026-12-07T09:00:00Z",
            ),
            // The second Tuesday.
            (
                "cron(0 9 ? * 3#2 *)",
                "2026-11-23T10:30:00Z",
                "2026-12-08T09:00:00Z",
            ),
            // The last day of the month, leap years included.
            (
                "cron(0 0 L * ? *)",
                "2026-11-23T10:30:00Z",
                "2026-11-30T00:00:00Z",
            ),
            (
                "cron(0 0 L * ? *)",
                "2027-02-01T00:00:00Z",
                "2027-02-28T00:00:00Z",
            ),
            (
                "cron(0 0 L * ? *)",
                "2028-02-01T00:00:00Z",
                "2028-02-29T00:00:00Z",
            ),
            // The last Friday of the month.
            (
                "cron(0 0 ? * 6L *)",
                "2026-11-23T10:30:00Z",
                "2026-11-27T00:00:00Z",
            ),
            // L alone in day-of-week: the last day of the week, Saturday.
            (
                "cron(0 0 ? * L *)",
                "2026-11-23T10:30:00Z",
                "2026-11-28T00:00:00Z",
            ),
            // The weekday nearest the 15th: a Sunday moves to Monday, a
            // Saturday to Friday; never into another month.
            (
                "cron(0 0 15W * ? *)",
                "2026-11-01T00:00:00Z",
                "2026-11-16T00:00:00Z",
            ),
            (
                "cron(0 0 15W * ? *)",
                "2026-08-01T00:00:00Z",
                "2026-08-14T00:00:00Z",
            ),
            (
                "cron(0 0 15W * ? *)",
                "2026-12-01T00:00:00Z",
                "2026-12-15T00:00:00Z",
            ),
            (
                "cron(0 0 1W * ? *)",
                "2026-07-20T00:00:00Z",
                "2026-08-03T00:00:00Z",
            ),
            // Weekdays 1-7 are SUN-SAT.
            (
                "cron(0 0 ? * 1 *)",
                "2026-11-23T10:30:00Z",
                "2026-11-29T00:00:00Z",
            ),
            (
                "cron(0 0 ? * 7 *)",
                "2026-11-23T10:30:00Z",
                "2026-11-28T00:00:00Z",
            ),
            (
                "cron(0 0 ? * SUN *)",
                "2026-11-23T10:30:00Z",
                "2026-11-29T00:00:00Z",
            ),
            // Years.
            (
                "cron(0 12 ? * MON 2027)",
                "2026-11-23T10:30:00Z",
                "2027-01-04T12:00:00Z",
            ),
            (
                "cron(0 0 1 1 ? 2028-2030)",
                "2026-11-23T10:30:00Z",
                "2028-01-01T00:00:00Z",
            ),
            (
                "cron(0 0 1 JAN,JUL ? *)",
                "2026-11-23T10:30:00Z",
                "2027-01-01T00:00:00Z",
            ),
        ] {
            let s = Schedule::parse(expression).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                s.next_after(at(after)),
                Some(at(next)),
                "{expression} after {after}"
            );
        }
    }

    #[test]
    fn expressions_serialise_as_written() {
        for text in [
            "rate(60 minutes)",
            "cron(0 18 ? * mon-fri *)",
            "rate(1 hour) ",
        ] {
            let e = ScheduleExpression::parse(text).unwrap();
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(json, serde_json::to_string(text).unwrap());
            assert_eq!(
                serde_json::from_str::<ScheduleExpression>(&json).unwrap(),
                e
            );
        }
        let refused = serde_json::from_str::<ScheduleExpression>("\"often\"").unwrap_err();
        assert!(refused.to_string().contains("rate("), "{refused}");
    }

    #[test]
    fn eventbridge_rules_are_explained() {
        for (expression, says) in [
            ("cron(0 12 * * * *)", "put ? in one of them"),
            ("cron(0 12 ? * ? *)", "cannot both be ?"),
            ("cron(0 12 1 * MON *)", "put ? in one of them"),
            ("cron(0 12 ? * 0 *)", "day-of-week: 0 is outside 1..=7"),
            ("cron(0 12 ? * MON/2 *)", "day-of-week: '/' is not allowed"),
            ("cron(0 12 ? * 2#6 *)", "# takes 1 to 5"),
            ("cron(0 12 * * ? 1969)", "year: 1969 is outside 1970..=2199"),
            ("cron(0 12 * FOO ? *)", "month: \"FOO\""),
            ("cron(0 25 * * ? *)", "hours: 25 is outside 0..=23"),
            ("cron(0 12 1L * ? *)", "day-of-month"),
            ("cron(0/0 12 * * ? *)", "minutes: bad step"),
        ] {
            let e = Schedule::parse(expression).unwrap_err();
            assert!(e.message.contains(says), "{expression}: {e}");
        }
    }
}
