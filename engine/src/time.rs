//! FHIR `dateTime` → Cedar `datetime` literals, and the server's clock as one.
//!
//! A FHIR dateTime may stop at any precision (`2026`, `2026-05`, …) and then
//! stands for the whole of its last unit, while Cedar compares instants at
//! millisecond precision. So a start becomes the first instant of its unit
//! and an end becomes the first instant of the *next* unit, compared with `<`:
//! an end of `2026-12-31` then still covers the last evening of the year.
//! The arithmetic is a few lines of civil-calendar maths, written here rather
//! than pulling a date crate into the decision core.
//!
//! Every instant the engine handles lies in years 0001 to 9999 in UTC, the
//! range of Cedar's `datetime` literals and of the engine's own annotations:
//! a value whose UTC instant falls outside it (`0001-01-01T00:00:00+14:00` is
//! still year 0000 in UTC) is refused when it is parsed, so it can never
//! reach a policy that would then fail to load or to evaluate.

/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;

/// The first instant of year 0001 in UTC, in Unix milliseconds: the earliest instant accepted.
const FIRST_UTC_MS: i64 = -62_135_596_800_000;

/// The first instant of year 10000 in UTC, in Unix milliseconds: every accepted instant is before it.
const END_UTC_MS: i64 = 253_402_300_800_000;

/// How much of a FHIR dateTime was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Precision {
    Year,
    Month,
    Day,
    /// A time of day, with this many fractional-second digits (0 for none).
    Time {
        fraction_digits: usize,
    },
}

/// A parsed FHIR dateTime, kept with its text for human-readable reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DateTime {
    text: String,
    /// The first instant the value stands for, in its own offset.
    first: Bound,
    precision: Precision,
}

/// An instant as Cedar can write it: a local time and the offset it was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bound {
    /// Milliseconds since 1970-01-01T00:00:00 in local time (the offset not yet applied).
    local_ms: i64,
    offset_minutes: i64,
    /// Written as a bare date, which Cedar reads as midnight UTC.
    date_only: bool,
}

