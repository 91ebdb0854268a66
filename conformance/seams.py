"""An independent check of a raw SSE stream against the seam rules listed in README.md here.

Written apart from the SDKs' own parsers and from the crate: a plain SSE parser (LF, CRLF and
CR line ends; comments; multi-line data), then one function per dialect that raises
`SeamError` naming the first rule broken.
"""

import json
from collections import Counter, defaultdict


class SeamError(AssertionError):
    pass


def parse(raw: bytes):
    """The events a spec-following parser dispatches: a list of (event name or None, data)."""
    text = raw.decode("utf-8")
    events, name, data = [], None, None
    i, n = 0, len(text)
    while i < n:
        j = i
        while j < n and text[j] not in "\r\n":
            j += 1
        if j == n:
            break  # an unterminated last line is never dispatched
        line = text[i:j]
        i = j + 2 if text.startswith("\r\n", j) else j + 1
        if line == "":
            if data is not None:
                events.append((name, data))
            name, data = None, None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            name = value
        elif field == "data":
            data = value if data is None else data + "\n" + value
    return events


def need(ok, rule):
    if not ok:
        raise SeamError(rule)


def anthropic(raw: bytes, expect_error=False):
    """Anthropic Messages: returns the error message if the stream ends with one."""
    events = parse(raw)
    need(events, "no events")
    starts, blocks, message_delta, stopped, error = 0, [], 0, False, None
    for i, (name, data) in enumerate(events):
        need(name is not None, f"event {i} has no event line")
        body = json.loads(data)
        need(body.get("type") == name, f"event {i}: event line {name!r} but type {body.get('type')!r}")
        need(not stopped, f"event {i} after message_stop")
        need(error is None, f"event {i} after the error event")
        if name == "message_start":
            starts += 1
            need(i == 0 and starts == 1, "message_start must come once, first")
        elif name == "content_block_start":
            need(message_delta == 0, "a block starts after message_delta")
            need(body["index"] == len(blocks), f"block index {body['index']} is not dense ({len(blocks)} expected)")
            need(all(not b["open"] for b in blocks), "a block starts while another is open")
            blocks.append({"type": body["content_block"]["type"], "open": True, "json": ""})
        elif name == "content_block_delta":
            idx = body["index"]
            need(idx < len(blocks) and blocks[idx]["open"], f"delta for block {idx}, not open")
            if body["delta"]["type"] == "input_json_delta":
                blocks[idx]["json"] += body["delta"]["partial_json"]
        elif name == "content_block_stop":
            idx = body["index"]
            need(idx < len(blocks) and blocks[idx]["open"], f"stop for block {idx}, not open")
            blocks[idx]["open"] = False
            if blocks[idx]["type"] == "tool_use":
                try:
                    json.loads(blocks[idx]["json"] or "{}")
                except ValueError:
                    raise SeamError(f"tool_use {idx} stopped with incomplete JSON {blocks[idx]['json']!r}")
        elif name == "message_delta":
            message_delta += 1
            need(message_delta == 1, "more than one message_delta")
            need(all(not b["open"] for b in blocks), "message_delta while a block is open")
        elif name == "message_stop":
            need(message_delta == 1, "message_stop without message_delta")
            stopped = True
        elif name == "error":
            error = body["error"].get("message", "")
        elif name != "ping":
            raise SeamError(f"unexpected event {name}")
    if expect_error:
        need(error is not None, "no error event")
    else:
        need(error is None, f"an error event: {error}")
        need(stopped, "no message_stop")
    return error


