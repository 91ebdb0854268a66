//! Anthropic Messages: the event stream, the message, the errors and the prefill rules. Claude
//! on Vertex AI streams the same events (`vertex.rs` holds its request rules).

use bytes::Bytes;
use http::Response;
use serde_json::{json, Value};

use super::answer::{pieces, Answer, INPUT_TOKENS};
use super::body::DemoBody;
use super::models::DemoModel;
use super::{json_response, plain, with_status};

/// Anthropic's answer to a trailing assistant message on a model without prefill.
pub const ANTHROPIC_PREFILL_400: &str = r#"{"type":"error","error":{"type":"invalid_request_error","message":"This model does not support assistant message prefill. The conversation must end with a user message."}}"#;
/// Anthropic's answer to a final assistant message that ends in whitespace.
pub const ANTHROPIC_WHITESPACE_400: &str = r#"{"type":"error","error":{"type":"invalid_request_error","message":"messages: final assistant content cannot end with trailing whitespace"}}"#;

const SIGNATURE: &str = "ZGVtby1zaWduYXR1cmU=";

/// The ids a platform gives messages and tool calls (Vertex's carry `vrtx`).
#[derive(Debug, Clone, Copy)]
pub struct Ids {
    message: &'static str,
    tool: &'static str,
}

impl Ids {
    pub const FIRST_PARTY: Ids = Ids {
        message: "msg_demo",
        tool: "toolu_demo",
    };
    pub const VERTEX: Ids = Ids {
        message: "msg_vrtx_demo",
        tool: "toolu_vrtx_demo",
    };
}

/// What the model says to a prefill (`partial`, the final assistant message's text).
pub fn prefill_rejection(model: &DemoModel, partial: &str) -> Option<Response<DemoBody>> {
    if !model.accepts_prefill {
        return Some(plain(400, ANTHROPIC_PREFILL_400));
    }
    if partial.trim_end() != partial {
        return Some(plain(400, ANTHROPIC_WHITESPACE_400));
    }
    None
}

pub fn stop_reason(answer: &Answer) -> &'static str {
    if answer.tools.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    }
}

/// The whole stream, one SSE event per item.
pub fn events(answer: &Answer, model: &str, ids: Ids) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut event = |data: Value| {
        let name = data["type"].as_str().unwrap_or_default().to_owned();
        out.push(Bytes::from(format!("event: {name}\ndata: {data}\n\n")));
    };
    event(
        json!({"type":"message_start","message":{"id":ids.message,"type":"message","role":"assistant","model":model,"content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":INPUT_TOKENS,"output_tokens":1}}}),
    );
    let mut index = 0;
    let mut pinged = false;
    let mut ping = |event: &mut dyn FnMut(Value)| {
        if !std::mem::replace(&mut pinged, true) {
            event(json!({"type":"ping"}));
        }
    };
    if let Some(thinking) = answer.reasoning {
        event(
            json!({"type":"content_block_start","index":index,"content_block":{"type":"thinking","thinking":"","signature":""}}),
        );
        ping(&mut event);
        for p in pieces(thinking, 12) {
            event(
                json!({"type":"content_block_delta","index":index,"delta":{"type":"thinking_delta","thinking":p}}),
            );
        }
        event(
            json!({"type":"content_block_delta","index":index,"delta":{"type":"signature_delta","signature":SIGNATURE}}),
        );
        event(json!({"type":"content_block_stop","index":index}));
        index += 1;
    }
    if !answer.text.is_empty() {
        event(
            json!({"type":"content_block_start","index":index,"content_block":{"type":"text","text":""}}),
        );
        ping(&mut event);
        for p in pieces(&answer.text, 5) {
            event(
                json!({"type":"content_block_delta","index":index,"delta":{"type":"text_delta","text":p}}),
            );
        }
        event(json!({"type":"content_block_stop","index":index}));
        index += 1;
    }
    for (n, tool) in answer.tools.iter().enumerate() {
        event(
            json!({"type":"content_block_start","index":index,"content_block":{"type":"tool_use","id":format!("{}{n}", ids.tool),"name":tool.name,"input":{}}}),
        );
        ping(&mut event);
        for p in pieces(tool.args, 6) {
            event(
                json!({"type":"content_block_delta","index":index,"delta":{"type":"input_json_delta","partial_json":p}}),
            );
        }
        event(json!({"type":"content_block_stop","index":index}));
        index += 1;
    }
    event(
        json!({"type":"message_delta","delta":{"stop_reason":stop_reason(answer),"stop_sequence":null},"usage":{"output_tokens":answer.output_tokens()}}),
    );
    event(json!({"type":"message_stop"}));
    out
}

/// The answer as a non-streaming response body.
pub fn message(answer: &Answer, model: &str, ids: Ids) -> Value {
    let mut content = Vec::new();
    if let Some(t) = answer.reasoning {
        content.push(json!({"type":"thinking","thinking":t,"signature":SIGNATURE}));
    }
    if !answer.text.is_empty() {
        content.push(json!({"type":"text","text":answer.text}));
    }
    for (n, tool) in answer.tools.iter().enumerate() {
        let input: Value = serde_json::from_str(tool.args).unwrap_or_default();
        content.push(
            json!({"type":"tool_use","id":format!("{}{n}", ids.tool),"name":tool.name,"input":input}),
        );
    }
    json!({"id":ids.message,"type":"message","role":"assistant","model":model,"content":content,"stop_reason":stop_reason(answer),"stop_sequence":null,"usage":{"input_tokens":INPUT_TOKENS,"output_tokens":answer.output_tokens()}})
}

pub fn in_band_error(kind: Option<&str>) -> Bytes {
    let kind = kind.unwrap_or("overloaded_error");
    let data = json!({"type":"error","error":{"type":kind,"message":"Overloaded (scripted by x-demo-fault)"}});
    Bytes::from(format!("event: error\ndata: {data}\n\n"))
}

/// An error response as the API sends it.
pub fn error(status: u16, kind: Option<&str>, message: &str) -> Response<DemoBody> {
    let kind = kind.unwrap_or(match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ if status >= 500 => "api_error",
        _ => "invalid_request_error",
    });
    let body = json!({"type":"error","error":{"type":kind,"message":message}});
    with_status(json_response(body), status)
}
