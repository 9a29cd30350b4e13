//! Cron schedules of `cron` triggers: the five-field syntax the validator accepts, and the
//! instants a schedule fires at in its time zone.
//!
//! `minute hour day-of-month month day-of-week`, no seconds. Each field is `*`, a number, a
//! range `1-5`, a list `1,15`, a step `*/15` or `10-50/10`; months may be named `JAN`..`DEC`
//! and days `SUN`..`SAT` (any case); day of week 0 and 7 are both Sunday. A step after a
//! single number runs to the end of the field (`5/15` is `5-59/15` in the minute field).
//!
//! Day of month and day of week follow Vixie cron: when either field starts with `*` (`*`,
//! `*/2`), a day must match both; when both are restricted, a day matching either one fires
//! (`0 8 1 * MON` fires on the 1st and on every Monday).
//!
//! A schedule reads the wall clock of its time zone ([`CronSchedule::next_after`]):
//! - a local time skipped when clocks go forward fires at the first instant after the gap
//!   (`30 2 * * *` in `Europe/Paris` fires at 03:00 CEST on the last Sunday of March; several
//!   slots in one gap, or a slot in the gap and one at its end, fire once);
//! - a local time repeated when clocks go back fires once, at its first occurrence (`30 2 * * *`
//!   fires at 02:30 CEST, not again at 02:30 CET; a schedule firing every few minutes pauses
//!   during the repeated hour).
//!
//! This module has no clock: callers pass the instant to search from.

use std::fmt;

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Timelike,
};

pub use chrono_tz::Tz;

/// The fields of a schedule: name, lowest and highest value.
const FIELDS: [(&str, u32, u32); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
];

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// The Gregorian calendar repeats its weekdays every 400 years: a schedule that matches no
/// day in that many years never fires.
const SEARCH_YEARS: i32 = 401;

/// How far past a skipped local time the first valid instant is looked for (the longest gaps
/// on record skip a whole day).
const GAP_SEARCH_MINUTES: u32 = 48 * 60;

/// A parsed cron schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    text: String,
    /// Bit `m` set when minute `m` matches.
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    /// Bit 0 is Sunday; 7 is folded into 0.
    days_of_week: u64,
    /// The day-of-month field starts with `*`.
    dom_star: bool,
    /// The day-of-week field starts with `*`.
    dow_star: bool,
}

/// Why a schedule is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CronError {
    /// The schedule does not have five fields.
    FieldCount { text: String, count: usize },
    /// Some fields are not valid, in field order.
    Fields(Vec<FieldError>),
}

