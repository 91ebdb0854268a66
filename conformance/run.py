#!/usr/bin/env python3
"""Conformance of spliced streams with the official Python SDKs.

Sets up conformance/.venv from requirements.txt (pinned; nothing global), builds the example
gateway, starts its demo upstream alone (no pacing) and the gateway in front of it with a
config of its own, then streams every case through the SDKs' own streaming helpers
(`client.messages.stream(...).get_final_message()`,
`client.chat.completions.stream(...).get_final_completion()`) and checks:

* the SDK raises nothing (or, when every attempt fails, raises an error naming the original
  failure);
* the final message's text and tool calls equal the scripted whole answer exactly, and
  tool-call arguments are complete JSON;
* the raw bytes the SDK read obey the seam rules (seams.py, an independent checker).

Cases: each dialect x each answer (text; text then a tool call; parallel tool calls (OpenAI);
thinking then text (Anthropic)) x each failure class (reset, stall, in-band error, truncation
at every event position of the primary's stream; a retryable status before the stream) x a
fallback that accepts prefill and one that rejects it. Plus: every attempt fails; the primary
answers a non-retryable 400; the per-request opt-out; a fallback declared to accept prefill
that answers it with 400.

Prints a matrix client x dialect x failure class at the end; exits non-zero if any case fails.
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV = HERE / ".venv"


def bootstrap():
    """Re-run this script inside conformance/.venv, (re)created when requirements change."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    requirements = (HERE / "requirements.txt").read_text()
    stamp = VENV / ".installed-requirements"
    python = VENV / "bin" / "python"
    if not stamp.exists() or stamp.read_text() != requirements:
        print("conformance: setting up conformance/.venv", flush=True)
        subprocess.check_call([sys.executable, "-m", "venv", "--clear", str(VENV)])
        subprocess.check_call([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                               "-r", str(HERE / "requirements.txt")])
        stamp.write_text(requirements)
    os.execv(str(python), [str(python), __file__, *sys.argv[1:]])


bootstrap()

import anthropic  # noqa: E402
import httpx2  # noqa: E402
import openai  # noqa: E402

sys.path.insert(0, str(HERE))
import seams  # noqa: E402

