//! Cron expressions: standard 5 fields (minute hour day-of-month month
//! day-of-week) or 6 with seconds first; `*`, lists, ranges, steps, month
//! and weekday names. Errors name the field that is wrong.
//!
//! Day-of-month and day-of-week follow cron's rule: when both are
//! restricted, a time matches if either does.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use crate::{Error, Result};

#[derive(Debug, Clone, Copy)]
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const SECOND: Field = Field {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
};
const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
};
const WEEKDAY: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
};

/// A set of allowed values as a bit mask (values 0..=63).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Set {
    bits: u64,
    star: bool,
}

impl Set {
    fn has(&self, v: u32) -> bool {
        self.bits & (1 << v) != 0
    }
}

/// A parsed cron schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    source: String,
    seconds: Set,
    minutes: Set,
    hours: Set,
    days: Set,
    months: Set,
    weekdays: Set,
}

fn value(field: &Field, text: &str) -> std::result::Result<u32, String> {
    let upper = text.to_ascii_uppercase();
    if let Some(i) = field.names.iter().position(|n| *n == upper) {
        return Ok(field.min + i as u32);
    }
    let v: u32 = text.parse().map_err(|_| {
        format!(
            "\"{text}\" is not a number{}",
            if field.names.is_empty() {
                String::new()
            } else {
                format!(" or a name ({})", field.names.join(", "))
            }
        )
    })?;
    if v < field.min || v > field.max {
        return Err(format!("{v} is out of range {}-{}", field.min, field.max));
    }
    Ok(v)
}

fn parse_field(field: &Field, text: &str) -> Result<Set> {
    let bad = |why: String| {
        Error::invalid(format!(
            "invalid cron {} field \"{text}\": {why}",
            field.name
        ))
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .map_err(|_| bad(format!("step \"{step}\" is not a number")))?;
                if step == 0 {
                    return Err(bad("a step of 0".into()));
                }
                (range, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (field.min, field.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(field, a).map_err(bad)?, value(field, b).map_err(bad)?);
            if a > b {
                return Err(bad(format!("range {a}-{b} runs backwards")));
            }
            (a, b)
        } else {
            let v = value(field, range).map_err(bad)?;
            // "5/15" means from 5 to the end, every 15.
            (v, if step > 1 { field.max } else { v })
        };
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    if field.name == WEEKDAY.name && bits & (1 << 7) != 0 {
        bits = (bits | 1) & !(1 << 7); // 7 is Sunday too
    }
    Ok(Set {
        bits,
        star: text == "*",
    })
}

impl FromStr for Cron {
    type Err = Error;

    fn from_str(expr: &str) -> Result<Self> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let (seconds, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(Error::invalid(format!(
                    "invalid cron expression \"{expr}\": {n} fields; use 5 (minute hour day-of-month month day-of-week) or 6 (with seconds first)"
                )));
            }
        };
        Ok(Cron {
            source: expr.split_whitespace().collect::<Vec<_>>().join(" "),
            seconds: parse_field(&SECOND, seconds)?,
            minutes: parse_field(&MINUTE, rest[0])?,
            hours: parse_field(&HOUR, rest[1])?,
            days: parse_field(&DAY, rest[2])?,
            months: parse_field(&MONTH, rest[3])?,
            weekdays: parse_field(&WEEKDAY, rest[4])?,
        })
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Cron {
    fn day_matches(&self, date: NaiveDate) -> bool {
        let dom = self.days.has(date.day());
        let dow = self.weekdays.has(date.weekday().num_days_from_sunday());
        match (self.days.star, self.weekdays.star) {
            (true, true) => true,
            (false, true) => dom,
            (true, false) => dow,
            (false, false) => dom || dow,
        }
    }

    /// The first matching wall-clock time strictly after `after`, within
    /// about five years (an expression like "0 0 31 2 *" never matches).
    pub fn next_local(&self, after: NaiveDateTime) -> Option<NaiveDateTime> {
        let mut t = after.with_nanosecond(0)? + Duration::seconds(1);
        let limit = after + Duration::days(5 * 366);
        while t <= limit {
            if !self.months.has(t.month()) {
                let (y, m) = if t.month() == 12 {
                    (t.year() + 1, 1)
                } else {
                    (t.year(), t.month() + 1)
                };
                t = NaiveDate::from_ymd_opt(y, m, 1)?.and_hms_opt(0, 0, 0)?;
                continue;
            }
            if !self.day_matches(t.date()) {
                t = t.date().succ_opt()?.and_hms_opt(0, 0, 0)?;
                continue;
            }
            if !self.hours.has(t.hour()) {
                t = t.date().and_hms_opt(t.hour(), 0, 0)? + Duration::hours(1);
                continue;
            }
            if !self.minutes.has(t.minute()) {
                t = t.date().and_hms_opt(t.hour(), t.minute(), 0)? + Duration::minutes(1);
                continue;
            }
            if !self.seconds.has(t.second()) {
                t += Duration::seconds(1);
                continue;
            }
            return Some(t);
        }
        None
    }

    /// The first firing strictly after `after`, in time zone `tz`. A wall
    /// time skipped by a DST change is skipped; a repeated one fires once.
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let mut local = after.with_timezone(&tz).naive_local();
        for _ in 0..1000 {
            let next = self.next_local(local)?;
            match tz.from_local_datetime(&next).earliest() {
                Some(t) if t.with_timezone(&Utc) > after => return Some(t.with_timezone(&Utc)),
                _ => local = next,
            }
        }
        None
    }
}

