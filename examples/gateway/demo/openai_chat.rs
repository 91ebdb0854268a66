//! OpenAI Chat Completions, in the shapes of the servers in `servers.rs`: the chunk stream,
//! the completion, the errors and the prefill rule.

use bytes::Bytes;
use http::Response;
use serde_json::{json, Value};

use super::answer::{object, pieces, string, Answer, Continuation, INPUT_TOKENS, TEXT_2};
use super::body::DemoBody;
use super::models::DemoModel;
use super::script::{self, Shape};
use super::servers::{Errors, Server, Usage};
use super::{json_response, plain, with_status, Ask};

const OPENAI_PREFIX_400: &str = r#"{"error":{"message":"This model does not support continuing a final assistant message: the last message must come from the user.","type":"invalid_request_error","param":"messages","code":null}}"#;
const CREATED: u64 = 1_700_000_000;

pub fn prefill_rejection(model: &DemoModel) -> Option<Response<DemoBody>> {
    (!model.accepts_prefill).then(|| plain(400, OPENAI_PREFIX_400))
}

/// The request's `n`: the demo answers one or two choices.
pub fn choices(body: &Value) -> Result<usize, String> {
    match &body["n"] {
        Value::Null => Ok(1),
        n => match n.as_u64() {
            Some(n @ 1..=2) => Ok(n as usize),
            _ => Err(format!("n: the demo answers 1 or 2 choices, not {n}")),
        },
    }
}

fn finish_reason(answer: &Answer) -> &'static str {
    if answer.tools.is_empty() {
        "stop"
    } else {
        "tool_calls"
    }
}

/// Each choice's answer: the first answers the canned text, a second one [`TEXT_2`].
fn answers(ask: &Ask, answer: &Answer, shape: Shape) -> Vec<Answer> {
    let mut all = vec![Answer {
        reasoning: answer.reasoning,
        text: answer.text.clone(),
        continues_from: answer.continues_from,
        tools: answer.tools.clone(),
        refusal: answer.refusal,
    }];
    if choices(ask.body) == Ok(2) {
        all.push(shape.answer_from(TEXT_2, ask, &Continuation::None));
    }
    all
}

/// Writes chunks as `server` frames them, counting events for `id:` lines.
struct Writer<'a> {
    server: &'static Server,
    model: &'a str,
    /// Whether chunks carry a `usage` key (null but on the one that reports it).
    usage_key: bool,
    /// Events sent before the next one (numbers `id:` lines; the preamble goes first).
    sent: usize,
    out: Vec<Bytes>,
}

impl Writer<'_> {
    fn frame(&mut self, data: &str) {
        let server = self.server;
        let le = server.line_end;
        let mut event = String::new();
        if self.sent == 0 {
            event.push_str(server.preamble);
        }
        if server.event_ids {
            event.push_str(&format!("id: {}{le}", self.sent));
        }
        event.push_str(&format!("data: {data}{le}{le}"));
        self.sent += 1;
        self.out.push(Bytes::from(event));
    }

    fn chunk(&mut self, choices: &[String], usage: Option<Value>) {
        let data = envelope(self.server, self.model, choices, self.usage_key, usage);
        self.frame(&data);
    }
}

fn envelope(
    server: &Server,
    model: &str,
    choices: &[String],
    usage_key: bool,
    usage: Option<Value>,
) -> String {
    let mut fields = Vec::new();
    for key in server.envelope {
        let value = match *key {
            "id" => string(server.id),
            "object" => string("chat.completion.chunk"),
            "created" => CREATED.to_string(),
            "model" => string(model),
            "service_tier" => string("default"),
            "system_fingerprint" => string("fp_demo"),
            "provider" => string("DemoProvider"),
            "choices" => format!("[{}]", choices.join(",")),
            "usage" if usage_key || usage.is_some() => {
                usage.clone().unwrap_or(Value::Null).to_string()
            }
            _ => continue,
        };
        fields.push((*key, value));
    }
    object(&fields)
}