IDLE_MS = 300
WORKERS = 4
QUESTION = "What happens when a stream breaks half-way?"
TOOL = {"name": "get_weather", "description": "Current weather in a city.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                         "required": ["city"]}}
OPENAI_TOOL = {"type": "function", "function": {"name": TOOL["name"], "description": TOOL["description"],
                                                 "parameters": TOOL["input_schema"]}}

# What the client is told when every attempt fails: the original failure's class, by fault.
ORIGINAL = {"reset": "stream broken", "stall": "stream stalled", "error": "error event in stream",
            "truncate": "stream ended early"}


# ---- processes ---------------------------------------------------------------------------

def build_gateway() -> Path:
    if os.environ.get("GATEWAY_BIN"):  # a gateway built elsewhere, for quick local runs
        return Path(os.environ["GATEWAY_BIN"])
    print("conformance: building the example gateway (release)", flush=True)
    subprocess.check_call(["cargo", "build", "--quiet", "--release", "--example", "gateway"], cwd=ROOT)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if not target.is_absolute():
        target = ROOT / target
    return target / "release" / "examples" / "gateway"


def start(args, keys, log):
    """Starts the gateway binary with `args`; returns it and the `key=value` lines it printed."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True)
    found = {}
    deadline = time.time() + 60
    while len(found) < len(keys):
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{args[0]} exited before printing {keys} (see {log.name})")
        key, _, value = line.strip().partition("=")
        if key in keys:
            found[key] = value
        if time.time() > deadline:
            raise RuntimeError(f"{args[0]} printed no {keys} within a minute")
    # Keep draining stdout so the process never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc, found


def config(upstream: str) -> str:
    """The gateway config: each primary has one fallback; which one picks the case."""
    lines = [
        'listen = "127.0.0.1:0"',
        "[fallback]",
        "max_attempts = 3",
        f"idle_timeout_ms = {IDLE_MS}",
        "keep_alive_ms = 100",
        'when_no_prefill = "instruction"',
    ]
    for name, dialect in [("demo-anthropic", "anthropic"), ("demo-openai", "openai-chat")]:
        lines += ["[[upstreams]]", f'name = "{name}"', f'dialect = "{dialect}"', f'base_url = "{upstream}"',
                  'api_key_env = "CONFORMANCE_UPSTREAM_KEY"']
    models = [
        # (name, upstream, upstream model, prefill, fallbacks)
        ("claude-a", "demo-anthropic", "demo-claude-primary", "none", ["claude-prefill"]),
        ("claude-b", "demo-anthropic", "demo-claude-primary", "none", ["claude-no-prefill"]),
        ("claude-c", "demo-anthropic", "demo-claude-primary", "none", ["claude-liar", "claude-prefill"]),
        ("claude-prefill", "demo-anthropic", "demo-claude-prefill", "assistant", []),
        ("claude-no-prefill", "demo-anthropic", "demo-claude-no-prefill", "none", []),
        # Declared to take prefill, but the model behind it rejects it with 400.
        ("claude-liar", "demo-anthropic", "demo-claude-no-prefill", "assistant", []),
        ("gpt-a", "demo-openai", "demo-gpt-primary", "none", ["gpt-prefix"]),
        ("gpt-b", "demo-openai", "demo-gpt-primary", "none", ["gpt-no-prefix"]),
        ("gpt-prefix", "demo-openai", "demo-gpt-prefix", "prefix", []),
        ("gpt-no-prefix", "demo-openai", "demo-gpt-no-prefix", "none", []),
    ]
    for name, upstream_name, upstream_model, prefill, fallbacks in models:
        lines += ["[[models]]", f'name = "{name}"', f'upstream = "{upstream_name}"',
                  f'upstream_model = "{upstream_model}"', f'prefill = "{prefill}"',
                  "fallbacks = [" + ", ".join(f'"{f}"' for f in fallbacks) + "]"]
    return "\n".join(lines) + "\n"


# ---- clients -----------------------------------------------------------------------------

class Tee(httpx2.BaseTransport):
    """The SDK's transport, keeping a copy of the last response body as the SDK read it."""

    def __init__(self):
        self.inner = httpx2.HTTPTransport()
        self.body = bytearray()
        self.request = None

    def handle_request(self, request):
        self.request = (request.method, str(request.url), dict(request.headers), request.read())
        response = self.inner.handle_request(request)
        self.body = bytearray()
        body, inner = self.body, response.stream

        class Stream(httpx2.SyncByteStream):
            def __iter__(self):
                for chunk in inner:
                    body.extend(chunk)
                    yield chunk

            def close(self):
                inner.close()

        return httpx2.Response(response.status_code, headers=response.headers, stream=Stream(),
                               extensions=response.extensions)


class Client:
    """One SDK client and the bytes it last read."""

    def __init__(self, kind: str, gateway: str):
        self.kind = kind
        self.tee = Tee()
        http = httpx2.Client(transport=self.tee, timeout=60)
        if kind == "anthropic":
            self.sdk = anthropic.Anthropic(base_url=gateway, api_key="sk-client-own-key", http_client=http,
                                           max_retries=0)
        else:
            self.sdk = openai.OpenAI(base_url=gateway + "/v1", api_key="sk-client-own-key", http_client=http,
                                     max_retries=0)

    def ask(self, model: str, answer: str, headers: dict, include_usage: bool):
        """Streams one answer; returns (text, tools, thinking) from the SDK's final message."""
        headers = {"x-demo-answer": answer, **headers}
        if self.kind == "anthropic":
            kwargs = dict(model=model, max_tokens=4096, messages=[{"role": "user", "content": QUESTION}],
                          extra_headers=headers)
            if answer == "thinking":
                kwargs["thinking"] = {"type": "enabled", "budget_tokens": 1024}
            if answer in ("tool", "parallel-tools"):
                kwargs["tools"] = [TOOL]
            with self.sdk.messages.stream(**kwargs) as stream:
                message = stream.get_final_message()
            text = "".join(b.text for b in message.content if b.type == "text")
            tools = [(b.name, b.input) for b in message.content if b.type == "tool_use"]
            thinking = any(b.type in ("thinking", "redacted_thinking") for b in message.content)
            return text, tools, thinking
        kwargs = dict(model=model, messages=[{"role": "user", "content": QUESTION}], extra_headers=headers,
                      max_completion_tokens=4096)
        if include_usage:
            kwargs["stream_options"] = {"include_usage": True}
        if answer in ("tool", "parallel-tools"):
            kwargs["tools"] = [OPENAI_TOOL]
        with self.sdk.chat.completions.stream(**kwargs) as stream:
            completion = stream.get_final_completion()
        message = completion.choices[0].message
        tools = []
        for call in message.tool_calls or []:
            try:
                arguments = json.loads(call.function.arguments)
            except ValueError:
                arguments = call.function.arguments  # incomplete: never equal to the whole answer
            tools.append((call.function.name, arguments))
        return message.content or "", tools, False

    def replay_raw(self) -> bytes:
        """The whole response to the last request, read to its end (an SDK stops reading at an
        error); the demo upstream is deterministic, so it is the stream the SDK was reading."""
        method, url, headers, content = self.tee.request
        with httpx2.Client(timeout=60) as http:
            return http.request(method, url, headers=headers, content=content).content

    def check_seams(self, include_usage: bool, expect_error=False):
        raw = self.replay_raw() if expect_error else bytes(self.tee.body)
        if self.kind == "anthropic":
            return seams.anthropic(raw, expect_error=expect_error)
        return seams.openai(raw, include_usage, expect_error=expect_error)


_local = threading.local()


def client(kind: str, gateway: str) -> Client:
    cache = getattr(_local, "clients", None)
    if cache is None:
        cache = _local.clients = {}
    if kind not in cache:
        cache[kind] = Client(kind, gateway)
    return cache[kind]


# ---- cases -------------------------------------------------------------------------------

class Case:
    def __init__(self, sdk, answer, failure, fault, model, fallback, expect="whole", usage=True, extra=None):
        self.sdk, self.answer, self.failure, self.fault = sdk, answer, failure, fault
        self.model, self.fallback, self.expect, self.usage = model, fallback, expect, usage
        self.extra = extra or {}

    def name(self):
        return f"{self.sdk}/{self.answer}/{self.fault}/{self.fallback}"


def run_case(case: Case, gateway: str, wholes):
    c = client(case.sdk, gateway)
    headers = {"x-demo-fault": case.fault, **case.extra}
    want = wholes[(case.sdk, case.answer)]
    if case.expect == "whole":
        got = c.ask(case.model, case.answer, headers, case.usage)
        c.check_seams(case.usage)
        if got[0] != want[0]:
            raise AssertionError(f"text differs:\n got {got[0]!r}\nwant {want[0]!r}")
        if got[1] != want[1]:
            raise AssertionError(f"tool calls differ: got {got[1]} want {want[1]}")
        if got[2] != want[2]:
            raise AssertionError(f"thinking present: got {got[2]} want {want[2]}")
    elif case.expect == "original-error":
        try:
            c.ask(case.model, case.answer, headers, case.usage)
        except (anthropic.APIError, openai.APIError) as err:
            message = str(err)
            original = ORIGINAL[case.failure]
            if original not in message:
                raise AssertionError(f"the error does not name the original failure ({original}): {message}")
            if "prefill" in message.lower():
                raise AssertionError(f"a fallback's error reached the client: {message}")
            c.check_seams(case.usage, expect_error=True)
        else:
            raise AssertionError("the SDK raised nothing though every attempt failed")
    elif case.expect == "bad-request":
        try:
            c.ask(case.model, case.answer, headers, case.usage)
        except (anthropic.BadRequestError, openai.BadRequestError):
            pass
        else:
            raise AssertionError("a non-retryable 400 did not reach the client as a 400")
    elif case.expect == "partial":
        # Opted out: the primary's early end reaches the client as it happened, no fallback:
        # the SDK ends with part of the answer (text cut short, or tool calls missing or cut).
        got = c.ask(case.model, case.answer, headers, case.usage)
        if got == want or not want[0].startswith(got[0]):
            raise AssertionError(f"expected the primary's partial answer, got {got}")


def event_count(gateway: str, sdk: str, answer: str, model: str) -> int:
    """How many events the primary's full answer has (positions of failure: 0..n-1)."""
    c = client(sdk, gateway)
    c.ask(model, answer, {"x-demo-fault": "none"}, True)
    return len(seams.parse(bytes(c.tee.body)))


def cases(gateway: str):
    wholes, out = {}, []
    plan = [("anthropic", a, "claude") for a in ("text", "tool", "thinking")] + \
           [("openai", a, "gpt") for a in ("text", "tool", "parallel-tools")]
    for sdk, answer, prefix in plan:
        c = client(sdk, gateway)
        wholes[(sdk, answer)] = c.ask(f"{prefix}-a", answer, {"x-demo-fault": "none"}, True)
        c.check_seams(True)
        n = event_count(gateway, sdk, answer, f"{prefix}-a")
        for fallback, model in [("prefill", f"{prefix}-a"), ("no-prefill", f"{prefix}-b")]:
            for failure in ("reset", "stall", "error", "truncate"):
                for at in range(n):
                    usage = at % 2 == 0  # OpenAI: with and without a usage chunk
                    out.append(Case(sdk, answer, failure, f"{failure}@{at}", model, fallback, usage=usage))
            status = "529" if sdk == "anthropic" else "503"
            out.append(Case(sdk, answer, "status", status, model, fallback))
        # Positions where the answer is still incomplete: before message_delta (Anthropic) or
        # finish_reason (OpenAI, followed by the usage chunk and [DONE]). Later, the layer
        # closes the stream itself and no attempt is needed.
        last = n - 2 if sdk == "anthropic" else n - 3
        for failure in ("reset", "stall", "error", "truncate"):
            for at in (1, n // 2, last):
                out.append(Case(sdk, answer, failure, f"{failure}@{at}, fallbacks=503", f"{prefix}-a", "all-fail",
                                expect="original-error"))
        out.append(Case(sdk, answer, "client-error", "400", f"{prefix}-a", "none", expect="bad-request"))
        out.append(Case(sdk, answer, "opt-out", f"truncate@{n // 2}", f"{prefix}-a", "off", expect="partial",
                        extra={"x-midstream-fallback": "off"}))
        if sdk == "anthropic":
            for at in (2, n // 2):
                out.append(Case(sdk, answer, "reset", f"reset@{at}", "claude-c", "prefill-rejected"))
    return wholes, out


def main():
    gateway_bin = build_gateway()
    work = Path(tempfile.mkdtemp(prefix="conformance-"))
    log = open(work / "processes.log", "w")
    procs = []
    try:
        demo, found = start([str(gateway_bin), "--demo-upstream-only", "--demo-pace-ms", "0"], {"demo_upstream"}, log)
        procs.append(demo)
        (work / "gateway.toml").write_text(config(found["demo_upstream"]))
        env_key = os.environ.setdefault("CONFORMANCE_UPSTREAM_KEY", "sk-upstream-key")
        assert env_key
        gw, found = start([str(gateway_bin), "--config", str(work / "gateway.toml")], {"gateway"}, log)
        procs.append(gw)
        gateway = found["gateway"]
        print(f"conformance: gateway at {gateway}, logs in {log.name}", flush=True)

        wholes, all_cases = cases(gateway)
        print(f"conformance: {len(all_cases)} cases", flush=True)
        results = defaultdict(Counter)
        failures = []
        started = time.time()

        def one(case):
            try:
                run_case(case, gateway, wholes)
                return case, None
            except Exception as err:  # noqa: BLE001 - every failure is reported
                return case, f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}"

        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            for case, error in pool.map(one, all_cases):
                dialect = "anthropic" if case.sdk == "anthropic" else "openai-chat"
                client_name = f"{case.sdk}=={anthropic.__version__ if case.sdk == 'anthropic' else openai.__version__}"
                results[(client_name, dialect, case.failure)]["failed" if error else "passed"] += 1
                if error:
                    failures.append(f"{case.name()} ({case.model}): {error}")

        print(f"\nconformance matrix ({time.time() - started:.0f} s)\n")
        print(f"{'client':<20} {'dialect':<12} {'failure class':<16} {'passed':>7} {'failed':>7}")
        for (client_name, dialect, failure), counts in sorted(results.items()):
            print(f"{client_name:<20} {dialect:<12} {failure:<16} {counts['passed']:>7} {counts['failed']:>7}")
        total = sum(c["passed"] for c in results.values())
        print(f"\n{total} passed, {len(failures)} failed")
        for f in failures[:20]:
            print("\nFAILED " + f)
        if failures:
            (work / "failures.log").write_text("\n\n".join(failures))
            print(f"\nall {len(failures)} failures: {work / 'failures.log'}")
        return 1 if failures else 0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    sys.exit(main())