impl DateTime {
    /// Parses `YYYY`, `YYYY-MM`, `YYYY-MM-DD` or `YYYY-MM-DDThh:mm:ss[.f…](Z|±hh:mm)`.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let shape = || {
            format!(
                "`{text}` is not a FHIR dateTime \
                 (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss with a timezone)"
            )
        };
        let mut cursor = Cursor { bytes: text.as_bytes(), pos: 0 };
        let year = cursor.digits(4).ok_or_else(shape)?;
        if year == 0 {
            return Err(format!("`{text}`: year 0000 does not exist in FHIR"));
        }
        let (mut month, mut day) = (1, 1);
        let (mut hour, mut minute, mut second, mut millis) = (0, 0, 0, 0);
        let mut offset_minutes = 0;
        let precision = if cursor.done() {
            Precision::Year
        } else {
            cursor.byte(b'-').ok_or_else(shape)?;
            month = cursor.digits(2).ok_or_else(shape)?;
            if !(1..=12).contains(&month) {
                return Err(format!("`{text}`: month {month} does not exist"));
            }
            if cursor.done() {
                Precision::Month
            } else {
                cursor.byte(b'-').ok_or_else(shape)?;
                day = cursor.digits(2).ok_or_else(shape)?;
                if day == 0 || day > days_in_month(year, month) {
                    return Err(format!("`{text}`: day {day} does not exist in that month"));
                }
                if cursor.done() {
                    Precision::Day
                } else {
                    cursor.byte(b'T').ok_or_else(shape)?;
                    hour = cursor.digits(2).ok_or_else(shape)?;
                    cursor.byte(b':').ok_or_else(shape)?;
                    minute = cursor.digits(2).ok_or_else(shape)?;
                    cursor.byte(b':').ok_or_else(shape)?;
                    second = cursor.digits(2).ok_or_else(shape)?;
                    if second == 60 {
                        return Err(format!("`{text}`: leap seconds are not supported"));
                    }
                    if hour > 23 || minute > 59 || second > 59 {
                        return Err(format!("`{text}`: not a valid time of day"));
                    }
                    let mut fraction_digits = 0;
                    if cursor.byte(b'.').is_some() {
                        let fraction = cursor.run_of_digits();
                        if fraction.is_empty() {
                            return Err(shape());
                        }
                        fraction_digits = fraction.len();
                        // Cedar keeps milliseconds: pad or truncate to three digits.
                        millis = fraction
                            .iter()
                            .chain(std::iter::repeat(&b'0'))
                            .take(3)
                            .fold(0, |acc, d| acc * 10 + i64::from(d - b'0'));
                    }
                    offset_minutes = match cursor.next() {
                        Some(b'Z') => 0,
                        Some(sign @ (b'+' | b'-')) => {
                            let hh = cursor.digits(2).ok_or_else(shape)?;
                            cursor.byte(b':').ok_or_else(shape)?;
                            let mm = cursor.digits(2).ok_or_else(shape)?;
                            if mm > 59 || hh > 14 || (hh == 14 && mm != 0) {
                                return Err(format!(
                                    "`{text}`: timezone offsets range from -14:00 to +14:00"
                                ));
                            }
                            let minutes = hh * 60 + mm;
                            if sign == b'-' { -minutes } else { minutes }
                        }
                        None => {
                            return Err(format!("`{text}`: a time of day needs a timezone (Z or ±hh:mm)"));
                        }
                        Some(_) => return Err(shape()),
                    };
                    Precision::Time { fraction_digits }
                }
            }
        };
        if !cursor.done() {
            return Err(shape());
        }
        let local_ms = days_from_civil(year, month, day) * DAY_MS
            + hour * 3_600_000
            + minute * 60_000
            + second * 1000
            + millis;
        let date_only = !matches!(precision, Precision::Time { .. });
        let first = Bound { local_ms, offset_minutes, date_only };
        if !(FIRST_UTC_MS..END_UTC_MS).contains(&first.utc_ms()) {
            return Err(format!(
                "`{text}` falls outside years 0001 to 9999 in UTC, the range of instants a decision can compare"
            ));
        }
        Ok(Self { text: text.to_owned(), first, precision })
    }

    /// The value as written.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The first instant the value covers: an inclusive lower bound.
    pub(crate) fn start(&self) -> Bound {
        self.first
    }

    /// The first instant after the value: an exclusive upper bound. `None` when
    /// that lies beyond year 9999 in UTC, which Cedar cannot write and nothing reaches.
    pub(crate) fn end(&self) -> Option<Bound> {
        let Bound { local_ms, offset_minutes, date_only } = self.first;
        let (year, month, _) = civil_from_days(local_ms.div_euclid(DAY_MS));
        let next_ms = match self.precision {
            Precision::Year => days_from_civil(year + 1, 1, 1) * DAY_MS,
            Precision::Month if month == 12 => days_from_civil(year + 1, 1, 1) * DAY_MS,
            Precision::Month => days_from_civil(year, month + 1, 1) * DAY_MS,
            Precision::Day => local_ms + DAY_MS,
            // `.5` covers up to `.599…`; anything finer than milliseconds was truncated.
            Precision::Time { fraction_digits } => {
                let step = match fraction_digits {
                    0 => 1000,
                    1 => 100,
                    2 => 10,
                    _ => 1,
                };
                local_ms + step
            }
        };
        let next = Bound { local_ms: next_ms, offset_minutes, date_only };
        (next.utc_ms() < END_UTC_MS).then_some(next)
    }
}

impl Bound {
    /// An instant given in milliseconds since the Unix epoch, written in UTC.
    pub(crate) fn utc(unix_ms: i64) -> Self {
        Self { local_ms: unix_ms, offset_minutes: 0, date_only: false }
    }

    /// Milliseconds since the Unix epoch in UTC, for ordering bounds.
    pub(crate) fn utc_ms(&self) -> i64 {
        self.local_ms - self.offset_minutes * 60_000
    }

