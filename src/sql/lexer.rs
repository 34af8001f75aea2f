//! The one SQL lexer: PostgreSQL's lexical rules for everything the sidecar decides from a
//! statement's text. Quoted text (`'...'` with `''`, `E'...'` with backslash escapes, `U&`,
//! `B`, `X` and `N` prefixes, dollar quoting `$tag$...$tag$`), quoted identifiers, and both
//! comment styles (nested `/* */` and `--`) are tokens of their own, so a keyword inside any
//! of them is never taken for one outside. No parsing beyond this.

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A keyword or unquoted identifier (letters, digits, `_`, `$`).
    Word,
    /// A `"quoted identifier"`, quotes included.
    QuotedIdent,
    /// A string constant of any form, quotes and prefix included.
    String,
    /// A numeric constant.
    Number,
    /// A positional parameter, `$1`.
    Param,
    /// A comment of either style.
    Comment,
    /// Any other character (operators, punctuation).
    Punct,
}

/// One token and where it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    /// What it is.
    pub kind: Kind,
    /// Its text as written.
    pub text: &'a str,
    /// Whitespace came before it.
    pub spaced: bool,
}

/// The tokens of a SQL text; whitespace is not a token. Never fails: an unterminated quote
/// or comment runs to the end of the text, as PostgreSQL would report it.
#[derive(Debug, Clone)]
pub struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

/// Tokens of `sql`.
pub fn tokens(sql: &str) -> Lexer<'_> {
    Lexer { src: sql, pos: 0 }
}

