//! Deterministic helper functions registered in the rules engine: decimals and
//! money rounding, calendar dates (ISO text in, ISO text out), and the blocked
//! functions (`timestamp`, `sleep`, `exit`) that must fail with a useful hint.

use chrono::{
    DateTime, Datelike, Duration, FixedOffset, Months, NaiveDate, NaiveTime, SecondsFormat,
    TimeZone, Utc,
};
use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, Position, INT};
use rust_decimal::{Decimal, RoundingStrategy};

/// Result type of the registered helpers.
type Res<T> = Result<T, Box<EvalAltResult>>;

/// Error raised by a helper: a message and an optional hint for the analyst.
///
/// It travels inside Rhai's `ErrorRuntime` so that the error mapper can recover the
/// hint; scripts that `catch` it can read `e.message` or `e.to_string()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperError {
    pub message: String,
    pub hint: Option<String>,
}

pub(crate) fn fail<T>(message: impl Into<String>, hint: Option<&str>) -> Res<T> {
    Err(Box::new(EvalAltResult::ErrorRuntime(
        Dynamic::from(HelperError {
            message: message.into(),
            hint: hint.map(str::to_string),
        }),
        Position::NONE,
    )))
}

/// The helpers offered to scripts, with the signature shown in hints.
pub const HELPERS: &[(&str, &str)] = &[
    ("decimal", "decimal(text or integer) -> decimal"),
    (
        "decimal_fr",
        "decimal_fr(\"1 234,56\") -> decimal (French writing: comma, spaced thousands)",
    ),
    (
        "parse_csv",
        "parse_csv(text, \";\") -> array of maps keyed by the header row (texts)",
    ),
    (
        "round_to",
        "round_to(x, places) -> decimal, half away from zero",
    ),
    ("round_half_even", "round_half_even(x, places) -> decimal"),
    ("round_up", "round_up(x, places) -> decimal, away from zero"),
    (
        "round_down",
        "round_down(x, places) -> decimal, toward zero",
    ),
    ("round_money", "round_money(x, \"EUR\") -> decimal"),
    ("min", "min(a, b)"),
    ("max", "max(a, b)"),
    ("days_between", "days_between(from, to) -> integer"),
    ("add_days", "add_days(date, days) -> date"),
    ("add_months", "add_months(date, months) -> date"),
    ("end_of_month", "end_of_month(date) -> date"),
    ("start_of_month", "start_of_month(date) -> date"),
    ("year", "year(date) -> integer"),
    ("month", "month(date) -> integer"),
    ("day", "day(date) -> integer"),
    ("weekday", "weekday(date) -> integer, 1 = Monday"),
    ("half_year", "half_year(date) -> 1 or 2"),
    ("date_of", "date_of(datetime) -> date"),
    (
        "seconds_between",
        "seconds_between(from, to) -> integer (date-times or dates)",
    ),
    (
        "to_timezone",
        "to_timezone(datetime, \"Europe/Paris\") -> the same instant written in local time",
    ),
    (
        "format_local",
        "format_local(datetime, \"Europe/Paris\", \"%d/%m/%Y à %H:%M\") -> text",
    ),
    (
        "add_duration",
        "add_duration(datetime, \"P7D\") -> datetime",
    ),
];

/// Common Rhai built-ins, offered as "did you mean" suggestions.
pub const BUILTINS: &[&str] = &[
    "abs",
    "ceiling",
    "floor",
    "round",
    "to_int",
    "to_string",
    "to_decimal",
    "parse_int",
    "parse_decimal",
    "sign",
    "len",
    "is_empty",
    "contains",
    "push",
    "pop",
    "insert",
    "remove",
    "keys",
    "values",
    "get",
    "filter",
    "map",
    "reduce",
    "sort",
    "reverse",
    "index_of",
    "sub_string",
    "split",
    "trim",
    "to_upper",
    "to_lower",
    "replace",
    "starts_with",
    "ends_with",
    "type_of",
    "range",
    "some",
    "all",
];

