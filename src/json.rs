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
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// A JSON string literal that reads exactly: every escape valid, every surrogate escape
/// paired, no raw control character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scanned {
    /// Its length, quotes included.
    pub(crate) len: usize,
    /// It has no escape: its text is what lies between its quotes.
    pub(crate) plain: bool,
}

/// Reads the JSON string literal at the start of `b` (its UTF-8 is not checked here), if it is
/// one that reads exactly; `None` for anything else, including a literal that does not end
/// in `b`. Never looks past the end of `b`.
#[inline]
pub(crate) fn scan_literal(b: &[u8]) -> Option<Scanned> {
    if b.first() != Some(&b'"') {
        return None;
    }
    // Nearly every literal has no escape: that case is a word scan inlined into the caller.
    let i = next_special(b, 1);
    match *b.get(i)? {
        b'"' => Some(Scanned {
            len: i + 1,
            plain: true,
        }),
        b'\\' => scan_escaped(b, i),
        // A raw control character.
        _ => None,
    }
}

/// The rest of [`scan_literal`] from its first escape, at `i`.
#[inline(never)]
fn scan_escaped(b: &[u8], mut i: usize) -> Option<Scanned> {
    loop {
        match *b.get(i)? {
            b'"' => {
                return Some(Scanned {
                    len: i + 1,
                    plain: false,
                })
            }
            b'\\' => i += 1 + escape_len(b.get(i + 1..)?)?,
            // A raw control character.
            _ => return None,
        }
        i = next_special(b, i);
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The index of the first byte from `i` that a string literal cannot hold as it is (`"`, `\`
/// or a control character), or `b.len()` if there is none. Eight bytes at a time while eight
/// remain: a per-byte loop over the chunk's ~20 literals was most of what proving a Chat chunk
/// valid cost.
#[inline]
fn next_special(b: &[u8], mut i: usize) -> usize {
    while let Some(word) = b.get(i..i + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
        let found = specials(u64::from_le_bytes(word));
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            return i;
        }
        i += 1;
    }
    i
}

/// The high bit of each byte of `w` that is `"`, `\` or below 0x20. Exact for the lowest such
/// byte (little-endian: the first in the input), which is all [`next_special`] reads: a
/// subtraction's borrow only carries upward from a byte that is itself flagged. Bytes from 0x80
/// up are never flagged (`!w` clears them).
fn specials(w: u64) -> u64 {
    let quote = (w ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES);
    let backslash = (w ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES);
    let control = w.wrapping_sub(ONES * 0x20);
    (quote | backslash | control) & !w & HIGHS
}

/// The length of the escape after a backslash (`n`, `u00e9`, a `\uXXXX\uXXXX` surrogate
/// pair), if it is valid.
fn escape_len(b: &[u8]) -> Option<usize> {
    match *b.first()? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(1),
        b'u' => match hex4(b.get(1..5)?)? {
            0xD800..=0xDBFF => {
                if b.get(5..7)? != b"\\u" {
                    return None;
                }
                let low = hex4(b.get(7..11)?)?;
                (0xDC00..=0xDFFF).contains(&low).then_some(11)
            }
            0xDC00..=0xDFFF => None,
            _ => Some(5),
        },
        _ => None,
    }
}

fn hex4(b: &[u8]) -> Option<u32> {
    b.iter()
        .try_fold(0, |acc, &c| Some(acc * 16 + (c as char).to_digit(16)?))
}

/// Appends the text of a JSON string literal (quotes included) to `out`. Returns false, leaving
/// `out` possibly extended, if an escape in it is not valid; check the literal with
/// [`scan_literal`] first (it also refuses raw control characters).
pub(crate) fn unescape_into(literal: &str, out: &mut String) -> bool {
    let Some(inner) = literal.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return false;
    };
    let mut rest = inner;
    while let Some(at) = memchr::memchr(b'\\', rest.as_bytes()) {
        out.push_str(&rest[..at]);
        let esc = &rest[at + 1..];
        let Some(len) = escape_len(esc.as_bytes()) else {
            return false;
        };
        let c = match esc.as_bytes()[0] {
            b'n' => '\n',
            b't' => '\t',
            b'r' => '\r',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'u' => {
                let hi = hex4(&esc.as_bytes()[1..5]).unwrap_or(0xFFFD);
                let code = if len == 11 {
                    let lo = hex4(&esc.as_bytes()[7..11]).unwrap_or(0xDC00);
                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                } else {
                    hi
                };
                char::from_u32(code).unwrap_or('\u{FFFD}')
            }
            other => other as char,
        };
        out.push(c);
        rest = &esc[len..];
    }
    out.push_str(rest);
    true
}

/// Writes `s` as a JSON string literal.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(out, s).expect("writing a str to a Vec cannot fail");
}

