//! Event time: milliseconds since the Unix epoch (UTC), its RFC 3339 form and durations.
//!
//! Every time Vigil reads or writes goes through this module, so that input parsing, output
//! records and the generator's ground truth agree to the character.

use chrono::{DateTime, SecondsFormat, Utc};

/// Event time or a duration, in milliseconds. Event times are milliseconds since the Unix epoch.
pub type Millis = i64;

/// The smallest event time; the watermark before any event was seen.
pub const MIN_TIME: Millis = i64::MIN;

/// Parses an RFC 3339 timestamp (any offset) into milliseconds since the epoch, UTC: as
/// chrono's `DateTime::parse_from_rfc3339` does, and as fast as reading the digits for the
/// usual form (see [`parse_common_rfc3339`]).
pub fn parse_rfc3339(text: &str) -> Option<Millis> {
    parse_common_rfc3339(text.as_bytes()).or_else(|| {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.timestamp_millis())
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` (`T` also `t` or a space, `Z` also `z`), a
/// valid date and a second up to 59; `None` for anything else, which chrono then parses or
/// refuses. chrono took about 450 instructions a time, the reader's largest cost after the
/// JSON itself for events whose time is such a string.
fn parse_common_rfc3339(text: &[u8]) -> Option<Millis> {
    if text.len() < 20 {
        return None;
    }
    let punctuated = text[4] == b'-'
        && text[7] == b'-'
        && matches!(text[10], b'T' | b't' | b' ')
        && text[13] == b':'
        && text[16] == b':';
    if !punctuated {
        return None;
    }
    let two = |i: usize| two_digits(text[i], text[i + 1]);
    let (year, month, day) = (two(0)? * 100 + two(2)?, two(5)?, two(8)?);
    let (hour, minute, second) = (two(11)?, two(14)?, two(17)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None; // a leap second (60) and every refusal are chrono's
    }
    let mut rest = &text[19..];
    let mut millis = 0;
    if let [b'.', fraction @ ..] = rest {
        let len = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
        if len == 0 {
            return None;
        }
        // The first three digits; chrono keeps nine and truncates to milliseconds.
        millis = fraction[..len.min(3)]
            .iter()
            .fold(0, |n, &b| n * 10 + i64::from(b - b'0'))
            * 10i64.pow(3 - len.min(3) as u32);
        rest = &fraction[len..];
    }
    let offset_minutes = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (hours, minutes) = (two_digits(*h1, *h2)?, two_digits(*m1, *m2)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let minutes = hours * 60 + minutes;
            if *sign == b'-' {
                -minutes
            } else {
                minutes
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(
        days * 86_400_000 + hour * 3_600_000 + minute * 60_000 + second * 1_000 + millis
            - offset_minutes * 60_000,
    )
}

/// The number two ASCII digits write; `None` if either is not a digit.
fn two_digits(tens: u8, ones: u8) -> Option<i64> {
    let (tens, ones) = (tens.wrapping_sub(b'0'), ones.wrapping_sub(b'0'));
    (tens < 10 && ones < 10).then(|| i64::from(tens) * 10 + i64::from(ones))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a day of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`, the inverse of [`civil_from_days`]).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let shifted_month = (month + 9) % 12; // March is 0
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Formats milliseconds since the epoch as RFC 3339 UTC with millisecond precision:
/// `2026-11-26T10:00:00.000Z`. This is the one canonical form of every time Vigil writes.
pub fn format_rfc3339(millis: Millis) -> String {
    Rfc3339(millis).to_string()
}

/// [`format_rfc3339`] as a `Display` and as a JSON string (`Serialize`), to write a time into
/// a buffer or a record's details without a `String` of its own.
pub struct Rfc3339(pub Millis);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(text) = canonical_form(self.0) {
            return f.write_str(as_str(&text));
        }
        // Years before 0 or after 9999, or beyond what chrono represents.
        match DateTime::<Utc>::from_timestamp_millis(self.0) {
            Some(t) => f.write_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true)),
            None => write!(f, "invalid-time({})", self.0),
        }
    }
}

