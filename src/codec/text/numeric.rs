//! Owns numeric ↔ PostgreSQL text: the binary numeric's text output and the decimal-text
//! encoder that produces what numeric_in + numeric_send would.

use std::fmt::Write as _;

use super::PgTextError::{self, Malformed};
use super::{bytes, is_c_space};

const NBASE: u16 = 10_000;
const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;
/// Largest dscale the on-disk numeric format can hold (NUMERIC_DSCALE_MASK).
const NUMERIC_DSCALE_MAX: i64 = 0x3FFF;
/// numeric_in rejects exponents at or beyond INT_MAX/2 before doing anything else.
const NUMERIC_EXP_LIMIT: i64 = (i32::MAX / 2) as i64;

/// Binary numeric → Postgres text (`NaN`, `Infinity`, `-Infinity`, or digits with exactly dscale decimals).
///
/// Validation mirrors numeric_recv (ndigits read as u16, digits < 10000, dscale ≤ 0x3FFF, no
/// trailing bytes), and the result equals what Postgres prints after receiving the value:
/// digits hidden by dscale are truncated, and a value that truncates to zero loses its sign.
pub fn numeric_to_string(raw: &[u8]) -> Result<String, PgTextError> {
    let ndigits = usize::from(u16::from_be_bytes(bytes(raw, 0)?));
    let weight = i64::from(i16::from_be_bytes(bytes(raw, 2)?));
    let sign = u16::from_be_bytes(bytes(raw, 4)?);
    let dscale = usize::from(u16::from_be_bytes(bytes(raw, 6)?));
    let body = raw.get(8..).ok_or(Malformed("numeric header too short"))?;
    if body.len() != 2 * ndigits {
        return Err(Malformed("numeric length does not match ndigits"));
    }
    if dscale > NUMERIC_DSCALE_MAX as usize {
        return Err(Malformed("numeric dscale out of range"));
    }
    let digits: Vec<u16> = body
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    if digits.iter().any(|&d| d >= NBASE) {
        return Err(Malformed("numeric digit out of range"));
    }
    match sign {
        NUMERIC_POS | NUMERIC_NEG => {}
        NUMERIC_NAN => return Ok("NaN".to_owned()),
        NUMERIC_PINF => return Ok("Infinity".to_owned()),
        NUMERIC_NINF => return Ok("-Infinity".to_owned()),
        _ => return Err(Malformed("invalid numeric sign")),
    }
    // Base-10000 digit d has weight `weight - d`; positions outside the array are zero.
    let digit_at = |d: i64| -> u16 {
        usize::try_from(d)
            .ok()
            .and_then(|i| digits.get(i))
            .copied()
            .unwrap_or(0)
    };
    let push_group = |s: &mut String, dig: u16| {
        let _ = write!(s, "{dig:04}"); // writing to a String cannot fail
    };
    let mut int_part = String::new();
    for d in 0..=weight {
        push_group(&mut int_part, digit_at(d));
    }
    // Stripping all leading zeros covers both first-group suppression and non-normalised input.
    let int_part = match int_part.trim_start_matches('0') {
        "" => "0",
        s => s,
    };
    let mut frac = String::with_capacity(dscale + 4);
    let mut d = weight + 1;
    while frac.len() < dscale {
        push_group(&mut frac, digit_at(d));
        d += 1;
    }
    frac.truncate(dscale);
    let mut out = String::with_capacity(int_part.len() + frac.len() + 2);
    let nonzero = int_part != "0" || frac.bytes().any(|b| b != b'0');
    if sign == NUMERIC_NEG && nonzero {
        out.push('-');
    }
    out.push_str(int_part);
    if dscale > 0 {
        out.push('.');
        out.push_str(&frac);
    }
    Ok(out)
}

fn numeric_header(ndigits: usize, weight: i16, sign: u16, dscale: u16) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + 2 * ndigits);
    // ndigits ≤ (input length)/4 + 2 and weight is in i16 range, so this cannot truncate in practice;
    // saturate rather than wrap to stay panic-free.
    v.extend_from_slice(&u16::try_from(ndigits).unwrap_or(u16::MAX).to_be_bytes());
    v.extend_from_slice(&weight.to_be_bytes());
    v.extend_from_slice(&sign.to_be_bytes());
    v.extend_from_slice(&dscale.to_be_bytes());
    v
}

