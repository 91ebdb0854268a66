//! A validating walk over JSON bytes: one pass proves a whole document valid and hands its
//! reader the members it asks for, as slices of the input.
//!
//! The fast paths forward an event as the upstream's own bytes, so they may read only part of
//! it but must know all of it is valid: every value the reader does not care about is still
//! checked here (strings with [`scan_literal`], numbers to the grammar, nesting to a fixed
//! depth). Nothing allocates, nothing indexes past what it checked, and anything doubtful is
//! `None`: the caller then takes its exact, slower path.

use crate::json::scan_literal;

/// Nesting deeper than this is refused, so that hostile input cannot exhaust the stack.
const MAX_DEPTH: u32 = 32;

/// A member's key: its string literal as it came, quotes included.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key<'a> {
    /// Where it starts in the input.
    pub(crate) at: usize,
    pub(crate) raw: &'a [u8],
    /// It has no escape, so its text is what lies between its quotes.
    pub(crate) plain: bool,
}

/// Skips JSON whitespace from `i`.
pub(crate) fn ws(b: &[u8], mut i: usize) -> usize {
    // Servers write compact JSON: one comparison says there is no whitespace here.
    while let Some(&c) = b.get(i) {
        if c > b' ' || !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            break;
        }
        i += 1;
    }
    i
}

/// `b` is exactly one JSON value (whitespace around it allowed), read by `read`, which gets
/// the value's first byte and returns the index just past the value.
pub(crate) fn document(b: &[u8], read: impl FnOnce(usize) -> Option<usize>) -> Option<()> {
    let end = read(ws(b, 0))?;
    (ws(b, end) == b.len()).then_some(())
}

/// Checks the value at `i` (its first byte) and returns the index just past it.
pub(crate) fn value(b: &[u8], i: usize, depth: u32) -> Option<usize> {
    match *b.get(i)? {
        b'"' => Some(i + scan_literal(b.get(i..)?)?.len),
        b'{' => object(b, i, depth, |_, at| value(b, at, depth + 1)),
        b'[' => array(b, i, depth, |_, at| value(b, at, depth + 1)),
        b't' => word(b, i, b"true"),
        b'f' => word(b, i, b"false"),
        b'n' => word(b, i, b"null"),
        _ => number(b, i),
    }
}

/// The literal `null` at `i`: the index past it.
pub(crate) fn null(b: &[u8], i: usize) -> Option<usize> {
    word(b, i, b"null")
}

fn word(b: &[u8], i: usize, w: &[u8]) -> Option<usize> {
    (b.get(i..i + w.len())? == w).then_some(i + w.len())
}

/// A number, to the grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn number(b: &[u8], mut i: usize) -> Option<usize> {
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match *b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i = digits(b, i + 1),
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        let after = digits(b, i + 1);
        if after == i + 1 {
            return None;
        }
        i = after;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        let after = digits(b, i);
        if after == i {
            return None;
        }
        i = after;
    }
    Some(i)
}

