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
that answers it with 400. Across dialects (issue 14): the anthropic SDK with fallbacks on the
OpenAI Chat upstream, on Gemini's API and on the Responses one, the openai SDK (Chat
Completions and Responses) and google-genai with fallbacks on the Anthropic one, each answer
that can cross x each failure class at sampled positions (the first and last few, and every
`CROSS_STEP`-th, or a handful per answer: the Rust matrices in tests/cross_dialect.rs and
tests/cross_gemini.rs keep every position); a request that cannot cross gets the original
failure.

OpenAI-compatible servers (issue 9, `x-demo-server`, positions sampled): reasoning in
`reasoning_content` (DeepSeek) and `reasoning` (vLLM, usage on the finish chunk), kept once
when a failure cuts it; a refusal; `n: 2` (restarted while the client has no choice's answer,
else a clean error the SDK raises); `id:` lines with CRLF while keep-alives flow during a slow
fallback (the openai SDK dispatches an event at every blank line after an `id:`).

Prints a matrix client x dialect x failure class at the end; exits non-zero if any case fails.

The SDK calls are wrappers in clients.py; the dialects and their models are entries of
DIALECTS below: a new dialect's gateway cases are a wrapper and an entry, not new loops.

`run.py --direct` checks the demo upstream alone instead: every wire format and server shape
it speaks, straight through the official SDKs, no gateway and no fault (direct.py).
"""

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

sys.path.insert(0, str(HERE))
import clients  # noqa: E402
import seams  # noqa: E402

IDLE_MS = 300
# Before its first content an attempt is held by the first-token deadline, not the idle timeout:
# a stall there would otherwise wait the gateway's 60 s default, as long as the clients' own
# read timeout (a race, and a minute per case). Short, with room for a loaded machine.
FIRST_TOKEN_MS = 5000
WORKERS = 4
# Across dialects, every CROSS_STEP-th failure position (plus the first and last few).
CROSS_STEP = 5

# What the client is told when every attempt fails: the original failure's class, by fault.
ORIGINAL = {"reset": "stream broken", "stall": "stream stalled", "error": "error event in stream",
            "truncate": "stream ended early"}


class Dialect:
    """One client dialect the gateway serves, and how its cases are made.

    `wrapper` names the SDK call (clients.WRAPPERS); `upstream` the gateway upstream of the
    `dialect`; `models` the gateway's models for it as (name, upstream model, prefill,
    fallbacks), where `{prefix}-a` is a primary whose fallback accepts prefill and `{prefix}-b`
    one whose fallback rejects it; `answers` the x-demo-answer values; `status` a retryable
    status; `tail` the events after the answer is complete (a failure there needs no fallback);
    `prefill_rejected` a model whose first fallback is declared to take prefill but answers it
    with 400; `every` samples failure positions (every k-th, plus the first and last three) to
    keep CI within its budget (the Rust splice matrix keeps every position); `cross` a `Cross`
    per other dialect the client's fallbacks speak. A model may name its own upstream as a
    fifth element (a fallback on Claude on Vertex AI, UPSTREAMS). `truncation_raises`: an SDK that raises on a
    stream without its terminal event (the Responses helpers) rather than returning the partial
    answer. A new dialect's gateway cases are one more entry in DIALECTS."""

    def __init__(self, wrapper, dialect, upstream, prefix, models, answers, status, tail, prefill_rejected=None,
                 every=1, cross=None, truncation_raises=False):
        self.wrapper, self.dialect, self.upstream, self.prefix = wrapper, dialect, upstream, prefix
        self.models, self.answers, self.status, self.tail = models, answers, status, tail
        self.prefill_rejected, self.every, self.cross = prefill_rejected, every, cross or []
        self.truncation_raises = truncation_raises

    def positions(self, n):
        if self.every <= 1:
            return list(range(n))
        return sorted(set(range(0, n, self.every)) | {p for p in (0, 1, 2, n - 3, n - 2, n - 1) if 0 <= p < n})