/// One invalid field of a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// 0 = minute … 4 = day of week.
    pub index: usize,
    /// Where the field starts in the schedule, in characters.
    pub offset: usize,
    /// The field as written.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FieldError {
    /// `minute`, `hour`, `day-of-month`, `month` or `day-of-week`.
    pub fn name(&self) -> &'static str {
        FIELDS[self.index].0
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the {} field `{}` of the cron schedule is not valid: {}",
            self.name(),
            self.field,
            self.reason
        )
    }
}

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CronError::FieldCount { text, count } => write!(
                f,
                "the cron schedule `{text}` has {count} fields instead of 5"
            ),
            CronError::Fields(errors) => {
                for (i, e) in errors.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for CronError {}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl CronSchedule {
    /// Parses a five-field schedule (`0 8 * * MON-FRI`).
    pub fn parse(text: &str) -> Result<CronSchedule, String> {
        Self::check(text).map_err(|e| e.to_string())
    }

    /// Parses a schedule, saying which fields are wrong and where they start (the validator
    /// points at them).
    pub fn check(text: &str) -> Result<CronSchedule, CronError> {
        let parts = split_fields(text);
        if parts.len() != 5 {
            return Err(CronError::FieldCount {
                text: text.to_string(),
                count: parts.len(),
            });
        }
        let mut masks = [0u64; 5];
        let mut errors = Vec::new();
        for (index, (offset, field)) in parts.iter().enumerate() {
            match parse_field(field, index) {
                Ok(m) => masks[index] = m,
                Err(reason) => errors.push(FieldError {
                    index,
                    offset: *offset,
                    field: field.to_string(),
                    reason,
                }),
            }
        }
        if !errors.is_empty() {
            return Err(CronError::Fields(errors));
        }
        // Sunday is 0 and 7.
        let mut dow = masks[4];
        if dow & (1 << 7) != 0 {
            dow = (dow | 1) & !(1 << 7);
        }
        Ok(CronSchedule {
            text: text.to_string(),
            minutes: masks[0],
            hours: masks[1],
            days_of_month: masks[2],
            months: masks[3],
            days_of_week: dow,
            dom_star: parts[2].1.starts_with('*'),
            dow_star: parts[4].1.starts_with('*'),
        })
    }

    /// The schedule as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether the schedule fires on `date` (months, days of month and week).
    pub fn matches_date(&self, date: NaiveDate) -> bool {
        if !bit(self.months, date.month()) {
            return false;
        }
        let dom = bit(self.days_of_month, date.day());
        let dow = bit(self.days_of_week, date.weekday().num_days_from_sunday());
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first instant strictly after `t` at which the schedule fires, read on the wall
    /// clock of `t`'s time zone (see the module documentation for clock changes). `None` when
    /// no day ever matches (`0 0 31 2 *`).
    pub fn next_after<Z: TimeZone>(&self, t: DateTime<Z>) -> Option<DateTime<Z>> {
        let tz = t.timezone();
        let local = t.naive_local();
        let minute = local.with_second(0)?.with_nanosecond(0)?;
        let start = minute.checked_add_signed(Duration::minutes(1))?;
        let (mut year, mut month) = (start.year(), start.month());
        let last_year = year.checked_add(SEARCH_YEARS)?;
        while year <= last_year {
            if bit(self.months, month) {
                let first_day = if (year, month) == (start.year(), start.month()) {
                    start.day()
                } else {
                    1
                };
                for day in first_day..=31 {
                    // Past the end of the month (or of the calendar).
                    let Some(date) = NaiveDate::from_ymd_opt(year, month, day) else {
                        break;
                    };
                    if !self.matches_date(date) {
                        continue;
                    }
                    if let Some(found) = self.first_in_day(&tz, date, start, &t) {
                        return Some(found);
                    }
                }
            }
            if month == 12 {
                (year, month) = (year + 1, 1);
            } else {
                month += 1;
            }
        }
        None
    }

    /// The first firing on `date` at or after the local time `start` and strictly after `t`.
    fn first_in_day<Z: TimeZone>(
        &self,
        tz: &Z,
        date: NaiveDate,
        start: NaiveDateTime,
        t: &DateTime<Z>,
    ) -> Option<DateTime<Z>> {
        let same_day = date == start.date();
        let first_hour = if same_day { start.hour() } else { 0 };
        for hour in first_hour..24 {
            if !bit(self.hours, hour) {
                continue;
            }
            let first_minute = if same_day && hour == start.hour() {
                start.minute()
            } else {
                0
            };
            for minute in first_minute..60 {
                if !bit(self.minutes, minute) {
                    continue;
                }
                let local = date.and_hms_opt(hour, minute, 0)?;
                if let Some(instant) = resolve(tz, local) {
                    // A repeated local time already fired at its first occurrence.
                    if instant > *t {
                        return Some(instant);
                    }
                }
            }
        }
        None
    }
}

/// The instant of a local time: the earlier one when it occurs twice, the first instant after
/// the gap when it is skipped.
fn resolve<Z: TimeZone>(tz: &Z, local: NaiveDateTime) -> Option<DateTime<Z>> {
    let earliest = |r: LocalResult<DateTime<Z>>| match r {
        LocalResult::Single(d) => Some(d),
        LocalResult::Ambiguous(a, b) => Some(if a <= b { a } else { b }),
        LocalResult::None => None,
    };
    if let Some(d) = earliest(tz.from_local_datetime(&local)) {
        return Some(d);
    }
    let mut l = local;
    for _ in 0..GAP_SEARCH_MINUTES {
        l = l.checked_add_signed(Duration::minutes(1))?;
        if let Some(d) = earliest(tz.from_local_datetime(&l)) {
            return Some(d);
        }
    }
    None
}

fn bit(mask: u64, n: u32) -> bool {
    n < 64 && mask & (1u64 << n) != 0
}

/// The whitespace-separated fields of a schedule with their offsets in characters.
pub fn split_fields(text: &str) -> Vec<(usize, &str)> {
    let mut parts = Vec::new();
    let mut start = None;
    for (ci, (bi, c)) in text.char_indices().enumerate() {
        match (c.is_whitespace(), start) {
            (false, None) => start = Some((ci, bi)),
            (true, Some((cs, bs))) => {
                parts.push((cs, &text[bs..bi]));
                start = None;
            }
            _ => {}
        }
    }
    if let Some((cs, bs)) = start {
        parts.push((cs, &text[bs..]));
    }
    parts
}

/// Parses field number `index` (0 = minute … 4 = day of week) into a bit mask of the values
/// it matches (day of week keeps 7 apart from 0).
pub fn parse_field(field: &str, index: usize) -> Result<u64, String> {
    let Some(&(_, lo, hi)) = FIELDS.get(index) else {
        return Err(format!("a cron schedule has 5 fields, not {}", index + 1));
    };
    let value = |s: &str| -> Result<u32, String> {
        if let Ok(v) = s.parse::<u32>() {
            return if (lo..=hi).contains(&v) {
                Ok(v)
            } else {
                Err(format!("`{s}` is outside {lo}-{hi}"))
            };
        }
        let up = s.to_ascii_uppercase();
        let named = match index {
            3 => MONTHS.iter().position(|m| *m == up).map(|p| p as u32 + 1),
            4 => DAYS.iter().position(|d| *d == up).map(|p| p as u32),
            _ => None,
        };
        named.ok_or_else(|| {
            format!(
                "`{s}` is not a number{}",
                if index >= 3 { " nor a name" } else { "" }
            )
        })
    };
    let mut mask = 0u64;
    for item in field.split(',') {
        if item.is_empty() {
            return Err("a list has an empty element".to_string());
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        let step = match step {
            None => None,
            Some(s) => match s.parse::<u32>() {
                Ok(v) if v >= 1 => Some(v),
                _ => {
                    return Err(format!(
                        "the step `/{s}` is not a whole number of 1 or more"
                    ))
                }
            },
        };
        let (from, to) = if range == "*" {
            (lo, hi)
        } else {
            match range.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (value(a)?, value(b)?);
                    if a > b {
                        return Err(format!("the range `{range}` goes backwards"));
                    }
                    (a, b)
                }
                // A single value; with a step, it runs to the end of the field.
                None => {
                    let a = value(range)?;
                    (a, if step.is_some() { hi } else { a })
                }
            }
        };
        let step = step.unwrap_or(1);
        let mut v = from;
        while v <= to {
            mask |= 1u64 << v;
            v = match v.checked_add(step) {
                Some(n) => n,
                None => break,
            };
        }
    }
    Ok(mask)
}

/// The time zone of a cron trigger, by its IANA name (`Africa/Abidjan`, `UTC`).
pub fn parse_timezone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>()
        .map_err(|_| format!("`{name}` is not a time zone name"))
}