/// Registers every helper and blocks the non-deterministic built-ins.
pub(crate) fn register(engine: &mut Engine) {
    register_blocked(engine);
    register_strict_comparisons(engine);
    register_decimals(engine);
    register_dates(engine);
    register_texts(engine);
    engine
        .register_type_with_name::<HelperError>("error")
        .register_get("message", |e: &mut HelperError| e.message.clone())
        .register_fn("to_string", |e: &mut HelperError| e.message.clone());
}

fn register_blocked(engine: &mut Engine) {
    const CLOCK_HINT: &str =
        "rules have no clock so that they give the same answer every time: use NOW (RFC 3339 text) or TODAY (YYYY-MM-DD), which the engine passes in";
    engine.register_fn("timestamp", || -> Res<Dynamic> {
        fail("`timestamp()` is not available in rules", Some(CLOCK_HINT))
    });
    engine.register_fn("sleep", |_: INT| -> Res<()> {
        fail(
            "`sleep` is not available in rules",
            Some("a rule computes a value; waiting belongs in the workflow (a timer step)"),
        )
    });
    engine.register_fn("sleep", |_: Decimal| -> Res<()> {
        fail(
            "`sleep` is not available in rules",
            Some("a rule computes a value; waiting belongs in the workflow (a timer step)"),
        )
    });
    engine.register_fn("exit", || -> Res<()> {
        fail(
            "`exit` is not available in rules",
            Some("use `return value;` to end a function"),
        )
    });
    engine.register_fn("exit", |_: Dynamic| -> Res<()> {
        fail(
            "`exit` is not available in rules",
            Some("use `return value;` to end a function"),
        )
    });
}

/// Rhai answers `false` when `<`, `>`, `<=` or `>=` compare values of different
/// types (`"mille" < 0`, `() > 1000`), which would let a missing or mistyped value
/// silently skip a rule's branch. These overloads make such comparisons errors
/// (integer/decimal comparisons are unaffected). `==` and `!=` keep answering
/// `false` for different types, so `x == ()` still tests for "no value".
fn register_strict_comparisons(engine: &mut Engine) {
    fn word(t: &str) -> &'static str {
        match t {
            "int" => "an integer",
            "decimal" => "a decimal",
            "text" => "a text",
            "bool" => "a boolean",
            _ => "nothing (null)",
        }
    }
    fn refuse(op: &str, a: &str, b: &str) -> Res<bool> {
        let hint = if a == "unit" || b == "unit" {
            "one of the values is empty (null or a missing result); check the data or give a default with `??`"
        } else if a == "text" || b == "text" {
            "convert the text first, e.g. `decimal(\"12.50\")`; dates are compared with days_between"
        } else {
            "compare values of the same kind"
        };
        fail(
            format!("`{op}` cannot compare {} with {}", word(a), word(b)),
            Some(hint),
        )
    }
    macro_rules! refuse_pair {
        ($ta:ty, $na:literal, $tb:ty, $nb:literal) => {
            for op in ["<", ">", "<=", ">="] {
                engine.register_fn(op, move |_: $ta, _: $tb| refuse(op, $na, $nb));
            }
        };
    }
    macro_rules! refuse_with_others {
        ($ta:ty, $na:literal) => {
            refuse_pair!($ta, $na, ImmutableString, "text");
            refuse_pair!(ImmutableString, "text", $ta, $na);
            refuse_pair!($ta, $na, bool, "bool");
            refuse_pair!(bool, "bool", $ta, $na);
            refuse_pair!($ta, $na, (), "unit");
            refuse_pair!((), "unit", $ta, $na);
        };
    }
    refuse_with_others!(INT, "int");
    refuse_with_others!(Decimal, "decimal");
    refuse_pair!(ImmutableString, "text", (), "unit");
    refuse_pair!((), "unit", ImmutableString, "text");
    refuse_pair!(ImmutableString, "text", bool, "bool");
    refuse_pair!(bool, "bool", ImmutableString, "text");
    refuse_pair!(bool, "bool", (), "unit");
    refuse_pair!((), "unit", bool, "bool");
}

// ---------------------------------------------------------------------------
// Decimals and money
// ---------------------------------------------------------------------------

