//! Schedule expressions, as EventBridge writes them: `rate(5 minutes)` and
//! `cron(minutes hours day-of-month month day-of-week year)`, in UTC.

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc};

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// Every so many milliseconds, from when the schedule starts.
    Rate {
        every_ms: u64,
    },
    Cron(Cron),
}

/// One cron field: the values it allows.
#[derive(Debug, Clone, PartialEq)]
struct Field(Vec<bool>);

impl Field {
    fn allows(&self, v: u32) -> bool {
        self.0.get(v as usize).copied().unwrap_or(false)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cron {
    minutes: Field,
    hours: Field,
    days: Field,
    months: Field,
    weekdays: Field,
    years: Option<Field>,
    /// `?` or `*` in day-of-month / day-of-week: that field does not restrict.
    any_day: bool,
    any_weekday: bool,
}

/// Why an expression was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("schedule {expression:?}: {message}; use rate(N minutes|hours|days|seconds) or cron(min hour day month weekday year)")]
pub struct ScheduleError {
    pub expression: String,
    pub message: String,
}

fn parse_field(text: &str, min: u32, max: u32, names: &[&str]) -> Result<Field, String> {
    let mut allowed = vec![false; max as usize + 1];
    let value = |s: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(i as u32 + min);
        }
        let v: u32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
        if v < min || v > max {
            return Err(format!("{v} is outside {min}..={max}"));
        }
        Ok(v)
    };
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .map_err(|_| format!("bad step in {part:?}"))?,
            ),
            None => (part, 1),
        };
        if step == 0 {
            return Err(format!("step 0 in {part:?}"));
        }
        let (lo, hi) = match range {
            "*" | "?" => (min, max),
            r => match r.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                None if part.contains('/') => (value(r)?, max),
                None => {
                    let v = value(r)?;
                    (v, v)
                }
            },
        };
        if lo > hi {
            return Err(format!("range {range:?} runs backwards"));
        }
        let mut v = lo;
        while v <= hi {
            allowed[v as usize] = true;
            v += step;
        }
    }
    Ok(Field(allowed))
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
            return Ok(Schedule::Rate {
                every_ms: n * unit_ms,
            });
        }
        if let Some(inner) = e.strip_prefix("cron(").and_then(|r| r.strip_suffix(')')) {
            let f: Vec<&str> = inner.split_whitespace().collect();
            if !(f.len() == 5 || f.len() == 6) {
                return Err(err(format!(
                    "cron takes 6 fields (5 without year), got {}",
                    f.len()
                )));
            }
            const MONTHS: &[&str] = &[
                "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
            ];
            const DAYS: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
            let any = |s: &str| s == "?" || s == "*";
            return Ok(Schedule::Cron(Cron {
                minutes: parse_field(f[0], 0, 59, &[]).map_err(&err)?,
                hours: parse_field(f[1], 0, 23, &[]).map_err(&err)?,
                days: parse_field(f[2], 1, 31, &[]).map_err(&err)?,
                months: parse_field(f[3], 1, 12, MONTHS).map_err(&err)?,
                // EventBridge numbers weekdays 1 (SUN) to 7 (SAT).
                weekdays: parse_field(f[4], 1, 7, DAYS).map_err(&err)?,
                years: match f.get(5) {
                    Some(y) if !any(y) => Some(parse_field(y, 1970, 2199, &[]).map_err(&err)?),
                    _ => None,
                },
                any_day: any(f[2]),
                any_weekday: any(f[4]),
            }));
        }
        Err(err("not a rate(...) or cron(...) expression".into()))
    }

    /// The first firing strictly after `after` (for a rate: one period after it).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Rate { every_ms } => Some(after + Duration::milliseconds(*every_ms as i64)),
            Schedule::Cron(c) => c.next_after(after),
        }
    }
}

impl Cron {
    fn matches_day(&self, t: &DateTime<Utc>) -> bool {
        let dom = self.days.allows(t.day());
        let dow = self.weekdays.allows(t.weekday().num_days_from_sunday() + 1);
        match (self.any_day, self.any_weekday) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            (false, false) => dom || dow,
        }
    }

    fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = after.with_second(0)?.with_nanosecond(0)? + Duration::minutes(1);
        let mut t = start;
        // Whole days are skipped when the day cannot match: at most a few
        // thousand steps to search five years ahead.
        let limit = start + Duration::days(5 * 366);
        while t < limit {
            let year_ok = self
                .years
                .as_ref()
                .is_none_or(|y| y.allows(t.year() as u32));
            if !year_ok || !self.months.allows(t.month()) || !self.matches_day(&t) {
                let next_day = Utc
                    .with_ymd_and_hms(t.year(), t.month(), t.day(), 0, 0, 0)
                    .single()?
                    + Duration::days(1);
                t = next_day;
                continue;
            }
            if !self.hours.allows(t.hour()) {
                t = t.with_minute(0)? + Duration::hours(1);
                continue;
            }
            if self.minutes.allows(t.minute()) {
                return Some(t);
            }
            t += Duration::minutes(1);
        }
        None
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
}
