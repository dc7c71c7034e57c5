//! Ages from FHIR dates and Cedar datetimes.

/// A calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Date {
    year: i32,
    month: u32,
    day: u32,
}

fn is_leap_year(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn number(digits: &str) -> Option<u32> {
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

/// Parses a FHIR date, `YYYY`, `YYYY-MM` or `YYYY-MM-DD`. A partial date is
/// taken at its latest day.
fn parse_date(text: &str) -> Option<Date> {
    let mut parts = text.split('-');
    let year = parts.next().filter(|year| year.len() == 4).and_then(number)?;
    let year = i32::try_from(year).ok()?;
    let month = match parts.next() {
        Some(month) if month.len() == 2 => number(month).filter(|month| (1..=12).contains(month))?,
        Some(_) => return None,
        None => 12,
    };
    let day = match parts.next() {
        Some(day) if day.len() == 2 => {
            number(day).filter(|&day| (1..=days_in_month(year, month)).contains(&day))?
        }
        Some(_) => return None,
        None => days_in_month(year, month),
    };
    parts.next().is_none().then_some(Date { year, month, day })
}

/// Whether someone born on `birth_date` (a FHIR date) is at least `age`
/// years old on the date of `now` (a Cedar datetime such as
/// `2026-05-01T09:30:00Z`, taken as written, in its own offset).
pub fn has_reached(birth_date: &str, now: &str, age: u32) -> Result<bool, String> {
    let born = parse_date(birth_date).ok_or_else(|| format!("`{birth_date}` is not a FHIR date"))?;
    let today = now
        .get(..10)
        .filter(|date| date.len() == 10)
        .and_then(parse_date)
        .ok_or_else(|| format!("`{now}` is not a datetime"))?;
    let age = i32::try_from(age).map_err(|_| format!("{age} is not an age"))?;
    // Whole years between the dates: the birthday of this year counts once
    // its month and day are reached, so 29 February counts on 1 March in
    // common years.
    let mut years = today.year - born.year;
    if (today.month, today.day) < (born.month, born.day) {
        years -= 1;
    }
    Ok(years >= age)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reached(birth_date: &str, now: &str) -> bool {
        has_reached(birth_date, now, 18).unwrap()
    }

    #[test]
    fn birthday_edges() {
        assert!(!reached("2008-05-02", "2026-05-01T23:59:59Z"));
        assert!(reached("2008-05-01", "2026-05-01T00:00:00Z"));
        assert!(reached("2008-04-30", "2026-05-01"));
        assert!(!reached("2008-12-31", "2026-12-30T12:00:00.000+0100"));
        assert!(reached("2008-12-31", "2026-12-31T00:00:00-0500"));
        assert!(reached("2007-01-01", "2026-01-01T00:00:00Z"));
        assert!(!reached("2026-01-01", "2026-01-01T00:00:00Z"));
        assert!(has_reached("2026-01-01", "2026-01-01T00:00:00Z", 0).unwrap());
    }

    #[test]
    fn leap_day() {
        // Born on 29 February 2008: 18 in 2026, a common year, on 1 March.
        assert!(!reached("2008-02-29", "2026-02-28T23:59:59Z"));
        assert!(reached("2008-02-29", "2026-03-01T00:00:00Z"));
        // In a leap year, on 29 February itself.
        assert!(!reached("2012-02-29", "2030-02-28T12:00:00Z"));
        assert!(reached("2012-02-29", "2030-03-01T12:00:00Z"));
        assert!(has_reached("2012-02-29", "2032-02-29", 20).unwrap());
        assert!(!has_reached("2012-02-29", "2032-02-28", 20).unwrap());
        assert!(parse_date("2010-02-29").is_none());
        assert!(parse_date("2000-02-29").is_some());
        assert!(parse_date("1900-02-29").is_none());
    }

    #[test]
    fn partial_dates_are_taken_at_their_latest() {
        assert!(!reached("2008", "2026-12-30T00:00:00Z"));
        assert!(reached("2008", "2026-12-31T00:00:00Z"));
        assert!(!reached("2008-02", "2026-02-28T00:00:00Z"));
        assert!(reached("2008-02", "2026-03-01T00:00:00Z"));
    }

    #[test]
    fn rejects_bad_dates() {
        for bad in ["", "08-05-01", "2008-5-1", "2008-13-01", "2008-04-31", "2008-05-01T00:00:00Z", "abcd"] {
            assert!(has_reached(bad, "2026-05-01T00:00:00Z", 18).is_err(), "{bad}");
        }
        for bad in ["", "2026", "2026-05-0", "now"] {
            assert!(has_reached("2008-05-01", bad, 18).is_err(), "{bad}");
        }
    }
}
