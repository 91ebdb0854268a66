//! An independent reading of what a client receives: a plain SSE parser (not the crate's), the
//! seam rules of conformance/README.md for each dialect, and the answer a client SDK would
//! accumulate.

use serde_json::Value;

/// One dispatched SSE event, as a spec-following client parser sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sse {
    pub event: Option<String>,
    pub data: String,
}

/// Parses a whole SSE byte stream: LF, CRLF or CR line ends, comments ignored, multi-line data
/// joined with `\n`, an event dispatched at each blank line (an unterminated one is dropped).
pub fn parse_sse(bytes: &[u8]) -> Vec<Sse> {
    parse(bytes, false)
}

/// Parses a stream as the openai Python SDK does: once an `id:` field was seen, every blank
/// line dispatches an event, an empty one if it has no data (which then fails as JSON).
pub fn parse_sse_as_openai_python(bytes: &[u8]) -> Vec<Sse> {
    parse(bytes, true)
}

fn parse(bytes: &[u8], ids_dispatch: bool) -> Vec<Sse> {
    let mut last_id = false;
    let text = std::str::from_utf8(bytes).expect("the stream is UTF-8");
    let mut events = Vec::new();
    let mut event: Option<String> = None;
    let mut data: Option<String> = None;
    let mut rest = text;
    while !rest.is_empty() {
        let (line, next) = match rest.find(['\r', '\n']) {
            Some(at) => {
                let skip = if rest[at..].starts_with("\r\n") { 2 } else { 1 };
                (&rest[..at], &rest[at + skip..])
            }
            None => break, // an unterminated last line is never dispatched
        };
        rest = next;
        if line.is_empty() {
            if let Some(d) = data.take() {
                events.push(Sse {
                    event: event.take(),
                    data: d,
                });
            } else if ids_dispatch && last_id {
                events.push(Sse {
                    event: event.take(),
                    data: String::new(),
                });
            }
            event = None;
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (name, value) = match line.find(':') {
            Some(at) => {
                let v = &line[at + 1..];
                (&line[..at], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line, ""),
        };
        match name {
            "id" => last_id = true,
            "event" => event = Some(value.to_owned()),
            "data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
    events
}

/// What a client ends up with.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Answer {
    pub text: String,
    pub thinking: bool,
    /// Reasoning text as the client accumulated it (Chat reasoning deltas).
    pub reasoning: String,
    /// Refusal text (Chat `delta.refusal`).
    pub refusal: String,
    /// (name, arguments as parsed JSON)
    pub tools: Vec<(String, Value)>,
    /// The error event the stream ended with, if any.
    pub error: Option<String>,
    pub output_tokens: Option<u64>,
    /// The one stop reason (`stop_reason`, `finish_reason`).
    pub stop_reason: Option<String>,
    /// The tool calls' ids, in order: what the client's next turn refers to.
    pub tool_ids: Vec<String>,
}

/// Checks an Anthropic Messages stream against the seam rules and accumulates its answer.
pub fn anthropic(events: &[Sse]) -> Result<Answer, String> {
    let mut answer = Answer::default();
    let mut started_message = false;
    let mut blocks: Vec<(String, bool, String)> = Vec::new(); // (type, open, json)
    let mut message_delta = false;
    let mut stopped = false;
    for (i, ev) in events.iter().enumerate() {
        let name = ev
            .event
            .as_deref()
            .ok_or_else(|| format!("event {i} has no event: line"))?;
        let data: Value = serde_json::from_str(&ev.data)
            .map_err(|e| format!("event {i} ({name}) data is not JSON: {e}"))?;
        if data["type"] != name {
            return Err(format!(
                "event {i}: event line {name} but type {}",
                data["type"]
            ));
        }
        if stopped {
            return Err(format!("event {i} ({name}) after message_stop"));
        }
        if answer.error.is_some() {
            return Err(format!("event {i} ({name}) after an error event"));
        }
        match name {
            "message_start" => {
                if started_message {
                    return Err("a second message_start".into());
                }
                if i != 0 {
                    return Err("message_start is not first".into());
                }
                started_message = true;
            }
            "ping" => {}
            "content_block_start" => {
                need(started_message, "content_block_start before message_start")?;
                need(!message_delta, "content_block_start after message_delta")?;
                let index = data["index"].as_u64().ok_or("block start without index")? as usize;
                if index != blocks.len() {
                    return Err(format!(
                        "block index {index} is not dense (expected {})",
                        blocks.len()
                    ));
                }
                if blocks.iter().any(|b| b.1) {
                    return Err(format!("block {index} starts while another is open"));
                }
                let kind = data["content_block"]["type"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                if kind == "text" {
                    answer
                        .text
                        .push_str(data["content_block"]["text"].as_str().unwrap_or(""));
                }
                if kind == "thinking" || kind == "redacted_thinking" {
                    answer.thinking = true;
                }
                blocks.push((kind, true, String::new()));
            }
            "content_block_delta" => {
                let index = data["index"].as_u64().ok_or("delta without index")? as usize;
                let block = blocks
                    .get_mut(index)
                    .ok_or(format!("delta for block {index} that was never started"))?;
                need(block.1, "delta for a stopped block")?;
                let delta = &data["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        need(block.0 == "text", "text_delta in a non-text block")?;
                        answer
                            .text
                            .push_str(delta["text"].as_str().ok_or("text_delta without text")?);
                    }
                    Some("input_json_delta") => block
                        .2
                        .push_str(delta["partial_json"].as_str().ok_or("no partial_json")?),
                    Some("thinking_delta") | Some("signature_delta") => {
                        need(
                            block.0 == "thinking",
                            "thinking delta in a non-thinking block",
                        )?;
                    }
                    other => return Err(format!("unknown delta type {other:?}")),
                }
            }
            "content_block_stop" => {
                let index = data["index"].as_u64().ok_or("stop without index")? as usize;
                let block = blocks
                    .get_mut(index)
                    .ok_or(format!("stop for block {index} never started"))?;
                need(block.1, "block stopped twice")?;
                block.1 = false;
                if block.0 == "tool_use" {
                    let json = if block.2.is_empty() { "{}" } else { &block.2 };
                    let input: Value = serde_json::from_str(json).map_err(|e| {
                        format!("tool_use {index} stopped with incomplete JSON {json:?}: {e}")
                    })?;
                    answer.tools.push((String::new(), input));
                }
            }
            "message_delta" => {
                need(!message_delta, "a second message_delta")?;
                need(
                    blocks.iter().all(|b| !b.1),
                    "message_delta while a block is open",
                )?;
                message_delta = true;
                answer.output_tokens = data["usage"]["output_tokens"].as_u64();
                answer.stop_reason = data["delta"]["stop_reason"].as_str().map(str::to_owned);
            }
            "message_stop" => {
                need(message_delta, "message_stop without message_delta")?;
                stopped = true;
            }
            "error" => {
                answer.error = Some(data["error"]["message"].as_str().unwrap_or("").to_owned());
            }
            other => return Err(format!("unexpected event {other}")),
        }
    }
    // Tool names: read from the starts (kept apart above to check JSON at stop time).
    let mut tool_names = Vec::new();
    for ev in events {
        if ev.event.as_deref() == Some("content_block_start") {
            let data: Value = serde_json::from_str(&ev.data).unwrap();
            if data["content_block"]["type"] == "tool_use" {
                answer.tool_ids.push(
                    data["content_block"]["id"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                );
                tool_names.push(
                    data["content_block"]["name"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                );
            }
        }
    }
    for (tool, name) in answer.tools.iter_mut().zip(tool_names) {
        tool.0 = name;
    }
    if answer.error.is_none() {
        need(stopped, "the stream has no message_stop")?;
    }
    Ok(answer)
}

/// Checks an OpenAI Chat Completions stream against the seam rules and accumulates its answer.
pub fn openai(events: &[Sse], expect_usage: bool) -> Result<Answer, String> {
    let mut answer = Answer::default();
    let mut roles = 0;
    let mut finishes = 0;
    let mut done = false;
    let mut usage_seen = false;
    let mut envelope: Option<(Value, Value, Value)> = None;
    let mut tools: Vec<(String, String, String)> = Vec::new(); // id, name, args
    for (i, ev) in events.iter().enumerate() {
        need(ev.event.is_none(), "an event: line in an OpenAI stream")?;
        need(!done, "an event after [DONE]")?;
        if ev.data == "[DONE]" {
            done = true;
            continue;
        }
        need(answer.error.is_none(), "a chunk after the error chunk")?;
        let chunk: Value = serde_json::from_str(&ev.data)
            .map_err(|e| format!("chunk {i} is not JSON: {e} ({:?})", ev.data))?;
        if let Some(err) = chunk.get("error").filter(|e| !e.is_null()) {
            answer.error = Some(err["message"].as_str().unwrap_or("").to_owned());
            continue;
        }
        // vLLM's `{"object":"error",...}`: openai-python yields it as a chunk without choices
        // rather than raising, so a client can only tell it by `object`; it ends the answer.
        if chunk["object"] == "error" {
            answer.error = Some(chunk["message"].as_str().unwrap_or("").to_owned());
            continue;
        }
        need(!usage_seen, "a chunk after the usage chunk")?;
        let env = (
            chunk["id"].clone(),
            chunk["created"].clone(),
            chunk["model"].clone(),
        );
        match &envelope {
            None => envelope = Some(env),
            Some(e) => need(*e == env, "id/created/model changed across the stream")?,
        }
        let finishing = chunk["choices"][0]
            .get("finish_reason")
            .is_some_and(|f| !f.is_null());
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            // Its own chunk (OpenAI), or on the finish chunk (vLLM and others).
            need(
                chunk["choices"].as_array().is_some_and(|c| c.is_empty()) || finishing,
                "usage on a chunk that neither is the usage chunk nor finishes",
            )?;
            usage_seen = true;
            answer.output_tokens = usage["completion_tokens"].as_u64();
        }
        need(
            chunk["choices"].as_array().is_some_and(|c| c.len() <= 1),
            "several choices in a stream checked as one",
        )?;
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        need(
            choice["index"].as_u64() == Some(0),
            "a choice other than the first",
        )?;
        let delta = &choice["delta"];
        if delta.get("role").is_some_and(|r| !r.is_null()) {
            roles += 1;
        }
        for key in ["reasoning_content", "reasoning"] {
            if let Some(text) = delta[key].as_str().filter(|t| !t.is_empty()) {
                need(
                    answer.text.is_empty() && tools.is_empty() && answer.refusal.is_empty(),
                    "reasoning after the answer began",
                )?;
                answer.reasoning.push_str(text);
                answer.thinking = true;
            }
        }
        if let Some(text) = delta["refusal"].as_str() {
            answer.refusal.push_str(text);
        }
        if let Some(text) = delta["content"].as_str() {
            answer.text.push_str(text);
        }
        if let Some(calls) = delta["tool_calls"].as_array() {
            for call in calls {
                let index = call["index"].as_u64().ok_or("tool call without index")? as usize;
                if index == tools.len() {
                    tools.push((
                        call["id"]
                            .as_str()
                            .ok_or("first tool-call delta without id")?
                            .to_owned(),
                        call["function"]["name"]
                            .as_str()
                            .ok_or("first tool-call delta without name")?
                            .to_owned(),
                        String::new(),
                    ));
                } else if index < tools.len() {
                    need(
                        call.get("id").map_or(true, |v| v.is_null()),
                        "tool-call id repeated",
                    )?;
                    need(
                        call["function"].get("name").map_or(true, |v| v.is_null()),
                        "tool-call name repeated",
                    )?;
                } else {
                    return Err(format!("tool-call index {index} is not dense"));
                }
                if let Some(args) = call["function"]["arguments"].as_str() {
                    tools[index].2.push_str(args);
                }
            }
        }
        if finishing {
            let reason = &choice["finish_reason"];
            finishes += 1;
            answer.stop_reason = reason.as_str().map(str::to_owned);
        }
    }
    need(roles <= 1, "role sent more than once")?;
    if answer.error.is_none() {
        need(finishes == 1, &format!("{finishes} finish_reasons"))?;
        need(done, "no [DONE]")?;
        need(usage_seen == expect_usage, "usage chunk presence")?;
    }
    for (id, name, args) in tools {
        answer.tool_ids.push(id);
        let parsed: Value = serde_json::from_str(if args.is_empty() { "{}" } else { &args })
            .map_err(|e| format!("tool call {name} has incomplete JSON {args:?}: {e}"))?;
        answer.tools.push((name, parsed));
    }
    Ok(answer)
}

/// Checks a Responses API stream the way the strictest official accumulator reads it
/// (openai-node's, plus openai-python's identity checks) and returns the answer the Python
/// helper's `get_final_response()` gives: the final `response.output`, checked against what
/// the events built.
///
/// Rules: the first event is `response.created`; every lifecycle event has its id; no
/// lifecycle event after the first item (node would drop its items); `sequence_number`, once
/// present, goes up by one per event; `output_index` of an added item is its position, every
/// other event names an added item; `content_index` is a position in the item's parts; deltas
/// go to items and parts of their type; every `.done` carries the whole joined value; one
/// terminal event, last, whose `output` holds what the events built.
pub fn responses(events: &[Sse]) -> Result<Answer, String> {
    #[derive(Debug)]
    struct Item {
        kind: String,
        id: Value,
        call_id: Value,
        name: String,
        args: String,
        parts: Vec<(String, String)>, // type, text
        /// Reasoning summary texts by `summary_index`.
        summary: Vec<(u64, String)>,
        done: Option<Value>,
    }
    let mut answer = Answer::default();
    let mut id: Option<Value> = None;
    let mut created_at: Option<Value> = None;
    let mut items: Vec<Item> = Vec::new();
    let mut offset: Option<i64> = None;
    let mut terminal: Option<Value> = None;
    for (i, ev) in events.iter().enumerate() {
        let v: Value = serde_json::from_str(&ev.data)
            .map_err(|e| format!("event {i} is not JSON: {e} ({:?})", ev.data))?;
        let kind = v["type"]
            .as_str()
            .ok_or(format!("event {i} without type"))?;
        if let Some(name) = &ev.event {
            need(name == kind, "an event: line that differs from its type")?;
        }
        need(terminal.is_none(), "an event after the terminal event")?;
        need(answer.error.is_none(), "an event after the error event")?;
        match (v["sequence_number"].as_i64(), offset) {
            (Some(n), None) => offset = Some(n - i as i64),
            (Some(n), Some(o)) => need(
                n == i as i64 + o,
                &format!("sequence_number {n} at event {i}: not one more than the last"),
            )?,
            (None, Some(_)) => return Err(format!("event {i} lost its sequence_number")),
            (None, None) => {}
        }
        if i == 0 {
            need(
                kind == "response.created",
                "the first event is not response.created",
            )?;
        }
        let at = v["output_index"].as_u64().map(|n| n as usize);
        let item = |items: &mut Vec<Item>| -> Result<usize, String> {
            let at = at.ok_or(format!("{kind} without output_index"))?;
            need(
                at < items.len(),
                &format!("{kind} for output {at}, never added"),
            )?;
            need(
                items[at].done.is_none(),
                &format!("{kind} after its item was done"),
            )?;
            if let Some(item_id) = v.get("item_id") {
                need(
                    *item_id == items[at].id,
                    &format!("{kind} names another item"),
                )?;
            }
            Ok(at)
        };
        let part = |items: &Vec<Item>, at: usize, ty: &str| -> Result<usize, String> {
            let c = v["content_index"].as_u64().ok_or("no content_index")? as usize;
            need(
                c < items[at].parts.len(),
                &format!("{kind}: content_index {c} unknown"),
            )?;
            need(
                items[at].parts[c].0 == ty,
                &format!("{kind} into a part of another type"),
            )?;
            Ok(c)
        };
        match kind {
            "response.created" | "response.in_progress" | "response.queued" => {
                need(
                    items.is_empty(),
                    &format!("{kind} after output items began"),
                )?;
                let rid = v["response"]["id"].clone();
                match &id {
                    None => id = Some(rid),
                    Some(id) => need(*id == rid, "the response id changed")?,
                }
                need(
                    kind != "response.created" || i == 0,
                    "a second response.created",
                )?;
                // Unix seconds, as the SDKs type it (hand-written streams may leave it out; the
                // layer dates a response it writes); one response has one.
                let at = &v["response"]["created_at"];
                match &created_at {
                    None => {
                        need(
                            at.is_null() || at.as_u64().is_some_and(|t| t > 0),
                            &format!("created_at {at} is not a positive integer"),
                        )?;
                        created_at = Some(at.clone());
                    }
                    Some(first) => need(at == first, "created_at changed")?,
                }
            }
            "response.output_item.added" => {
                need(
                    at == Some(items.len()),
                    "output_index not the next position",
                )?;
                let it = &v["item"];
                items.push(Item {
                    kind: it["type"].as_str().unwrap_or("").to_owned(),
                    id: it["id"].clone(),
                    call_id: it["call_id"].clone(),
                    name: it["name"].as_str().unwrap_or("").to_owned(),
                    args: it["arguments"].as_str().unwrap_or("").to_owned(),
                    parts: Vec::new(),
                    summary: Vec::new(),
                    done: None,
                });
            }
            "response.content_part.added" => {
                let at = item(&mut items)?;
                let c = v["content_index"].as_u64().ok_or("no content_index")? as usize;
                need(
                    c == items[at].parts.len(),
                    "content_index not the next position",
                )?;
                let ty = v["part"]["type"].as_str().unwrap_or("").to_owned();
                items[at].parts.push((ty, String::new()));
            }
            "response.output_text.delta" => {
                let at = item(&mut items)?;
                let c = part(&items, at, "output_text")?;
                items[at].parts[c]
                    .1
                    .push_str(v["delta"].as_str().ok_or("delta not text")?);
            }
            "response.output_text.done" => {
                let at = item(&mut items)?;
                let c = part(&items, at, "output_text")?;
                need(
                    v["text"].as_str() == Some(&items[at].parts[c].1),
                    "output_text.done does not carry the whole text",
                )?;
            }
            "response.content_part.done" => {
                let at = item(&mut items)?;
                let c = part(&items, at, v["part"]["type"].as_str().unwrap_or(""))?;
                if items[at].parts[c].0 == "output_text" {
                    need(
                        v["part"]["text"].as_str() == Some(&items[at].parts[c].1),
                        "content_part.done does not carry the whole text",
                    )?;
                }
            }
            "response.function_call_arguments.delta" => {
                let at = item(&mut items)?;
                need(
                    items[at].kind == "function_call",
                    "arguments for another item",
                )?;
                items[at]
                    .args
                    .push_str(v["delta"].as_str().ok_or("delta not text")?);
            }
            "response.function_call_arguments.done" => {
                let at = item(&mut items)?;
                need(
                    v["arguments"].as_str() == Some(&items[at].args),
                    "function_call_arguments.done does not carry the whole arguments",
                )?;
            }
            "response.reasoning_summary_text.delta" | "response.reasoning_summary_text.done" => {
                let at = item(&mut items)?;
                let index = v["summary_index"].as_u64().ok_or("no summary_index")?;
                let summary = &mut items[at].summary;
                let slot = match summary.iter().position(|(i, _)| *i == index) {
                    Some(slot) => slot,
                    None => {
                        summary.push((index, String::new()));
                        summary.len() - 1
                    }
                };
                if kind.ends_with(".delta") {
                    summary[slot]
                        .1
                        .push_str(v["delta"].as_str().ok_or("delta not text")?);
                } else {
                    need(
                        v["text"].as_str() == Some(&summary[slot].1),
                        "reasoning_summary_text.done is not its joined deltas",
                    )?;
                }
            }
            "response.output_item.done" => {
                let at = item(&mut items)?;
                let it = &v["item"];
                let ours = &items[at];
                need(
                    it["type"].as_str() == Some(&ours.kind)
                        && (ours.kind == "function_call" || it["id"] == ours.id)
                        && it["call_id"] == ours.call_id,
                    "output_item.done changed the item's identity",
                )?;
                if ours.kind == "message" {
                    let texts: Vec<&str> = it["content"]
                        .as_array()
                        .ok_or("a message without content")?
                        .iter()
                        .filter_map(|p| p["text"].as_str())
                        .collect();
                    let built: Vec<&str> = ours
                        .parts
                        .iter()
                        .filter(|p| p.0 == "output_text")
                        .map(|p| p.1.as_str())
                        .collect();
                    need(
                        texts == built,
                        "output_item.done does not carry the whole text",
                    )?;
                }
                if ours.kind == "function_call" {
                    need(
                        it["arguments"].as_str() == Some(&ours.args),
                        "output_item.done does not carry the whole arguments",
                    )?;
                }
                items[at].done = Some(it.clone());
            }
            "response.completed" | "response.incomplete" => {
                need(
                    Some(&v["response"]["id"]) == id.as_ref(),
                    "terminal with another id",
                )?;
                need(
                    created_at.as_ref().map_or(true, |at| {
                        at.is_null() || at == &v["response"]["created_at"]
                    }),
                    "terminal with another created_at",
                )?;
                terminal = Some(v["response"].clone());
            }
            "error" => {
                let e = &v["error"];
                need(
                    e.is_object(),
                    "an error event the SDKs do not raise on (no `error`)",
                )?;
                answer.error = Some(e["message"].as_str().unwrap_or("").to_owned());
            }
            "response.failed" => return Err("response.failed reached the client".into()),
            _ if at.is_some() => {
                item(&mut items)?;
            }
            _ => {}
        }
    }
    if answer.error.is_some() {
        // What the client was given before the error, as the events built it.
        for item in &items {
            for (ty, text) in &item.parts {
                if ty == "output_text" {
                    answer.text.push_str(text);
                }
            }
        }
        return Ok(answer);
    }
    let response = terminal.ok_or("no terminal event")?;
    let output = response["output"]
        .as_array()
        .ok_or("no output in the final response")?;
    need(
        output.len() == items.len(),
        "the final output lacks items the client got",
    )?;
    for (it, ours) in output.iter().zip(&items) {
        let done = ours.done.as_ref().ok_or("an item never done")?;
        need(
            it["type"] == done["type"],
            "the final output's items differ",
        )?;
        match ours.kind.as_str() {
            "message" => {
                for p in it["content"].as_array().ok_or("message without content")? {
                    if let Some(t) = p["text"].as_str() {
                        answer.text.push_str(t);
                    }
                }
                need(
                    it["content"] == done["content"],
                    "the final message differs from its done",
                )?;
            }
            "function_call" => {
                let args = it["arguments"].as_str().ok_or("arguments not text")?;
                need(
                    args == ours.args,
                    "the final arguments differ from the events'",
                )?;
                let parsed: Value = serde_json::from_str(if args.is_empty() { "{}" } else { args })
                    .map_err(|e| {
                        format!("tool call {} has incomplete JSON {args:?}: {e}", ours.name)
                    })?;
                answer
                    .tools
                    .push((it["name"].as_str().unwrap_or("").to_owned(), parsed));
            }
            "reasoning" => answer.thinking = true,
            _ => {}
        }
    }
    answer.output_tokens = response["usage"]["output_tokens"].as_u64();
    need(
        answer.output_tokens.is_some(),
        "no usage in the final response",
    )?;
    // The response's status is its stop reason (`completed`, `incomplete`); the calls' ids are
    // what the client's next turn sends back as `function_call_output.call_id`.
    answer.stop_reason = response["status"].as_str().map(str::to_owned);
    answer.tool_ids = output
        .iter()
        .filter(|it| it["type"] == "function_call")
        .map(|it| it["call_id"].as_str().unwrap_or("").to_owned())
        .collect();
    Ok(answer)
}

fn need(ok: bool, what: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what.to_owned())
    }
}

/// Checks a Gemini stream against what google-genai (and its chats) and @google/genai take,
/// and accumulates its answer: every line that is not blank starts with `data: ` (google-genai
/// reads any other as JSON); every chunk is a response whose first candidate has parts (else
/// chats drop the turn), no `continuationToken` (the SDK would resume with it elsewhere), the
/// same `responseId` and `modelVersion` throughout; one `finishReason`, on the last chunk; or
/// an error chunk last, `error` its first key and `code` an integer (else the SDKs do not
/// raise).
pub fn gemini(bytes: &[u8], events: &[Sse]) -> Result<Answer, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    for line in text.split(['\r', '\n']) {
        need(
            line.is_empty() || line.starts_with("data: "),
            &format!("a line that is neither blank nor data: {line:?}"),
        )?;
    }
    let mut answer = Answer::default();
    let mut envelope: Option<(Value, Value)> = None;
    let mut finished = false;
    let mut tools = Vec::new();
    // The running output count the client has seen: google-genai hands every chunk's
    // usageMetadata to the caller as the answer's usage so far, so it never goes down.
    let mut output_so_far = 0;
    for (i, ev) in events.iter().enumerate() {
        need(ev.event.is_none(), "an event: line in a Gemini stream")?;
        need(!finished, &format!("chunk {i} after the finishReason"))?;
        need(answer.error.is_none(), "a chunk after the error chunk")?;
        let chunk: Value = serde_json::from_str(&ev.data)
            .map_err(|e| format!("chunk {i} is not JSON: {e} ({:?})", ev.data))?;
        if let Some(error) = chunk.get("error") {
            need(
                ev.data.trim_start().starts_with(r#"{"error""#),
                "`error` is not the first key",
            )?;
            need(error["code"].is_u64(), "an error without an integer code")?;
            answer.error = Some(error["message"].as_str().unwrap_or("").to_owned());
            continue;
        }
        need(
            !ev.data.contains("continuationToken"),
            "a continuationToken reached the client",
        )?;
        let env = (chunk["responseId"].clone(), chunk["modelVersion"].clone());
        match &envelope {
            None => envelope = Some(env),
            Some(e) => need(*e == env, "responseId or modelVersion changed")?,
        }
        let candidate = &chunk["candidates"][0];
        need(
            chunk["candidates"].as_array().is_some_and(|c| c.len() == 1),
            &format!("chunk {i} has not one candidate"),
        )?;
        let parts = candidate["content"]["parts"]
            .as_array()
            .filter(|p| !p.is_empty())
            .ok_or(format!("chunk {i} has no parts"))?;
        for part in parts {
            need(
                part.as_object().is_some_and(|p| !p.is_empty()),
                "an empty part",
            )?;
            if let Some(call) = part.get("functionCall") {
                tools.push((
                    call["name"].as_str().unwrap_or("").to_owned(),
                    call["args"].clone(),
                ));
            } else if part["thought"] == true {
                answer.thinking = true;
            } else if let Some(t) = part["text"].as_str() {
                answer.text.push_str(t);
            }
        }
        if let Some(count) = chunk["usageMetadata"].get("candidatesTokenCount") {
            let count = count
                .as_u64()
                .ok_or(format!("chunk {i}: candidatesTokenCount is not a count"))?;
            need(
                count >= output_so_far,
                &format!("chunk {i}: candidatesTokenCount went down ({output_so_far} -> {count})"),
            )?;
            output_so_far = count;
        }
        if candidate.get("finishReason").is_some_and(|f| !f.is_null()) {
            finished = true;
            answer.stop_reason = candidate["finishReason"].as_str().map(str::to_owned);
            answer.output_tokens = chunk["usageMetadata"]["candidatesTokenCount"].as_u64();
        }
    }
    if answer.error.is_none() {
        need(finished, "no finishReason")?;
    }
    answer.tools = tools;
    Ok(answer)
}
