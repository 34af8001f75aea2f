//! Owns bit/varbit and pg_lsn text output.

use super::PgTextError::{self, Malformed};
use super::bytes;

/// Binary bit/varbit (i32 bit length, then packed bytes) → `0`/`1` string; pad bits are ignored as varbit_recv masks them.
pub fn bits_to_string(raw: &[u8]) -> Result<String, PgTextError> {
    let len = usize::try_from(i32::from_be_bytes(bytes(raw, 0)?))
        .map_err(|_| Malformed("negative bit length"))?;
    let data = raw.get(4..).unwrap_or_default();
    if data.len() != len.div_ceil(8) {
        return Err(Malformed("bit length does not match data"));
    }
    Ok(data
        .iter()
        .flat_map(|&byte| {
            (0..8)
                .rev()
                .map(move |k| if byte >> k & 1 == 1 { '1' } else { '0' })
        })
        .take(len)
        .collect())
}

/// Binary pg_lsn (u64) → `%X/%X` of its high and low 32 bits, e.g. `16/B374D848`.
pub fn pg_lsn_to_string(raw: &[u8]) -> Result<String, PgTextError> {
    if raw.len() != 8 {
        return Err(Malformed("pg_lsn must be 8 bytes"));
    }
    let v = u64::from_be_bytes(bytes(raw, 0)?);
    Ok(format!("{:X}/{:X}", v >> 32, v & 0xFFFF_FFFF))
}

#[cfg(test)]
mod tests {
    //! Hex vectors and expected strings were produced by PostgreSQL 15.20:
    //! `encode(<type>_send(v), 'hex')` for the bytes, the server's own output for the text.
    use super::super::test_support::{rows, unhex};
    use super::*;

    /// bit_send / varbit_send / pg_lsn_send hex | output text
    const BITS_LSN: &str = "
        bit|00000003a0|101
        bit|00000000|
        bit|0000000180|1
        bit|00000008b3|10110011
        bit|00000009b380|101100111
        bit|000000100000|0000000000000000
        bit|00000011ffff80|11111111111111111
        bit|00000003bf|101
        lsn|00000016b374d848|16/B374D848
        lsn|0000000000000000|0/0
        lsn|ffffffffffffffff|FFFFFFFF/FFFFFFFF
        lsn|0000000100000000|1/0
        lsn|0000000a00000abc|A/ABC";

    #[test]
    fn bits_lsn_table() {
        let f = |kind: &str| match kind {
            "bit" => bits_to_string,
            _ => pg_lsn_to_string,
        };
        for r in rows(BITS_LSN) {
            assert_eq!(f(r[0])(&unhex(r[1])).unwrap(), r[2], "{}", r[1]);
        }
        for bad in [
            "bit|000000",
            "bit|00000009b3",
            "bit|ffffffff",
            "bit|00000001ffff",
            "lsn|00000016b374d8",
        ] {
            let (kind, h) = bad.split_once('|').unwrap();
            assert!(matches!(f(kind)(&unhex(h)), Err(Malformed(_))), "{bad}");
        }
    }
}
