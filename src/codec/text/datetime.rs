//! Owns date, time, timetz, interval and timestamp text: their PostgreSQL output forms
//! (DateStyle ISO, IntervalStyle postgres, TimeZone UTC) and the date parser.

use std::fmt::Write as _;

use super::PgTextError::{self, Malformed};
use super::{bytes, is_c_space};

const USECS_PER_SEC: i64 = 1_000_000;
const USECS_PER_MINUTE: i64 = 60 * USECS_PER_SEC;
const USECS_PER_HOUR: i64 = 60 * USECS_PER_MINUTE;
/// Days from 1970-01-01 to 2000-01-01 (the Postgres date epoch).
const PG_EPOCH_FROM_UNIX_DAYS: i64 = 10_957;
const MAX_DATE_YEAR: i64 = 5_874_897;

/// Proleptic Gregorian (year, month, day) for a count of days since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Inverse of `civil_from_days`.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 2000-01-01 of PostgreSQL's earliest date, 4714-11-24 BC (Julian day 0).
const MIN_DATE_DAYS: i64 = -2_451_545;

/// Days since 2000-01-01 → `YYYY-MM-DD` (`0044-03-15 BC` before year 1), or `infinity`/`-infinity`.
///
/// Values outside Postgres's valid range (which the server never sends) are still formatted
/// arithmetically in the proleptic Gregorian calendar rather than rejected.
pub fn date_to_string(days: i32) -> String {
    match days {
        i32::MAX => return "infinity".to_owned(),
        i32::MIN => return "-infinity".to_owned(),
        _ => {}
    }
    let (y, m, d) = civil_from_days(i64::from(days) + PG_EPOCH_FROM_UNIX_DAYS);
    // There is no year 0: astronomical year 0 is 1 BC.
    if y > 0 {
        format!("{y:04}-{m:02}-{d:02}")
    } else {
        format!("{:04}-{m:02}-{d:02} BC", 1 - y)
    }
}

/// `YYYY-MM-DD` (year ≥ 4 digits, up to 5874897-12-31), with ` BC` after it back to
/// 4714-11-24 BC (as [`date_to_string`] writes them), `infinity` or `-infinity` → days since
/// 2000-01-01.
///
/// A deliberate subset of date_in: surrounding whitespace is trimmed and keywords are
/// case-insensitive as in Postgres, but other styles (`Jan 5 2024`, `epoch`) are rejected.
pub fn date_from_str(s: &str) -> Result<i32, PgTextError> {
    let t = s.trim_matches(is_c_space);
    if t.eq_ignore_ascii_case("infinity") {
        return Ok(i32::MAX);
    }
    if t.eq_ignore_ascii_case("-infinity") {
        return Ok(i32::MIN);
    }
    let syntax =
        || PgTextError::InvalidDate(format!("invalid input syntax for type date: \"{s}\""));
    let range = || PgTextError::InvalidDate(format!("date/time field value out of range: \"{s}\""));
    let (t, bc) = match t.len().checked_sub(3).and_then(|i| t.split_at_checked(i)) {
        Some((date, suffix)) if suffix.eq_ignore_ascii_case(" bc") => (date, true),
        _ => (t, false),
    };
    let mut parts = t.split('-');
    let (Some(ys), Some(ms), Some(ds), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(syntax());
    };
    let num = |p: &str, min_len: usize, max_len: usize| -> Result<i64, PgTextError> {
        if p.len() < min_len || p.len() > max_len || !p.bytes().all(|c| c.is_ascii_digit()) {
            return Err(syntax());
        }
        // Bounded length with all-digit check, so parsing cannot overflow.
        p.parse().map_err(|_| syntax())
    };
    let (y, m, d) = (num(ys, 4, 18)?, num(ms, 1, 2)?, num(ds, 1, 2)?);
    if y < 1 {
        return Err(range());
    }
    // Astronomical numbering: 1 BC is year 0, a leap year, as in the proleptic calendar.
    let y = if bc { 1 - y } else { y };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_len = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(range()),
    };
    if d < 1 || d > month_len {
        return Err(range());
    }
    let out_of_range = || PgTextError::InvalidDate(format!("date out of range: \"{s}\""));
    if !(-MAX_DATE_YEAR..=MAX_DATE_YEAR).contains(&y) {
        return Err(out_of_range());
    }
    let days = days_from_civil(y, m, d) - PG_EPOCH_FROM_UNIX_DAYS;
    // PostgreSQL's first day is Julian day 0, 4714-11-24 BC.
    if days < MIN_DATE_DAYS {
        return Err(out_of_range());
    }
    i32::try_from(days).map_err(|_| range())
}