/// Decimal text → binary numeric exactly as numeric_in followed by numeric_send would produce it.
///
/// Accepts what Postgres 15's numeric_in accepts: surrounding C-locale whitespace is trimmed,
/// optional sign, digits with one optional point (`5.`, `.5`), optional exponent (`1.5e3`,
/// `1e-5`), and case-insensitive `NaN`, `Infinity`/`inf` with optional sign. dscale is the number
/// of fraction digits after applying the exponent, clamped at 0. Out-of-range values fail with
/// the server's `value overflows numeric format`.
pub fn numeric_from_str(s: &str) -> Result<Vec<u8>, PgTextError> {
    let syntax =
        || PgTextError::InvalidNumeric(format!("invalid input syntax for type numeric: \"{s}\""));
    let overflow = || PgTextError::InvalidNumeric("value overflows numeric format".to_owned());
    let t = s.trim_matches(is_c_space);
    let special = |sign: u16, dscale: u16| Ok(numeric_header(0, 0, sign, dscale));
    // numeric_send reports dscale 32 for infinities (an artifact of the header bits); copy it.
    match t.to_ascii_lowercase().as_str() {
        "nan" => return special(NUMERIC_NAN, 0),
        "infinity" | "+infinity" | "inf" | "+inf" => return special(NUMERIC_PINF, 32),
        "-infinity" | "-inf" => return special(NUMERIC_NINF, 32),
        _ => {}
    }
    let all_digits = |p: &str| p.bytes().all(|c| c.is_ascii_digit());
    let (mantissa, exp) = t
        .split_once(['e', 'E'])
        .map_or((t, None), |(m, e)| (m, Some(e)));
    let (negative, mantissa) = strip_sign(mantissa);
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.len() + frac.len() == 0 || !all_digits(int) || !all_digits(frac) {
        return Err(syntax());
    }
    let mut exponent = 0i64;
    if let Some(e) = exp {
        // The server parses the exponent with strtol, which skips leading whitespace.
        let (exp_neg, e) = strip_sign(e.trim_start_matches(is_c_space));
        if e.is_empty() || !all_digits(e) {
            return Err(syntax());
        }
        // Saturate: anything this large is rejected just below anyway.
        let mag = e.bytes().fold(0i64, |acc, c| {
            acc.saturating_mul(10).saturating_add(i64::from(c - b'0'))
        });
        exponent = if exp_neg { -mag } else { mag };
        if !(-NUMERIC_EXP_LIMIT < exponent && exponent < NUMERIC_EXP_LIMIT) {
            return Err(overflow());
        }
    }
    let len_i64 = |p: &str| i64::try_from(p.len()).map_err(|_| overflow());
    let dscale = (len_i64(frac)? - exponent).max(0);
    if dscale > NUMERIC_DSCALE_MAX {
        return Err(overflow());
    }
    let dscale = u16::try_from(dscale).map_err(|_| overflow())?;
    let digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|c| c - b'0').collect();
    let lead = digits.iter().take_while(|&&d| d == 0).count();
    let trail = digits.iter().rev().take_while(|&&d| d == 0).count();
    if lead == digits.len() {
        // Zero is always sent positive with weight 0 but keeps its dscale (`0.000`).
        return Ok(numeric_header(0, 0, NUMERIC_POS, dscale));
    }
    let sig = digits.get(lead..digits.len() - trail).unwrap_or_default();
    // Decimal weight (power of ten) of the first significant digit.
    let dweight = len_i64(int)? + exponent - 1 - i64::try_from(lead).map_err(|_| overflow())?;
    let weight = i16::try_from(dweight.div_euclid(4)).map_err(|_| overflow())?;
    // Zero-pad in front so the first significant digit lands at its place in the first group.
    let mut dec = vec![0u8; usize::try_from(3 - dweight.rem_euclid(4)).unwrap_or(0)];
    dec.extend_from_slice(sig);
    let groups: Vec<u16> = dec
        .chunks(4)
        .map(|c| (0..4).fold(0u16, |acc, k| acc * 10 + u16::from(*c.get(k).unwrap_or(&0))))
        .collect();
    let sign = if negative { NUMERIC_NEG } else { NUMERIC_POS };
    let mut out = numeric_header(groups.len(), weight, sign, dscale);
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    Ok(out)
}

/// Splits an optional leading `+`/`-`; true if it was `-`.
fn strip_sign(s: &str) -> (bool, &str) {
    match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    }
}

#[cfg(test)]
mod tests {
    //! Hex vectors and expected strings were produced by PostgreSQL 15.20:
    //! `encode(<type>_send(v), 'hex')` for the bytes, the server's own output for the text.
    use super::super::test_support::{hex, rows, unhex};
    use super::*;