fn digits(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// The object at `i`: `member` gets each key and the first byte of its value, and returns the
/// index just past the value (checking it). Returns the index just past the object.
pub(crate) fn object(
    b: &[u8],
    i: usize,
    depth: u32,
    mut member: impl FnMut(Key<'_>, usize) -> Option<usize>,
) -> Option<usize> {
    if depth >= MAX_DEPTH || b.get(i) != Some(&b'{') {
        return None;
    }
    let mut at = ws(b, i + 1);
    if b.get(at) == Some(&b'}') {
        return Some(at + 1);
    }
    loop {
        let scanned = scan_literal(b.get(at..)?)?;
        let key = Key {
            at,
            raw: b.get(at..at + scanned.len)?,
            plain: scanned.plain,
        };
        at = ws(b, at + scanned.len);
        if b.get(at) != Some(&b':') {
            return None;
        }
        at = ws(b, member(key, ws(b, at + 1))?);
        match b.get(at)? {
            b',' => at = ws(b, at + 1),
            b'}' => return Some(at + 1),
            _ => return None,
        }
    }
}

/// The array at `i`: `element` gets each element's position and first byte, and returns the
/// index just past it (checking it). Returns the index just past the array.
pub(crate) fn array(
    b: &[u8],
    i: usize,
    depth: u32,
    mut element: impl FnMut(usize, usize) -> Option<usize>,
) -> Option<usize> {
    if depth >= MAX_DEPTH || b.get(i) != Some(&b'[') {
        return None;
    }
    let mut at = ws(b, i + 1);
    if b.get(at) == Some(&b']') {
        return Some(at + 1);
    }
    let mut n = 0;
    loop {
        at = ws(b, element(n, at)?);
        n += 1;
        match b.get(at)? {
            b',' => at = ws(b, at + 1),
            b']' => return Some(at + 1),
            _ => return None,
        }
    }
}

/// A member of an object read by [`members`]: its key (the literal, quotes included) and its
/// value, as slices of the input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Member<'a> {
    pub(crate) key: &'a str,
    pub(crate) value: &'a str,
}

/// The members `keys` of the object `json` (each `None` when absent), every member checked;
/// `None` when `json` is not exactly one valid object, or names one of `keys` twice (which a
/// client might read either way). Keys are compared by their text, escapes read.
pub(crate) fn members<'a, const N: usize>(
    json: &'a str,
    keys: [&str; N],
) -> Option<[Option<Member<'a>>; N]> {
    let b = json.as_bytes();
    let mut out = [None; N];
    document(b, |i| {
        object(b, i, 0, |key, at| {
            let end = value(b, at, 1)?;
            let literal = json.get(key.at..key.at + key.raw.len())?;
            let found = if key.plain {
                let name = literal.get(1..literal.len() - 1)?;
                keys.iter().position(|k| *k == name)
            } else {
                let name = crate::json::text(literal)?;
                keys.iter().position(|k| *k == name)
            };
            if let Some(k) = found {
                let slot = out.get_mut(k)?;
                if slot.is_some() {
                    return None;
                }
                *slot = Some(Member {
                    key: literal,
                    value: json.get(at..end)?,
                });
            }
            Some(end)
        })
    })?;
    Some(out)
}

