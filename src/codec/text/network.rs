//! Owns inet/cidr and macaddr/macaddr8 text output.

use std::fmt::Write as _;

use super::PgTextError::{self, Malformed};
use super::bytes;

fn push_ipv6(out: &mut String, a: &[u8; 16]) {
    let words: [u16; 8] = std::array::from_fn(|k| u16::from_be_bytes([a[2 * k], a[2 * k + 1]]));
    // Longest run of zero words, the first on ties, compressed only if ≥ 2 long (inet_net_ntop_ipv6).
    let (mut base, mut len, mut i) = (0, 0, 0);
    while i < words.len() {
        let run = words[i..].iter().take_while(|&&w| w == 0).count();
        if run > len {
            (base, len) = (i, run);
        }
        i += run.max(1);
    }
    if len < 2 {
        len = 0;
    }
    for (i, &w) in words.iter().enumerate() {
        if (base..base + len).contains(&i) {
            if i == base {
                out.push(':');
            }
            continue;
        }
        if i != 0 {
            out.push(':');
        }
        // Embedded IPv4 (`::a.b.c.d`, `::ffff:a.b.c.d`). Upstream also lists a run of 7, but word 6
        // is then inside the run and skipped, which is why Postgres prints `::2`, not `::0.0.0.2`.
        if i == 6 && base == 0 && (len == 6 || (len == 5 && words[5] == 0xffff)) {
            let _ = write!(out, "{}.{}.{}.{}", a[12], a[13], a[14], a[15]);
            break;
        }
        let _ = write!(out, "{w:x}");
    }
    if len > 0 && base + len == words.len() {
        out.push(':');
    }
}

/// Binary inet/cidr → Postgres text: `/bits` only when not full-length for inet, always for cidr.
pub fn inet_to_string(raw: &[u8]) -> Result<String, PgTextError> {
    let [family, bits, is_cidr, nb] = bytes::<4>(raw, 0)?;
    let addr = raw.get(4..).unwrap_or_default();
    if usize::from(nb) != addr.len() {
        return Err(Malformed("inet address length mismatch"));
    }
    let mut out = String::with_capacity(48);
    let max_bits = match (family, addr) {
        (2, [a, b, c, d]) => {
            let _ = write!(out, "{a}.{b}.{c}.{d}");
            32
        }
        (3, _) => {
            let a = <&[u8; 16]>::try_from(addr).map_err(|_| Malformed("IPv6 needs 16 bytes"))?;
            push_ipv6(&mut out, a);
            128
        }
        _ => return Err(Malformed("invalid inet family or length")),
    };
    if bits > max_bits {
        return Err(Malformed("inet bits out of range"));
    }
    if is_cidr != 0 || bits != max_bits {
        let _ = write!(out, "/{bits}");
    }
    Ok(out)
}

/// 6-byte macaddr or 8-byte macaddr8 → lowercase colon-separated hex (`08:00:2b:01:02:03`).
pub fn macaddr_to_string(raw: &[u8]) -> Result<String, PgTextError> {
    if raw.len() != 6 && raw.len() != 8 {
        return Err(Malformed("macaddr must be 6 or 8 bytes"));
    }
    let mut out = String::with_capacity(raw.len() * 3);
    for (i, b) in raw.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{b:02x}");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    //! Hex vectors and expected strings were produced by PostgreSQL 15.20:
    //! `encode(<type>_send(v), 'hex')` for the bytes, the server's own output for the text.
    use super::super::test_support::{rows, unhex};
    use super::*;

    /// inet_send / cidr_send hex | output text
    const INETS: &str = "
        022000040a000001|10.0.0.1
        020800040a000000|10.0.0.0/8
        0200000400000000|0.0.0.0/0
        02200004ffffffff|255.255.255.255
        022001040a000001|10.0.0.1/32
        020801040a000000|10.0.0.0/8
        02180104c0a80100|192.168.1.0/24
        0380001000000000000000000000000000000001|::1
        0380001000000000000000000000000000000000|::
        0380011000000000000000000000000000000000|::/128
        0300001000000000000000000000000000000000|::/0
        0320011020010db8000000000000000000000000|2001:db8::/32
        0380001000000000000000000000ffff01020304|::ffff:1.2.3.4
        0380011000000000000000000000ffff01020304|::ffff:1.2.3.4/128
        0378001000000000000000000000ffff01020304|::ffff:1.2.3.4/120
        0380001000000000000000000000ffff00000000|::ffff:0.0.0.0
        0380001000000000000000000000000001020304|::1.2.3.4
        0380001000000000000000000000000000000002|::2
        038000100000000000000000ffff000001020304|::ffff:0:102:304
        0380001000010000000000000000ffff01020304|1::ffff:102:304
        03400010fe800000000000000000000000000001|fe80::1/64
        0380001020010db8000000000001000000000001|2001:db8::1:0:0:1
        0380001020010000000000010000000000000001|2001:0:0:1::1
        0380001000010000000000000000000000000000|1::
        0380001000010002000300040005000600070008|1:2:3:4:5:6:7:8
        0380001000000000000000000000000100000000|::1:0:0
        0380001000000000000000000001000000000000|::1:0:0:0
        0380001000010000000000010000000000010000|1::1:0:0:1:0
        037f001000000000000000000000000000000001|::1/127
        0380011020010db8000000000000000000000001|2001:db8::1/128";

    #[test]
    fn inet_table() {
        for r in rows(INETS) {
            assert_eq!(inet_to_string(&unhex(r[0])).unwrap(), r[1], "{}", r[0]);
        }
        // short, nb mismatch, IPv4 with 5 bytes, bits 33, family 4, IPv6 with 4 bytes
        for b in "022000|022000040a0000|022000050a00000100|022100040a000001|0480001000000000000000000000000000000000|03800004ffffffff".split('|') {
            assert!(inet_to_string(&unhex(b)).is_err(), "{b}");
        }
    }

    /// macaddr_send / macaddr8_send hex | output text
    const MACS: &str = "
        08002b010203|08:00:2b:01:02:03
        ffff00010203|ff:ff:00:01:02:03
        08002b0102030405|08:00:2b:01:02:03:04:05";

    #[test]
    fn macaddr_table() {
        for r in rows(MACS) {
            assert_eq!(macaddr_to_string(&unhex(r[0])).unwrap(), r[1], "{}", r[0]);
        }
        assert!(matches!(
            macaddr_to_string(&unhex("08002b0102")),
            Err(Malformed(_))
        ));
    }
}