/// `s` as a JSON string literal.
pub(crate) fn string_literal(s: &str) -> String {
    serde_json::to_string(s).expect("a str always serializes")
}

/// Where a dialect's requests keep what a rewrite reads and changes: key names of the body's
/// top-level object. A name of limits or extra keys may be a dotted path to a member of a
/// nested object (`generationConfig.maxOutputTokens`); no dialect's own keys hold a dot.
#[derive(Debug)]
pub(crate) struct RequestShape {
    /// The model's name (`model`); empty for a dialect whose requests name it in the path.
    pub(crate) model: &'static str,
    /// The conversation, an array of messages (`messages`).
    pub(crate) messages: &'static str,
    /// The conversation may also be one string (Responses' `input`), which
    /// [`Rules::text_turn`](crate::dialect::Rules::text_turn) writes as a turn.
    pub(crate) text_conversation: bool,
    /// Token limits, each shrunk by what was already generated when an answer is continued.
    pub(crate) limits: &'static [&'static str],
    /// Other keys the dialect reads or sets (Anthropic's `thinking`, vLLM's flags).
    pub(crate) extra: &'static [&'static str],
}

/// What rewriting a request needs, read from its body in one pass: on its first failure,
/// then kept for every later attempt, so a large body is read once however many plans use it.
/// The keys it looks for are the dialect's ([`RequestShape`]).
#[derive(Debug, Default)]
pub(crate) struct RequestIndex {
    /// Why the body cannot be rewritten at all.
    pub(crate) unusable: Option<String>,
    /// The body's `model` member, when it has one.
    pub(crate) model: Option<Member>,
    /// The model the request names: in its body, or (see `crate::address`) in its path.
    pub(crate) model_name: Option<String>,
    /// Where the request names its model.
    pub(crate) named: crate::address::Named,
    /// The conversation, when the body has one.
    pub(crate) messages: Option<Messages>,
    /// The token limits and extra keys found: name, where the member lies, the value's JSON
    /// (they are small, and a dialect reads some without the body: Anthropic's `thinking`).
    fields: Vec<(&'static str, Member, Box<str>)>,
}

/// Where one member of an object lies in a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// From its key's opening quote to the end of its value.
    pub(crate) whole: Range<usize>,
    /// Its value.
    pub(crate) value: Range<usize>,
}

/// The part of a request's conversation a continuation touches.
#[derive(Debug, Default)]
pub(crate) struct Messages {
    pub(crate) last: Option<Range<usize>>,
    pub(crate) last_role: Option<String>,
    /// The conversation is one string, here (Responses' `input: "..."`), not an array.
    pub(crate) text: Option<Range<usize>>,
}

impl RequestIndex {
    pub(crate) fn read(body: &[u8], shape: &'static RequestShape) -> Self {
        match top_level(body, shape) {
            Ok(index) => index,
            Err(e) => RequestIndex {
                unusable: Some(e),
                ..RequestIndex::default()
            },
        }
    }

    /// The span of the value of `name` (one of the shape's limits or extra keys).
    pub(crate) fn field(&self, name: &str) -> Option<Range<usize>> {
        self.member(name).map(|m| m.value.clone())
    }

    /// Where the member `name` (one of the shape's limits or extra keys) lies.
    pub(crate) fn member(&self, name: &str) -> Option<&Member> {
        self.fields
            .iter()
            .find(|(n, ..)| *n == name)
            .map(|(_, m, _)| m)
    }

    /// The JSON value of `name` (one of the shape's limits or extra keys), as it came.
    pub(crate) fn value(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, ..)| *n == name)
            .map(|(.., v)| &**v)
    }

    /// Reads a token limit's value (a positive integer) from its span.
    pub(crate) fn limit(body: &[u8], span: &Range<usize>) -> Option<u64> {
        std::str::from_utf8(body.get(span.clone())?)
            .ok()?
            .parse()
            .ok()
    }
}