class Cross:
    """Fallbacks in another dialect: `to` names it; `prefill` and `no_prefill` are primaries
    (in DIALECTS' models) whose fallback there accepts prefill (None where the dialect has no
    prefill) or rejects it; `answers` the
    answers whose request can cross and whose final message is checked whole; `refused` those
    whose request cannot (Anthropic's extended thinking): it is never sent there, and the
    client gets the original failure. Failure positions: the first and last few, and every
    `CROSS_STEP`-th; with `spread`, every (n // spread)-th instead, a handful per answer
    whatever its length (the Rust matrices in tests/cross_dialect.rs and tests/cross_gemini.rs
    keep every position)."""

    def __init__(self, to, answers, prefill, no_prefill, spread=None, refused=()):
        self.to, self.answers, self.prefill, self.no_prefill = to, answers, prefill, no_prefill
        self.spread, self.refused = spread, refused

    def fallbacks(self):
        """The kinds of fallback and their primaries: a dialect without prefill (Responses)
        has no `prefill` one."""
        return [(kind, model) for kind, model in (("prefill", self.prefill), ("no-prefill", self.no_prefill))
                if model]

    def positions(self, n):
        step = max(1, n // self.spread) if self.spread else CROSS_STEP
        return sorted({0, 1, 2, n - 2, n - 1, *range(0, n, step)} & set(range(n)))


# Upstreams that are not a plain dialect endpoint with an API key: Claude on Vertex AI, its
# access token printed by a command as `gcloud auth print-access-token` would.
UPSTREAMS = {
    "demo-vertex": ['dialect = "anthropic"', 'vertex = { project = "demo-project", region = "us-east5" }',
                    'access_token_command = ["echo", "conformance-vertex-token"]'],
}


DIALECTS = [
    Dialect("anthropic", "anthropic", "demo-anthropic", "claude", models=[
        ("claude-a", "demo-claude-primary", "none", ["claude-prefill"]),
        ("claude-b", "demo-claude-primary", "none", ["claude-no-prefill"]),
        ("claude-c", "demo-claude-primary", "none", ["claude-liar", "claude-prefill"]),
        ("claude-prefill", "demo-claude-prefill", "assistant", []),
        ("claude-no-prefill", "demo-claude-no-prefill", "none", []),
        # Declared to take prefill, but the model behind it rejects it with 400.
        ("claude-liar", "demo-claude-no-prefill", "assistant", []),
        # Fallbacks on the OpenAI Chat upstream.
        ("claude-x", "demo-claude-primary", "none", ["gpt-prefix"]),
        ("claude-y", "demo-claude-primary", "none", ["gpt-no-prefix"]),
        # Fallbacks on Gemini's own API.
        ("claude-g", "demo-claude-primary", "none", ["gemini-prefill"]),
        ("claude-h", "demo-claude-primary", "none", ["gemini-no-prefill"]),
        # A fallback on the Responses upstream (no prefill there: by instruction).
        ("claude-r", "demo-claude-primary", "none", ["resp-fallback"]),
    ], answers=("text", "tool", "thinking"), status="529", tail=2, prefill_rejected="claude-c",
        cross=[Cross("openai-chat", ("text", "tool"), "claude-x", "claude-y", refused=("thinking",)),
               Cross("gemini", ("text", "tool"), "claude-g", "claude-h", spread=3, refused=("thinking",)),
               Cross("openai-responses", ("text", "tool"), None, "claude-r", spread=3, refused=("thinking",))]),
    Dialect("openai", "openai-chat", "demo-openai", "gpt", models=[
        ("gpt-a", "demo-gpt-primary", "none", ["gpt-prefix"]),
        ("gpt-b", "demo-gpt-primary", "none", ["gpt-no-prefix"]),
        # Two fallbacks: the first may be made slow (it stalls) while keep-alives flow.
        ("gpt-c", "demo-gpt-primary", "none", ["gpt-prefix", "gpt-no-prefix"]),
        ("gpt-prefix", "demo-gpt-prefix", "prefix", []),
        ("gpt-no-prefix", "demo-gpt-no-prefix", "none", []),
        # Fallbacks on the Anthropic upstream.
        ("gpt-x", "demo-gpt-primary", "none", ["claude-prefill"]),
        ("gpt-y", "demo-gpt-primary", "none", ["claude-no-prefill"]),
    ], answers=("text", "tool", "parallel-tools"), status="503", tail=3,
        cross=[Cross("anthropic", ("text", "tool", "parallel-tools"), "gpt-x", "gpt-y")]),
    # google-genai's default API version (v1 in 3.x) and v1beta; the finish rides on the last chunk.
    Dialect("google-genai", "gemini", "demo-gemini", "gemini", models=[
        ("gemini-a", "demo-gemini-primary", "none", ["gemini-prefill"]),
        ("gemini-b", "demo-gemini-primary", "none", ["gemini-no-prefill"]),
        ("gemini-prefill", "demo-gemini-prefill", "assistant", []),
        ("gemini-no-prefill", "demo-gemini-no-prefill", "none", []),
        # Fallbacks on the Anthropic upstream.
        ("gemini-x", "demo-gemini-primary", "none", ["claude-prefill"]),
        ("gemini-y", "demo-gemini-primary", "none", ["claude-no-prefill"]),
    ], answers=("text", "tool", "thinking"), status="503", tail=1, every=3,
        cross=[Cross("anthropic", ("text", "tool"), "gemini-x", "gemini-y", spread=3)]),
    Dialect("google-genai-v1beta", "gemini", "demo-gemini", "gemini", models=[],
            answers=("text",), status="503", tail=1, every=4),
    # The anthropic SDK on the Anthropic API, its fallbacks Claude on Vertex AI.
    Dialect("anthropic", "anthropic", "demo-anthropic", "claude-vx", models=[
        ("claude-vx-a", "demo-claude-primary", "none", ["claude-vx-prefill"]),
        ("claude-vx-b", "demo-claude-primary", "none", ["claude-vx-no-prefill"]),
        ("claude-vx-prefill", "demo-claude-prefill", "assistant", [], "demo-vertex"),
        ("claude-vx-no-prefill", "demo-claude-no-prefill", "none", [], "demo-vertex"),
    ], answers=("text", "tool"), status="529", tail=2, every=10),
    # AnthropicVertex: Claude on Vertex AI first, the Anthropic API after it.
    Dialect("anthropic-vertex", "anthropic", "demo-vertex", "vx", models=[
        ("vx-a", "demo-claude-primary", "none", ["claude-prefill"]),
        ("vx-b", "demo-claude-primary", "none", ["claude-no-prefill"]),
    ], answers=("text", "thinking"), status="529", tail=2, every=10),
    # The Responses API has no prefill: both kinds of fallback continue by instruction. Its
    # answer is complete only with response.completed (tail 0). Two SDK calls: the helper
    # (responses.stream) and raw iteration (responses.create(stream=True)), raw on the text
    # answer only. Its streams are long: failure positions are sampled sparsely, as
    # at strides 3 and 5 the two took 14.6 minutes of a 40-minute run on a loaded machine
    # (1,152 cases, all passing); the Rust splice matrix keeps every position. Its fallbacks on
    # the Anthropic upstream cross (responses.stream only: raw iteration reads the same stream).
    Dialect("openai-responses", "openai-responses", "demo-responses", "resp", models=[
        ("resp-a", "demo-gpt-primary", "none", ["resp-fallback"]),
        ("resp-b", "demo-gpt-primary", "none", ["resp-fallback"]),
        ("resp-fallback", "demo-gpt-no-prefix", "none", []),
        # Fallbacks on the Anthropic upstream.
        ("resp-x", "demo-gpt-primary", "none", ["claude-prefill"]),
        ("resp-y", "demo-gpt-primary", "none", ["claude-no-prefill"]),
    ], answers=("text", "tool", "thinking"), status="503", tail=0, every=15, truncation_raises=True,
        cross=[Cross("anthropic", ("text", "tool"), "resp-x", "resp-y", spread=3)]),
    Dialect("openai-responses-raw", "openai-responses", "demo-responses-raw", "rraw", models=[
        ("rraw-a", "demo-gpt-primary", "none", ["rraw-fallback"]),
        ("rraw-b", "demo-gpt-primary", "none", ["rraw-fallback"]),
        ("rraw-fallback", "demo-gpt-no-prefix", "none", []),
    ], answers=("text",), status="503", tail=0, every=24, truncation_raises=True),
]


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
        f"first_token_timeout_ms = {FIRST_TOKEN_MS}",
        "keep_alive_ms = 100",
        'when_no_prefill = "instruction"',
    ]
    upstreams = {d.upstream: [f'dialect = "{d.dialect}"', 'api_key_env = "CONFORMANCE_UPSTREAM_KEY"']
                 for d in DIALECTS if d.upstream not in UPSTREAMS}
    upstreams.update(UPSTREAMS)
    for name, keys in upstreams.items():
        lines += ["[[upstreams]]", f'name = "{name}"', f'base_url = "{upstream}"', *keys]
    for d in DIALECTS:
        for name, upstream_model, prefill, fallbacks, *own in d.models:
            lines += ["[[models]]", f'name = "{name}"', f'upstream = "{own[0] if own else d.upstream}"',
                      f'upstream_model = "{upstream_model}"', f'prefill = "{prefill}"',
                      "fallbacks = [" + ", ".join(f'"{f}"' for f in fallbacks) + "]"]
    return "\n".join(lines) + "\n"