/// The IANA name closest to a misspelled one: the same name in another case, or a likely
/// typo.
pub fn suggest_timezone(name: &str) -> Option<&'static str> {
    let names = || chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name());
    if let Some(same) = names().find(|n| n.eq_ignore_ascii_case(name)) {
        return Some(same);
    }
    let best = crate::did_you_mean(name, names())?;
    names().find(|n| *n == best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .with_timezone(&Utc)
    }

    fn sched(text: &str) -> CronSchedule {
        CronSchedule::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    /// The next `n` firings after `from` (UTC), as RFC 3339 UTC.
    fn next_n(text: &str, from: &str, n: usize) -> Vec<String> {
        let s = sched(text);
        let mut t = utc(from);
        let mut out = Vec::new();
        for _ in 0..n {
            t = s
                .next_after(t)
                .unwrap_or_else(|| panic!("{text} never fires after {t}"));
            out.push(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        out
    }

    /// The next `n` firings after `from` in `tz`, as RFC 3339 with the local offset.
    fn next_n_in(text: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
        let s = sched(text);
        let tz = parse_timezone(tz).unwrap();
        let mut t = utc(from).with_timezone(&tz);
        let mut out = Vec::new();
        for _ in 0..n {
            t = s
                .next_after(t)
                .unwrap_or_else(|| panic!("{text} never fires after {t}"));
            out.push(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false));
        }
        out
    }

    fn values(field: &str, index: usize) -> Vec<u32> {
        let mask = parse_field(field, index).unwrap_or_else(|e| panic!("{field}: {e}"));
        (0..64).filter(|v| mask & (1u64 << v) != 0).collect()
    }

    #[test]
    fn every_syntax_form() {
        assert_eq!(values("*", 1), (0..=23).collect::<Vec<_>>());
        assert_eq!(values("7", 0), vec![7]);
        assert_eq!(values("1-5", 1), vec![1, 2, 3, 4, 5]);
        assert_eq!(values("1,15", 2), vec![1, 15]);
        assert_eq!(values("*/15", 0), vec![0, 15, 30, 45]);
        assert_eq!(values("10-50/10", 0), vec![10, 20, 30, 40, 50]);
        assert_eq!(values("5/20", 0), vec![5, 25, 45]);
        assert_eq!(values("1-3,10-12,20", 1), vec![1, 2, 3, 10, 11, 12, 20]);
        assert_eq!(values("*/5", 2), vec![1, 6, 11, 16, 21, 26, 31]);
        assert_eq!(values("*/100", 0), vec![0]);
        assert_eq!(values("JAN,jul", 3), vec![1, 7]);
        assert_eq!(values("MAR-MAY", 3), vec![3, 4, 5]);
        assert_eq!(values("2-DEC/5", 3), vec![2, 7, 12]);
        assert_eq!(values("MON-FRI", 4), vec![1, 2, 3, 4, 5]);
        assert_eq!(values("sun,sat", 4), vec![0, 6]);
        assert_eq!(values("5-7", 4), vec![5, 6, 7]);
        assert_eq!(values("*", 4), (0..=7).collect::<Vec<_>>());
    }

    #[test]
    fn invalid_fields_say_why() {
        let err = |field: &str, index: usize| parse_field(field, index).unwrap_err();
        assert_eq!(err("60", 0), "`60` is outside 0-59");
        assert_eq!(err("0", 2), "`0` is outside 1-31");
        assert_eq!(err("MON", 1), "`MON` is not a number");
        assert_eq!(err("FOO", 4), "`FOO` is not a number nor a name");
        assert_eq!(err("JAN", 4), "`JAN` is not a number nor a name");
        assert_eq!(err("5-1", 1), "the range `5-1` goes backwards");
        assert_eq!(
            err("*/0", 0),
            "the step `/0` is not a whole number of 1 or more"
        );
        assert_eq!(
            err("*/x", 0),
            "the step `/x` is not a whole number of 1 or more"
        );
        assert_eq!(err("1,,2", 0), "a list has an empty element");
        assert_eq!(err("*-5", 0), "`*` is not a number");
        assert_eq!(err("", 0), "a list has an empty element");
        assert!(parse_field("1-2-3", 0).is_err());
        assert!(parse_field("8", 5).is_err());
    }

    #[test]
    fn whole_schedules_check_their_field_count_and_every_field() {
        assert_eq!(
            CronSchedule::parse("0 8 * *").unwrap_err(),
            "the cron schedule `0 8 * *` has 4 fields instead of 5"
        );
        assert_eq!(
            CronSchedule::check(" 61  8 * * FOO"),
            Err(CronError::Fields(vec![
                FieldError {
                    index: 0,
                    offset: 1,
                    field: "61".into(),
                    reason: "`61` is outside 0-59".into()
                },
                FieldError {
                    index: 4,
                    offset: 11,
                    field: "FOO".into(),
                    reason: "`FOO` is not a number nor a name".into()
                },
            ]))
        );
        assert_eq!(
            CronSchedule::parse("0 25 * * *").unwrap_err(),
            "the hour field `25` of the cron schedule is not valid: `25` is outside 0-23"
        );
        assert_eq!(sched("0 8 * * MON-FRI").to_string(), "0 8 * * MON-FRI");
    }

    #[test]
    fn next_after_is_strictly_after() {
        // Exactly on a slot: the next one.
        assert_eq!(
            next_n("*/15 * * * *", "2026-03-02T09:15:00Z", 2),
            ["2026-03-02T09:30:00Z", "2026-03-02T09:45:00Z"]
        );
        // Within a matching minute: the next slot, not the current minute.
        assert_eq!(
            next_n("* * * * *", "2026-03-02T09:15:00.001Z", 1),
            ["2026-03-02T09:16:00Z"]
        );
        assert_eq!(
            next_n("* * * * *", "2026-03-02T09:15:59Z", 1),
            ["2026-03-02T09:16:00Z"]
        );
        // Across an hour, a day, a month and a year.
        assert_eq!(
            next_n("0 8 * * *", "2026-12-31T08:00:00Z", 1),
            ["2027-01-01T08:00:00Z"]
        );
        assert_eq!(
            next_n("30 23 31 * *", "2026-02-01T00:00:00Z", 2),
            ["2026-03-31T23:30:00Z", "2026-05-31T23:30:00Z"]
        );
    }

    #[test]
    fn ranges_lists_steps_and_names_fire_when_expected() {
        // 2026-03-02 is a Monday.
        assert_eq!(
            next_n("0 8 * * MON-FRI", "2026-03-06T08:00:00Z", 2),
            ["2026-03-09T08:00:00Z", "2026-03-10T08:00:00Z"]
        );
        assert_eq!(
            next_n("10-50/20 8,17 * * *", "2026-03-02T08:30:00Z", 4),
            [
                "2026-03-02T08:50:00Z",
                "2026-03-02T17:10:00Z",
                "2026-03-02T17:30:00Z",
                "2026-03-02T17:50:00Z"
            ]
        );
        assert_eq!(
            next_n("0 0 1 jan,JUL *", "2026-03-02T00:00:00Z", 2),
            ["2026-07-01T00:00:00Z", "2027-01-01T00:00:00Z"]
        );
        // 0 and 7 are both Sunday: 2026-03-08 and 2026-03-15 are Sundays.
        for text in ["0 12 * * 0", "0 12 * * 7", "0 12 * * SUN"] {
            assert_eq!(
                next_n(text, "2026-03-02T00:00:00Z", 2),
                ["2026-03-08T12:00:00Z", "2026-03-15T12:00:00Z"],
                "{text}"
            );
        }
        assert_eq!(
            next_n("0 12 * * 6-7", "2026-03-02T00:00:00Z", 3),
            [
                "2026-03-07T12:00:00Z",
                "2026-03-08T12:00:00Z",
                "2026-03-14T12:00:00Z"
            ]
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_are_restricted() {
        // The 13th, or any Friday: Fri 6, Fri 13, Fri 20 in March 2026; Mon 13 April.
        assert_eq!(
            next_n("0 0 13 * FRI", "2026-03-02T00:00:00Z", 5),
            [
                "2026-03-06T00:00:00Z",
                "2026-03-13T00:00:00Z",
                "2026-03-20T00:00:00Z",
                "2026-03-27T00:00:00Z",
                "2026-04-03T00:00:00Z"
            ]
        );
        assert_eq!(
            next_n("0 0 13 4 FRI", "2026-03-30T00:00:00Z", 4),
            [
                "2026-04-03T00:00:00Z",
                "2026-04-10T00:00:00Z",
                "2026-04-13T00:00:00Z",
                "2026-04-17T00:00:00Z"
            ]
        );
        // Day of week `*`: only the day of month counts.
        assert_eq!(
            next_n("0 0 13 * *", "2026-03-02T00:00:00Z", 2),
            ["2026-03-13T00:00:00Z", "2026-04-13T00:00:00Z"]
        );
        // Day of month `*`: only the day of week counts.
        assert_eq!(
            next_n("0 0 * * FRI", "2026-03-02T00:00:00Z", 2),
            ["2026-03-06T00:00:00Z", "2026-03-13T00:00:00Z"]
        );
        // A field starting with `*` counts as unrestricted (Vixie): both must match, so
        // odd days that are Mondays (not Monday 16 nor 30 March).
        assert_eq!(
            next_n("0 0 */2 * MON", "2026-03-02T00:00:00Z", 3),
            [
                "2026-03-09T00:00:00Z",
                "2026-03-23T00:00:00Z",
                "2026-04-13T00:00:00Z"
            ]
        );
    }

    #[test]
    fn a_schedule_matching_no_day_never_fires() {
        let t = utc("2026-03-02T00:00:00Z");
        assert_eq!(sched("0 0 31 2 *").next_after(t), None);
        assert_eq!(sched("0 0 30 2 *").next_after(t), None);
        assert_eq!(sched("0 0 31 4,6,9,11 *").next_after(t), None);
        // Rare but possible: 29 February on a Sunday (2032, then 2060).
        assert_eq!(
            next_n("0 0 29 2 */7", "2026-03-02T00:00:00Z", 2),
            ["2032-02-29T00:00:00Z", "2060-02-29T00:00:00Z"]
        );
        // With both day fields restricted, the day of week still fires.
        assert_eq!(
            next_n("0 0 31 2 MON", "2026-03-02T00:00:00Z", 1),
            ["2027-02-01T00:00:00Z"]
        );
    }

    #[test]
    fn time_zones_read_the_local_wall_clock() {
        // Abidjan is UTC all year; Paris is UTC+1 in winter, UTC+2 in summer.
        assert_eq!(
            next_n_in(
                "0 8 * * MON-FRI",
                "Africa/Abidjan",
                "2026-03-02T08:00:00Z",
                1
            ),
            ["2026-03-03T08:00:00+00:00"]
        );
        assert_eq!(
            next_n_in("0 8 * * *", "Europe/Paris", "2026-03-02T00:00:00Z", 1),
            ["2026-03-02T08:00:00+01:00"]
        );
        assert_eq!(
            next_n_in("0 8 * * *", "Europe/Paris", "2026-07-01T00:00:00Z", 1),
            ["2026-07-01T08:00:00+02:00"]
        );
        // Around the spring change (29 March 2026) 08:00 stays 08:00 local.
        assert_eq!(
            next_n_in("0 8 * * *", "Europe/Paris", "2026-03-28T00:00:00Z", 2),
            ["2026-03-28T08:00:00+01:00", "2026-03-29T08:00:00+02:00"]
        );
    }

    #[test]
    fn a_time_skipped_in_spring_fires_at_the_end_of_the_gap() {
        // 29 March 2026 in Paris: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
        assert_eq!(
            next_n_in("30 2 * * *", "Europe/Paris", "2026-03-27T12:00:00Z", 3),
            [
                "2026-03-28T02:30:00+01:00",
                "2026-03-29T03:00:00+02:00",
                "2026-03-30T02:30:00+02:00"
            ]
        );
        // Every slot in the gap, and one at its end, fire once at 03:00.
        assert_eq!(
            next_n_in("*/20 2,3 * * *", "Europe/Paris", "2026-03-29T00:30:00Z", 3),
            [
                "2026-03-29T03:00:00+02:00",
                "2026-03-29T03:20:00+02:00",
                "2026-03-29T03:40:00+02:00"
            ]
        );
        // A minute schedule goes from 01:59 CET straight to 03:00 CEST.
        assert_eq!(
            next_n_in("* * * * *", "Europe/Paris", "2026-03-29T00:58:00Z", 2),
            ["2026-03-29T01:59:00+01:00", "2026-03-29T03:00:00+02:00"]
        );
    }

    #[test]
    fn a_time_repeated_in_autumn_fires_once() {
        // 25 October 2026 in Paris: 03:00 CEST goes back to 02:00 CET (01:00 UTC), so 02:30
        // happens at 00:30 UTC and again at 01:30 UTC.
        assert_eq!(
            next_n_in("30 2 * * *", "Europe/Paris", "2026-10-24T12:00:00Z", 3),
            [
                "2026-10-25T02:30:00+02:00",
                "2026-10-26T02:30:00+01:00",
                "2026-10-27T02:30:00+01:00"
            ]
        );
        // Looking from inside the repeated hour (02:10 CET, after the first 02:30), the
        // second 02:30 does not fire.
        assert_eq!(
            next_n_in("30 2 * * *", "Europe/Paris", "2026-10-25T01:10:00Z", 1),
            ["2026-10-26T02:30:00+01:00"]
        );
        // An hourly schedule: 02:00 CEST, then 03:00 CET two hours later (02:00 CET is the
        // repeated 02:00).
        assert_eq!(
            next_n_in("0 * * * *", "Europe/Paris", "2026-10-24T23:30:00Z", 3),
            [
                "2026-10-25T02:00:00+02:00",
                "2026-10-25T03:00:00+01:00",
                "2026-10-25T04:00:00+01:00"
            ]
        );
    }

    #[test]
    fn time_zone_names() {
        assert_eq!(
            parse_timezone("Africa/Abidjan").unwrap().name(),
            "Africa/Abidjan"
        );
        assert!(parse_timezone("UTC").is_ok());
        assert_eq!(
            parse_timezone("Mars/Olympus").unwrap_err(),
            "`Mars/Olympus` is not a time zone name"
        );
        assert!(parse_timezone("europe/paris").is_err());
        assert_eq!(suggest_timezone("europe/paris"), Some("Europe/Paris"));
        assert_eq!(suggest_timezone("Africa/Abidjn"), Some("Africa/Abidjan"));
        assert_eq!(suggest_timezone("zzzzzzzz"), None);
    }
}
