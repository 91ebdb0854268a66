//! Text an upstream wrote, made safe to log and to show a client.
//!
//! Error messages, error types and transport error text come from the upstream (or from
//! whoever sits between it and the gateway). Two things must not pass through them:
//!
//! * control characters: a newline forges a log line, an ANSI escape reaches the operator's
//!   terminal. [`escape`] writes them as `\n`, `\u{1b}`...;
//! * secrets: an upstream may quote the key it was sent (OpenAI's 401 quotes it masked; a
//!   misconfigured proxy may quote it whole). A [`Redactor`] replaces the keys it was given,
//!   and anything that looks like an API key or a bearer token, before the text is logged or
//!   written to a client.
//!
//! Where upstream words enter the layer, [`Redactor::clean`] does both, in that order: secrets
//! come out of the raw text, where a key is still whole (escaping first would glue the `n` of
//! `\n` to it, and cutting first could leave half of it). Whatever is redacted again later
//! (an escaped description, a raw JSON body) is read escape-aware: a token may start right
//! after `\n` or `\u000a`.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// The most of one upstream-supplied string kept, in bytes: enough for any real error
/// message, and a log line stays a line.
pub(crate) const MAX_TEXT: usize = 2048;

/// What replaces a secret.
const REDACTED: &str = "[redacted]";

/// Characters after `sk-` (or `Bearer `) that make a token: keys are long runs of these.
const MIN_TOKEN: usize = 12;

/// `text` with every control character escaped (C0, DEL, C1, and the bidirectional overrides
/// that reorder what a terminal shows), cut to [`MAX_TEXT`] bytes.
pub(crate) fn escape(text: &str) -> Cow<'_, str> {
    if text.len() <= MAX_TEXT && !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().min(MAX_TEXT) + 16);
    for c in text.chars() {
        if out.len() >= MAX_TEXT {
            out.push_str("...");
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// An error and its causes in one line, control characters escaped: its text may come from
/// the upstream.
pub(crate) fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    escaped(&text)
}

/// [`escape`], into an owned string.
pub(crate) fn escaped(text: &str) -> String {
    escape(text).into_owned()
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Takes secrets out of upstream-supplied text before the layer logs it or writes it to a
/// client: each secret it was given (the keys the gateway sends upstreams), and any token
/// that looks like an API key (`sk-...`) or a bearer credential (`Bearer ...`).
///
/// Give it to the layer with
/// [`MidStreamFallbackLayer::redact`](crate::MidStreamFallbackLayer::redact); use it on
/// upstream error bodies your own code passes on too (the example gateway does).
///
/// ```
/// use tower_midstream::Redactor;
///
/// let redactor = Redactor::new().secret("my-upstream-key-123");
/// assert_eq!(
///     redactor.redact("invalid key my-upstream-key-123"),
///     "invalid key [redacted]"
/// );
/// assert_eq!(
///     redactor.redact("Incorrect API key provided: sk-proj-****************abcd."),
///     "Incorrect API key provided: [redacted]."
/// );
/// ```
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Arc<Vec<Box<[u8]>>>,
}

impl Redactor {
    /// A redactor for key-like tokens only; add the secrets you know with [`Redactor::secret`].
    pub fn new() -> Self {
        Redactor::default()
    }

    /// Also redact `secret` wherever it appears (an empty one is ignored).
    pub fn secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        let secret = secret.as_ref();
        if !secret.is_empty() {
            Arc::make_mut(&mut self.secrets).push(secret.into());
        }
        self
    }

    /// `text` with every secret and key-like token replaced by `[redacted]`.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self.redact_bytes(text.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            // Only whole secrets (valid UTF-8 themselves) and ASCII tokens were replaced, by
            // ASCII: the result is UTF-8. The lossy conversion never replaces anything.
            Cow::Owned(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
        }
    }

    /// Upstream words made fit for a log line or an error event: secrets replaced in the raw
    /// text first, then control characters escaped and the text cut to [`MAX_TEXT`] bytes.
    pub(crate) fn clean(&self, text: &str) -> String {
        escaped(&self.redact(text))
    }

    /// [`Redactor::redact`] on bytes (an error body, an event).
    pub fn redact_bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        let mut out: Cow<'a, [u8]> = Cow::Borrowed(bytes);
        for secret in self.secrets.iter() {
            if memchr::memmem::find(&out, secret).is_some() {
                out = Cow::Owned(replace_all(&out, secret));
            }
        }
        if let Some(tokens) = key_like_tokens(&out) {
            out = Cow::Owned(tokens);
        }
        out
    }
}