# ---- clients -----------------------------------------------------------------------------

_local = threading.local()


def client(kind: str, base: str) -> "clients.Wrapper":
    """This thread's wrapper `kind` on `base` (SDK clients are not shared across threads)."""
    cache = getattr(_local, "clients", None)
    if cache is None:
        cache = _local.clients = {}
    if (kind, base) not in cache:
        cache[(kind, base)] = clients.WRAPPERS[kind](base)
    return cache[(kind, base)]


# ---- cases -------------------------------------------------------------------------------

class Case:
    def __init__(self, dialect, answer, failure, fault, model, fallback, expect="whole", usage=True, extra=None,
                 route=None, server=None, n=1):
        self.dialect, self.answer, self.failure, self.fault = dialect, answer, failure, fault
        self.model, self.fallback, self.expect, self.usage = model, fallback, expect, usage
        self.extra = extra or {}
        # The dialects the case goes through, as the matrix shows them.
        self.route = route or dialect.dialect
        # An OpenAI-compatible server's shapes (x-demo-server), and the number of choices.
        self.server, self.n = server, n
        if server:
            self.extra["x-demo-server"] = server

    @property
    def sdk(self):
        return self.dialect.wrapper

    def name(self):
        server = f"{self.server}/" if self.server else ""
        # A fallback of another dialect: the route, so that such cases can be picked by name.
        route = f"{self.route}/" if self.route != self.dialect.dialect else ""
        n = f"/n={self.n}" if self.n > 1 else ""
        return f"{self.sdk}/{route}{server}{self.answer}{n}/{self.fault}/{self.fallback}"

    def ask_kwargs(self):
        """What the SDK wrapper is asked besides the answer: the reasoning field to read, n."""
        field = SERVER_REASONING.get(self.server)
        kwargs = {"reasoning_field": field} if field else {}
        if self.n > 1:
            kwargs["n"] = self.n
        return kwargs

    def seams(self):
        """What seams.py must expect of this server's stream."""
        shape = dict(SERVER_SEAMS.get(self.server, {}))
        if self.n > 1:
            shape["choices"] = self.n
        return shape