impl<'a> Lexer<'a> {
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    /// Byte length of a quoted run starting at the opening `quote` at `start` (relative to
    /// `rest`), the doubled quote being an escaped one, and backslash escaping when
    /// `backslash`.
    fn quoted_len(rest: &str, start: usize, quote: u8, backslash: bool) -> usize {
        let bytes = rest.as_bytes();
        let mut i = start + 1;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if backslash => i += 2,
                q if q == quote => {
                    if bytes.get(i + 1) == Some(&quote) {
                        i += 2;
                    } else {
                        return i + 1;
                    }
                }
                _ => i += 1,
            }
        }
        bytes.len()
    }

    /// Length of a dollar-quoted string at the start of `rest`, if one starts there.
    fn dollar_quoted_len(rest: &str) -> Option<usize> {
        let body = &rest[1..];
        let tag_len = body.find('$')?;
        let tag = &body[..tag_len];
        // PostgreSQL's rule (scan.l, dolq_start and dolq_cont) is by byte: ASCII letters,
        // `_`, and every non-ASCII character, then digits too. Testing "alphabetic" instead
        // would miss `$€$...$€$` and show the quoted text as words.
        let tag_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || !c.is_ascii();
        let starts_well = tag.chars().next().is_none_or(|c| !c.is_ascii_digit());
        if !starts_well || !tag.chars().all(tag_char) {
            return None;
        }
        let delimiter = &rest[..tag_len + 2];
        let after = &rest[delimiter.len()..];
        Some(match after.find(delimiter) {
            Some(end) => delimiter.len() + end + delimiter.len(),
            None => rest.len(),
        })
    }

    /// Length of a nested `/* */` comment at the start of `rest`.
    fn block_comment_len(rest: &str) -> usize {
        let bytes = rest.as_bytes();
        let (mut depth, mut i) = (0usize, 0usize);
        while i + 1 < bytes.len() {
            match (bytes[i], bytes[i + 1]) {
                (b'/', b'*') => {
                    depth += 1;
                    i += 2;
                }
                (b'*', b'/') => {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        return i;
                    }
                }
                _ => i += 1,
            }
        }
        bytes.len()
    }

    /// The kind and byte length of the token at the start of `rest` (not whitespace).
    fn next_token(rest: &str) -> (Kind, usize) {
        let bytes = rest.as_bytes();
        let at = |i: usize| bytes.get(i).copied().unwrap_or(0);
        let c = rest.chars().next().expect("not at the end");
        match (at(0), at(1), at(2)) {
            (b'-', b'-', _) => (Kind::Comment, rest.find('\n').unwrap_or(rest.len())),
            (b'/', b'*', _) => (Kind::Comment, Self::block_comment_len(rest)),
            (b'\'', _, _) => (Kind::String, Self::quoted_len(rest, 0, b'\'', false)),
            (b'"', _, _) => (Kind::QuotedIdent, Self::quoted_len(rest, 0, b'"', false)),
            (b'E' | b'e', b'\'', _) => (Kind::String, Self::quoted_len(rest, 1, b'\'', true)),
            (b'B' | b'b' | b'X' | b'x' | b'N' | b'n', b'\'', _) => {
                (Kind::String, Self::quoted_len(rest, 1, b'\'', false))
            }
            (b'U' | b'u', b'&', b'\'') => (Kind::String, Self::quoted_len(rest, 2, b'\'', false)),
            (b'U' | b'u', b'&', b'"') => {
                (Kind::QuotedIdent, Self::quoted_len(rest, 2, b'"', false))
            }
            (b'$', d, _) if d.is_ascii_digit() => {
                let digits = rest[1..].find(|c: char| !c.is_ascii_digit());
                (Kind::Param, 1 + digits.unwrap_or(rest.len() - 1))
            }
            (b'$', _, _) => match Self::dollar_quoted_len(rest) {
                Some(len) => (Kind::String, len),
                None => (Kind::Punct, 1),
            },
            (d, _, _) if d.is_ascii_digit() || (d == b'.' && at(1).is_ascii_digit()) => {
                (Kind::Number, Self::number_len(rest))
            }
            _ if c.is_alphabetic() || c == '_' => {
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
                    .unwrap_or(rest.len());
                (Kind::Word, end)
            }
            _ => (Kind::Punct, c.len_utf8()),
        }
    }

    /// Length of a numeric constant: digits, a point, an exponent with its sign, and the
    /// letters of hex, octal and binary forms or a trailing junk suffix PostgreSQL rejects.
    fn number_len(rest: &str) -> usize {
        let bytes = rest.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            let exponent_sign = matches!(b, b'+' | b'-')
                && i > 0
                && matches!(bytes[i - 1], b'e' | b'E')
                && !rest[..i].starts_with("0x");
            if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || exponent_sign {
                i += 1;
            } else {
                break;
            }
        }
        i
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        let rest = self.rest();
        let trimmed = rest.trim_start();
        let spaced = trimmed.len() < rest.len();
        self.pos += rest.len() - trimmed.len();
        if trimmed.is_empty() {
            return None;
        }
        let (kind, len) = Self::next_token(trimmed);
        // Never split a character, whatever a malformed input holds.
        let mut len = len.clamp(1, trimmed.len());
        while !trimmed.is_char_boundary(len) {
            len += 1;
        }
        self.pos += len;
        Some(Token {
            kind,
            text: &trimmed[..len],
            spaced,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<(Kind, &str)> {
        tokens(sql).map(|t| (t.kind, t.text)).collect()
    }

    #[test]
    fn quotes_comments_and_dollar_quoting_are_single_tokens() {
        use Kind::*;
        assert_eq!(
            kinds(
                "SELECT 'it''s', E'a\\'b', $q$ SET x $q$, \"A\"\"b\" -- SET\n/* a /* SET */ b */ $1"
            ),
            vec![
                (Word, "SELECT"),
                (String, "'it''s'"),
                (Punct, ","),
                (String, "E'a\\'b'"),
                (Punct, ","),
                (String, "$q$ SET x $q$"),
                (Punct, ","),
                (QuotedIdent, "\"A\"\"b\""),
                (Comment, "-- SET"),
                (Comment, "/* a /* SET */ b */"),
                (Param, "$1"),
            ]
        );
        assert_eq!(
            kinds("U&'d\\0061t' u&\"x\" B'101' 1.5e-3 .5 x$y"),
            vec![
                (String, "U&'d\\0061t'"),
                (QuotedIdent, "u&\"x\""),
                (String, "B'101'"),
                (Number, "1.5e-3"),
                (Number, ".5"),
                (Word, "x$y"),
            ]
        );
    }

    #[test]
    fn dollar_quote_tags_follow_postgres_rules() {
        use Kind::*;
        for sql in ["$€$ x $€$", "$_1$ x $_1$", "$é$ x $é$", "$$ x $$"] {
            assert_eq!(kinds(sql), vec![(String, sql)], "{sql}");
        }
        // A tag cannot start with a digit: `$1` is a parameter.
        assert_eq!(kinds("$1$")[0], (Param, "$1"));
        assert_eq!(kinds("$a-b$")[0], (Punct, "$"));
    }

    #[test]
    fn unterminated_text_runs_to_the_end_and_nothing_panics() {
        for sql in [
            "'abc",
            "$a$ never",
            "/* open",
            "\"id",
            "E'\\",
            "é'",
            "$",
            "U&",
            "1e",
        ] {
            let all: std::string::String = tokens(sql).map(|t| t.text).collect();
            assert_eq!(all.replace(' ', ""), sql.replace(' ', ""), "{sql}");
        }
    }
}