/// Parses decimal text exactly (`"12.345"`, `"-3"`, `"1.5e3"`).
pub fn parse_decimal(text: &str) -> Result<Decimal, HelperError> {
    crate::convert::parse_decimal_text(text.trim()).ok_or_else(|| HelperError {
        message: format!("`{text}` is not a decimal number"),
        hint: Some("write it with a dot and no thousands separator, e.g. \"1234.56\"".into()),
    })
}

fn places(dp: INT) -> Result<u32, HelperError> {
    u32::try_from(dp)
        .ok()
        .filter(|p| *p <= 28)
        .ok_or_else(|| HelperError {
            message: format!("the number of decimal places must be between 0 and 28, got {dp}"),
            hint: None,
        })
}

/// Rounds `x` to `dp` places with `strategy`, and pads it to exactly `dp` places
/// (`round_to(9.9, 2)` is `9.90`) when the digits fit.
pub fn round_with(x: Decimal, dp: INT, strategy: RoundingStrategy) -> Result<Decimal, HelperError> {
    let dp = places(dp)?;
    let rounded = x.round_dp_with_strategy(dp, strategy);
    if rounded.scale() < dp {
        let mut padded = rounded;
        padded.rescale(dp);
        if padded == rounded {
            return Ok(padded);
        }
    }
    Ok(rounded)
}

/// Number of decimal places of a currency's minor unit.
pub fn currency_places(code: &str) -> Option<INT> {
    match code.trim().to_ascii_uppercase().as_str() {
        "EUR" | "USD" | "GBP" | "CHF" => Some(2),
        "XOF" | "XAF" | "FCFA" | "JPY" => Some(0),
        _ => None,
    }
}

/// Rounds half away from zero to the currency's minor unit.
pub fn round_money(x: Decimal, currency: &str) -> Result<Decimal, HelperError> {
    let dp = currency_places(currency).ok_or_else(|| HelperError {
        message: format!("unknown currency `{currency}`"),
        hint: Some(
            "known currencies: EUR, USD, GBP, CHF (cents), XOF, XAF, FCFA, JPY (no minor unit)"
                .into(),
        ),
    })?;
    round_with(x, dp, RoundingStrategy::MidpointAwayFromZero)
}

fn lift<T>(r: Result<T, HelperError>) -> Res<T> {
    r.or_else(|e| fail(e.message, e.hint.as_deref()))
}

/// A decimal written the French way, as bank statements do: `1 234,56`, `-12,5`, `1.234,56`
/// (spaces, narrow or non-breaking spaces and dots between thousands; a comma before the
/// decimals). A plain `1234.56` is read as written.
pub fn parse_decimal_fr(text: &str) -> Result<Decimal, HelperError> {
    let t: String = text
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '\u{a0}' | '\u{202f}' | '\''))
        .collect();
    let normal = if t.contains(',') {
        t.replace('.', "").replace(',', ".")
    } else {
        t
    };
    let normal = normal.strip_prefix('+').unwrap_or(&normal).to_string();
    crate::convert::parse_decimal_text(&normal).ok_or_else(|| HelperError {
        message: format!("`{text}` is not a decimal number written the French way"),
        hint: Some("such as \"1 234,56\" or \"-12,50\"".into()),
    })
}

