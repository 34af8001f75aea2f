//! Owns the literal forms of arrays, ranges and records: element and field quoting, the one
//! array-literal writer, and their text output rebuilt from binary.

use postgres_protocol::types as wire;
use tokio_postgres::types::Type;

use super::super::decode::{DecodeError, Nested, malformed, printed_by_server};
use super::{is_c_space, text_form};

/// Appends one record_out field: quoted if empty or containing `"\(),` or whitespace, with `"` and `\` doubled.
///
/// A NULL field is printed as nothing at all; the caller handles that (it never reaches here).
pub fn quote_composite_field(s: &str, out: &mut String) {
    quote_doubling(s, &['"', '\\', '(', ')', ','], out);
}

/// Appends one range_out bound: as a record field, and also quoted when it contains `[` or
/// `]` (`range_bound_escape` in PostgreSQL's rangetypes.c), so `["[",z)` stays readable.
fn quote_range_bound(s: &str, out: &mut String) {
    quote_doubling(s, &['"', '\\', '(', ')', '[', ']', ','], out);
}

/// Quotes `s` if it is empty or contains one of `special` or whitespace, doubling `"` and
/// `\` inside: the escaping record_out and range_out share.
fn quote_doubling(s: &str, special: &[char], out: &mut String) {
    let quote = s.is_empty() || s.chars().any(|c| special.contains(&c) || is_c_space(c));
    if quote {
        out.push('"');
    }
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push(c);
        }
        out.push(c);
    }
    if quote {
        out.push('"');
    }
}

/// Appends one array_out element: quoted if empty, `NULL` in any case, or containing `{}",\` or whitespace; `"` and `\` get a backslash.
///
/// A NULL element is the bare word `NULL`, which the caller writes (it never reaches here).
pub fn quote_array_element(s: &str, out: &mut String) {
    let quote = s.is_empty()
        || s.eq_ignore_ascii_case("NULL")
        || s.chars()
            .any(|c| matches!(c, '{' | '}' | '"' | ',' | '\\') || is_c_space(c));
    if quote {
        out.push('"');
    }
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    if quote {
        out.push('"');
    }
}

/// Appends the array literal `{a,"b c",NULL}` (nested `{{..},{..}}` per dimension) for
/// `dims` lengths, outermost first, taking elements in row-major order; `None` is NULL.
///
/// The one writer for both directions: array text output (decode) and array parameters
/// that must go as a literal (encode).
pub(crate) fn write_array_literal(
    dims: &[usize],
    cells: &mut impl Iterator<Item = Option<String>>,
    out: &mut String,
) {
    out.push('{');
    if let [len, rest @ ..] = dims {
        for i in 0..*len {
            if i > 0 {
                out.push(',');
            }
            if rest.is_empty() {
                match cells.next().flatten() {
                    Some(text) => quote_array_element(&text, out),
                    None => out.push_str("NULL"),
                }
            } else {
                write_array_literal(rest, cells, out);
            }
        }
    }
    out.push('}');
}

/// Appends array_out's dimension decoration, `[lower:upper]` per dimension then `=`, when
/// any of `lowers` is not 1 ("[0:1]={a,b}"); nothing otherwise.
pub(crate) fn write_array_bounds(lens: &[usize], lowers: &[i32], out: &mut String) {
    if lowers.iter().all(|&lower| lower == 1) {
        return;
    }
    for (&len, &lower) in lens.iter().zip(lowers) {
        out.push_str(&format!("[{lower}:{}]", i64::from(lower) + len as i64 - 1));
    }
    out.push('=');
}

/// An array's dimensions (length, lower bound; outermost first) and its elements' text in
/// order, `None` for NULL.
type ElementTexts = (Vec<(usize, i32)>, Vec<Option<String>>);

