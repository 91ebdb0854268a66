//! Gemini (`POST /v1beta/models/{model}:streamGenerateContent?alt=sse`, also `/v1/`, and
//! `:generateContent`): each `data:` event a whole GenerateContentResponse, CRLF CRLF between
//! events, `usageMetadata` on every chunk (cumulative), `finishReason` on the last, no
//! sentinel. Written as the API writes JSON (`"key": value`, see tests/fixtures/gemini_*.sse).

use bytes::Bytes;
use http::{HeaderMap, Response};
use serde_json::{json, Value};

use super::answer::{string, Answer, Role, Turn, INPUT_TOKENS};
use super::body::DemoBody;
use super::models::DemoModel;
use super::script;
use super::{json_text_response, with_status, Refused, Route, Wire};

/// The API's answer to a request ending with a `model` turn, on models without prefill.
pub const GEMINI_MODEL_TURN_400: &str = "Requests ending with a model turn are not supported.";

const RESPONSE_ID: &str = "ZGVtby1yZXNwb25zZQ";
const SIGNATURE: &str = "ZGVtby10aG91Z2h0LXNpZ25hdHVyZQ==";

/// `/{v1beta|v1}/models/{model}:{streamGenerateContent|generateContent}`; the model name may
/// hold a `/` (the SDK passes one through).
pub fn route(path: &str, query: Option<&str>) -> Result<Route, Refused> {
    let rest = path
        .strip_prefix("/v1beta/models/")
        .or_else(|| path.strip_prefix("/v1/models/"));
    let Some((model, method)) = rest.and_then(|r| r.rsplit_once(':')) else {
        return Err(Box::new(error(404, &format!("no endpoint {path} here"))));
    };
    let stream = match method {
        "streamGenerateContent" => true,
        "generateContent" => false,
        _ => return Err(Box::new(error(404, &format!("no method {method} here")))),
    };
    let sse = query.is_some_and(|q| q.split('&').any(|p| p == "alt=sse"));
    if stream && !sse {
        return Err(Box::new(error(
            400,
            "the demo streams Server-Sent Events only: add ?alt=sse",
        )));
    }
    Ok(Route {
        wire: Wire::Gemini,
        model: Some(model.to_owned()),
        stream: Some(stream),
    })
}

/// The API wants a key, and contents.
pub fn refuse(headers: &HeaderMap, body: &Value) -> Option<Response<DemoBody>> {
    if !headers.contains_key("x-goog-api-key") {
        return Some(error(
            403,
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
        ));
    }
    if !body["contents"].is_array() {
        return Some(error(
            400,
            "* GenerateContentRequest.contents: contents is not specified\n",
        ));
    }
    None
}

pub fn not_found(name: &str) -> Response<DemoBody> {
    error(404, &format!("models/{name} is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods."))
}

pub fn prefill_rejection(model: &DemoModel) -> Option<Response<DemoBody>> {
    (!model.accepts_prefill).then(|| error(400, GEMINI_MODEL_TURN_400))
}

/// The turns of `contents` (roles `user` and `model`), thought parts left out.
pub fn turns(body: &Value) -> Vec<Turn> {
    let Some(contents) = body["contents"].as_array() else {
        return Vec::new();
    };
    contents
        .iter()
        .map(|c| {
            let parts = c["parts"].as_array().map(Vec::as_slice).unwrap_or_default();
            let only_text = parts.iter().all(|p| p.get("text").is_some());
            Turn {
                role: match c["role"].as_str() {
                    Some("user") if only_text => Role::User,
                    Some("model") if only_text => Role::Assistant,
                    _ => Role::Other,
                },
                text: parts
                    .iter()
                    .filter(|p| p["thought"] != true)
                    .filter_map(|p| p["text"].as_str())
                    .collect(),
            }
        })
        .collect()
}

/// Whether the request asks for thought parts (`includeThoughts`; the SDK may write it in
/// snake case, which the API accepts too).
pub fn includes_thoughts(body: &Value) -> bool {
    let config = body
        .get("generationConfig")
        .or_else(|| body.get("generation_config"));
    let thinking =
        config.and_then(|c| c.get("thinkingConfig").or_else(|| c.get("thinking_config")));
    thinking
        .and_then(|t| {
            t.get("includeThoughts")
                .or_else(|| t.get("include_thoughts"))
        })
        .is_some_and(|v| v == true)
}

/// An object as the API writes it: `{"key": value,"key": value}`.
fn object(fields: &[(&str, String)]) -> String {
    let fields: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}: {v}", string(k)))
        .collect();
    format!("{{{}}}", fields.join(","))
}

fn list(items: &[String]) -> String {
    format!("[{}]", items.join(","))
}

/// One part, written as the API writes it.
enum Part<'a> {
    Thought(&'a str),
    Text(&'a str, bool),
    Call(&'a str, &'a str),
}

impl Part<'_> {
    fn write(&self) -> String {
        match *self {
            Part::Thought(text) => object(&[("text", string(text)), ("thought", "true".into())]),
            Part::Text(text, false) => object(&[("text", string(text))]),
            Part::Text(text, true) => object(&[
                ("text", string(text)),
                ("thoughtSignature", string(SIGNATURE)),
            ]),
            Part::Call(name, args) => {
                let args: Value = serde_json::from_str(args).unwrap_or_default();
                object(&[(
                    "functionCall",
                    object(&[("name", string(name)), ("args", args.to_string())]),
                )])
            }
        }
    }
}