/// The rows of a CSV text (RFC 4180: fields in double quotes may hold the separator, line
/// breaks and doubled quotes), each a map from the header row's names (trimmed) to its texts.
/// Blank lines are skipped; a row with more fields than the header is refused, one with fewer
/// gets empty texts.
pub fn parse_csv(text: &str, separator: &str) -> Result<Vec<Vec<(String, String)>>, HelperError> {
    let mut seps = separator.chars();
    let (Some(sep), None) = (seps.next(), seps.next()) else {
        return Err(HelperError {
            message: format!("the CSV separator `{separator}` must be one character"),
            hint: Some("French bank statements use \";\"; others \",\" or \"\\t\"".into()),
        });
    };
    if sep == '"' || sep == '\n' || sep == '\r' {
        return Err(HelperError {
            message: format!("`{separator}` cannot separate CSV fields"),
            hint: Some("use \";\", \",\" or \"\\t\"".into()),
        });
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records: Vec<(usize, Vec<String>)> = Vec::new();
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut line = 1;
    let mut record_line = 1;
    let mut chars = text.chars().peekable();
    let mut end_record = |fields: &mut Vec<String>, field: &mut String, at: usize| {
        fields.push(std::mem::take(field));
        let fields = std::mem::take(fields);
        if !(fields.len() == 1 && fields[0].trim().is_empty()) {
            records.push((at, fields));
        }
    };
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.trim().is_empty() => {
                field.clear();
                quoted = true;
            }
            c if c == sep => fields.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' | '\r' => {
                end_record(&mut fields, &mut field, record_line);
                line += 1;
                record_line = line;
            }
            _ => field.push(c),
        }
    }
    if quoted {
        return Err(HelperError {
            message: format!("line {record_line} of the CSV text: a quoted field is not closed"),
            hint: Some("close it with \"; a quote inside a field is written twice (\"\")".into()),
        });
    }
    end_record(&mut fields, &mut field, record_line);
    let mut records = records.into_iter();
    let Some((_, header)) = records.next() else {
        return Ok(Vec::new());
    };
    let header: Vec<String> = header.iter().map(|h| h.trim().to_string()).collect();
    let mut rows = Vec::new();
    for (at, fields) in records {
        if fields.len() > header.len() {
            return Err(HelperError {
                message: format!(
                    "line {at} of the CSV text has {} fields, the header {}",
                    fields.len(),
                    header.len()
                ),
                hint: Some(format!(
                    "check the separator (`{separator}`) and quote the fields that contain it"
                )),
            });
        }
        let mut row = Vec::with_capacity(header.len());
        for (i, name) in header.iter().enumerate() {
            let value = fields
                .get(i)
                .map(|f| f.trim().to_string())
                .unwrap_or_default();
            row.push((name.clone(), value));
        }
        rows.push(row);
    }
    Ok(rows)
}

fn register_texts(engine: &mut Engine) {
    engine.register_fn("decimal_fr", |s: &str| lift(parse_decimal_fr(s)));
    engine.register_fn("parse_csv", |text: &str, sep: &str| -> Res<rhai::Array> {
        let rows = lift(parse_csv(text, sep))?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let map: rhai::Map = row
                    .into_iter()
                    .map(|(k, v)| (k.into(), Dynamic::from(ImmutableString::from(v))))
                    .collect();
                Dynamic::from_map(map)
            })
            .collect())
    });
}

fn register_decimals(engine: &mut Engine) {
    engine.register_fn("decimal", |s: &str| lift(parse_decimal(s)));
    engine.register_fn("decimal", |i: INT| Decimal::from(i));
    engine.register_fn("decimal", |d: Decimal| d);

    macro_rules! rounding {
        ($name:literal, $strategy:expr) => {
            engine.register_fn($name, |x: Decimal, dp: INT| {
                lift(round_with(x, dp, $strategy))
            });
            engine.register_fn($name, |x: INT, dp: INT| {
                lift(round_with(Decimal::from(x), dp, $strategy))
            });
        };
    }
    rounding!("round_to", RoundingStrategy::MidpointAwayFromZero);
    rounding!("round_half_even", RoundingStrategy::MidpointNearestEven);
    rounding!("round_up", RoundingStrategy::AwayFromZero);
    rounding!("round_down", RoundingStrategy::ToZero);

    engine.register_fn("round_money", |x: Decimal, c: &str| lift(round_money(x, c)));
    engine.register_fn("round_money", |x: INT, c: &str| {
        lift(round_money(Decimal::from(x), c))
    });

    // Rhai's logic package has min/max for INT/INT and the INT/Decimal mixes;
    // registering them here keeps them available whatever the package set.
    engine.register_fn("min", |a: Decimal, b: Decimal| a.min(b));
    engine.register_fn("max", |a: Decimal, b: Decimal| a.max(b));
    engine.register_fn("min", |a: INT, b: Decimal| Decimal::from(a).min(b));
    engine.register_fn("max", |a: INT, b: Decimal| Decimal::from(a).max(b));
    engine.register_fn("min", |a: Decimal, b: INT| a.min(Decimal::from(b)));
    engine.register_fn("max", |a: Decimal, b: INT| a.max(Decimal::from(b)));
    engine.register_fn("min", |a: INT, b: INT| a.min(b));
    engine.register_fn("max", |a: INT, b: INT| a.max(b));
}