/// A binary array's [`ElementTexts`]. A header claiming more elements than the bytes could
/// hold is malformed, never an allocation of that size.
fn element_texts<'r>(
    ty: &Type,
    elem: &Type,
    raw: &'r [u8],
    nested: &mut Nested<'r>,
) -> Result<ElementTexts, DecodeError> {
    use fallible_iterator::FallibleIterator;
    let arr = wire::array_from_sql(raw).map_err(|e| malformed(ty, e))?;
    let dims: Vec<(usize, i32)> = arr
        .dimensions()
        .map(|d| Ok((usize::try_from(d.len).unwrap_or(0), d.lower_bound)))
        .collect()
        .map_err(|e| malformed(ty, e))?;
    let claimed = dims
        .iter()
        .try_fold(1usize, |n, &(len, _)| n.checked_mul(len));
    if claimed.is_none_or(|n| n > raw.len() / 4) {
        return Err(malformed(
            ty,
            "dimensions claim more elements than the value holds",
        ));
    }
    let cells = arr
        .values()
        .map_err(|e| malformed(ty, e))
        .map(|cell| cell.map(|raw| text_form(elem, raw, nested)).transpose())
        .collect()?;
    Ok((dims, cells))
}

/// A binary array → its text form, with `[lower:upper]=` dimension decoration when any
/// lower bound is not 1.
pub(super) fn array_text<'r>(
    ty: &Type,
    elem: &Type,
    raw: &'r [u8],
    nested: &mut Nested<'r>,
) -> Result<String, DecodeError> {
    let (dims, cells) = element_texts(ty, elem, raw, nested)?;
    if cells.is_empty() {
        return Ok("{}".into());
    }
    let mut out = String::new();
    let (lens, lowers): (Vec<usize>, Vec<i32>) = dims.into_iter().unzip();
    write_array_bounds(&lens, &lowers, &mut out);
    write_array_literal(&lens, &mut cells.into_iter(), &mut out);
    Ok(out)
}

/// A binary int2vector or oidvector → its elements' text separated by spaces, as
/// int2vectorout and oidvectorout print them (`1 2 3`, empty for none).
pub(super) fn vector_text<'r>(
    ty: &Type,
    elem: &Type,
    raw: &'r [u8],
    nested: &mut Nested<'r>,
) -> Result<String, DecodeError> {
    let (_, cells) = element_texts(ty, elem, raw, nested)?;
    let texts: Option<Vec<String>> = cells.into_iter().collect();
    texts
        .map(|t| t.join(" "))
        .ok_or_else(|| malformed(ty, "a NULL element in a vector"))
}

/// A binary range → `empty` or `[lower,upper)` style text; an infinite bound is left empty.
pub(super) fn range_text<'r>(
    ty: &Type,
    elem: &Type,
    raw: &'r [u8],
    nested: &mut Nested<'r>,
) -> Result<String, DecodeError> {
    use wire::{Range, RangeBound};
    let range = wire::range_from_sql(raw).map_err(|e| malformed(ty, e))?;
    let Range::Nonempty(lower, upper) = range else {
        return Ok("empty".into());
    };
    let mut out = String::new();
    let mut bound = |b: &RangeBound<Option<&'r [u8]>>, out: &mut String| {
        match b {
            RangeBound::Inclusive(Some(v)) | RangeBound::Exclusive(Some(v)) => {
                quote_range_bound(&text_form(elem, v, nested)?, out);
            }
            _ => {}
        }
        Ok::<(), DecodeError>(())
    };
    out.push(if matches!(lower, RangeBound::Inclusive(_)) {
        '['
    } else {
        '('
    });
    bound(&lower, &mut out)?;
    out.push(',');
    bound(&upper, &mut out)?;
    out.push(if matches!(upper, RangeBound::Inclusive(_)) {
        ']'
    } else {
        ')'
    });
    Ok(out)
}