/// Parses an IANA time zone name; `None` is UTC.
pub fn parse_timezone(name: Option<&str>) -> Result<Tz> {
    match name {
        None => Ok(Tz::UTC),
        Some(name) => name.parse::<Tz>().map_err(|_| {
            Error::invalid(format!(
                "unknown time zone \"{name}\" (use an IANA name such as Asia/Shanghai or UTC)"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(expr: &str, after: &str) -> String {
        let cron: Cron = expr.parse().unwrap();
        cron.next_after(at(after), Tz::UTC).unwrap().to_rfc3339()
    }

    #[test]
    fn five_and_six_fields() {
        assert_eq!(
            next("*/30 * * * *", "2026-11-21T10:05:00Z"),
            "2026-11-21T10:30:00+00:00"
        );
        assert_eq!(
            next("*/30 * * * *", "2026-11-21T10:30:00Z"),
            "2026-11-21T11:00:00+00:00"
        );
        assert_eq!(
            next("*/10 * * * * *", "2026-11-21T10:00:05Z"),
            "2026-11-21T10:00:10+00:00"
        );
        assert_eq!(
            next("0 9 * * MON-FRI", "2026-11-21T10:00:00Z"),
            "2026-11-23T09:00:00+00:00",
            "Saturday -> Monday"
        );
        assert_eq!(
            next("0 0 1 JAN *", "2026-11-21T00:00:00Z"),
            "2027-01-01T00:00:00+00:00"
        );
        assert_eq!(
            next("15,45 2-4 * * *", "2026-11-21T03:50:00Z"),
            "2026-11-21T04:15:00+00:00"
        );
        assert_eq!(
            next("0 12 29 2 *", "2026-03-01T00:00:00Z"),
            "2028-02-29T12:00:00+00:00"
        );
        assert_eq!(
            next("0 0 * * 7", "2026-11-21T00:00:00Z"),
            "2026-11-22T00:00:00+00:00",
            "7 is Sunday"
        );
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // The 1st of the month or any Friday.
        assert_eq!(
            next("0 0 1 * FRI", "2026-11-21T00:00:00Z"),
            "2026-11-27T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 1 * FRI", "2026-11-28T00:00:00Z"),
            "2026-12-01T00:00:00+00:00"
        );
    }

    #[test]
    fn time_zones() {
        let cron: Cron = "0 9 * * *".parse().unwrap();
        let tz = parse_timezone(Some("Asia/Shanghai")).unwrap();
        let t = cron.next_after(at("2026-11-21T00:00:00Z"), tz).unwrap();
        assert_eq!(
            t.to_rfc3339(),
            "2026-11-21T01:00:00+00:00",
            "09:00 in Shanghai is 01:00 UTC"
        );
        // 02:30 does not exist in New York on 2027-03-14: that day is skipped.
        let ny = parse_timezone(Some("America/New_York")).unwrap();
        let cron: Cron = "30 2 * * *".parse().unwrap();
        let t = cron.next_after(at("2027-03-13T12:00:00Z"), ny).unwrap();
        assert_eq!(t.to_rfc3339(), "2027-03-15T06:30:00+00:00");
        assert!(
            parse_timezone(Some("Mars/Olympus"))
                .unwrap_err()
                .message
                .contains("unknown time zone")
        );
    }

    #[test]
    fn errors_name_the_bad_field() {
        for (expr, field) in [
            ("60 * * * *", "minute"),
            ("* 24 * * *", "hour"),
            ("* * 0 * *", "day-of-month"),
            ("* * * 13 *", "month"),
            ("* * * FOO *", "month"),
            ("* * * * 8", "day-of-week"),
            ("*/0 * * * *", "minute"),
            ("5-1 * * * *", "minute"),
            ("61 * * * * *", "second"),
        ] {
            let err = expr.parse::<Cron>().unwrap_err();
            assert!(
                err.message.contains(&format!("cron {field} field")),
                "{expr}: {}",
                err.message
            );
        }
        let err = "* * *".parse::<Cron>().unwrap_err();
        assert!(err.message.contains("3 fields"), "{}", err.message);
        let never: Cron = "0 0 31 2 *".parse().unwrap();
        assert!(
            never
                .next_after(at("2026-01-01T00:00:00Z"), Tz::UTC)
                .is_none()
        );
    }
}
