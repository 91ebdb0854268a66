//! Tool-call ids across dialects. Each API validates its own: Anthropic wants
//! `^[a-zA-Z0-9_-]+$`, OpenAI Chat at most 40 characters, Responses `call_id`s at most 64; ids from OpenAI-compatible servers
//! may break either rule (`functions.Bash:0`). An id that fits is kept as it is; one that does
//! not is replaced by one derived from it, the same for the call and for its result, in the
//! stream and in every later request that carries it: no table is kept, the client's next
//! turn simply sends the derived id back, and it fits.

use std::borrow::Cow;

/// Longest id kept as it is for Anthropic (observed: 30 first-party, 35 on Vertex).
const ANTHROPIC_MAX: usize = 64;
/// OpenAI's limit on `tool_calls[].id`.
const CHAT_MAX: usize = 40;
/// The Responses API's reported limit on `call_id`.
const RESPONSES_MAX: usize = 64;

/// `id` as Anthropic Messages accepts it.
pub(crate) fn anthropic(id: &str) -> Cow<'_, str> {
    let fits = !id.is_empty()
        && id.len() <= ANTHROPIC_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if fits {
        Cow::Borrowed(id)
    } else {
        Cow::Owned(derived("toolu_", &[id]))
    }
}

/// `id` as OpenAI Chat Completions accepts it.
pub(crate) fn chat(id: &str) -> Cow<'_, str> {
    let fits = !id.is_empty() && id.len() <= CHAT_MAX && !id.chars().any(char::is_control);
    if fits {
        Cow::Borrowed(id)
    } else {
        Cow::Owned(derived("call_", &[id]))
    }
}

/// `id` as the OpenAI Responses API accepts it (a `call_id`).
pub(crate) fn responses(id: &str) -> Cow<'_, str> {
    let fits = !id.is_empty() && id.len() <= RESPONSES_MAX && !id.chars().any(char::is_control);
    if fits {
        Cow::Borrowed(id)
    } else {
        Cow::Owned(derived("call_", &[id]))
    }
}

/// An id for a call that came without one, made from what identifies it (the message's id,
/// its position, its name and arguments), so that the same answer gets the same id.
pub(crate) fn minted(prefix: &str, seed: &[&str]) -> String {
    derived(prefix, seed)
}

/// `prefix` and 24 characters of `[A-Za-z0-9]` from two FNV-1a hashes of `parts`: ids the
/// size of real ones (`toolu_` + 24, `call_` + 24), valid in every dialect.
fn derived(prefix: &str, parts: &[&str]) -> String {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(prefix.len() + 24);
    out.push_str(prefix);
    for basis in [0xcbf2_9ce4_8422_2325_u64, 0x6c62_272e_07bb_0142] {
        let mut hash = basis;
        for (i, part) in parts.iter().enumerate() {
            // A separator between parts, so that ("ab", "c") and ("a", "bc") differ.
            for b in part.bytes().chain([0xff, i as u8]) {
                hash ^= u64::from(b);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        for _ in 0..12 {
            out.push(ALPHABET[(hash % 62) as usize] as char);
            hash /= 62;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_fit_are_kept_as_they_are() {
        for id in [
            "toolu_01A09q90qw90lq917835lq9",
            "toolu_vrtx_01AbC",
            "call_abc-DEF_123",
        ] {
            assert!(matches!(anthropic(id), Cow::Borrowed(_)), "{id}");
            assert!(matches!(chat(id), Cow::Borrowed(_)), "{id}");
        }
        assert!(matches!(chat("functions.Bash:0"), Cow::Borrowed(_)));
    }

    #[test]
    fn ids_that_do_not_fit_are_derived_stably_and_fit() {
        let odd = "functions.Bash:0";
        let a = anthropic(odd);
        assert_eq!(a, anthropic(odd), "the same id for the call and its result");
        assert!(a.starts_with("toolu_") && a.len() == 30);
        assert!(
            matches!(anthropic(&a), Cow::Borrowed(_)),
            "a derived id fits as it is"
        );
        assert_ne!(a, anthropic("functions.Bash:1"));
        let long = "x".repeat(41);
        let c = chat(&long);
        assert!(c.starts_with("call_") && c.len() == 29);
        assert!(matches!(chat(&c), Cow::Borrowed(_)));
        assert!(
            matches!(responses(&long), Cow::Borrowed(_)),
            "41 fits in 64"
        );
        let longer = "x".repeat(65);
        let r = responses(&longer);
        assert!(r.starts_with("call_") && r.len() == 29);
        assert_eq!(r, responses(&longer));
        for empty in [anthropic(""), chat(""), responses("")] {
            assert!(empty.len() > 5);
        }
        assert_ne!(minted("call_", &["a", "bc"]), minted("call_", &["ab", "c"]));
    }
}