def openai(raw: bytes, include_usage: bool, expect_error=False, done=True, usage_on_finish=False, choices=1):
    """OpenAI Chat Completions: returns the error message if the stream carries one.

    The shapes OpenAI-compatible servers send are options: `done=False` for a server that
    sends no `[DONE]`, `usage_on_finish` for usage on the finish chunk (vLLM) instead of a chunk
    of its own, `choices` for `n`. Azure's opening `prompt_filter_results` chunk (no choices,
    empty id and model) is not part of the envelope; a tool call without `index` (Gemini's
    compatibility endpoint) takes the next position."""
    events = parse(raw)
    roles, finishes, dones, usage_at, error = Counter(), Counter(), 0, None, None
    envelope, tools, usage_seen, last_has_usage = None, defaultdict(list), False, False
    for i, (name, data) in enumerate(events):
        need(name is None, f"event {i} has an event line ({name})")
        need(dones == 0, "an event after [DONE]")
        if data == "[DONE]":
            dones += 1
            continue
        need(data != "", "an empty data payload")
        chunk = json.loads(data)
        if chunk.get("error") or chunk.get("object") == "error":
            need(expect_error, f"an error chunk: {chunk.get('error') or chunk}")
            error = (chunk.get("error") or chunk).get("message", "")
            continue
        need(error is None, "a chunk after the error chunk")
        need(usage_at is None, "a chunk after the usage chunk")
        if chunk.get("prompt_filter_results") is not None and not chunk.get("choices"):
            continue
        env = (chunk.get("id"), chunk.get("created"), chunk.get("model"))
        envelope = envelope or env
        need(env == envelope, f"id/created/model changed: {env} != {envelope}")
        if chunk.get("usage"):
            usage_seen = True
            if not chunk.get("choices"):
                need(not usage_on_finish, "a usage chunk of its own from a server that puts usage on the finish")
                need(chunk.get("choices") == [], "the usage chunk has choices")
                usage_at = i
                continue
            need(usage_on_finish, "usage on a chunk with choices")
        for choice in chunk.get("choices") or []:
            index = choice.get("index", 0)
            need(isinstance(index, int) and 0 <= index < choices, f"choice index {index} beyond n={choices}")
            delta = choice.get("delta") or {}
            if delta.get("role"):
                roles[index] += 1
            calls = tools[index]
            for call in delta.get("tool_calls") or []:
                idx = call.get("index", len(calls))
                fn = call.get("function") or {}
                if idx == len(calls):
                    need(call.get("id") and fn.get("name"), f"tool call {idx} starts without id and name")
                    calls.append(fn.get("arguments") or "")
                else:
                    need(idx < len(calls), f"tool-call index {idx} is not dense")
                    need(not call.get("id"), f"tool call {idx}: id repeated")
                    need(not fn.get("name"), f"tool call {idx}: name repeated")
                    calls[idx] += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                finishes[index] += 1
        if chunk.get("choices"):
            last_has_usage = bool(chunk.get("usage"))
    need(all(n <= 1 for n in roles.values()), f"role sent more than once: {dict(roles)}")
    need(dones == (1 if done else 0), f"{dones} [DONE]")
    if expect_error:
        need(error is not None, "no error chunk")
        return error
    need(all(finishes[c] == 1 for c in range(choices)) and len(finishes) == choices,
         f"finish_reasons per choice: {dict(finishes)}")
    need(usage_seen == include_usage, "usage presence")
    need(usage_on_finish or (usage_at is not None) == include_usage, "usage chunk presence")
    if usage_on_finish and include_usage:
        need(last_has_usage, "the last finish chunk carries no usage")
    for index, calls in tools.items():
        for idx, args in enumerate(calls):
            try:
                json.loads(args or "{}")
            except ValueError:
                raise SeamError(f"choice {index} tool call {idx} has incomplete JSON {args!r}")
    return None


# The Responses event types the official SDKs know (openai-node throws on any other).
RESPONSES_EVENTS = {
    "response.created", "response.queued", "response.in_progress", "response.completed", "response.failed",
    "response.incomplete", "response.output_item.added", "response.output_item.done",
    "response.content_part.added", "response.content_part.done", "response.output_text.delta",
    "response.output_text.done", "response.output_text.annotation.added", "response.refusal.delta",
    "response.refusal.done", "response.function_call_arguments.delta", "response.function_call_arguments.done",
    "response.reasoning_summary_part.added", "response.reasoning_summary_part.done",
    "response.reasoning_summary_text.delta", "response.reasoning_summary_text.done",
    "response.reasoning_text.delta", "response.reasoning_text.done", "error", "keepalive",
}
LIFECYCLE = {"response.created", "response.queued", "response.in_progress", "response.completed",
             "response.failed", "response.incomplete"}