/// As a JSON string: what `Display` writes.
impl serde::Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match canonical_form(self.0) {
            Some(text) => serializer.serialize_str(as_str(&text)),
            None => serializer.collect_str(self),
        }
    }
}

impl Rfc3339 {
    /// Appends what `Display` writes to `out`, the common case without formatting machinery.
    pub fn append_to(&self, out: &mut Vec<u8>) {
        match canonical_form(self.0) {
            Some(text) => out.extend_from_slice(&text),
            None => out.extend_from_slice(self.to_string().as_bytes()),
        }
    }
}

/// The first millisecond of year 0 and of year 10000 (proleptic Gregorian, UTC).
const YEAR_0: Millis = -62_167_219_200_000;
const YEAR_10000: Millis = 253_402_300_800_000;

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for a time in years 0 to 9999, written digit by digit: output
/// records carry one or more times each, and `write!` with seven padded numbers through
/// chrono's calendar cost about 2 500 instructions a time.
fn canonical_form(millis: Millis) -> Option<[u8; 24]> {
    if !(YEAR_0..YEAR_10000).contains(&millis) {
        return None;
    }
    const DAY: Millis = 86_400_000;
    let (year, month, day) = civil_from_days(millis.div_euclid(DAY));
    let of_day = millis.rem_euclid(DAY);
    let seconds = of_day / 1_000;
    let mut text = *b"0000-00-00T00:00:00.000Z";
    put_digits(&mut text[0..4], year);
    put_digits(&mut text[5..7], month);
    put_digits(&mut text[8..10], day);
    put_digits(&mut text[11..13], seconds / 3_600);
    put_digits(&mut text[14..16], seconds / 60 % 60);
    put_digits(&mut text[17..19], seconds % 60);
    put_digits(&mut text[20..23], of_day % 1_000);
    Some(text)
}

/// [`canonical_form`]'s bytes as text.
fn as_str(text: &[u8; 24]) -> &str {
    std::str::from_utf8(text).expect("digits and ASCII marks")
}

/// Year, month (1–12) and day (1–31) of a day counted from 1970-01-01, in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // March is 0
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Writes `value` (non-negative, fitting `out`) as decimal digits, zero-padded to `out`'s width.
fn put_digits(out: &mut [u8], mut value: i64) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Parses a duration such as `500ms`, `90s`, `5m`, `24h`, `14d` or `1h30m` into milliseconds.
pub fn parse_duration(text: &str) -> Result<Millis, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let mut total: Millis = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "`{text}` is not a duration: expected a number at `{rest}`"
            ));
        }
        let number: Millis = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: Millis = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("`{text}` needs a unit (ms, s, m, h or d)")),
            other => {
                return Err(format!(
                    "unknown unit `{other}` in `{text}`; use ms, s, m, h or d"
                ))
            }
        };
        total = number
            .checked_mul(scale)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("`{text}` is too long a duration"))?;
    }
    Ok(total)
}