    /// numeric_in text | numeric_send hex | numeric_out text
    const NUMERIC: &str = "
        0|0000000000000000|0
        0.000|0000000000000003|0.000
        -0|0000000000000000|0
        -0.5|0001ffff400000011388|-0.5
        1e-20|0001fffb000000140001|0.00000000000000000001
        1.50|000200000000000200011388|1.50
        -1.50|000200004000000200011388|-1.50
        NaN|00000000c0000000|NaN
        Infinity|00000000d0000020|Infinity
        -Infinity|00000000f0000020|-Infinity
        12345.6789|0003000100000004000109291a85|12345.6789
        10000|00010001000000000001|10000
        0.0001|0001ffff000000040001|0.0001
        1.5e3|000100000000000005dc|1500
        1.234e2|0002000000000001007b0fa0|123.4
        9999.9999|0002000000000004270f270f|9999.9999
        0.00001|0001fffe0000000503e8|0.00001
        1.5e-1|0001ffff0000000205dc|0.15
        99999e-5|0002ffff00000005270f2328|0.99999
        00012.3400|0002000000000004000c0d48|12.3400
        .5|0001ffff000000011388|0.5
        +.5|0001ffff000000011388|0.5
        5.|00010000000000000005|5
        5.e3|00010000000000001388|5000
        1e 5|0001000100000000000a|100000
        1E-3|0001ffff00000003000a|0.001
        0e100000000|0000000000000000|0
        nan|00000000c0000000|NaN
        -inf|00000000f0000020|-Infinity
        +INFINITY|00000000d0000020|Infinity
        1e999|000100f90000000003e8|1e999
        1e131071|00017fff0000000003e8|1e131071
        0.1e131072|00017fff0000000003e8|1e131071
        1e-16383|0001f00000003fff000a|1e-16383
        123456789012345678901234567890.123456789|000b000700000009000c0d801ed204d2162e23340d801ed204d2162e2328|123456789012345678901234567890.123456789";

    #[test]
    fn numeric_table() {
        for r in rows(NUMERIC) {
            let (input, wire) = (r[0], r[1]);
            assert_eq!(hex(&numeric_from_str(input).unwrap()), wire, "{input:?}");
            // `1eN` in the expected column abbreviates a power of ten too long to spell out.
            let expect = match r[2].strip_prefix("1e").map(str::parse::<usize>) {
                Some(Ok(n)) => format!("1{}", "0".repeat(n)),
                _ => match r[2].strip_prefix("1e-").map(str::parse::<usize>) {
                    Some(Ok(n)) => format!("0.{}1", "0".repeat(n - 1)),
                    _ => r[2].to_owned(),
                },
            };
            assert_eq!(numeric_to_string(&unhex(wire)).unwrap(), expect, "{wire}");
        }
        assert_eq!(
            hex(&numeric_from_str(" 1.5\u{0B}").unwrap()),
            "000200000000000100011388"
        );
        let long = [
            (
                format!("1{}", "0".repeat(100)),
                "00010019000000000001".to_owned(),
            ),
            (
                "9".repeat(1000),
                format!("00fa00f900000000{}", "270f".repeat(250)),
            ),
            (
                format!("{}.{}", "9".repeat(600), "1".repeat(400)),
                format!(
                    "00fa009500000190{}{}",
                    "270f".repeat(150),
                    "0457".repeat(100)
                ),
            ),
            (
                format!("-0.{}1234", "0".repeat(996)),
                "0001ff06400003e804d2".to_owned(),
            ),
        ];
        for (text, wire) in long {
            assert_eq!(hex(&numeric_from_str(&text).unwrap()), wire);
            assert_eq!(numeric_to_string(&unhex(&wire)).unwrap(), text);
        }
    }

    /// Non-normalised wire values loaded into the server with COPY BINARY | what it then printed.
    const NUMERIC_RECV: &str = "
        000200010000000000000005|5
        000200000000000000050000|5
        000200000000000200010929|1.23
        0000000040000002|0.00
        0001ffff400000020001|0.00
        0001ffff0000000304d2|0.123
        00010003000000000007|7000000000000
        00010000c00000000005|NaN
        00000000d0000005|Infinity
        0001fffb000000000001|0
        0003000040000006000000000000|0.000000";

    #[test]
    fn numeric_unnormalised_and_invalid() {
        for r in rows(NUMERIC_RECV) {
            assert_eq!(numeric_to_string(&unhex(r[0])).unwrap(), r[1], "{}", r[0]);
        }
        // empty, short header, missing digit, trailing byte, digit 10000, bad sign, dscale 0x4000
        for b in "|00000000000000|0001000000000000|0000000000000000ff|00010000000000002710|0000000012340000|0000000000004000".split('|') {
            assert!(matches!(numeric_to_string(&unhex(b)), Err(Malformed(_))), "{b}");
        }
        // First five overflow, the rest are syntax errors, all per the server.
        let bad = "1e131072|1e-16384|0e-20000|1e1073741823|1e99999999999999999999|.|1e|e5|-NaN|1 2|+-1|--1|1e--1|1e+-1|infinityx|1_000|0x10||1.2.3|1 e5";
        for (i, b) in bad.split('|').enumerate() {
            let want = if i < 5 {
                "value overflows numeric format".to_owned()
            } else {
                format!("invalid input syntax for type numeric: \"{b}\"")
            };
            assert!(
                matches!(numeric_from_str(b), Err(PgTextError::InvalidNumeric(m)) if m == want),
                "{b:?}"
            );
        }
    }
}
