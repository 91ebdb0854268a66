//! The OpenAI Responses API (`POST /v1/responses`): named events with `sequence_number`,
//! output items (reasoning, message, function calls) opened and closed in order, one terminal
//! event carrying the whole response; in-band `error` and `response.failed`. Event and field
//! order follow the recordings in tests/fixtures/openai_responses_*.sse.

use bytes::Bytes;
use http::Response;
use serde_json::{json, Value};

use super::answer::{object, pieces, string, text_of, Answer, Role, Turn, INPUT_TOKENS};
use super::body::DemoBody;
use super::{json_response, with_status, Ask};

/// The id of the response a model gives: only that model knows it again.
pub fn response_id(model: &str) -> String {
    format!("resp_demo_{model}")
}

/// What the API refuses before it looks at the model.
pub fn refuse(body: &Value) -> Option<Response<DemoBody>> {
    if let Some(max) = body["max_output_tokens"].as_i64() {
        if max < 16 {
            return Some(api_error(
                400,
                &format!("Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got {max} instead."),
                "max_output_tokens",
                "integer_below_min_value",
            ));
        }
    }
    if let Some(previous) = body.get("previous_response_id").filter(|v| !v.is_null()) {
        let model = body["model"].as_str().unwrap_or_default();
        if previous.as_str() != Some(response_id(model).as_str()) {
            return Some(api_error(
                400,
                &format!(
                    "Previous response with id '{}' not found.",
                    previous.as_str().unwrap_or_default()
                ),
                "previous_response_id",
                "previous_response_not_found",
            ));
        }
    }
    None
}

fn api_error(status: u16, message: &str, param: &str, code: &str) -> Response<DemoBody> {
    let body = json!({"error":{"message":message,"type":"invalid_request_error","param":param,"code":code}});
    with_status(json_response(body), status)
}

/// The turns of `input`: a string is one user turn; items are messages (roles) or anything
/// else (function calls and their outputs, reasoning).
pub fn turns(body: &Value) -> Vec<Turn> {
    match &body["input"] {
        Value::String(text) => vec![Turn {
            role: Role::User,
            text: text.clone(),
        }],
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let is_message = matches!(item["type"].as_str(), None | Some("message"));
                let role = match item["role"].as_str() {
                    Some("user") if is_message => Role::User,
                    Some("assistant") if is_message => Role::Assistant,
                    _ => Role::Other,
                };
                Turn {
                    role,
                    text: text_of(&item["content"]),
                }
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// What the stream is made of, in the order the API sends it.
struct Stream<'a> {
    ask: &'a Ask<'a>,
    obfuscation: bool,
    out: Vec<Bytes>,
}

impl Stream<'_> {
    fn event(&mut self, kind: &str, fields: Vec<(&str, String)>) {
        let mut all = vec![
            ("type", string(kind)),
            ("sequence_number", self.out.len().to_string()),
        ];
        all.extend(fields);
        self.out.push(Bytes::from(format!(
            "event: {kind}\ndata: {}\n\n",
            object(&all)
        )));
    }

    /// A delta event's own fields, with the padding the API adds unless asked not to.
    fn delta(
        &self,
        mut fields: Vec<(&'static str, String)>,
        delta: &str,
    ) -> Vec<(&'static str, String)> {
        fields.push(("delta", string(delta)));
        if self.obfuscation {
            fields.push(("obfuscation", string(padding(delta))));
        }
        fields
    }
}

/// Random-looking padding that evens out delta sizes; deterministic here.
fn padding(delta: &str) -> &'static str {
    const PAD: &str = "q8ZrT2mVx4LkP0nW";
    &PAD[..PAD.len() - delta.len() % PAD.len()]
}

fn summary_requested(body: &Value) -> bool {
    matches!(body["reasoning"]["summary"].as_str(), Some(s) if s != "none")
}

fn encrypted(body: &Value) -> bool {
    body["include"]
        .as_array()
        .is_some_and(|i| i.iter().any(|v| v == "reasoning.encrypted_content"))
}

/// The output items of `answer`, as `response.output` and `output_item.done` carry them.
fn items(ask: &Ask, answer: &Answer) -> Vec<Value> {
    let mut items = Vec::new();
    if let Some(reasoning) = answer.reasoning {
        items.push(reasoning_item(ask, Some(reasoning)));
    }
    if !answer.text.is_empty() {
        items.push(json!({"id":"msg_demo","type":"message","status":"completed","content":[part(answer, &answer.text)],"role":"assistant"}));
    }
    for (i, tool) in answer.tools.iter().enumerate() {
        items.push(json!({"id":format!("fc_demo{i}"),"type":"function_call","status":"completed","arguments":tool.args,"call_id":format!("call_demo{i}"),"name":tool.name}));
    }
    items
}

