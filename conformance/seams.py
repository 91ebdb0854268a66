"""An independent check of a raw SSE stream against the seam rules listed in README.md here.

Written apart from the SDKs' own parsers and from the crate: a plain SSE parser (LF, CRLF and
CR line ends; comments; multi-line data), then one function per dialect that raises
`SeamError` naming the first rule broken.
"""

import json


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


def openai(raw: bytes, include_usage: bool, expect_error=False):
    """OpenAI Chat Completions: returns the error message if the stream carries one."""
    events = parse(raw)
    roles, finishes, dones, usage_at, error = 0, 0, 0, None, None
    envelope, tools = None, []
    for i, (name, data) in enumerate(events):
        need(name is None, f"event {i} has an event line ({name})")
        need(dones == 0, "an event after [DONE]")
        if data == "[DONE]":
            dones += 1
            continue
        need(data != "", "an empty data payload")
        chunk = json.loads(data)
        if chunk.get("error"):
            need(expect_error, f"an error chunk: {chunk['error']}")
            error = chunk["error"].get("message", "")
            continue
        need(error is None, "a chunk after the error chunk")
        need(usage_at is None, "a chunk after the usage chunk")
        env = (chunk.get("id"), chunk.get("created"), chunk.get("model"))
        envelope = envelope or env
        need(env == envelope, f"id/created/model changed: {env} != {envelope}")
        if chunk.get("usage"):
            need(chunk.get("choices") == [], "the usage chunk has choices")
            usage_at = i
            continue
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("role"):
                roles += 1
            for call in delta.get("tool_calls") or []:
                idx = call["index"]
                fn = call.get("function") or {}
                if idx == len(tools):
                    need(call.get("id") and fn.get("name"), f"tool call {idx} starts without id and name")
                    tools.append(fn.get("arguments") or "")
                else:
                    need(idx < len(tools), f"tool-call index {idx} is not dense")
                    need(not call.get("id"), f"tool call {idx}: id repeated")
                    need(not fn.get("name"), f"tool call {idx}: name repeated")
                    tools[idx] += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                finishes += 1
    need(roles <= 1, f"role sent {roles} times")
    need(dones == 1, f"{dones} [DONE]")
    if expect_error:
        need(error is not None, "no error chunk")
        return error
    need(finishes == 1, f"{finishes} finish_reasons")
    need((usage_at is not None) == include_usage, "usage chunk presence")
    for idx, args in enumerate(tools):
        try:
            json.loads(args or "{}")
        except ValueError:
            raise SeamError(f"tool call {idx} has incomplete JSON {args!r}")
    return None
