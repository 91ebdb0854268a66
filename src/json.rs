//! Small JSON tools for the hot path and for request rewriting.
//!
//! Events are read with borrowed, typed structs (`&str`, `&RawValue`), so reading a delta does
//! not allocate; a string's text is unescaped straight into the transcript. Requests are
//! rewritten by splicing bytes at the spans serde_json reports, so a 1 MB body is read once and
//! copied once, never turned into a `Value` tree.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// Appends the text of a JSON string literal (quotes included) to `out`. Returns false, leaving
/// `out` possibly extended, if the literal is not a valid JSON string.
pub(crate) fn unescape_into(literal: &str, out: &mut String) -> bool {
    let Some(inner) = literal.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return false;
    };
    let mut rest = inner;
    while let Some(at) = memchr::memchr(b'\\', rest.as_bytes()) {
        out.push_str(&rest[..at]);
        let esc = &rest[at + 1..];
        let mut chars = esc.chars();
        let c = match chars.next() {
            Some('n') => '\n',
            Some('t') => '\t',
            Some('r') => '\r',
            Some('"') => '"',
            Some('\\') => '\\',
            Some('/') => '/',
            Some('b') => '\u{8}',
            Some('f') => '\u{c}',
            Some('u') => {
                let Some((c, used)) = unicode_escape(&esc[1..]) else {
                    return false;
                };
                out.push(c);
                rest = &esc[1 + used..];
                continue;
            }
            _ => return false,
        };
        out.push(c);
        rest = &esc[1..];
    }
    out.push_str(rest);
    true
}

/// Decodes `XXXX` (and a following `\uXXXX` low surrogate); returns the char and bytes used.
fn unicode_escape(s: &str) -> Option<(char, usize)> {
    let hi = u32::from_str_radix(s.get(..4)?, 16).ok()?;
    if (0xD800..0xDC00).contains(&hi) {
        let lo_part = s.get(4..10)?.strip_prefix("\\u")?;
        let lo = u32::from_str_radix(lo_part, 16).ok()?;
        if !(0xDC00..0xE000).contains(&lo) {
            return Some(('\u{FFFD}', 4));
        }
        let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
        return Some((char::from_u32(c)?, 10));
    }
    Some((char::from_u32(hi).unwrap_or('\u{FFFD}'), 4))
}

/// Writes `s` as a JSON string literal.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(out, s).expect("writing a str to a Vec cannot fail");
}

/// `s` as a JSON string literal.
pub(crate) fn string_literal(s: &str) -> String {
    serde_json::to_string(s).expect("a str always serializes")
}

/// Reads the top level of a JSON object into `T`. Derived structs would also accept an array
/// (fields by position), which no request body is.
pub(crate) fn object<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, String> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err("not a JSON object".into());
    }
    serde_json::from_slice(body).map_err(|e| e.to_string())
}

/// What rewriting a request needs, read from its body in one pass: on its first failure,
/// then kept for every later attempt, so a large body is read once however many plans use it.
#[derive(Debug, Default)]
pub(crate) struct RequestIndex {
    /// Why the body cannot be rewritten at all.
    pub(crate) unusable: Option<String>,
    pub(crate) model: Option<Range<usize>>,
    pub(crate) model_name: Option<String>,
    pub(crate) has_messages: bool,
    pub(crate) last_message: Option<Range<usize>>,
    pub(crate) last_role: Option<String>,
    pub(crate) max_tokens: Option<Range<usize>>,
    pub(crate) max_completion_tokens: Option<Range<usize>>,
    /// `thinking.type` and `thinking.budget_tokens` (Anthropic).
    pub(crate) thinking: Option<(Option<String>, Option<u64>)>,
    pub(crate) continue_final_message: Option<Range<usize>>,
    pub(crate) add_generation_prompt: Option<Range<usize>>,
}

impl RequestIndex {
    pub(crate) fn read(body: &[u8]) -> Self {
        #[derive(serde::Deserialize)]
        struct Top<'a> {
            #[serde(borrow)]
            model: Option<&'a RawValue>,
            #[serde(borrow)]
            messages: Option<LastOf<'a>>,
            #[serde(borrow)]
            max_tokens: Option<&'a RawValue>,
            #[serde(borrow)]
            max_completion_tokens: Option<&'a RawValue>,
            thinking: Option<Thinking>,
            #[serde(borrow)]
            continue_final_message: Option<&'a RawValue>,
            #[serde(borrow)]
            add_generation_prompt: Option<&'a RawValue>,
        }
        #[derive(serde::Deserialize)]
        struct Thinking {
            #[serde(rename = "type")]
            kind: Option<String>,
            budget_tokens: Option<u64>,
        }
        #[derive(serde::Deserialize)]
        struct Role<'a> {
            #[serde(borrow)]
            role: Option<std::borrow::Cow<'a, str>>,
        }
        let top: Top<'_> = match object(body) {
            Ok(top) => top,
            Err(e) => {
                return RequestIndex {
                    unusable: Some(e),
                    ..RequestIndex::default()
                }
            }
        };
        let at = |raw: Option<&RawValue>| raw.map(|r| span(body, r));
        let last = top.messages.as_ref().and_then(|m| m.last);
        RequestIndex {
            unusable: None,
            model: at(top.model),
            model_name: top.model.and_then(|m| serde_json::from_str(m.get()).ok()),
            has_messages: top.messages.is_some(),
            last_message: at(last),
            last_role: last
                .and_then(|m| serde_json::from_str::<Role<'_>>(m.get()).ok())
                .and_then(|r| r.role)
                .map(|r| r.into_owned()),
            max_tokens: at(top.max_tokens),
            max_completion_tokens: at(top.max_completion_tokens),
            thinking: top.thinking.map(|t| (t.kind, t.budget_tokens)),
            continue_final_message: at(top.continue_final_message),
            add_generation_prompt: at(top.add_generation_prompt),
        }
    }

    /// Reads a token limit's value (a positive integer) from its span.
    pub(crate) fn limit(body: &[u8], span: &Range<usize>) -> Option<u64> {
        std::str::from_utf8(&body[span.clone()]).ok()?.parse().ok()
    }
}

