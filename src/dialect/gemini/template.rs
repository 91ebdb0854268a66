//! Gemini's fast path: a chunk read as the last plain-text chunk with other text and other
//! counts, without parsing the rest of it.

use crate::json::scan_literal;
use crate::relay::item::Literal;

/// The bytes around the text of a chunk that was one piece of text and nothing else. A chunk
/// that matches them, but for its text and the digits of its numbers, is valid JSON of the
/// same shape: its text can be read, and the chunk forwarded, without parsing the rest.
#[derive(Debug, Clone)]
pub(super) struct Template {
    head: Box<[u8]>,
    tail: Box<[u8]>,
    /// Where the usage counts lie in `tail`: the only numbers that may differ.
    counts: std::ops::Range<usize>,
}

impl Template {
    pub(super) fn new(data: &str, text: Literal, usage: Option<&str>) -> Option<Template> {
        let literal = text.raw(data);
        let start = (literal.as_ptr() as usize).checked_sub(data.as_ptr() as usize)?;
        let end = start + literal.len();
        let counts = match usage {
            Some(usage) => {
                let at = (usage.as_ptr() as usize).checked_sub(data.as_ptr() as usize)?;
                at.checked_sub(end)?..at - end + usage.len()
            }
            None => 0..0,
        };
        Some(Template {
            head: data.as_bytes().get(..start)?.into(),
            tail: data.as_bytes().get(end..)?.into(),
            counts,
        })
    }

    /// What `data` holds, if it fits.
    pub(super) fn text_of<'a>(&self, data: &'a [u8]) -> Option<Fitted<'a>> {
        let rest = data.strip_prefix(&*self.head)?;
        let scanned = scan_literal(rest)?;
        let (literal, tail) = rest.split_at(scanned.len);
        if !same_but_counts(&self.tail, tail, &self.counts) {
            return None;
        }
        // Only digits inside the counts differ: what precedes and follows them is the same.
        let usage = if self.counts.is_empty() {
            None
        } else {
            let after = self.tail.len().checked_sub(self.counts.end)?;
            tail.get(self.counts.start..tail.len().checked_sub(after)?)
        };
        Some(Fitted {
            literal,
            plain: scanned.plain,
            usage,
        })
    }
}

/// A chunk that fits a [`Template`].
pub(super) struct Fitted<'a> {
    /// Its text, a JSON string literal.
    pub(super) literal: &'a [u8],
    /// The literal has no escapes.
    pub(super) plain: bool,
    /// Its `usageMetadata` object, if the template has one.
    pub(super) usage: Option<&'a [u8]>,
}

/// Whether `got` is `want` with some integers within `counts` (a range of `want`) replaced by
/// other integers (counts that grew): every other byte the same, no integer given a leading
/// zero, nothing inside a string changed.
pub(super) fn same_but_counts(want: &[u8], got: &[u8], counts: &std::ops::Range<usize>) -> bool {
    let run = |s: &[u8], at: usize| {
        s.get(at..)
            .map_or(0, |r| r.iter().take_while(|b| b.is_ascii_digit()).count())
    };
    let (mut i, mut j) = (0, 0);
    let mut in_string = false;
    let mut escaped = false;
    while i < want.len() || j < got.len() {
        let (w, g) = (want.get(i).copied(), got.get(j).copied());
        // An integer begins after a space, a colon, a comma or a bracket, never in a string.
        let integer = !in_string
            && counts.contains(&i)
            && w.is_some_and(|b| b.is_ascii_digit())
            && i.checked_sub(1)
                .and_then(|p| want.get(p))
                .is_some_and(|p| matches!(p, b' ' | b':' | b',' | b'['));
        if integer {
            let (a, b) = (run(want, i), run(got, j));
            let whole = !matches!(want.get(i + a), Some(b'.' | b'e' | b'E'));
            if !whole || b == 0 || (b > 1 && g == Some(b'0')) {
                return false;
            }
            i += a;
            j += b;
            continue;
        }
        if w != g {
            return false;
        }
        let b = w.unwrap_or(0);
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        }
        i += 1;
        j += 1;
    }
    true
}
