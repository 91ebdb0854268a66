"""`run.py --direct`: the demo upstream alone, straight through the official SDKs.

Proof that the demo speaks each wire format and server shape as the official clients accept
it, before any gateway case leans on it: every format (Messages, Claude on Vertex, Chat in
each server's shape, Responses through both SDK paths, Gemini on v1 and v1beta) x every
answer, with no fault (and google-genai again with the layer's keep-alive between every two
events). Each case checks that the SDK's final message equals the whole canned
answer (examples/gateway/demo/answer.rs) and that the raw bytes obey seams.py. Then the
continuation rules: a request carrying part of the answer gets the rest (prefill, instruction,
input items, a trailing model turn), and a model declared to reject prefill answers the
provider's 400, which the SDK raises. Seconds, not minutes.
"""

import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import clients
from clients import Final

# The demo's canned answers (examples/gateway/demo/answer.rs).
TEXT = ("Streams break in three ordinary ways: the connection resets, the provider stalls, or it sends an "
        "overloaded error halfway through. By then the client holds half an answer, and a retry before the "
        "first byte cannot help. This gateway notices the failure, asks a fallback model to continue exactly "
        "where the first one stopped, and splices the two streams into one.")
TEXT_2 = ("A stream can break at any event. The gateway keeps what the client already holds and has a fallback "
          "continue from there, so the client reads one answer.")
TOOL_TEXT = "I'll check the current weather in Paris."
THINKING = ("The user asks why streams break. Name the failure modes first, then what the gateway does about "
            "each.")
REFUSAL = "I'm sorry, but I can't help with that request as it is phrased."
PARIS = ("get_weather", {"city": "Paris", "unit": "celsius"})
TOKYO = ("get_weather", {"city": "Tokyo", "unit": "celsius"})

PARTIAL = "Streams break in three ordinary ways"
REST = TEXT[len(PARTIAL):]
INSTRUCTION = "Continue exactly where your previous message stopped, without repeating it."
QUESTION = clients.QUESTION

# The Chat servers of examples/gateway/demo/servers.rs, with what seams.py must expect of
# each, and the delta field their reasoning streams in.
SERVERS = {
    "demo": ({}, None),
    "openai": ({}, None),
    "azure": ({}, None),
    "vllm": ({"usage_on_finish": True}, "reasoning"),
    "deepseek": ({}, "reasoning_content"),
    "openrouter": ({}, "reasoning"),
    "gemini-compat": ({"done": False}, None),
    "framed": ({}, None),
}


def whole(answer, text=TEXT) -> Final:
    """The whole answer `answer` streams, as an SDK's final message holds it."""
    return {
        "text": Final(text, [], False),
        "tool": Final(TOOL_TEXT, [PARIS], False),
        "parallel-tools": Final("", [PARIS, TOKYO], False),
        "thinking": Final(text, [], True),
        "refusal": Final(REFUSAL, [], False),
    }[answer]


class Case:
    """One request straight to the demo: `wrapper` asks `model` for `answer` with `kwargs`;
    the SDK's final message must be `want` (or, with `rejected`, the SDK raises the API's 400
    whose message holds that text)."""

    def __init__(self, name, wrapper, model, answer, want=None, headers=None, seams=None, rejected=None,
                 reasoning=None, **kwargs):
        self.name, self.wrapper, self.model, self.answer = name, wrapper, model, answer
        self.want, self.headers, self.seams = want, headers or {}, seams or {}
        self.rejected, self.reasoning, self.kwargs = rejected, reasoning, kwargs