TERMINAL = {"response.completed", "response.failed", "response.incomplete"}
MESSAGE_PART_EVENTS = {"response.output_text.delta", "response.output_text.done", "response.refusal.delta",
                       "response.refusal.done", "response.content_part.done", "response.output_text.annotation.added"}


def _identity(item):
    if item.get("type") == "function_call":
        return ("function_call", item.get("call_id"))
    return (item.get("type"), item.get("id"), item.get("call_id"))


def responses(raw: bytes, expect_error=False):
    """OpenAI Responses, as openai-python's and openai-node's accumulators read it: returns the
    error message if the stream ends in `error` or `response.failed`."""
    events = parse(raw)
    need(events, "no events")
    items, seq, response_id, ended, error = [], None, None, None, None
    for i, (name, data) in enumerate(events):
        need(data != "[DONE]", "a [DONE] (the Responses API sends none)")
        body = json.loads(data)
        kind = body.get("type")
        need(name is None or name == kind, f"event {i}: event line {name!r} but type {kind!r}")
        need(kind in RESPONSES_EVENTS, f"event {i}: unknown type {kind!r} (openai-node throws)")
        need(ended is None, f"event {i} ({kind}) after the terminal {ended}")
        if i == 0:
            need(kind == "response.created", f"the first event is {kind}, not response.created")
        else:
            need(kind != "response.created", f"event {i}: a second response.created")
        if "sequence_number" in body:
            n = body["sequence_number"]
            need(seq is None and n == 0 or seq is not None and n == seq + 1,
                 f"event {i}: sequence_number {n} after {seq}")
            seq = n
        else:
            need(seq is None, f"event {i} has no sequence_number, the ones before had")
        if kind in LIFECYCLE:
            rid = body["response"]["id"]
            response_id = response_id or rid
            need(rid == response_id, f"event {i}: response id {rid} != {response_id}")
            need(kind in TERMINAL or not items,
                 f"event {i}: {kind} after output items (openai-node replaces its snapshot)")
        if kind == "error":
            error = body.get("message") or (body.get("error") or {}).get("message", "")
            ended = kind
        elif kind == "response.output_item.added":
            need(body["output_index"] == len(items), f"event {i}: output_index {body['output_index']} is not "
                 f"the next ({len(items)})")
            items.append({"item": body["item"], "parts": [], "done": False, "args": "", "summary": {}})
        elif kind == "response.output_item.done":
            at = body["output_index"]
            need(at < len(items) and not items[at]["done"], f"event {i}: output_item.done for item {at}")
            need(_identity(body["item"]) == _identity(items[at]["item"]), f"event {i}: item {at} changed identity")
            items[at]["done"] = True
            items[at]["final"] = body["item"]
        elif kind.startswith("response.") and "output_index" in body:
            at = body["output_index"]
            need(at < len(items) and not items[at]["done"], f"event {i}: {kind} for item {at}, not open")
            item = items[at]
            if kind == "response.content_part.added":
                need(body["content_index"] == len(item["parts"]), f"event {i}: content_index not dense")
                item["parts"].append({"text": "", "done": False})
            elif kind in MESSAGE_PART_EVENTS:
                c = body["content_index"]
                need(c < len(item["parts"]) and not item["parts"][c]["done"], f"event {i}: {kind} for part {c}")
                part = item["parts"][c]
                if kind in ("response.output_text.delta", "response.refusal.delta"):
                    need(item["item"]["type"] == "message", f"event {i}: a text delta on a {item['item']['type']}")
                    part["text"] += body["delta"]
                elif kind in ("response.output_text.done", "response.refusal.done"):
                    whole = body.get("text", body.get("refusal"))
                    need(whole == part["text"], f"event {i}: {kind} {whole!r} is not the joined deltas")
                elif kind == "response.content_part.done":
                    p = body["part"]
                    need(p.get("text", p.get("refusal")) == part["text"], f"event {i}: part done differs")
                    part["done"] = True
            elif kind == "response.function_call_arguments.delta":
                need(item["item"]["type"] == "function_call", f"event {i}: arguments for a {item['item']['type']}")
                item["args"] += body["delta"]
            elif kind == "response.function_call_arguments.done":
                need(body["arguments"] == item["args"], f"event {i}: arguments.done is not the joined deltas")
            elif kind.startswith("response.reasoning_summary_"):
                s = item["summary"].setdefault(body["summary_index"], "")
                if kind == "response.reasoning_summary_text.delta":
                    item["summary"][body["summary_index"]] = s + body["delta"]
                elif kind == "response.reasoning_summary_text.done":
                    need(body["text"] == s, f"event {i}: summary text done is not the joined deltas")
        if kind in TERMINAL:
            ended = kind
            if kind == "response.failed":
                error = ((body["response"].get("error") or {}).get("message")) or "response.failed"
            if kind == "response.completed":
                output = body["response"].get("output")
                need(all(it["done"] for it in items), "response.completed with unfinished output items")
                if output is not None:
                    need(len(output) == len(items), f"response.completed has {len(output)} items, the stream "
                         f"{len(items)}")
                    for at, (it, out) in enumerate(zip(items, output)):
                        need(_identity(out) == _identity(it["item"]), f"completed item {at} changed identity")
                        if out.get("type") == "message":
                            texts = [p.get("text", p.get("refusal")) for p in out.get("content") or []]
                            need(texts == [p["text"] for p in it["parts"]],
                                 f"completed item {at}: text differs from the deltas")
                        if out.get("type") == "function_call":
                            need(out.get("arguments") == it["args"] or not it["args"],
                                 f"completed item {at}: arguments differ from the deltas")
                            json.loads(out.get("arguments") or "{}")
    if expect_error:
        need(error is not None, "no error event")
        return error
    need(error is None, f"an error: {error}")
    need(ended == "response.completed", f"ends with {ended}, not response.completed")
    return None