// ---------------------------------------------------------------------------
// Dates
// ---------------------------------------------------------------------------

/// A date or a date-time read from ISO text; helpers answer in the same form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Date(NaiveDate),
    DateTime(DateTime<FixedOffset>),
}

const DATE_HINT: &str =
    "write dates as YYYY-MM-DD (2026-03-01) or RFC 3339 date-times (2026-03-01T09:30:00Z)";

impl When {
    /// Reads `YYYY-MM-DD` or an RFC 3339 date-time.
    pub fn parse(text: &str) -> Result<When, HelperError> {
        let bad = || HelperError {
            message: format!("`{text}` is not a date"),
            hint: Some(DATE_HINT.into()),
        };
        if text.len() == 10 {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(When::Date)
                .map_err(|_| bad())
        } else {
            DateTime::parse_from_rfc3339(text)
                .map(When::DateTime)
                .map_err(|_| bad())
        }
    }

    /// The calendar date written in the text (for a date-time: in its own offset).
    pub fn date(self) -> NaiveDate {
        match self {
            When::Date(d) => d,
            When::DateTime(dt) => dt.date_naive(),
        }
    }

    /// Formats back to ISO text: `YYYY-MM-DD` or RFC 3339 (`Z` for UTC).
    pub fn format(self) -> String {
        match self {
            When::Date(d) => d.format("%Y-%m-%d").to_string(),
            When::DateTime(dt) => dt.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        }
    }

    fn to_datetime(self) -> DateTime<FixedOffset> {
        match self {
            When::Date(d) => Utc
                .from_utc_datetime(&d.and_time(NaiveTime::MIN))
                .fixed_offset(),
            When::DateTime(dt) => dt,
        }
    }

    /// Adds whole calendar days.
    pub fn add_days(self, n: INT) -> Result<When, HelperError> {
        let out_of_range = || out_of_range(self, &format!("{n} days"));
        let delta = Duration::try_days(n).ok_or_else(out_of_range)?;
        match self {
            When::Date(d) => d.checked_add_signed(delta).map(When::Date),
            When::DateTime(dt) => dt.checked_add_signed(delta).map(When::DateTime),
        }
        .ok_or_else(out_of_range)
    }

    /// Adds calendar months, clamping to the end of the month (Jan 31 + 1 month = Feb 28).
    pub fn add_months(self, n: INT) -> Result<When, HelperError> {
        let out_of_range = || out_of_range(self, &format!("{n} months"));
        let months = Months::new(u32::try_from(n.unsigned_abs()).map_err(|_| out_of_range())?);
        match (self, n >= 0) {
            (When::Date(d), true) => d.checked_add_months(months).map(When::Date),
            (When::Date(d), false) => d.checked_sub_months(months).map(When::Date),
            (When::DateTime(dt), true) => dt.checked_add_months(months).map(When::DateTime),
            (When::DateTime(dt), false) => dt.checked_sub_months(months).map(When::DateTime),
        }
        .ok_or_else(out_of_range)
    }
}

fn out_of_range(when: When, what: &str) -> HelperError {
    HelperError {
        message: format!("adding {what} to {} leaves the calendar", when.format()),
        hint: None,
    }
}

/// Calendar days from `a` to `b` (negative when `b` is before `a`); a date-time
/// counts as the date written in it.
pub fn days_between(a: &str, b: &str) -> Result<INT, HelperError> {
    let (a, b) = (When::parse(a)?, When::parse(b)?);
    Ok((b.date() - a.date()).num_days())
}