/// Appends `HH:MM:SS[.ffffff]`, trimming trailing fraction zeros like Postgres's AppendSeconds.
fn push_hms(out: &mut String, hour: u64, min: u64, sec: u64, usec: u64) {
    let _ = write!(out, "{hour:02}:{min:02}:{sec:02}"); // writing to a String cannot fail
    if usec != 0 {
        let frac = format!("{usec:06}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
}

fn push_time(out: &mut String, micros: i64) {
    // Postgres never sends negative times; print them sign-and-magnitude rather than panic.
    if micros < 0 {
        out.push('-');
    }
    let m = micros.unsigned_abs();
    push_hms(
        out,
        m / 3_600_000_000,
        m / 60_000_000 % 60,
        m / 1_000_000 % 60,
        m % 1_000_000,
    );
}

/// Time of day in µs since midnight → `HH:MM:SS[.ffffff]` (e.g. `13:45:00.5`, `24:00:00`).
pub fn time_to_string(micros: i64) -> String {
    let mut out = String::with_capacity(15);
    push_time(&mut out, micros);
    out
}

/// Binary timetz (i64 µs, i32 zone seconds west of UTC) → e.g. `13:45:00+02`, `13:45:00-05:30`.
pub fn timetz_to_string(raw: &[u8]) -> Result<String, PgTextError> {
    if raw.len() != 12 {
        return Err(Malformed("timetz must be 12 bytes"));
    }
    let micros = i64::from_be_bytes(bytes(raw, 0)?);
    let zone = i32::from_be_bytes(bytes(raw, 8)?);
    let mut out = String::with_capacity(24);
    push_time(&mut out, micros);
    // The wire offset is west-positive, so the displayed sign is inverted (EncodeTimezone).
    out.push(if zone <= 0 { '+' } else { '-' });
    let z = zone.unsigned_abs();
    let (h, m, s) = (z / 3600, z / 60 % 60, z % 60);
    let _ = match (m, s) {
        (_, 1..) => write!(out, "{h:02}:{m:02}:{s:02}"),
        (1.., 0) => write!(out, "{h:02}:{m:02}"),
        (0, 0) => write!(out, "{h:02}"),
    };
    Ok(out)
}

/// Binary interval (i64 µs, i32 days, i32 months) → IntervalStyle `postgres` text, e.g. `-1 years -2 mons +3 days -04:05:06`.
pub fn interval_to_string(raw: &[u8]) -> Result<String, PgTextError> {
    if raw.len() != 16 {
        return Err(Malformed("interval must be 16 bytes"));
    }
    let time = i64::from_be_bytes(bytes(raw, 0)?);
    let days = i32::from_be_bytes(bytes(raw, 8)?);
    let months = i32::from_be_bytes(bytes(raw, 12)?);
    let mut out = String::with_capacity(48);
    let (mut is_zero, mut is_before) = (true, false);
    // Truncating division, as in interval2itm: every field carries the sign of its source.
    let fields = [(months / 12, "year"), (months % 12, "mon"), (days, "day")];
    for (value, unit) in fields {
        if value == 0 {
            continue;
        }
        if !is_zero {
            out.push(' ');
        }
        // AddPostgresIntPart: a positive field right after a negative one gets an explicit `+`.
        if is_before && value > 0 {
            out.push('+');
        }
        // Postgres pluralises everything but exactly 1, so `-1 days` and `-1 mons`.
        let plural = if value == 1 { "" } else { "s" };
        let _ = write!(out, "{value} {unit}{plural}");
        is_before = value < 0;
        is_zero = false;
    }
    let hour = time / USECS_PER_HOUR;
    let min = time % USECS_PER_HOUR / USECS_PER_MINUTE;
    let sec = time % USECS_PER_MINUTE / USECS_PER_SEC;
    let usec = time % USECS_PER_SEC;
    if is_zero || time != 0 {
        if !is_zero {
            out.push(' ');
        }
        // The time part gets `-` if negative, else `+` only right after a negative day field.
        if time < 0 {
            out.push('-');
        } else if is_before {
            out.push('+');
        }
        let abs = |v: i64| v.unsigned_abs();
        push_hms(&mut out, abs(hour), abs(min), abs(sec), abs(usec));
    }
    Ok(out)
}

/// timestamp / timestamptz (UTC session) text: `2024-01-02 03:04:05.5+00`, BC after the time.
pub(super) fn timestamp_text(micros: i64, zone: &str) -> String {
    match micros {
        i64::MAX => return "infinity".into(),
        i64::MIN => return "-infinity".into(),
        _ => {}
    }
    let days = micros.div_euclid(86_400_000_000);
    let time = time_to_string(micros.rem_euclid(86_400_000_000));
    let date = date_to_string(days as i32);
    match date.strip_suffix(" BC") {
        Some(d) => format!("{d} {time}{zone} BC"),
        None => format!("{date} {time}{zone}"),
    }
}

#[cfg(test)]
mod tests {
    //! Hex vectors and expected strings were produced by PostgreSQL 15.20:
    //! `encode(<type>_send(v), 'hex')` for the bytes, the server's own output for the text.
    use super::super::test_support::{rows, unhex};
    use super::*;

    /// date_send hex | date_out text (AD dates also parse back)
    const DATES: &str = "
        00000000|2000-01-01
        ffffffff|1999-12-31
        fff4dbf9|0001-01-01
        fff4dbf8|0001-12-31 BC
        fff49d7b|0044-03-15 BC
        ffda97a7|4714-11-24 BC
        ffda97cd|4713-01-01 BC
        7fda970c|5874897-12-31
        065ce7ee|294276-12-31
        00002279|2024-02-29
        ffffd533|1970-01-01
        ffff718f|1900-03-01
        002c95d3|9999-12-31
        002c95d4|10000-01-01
        fffa6bd9|0999-01-01
        7fffffff|infinity
        80000000|-infinity";

    #[test]
    fn date_table() {
        for r in rows(DATES) {
            let days = i32::from_be_bytes(unhex(r[0]).try_into().unwrap());
            assert_eq!(date_to_string(days), r[1]);
            if !r[1].ends_with("infinity") {
                assert_eq!(date_from_str(r[1]).unwrap(), days, "{}", r[1]);
            }
        }
        for (text, days) in [
            (" 2024-1-5 ", 8770),
            ("INFINITY", i32::MAX),
            ("005874897-12-31", 2_145_031_948),
            // 1 BC is a leap year (astronomical year 0).
            ("0001-02-29 bc", -730_426),
        ] {
            assert_eq!(date_from_str(text).unwrap(), days, "{text}");
        }
        let bad = "2023-02-29|2024-02-30|2024-13-01|2024-00-10|2024-01-00|0000-01-01|99-01-01|2024-01-05x|5874898-01-01|+infinity|4714-11-23 BC|0002-02-29 BC|0000-01-01 BC|2024-01-05 AD||2024-01|1-2-3-4|99999999999999999999-01-01|-2024-01-01";
        for b in bad.split('|') {
            assert!(
                matches!(date_from_str(b), Err(PgTextError::InvalidDate(_))),
                "{b:?}"
            );
        }
    }

    /// time_send or timetz_send hex | output text
    const TIMES: &str = "
        0000000000000000|00:00:00
        0000000b866e0f00|13:45:00
        0000000b8675b020|13:45:00.5
        000000141dd76000|24:00:00
        000000141dd75fff|23:59:59.999999
        0000000000000001|00:00:00.000001
        00000000ddec4950|01:02:03.25
        0000000a0eed9078|12:00:00.123
        0000000b866e0f00ffffe3e0|13:45:00+02
        0000000b866e0f0000004d58|13:45:00-05:30
        00000000ddec495000000000|01:02:03.25+00
        0000000000000000ffff3b20|00:00:00+14
        000000141dd75fff0000a8c0|23:59:59.999999-12
        0000000a0eebb000ffffaf06|12:00:00+05:45:30
        000000141dd760000000e0ff|24:00:00-15:59:59
        0000000a0eebb000ffff1f3c|12:00:00+15:59
        0000000861c4680000000001|10:00:00-00:00:01";

    #[test]
    fn time_and_timetz_table() {
        for r in rows(TIMES) {
            let raw = unhex(r[0]);
            let text = match <[u8; 8]>::try_from(raw.as_slice()) {
                Ok(b) => time_to_string(i64::from_be_bytes(b)),
                Err(_) => timetz_to_string(&raw).unwrap(),
            };
            assert_eq!(text, r[1]);
        }
        assert!(timetz_to_string(&unhex("0000000b866e0f00ffffe3")).is_err());
    }

    /// interval_send hex | IntervalStyle postgres text
    const INTERVALS: &str = "
        000000036c9361a0000000030000000e|1 year 2 mons 3 days 04:05:06.5
        00000000000000000000000000000000|00:00:00
        0000000000000000ffffffff00000000|-1 days
        fffffffffff0bdc00000000100000000|1 day -00:00:01
        fffffffc93743f8000000003fffffff2|-1 years -2 mons +3 days -04:05:06
        00000000000000000000000000000002|2 mons
        0000000000000000000000000000000c|1 year
        00000000000000000000000000000048|6 years
        00000000d693a400ffffffff00000000|-1 days +01:00:00
        00000000000000000000000000000001|1 mon
        000000000000000000000000ffffffff|-1 mons
        000000000000000000000001fffffff4|-1 years +1 day
        0000000000000000ffffffff0000000c|1 year -1 days
        000000000000000000000001fffffffd|-3 mons +1 day
        00000000000f4240fffffffffffffff4|-1 years -1 days +00:00:01
        00000000d693a400ffffffff00000001|1 mon -1 days +01:00:00
        00000000d693a400ffffffffffffffff|-1 mons -1 days +01:00:00
        ffffffffffffffff0000000000000000|-00:00:00.000001
        fffffffffff85ee00000000000000000|-00:00:00.5
        00000000000000010000000100000000|1 day 00:00:00.000001
        0001476b081e80000000000000000000|100000:00:00
        0000000a0eed36a0000000000000000c|1 year 12:00:00.1
        7fffffffffffffff7fffffff7fffffff|178956970 years 7 mons 2147483647 days 2562047788:00:54.775807
        80000000000000008000000080000000|-178956970 years -8 mons -2147483648 days -2562047788:00:54.775808";

    #[test]
    fn interval_table() {
        for r in rows(INTERVALS) {
            assert_eq!(interval_to_string(&unhex(r[0])).unwrap(), r[1]);
        }
        assert!(interval_to_string(&[0; 15]).is_err());
    }

    #[test]
    fn timestamp_text_places_bc_after_the_time() {
        assert_eq!(timestamp_text(0, "+00"), "2000-01-01 00:00:00+00");
        assert_eq!(timestamp_text(i64::MAX, ""), "infinity");
    }
}