/// Where `raw` lies within `src` (it must have been borrowed from it).
pub(crate) fn span(src: &[u8], raw: &RawValue) -> Range<usize> {
    let start = raw.get().as_ptr() as usize - src.as_ptr() as usize;
    debug_assert!(start + raw.get().len() <= src.len());
    start..start + raw.get().len()
}

/// The elements of a JSON array, read in one pass: how many, and the last one unparsed.
#[derive(Debug)]
pub(crate) struct LastOf<'a> {
    pub(crate) count: usize,
    pub(crate) last: Option<&'a RawValue>,
}

impl<'de: 'a, 'a> Deserialize<'de> for LastOf<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = LastOf<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LastOf<'a>, A::Error> {
                let mut out = LastOf {
                    count: 0,
                    last: None,
                };
                while let Some(item) = seq.next_element::<&'de RawValue>()? {
                    out.count += 1;
                    out.last = Some(item);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

/// The first element of a JSON array, ignoring the rest, without allocating.
#[derive(Debug)]
pub(crate) struct First<T>(pub(crate) Option<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for First<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = First<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<First<T>, A::Error> {
                let first = seq.next_element::<T>()?;
                if first.is_some() {
                    while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                }
                Ok(First(first))
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

/// A new body made of `src` with some spans replaced and some bytes inserted.
#[derive(Debug)]
pub(crate) struct Splice<'a> {
    src: &'a [u8],
    edits: Vec<(Range<usize>, Vec<u8>)>,
}

impl<'a> Splice<'a> {
    pub(crate) fn new(src: &'a [u8]) -> Self {
        Splice {
            src,
            edits: Vec::new(),
        }
    }

    /// Replace `range` of the source with `with`.
    pub(crate) fn replace(&mut self, range: Range<usize>, with: Vec<u8>) {
        self.edits.push((range, with));
    }

    /// Insert `with` at `at`.
    pub(crate) fn insert(&mut self, at: usize, with: Vec<u8>) {
        self.edits.push((at..at, with));
    }

    /// Add `"key":value` to the top-level object (which must be the whole source).
    pub(crate) fn add_key(&mut self, key: &str, value: &[u8]) {
        let end = self
            .src
            .iter()
            .rposition(|&b| b == b'}')
            .expect("the source is a JSON object");
        let mut with = Vec::with_capacity(key.len() + value.len() + 4);
        let empty = self.src[..end]
            .iter()
            .rev()
            .find(|b| !b.is_ascii_whitespace())
            == Some(&b'{');
        if !empty {
            with.push(b',');
        }
        write_str(&mut with, key);
        with.push(b':');
        with.extend_from_slice(value);
        self.insert(end, with);
    }

    /// The new body, built with one allocation.
    pub(crate) fn finish(mut self) -> Bytes {
        self.edits.sort_by_key(|(r, _)| (r.start, r.end));
        let extra: usize = self.edits.iter().map(|(_, w)| w.len()).sum();
        let mut out = BytesMut::with_capacity(self.src.len() + extra);
        let mut at = 0;
        for (range, with) in &self.edits {
            debug_assert!(range.start >= at, "overlapping edits");
            out.put_slice(&self.src[at..range.start]);
            out.put_slice(with);
            at = range.end;
        }
        out.put_slice(&self.src[at..]);
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_handles_every_escape_and_surrogate_pairs() {
        let mut out = String::new();
        assert!(unescape_into(
            r#""a\n\t\"\\\/\u00e9\ud83d\ude00z""#,
            &mut out
        ));
        assert_eq!(out, "a\n\t\"\\/é😀z");
        assert!(!unescape_into(r#""bad \x""#, &mut String::new()));
        assert!(!unescape_into("no quotes", &mut String::new()));
    }

    #[test]
    fn splice_replaces_and_inserts_in_source_order() {
        let src = br#"{"model":"a","messages":[1,2]}"#;
        let mut s = Splice::new(src);
        s.insert(28, b",3".to_vec());
        s.replace(9..12, br#""b""#.to_vec());
        s.add_key("x", b"true");
        assert_eq!(
            &s.finish()[..],
            br#"{"model":"b","messages":[1,2,3],"x":true}"#
        );
    }
}