/// First day of the month of `d`.
pub fn start_of_month(d: NaiveDate) -> NaiveDate {
    d.with_day(1).unwrap_or(d)
}

/// Last day of the month of `d`.
pub fn end_of_month(d: NaiveDate) -> NaiveDate {
    start_of_month(d)
        .checked_add_months(Months::new(1))
        .and_then(|next| next.pred_opt())
        .unwrap_or(d)
}

/// An ISO 8601 duration: `P1Y2M3W4DT5H6M7S`, optionally negative (`-P7D`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IsoDuration {
    pub months: i64,
    pub days: i64,
    pub seconds: i64,
}

impl IsoDuration {
    pub fn parse(text: &str) -> Result<IsoDuration, HelperError> {
        let bad = |why: &str| {
            HelperError {
            message: format!("`{text}` is not an ISO 8601 duration: {why}"),
            hint: Some(
                "examples: P7D (7 days), P1M (1 month), P2W (2 weeks), PT48H (48 hours), P1Y6M, -P3D"
                    .into(),
            ),
        }
        };
        let (sign, rest) = match text.strip_prefix('-') {
            Some(rest) => (-1, rest),
            None => (1, text.strip_prefix('+').unwrap_or(text)),
        };
        let rest = rest
            .strip_prefix('P')
            .ok_or_else(|| bad("it must start with P"))?;
        let mut out = IsoDuration::default();
        let mut in_time = false;
        let mut number = String::new();
        let mut parts = 0;
        for c in rest.chars() {
            match c {
                '0'..='9' => number.push(c),
                'T' if !in_time && number.is_empty() => in_time = true,
                'Y' | 'M' | 'W' | 'D' | 'H' | 'S' => {
                    if number.is_empty() {
                        return Err(bad(&format!("a number must come before `{c}`")));
                    }
                    let n: i64 = number.parse().map_err(|_| bad("a number is too large"))?;
                    number.clear();
                    parts += 1;
                    let overflow = || bad("a number is too large");
                    let add = |acc: i64, mul: i64| {
                        n.checked_mul(mul)
                            .and_then(|v| acc.checked_add(v))
                            .ok_or_else(overflow)
                    };
                    match (c, in_time) {
                        ('Y', false) => out.months = add(out.months, 12)?,
                        ('M', false) => out.months = add(out.months, 1)?,
                        ('W', false) => out.days = add(out.days, 7)?,
                        ('D', false) => out.days = add(out.days, 1)?,
                        ('H', true) => out.seconds = add(out.seconds, 3600)?,
                        ('M', true) => out.seconds = add(out.seconds, 60)?,
                        ('S', true) => out.seconds = add(out.seconds, 1)?,
                        _ => return Err(bad(&format!("`{c}` is not allowed here"))),
                    }
                }
                '.' | ',' => return Err(bad("only whole numbers are supported")),
                _ => return Err(bad(&format!("unexpected `{c}`"))),
            }
        }
        if !number.is_empty() {
            return Err(bad("a number is missing its unit letter"));
        }
        if parts == 0 {
            return Err(bad("it has no parts"));
        }
        out.months *= sign;
        out.days *= sign;
        out.seconds *= sign;
        Ok(out)
    }
}

/// Adds an ISO 8601 duration: months first (clamped to the end of the month), then
/// days, then hours/minutes/seconds. A date plus a duration without a time part stays a
/// date; with a time part, a date is taken at midnight UTC and the result is a date-time.
pub fn add_duration(when: &str, duration: &str) -> Result<String, HelperError> {
    let start = When::parse(when)?;
    let d = IsoDuration::parse(duration)?;
    let mut at = if d.seconds != 0 {
        When::DateTime(start.to_datetime())
    } else {
        start
    };
    at = at.add_months(d.months)?.add_days(d.days)?;
    if d.seconds != 0 {
        let dt = at.to_datetime();
        let out = Duration::try_seconds(d.seconds)
            .and_then(|delta| dt.checked_add_signed(delta))
            .ok_or_else(|| out_of_range(at, duration))?;
        at = When::DateTime(out);
    }
    Ok(at.format())
}

