//! PostgreSQL WAL positions (`pg_lsn`): parsed from and printed in PostgreSQL's `X/Y` form,
//! the read-your-writes token clients carry between a write and a later read.

use std::fmt;
use std::str::FromStr;

/// Reads the primary's WAL insert position with what [`Lsn::end_of_data`] needs. The insert
/// position, not the write position: a commit acknowledged under `synchronous_commit=off`
/// may not be written yet, but it is inserted.
pub const INSERT_POSITION_SQL: &str = "SELECT pg_current_wal_insert_lsn()::text, \
     current_setting('wal_block_size'), current_setting('wal_segment_size')";

/// The position [`INSERT_POSITION_SQL`] read, as [`Lsn::end_of_data`]: the columns are
/// the position, the block size in bytes and the segment size as PostgreSQL shows it.
pub fn insert_position(row: &[Option<String>]) -> Option<Lsn> {
    let cell = |i: usize| row.get(i)?.as_deref();
    let lsn: Lsn = cell(0)?.parse().ok()?;
    let block: u64 = cell(1)?.parse().ok()?;
    let segment = size_in_bytes(cell(2)?)?;
    Some(lsn.end_of_data(block, segment))
}

/// `16MB`, `1GB`, `8192` (as `SHOW` prints a size) in bytes.
fn size_in_bytes(shown: &str) -> Option<u64> {
    let digits = shown
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(shown.len());
    let (n, unit) = shown.split_at(digits);
    let n: u64 = n.parse().ok()?;
    let unit = match unit.trim() {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(unit).filter(|&b| b > 0)
}

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

/// Page header sizes of WAL pages (PostgreSQL's `SizeOfXLogShortPHD`, `SizeOfXLogLongPHD`,
/// the latter on the first page of each segment).
const SHORT_PAGE_HEADER: u64 = 24;
const LONG_PAGE_HEADER: u64 = 40;

impl Lsn {
    /// The insert position with a page header just begun taken off: where the last record
    /// ended. `pg_current_wal_insert_lsn()` points past the header of a page no record has
    /// been written on yet, which a standby's replay never reaches until more WAL comes;
    /// after a segment switch on an idle primary that is for good.
    pub fn end_of_data(self, block: u64, segment: u64) -> Lsn {
        if block == 0 || segment == 0 {
            return self;
        }
        let (in_segment, in_page) = (self.0 % segment, self.0 % block);
        if in_segment == LONG_PAGE_HEADER {
            Lsn(self.0 - LONG_PAGE_HEADER)
        } else if in_segment >= block && in_page == SHORT_PAGE_HEADER {
            Lsn(self.0 - SHORT_PAGE_HEADER)
        } else {
            self
        }
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
    use super::{Lsn, insert_position};

    #[test]
    fn a_page_header_just_begun_is_not_data() {
        let (block, segment) = (8192, 16 << 20);
        let at = |s: &str| {
            s.parse::<Lsn>()
                .unwrap()
                .end_of_data(block, segment)
                .to_string()
        };
        assert_eq!(
            at("0/3000028"),
            "0/3000000",
            "a segment's first page: long header"
        );
        assert_eq!(at("0/3002018"), "0/3002000", "any other page: short header");
        assert_eq!(
            at("0/3002028"),
            "0/3002028",
            "40 bytes into a later page is data"
        );
        assert_eq!(
            at("0/3000018"),
            "0/3000018",
            "24 bytes into a first page cannot be"
        );
        assert_eq!(at("0/3001F48"), "0/3001F48");
        let row = [Some("0/3000028"), Some("8192"), Some("16MB")].map(|c| c.map(str::to_owned));
        assert_eq!(insert_position(&row), Some("0/3000000".parse().unwrap()));
        let bad = [Some("0/5"), Some("x"), Some("16MB")].map(|c| c.map(str::to_owned));
        assert_eq!(insert_position(&bad), None);
        assert_eq!(super::size_in_bytes("1GB"), Some(1 << 30));
        assert_eq!(super::size_in_bytes("64kB"), Some(64 << 10));
        assert_eq!(super::size_in_bytes("0MB"), None);
    }

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