fn reasoning_item(ask: &Ask, summary: Option<&str>) -> Value {
    let summary = match summary {
        Some(text) if summary_requested(ask.body) => json!([{"type":"summary_text","text":text}]),
        _ => json!([]),
    };
    let mut item = json!({"id":"rs_demo","type":"reasoning","summary":summary});
    if encrypted(ask.body) {
        item["encrypted_content"] = json!("gAAAAABdemo-encrypted-reasoning");
    }
    item
}

fn part(answer: &Answer, text: &str) -> Value {
    if answer.refusal {
        json!({"type":"refusal","refusal":text})
    } else {
        json!({"type":"output_text","annotations":[],"logprobs":[],"text":text})
    }
}

/// The whole response object, as the lifecycle events carry it.
fn response(ask: &Ask, status: &str, output: &[Value], usage: Value, error: Value) -> String {
    let body = ask.body;
    let or_null = |v: &Value| {
        if v.is_null() {
            "null".to_owned()
        } else {
            v.to_string()
        }
    };
    let tools = if body["tools"].is_array() {
        body["tools"].to_string()
    } else {
        "[]".to_owned()
    };
    object(&[
        ("id", string(&response_id(ask.model.name))),
        ("object", string("response")),
        ("created_at", "1700000000".to_owned()),
        ("status", string(status)),
        ("background", "false".to_owned()),
        ("error", error.to_string()),
        ("incomplete_details", "null".to_owned()),
        ("instructions", or_null(&body["instructions"])),
        ("max_output_tokens", or_null(&body["max_output_tokens"])),
        ("model", string(ask.model.name)),
        ("output", Value::from(output.to_vec()).to_string()),
        ("parallel_tool_calls", "true".to_owned()),
        (
            "previous_response_id",
            or_null(&body["previous_response_id"]),
        ),
        (
            "reasoning",
            json!({"effort":body["reasoning"]["effort"],"summary":body["reasoning"]["summary"]})
                .to_string(),
        ),
        ("store", (body["store"] != false).to_string()),
        ("temperature", "1.0".to_owned()),
        (
            "text",
            r#"{"format":{"type":"text"},"verbosity":"medium"}"#.to_owned(),
        ),
        ("tool_choice", string("auto")),
        ("tools", tools),
        ("top_p", "1.0".to_owned()),
        ("truncation", string("disabled")),
        ("usage", usage.to_string()),
        ("user", "null".to_owned()),
        ("metadata", "{}".to_owned()),
    ])
}

fn usage(answer: &Answer) -> Value {
    let output = answer.output_tokens();
    json!({"input_tokens":INPUT_TOKENS,"input_tokens_details":{"cached_tokens":0},"output_tokens":output,"output_tokens_details":{"reasoning_tokens":answer.reasoning_tokens()},"total_tokens":INPUT_TOKENS + output})
}