fn register_dates(engine: &mut Engine) {
    fn date_fn(engine: &mut Engine, name: &'static str, f: fn(NaiveDate) -> INT) {
        engine.register_fn(name, move |d: &str| {
            lift(When::parse(d).map(|w| f(w.date())))
        });
    }
    engine.register_fn("days_between", |a: &str, b: &str| lift(days_between(a, b)));
    engine.register_fn("add_days", |d: &str, n: INT| {
        lift(When::parse(d).and_then(|w| w.add_days(n)).map(When::format))
    });
    engine.register_fn("add_months", |d: &str, n: INT| {
        lift(
            When::parse(d)
                .and_then(|w| w.add_months(n))
                .map(When::format),
        )
    });
    engine.register_fn("end_of_month", |d: &str| {
        lift(When::parse(d).map(|w| When::Date(end_of_month(w.date())).format()))
    });
    engine.register_fn("start_of_month", |d: &str| {
        lift(When::parse(d).map(|w| When::Date(start_of_month(w.date())).format()))
    });
    date_fn(engine, "year", |d| INT::from(d.year()));
    date_fn(engine, "month", |d| INT::from(d.month()));
    date_fn(engine, "day", |d| INT::from(d.day()));
    date_fn(engine, "weekday", |d| {
        INT::from(d.weekday().number_from_monday())
    });
    date_fn(engine, "half_year", |d| if d.month() <= 6 { 1 } else { 2 });
    engine.register_fn("date_of", |d: &str| {
        lift(When::parse(d).map(|w| When::Date(w.date()).format()))
    });
    engine.register_fn("add_duration", |d: &str, p: &str| -> Res<ImmutableString> {
        lift(add_duration(d, p).map(Into::into))
    });
    engine.register_fn("seconds_between", |a: &str, b: &str| {
        lift(instant(a).and_then(|a| instant(b).map(|b| (b - a).num_seconds())))
    });
    engine.register_fn("to_timezone", |d: &str, tz: &str| -> Res<ImmutableString> {
        lift(local(d, tz).map(|t| t.to_rfc3339().into()))
    });
    engine.register_fn(
        "format_local",
        |d: &str, tz: &str, pattern: &str| -> Res<ImmutableString> {
            lift(format_local(d, tz, pattern).map(Into::into))
        },
    );
}

/// An instant: an RFC 3339 date-time, or a date (midnight UTC).
fn instant(text: &str) -> Result<chrono::DateTime<chrono::Utc>, HelperError> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(t.to_utc());
    }
    match NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d") {
        Ok(d) => Ok(d.and_time(chrono::NaiveTime::MIN).and_utc()),
        Err(_) => Err(HelperError {
            message: format!("`{text}` is neither a date-time nor a date"),
            hint: Some("write 2026-07-01T10:00:00Z (RFC 3339) or 2026-07-01".into()),
        }),
    }
}

/// `text` in the IANA time zone `tz`.
fn local(text: &str, tz: &str) -> Result<chrono::DateTime<chrono_tz::Tz>, HelperError> {
    let zone: chrono_tz::Tz = tz.parse().map_err(|_| HelperError {
        message: format!("unknown time zone `{tz}`"),
        hint: Some("use an IANA name such as \"Europe/Paris\" or \"Africa/Abidjan\"".into()),
    })?;
    Ok(instant(text)?.with_timezone(&zone))
}

/// `text` in the time zone `tz`, written with a strftime `pattern` (`%d/%m/%Y à %H:%M`).
pub fn format_local(text: &str, tz: &str, pattern: &str) -> Result<String, HelperError> {
    use std::fmt::Write as _;
    let t = local(text, tz)?;
    let items: Vec<chrono::format::Item> = chrono::format::StrftimeItems::new(pattern).collect();
    if items
        .iter()
        .any(|i| matches!(i, chrono::format::Item::Error))
    {
        return Err(HelperError {
            message: format!("`{pattern}` is not a valid date pattern"),
            hint: Some("use strftime fields such as %d/%m/%Y %H:%M".into()),
        });
    }
    let mut out = String::new();
    write!(out, "{}", t.format_with_items(items.into_iter())).map_err(|_| HelperError {
        message: format!("`{pattern}` cannot format this date"),
        hint: None,
    })?;
    Ok(out)
}