# What seams.py expects of the Chat servers the server cases use, and their reasoning field
# (conformance/direct.py has the whole table).
SERVER_SEAMS = {"vllm": {"usage_on_finish": True}}
SERVER_REASONING = {"vllm": "reasoning", "deepseek": "reasoning_content"}


def is_bad_request(err) -> bool:
    return isinstance(err, clients.BAD_REQUEST) or getattr(err, "code", None) == 400


def run_case(case: Case, gateway: str, wholes):
    c = client(case.sdk, gateway)
    headers = {"x-demo-fault": case.fault, **case.extra}
    want = wholes[(case.sdk, case.answer, case.server, case.n)]
    if case.expect == "whole-or-error":
        # Several choices: restarted invisibly while the client had none of them, else a clean
        # error naming the original failure (the SDK raises the API's error, nothing else).
        try:
            got = c.ask(case.model, case.answer, headers, case.usage, **case.ask_kwargs())
        except clients.API_ERRORS as err:
            if ORIGINAL[case.failure] not in str(err):
                raise AssertionError(f"the error does not name the original failure: {err}")
            c.check_seams(case.usage, expect_error=True, **case.seams())
            return
        c.check_seams(case.usage, **case.seams())
        if got != want:
            raise AssertionError(f"the answer differs:\n got {got}\nwant {want}")
        return
    if case.expect == "whole":
        got = c.ask(case.model, case.answer, headers, case.usage, **case.ask_kwargs())
        c.check_seams(case.usage, **case.seams())
        field = SERVER_REASONING.get(case.server)
        if field and case.answer == "thinking":
            # Live reasoning cut by the failure is kept once; the fallback adds no second copy.
            joined, whole_reasoning = c.reasoning(field), wholes[("reasoning", case.server)]
            if not joined or not whole_reasoning.startswith(joined):
                raise AssertionError(f"reasoning is not a part of the whole from its start: {joined!r}")
        if case.fallback == "slow-fallback":
            raw = c.raw()
            if b": keep-alive\n" not in raw:
                raise AssertionError("no keep-alive while the fallback took its time")
            if b": keep-alive\n\n" in raw:
                raise AssertionError("a keep-alive with a blank line after an id: line")
        if got[0] != want[0]:
            raise AssertionError(f"text differs:\n got {got[0]!r}\nwant {want[0]!r}")
        if got[1] != want[1]:
            raise AssertionError(f"tool calls differ: got {got[1]} want {want[1]}")
        if got[2] != want[2]:
            raise AssertionError(f"thinking present: got {got[2]} want {want[2]}")
    elif case.expect == "original-error":
        try:
            c.ask(case.model, case.answer, headers, case.usage)
        except clients.API_ERRORS as err:
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
        except clients.API_ERRORS as err:
            if not is_bad_request(err):
                raise
        else:
            raise AssertionError("a non-retryable 400 did not reach the client as a 400")
    elif case.expect == "truncation-raises":
        # Opted out, in a dialect whose SDK needs the terminal event: it raises rather than
        # returning a partial answer as if whole.
        try:
            got = c.ask(case.model, case.answer, headers, case.usage)
        except Exception:  # noqa: BLE001 - the SDK's own exception, whatever its class
            return
        raise AssertionError(f"a truncated stream returned an answer: {got}")
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