/// Reads the top level of a request body: the keys `shape` names, each once; for a dotted
/// name, its first key here and the rest inside that member's value.
fn top_level(body: &[u8], shape: &'static RequestShape) -> Result<RequestIndex, String> {
    type Found<'de> = (
        Option<&'de RawValue>,
        Option<LastOf<'de>>,
        Vec<(&'de str, &'de RawValue)>,
    );
    struct Top(&'static RequestShape);
    impl<'de> serde::de::DeserializeSeed<'de> for Top {
        type Value = Found<'de>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Top {
        type Value = Found<'de>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let shape = self.0;
            let (mut model, mut messages, mut fields) = (None, None, Vec::new());
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                let duplicate = || A::Error::custom(format!("duplicate key `{key}`"));
                if !shape.model.is_empty() && key == shape.model {
                    if model.replace(map.next_value::<&'de RawValue>()?).is_some() {
                        return Err(duplicate());
                    }
                } else if key == shape.messages {
                    if messages.replace(map.next_value::<LastOf<'de>>()?).is_some() {
                        return Err(duplicate());
                    }
                } else if let Some(first) = shape
                    .limits
                    .iter()
                    .chain(shape.extra)
                    .map(|n| n.split('.').next().unwrap_or(n))
                    .find(|first| *first == key)
                {
                    if fields.iter().any(|(n, _)| *n == first) {
                        return Err(duplicate());
                    }
                    fields.push((first, map.next_value::<&'de RawValue>()?));
                } else {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
            Ok((model, messages, fields))
        }
    }
    use serde::de::{DeserializeSeed, Error as _};

    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err("not a JSON object".into());
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let (model, messages, top) = Top(shape).deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    #[derive(serde::Deserialize)]
    struct Role<'a> {
        #[serde(borrow)]
        role: Option<std::borrow::Cow<'a, str>>,
    }
    if messages.as_ref().is_some_and(|m| m.text) && !shape.text_conversation {
        return Err(format!("`{}` is a string, not an array", shape.messages));
    }
    let at = |raw: &RawValue| span(body, raw);
    let member = |value: Range<usize>| -> Result<Member, String> {
        let start = member_start(body, value.start)
            .ok_or_else(|| "a member whose key cannot be found".to_owned())?;
        Ok(Member {
            whole: start..value.end,
            value,
        })
    };
    let mut fields = Vec::new();
    for name in shape.limits.iter().chain(shape.extra) {
        let mut path = name.split('.');
        let first = path.next().unwrap_or(name);
        let Some(mut value) = top
            .iter()
            .find(|(n, _)| *n == first)
            .map(|(_, raw)| raw.get())
        else {
            continue;
        };
        // Nested keys are read inside the member's value, which is a slice of `body`.
        let mut found = true;
        for key in path {
            match members(value, [key]) {
                Some([Some(inner)]) => value = inner,
                Some([None]) => {
                    found = false;
                    break;
                }
                None if value.trim() == "null" || !value.starts_with('{') => {
                    found = false;
                    break;
                }
                None => return Err(format!("`{name}`: an object that does not read exactly")),
            }
        }
        if found {
            let value_span = str_span(body, value);
            fields.push((*name, member(value_span)?, value.into()));
        }
    }
    // A conversation given as one string: its span, read in a second pass (rare, and the
    // visitor of the first cannot see where a string lies).
    let text = match &messages {
        Some(m) if m.text => {
            let body = std::str::from_utf8(body).map_err(|e| e.to_string())?;
            let [raw] = members(body, [shape.messages]).ok_or("unreadable")?;
            raw.map(|raw| {
                let start = raw.as_ptr() as usize - body.as_ptr() as usize;
                start..start + raw.len()
            })
        }
        _ => None,
    };
    Ok(RequestIndex {
        unusable: None,
        model: model.map(|m| member(at(m))).transpose()?,
        model_name: model.and_then(|m| serde_json::from_str(m.get()).ok()),
        named: crate::address::Named::Body,
        messages: messages.map(|m| Messages {
            last: m.last.map(at),
            last_role: m
                .last
                .and_then(|m| serde_json::from_str::<Role<'_>>(m.get()).ok())
                .and_then(|r| r.role)
                .map(|r| r.into_owned()),
            text,
        }),
        fields,
    })
}

/// Where the member whose value starts at `value` begins (its key's opening quote), read
/// backwards over `"key"` and the colon: within a key every quote is escaped, so the first
/// quote going back that is not escaped opens it. `None` if the bytes are not a member.
pub(crate) fn member_start(body: &[u8], value: usize) -> Option<usize> {
    let before = body.get(..value)?;
    let colon = before.iter().rposition(|b| !b.is_ascii_whitespace())?;
    if before[colon] != b':' {
        return None;
    }
    let close = before[..colon]
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())?;
    if before[close] != b'"' {
        return None;
    }
    let mut at = close;
    loop {
        at = before[..at].iter().rposition(|&b| b == b'"')?;
        let backslashes = before[..at]
            .iter()
            .rev()
            .take_while(|&&b| b == b'\\')
            .count();
        if backslashes % 2 == 0 {
            return Some(at);
        }
    }
}

/// Where `part` (a slice of `src`) lies within it.
fn str_span(src: &[u8], part: &str) -> Range<usize> {
    let start = (part.as_ptr() as usize).wrapping_sub(src.as_ptr() as usize);
    debug_assert!(start + part.len() <= src.len());
    start..start + part.len()
}

/// Where `raw` lies within `src` (it must have been borrowed from it).
pub(crate) fn span(src: &[u8], raw: &RawValue) -> Range<usize> {
    let start = raw.get().as_ptr() as usize - src.as_ptr() as usize;
    debug_assert!(start + raw.get().len() <= src.len());
    start..start + raw.get().len()
}

/// The elements of a JSON array, read in one pass: how many, and the last one unparsed; or a
/// string in the array's place (`text`).
#[derive(Debug)]
pub(crate) struct LastOf<'a> {
    pub(crate) count: usize,
    pub(crate) last: Option<&'a RawValue>,
    pub(crate) text: bool,
}