#[cfg(test)]
mod text_tests {
    use super::*;

    fn rows(text: &str, sep: &str) -> Vec<Vec<(String, String)>> {
        parse_csv(text, sep).expect("parses")
    }

    #[test]
    fn csv_reads_a_french_bank_statement() {
        let text = "\u{feff}Date;Libellé;Montant;Référence\r\n\
                    05/11/2026;\"VIR SEPA; KOUASSI\";1 200,00;FAC-2026-0001\r\n\
                    \r\n\
                    06/11/2026;\"Dit \"\"ok\"\"\nsuite\";-35,5;\r\n";
        let r = rows(text, ";");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0][0], ("Date".into(), "05/11/2026".into()));
        assert_eq!(r[0][1], ("Libellé".into(), "VIR SEPA; KOUASSI".into()));
        assert_eq!(r[0][3], ("Référence".into(), "FAC-2026-0001".into()));
        assert_eq!(r[1][1].1, "Dit \"ok\"\nsuite");
        assert_eq!(r[1][3].1, "", "a missing last field is empty");
    }

    #[test]
    fn csv_refusals_name_the_line() {
        let e = parse_csv("a;b\n1;2;3\n", ";").unwrap_err();
        assert!(e.message.contains("line 2"), "{}", e.message);
        let e = parse_csv("a;b\n1;\"2\n", ";").unwrap_err();
        assert!(e.message.contains("not closed"), "{}", e.message);
        assert!(parse_csv("a", ";;").is_err());
        assert!(rows("", ",").is_empty());
        assert!(rows("a,b\n", ",").is_empty(), "a header alone has no rows");
    }

    #[test]
    fn local_times() {
        // Summer and winter time in Paris; Abidjan stays on UTC.
        let f = |t: &str, tz: &str| format_local(t, tz, "%d/%m/%Y %H:%M").unwrap();
        assert_eq!(
            f("2026-07-01T08:00:00Z", "Europe/Paris"),
            "01/07/2026 10:00"
        );
        assert_eq!(
            f("2026-12-01T08:00:00Z", "Europe/Paris"),
            "01/12/2026 09:00"
        );
        assert_eq!(
            f("2026-12-01T08:00:00+00:00", "Africa/Abidjan"),
            "01/12/2026 08:00"
        );
        assert_eq!(f("2026-12-01", "Europe/Paris"), "01/12/2026 01:00");
        assert!(format_local("2026-12-01T08:00:00Z", "Europe/Parris", "%H").is_err());
        assert!(format_local("demain", "Europe/Paris", "%H").is_err());
        assert!(format_local("2026-12-01T08:00:00Z", "Europe/Paris", "%Q").is_err());
        assert_eq!(
            local("2026-07-01T08:00:00Z", "Europe/Paris")
                .unwrap()
                .to_rfc3339(),
            "2026-07-01T10:00:00+02:00"
        );
        let s = |a: &str, b: &str| instant(b).unwrap() - instant(a).unwrap();
        assert_eq!(
            s("2026-07-01T08:00:00Z", "2026-07-01T10:00:00+02:00").num_seconds(),
            0
        );
        assert_eq!(
            s("2026-07-01", "2026-07-02T00:00:30Z").num_seconds(),
            86_430
        );
    }

    #[test]
    fn french_decimals() {
        let d = |s: &str| parse_decimal_fr(s).expect(s).to_string();
        assert_eq!(d("1 234,56"), "1234.56");
        assert_eq!(d("1\u{a0}234,5"), "1234.5");
        assert_eq!(d("1.234.567,00"), "1234567.00");
        assert_eq!(d("-35,50"), "-35.50");
        assert_eq!(d("+12"), "12");
        assert_eq!(d("1234.56"), "1234.56");
        assert!(parse_decimal_fr("12,3,4").is_err());
        assert!(parse_decimal_fr("douze").is_err());
    }
}