def sampled(n: int, every: int = 4):
    """Failure positions: the first and last few, and every `every`-th between (the Rust
    splice matrix keeps every position)."""
    return sorted({0, 1, 2, n - 3, n - 2, n - 1, *range(0, n, every)} & set(range(n)))


def server_cases(gateway: str, wholes):
    """OpenAI-compatible servers as they really stream (issue 9): reasoning in either field,
    a refusal, two choices, and `id:` lines with keep-alives while a fallback takes its time."""
    d = next(d for d in DIALECTS if d.dialect == "openai-chat")
    out = []
    for server, answer, n in (("deepseek", "thinking", 1), ("vllm", "thinking", 1), ("openai", "refusal", 1),
                              ("openai", "text", 2)):
        probe = Case(d, answer, "none", "none", "gpt-a", "none", server=server, n=n)
        c = client(d.wrapper, gateway)
        headers = {"x-demo-fault": "none", **probe.extra}
        wholes[(d.wrapper, answer, server, n)] = c.ask("gpt-a", answer, headers, True, **probe.ask_kwargs())
        c.check_seams(True, **probe.seams())
        field = SERVER_REASONING.get(server)
        if field:
            wholes[("reasoning", server)] = c.reasoning(field)
        count = len(seams.parse(bytes(c.tee.body)))
        for failure in ("reset", "stall", "error", "truncate"):
            for at in sampled(count):
                out.append(Case(d, answer, failure, f"{failure}@{at}", "gpt-a", "prefill",
                                expect="whole-or-error" if n > 1 else "whole", usage=at % 2 == 0,
                                server=server, n=n))
    # `id:` lines, CRLF: the primary breaks, fallback 1 answers its headers and then stalls
    # (keep-alives flow, after the primary's `id:` lines), fallback 2 answers.
    probe = Case(d, "text", "none", "none", "gpt-c", "none", server="framed")
    c = client(d.wrapper, gateway)
    wholes[(d.wrapper, "text", "framed", 1)] = c.ask("gpt-c", "text", {"x-demo-fault": "none", **probe.extra}, True)
    for at in (2, 5, 9):
        out.append(Case(d, "text", "reset", f"reset@{at}, demo-gpt-prefix=stall@0", "gpt-c", "slow-fallback",
                        server="framed"))
    return out