impl<'de: 'a, 'a> Deserialize<'de> for LastOf<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = LastOf<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array or a string")
            }
            fn visit_str<E>(self, _: &str) -> Result<LastOf<'a>, E> {
                Ok(LastOf {
                    count: 0,
                    last: None,
                    text: true,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LastOf<'a>, A::Error> {
                let mut out = LastOf {
                    count: 0,
                    last: None,
                    text: false,
                };
                while let Some(item) = seq.next_element::<&'de RawValue>()? {
                    out.count += 1;
                    out.last = Some(item);
                }
                Ok(out)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// The raw JSON text of the members `keys` of the object `json` (each `None` when absent),
/// read in one pass without allocating: the way the dialects read events, so that every
/// piece they hand on is a slice of the event's data. `None` when `json` is not one valid
/// object, or names one of `keys` twice (which a client might read either way).
pub(crate) fn members<'a, const N: usize>(
    json: &'a str,
    keys: [&str; N],
) -> Option<[Option<&'a str>; N]> {
    struct Members<'k, const N: usize>([&'k str; N]);
    impl<'de, const N: usize> serde::de::DeserializeSeed<'de> for Members<'_, N> {
        type Value = [Option<&'de str>; N];
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de, const N: usize> Visitor<'de> for Members<'_, N> {
        type Value = [Option<&'de str>; N];
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = [None; N];
            while let Some(key) = map.next_key_seed(Key(&self.0))? {
                match key {
                    Some(i) => {
                        let value = map.next_value::<&'de RawValue>()?.get();
                        if out[i].replace(value).is_some() {
                            return Err(serde::de::Error::custom("a key twice"));
                        }
                    }
                    None => {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
            }
            Ok(out)
        }
    }
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_str(json);
    let out = Members(keys).deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(out)
}

/// The object `json` with some of its members changed: each edit sets a key to a raw JSON
/// value (`Some`, added at the end when the key is absent) or removes it (`None`). Every other
/// member is kept as it came, in its order. `None` when `json` is not one valid object or names
/// a key twice.
pub(crate) fn patch_members(json: &str, edits: &[(&str, Option<&str>)]) -> Option<String> {
    struct All;
    impl<'de> Visitor<'de> for All {
        type Value = Vec<(std::borrow::Cow<'de, str>, &'de RawValue)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out: Self::Value = Vec::new();
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if out.iter().any(|(k, _)| *k == key) {
                    return Err(serde::de::Error::custom("a key twice"));
                }
                out.push((key, map.next_value()?));
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_str(json);
    let members = de.deserialize_map(All).ok()?;
    de.end().ok()?;
    let mut out = Vec::with_capacity(json.len() + 64);
    out.push(b'{');
    fn member(out: &mut Vec<u8>, key: &str, value: &str) {
        if out.len() > 1 {
            out.push(b',');
        }
        write_str(out, key);
        out.push(b':');
        out.extend_from_slice(value.as_bytes());
    }
    for (key, value) in &members {
        match edits.iter().find(|(k, _)| k == key) {
            Some((_, Some(new))) => member(&mut out, key, new),
            Some((_, None)) => {}
            None => member(&mut out, key, value.get()),
        }
    }
    for (key, value) in edits {
        if let (Some(value), false) = (value, members.iter().any(|(k, _)| k == key)) {
            member(&mut out, key, value);
        }
    }
    out.push(b'}');
    String::from_utf8(out).ok()
}

/// Which of the keys a member's key is, read without allocating (escaped keys included).
struct Key<'a, 'k, const N: usize>(&'a [&'k str; N]);

impl<'de, const N: usize> serde::de::DeserializeSeed<'de> for Key<'_, '_, N> {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for Key<'_, '_, N> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|k| *k == key))
    }
}