fn choice(server: &Server, index: usize, delta: &Value, finish: Option<&str>) -> String {
    let finish = finish.map_or("null".to_owned(), string);
    let fields: Vec<(&str, String)> = server
        .choice
        .iter()
        .map(|key| {
            let value = match *key {
                "index" => index.to_string(),
                "delta" => delta.to_string(),
                "finish_reason" | "native_finish_reason" => finish.clone(),
                "content_filter_results" => "{}".to_owned(),
                _ => "null".to_owned(), // logprobs, stop_reason
            };
            (*key, value)
        })
        .collect();
    object(&fields)
}

fn usage(completion: usize) -> Value {
    json!({"prompt_tokens":INPUT_TOKENS,"completion_tokens":completion,"total_tokens":INPUT_TOKENS + completion})
}

/// The deltas of one choice, in order, each with the characters it adds (for running usage).
fn deltas(server: &Server, answer: &Answer) -> Vec<(Value, usize)> {
    let mut out = Vec::new();
    let role = if answer.refusal {
        json!({"role":"assistant","content":null,"refusal":""})
    } else {
        json!({"role":"assistant","content":""})
    };
    out.push((role, 0));
    if let (Some(reasoning), Some(field)) = (answer.reasoning, server.reasoning) {
        for p in pieces(reasoning, 4) {
            let mut delta = json!({ field: p });
            if server.errors == Errors::OpenRouter {
                delta["reasoning_details"] =
                    json!([{"type":"reasoning.text","text":p,"index":0,"format":null}]);
            }
            out.push((delta, p.len()));
        }
    }
    let field = if answer.refusal { "refusal" } else { "content" };
    for p in pieces(&answer.text, 4) {
        out.push((json!({ field: p }), p.len()));
    }
    for (i, tool) in answer.tools.iter().enumerate() {
        let id = format!("call_demo{i}");
        if server.whole_tool_calls {
            let mut call = json!({"id":id,"type":"function","function":{"name":tool.name,"arguments":tool.args}});
            if server.tool_index {
                call["index"] = json!(i);
            }
            out.push((json!({"tool_calls":[call]}), tool.args.len()));
            continue;
        }
        out.push((
            json!({"tool_calls":[{"index":i,"id":id,"type":"function","function":{"name":tool.name,"arguments":""}}]}),
            0,
        ));
        for p in pieces(tool.args, 5) {
            let mut call = json!({"function":{"arguments":p}});
            if server.tool_index {
                call["index"] = json!(i);
            }
            out.push((json!({"tool_calls":[call]}), p.len()));
        }
    }
    out
}

/// The whole stream, one SSE event per item (a comment preamble rides on the first).
pub fn events(ask: &Ask, answer: &Answer, shape: Shape) -> Vec<Bytes> {
    let server = ask.server;
    let options = &ask.body["stream_options"];
    let include_usage = options["include_usage"] == true;
    // vLLM's `continuous_usage_stats`: usage on every chunk, cumulative.
    let continuous = include_usage
        && server.usage == Usage::OnFinish
        && options["continuous_usage_stats"] == true;
    let answers = answers(ask, answer, shape);
    let total: usize = answers.iter().map(Answer::output_tokens).sum();
    let mut w = Writer {
        server,
        model: ask.model.name,
        usage_key: include_usage && server.usage == Usage::OwnChunk,
        sent: 0,
        out: Vec::new(),
    };
    if server.prompt_filter {
        w.frame(PROMPT_FILTER);
    }
    let per_choice: Vec<Vec<(Value, usize)>> = answers.iter().map(|a| deltas(server, a)).collect();
    let longest = per_choice.iter().map(Vec::len).max().unwrap_or(0);
    let mut chars = 0;
    let running = |chars: usize| usage(chars.div_ceil(4).min(total));
    // Choices interleave delta by delta, as servers send them.
    for step in 0..longest {
        for (index, deltas) in per_choice.iter().enumerate() {
            let Some((delta, added)) = deltas.get(step) else {
                continue;
            };
            chars += added;
            let usage = continuous.then(|| running(chars));
            w.chunk(&[choice(server, index, delta, None)], usage);
        }
    }
    for (index, answer) in answers.iter().enumerate() {
        let last = index + 1 == answers.len();
        let usage = (include_usage && server.usage == Usage::OnFinish && (last || continuous))
            .then(|| if last { usage(total) } else { running(chars) });
        w.chunk(
            &[choice(
                server,
                index,
                &json!({}),
                Some(finish_reason(answer)),
            )],
            usage,
        );
    }
    if include_usage && server.usage == Usage::OwnChunk {
        w.chunk(&[], Some(usage(total)));
    }
    if server.done {
        w.frame("[DONE]");
    }
    w.out
}