/// Record binary form: field count, then per field its type OID, length (-1 for NULL) and
/// bytes. Text form: `(1,"a b",)` with NULL fields left empty.
///
/// A composite type's own field list (`fields`) is authoritative: it knows the user types
/// (enums, other composites) that an OID alone does not. An anonymous record (`None`) has
/// only the OIDs; a field of a type not decoded here is printed through `nested`.
pub(super) fn record_text<'r>(
    ty: &Type,
    fields: Option<&[&Type]>,
    raw: &'r [u8],
    nested: &mut Nested<'r>,
) -> Result<String, DecodeError> {
    let mut buf = raw;
    let mut take = |n: usize| -> Result<&'r [u8], DecodeError> {
        if buf.len() < n {
            return Err(malformed(ty, "truncated record"));
        }
        let (head, tail) = buf.split_at(n);
        buf = tail;
        Ok(head)
    };
    let word = |b: &[u8]| i32::from_be_bytes(b.try_into().expect("4 bytes"));
    let count =
        usize::try_from(word(take(4)?)).map_err(|_| malformed(ty, "negative field count"))?;
    if fields.is_some_and(|f| f.len() != count) {
        return Err(malformed(ty, "field count differs from the type"));
    }
    let mut out = String::from("(");
    for i in 0..count {
        if i > 0 {
            out.push(',');
        }
        let oid = word(take(4)?) as u32;
        let len = word(take(4)?);
        let Ok(len) = usize::try_from(len) else {
            continue; // NULL: nothing between the commas
        };
        let value = take(len)?;
        let text = match fields {
            Some(fields) => text_form(fields[i], value, nested)?,
            None => match Type::from_oid(oid) {
                Some(field) if !printed_by_server(&field) => text_form(&field, value, nested)?,
                known => {
                    // A user type (enum, domain, composite) or one printed by PostgreSQL:
                    // the OID is all PostgreSQL needs to read the value back.
                    let field = known.unwrap_or_else(|| unnamed_type(oid));
                    nested.text(&field, value)?
                }
            },
        };
        quote_composite_field(&text, &mut out);
    }
    if !buf.is_empty() {
        return Err(malformed(ty, "bytes after the last field"));
    }
    out.push(')');
    Ok(out)
}