def gemini(raw: bytes, expect_error=False):
    """Gemini streamGenerateContent?alt=sse, as google-genai (Python) and @google/genai read it:
    returns the error message if the stream ends with an error chunk."""
    text = raw.decode("utf-8")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for n, line in enumerate(lines):
        need(line == "" or line.startswith("data: "),
             f"line {n} {line[:40]!r}: google-genai parses every non-empty line that is not `data: ` as JSON")
    need(text.endswith("\n\n") or text.endswith("\r\n\r\n") or not text,
         "the last event has no blank line after it (@google/genai: incomplete JSON segment)")
    events = parse(raw)
    need(events, "no events")
    response_id, model, finishes, error, last_count = None, None, 0, None, 0
    for i, (name, data) in enumerate(events):
        need(error is None, f"event {i} after the error chunk")
        need(finishes == 0, f"event {i} after the finishReason")
        chunk = json.loads(data)
        need(isinstance(chunk, dict), f"event {i} is not an object")
        if "error" in chunk:
            need(next(iter(chunk)) == "error", f"event {i}: `error` is not the first key (Python raises only then)")
            need(isinstance(chunk["error"].get("code"), int), f"event {i}: the error has no numeric code")
            error = chunk["error"].get("message", "")
            continue
        candidates = chunk.get("candidates") or []
        need(len(candidates) <= 1, f"event {i}: {len(candidates)} candidates")
        parts = ((candidates[0].get("content") or {}).get("parts")) if candidates else None
        need(parts, f"event {i}: no parts (a chat drops the whole turn from its history)")
        rid, mv = chunk.get("responseId"), chunk.get("modelVersion")
        response_id, model = response_id or rid, model or mv
        need(rid == response_id, f"event {i}: responseId {rid} != {response_id}")
        need(mv == model, f"event {i}: modelVersion {mv} != {model}")
        need("continuationToken" not in json.dumps(candidates), f"event {i}: a continuationToken")
        for part in parts:
            need(not (part.get("functionCall") or {}).get("willContinue"), f"event {i}: an unfinished function call")
        if candidates[0].get("finishReason"):
            finishes += 1
        count = (chunk.get("usageMetadata") or {}).get("candidatesTokenCount")
        if count is not None:
            need(count >= last_count, f"event {i}: candidatesTokenCount went down ({last_count} -> {count})")
            last_count = count
    if expect_error:
        need(error is not None, "no error chunk")
        return error
    need(error is None, f"an error chunk: {error}")
    need(finishes == 1, f"{finishes} finishReasons")
    return None