/// Hands each element of the array `json` to `each`, in order, as a slice of the input, every
/// one checked; `None` when `json` is not exactly one valid array or `each` says `None`.
pub(crate) fn elements<'a>(
    json: &'a str,
    mut each: impl FnMut(usize, &'a str) -> Option<()>,
) -> Option<()> {
    let b = json.as_bytes();
    document(b, |i| {
        array(b, i, 0, |n, at| {
            let end = value(b, at, 1)?;
            each(n, json.get(at..end)?)?;
            Some(end)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(s: &str) -> bool {
        let b = s.as_bytes();
        document(b, |i| value(b, i, 0)).is_some()
    }

    #[test]
    fn every_valid_document_walks_and_agrees_with_serde() {
        for ok in [
            r#"{}"#,
            r#" { "a" : [ 1 , -2.5e+3 , 0.0 , true , false , null , "x\n\u00e9" , { } , [ ] ] } "#,
            r#"[{"a":{"b":[0,1E5,-0]}}]"#,
            r#""just a string""#,
            "123",
        ] {
            assert!(valid(ok), "{ok}");
            assert!(serde_json::from_str::<serde_json::Value>(ok).is_ok());
        }
    }

    #[test]
    fn anything_invalid_is_refused_without_panicking() {
        let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
        for bad in [
            "",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "[1,]",
            "[1 2]",
            "{\"a\":1}}",
            "{\"a\" 1}",
            "01",
            "1.",
            "1e",
            "-",
            ".5",
            "tru",
            "nul",
            "\"bad \\x escape\"",
            "\"lone \\ud800\"",
            "\"unterminated",
            "{\"a\":\"ends in a backslash\\",
            "{'a':1}",
            "[\"a\"\"b\"]",
            &deep,
        ] {
            assert!(!valid(bad), "{bad:?}");
            // Every prefix of it, too: a truncated event never reads as whole.
            for end in 0..bad.len() {
                if let Some(prefix) = bad.get(..end) {
                    let _ = valid(prefix);
                }
            }
        }
    }

    #[test]
    fn nesting_is_bounded_at_exactly_its_depth() {
        let nested =
            |n: usize, open: &str, close: &str| format!("{}{}", open.repeat(n), close.repeat(n));
        let max = MAX_DEPTH as usize;
        assert!(valid(&nested(max, "[", "]")));
        assert!(!valid(&nested(max + 1, "[", "]")));
        let objects = |n: usize| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
        assert!(valid(&objects(max)));
        assert!(!valid(&objects(max + 1)));
        // Far past the bound, refused without exhausting the stack.
        assert!(!valid(&nested(100_000, "[", "]")));
    }

    #[test]
    fn a_chunk_cut_or_damaged_anywhere_is_refused() {
        let chunk = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":17,"choices":[{"index":0,"delta":{"content":"a\"b\u00e9"},"logprobs":null,"finish_reason":null}],"usage":null}"#;
        assert!(valid(chunk));
        for end in 0..chunk.len() {
            assert!(!valid(&chunk[..end]), "cut at {end}");
        }
        // One byte replaced by something the grammar refuses there (a raw control character,
        // a stray quote or brace): wherever it lands, the chunk is refused or still valid
        // exactly when serde says so.
        for at in 0..chunk.len() {
            for c in [b'\x01', b'"', b'}', b'\\', b'x', b','] {
                let mut bytes = chunk.as_bytes().to_vec();
                bytes[at] = c;
                let serde = serde_json::from_slice::<serde_json::Value>(&bytes).is_ok();
                let b = &bytes[..];
                let ours = document(b, |i| value(b, i, 0)).is_some();
                assert_eq!(
                    ours,
                    serde,
                    "{c:#x} at {at}: {}",
                    String::from_utf8_lossy(b)
                );
            }
        }
    }

    #[test]
    fn members_are_found_by_their_text_and_never_twice() {
        let json = r#"{"b":[1, {"x":2}], "\u0061":"A\n", "c":null, "z":{}}"#;
        let got = members(json, ["a", "b", "c", "d"]).unwrap();
        let values: Vec<Option<&str>> = got.iter().map(|m| m.map(|m| m.value)).collect();
        assert_eq!(
            values,
            [
                Some(r#""A\n""#),
                Some(r#"[1, {"x":2}]"#),
                Some("null"),
                None
            ]
        );
        assert_eq!(got[0].unwrap().key, r#""\u0061""#);
        assert!(
            members(r#"{"a":1,"\u0061":2}"#, ["a"]).is_none(),
            "a key twice"
        );
        assert!(members(r#"{"a":1,"b":2,"b":3}"#, ["a"]).is_some());
        for bad in ["[1]", r#"{"a":1"#, r#"{"a":1} x"#, r#"{"a":tru}"#, ""] {
            assert!(members(bad, ["a"]).is_none(), "{bad}");
        }
        let mut seen = Vec::new();
        elements("[3, [4], 5]", |n, e| {
            seen.push((n, e));
            Some(())
        })
        .unwrap();
        assert_eq!(seen, [(0, "3"), (1, "[4]"), (2, "5")]);
        assert!(elements("[1,", |_, _| Some(())).is_none());
    }

    #[test]
    fn members_and_elements_are_handed_out_in_order() {
        let b = br#"{"x":[10,20],"y":"z"}"#;
        let mut keys = Vec::new();
        let mut elements = Vec::new();
        document(b, |i| {
            object(b, i, 0, |key, at| {
                keys.push(String::from_utf8(key.raw.to_vec()).unwrap());
                if key.raw == b"\"x\"" {
                    array(b, at, 1, |n, at| {
                        let end = value(b, at, 2)?;
                        elements.push((n, &b[at..end]));
                        Some(end)
                    })
                } else {
                    value(b, at, 1)
                }
            })
        })
        .unwrap();
        assert_eq!(keys, [r#""x""#, r#""y""#]);
        assert_eq!(elements, [(0, &b"10"[..]), (1, &b"20"[..])]);
    }
}