/// A type known only by its OID, for sending a value of it back to PostgreSQL.
fn unnamed_type(oid: u32) -> Type {
    use tokio_postgres::types::Kind;
    Type::new(format!("oid {oid}"), oid, Kind::Simple, "pg_catalog".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_table() {
        // value, then the server's row(value)::text and array[value]::text
        let cases = [
            ("abc", "(abc)", "{abc}"),
            ("", r#"("")"#, r#"{""}"#),
            ("NULL", "(NULL)", r#"{"NULL"}"#),
            ("NuLl", "(NuLl)", r#"{"NuLl"}"#),
            ("Nulls", "(Nulls)", "{Nulls}"),
            ("a b", r#"("a b")"#, r#"{"a b"}"#),
            (r#"a"b"#, r#"("a""b")"#, r#"{"a\"b"}"#),
            (r"a\b", r#"("a\\b")"#, r#"{"a\\b"}"#),
            ("a,b", r#"("a,b")"#, r#"{"a,b"}"#),
            ("(x)", r#"("(x)")"#, "{(x)}"),
            ("{x}", "({x})", r#"{"{x}"}"#),
            ("a\u{0B}b", "(\"a\u{0B}b\")", "{\"a\u{0B}b\"}"),
            ("a\tb", "(\"a\tb\")", "{\"a\tb\"}"),
            ("a\u{0C}b", "(\"a\u{0C}b\")", "{\"a\u{0C}b\"}"),
            ("a\rb", "(\"a\rb\")", "{\"a\rb\"}"),
            ("a\nb", "(\"a\nb\")", "{\"a\nb\"}"),
            ("héllo", "(héllo)", "{héllo}"),
            ("a;b", "(a;b)", "{a;b}"),
            ("é\u{A0}", "(é\u{A0})", "{é\u{A0}}"),
            ("\"", r#"("""")"#, r#"{"\""}"#),
        ];
        for (value, record, array) in cases {
            let (mut r, mut a) = ("(".to_owned(), "{".to_owned());
            quote_composite_field(value, &mut r);
            quote_array_element(value, &mut a);
            assert_eq!(
                (r + ")", a + "}"),
                (record.to_owned(), array.to_owned()),
                "{value:?}"
            );
        }
    }

    #[test]
    fn array_literals_nest_quote_and_write_null() {
        let write = |dims: &[usize], cells: &[Option<&str>]| {
            let mut out = String::new();
            let mut it = cells.iter().map(|c| c.map(str::to_owned));
            write_array_literal(dims, &mut it, &mut out);
            out
        };
        assert_eq!(write(&[], &[]), "{}");
        assert_eq!(write(&[0], &[]), "{}");
        assert_eq!(
            write(&[3], &[Some("a"), None, Some("b c")]),
            r#"{a,NULL,"b c"}"#
        );
        assert_eq!(
            write(&[2, 2], &[Some("1"), Some("NULL"), None, Some("")]),
            r#"{{1,"NULL"},{NULL,""}}"#
        );
        assert_eq!(write(&[2, 0], &[]), "{{},{}}");
    }

    #[test]
    fn array_text_decorates_non_default_lower_bounds() {
        // int4[] with ndim 1, no nulls, element int4, 2 elements from lower bound 0.
        let mut raw = Vec::new();
        for word in [1i32, 0, 23, 2, 0, 4, 7, 4, 8] {
            raw.extend_from_slice(&word.to_be_bytes());
        }
        let mut nested = Nested::Collect(Vec::new());
        let text = array_text(&Type::INT4_ARRAY, &Type::INT4, &raw, &mut nested).unwrap();
        assert_eq!(text, "[0:1]={7,8}");
    }

    /// An anonymous record's binary form: (type OID, bytes or NULL) per field.
    fn record(fields: &[(u32, Option<&[u8]>)]) -> Vec<u8> {
        let mut raw = (fields.len() as i32).to_be_bytes().to_vec();
        for (oid, value) in fields {
            raw.extend_from_slice(&oid.to_be_bytes());
            match value {
                Some(v) => {
                    raw.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    raw.extend_from_slice(v);
                }
                None => raw.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        raw
    }

    #[test]
    fn records_print_known_fields_and_collect_the_others_in_order() {
        let point = [0u8; 16];
        let raw = record(&[
            (23, Some(&7i32.to_be_bytes())),
            (600, Some(&point)),
            (25, None),
            (25, Some(b"a b")),
            (987_654, Some(b"\x01")),
        ]);
        let mut nested = Nested::Collect(Vec::new());
        let first = record_text(&Type::RECORD, None, &raw, &mut nested).unwrap();
        let Nested::Collect(pieces) = nested else {
            unreachable!()
        };
        let oids: Vec<u32> = pieces.iter().map(|(ty, _)| ty.oid()).collect();
        assert_eq!(
            oids,
            [600, 987_654],
            "point and an unknown OID, in field order"
        );
        assert_eq!(
            first, r#"(7,"",,"a b","")"#,
            "placeholders stand in meanwhile"
        );
        let mut fill = Nested::Fill(vec!["(0,0)".to_owned(), "x".to_owned()].into_iter());
        let text = record_text(&Type::RECORD, None, &raw, &mut fill).unwrap();
        assert_eq!(text, r#"(7,"(0,0)",,"a b",x)"#);
        // Too few texts is an error, not a panic or a silent blank.
        let mut short = Nested::Fill(vec!["(0,0)".to_owned()].into_iter());
        assert!(record_text(&Type::RECORD, None, &raw, &mut short).is_err());
    }

    #[test]
    fn malformed_records_are_errors() {
        let good = record(&[(23, Some(&1i32.to_be_bytes()))]);
        let mut nested = Nested::Collect(Vec::new());
        let trailing = [&good[..], &[0][..]].concat();
        let bad: [&[u8]; 4] = [
            &good[..good.len() - 1], // truncated value
            &trailing,               // bytes after the last field
            &(-1i32).to_be_bytes(),  // negative count
            &i32::MAX.to_be_bytes(), // a count with nothing behind it
        ];
        for raw in bad {
            assert!(record_text(&Type::RECORD, None, raw, &mut nested).is_err());
        }
        // A composite whose field count differs from its type's.
        let fields = [&Type::INT4, &Type::INT4];
        assert!(record_text(&Type::RECORD, Some(&fields), &good, &mut nested).is_err());
    }
}