/// The whole stream, one SSE event per item.
pub fn events(ask: &Ask, answer: &Answer) -> Vec<Bytes> {
    let mut s = Stream {
        ask,
        obfuscation: ask.body["stream_options"]["include_obfuscation"] != false,
        out: Vec::new(),
    };
    let start = response(ask, "in_progress", &[], Value::Null, Value::Null);
    s.event("response.created", vec![("response", start.clone())]);
    s.event("response.in_progress", vec![("response", start)]);
    let done = items(ask, answer);
    let mut output_index = 0;
    let at = |i: usize| ("output_index", i.to_string());
    if let Some(reasoning) = answer.reasoning {
        let id = ("item_id", string("rs_demo"));
        let added = reasoning_item(s.ask, None);
        s.event(
            "response.output_item.added",
            vec![at(output_index), ("item", added.to_string())],
        );
        if summary_requested(ask.body) {
            let summary = ("summary_index", "0".to_owned());
            let fields = vec![id.clone(), at(output_index), summary.clone()];
            let with = |extra: (&'static str, String)| {
                let mut f = fields.clone();
                f.push(extra);
                f
            };
            s.event(
                "response.reasoning_summary_part.added",
                with(("part", json!({"type":"summary_text","text":""}).to_string())),
            );
            for p in pieces(reasoning, 12) {
                let delta = s.delta(fields.clone(), &p);
                s.event("response.reasoning_summary_text.delta", delta);
            }
            s.event(
                "response.reasoning_summary_text.done",
                with(("text", string(reasoning))),
            );
            s.event(
                "response.reasoning_summary_part.done",
                with((
                    "part",
                    json!({"type":"summary_text","text":reasoning}).to_string(),
                )),
            );
        }
        s.event(
            "response.output_item.done",
            vec![at(output_index), ("item", done[output_index].to_string())],
        );
        output_index += 1;
    }
    if !answer.text.is_empty() {
        let id = ("item_id", string("msg_demo"));
        let content = ("content_index", "0".to_owned());
        let fields = vec![id, at(output_index), content];
        s.event(
            "response.output_item.added",
            vec![
                at(output_index),
                (
                    "item",
                    json!({"id":"msg_demo","type":"message","status":"in_progress","content":[],"role":"assistant"}).to_string(),
                ),
            ],
        );
        let with = |extra: (&'static str, String)| {
            let mut f = fields.clone();
            f.push(extra);
            f
        };
        s.event(
            "response.content_part.added",
            with(("part", part(answer, "").to_string())),
        );
        let (delta_kind, done_kind, done_field) = if answer.refusal {
            ("response.refusal.delta", "response.refusal.done", "refusal")
        } else {
            (
                "response.output_text.delta",
                "response.output_text.done",
                "text",
            )
        };
        for p in pieces(&answer.text, 5) {
            let mut f = fields.clone();
            if !answer.refusal {
                f.push(("logprobs", "[]".to_owned()));
            }
            let delta = s.delta(f, &p);
            s.event(delta_kind, delta);
        }
        let mut f = with((done_field, string(&answer.text)));
        if !answer.refusal {
            f.push(("logprobs", "[]".to_owned()));
        }
        s.event(done_kind, f);
        s.event(
            "response.content_part.done",
            with(("part", part(answer, &answer.text).to_string())),
        );
        s.event(
            "response.output_item.done",
            vec![at(output_index), ("item", done[output_index].to_string())],
        );
        output_index += 1;
    }
    for (i, tool) in answer.tools.iter().enumerate() {
        let id = ("item_id", string(&format!("fc_demo{i}")));
        s.event(
            "response.output_item.added",
            vec![
                at(output_index),
                (
                    "item",
                    json!({"id":format!("fc_demo{i}"),"type":"function_call","status":"in_progress","arguments":"","call_id":format!("call_demo{i}"),"name":tool.name}).to_string(),
                ),
            ],
        );
        for p in pieces(tool.args, 6) {
            let delta = s.delta(vec![id.clone(), at(output_index)], &p);
            s.event("response.function_call_arguments.delta", delta);
        }
        s.event(
            "response.function_call_arguments.done",
            vec![id, at(output_index), ("arguments", string(tool.args))],
        );
        s.event(
            "response.output_item.done",
            vec![at(output_index), ("item", done[output_index].to_string())],
        );
        output_index += 1;
    }
    let completed = response(ask, "completed", &done, usage(answer), Value::Null);
    s.event("response.completed", vec![("response", completed)]);
    s.out
}

/// The answer as a non-streaming response.
pub fn message(ask: &Ask, answer: &Answer) -> Value {
    let text = response(
        ask,
        "completed",
        &items(ask, answer),
        usage(answer),
        Value::Null,
    );
    serde_json::from_str(&text).unwrap_or_default()
}

/// The `error` event after `at` events, in the shape the API sends (a nested `error`, which
/// the SDKs raise on).
pub fn in_band_error(kind: Option<&str>, at: usize) -> Bytes {
    let kind = kind.unwrap_or("server_error");
    let error = json!({"type":kind,"code":kind,"message":"The server had an error while processing your request (scripted by x-demo-fault).","param":null});
    let data = object(&[
        ("type", string("error")),
        ("sequence_number", at.to_string()),
        ("error", error.to_string()),
    ]);
    Bytes::from(format!("event: error\ndata: {data}\n\n"))
}

/// `response.failed` after `at` events, with error `code` (`server_error` by default).
pub fn failed(ask: &Ask, code: Option<&str>, at: usize) -> Bytes {
    let code = code.unwrap_or("server_error");
    let error = json!({"code":code,"message":"The model failed to generate a response (scripted by x-demo-fault)."});
    let data = object(&[
        ("type", string("response.failed")),
        ("sequence_number", at.to_string()),
        ("response", response(ask, "failed", &[], Value::Null, error)),
    ]);
    Bytes::from(format!("event: response.failed\ndata: {data}\n\n"))
}