/// The raw JSON text of each element of the array `json`; `None` when it is not one valid
/// array.
pub(crate) fn elements(json: &str) -> Option<Vec<&str>> {
    let items: Vec<&RawValue> = serde_json::from_str(json).ok()?;
    Some(items.into_iter().map(RawValue::get).collect())
}

/// The text of the JSON string `raw` (borrowed when it has no escapes); `None` for any other
/// value, or a string that does not read exactly.
pub(crate) fn text(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    let scanned = scan_literal(raw.as_bytes())?;
    if scanned.len != raw.len() {
        return None;
    }
    if scanned.plain {
        return raw.get(1..raw.len() - 1).map(std::borrow::Cow::Borrowed);
    }
    let mut out = String::new();
    unescape_into(raw, &mut out).then_some(std::borrow::Cow::Owned(out))
}

/// `raw` unless it is `null`: a member present with null reads as absent.
pub(crate) fn not_null(raw: Option<&str>) -> Option<&str> {
    raw.filter(|r| *r != "null")
}

/// `v` as JSON bytes.
pub(crate) fn to_vec(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("a Value always serializes")
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

    /// Remove `member` (a member of an object in the source) and the comma that joins it to
    /// a neighbour. The object must keep another member: add keys before, not instead.
    pub(crate) fn remove(&mut self, member: &Member) {
        let src = self.src;
        let before = src[..member.whole.start]
            .iter()
            .rposition(|b| !b.is_ascii_whitespace());
        let range = match before {
            Some(comma) if src[comma] == b',' => comma..member.whole.end,
            _ => {
                // The first member: the comma after it goes with it, if there is one.
                let after = src[member.whole.end..]
                    .iter()
                    .position(|b| !b.is_ascii_whitespace())
                    .map(|p| member.whole.end + p);
                match after {
                    Some(comma) if src[comma] == b',' => member.whole.start..comma + 1,
                    _ => member.whole.clone(),
                }
            }
        };
        self.edits.push((range, Vec::new()));
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
    fn a_literal_reads_exactly_or_not_at_all() {
        let read = |s: &str| scan_literal(s.as_bytes());
        let ok = r#""a\n\"\\\/\u00e9\ud83d\ude00z" tail"#;
        assert_eq!(
            read(ok),
            Some(Scanned {
                len: ok.len() - 5,
                plain: false
            })
        );
        let long = format!("\"{}\"", "x".repeat(100));
        assert_eq!(
            read(&long),
            Some(Scanned {
                len: 102,
                plain: true
            })
        );
        let late = format!("\"{}\\q\"", "x".repeat(40));
        assert_eq!(
            read(&late),
            None,
            "a bad escape past the first sixteen bytes"
        );
        for bad in [
            r#""bad \x""#,
            r#""lone \ud800""#,
            r#""lone \udc00""#,
            r#""unpaired \ud800\u0041""#,
            r#""short \u12""#,
            "\"raw \u{1} control\"",
            "\"tab\tinside\"",
            r#""unterminated"#,
            r#""ends in a backslash\"#,
            r#""\"#,
            r#""\u"#,
            r#""\ud83d\u"#,
            "",
            "x",
        ] {
            assert_eq!(read(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn every_byte_at_every_offset_is_classed_as_the_grammar_says() {
        // Offsets 0 to 20 put the byte in each lane of the eight-byte words and in the
        // byte-by-byte tail, with and without a word after it.
        for c in 0..=255u8 {
            for before in 0..=20 {
                for after in [0, 1, 7, 8, 9, 17] {
                    let mut lit = vec![b'"'];
                    lit.extend(std::iter::repeat_n(b'a', before));
                    lit.push(c);
                    lit.extend(std::iter::repeat_n(b'a', after));
                    lit.push(b'"');
                    let want = match c {
                        b'"' => Some(Scanned {
                            len: before + 2,
                            plain: true,
                        }),
                        // `\a` is no escape.
                        b'\\' => None,
                        c if c < 0x20 => None,
                        _ => Some(Scanned {
                            len: lit.len(),
                            plain: true,
                        }),
                    };
                    assert_eq!(
                        scan_literal(&lit),
                        want,
                        "{c:#x} after {before}, {after} more"
                    );
                }
            }
        }
    }

    #[test]
    fn a_literal_cut_anywhere_never_reads_and_never_panics() {
        let whole = r#""ab\n\u00e9cdefgh\ud83d\ude00ijklmnopq\"\\\/rstu""#;
        assert!(scan_literal(whole.as_bytes()).is_some());
        for end in 0..whole.len() {
            assert_eq!(scan_literal(&whole.as_bytes()[..end]), None, "cut at {end}");
        }
        // An escape's first bytes at the very end of the input, in every lane.
        for before in 0..=17 {
            let head = format!("\"{}", "x".repeat(before));
            for tail in [
                "\\",
                "\\u",
                "\\u0",
                "\\ud83d",
                "\\ud83d\\",
                "\\ud83d\\u",
                "\\ud83d\\ude0",
            ] {
                let cut = format!("{head}{tail}");
                assert_eq!(scan_literal(cut.as_bytes()), None, "{cut:?}");
            }
        }
    }

    #[test]
    fn the_scan_agrees_with_serde_on_escapes_in_every_lane() {
        let escapes = [
            "\\n",
            "\\\"",
            "\\\\",
            "\\/",
            "\\b",
            "\\f",
            "\\r",
            "\\t",
            "\\u0041",
            "\\uD83D\\uDE00",
            "\\x",
            "\\u12G4",
            "\\ud800",
            "\\udc00",
            "\\ud800\\u0041",
            "\\U0041",
            "\\ ",
        ];
        for esc in escapes {
            for before in 0..=17 {
                let lit = format!("\"{}{esc}yz\"", "x".repeat(before));
                let serde_reads = serde_json::from_str::<String>(&lit).is_ok();
                let ours = scan_literal(lit.as_bytes());
                assert_eq!(ours.is_some(), serde_reads, "{lit}");
                if let Some(s) = ours {
                    assert_eq!((s.len, s.plain), (lit.len(), false), "{lit}");
                }
            }
        }
    }

    #[test]
    fn members_are_read_as_they_came_whatever_their_order_or_spelling() {
        let json = r#"{"b":[1, {"x":2}], "\u0061":"A\n", "c":null, "z":{}}"#;
        assert_eq!(
            members(json, ["a", "b", "c", "d"]),
            Some([
                Some(r#""A\n""#),
                Some(r#"[1, {"x":2}]"#),
                Some("null"),
                None
            ])
        );
        assert_eq!(members(r#"{"a":1,"a":2}"#, ["a"]), None, "a key twice");
        assert_eq!(members(r#"{"a":1,"b":2,"b":3}"#, ["a"]), Some([Some("1")]));
        for bad in ["[1]", r#"{"a":1"#, r#"{"a":1} x"#, r#"{"a":tru}"#, ""] {
            assert_eq!(members(bad, ["a"]), None, "{bad}");
        }
        assert_eq!(text(r#""plain""#).as_deref(), Some("plain"));
        assert_eq!(text(r#""a\tb""#).as_deref(), Some("a\tb"));
        assert_eq!(text(r#""bad \x""#), None);
        assert_eq!(text("7"), None);
    }

    const SHAPE: RequestShape = RequestShape {
        model: "model",
        messages: "contents",
        text_conversation: false,
        limits: &["generationConfig.maxOutputTokens", "max_tokens"],
        extra: &["continuationToken", "a.b.c"],
    };

    #[test]
    fn nested_keys_are_found_inside_their_objects_whatever_the_order_and_spacing() {
        let body = br#"{ "a" : {"x":1, "b": {"c" : [2]}}, "contents":[{"role":"user"}],
            "generationConfig": {"temperature": 1, "maxOutputTokens" :  99 }, "model":"m"}"#;
        let index = RequestIndex::read(body, &SHAPE);
        assert_eq!(index.unusable, None);
        let limit = index.field("generationConfig.maxOutputTokens").unwrap();
        assert_eq!(&body[limit.clone()], b"99");
        let member = index.member("generationConfig.maxOutputTokens").unwrap();
        assert_eq!(&body[member.whole.clone()], br#""maxOutputTokens" :  99"#);
        assert_eq!(index.value("a.b.c"), Some("[2]"));
        assert_eq!(index.field("max_tokens"), None);
        let model = index.model.unwrap();
        assert_eq!(&body[model.whole], br#""model":"m""#);
        assert_eq!(index.model_name.as_deref(), Some("m"));
        // Absent or not an object: simply not there.
        let body = br#"{"generationConfig":null,"a":{"b":3},"contents":[]}"#;
        let index = RequestIndex::read(body, &SHAPE);
        assert_eq!(index.unusable, None);
        assert_eq!(index.field("generationConfig.maxOutputTokens"), None);
        assert_eq!(index.field("a.b.c"), None);
        // A key twice, at any depth, is a request a server might read either way.
        for twice in [
            &br#"{"generationConfig":{"maxOutputTokens":1,"maxOutputTokens":2}}"#[..],
            br#"{"generationConfig":{},"generationConfig":{}}"#,
        ] {
            assert!(RequestIndex::read(twice, &SHAPE).unusable.is_some());
        }
    }

    #[test]
    fn a_key_is_found_back_from_its_value_even_with_escaped_quotes() {
        let body = br#"{"a\"b\\" : 1, "\u006dodel":"x"}"#;
        let one = body.iter().position(|&b| b == b'1').unwrap();
        assert_eq!(member_start(body, one), Some(1));
        let x = body.len() - 4;
        assert_eq!(
            &body[member_start(body, x).unwrap()..x],
            br#""\u006dodel":"#
        );
        assert_eq!(member_start(br#"[1]"#, 1), None);
        assert_eq!(member_start(br#"{"a" 1}"#, 5), None);
        assert_eq!(member_start(b"", 0), None);
    }

    #[test]
    fn removing_a_member_takes_one_comma_with_it() {
        let cases: [(&[u8], &[u8]); 4] = [
            (br#"{"model":"m","contents":[]}"#, br#"{"contents":[]}"#),
            (
                br#"{"contents":[] , "model" : "m" }"#,
                br#"{"contents":[]  }"#,
            ),
            (
                br#"{"contents":[],"model":"m","x":1}"#,
                br#"{"contents":[],"x":1}"#,
            ),
            (br#"{ "model":"m" }"#, br#"{  }"#),
        ];
        for (body, want) in cases {
            let index = RequestIndex::read(body, &SHAPE);
            let mut s = Splice::new(body);
            s.remove(index.model.as_ref().unwrap());
            assert_eq!(&s.finish()[..], want, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn patched_members_keep_the_rest_as_it_came_in_its_order() {
        let json = r#"{"z":1, "a":{"b" : [2]},"m":"x"}"#;
        assert_eq!(
            patch_members(json, &[("a", Some("3")), ("m", None), ("n", Some("null"))]).as_deref(),
            Some(r#"{"z":1,"a":3,"n":null}"#)
        );
        assert_eq!(
            patch_members(json, &[]).as_deref(),
            Some(r#"{"z":1,"a":{"b" : [2]},"m":"x"}"#)
        );
        for bad in [r#"{"a":1,"a":2}"#, "[1]", r#"{"a":1"#, r#"{"a":1} x"#] {
            assert_eq!(patch_members(bad, &[]), None, "{bad}");
        }
    }

    #[test]
    fn a_conversation_may_be_one_string_where_the_dialect_allows_it() {
        static SHAPE: RequestShape = RequestShape {
            model: "model",
            messages: "input",
            text_conversation: true,
            limits: &[],
            extra: &[],
        };
        let body = br#"{"model":"m","input":"Say \"hi\"","x":1}"#;
        let index = RequestIndex::read(body, &SHAPE);
        assert!(index.unusable.is_none(), "{:?}", index.unusable);
        let messages = index.messages.unwrap();
        assert_eq!(&body[messages.text.unwrap()], br#""Say \"hi\"""#);
        assert!(messages.last.is_none());
        let index = RequestIndex::read(br#"{"model":"m","input":7}"#, &SHAPE);
        assert!(index.unusable.is_some());
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
