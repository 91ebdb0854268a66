//! Chat's fast path: the chunk nearly every stream is made of (one piece of text or of
//! reasoning), recognized whatever order its keys come in and proven valid JSON in one walk,
//! without building anything. Anything else is left to the general reader.

use super::ReasoningKey;
use crate::json::scan_literal;
use crate::walk;

/// What a chunk that is nothing but one piece of text or reasoning holds.
#[derive(Debug)]
pub(super) struct Piece<'a> {
    /// Reasoning, under this key (its literal, quotes included); `None` for answer text.
    pub(super) reasoning: Option<(ReasoningKey, &'a str)>,
    /// The JSON string literal, quotes included, that reads exactly.
    pub(super) literal: &'a str,
    pub(super) plain: bool,
}

/// The chunk nearly every stream is made of, proven valid JSON in one walk whatever order its
/// keys come in: one choice (`index` 0 or absent, `finish_reason` null or absent) whose delta
/// has one piece of text (`content`) or of reasoning (`reasoning_content`, `reasoning`), every
/// other delta member null; no `error`, no `usage` but null. `None` for anything else (or any
/// escaped key, which could hide a second member of the same name), which the general reader
/// then reads.
pub(super) fn fast_piece(data: &str) -> Option<Piece<'_>> {
    let b = data.as_bytes();
    let mut found = None;
    let mut choices = false;
    walk::document(b, |i| {
        walk::object(b, i, 0, |key, at| {
            if !key.plain {
                return None;
            }
            match key.raw {
                b"\"choices\"" => {
                    if std::mem::replace(&mut choices, true) {
                        return None;
                    }
                    walk::array(b, at, 1, |n, at| {
                        (n == 0).then_some(())?;
                        fast_choice(b, at, &mut found)
                    })
                }
                b"\"error\"" | b"\"usage\"" => walk::null(b, at),
                _ => walk::value(b, at, 1),
            }
        })
    })?;
    let found: Found = found?;
    let reasoning = match found.reasoning {
        Some((key, at)) => Some((key, data.get(at..at + key_len(key))?)),
        None => None,
    };
    Some(Piece {
        reasoning,
        literal: data.get(found.literal.0..found.literal.1)?,
        plain: found.plain,
    })
}

/// Where [`fast_piece`] found its piece.
struct Found {
    /// Reasoning: its key, and where the key's literal starts.
    reasoning: Option<(ReasoningKey, usize)>,
    literal: (usize, usize),
    plain: bool,
}

fn key_len(key: ReasoningKey) -> usize {
    match key {
        ReasoningKey::Content => "\"reasoning_content\"".len(),
        ReasoningKey::Plain => "\"reasoning\"".len(),
    }
}

/// The only choice of a [`fast_piece`] chunk.
fn fast_choice(b: &[u8], at: usize, found: &mut Option<Found>) -> Option<usize> {
    let mut delta = false;
    walk::object(b, at, 2, |key, at| {
        if !key.plain {
            return None;
        }
        match key.raw {
            b"\"index\"" => (b.get(at) == Some(&b'0')).then_some(at + 1),
            b"\"finish_reason\"" => walk::null(b, at),
            b"\"delta\"" => {
                if std::mem::replace(&mut delta, true) {
                    return None;
                }
                fast_delta(b, at, found)
            }
            _ => walk::value(b, at, 3),
        }
    })
}

/// The delta of a [`fast_piece`] chunk: one piece, every other member null.
fn fast_delta(b: &[u8], at: usize, found: &mut Option<Found>) -> Option<usize> {
    walk::object(b, at, 3, |key, at| {
        if !key.plain {
            return None;
        }
        let reasoning = match key.raw {
            b"\"content\"" => None,
            raw => match ReasoningKey::of(raw) {
                Some(r) => Some((r, key.at)),
                None => return walk::null(b, at),
            },
        };
        if b.get(at) == Some(&b'n') {
            return walk::null(b, at);
        }
        let scanned = scan_literal(b.get(at..)?)?;
        if found.is_some() {
            return None;
        }
        *found = Some(Found {
            reasoning,
            literal: (at, at + scanned.len),
            plain: scanned.plain,
        });
        Some(at + scanned.len)
    })
}
