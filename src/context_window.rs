//! Whether a 400's body says the prompt is longer than the model's context window.
//!
//! The phrases are the servers' own: OpenAI and compatible servers (vLLM, OpenRouter, Azure)
//! send the code `context_length_exceeded` or a message with "maximum context length";
//! Anthropic sends "prompt is too long". A body is read bounded (64 KiB) before it gets here.

use memchr::memmem;

const PHRASES: [&[u8]; 3] = [
    b"context_length_exceeded",
    b"maximum context length",
    b"prompt is too long",
];

/// Whether `body` (an error body, any case) says the prompt is too long for the model.
pub(crate) fn says_prompt_too_long(body: &[u8]) -> bool {
    let lower = body.to_ascii_lowercase();
    PHRASES
        .iter()
        .any(|phrase| memmem::find(&lower, phrase).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_own_wordings_say_the_prompt_is_too_long() {
        for body in [
            r#"{"error":{"message":"This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
            r#"{"object":"error","message":"This model's maximum context length is 4096 tokens.","type":"BadRequestError","code":400}"#,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 212345 tokens > 200000 maximum"}}"#,
            r#"{"error":{"code":"CONTEXT_LENGTH_EXCEEDED"}}"#,
        ] {
            assert!(says_prompt_too_long(body.as_bytes()), "{body}");
        }
    }

    #[test]
    fn other_client_errors_do_not() {
        for body in [
            r#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy.","type":null,"param":"prompt","code":"content_filter","status":400}}"#,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}"#,
            "",
            "\u{0}\u{ff}",
        ] {
            assert!(!says_prompt_too_long(body.as_bytes()), "{body}");
        }
    }
}