impl fmt::Debug for Redactor {
    // Never the secrets themselves.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

fn replace_all(haystack: &[u8], needle: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(at) = memchr::memmem::find(rest, needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(REDACTED.as_bytes());
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// Characters of a key or token: base64url, the `*` OpenAI masks keys with, and the `.`, `+`,
/// `/`, `=` of JWTs and base64.
fn token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'*' | b'.' | b'+' | b'/' | b'=')
}

/// The length of the token at the start of `bytes`, a full stop that ends a sentence left out.
fn token_len(bytes: &[u8]) -> usize {
    let mut len = bytes.iter().take_while(|&&b| token_char(b)).count();
    while len > 0 && bytes[len - 1] == b'.' {
        len -= 1;
    }
    len
}

/// Whether a key or token may start at `i`: at the start, after any byte that is not a letter
/// or digit (`=`, `/`, `_`, `-`, a quote, a space...), or right after an escape sequence that
/// stands for such a character (`\n`, `\t`, `\u000a`: JSON's, or what [`escape`] wrote).
/// After a letter or digit it is part of a word (`task-list`, `ask-me`).
fn token_starts_at(bytes: &[u8], i: usize) -> bool {
    let before = &bytes[..i.min(bytes.len())];
    let Some((&prev, rest)) = before.split_last() else {
        return true;
    };
    if !prev.is_ascii_alphanumeric() {
        return true;
    }
    let short_escape =
        matches!(prev, b'n' | b'r' | b't' | b'b' | b'f') && rest.last() == Some(&b'\\');
    let unicode_escape = before.len() >= 6 && {
        let (head, hex) = before[before.len() - 6..].split_at(2);
        head == b"\\u" && hex.iter().all(u8::is_ascii_hexdigit)
    };
    short_escape || unicode_escape
}

/// `bytes` with `sk-...` keys and `Bearer ...` tokens replaced; `None` if there are none.
fn key_like_tokens(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let rest = &bytes[i..];
        let skip = if !matches!(rest[0], b's' | b'b' | b'B') || !token_starts_at(bytes, i) {
            None
        } else if rest.starts_with(b"sk-") {
            let len = token_len(rest);
            (len >= 3 + MIN_TOKEN).then_some((0, len))
        } else if rest.len() > 7 && rest[..7].eq_ignore_ascii_case(b"bearer ") {
            let spaces = rest[6..].iter().take_while(|&&b| b == b' ').count();
            let len = token_len(&rest[6 + spaces..]);
            (len >= MIN_TOKEN).then_some((6 + spaces, len))
        } else {
            None
        };
        match skip {
            Some((keep, len)) => {
                let out = out.get_or_insert_with(|| Vec::with_capacity(bytes.len()));
                out.extend_from_slice(&bytes[copied..i + keep]);
                out.extend_from_slice(REDACTED.as_bytes());
                i += keep + len;
                copied = i;
            }
            None => i += 1,
        }
    }
    let mut out = out?;
    out.extend_from_slice(&bytes[copied..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_text_is_kept() {
        assert_eq!(escape("plain text: ok"), "plain text: ok");
        assert_eq!(
            escape("bad\nWARN forged line\r\u{1b}[31mred\u{7}\u{202e}"),
            "bad\\nWARN forged line\\r\\u{1b}[31mred\\u{7}\\u{202e}"
        );
        assert_eq!(escape("tab\there é ✓"), "tab\\there é ✓");
    }

    #[test]
    fn long_text_is_cut() {
        let long = "é".repeat(MAX_TEXT);
        let cut = escape(&long);
        assert!(
            cut.len() <= MAX_TEXT + 8 && cut.ends_with("..."),
            "{}",
            cut.len()
        );
    }

    #[test]
    fn given_secrets_are_redacted_wherever_they_appear() {
        let r = Redactor::new().secret("k3y-value").secret("");
        assert_eq!(
            r.redact("a k3y-value, again k3y-valuek3y-value!"),
            "a [redacted], again [redacted][redacted]!"
        );
        assert_eq!(r.redact("nothing here"), "nothing here");
        assert!(matches!(r.redact("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn key_like_tokens_are_redacted_without_a_list() {
        let r = Redactor::new();
        for (text, want) in [
            (
                "Incorrect API key provided: sk-proj-abc*************************wxyz. You can find",
                "Incorrect API key provided: [redacted]. You can find",
            ),
            (
                r#"{"error":{"message":"key sk-ant-api03-AAAAAAAAAAAAAAAA-BBBB is invalid"}}"#,
                r#"{"error":{"message":"key [redacted] is invalid"}}"#,
            ),
            (
                "forwarded Authorization: Bearer eyJhbGciOi.eyJzdWIiOiIx.c2lnbmF0dXJl",
                "forwarded Authorization: Bearer [redacted]",
            ),
            ("header bearer  0123456789abcdefXYZ end", "header bearer  [redacted] end"),
            // Right after `=`, `/`, `_` or `-`: where a query string or a path quotes a key.
            (
                "GET /v1/models?api_key=sk-proj-AAAAAAAAAAAAAAAAAAAA&x=1",
                "GET /v1/models?api_key=[redacted]&x=1",
            ),
            (
                "Authorization=Bearer AAAAAAAAAAAAAAAAAAAAAAAA",
                "Authorization=Bearer [redacted]",
            ),
            (
                "proxy/sk-ant-api03-AAAAAAAAAAAAAAAA rejected",
                "proxy/[redacted] rejected",
            ),
            ("key_sk-proj-AAAAAAAAAAAAAAAA", "key_[redacted]"),
            // Right after an escaped newline or tab: a raw JSON body, or text already escaped.
            (
                r#"{"message":"Incorrect API key:\nsk-proj-AAAAAAAAAAAAAAAA"}"#,
                r#"{"message":"Incorrect API key:\n[redacted]"}"#,
            ),
            (
                r"key:\u000asK-no\u000Ask-proj-AAAAAAAAAAAAAAAA",
                r"key:\u000asK-no\u000A[redacted]",
            ),
            (
                r"auth:\tBearer AAAAAAAAAAAAAAAAAAAA",
                r"auth:\tBearer [redacted]",
            ),
            (r"\u{1b}sk-proj-AAAAAAAAAAAAAAAA", r"\u{1b}[redacted]"),
        ] {
            assert_eq!(r.redact(text), want, "{text}");
        }
        // Words that merely contain the prefixes, and short ones, stay.
        for text in [
            "a task-list of risk-assessments",
            "sk-learn",
            "Bearer token",
            "ask-me-anything-you-like-please",
            "whisk-0123456789abcdefgh",
            r"a \\nsk-learn",
        ] {
            assert_eq!(r.redact(text), text);
        }
    }

    #[test]
    fn secrets_come_out_before_the_text_is_escaped_or_cut() {
        let r = Redactor::new().secret("k3y-value-0123");
        // Escaping first would glue the `n` of `\n` to the key and hide it from the check.
        assert_eq!(
            r.clean("Incorrect API key:\nsk-proj-AAAAAAAAAAAAAAAA\u{1b}[2J"),
            "Incorrect API key:\\n[redacted]\\u{1b}[2J"
        );
        // Cutting first would leave the half of a key that lies before the cut.
        let long = format!("{}k3y-value-0123 and more", "x ".repeat(1020));
        assert_eq!(
            escape(&long).len(),
            MAX_TEXT + 3,
            "the key straddles the cut"
        );
        let clean = r.clean(&long);
        assert!(
            clean.ends_with("...") && !clean.contains("k3y-v"),
            "{clean}"
        );
    }

    #[test]
    fn the_debug_form_never_shows_a_secret() {
        let r = Redactor::new().secret("super-secret-value");
        assert!(!format!("{r:?}").contains("super-secret"));
    }
}