/// Azure's first chunk: the prompt's content filter results, no choices, no id, no model.
const PROMPT_FILTER: &str = r#"{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}}}]}"#;

/// The in-band error `ask`'s server sends after `at` events.
pub fn in_band_error(ask: &Ask, kind: Option<&str>, at: usize) -> Bytes {
    let server = ask.server;
    let message =
        "The server had an error while processing your request (scripted by x-demo-fault).";
    let code = kind.map_or(500, script::status_of);
    let mut w = Writer {
        server,
        model: ask.model.name,
        usage_key: false,
        sent: at,
        out: Vec::new(),
    };
    let data = match server.errors {
        Errors::OpenAi => {
            let kind = kind.unwrap_or("server_error");
            json!({"error":{"message":message,"type":kind,"param":null,"code":null}}).to_string()
        }
        Errors::Vllm => {
            let kind = if code < 500 {
                "BadRequestError"
            } else {
                "InternalServerError"
            };
            object(&[
                ("object", string("error")),
                ("message", string(message)),
                ("type", string(kind)),
                ("param", "null".to_owned()),
                ("code", code.to_string()),
            ])
        }
        Errors::OpenRouter => {
            let choices = [choice(server, 0, &json!({"content":""}), Some("error"))];
            let chunk = envelope(server, ask.model.name, &choices, false, None);
            // The error object rides beside the envelope, as OpenRouter sends it.
            let error = json!({"code":code,"message":message}).to_string();
            format!("{},\"error\":{error}}}", &chunk[..chunk.len() - 1])
        }
    };
    w.frame(&data);
    if server.errors == Errors::OpenRouter && server.done {
        w.frame("[DONE]");
    }
    // One item: OpenRouter's `[DONE]` goes with its error chunk.
    Bytes::from(w.out.concat())
}

/// The answer as a non-streaming completion.
pub fn message(ask: &Ask, answer: &Answer, shape: Shape) -> Value {
    let answers = answers(ask, answer, shape);
    let total: usize = answers.iter().map(Answer::output_tokens).sum();
    let choices: Vec<Value> = answers
        .iter()
        .enumerate()
        .map(|(index, a)| {
            let text = (!a.text.is_empty()).then_some(&a.text);
            let mut message = if a.refusal {
                json!({"role":"assistant","content":null,"refusal":text})
            } else {
                json!({"role":"assistant","content":text,"refusal":null})
            };
            if let (Some(reasoning), Some(field)) = (a.reasoning, ask.server.reasoning) {
                message[field] = json!(reasoning);
            }
            if !a.tools.is_empty() {
                message["tool_calls"] = a
                    .tools
                    .iter()
                    .enumerate()
                    .map(|(i, t)| json!({"id":format!("call_demo{i}"),"type":"function","function":{"name":t.name,"arguments":t.args}}))
                    .collect();
            }
            json!({"index":index,"message":message,"finish_reason":finish_reason(a)})
        })
        .collect();
    json!({"id":ask.server.id,"object":"chat.completion","created":CREATED,"model":ask.model.name,"choices":choices,"usage":usage(total)})
}

/// An error response as the API sends it.
pub fn error(status: u16, _kind: Option<&str>, message: &str) -> Response<DemoBody> {
    let kind = match status {
        429 => "rate_limit_exceeded",
        _ if status >= 500 => "server_error",
        _ => "invalid_request_error",
    };
    let body = json!({"error":{"message":message,"type":kind,"param":null,"code":null}});
    with_status(json_response(body), status)
}