def cases(gateway: str):
    """Every dialect x answer x failure class x position x kind of fallback, plus the cases
    around them: every attempt failing, a client error, the opt-out, a lying fallback."""
    wholes, out = {}, []
    for d in DIALECTS:
        for answer in d.answers:
            sdk, primary = d.wrapper, f"{d.prefix}-a"
            c = client(sdk, gateway)
            wholes[(sdk, answer, None, 1)] = c.ask(primary, answer, {"x-demo-fault": "none"}, True)
            c.check_seams(True)
            n = event_count(gateway, sdk, answer, primary)
            for fallback, model in [("prefill", primary), ("no-prefill", f"{d.prefix}-b")]:
                for failure in ("reset", "stall", "error", "truncate"):
                    for at in d.positions(n):
                        usage = at % 2 == 0  # OpenAI: with and without a usage chunk
                        out.append(Case(d, answer, failure, f"{failure}@{at}", model, fallback, usage=usage))
                out.append(Case(d, answer, "status", d.status, model, fallback))
            # Positions where the answer is still incomplete: before the events that only
            # close it. Later, the layer closes the stream itself and no attempt is needed.
            last = n - 1 - d.tail
            for failure in ("reset", "stall", "error", "truncate"):
                for at in (1, n // 2, last):
                    out.append(Case(d, answer, failure, f"{failure}@{at}, fallbacks=503", primary, "all-fail",
                                    expect="original-error"))
            out.append(Case(d, answer, "client-error", "400", primary, "none", expect="bad-request"))
            out.append(Case(d, answer, "opt-out", f"truncate@{n // 2}", primary, "off",
                            expect="truncation-raises" if d.truncation_raises else "partial",
                            extra={"x-midstream-fallback": "off"}))
            if d.prefill_rejected:
                for at in (2, n // 2):
                    out.append(Case(d, answer, "reset", f"reset@{at}", d.prefill_rejected, "prefill-rejected"))
            for cross in d.cross:
                if answer in cross.answers:
                    out += cross_cases(d, cross, answer, n)
                if answer in cross.refused:
                    out += refused_cases(d, cross, answer, n)
    out += server_cases(gateway, wholes)
    return wholes, out


def cross_cases(d, cross, answer, n):
    """The primary in the client's dialect fails; its fallback speaks `cross.to`."""
    route = f"{d.dialect}>{cross.to}"
    out = []
    for fallback, model in cross.fallbacks():
        for failure in ("reset", "stall", "error", "truncate"):
            for at in cross.positions(n):
                out.append(Case(d, answer, failure, f"{failure}@{at}", model, fallback, usage=at % 2 == 0,
                                route=route))
        out.append(Case(d, answer, "status", d.status, model, fallback, route=route))
    return out


def refused_cases(d, cross, answer, n):
    """The primary fails and its only fallback speaks `cross.to`, which cannot take this
    request: it is never sent there, and the client gets the original failure (before any
    content as after it)."""
    route = f"{d.dialect}>{cross.to}"
    return [Case(d, answer, failure, f"{failure}@{at}", model, "refused", expect="original-error", route=route)
            for _, model in cross.fallbacks()
            for failure in ("reset", "stall", "error", "truncate")
            for at in (0, n // 2)]


def main():
    if "--direct" in sys.argv[1:]:
        import direct
        return direct.main(build_gateway(), start)
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
        # Comma-separated substrings of case names, for quick local runs.
        only = [o for o in os.environ.get("CONFORMANCE_ONLY", "").split(",") if o]
        if only:
            all_cases = [c for c in all_cases if any(o in c.name() for o in only)]
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
                client_name = client(case.sdk, gateway).version()
                # A fallback in the client's dialect: which of its entries (Claude on Vertex AI...).
                route = case.route if case.route != case.dialect.dialect else f"{case.route}:{case.dialect.prefix}"
                results[(client_name, route, case.failure)]["failed" if error else "passed"] += 1
                if error:
                    failures.append(f"{case.name()} ({case.model}): {error}")

        print(f"\nconformance matrix ({time.time() - started:.0f} s)\n")
        print(f"{'client':<20} {'dialect':<28} {'failure class':<16} {'passed':>7} {'failed':>7}")
        for (client_name, dialect, failure), counts in sorted(results.items()):
            print(f"{client_name:<20} {dialect:<28} {failure:<16} {counts['passed']:>7} {counts['failed']:>7}")
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