    /// The argument of a Cedar `datetime(…)` call: `YYYY-MM-DD`,
    /// `YYYY-MM-DDThh:mm:ss[.SSS]Z` or `YYYY-MM-DDThh:mm:ss[.SSS]±hhmm`.
    pub(crate) fn literal(&self) -> String {
        let days = self.local_ms.div_euclid(DAY_MS);
        let (year, month, day) = civil_from_days(days);
        let date = format!("{year:04}-{month:02}-{day:02}");
        if self.date_only {
            return date;
        }
        let in_day = self.local_ms.rem_euclid(DAY_MS);
        let (hour, minute) = (in_day / 3_600_000, in_day / 60_000 % 60);
        let (second, millis) = (in_day / 1000 % 60, in_day % 1000);
        let fraction = if millis == 0 { String::new() } else { format!(".{millis:03}") };
        let zone = if self.offset_minutes == 0 {
            "Z".to_owned()
        } else {
            let sign = if self.offset_minutes < 0 { '-' } else { '+' };
            let abs = self.offset_minutes.abs();
            format!("{sign}{:02}{:02}", abs / 60, abs % 60)
        };
        format!("{date}T{hour:02}:{minute:02}:{second:02}{fraction}{zone}")
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn done(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.bytes.get(self.pos).copied()?;
        self.pos += 1;
        Some(byte)
    }

    fn byte(&mut self, expected: u8) -> Option<()> {
        (self.bytes.get(self.pos) == Some(&expected)).then(|| self.pos += 1)
    }

    /// Exactly `n` ASCII digits as a number.
    fn digits(&mut self, n: usize) -> Option<i64> {
        let run = self.bytes.get(self.pos..self.pos + n)?;
        if !run.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.pos += n;
        Some(run.iter().fold(0, |acc, d| acc * 10 + i64::from(d - b'0')))
    }

    fn run_of_digits(&mut self) -> &'a [u8] {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        let len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        self.pos += len;
        rest.get(..len).unwrap_or_default()
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use proptest::prelude::*;

    use super::*;

    fn start(text: &str) -> String {
        DateTime::parse(text).unwrap().start().literal()
    }

    fn end(text: &str) -> Option<String> {
        DateTime::parse(text).unwrap().end().map(|b| b.literal())
    }

    #[test]
    fn a_start_is_the_first_instant_of_its_precision() {
        assert_eq!(start("2026"), "2026-01-01");
        assert_eq!(start("2026-05"), "2026-05-01");
        assert_eq!(start("2026-05-17"), "2026-05-17");
        assert_eq!(start("2026-05-17T08:30:00Z"), "2026-05-17T08:30:00Z");
        assert_eq!(start("2026-05-17T08:30:00+02:00"), "2026-05-17T08:30:00+0200");
        assert_eq!(start("2026-05-17T08:30:00-05:30"), "2026-05-17T08:30:00-0530");
        assert_eq!(start("2026-05-17T08:30:00+00:00"), "2026-05-17T08:30:00Z");
    }

    #[test]
    fn an_end_is_the_first_instant_after_its_precision() {
        assert_eq!(end("2026").as_deref(), Some("2027-01-01"));
        assert_eq!(end("2026-05").as_deref(), Some("2026-06-01"));
        assert_eq!(end("2026-12").as_deref(), Some("2027-01-01"));
        assert_eq!(end("2026-12-31").as_deref(), Some("2027-01-01"));
        assert_eq!(end("2024-02-28").as_deref(), Some("2024-02-29"));
        assert_eq!(end("2026-02-28").as_deref(), Some("2026-03-01"));
        assert_eq!(end("2026-05-17T23:59:59+01:00").as_deref(), Some("2026-05-18T00:00:00+0100"));
        assert_eq!(end("2026-12-31T23:59:59Z").as_deref(), Some("2027-01-01T00:00:00Z"));
    }

    #[test]
    fn fractions_are_kept_to_the_millisecond() {
        assert_eq!(start("2026-05-17T08:30:00.5Z"), "2026-05-17T08:30:00.500Z");
        assert_eq!(start("2026-05-17T08:30:00.123456789Z"), "2026-05-17T08:30:00.123Z");
        assert_eq!(end("2026-05-17T08:30:00.5Z").as_deref(), Some("2026-05-17T08:30:00.600Z"));
        assert_eq!(end("2026-05-17T08:30:00.25Z").as_deref(), Some("2026-05-17T08:30:00.260Z"));
        assert_eq!(end("2026-05-17T08:30:00.1239Z").as_deref(), Some("2026-05-17T08:30:00.124Z"));
        assert_eq!(end("2026-05-17T08:30:59.999Z").as_deref(), Some("2026-05-17T08:31:00Z"));
    }

    #[test]
    fn an_end_beyond_year_9999_is_unbounded() {
        assert_eq!(end("9999"), None);
        assert_eq!(end("9999-12-31"), None);
        assert_eq!(end("9998-12-31").as_deref(), Some("9999-01-01"));
    }

    #[test]
    fn the_utc_range_is_years_0001_to_9999() {
        assert_eq!(FIRST_UTC_MS, days_from_civil(1, 1, 1) * DAY_MS);
        assert_eq!(END_UTC_MS, days_from_civil(10_000, 1, 1) * DAY_MS);
    }

    /// Finding 10 (issue 13): an instant written in year 0001 or 9999 whose offset moves it into
    /// year 0000 or 10000 in UTC was accepted, and the annotation written from it then failed to
    /// load, so every decision about the patient failed closed.
    #[test]
    fn regression_finding_10_instants_outside_years_0001_to_9999_in_utc_are_refused() {
        for bad in [
            "0001-01-01T00:00:00+14:00",
            "0001-01-01T00:00:00+00:01",
            "0001-01-01T13:59:59.999+14:00",
            "9999-12-31T23:59:59-14:00",
            "9999-12-31T23:00:00-01:00",
            "9999-12-31T23:59:59.999-00:01",
        ] {
            let error = DateTime::parse(bad).unwrap_err();
            assert!(error.contains("outside years 0001 to 9999 in UTC"), "{bad}: {error}");
        }
        for good in [
            "0001",
            "0001-01-01",
            "0001-01-01T00:00:00Z",
            "0001-01-01T00:00:00-14:00",
            "0001-01-01T14:00:00+14:00",
            "9999",
            "9999-12-31",
            "9999-12-31T23:59:59.999Z",
            "9999-12-31T23:59:59+14:00",
        ] {
            assert!(DateTime::parse(good).is_ok(), "refused `{good}`");
        }
    }

    #[test]
    fn an_end_past_year_9999_in_utc_is_unbounded_whatever_its_offset() {
        assert_eq!(end("9999-12-31T23:59:59Z"), None);
        assert_eq!(end("9999-12-31T22:59:59-01:00"), None);
        assert_eq!(end("9999-12-31T22:59:58-01:00").as_deref(), Some("9999-12-31T22:59:59-0100"));
        // Written in UTC, every accepted bound is a literal the engine reads back.
        for text in ["0001-01-01T00:00:00-14:00", "9999-12-31T23:59:58+14:00", "0001", "9998"] {
            let parsed = DateTime::parse(text).unwrap();
            for bound in [Some(parsed.start()), parsed.end()].into_iter().flatten() {
                let literal = Bound::utc(bound.utc_ms()).literal();
                assert!(DateTime::parse(&literal).is_ok(), "{text}: `{literal}` does not parse");
            }
        }
    }

    fn cases(default: u32) -> u32 {
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(default)
    }

    /// Any FHIR dateTime text of any precision, with an offset when it has a time of day;
    /// the first and last days of the range come up often.
    fn any_datetime() -> impl Strategy<Value = String> {
        let year = prop_oneof![Just(1i64), Just(9999i64), 1..=9999i64];
        let date = (
            year,
            prop_oneof![Just(1i64), Just(12i64), 1..=12i64],
            prop_oneof![Just(1i64), Just(31i64), 1..=31i64],
        );
        let offset = prop_oneof![Just(840i64), Just(-840i64), -840..=840i64];
        let time = (
            prop_oneof![Just(0i64), Just(23i64), 0..24i64],
            0..60i64,
            0..60i64,
            proptest::option::of(0..1000i64),
            offset,
        );
        (0..4usize, date, time).prop_map(|(precision, (y, mo, d), (h, mi, s, millis, offset))| {
            let fraction = millis.map(|m| format!(".{m:03}")).unwrap_or_default();
            let zone = match offset {
                0 => "Z".to_owned(),
                _ => format!(
                    "{}{:02}:{:02}",
                    if offset < 0 { '-' } else { '+' },
                    offset.abs() / 60,
                    offset.abs() % 60
                ),
            };
            match precision {
                0 => format!("{y:04}"),
                1 => format!("{y:04}-{mo:02}"),
                2 => format!("{y:04}-{mo:02}-{d:02}"),
                _ => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{fraction}{zone}"),
            }
        })
    }

    proptest! {
        // Parsing is cheap, and the edges of the range are narrow: many cases.
        #![proptest_config(ProptestConfig::with_cases(cases(2048)))]

        /// Finding 10's invariant: a dateTime is refused only when its UTC instant lies outside
        /// years 0001 to 9999, and every bound of one that is accepted, written in UTC as the
        /// activity-window annotations write it, reads back as the same instant.
        #[test]
        fn an_accepted_instant_is_one_the_engine_can_write_and_read_back(text in any_datetime()) {
            match DateTime::parse(&text) {
                Ok(parsed) => {
                    for bound in [Some(parsed.start()), parsed.end()].into_iter().flatten() {
                        let literal = Bound::utc(bound.utc_ms()).literal();
                        let read = DateTime::parse(&literal).map(|t| t.start().utc_ms());
                        prop_assert_eq!(read, Ok(bound.utc_ms()), "{} -> {}", text, literal);
                    }
                }
                // A day such as 02-31 does not exist; any other refusal is about the range.
                Err(error) => prop_assert!(
                    error.contains("outside years 0001 to 9999") || error.contains("does not exist"),
                    "{}: {}", text, error
                ),
            }
        }
    }

    #[test]
    fn offsets_order_instants_in_utc() {
        let berlin = DateTime::parse("2026-05-17T10:00:00+02:00").unwrap().start();
        let utc = DateTime::parse("2026-05-17T08:00:00Z").unwrap().start();
        assert_eq!(berlin.utc_ms(), utc.utc_ms());
        let midnight = DateTime::parse("1970-01-01").unwrap().start();
        assert_eq!(midnight.utc_ms(), 0);
        let new_york = DateTime::parse("1970-01-01T00:00:00-05:00").unwrap().start();
        assert_eq!(new_york.utc_ms(), 5 * 3_600_000);
    }

    #[test]
    fn civil_days_round_trip() {
        for days in [-719_468, -1, 0, 59, 60, 11_016, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn refuses_what_fhir_refuses() {
        for bad in [
            "",
            "26",
            "2026-5",
            "2026-13",
            "2026-02-29",
            "2026-04-31",
            "2026-05-17T08:30Z",
            "2026-05-17T08:30:00",
            "2026-05-17T24:00:00Z",
            "2026-05-17T08:30:60Z",
            "2026-05-17T08:30:00.Z",
            "2026-05-17T08:30:00+15:00",
            "2026-05-17T08:30:00+0200",
            "2026-05-17 08:30:00Z",
            "0000",
            "2026-05-17Z",
            "2026-05-17T08:30:00Zx",
        ] {
            assert!(DateTime::parse(bad).is_err(), "accepted `{bad}`");
        }
        assert!(DateTime::parse("2024-02-29").is_ok());
        assert!(DateTime::parse("2026-05-17T08:30:00-14:00").is_ok());
    }
}