fn usage(candidates: usize, thoughts: usize) -> String {
    let mut fields = vec![
        ("promptTokenCount", INPUT_TOKENS.to_string()),
        ("candidatesTokenCount", candidates.to_string()),
        (
            "totalTokenCount",
            (INPUT_TOKENS + candidates + thoughts).to_string(),
        ),
        (
            "promptTokensDetails",
            list(&[object(&[
                ("modality", string("TEXT")),
                ("tokenCount", INPUT_TOKENS.to_string()),
            ])]),
        ),
    ];
    if thoughts > 0 {
        fields.push(("thoughtsTokenCount", thoughts.to_string()));
    }
    object(&fields)
}

fn chunk(model: &str, parts: &[Part], finish: bool, usage: String) -> String {
    let parts: Vec<String> = parts.iter().map(Part::write).collect();
    let content = object(&[("parts", list(&parts)), ("role", string("model"))]);
    let mut candidate = vec![("content", content)];
    if finish {
        candidate.push(("finishReason", string("STOP")));
    }
    candidate.push(("index", "0".into()));
    object(&[
        ("candidates", list(&[object(&candidate)])),
        ("usageMetadata", usage),
        ("modelVersion", string(model)),
        ("responseId", string(RESPONSE_ID)),
    ])
}

/// The answer's parts, one chunk each, in order.
fn parts(answer: &Answer) -> Vec<(Part<'_>, usize)> {
    let mut out = Vec::new();
    if let Some(reasoning) = answer.reasoning {
        for p in split(reasoning, 40) {
            out.push((Part::Thought(p), 0));
        }
    }
    for (i, p) in split(&answer.text, 24).into_iter().enumerate() {
        out.push((Part::Text(p, i == 0 && answer.reasoning.is_some()), p.len()));
    }
    for tool in &answer.tools {
        out.push((Part::Call(tool.name, tool.args), tool.args.len()));
    }
    out
}

/// `text` in pieces of about `size` bytes, cut at character boundaries.
fn split(text: &str, size: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = size.min(rest.len());
        while !rest.is_char_boundary(end) {
            end += 1;
        }
        let (piece, tail) = rest.split_at(end);
        out.push(piece);
        rest = tail;
    }
    out
}

/// The whole stream, one SSE event per item.
pub fn events(ask: &super::Ask, answer: &Answer) -> Vec<Bytes> {
    let model = ask.model.name;
    let thoughts = answer.reasoning_tokens();
    let parts = parts(answer);
    // A text answer's last chunk carries the finish; after a function call (or nothing) the
    // finish comes in a chunk of its own with an empty text part, as gemini-3 sends it.
    let finish_alone = !matches!(parts.last(), Some((Part::Text(..), _)));
    let mut chars = 0;
    let mut out = Vec::new();
    let total = answer.output_tokens() - thoughts.min(answer.output_tokens());
    for (i, (part, added)) in parts.iter().enumerate() {
        chars += added;
        let last = i + 1 == parts.len() && !finish_alone;
        let candidates = if last {
            total
        } else {
            chars.div_ceil(4).min(total)
        };
        let data = chunk(
            model,
            std::slice::from_ref(part),
            last,
            usage(candidates, thoughts),
        );
        out.push(frame(&data));
    }
    if finish_alone {
        let data = chunk(
            model,
            &[Part::Text("", false)],
            true,
            usage(total, thoughts),
        );
        out.push(frame(&data));
    }
    out
}

fn frame(data: &str) -> Bytes {
    Bytes::from(format!("data: {data}\r\n\r\n"))
}

/// The answer as one GenerateContentResponse.
pub fn message(ask: &super::Ask, answer: &Answer) -> Value {
    let mut parts = Vec::new();
    if let Some(reasoning) = answer.reasoning {
        parts.push(json!({"text":reasoning,"thought":true}));
    }
    if !answer.text.is_empty() {
        let mut part = json!({"text":answer.text});
        if answer.reasoning.is_some() {
            part["thoughtSignature"] = json!(SIGNATURE);
        }
        parts.push(part);
    }
    for tool in &answer.tools {
        let args: Value = serde_json::from_str(tool.args).unwrap_or_default();
        parts.push(json!({"functionCall":{"name":tool.name,"args":args}}));
    }
    let thoughts = answer.reasoning_tokens();
    let candidates = answer.output_tokens() - thoughts.min(answer.output_tokens());
    let usage: Value = serde_json::from_str(&usage(candidates, thoughts)).unwrap_or_default();
    json!({"candidates":[{"content":{"parts":parts,"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":usage,"modelVersion":ask.model.name,"responseId":RESPONSE_ID})
}

/// The status name and code of an error type: a Google status (`INVALID_ARGUMENT`) or one of
/// the other formats' types (`invalid_request_error`), by its HTTP status.
fn status(kind: Option<&str>) -> (u16, &'static str) {
    // Google has no 529: an overload is 503 UNAVAILABLE there.
    let code = match kind.map_or(503, script::status_of) {
        529 => 503,
        code => code,
    };
    (code, status_name(code))
}

fn status_name(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 | 529 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ if code >= 500 => "INTERNAL",
        _ => "FAILED_PRECONDITION",
    }
}

/// The in-band error chunk: `error` first and a numeric `code`, which both SDKs raise on.
pub fn in_band_error(kind: Option<&str>) -> Bytes {
    let (code, status) = status(kind);
    let message = if code == 503 {
        "The model is overloaded. Please try again later. (scripted by x-demo-fault)"
    } else {
        "An error occurred while generating the response (scripted by x-demo-fault)."
    };
    let error = object(&[
        ("code", code.to_string()),
        ("message", string(message)),
        ("status", string(status)),
    ]);
    frame(&object(&[("error", error)]))
}

/// An error response as the API sends it: pretty-printed JSON.
pub fn error(code: u16, message: &str) -> Response<DemoBody> {
    let body = json!({"error":{"code":code,"message":message,"status":status_name(code)}});
    let text = serde_json::to_string_pretty(&body).unwrap_or_default();
    with_status(json_text_response(text + "\n"), code)
}
