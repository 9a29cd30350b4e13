//! ISO 8601 durations (`P7D`, `PT2H30M`, `P1M`) and their calendar arithmetic.
//!
//! Months and years are calendar units: adding `P1M` to 31 January gives the last day of
//! February. Weeks, days and smaller units are exact (a day is 24 hours, in UTC).

use chrono::{DateTime, Datelike, Months, TimeDelta, Utc};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IsoDuration {
    pub years: u32,
    pub months: u32,
    pub weeks: u32,
    pub days: u32,
    pub hours: u32,
    pub minutes: u32,
    pub seconds: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not an ISO 8601 duration: {reason}")]
pub struct DurationError {
    pub text: String,
    pub reason: String,
}

impl IsoDuration {
    pub fn parse(text: &str) -> Result<IsoDuration, DurationError> {
        let err = |reason: &str| DurationError {
            text: text.to_string(),
            reason: reason.to_string(),
        };
        let rest = text
            .strip_prefix('P')
            .ok_or_else(|| err("it must start with P (P7D, PT2H)"))?;
        if rest.is_empty() {
            return Err(err("it has no part after P"));
        }
        let mut d = IsoDuration::default();
        let mut in_time = false;
        let mut number = String::new();
        let mut any = false;
        for c in rest.chars() {
            match c {
                'T' if !in_time && number.is_empty() => in_time = true,
                '0'..='9' => number.push(c),
                _ => {
                    if number.is_empty() {
                        return Err(err(&format!("`{c}` has no number before it")));
                    }
                    let n: u32 = number.parse().map_err(|_| err("a number is too large"))?;
                    number.clear();
                    any = true;
                    let slot = match (in_time, c) {
                        (false, 'Y') => &mut d.years,
                        (false, 'M') => &mut d.months,
                        (false, 'W') => &mut d.weeks,
                        (false, 'D') => &mut d.days,
                        (true, 'H') => &mut d.hours,
                        (true, 'M') => &mut d.minutes,
                        (true, 'S') => &mut d.seconds,
                        (false, 'H' | 'S') => {
                            return Err(err("hours, minutes and seconds go after T (PT2H)"))
                        }
                        _ => {
                            return Err(err(&format!(
                                "unknown unit `{c}` (use Y, M, W, D, then T and H, M, S)"
                            )))
                        }
                    };
                    *slot = n;
                }
            }
        }
        if !number.is_empty() {
            return Err(err("the last number has no unit"));
        }
        if !any {
            return Err(err("it has no part"));
        }
        Ok(d)
    }

    /// `at` moved forward by this duration, or `None` past the representable range.
    pub fn after(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let months = self.years.checked_mul(12)?.checked_add(self.months)?;
        let t = at.checked_add_months(Months::new(months))?;
        let exact = TimeDelta::try_weeks(self.weeks as i64)?
            + TimeDelta::try_days(self.days as i64)?
            + TimeDelta::try_hours(self.hours as i64)?
            + TimeDelta::try_minutes(self.minutes as i64)?
            + TimeDelta::try_seconds(self.seconds as i64)?;
        t.checked_add_signed(exact)
    }

    /// An approximate length in seconds (months of 30 days), for ordering and backoff caps.
    pub fn approx_seconds(&self) -> u64 {
        let days = self.years as u64 * 365
            + self.months as u64 * 30
            + self.weeks as u64 * 7
            + self.days as u64;
        days * 86_400 + self.hours as u64 * 3600 + self.minutes as u64 * 60 + self.seconds as u64
    }

    pub fn from_seconds(secs: u64) -> IsoDuration {
        let secs = secs.min(u32::MAX as u64 * 86_400);
        IsoDuration {
            days: (secs / 86_400) as u32,
            hours: ((secs % 86_400) / 3600) as u32,
            minutes: ((secs % 3600) / 60) as u32,
            seconds: (secs % 60) as u32,
            ..IsoDuration::default()
        }
    }
}

impl fmt::Display for IsoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("P")?;
        for (n, u) in [
            (self.years, 'Y'),
            (self.months, 'M'),
            (self.weeks, 'W'),
            (self.days, 'D'),
        ] {
            if n > 0 {
                write!(f, "{n}{u}")?;
            }
        }
        if self.hours + self.minutes + self.seconds > 0 {
            f.write_str("T")?;
            for (n, u) in [(self.hours, 'H'), (self.minutes, 'M'), (self.seconds, 'S')] {
                if n > 0 {
                    write!(f, "{n}{u}")?;
                }
            }
        } else if self.years + self.months + self.weeks + self.days == 0 {
            f.write_str("T0S")?;
        }
        Ok(())
    }
}

/// Parses a date (`YYYY-MM-DD`, taken as midnight UTC) or an RFC 3339 date-time.
pub fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    let d = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    let _ = d.year();
    Some(d.and_hms_opt(0, 0, 0)?.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for s in ["P7D", "PT2H30M", "P1Y2M3W4DT5H6M7S", "P1M", "PT0S"] {
            assert_eq!(IsoDuration::parse(s).unwrap().to_string(), s);
        }
        assert!(IsoDuration::parse("7D").is_err());
        assert!(IsoDuration::parse("P").is_err());
        assert!(IsoDuration::parse("P2H")
            .unwrap_err()
            .reason
            .contains("after T"));
        assert!(IsoDuration::parse("PT5").is_err());
    }

    #[test]
    fn months_are_calendar_months() {
        let jan31 = parse_instant("2026-01-31").unwrap();
        let d = IsoDuration::parse("P1M").unwrap();
        assert_eq!(
            d.after(jan31).unwrap().to_rfc3339(),
            "2026-02-28T00:00:00+00:00"
        );
        let d = IsoDuration::parse("P7DT1H").unwrap();
        assert_eq!(
            d.after(jan31).unwrap().to_rfc3339(),
            "2026-02-07T01:00:00+00:00"
        );
    }
}