/// Formats a duration in milliseconds in the form `parse_duration` reads (`1h30m`, `250ms`).
pub fn format_duration(mut millis: Millis) -> String {
    if millis == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, scale) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if millis >= scale {
            out.push_str(&format!("{}{unit}", millis / scale));
            millis %= scale;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The usual form is read as chrono reads it, and everything else is left to chrono:
    /// near misses of every part (separators, digits, ranges, leap days and seconds, fraction
    /// lengths, offsets with and without minutes, the Unicode minus, trailing text).
    #[test]
    fn the_usual_form_reads_as_chrono_reads_it() {
        let chrono = |t: &str| {
            DateTime::parse_from_rfc3339(t)
                .ok()
                .map(|t| t.timestamp_millis())
        };
        let mut checked = 0;
        for date in [
            "2026-11-26",
            "2024-02-29",
            "2023-02-29",
            "2000-02-29",
            "1900-02-29",
            "0000-01-01",
            "9999-12-31",
            "1969-12-31",
            "2026-13-01",
            "2026-00-10",
            "2026-04-31",
            "2026-1-026",
        ] {
            for sep in ["T", "t", " ", "_"] {
                for time in [
                    "00:00:00", "23:59:59", "23:59:60", "24:00:00", "12:60:00", "1:00:000",
                ] {
                    for fraction in ["", ".", ".5", ".05", ".123", ".1239", ".123456789123", ".x"] {
                        for offset in [
                            "Z",
                            "z",
                            "+00:00",
                            "-00:00",
                            "+01:30",
                            "-23:59",
                            "+24:00",
                            "+01:60",
                            "+0100",
                            "+01",
                            "\u{2212}01:00",
                            "−01:00",
                            "",
                            "Z ",
                            "+01:00x",
                        ] {
                            let text = format!("{date}{sep}{time}{fraction}{offset}");
                            assert_eq!(parse_rfc3339(&text), chrono(&text), "{text}");
                            if let Some(fast) = parse_common_rfc3339(text.as_bytes()) {
                                assert_eq!(Some(fast), chrono(&text), "{text}");
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 1_000, "the fast path read {checked}");
    }

    proptest::proptest! {
        /// Any time chrono writes in RFC 3339, at any offset and precision, reads back the same
        /// through the fast path.
        #[test]
        fn any_time_reads_back(
            millis in YEAR_0..YEAR_10000,
            offset_minutes in -(23 * 60 + 59)..=(23 * 60 + 59),
            precision in 0usize..4,
        ) {
            let offset = chrono::FixedOffset::east_opt(offset_minutes * 60).unwrap();
            let time = DateTime::<Utc>::from_timestamp_millis(millis).unwrap().with_timezone(&offset);
            let format = [SecondsFormat::Secs, SecondsFormat::Millis, SecondsFormat::Micros, SecondsFormat::Nanos][precision];
            let text = time.to_rfc3339_opts(format, offset_minutes == 0);
            let expected = DateTime::parse_from_rfc3339(&text).unwrap().timestamp_millis();
            proptest::prop_assert_eq!(parse_common_rfc3339(text.as_bytes()), Some(expected), "{}", text);
        }
    }

    #[test]
    fn rfc3339_round_trips_in_canonical_form() {
        let t = parse_rfc3339("2026-11-26T10:00:00+01:00").unwrap();
        assert_eq!(format_rfc3339(t), "2026-11-26T09:00:00.000Z");
        assert_eq!(parse_rfc3339(&format_rfc3339(t + 7)), Some(t + 7));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    proptest::proptest! {
        /// The formatting written by hand is chrono's RFC 3339 form, for any time: years
        /// 0..=9999 and beyond, before the epoch, every millisecond.
        #[test]
        fn rfc3339_is_chronos_form(millis in proptest::prop_oneof![
            -62_167_219_200_000i64..253_402_300_800_000,
            proptest::num::i64::ANY,
        ]) {
            let chrono = DateTime::<Utc>::from_timestamp_millis(millis)
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
                .unwrap_or_else(|| format!("invalid-time({millis})"));
            proptest::prop_assert_eq!(format_rfc3339(millis), chrono);
        }
    }

    /// The edges of the hand-written form: the first and last millisecond it covers, the
    /// epoch and the millisecond before, leap days and century years.
    #[test]
    fn rfc3339_is_chronos_form_at_the_edges() {
        let day = 86_400_000;
        let mut times = vec![YEAR_0 - 1, YEAR_0, YEAR_10000 - 1, YEAR_10000, -1, 0, 1];
        for date in [
            "2000-02-29",
            "1900-02-28",
            "1900-03-01",
            "2024-12-31",
            "0000-02-29",
        ] {
            let t = parse_rfc3339(&format!("{date}T00:00:00Z")).unwrap();
            times.extend([t - 1, t, t + day - 1, t + day]);
        }
        for millis in times {
            let chrono = DateTime::<Utc>::from_timestamp_millis(millis)
                .unwrap()
                .to_rfc3339_opts(SecondsFormat::Millis, true);
            assert_eq!(format_rfc3339(millis), chrono, "{millis}");
        }
    }

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(parse_duration("24h"), Ok(86_400_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("250ms"), Ok(250));
        assert_eq!(format_duration(5_400_000), "1h30m");
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("10").unwrap_err().contains("unit"));
        assert!(parse_duration("3w").unwrap_err().contains("unknown unit"));
    }
}
