//! PostgreSQL WAL positions (`pg_lsn`): parsed from and printed in PostgreSQL's `X/Y` form,
//! the read-your-writes token clients carry between a write and a later read.

use std::fmt;
use std::str::FromStr;

/// A WAL position; ordered as PostgreSQL orders `pg_lsn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Lsn(pub u64);

impl FromStr for Lsn {
    type Err = &'static str;

    /// `X/Y`, each 1 to 8 hex digits, as `pg_lsn` reads it.
    fn from_str(s: &str) -> Result<Lsn, &'static str> {
        const WANT: &str = "expected a pg_lsn such as 16/B374D848";
        let (hi, lo) = s.split_once('/').ok_or(WANT)?;
        let half = |h: &str| {
            if h.is_empty() || h.len() > 8 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(WANT);
            }
            u32::from_str_radix(h, 16).map_err(|_| WANT)
        };
        Ok(Lsn((u64::from(half(hi)?) << 32) | u64::from(half(lo)?)))
    }
}

impl fmt::Display for Lsn {
    /// As PostgreSQL prints it: upper-case hex, no leading zeros.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

#[cfg(test)]
mod tests {
    use super::Lsn;

    #[test]
    fn lsns_read_and_print_as_postgresql_does() {
        for text in ["0/0", "16/B374D848", "FFFFFFFF/FFFFFFFF", "0/1"] {
            assert_eq!(text.parse::<Lsn>().unwrap().to_string(), text);
        }
        assert_eq!(
            "16/b374d848".parse::<Lsn>().unwrap().to_string(),
            "16/B374D848"
        );
        assert!("0/1".parse::<Lsn>().unwrap() < "1/0".parse::<Lsn>().unwrap());
        for bad in [
            "",
            "/",
            "0/",
            "/0",
            "1",
            "0/123456789",
            "g/0",
            "0/-1",
            "+1/0",
            " 0/0",
        ] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?}");
        }
    }
}