def cases():
    out = []
    for answer in ("text", "tool", "parallel-tools", "thinking"):
        for wrapper in ("anthropic", "anthropic-vertex"):
            out.append(Case(f"{wrapper}/{answer}", wrapper, "demo-claude-primary", answer, whole(answer)))
        for wrapper in ("google-genai", "google-genai-v1beta", "google-genai-keep-alives"):
            out.append(Case(f"{wrapper}/{answer}", wrapper, "demo-gemini-primary", answer, whole(answer)))
    for answer in ("text", "tool", "parallel-tools", "thinking", "refusal"):
        for wrapper in ("openai-responses", "openai-responses-raw"):
            out.append(Case(f"{wrapper}/{answer}", wrapper, "demo-gpt-primary", answer, whole(answer)))
    for server, (shape, field) in SERVERS.items():
        header = {"x-demo-server": server}
        answers = ["text", "tool", "parallel-tools", "refusal"] + (["thinking"] if field else [])
        for answer in answers:
            want = whole(answer)._replace(thinking=answer == "thinking")
            # The stream helper raises on tool calls without `index` (as against Gemini's own
            # endpoint): those are read raw, each call taking the next position.
            raw = server == "gemini-compat" and answer in ("tool", "parallel-tools")
            out.append(Case(f"openai/{server}/{answer}", "openai", "demo-gpt-primary", answer, want, header,
                            seams=shape, reasoning=field, reasoning_field=field, raw=raw))
        out.append(Case(f"openai/{server}/text/no-usage", "openai", "demo-gpt-primary", "text", whole("text"),
                        header, seams=shape, usage=False))
        for choice, text in ((0, TEXT), (1, TEXT_2)):
            out.append(Case(f"openai/{server}/n=2/choice {choice}", "openai", "demo-gpt-primary", "text",
                            whole("text", text), header, seams={**shape, "choices": 2}, n=2, choice=choice))

    # Continuation: the rest of the answer, or the provider's 400 for a prefill it rejects.
    claude_prefill = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": PARTIAL}]
    out += [
        Case("anthropic/prefill", "anthropic", "demo-claude-prefill", "text", Final(REST, [], False),
             messages=claude_prefill),
        Case("anthropic-vertex/prefill", "anthropic-vertex", "demo-claude-prefill", "text",
             Final(REST, [], False), messages=claude_prefill),
        Case("anthropic-vertex/prefill-rejected", "anthropic-vertex", "demo-claude-no-prefill", "text",
             rejected="does not support assistant message prefill", messages=claude_prefill),
        Case("openai/instruction", "openai", "demo-gpt-no-prefix", "text", Final(REST, [], False),
             messages=claude_prefill + [{"role": "user", "content": INSTRUCTION}]),
        Case("openai-responses/instruction", "openai-responses", "demo-gpt-no-prefix", "text",
             Final(REST, [], False), input=claude_prefill + [{"role": "user", "content": INSTRUCTION}]),
        # No prefill in the Responses API: a trailing assistant item is not continued.
        Case("openai-responses/no-prefill", "openai-responses", "demo-gpt-primary", "text", whole("text"),
             input=claude_prefill),
    ]
    gemini_prefill = [{"role": "user", "parts": [{"text": QUESTION}]}, {"role": "model", "parts": [{"text": PARTIAL}]}]
    gemini_instruction = gemini_prefill + [{"role": "user", "parts": [{"text": INSTRUCTION}]}]
    for wrapper in ("google-genai", "google-genai-v1beta"):
        out += [
            Case(f"{wrapper}/prefill", wrapper, "demo-gemini-primary", "text", Final(REST, [], False),
                 contents=gemini_prefill),
            Case(f"{wrapper}/prefill-rejected", wrapper, "demo-gemini-no-prefill", "text",
                 rejected="Requests ending with a model turn are not supported", contents=gemini_prefill),
            Case(f"{wrapper}/instruction", wrapper, "demo-gemini-no-prefill", "text", Final(REST, [], False),
                 contents=gemini_instruction),
        ]
    return out


_local = threading.local()


def client(kind, base):
    """This thread's wrapper `kind` (SDK clients are made once per thread, not per case)."""
    cache = _local.__dict__.setdefault("clients", {})
    if kind not in cache:
        cache[kind] = clients.WRAPPERS[kind](base)
    return cache[kind]


def run(case, base):
    c = client(case.wrapper, base)
    headers = {"x-demo-fault": "none", **case.headers}
    if case.rejected:
        try:
            c.ask(case.model, case.answer, headers, **case.kwargs)
        except clients.API_ERRORS as err:
            if getattr(err, "status_code", getattr(err, "code", None)) != 400 or case.rejected not in str(err):
                raise AssertionError(f"not the provider's 400: {err!r}")
            return
        raise AssertionError("the SDK raised nothing: the prefill was not rejected")
    got = c.ask(case.model, case.answer, headers, **case.kwargs)
    if got != case.want:
        raise AssertionError(f"the SDK's final message differs:\n got {got}\nwant {case.want}")
    c.check_seams(case.kwargs.get("usage", True), **case.seams)
    if case.reasoning and case.answer == "thinking":
        joined = c.reasoning(case.reasoning)
        if joined != THINKING:
            raise AssertionError(f"reasoning in {case.reasoning} is {joined!r}")


def main(gateway_bin, start) -> int:
    work = Path(tempfile.mkdtemp(prefix="conformance-direct-"))
    log = open(work / "demo.log", "w")
    demo, found = start([str(gateway_bin), "--demo-upstream-only", "--demo-pace-ms", "0"], {"demo_upstream"}, log)
    try:
        base = found["demo_upstream"]
        started, failures, passed = time.time(), [], 0
        all_cases = cases()
        print(f"conformance --direct: {len(all_cases)} cases against the demo upstream at {base}", flush=True)
        def one(case):
            try:
                run(case, base)
                return None
            except Exception as err:  # noqa: BLE001 - every failure is reported
                return f"{case.name}: {type(err).__name__}: {err}\n{traceback.format_exc(limit=4)}"

        with ThreadPoolExecutor(max_workers=4) as pool:
            for error in pool.map(one, all_cases):
                if error:
                    failures.append(error)
                else:
                    passed += 1
        versions = sorted({client(kind, base).version() for kind in {c.wrapper for c in all_cases}})
        print(f"conformance --direct ({time.time() - started:.1f} s, {', '.join(versions)})")
        print(f"{passed} passed, {len(failures)} failed")
        for f in failures[:20]:
            print("\nFAILED " + f)
        return 1 if failures else 0
    finally:
        demo.terminate()
        try:
            demo.wait(timeout=10)
        except Exception:  # noqa: BLE001
            demo.kill()
