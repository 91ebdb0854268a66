"""One wrapper per official SDK call the suites stream through, behind one face.

Each wrapper is built with a base URL (the gateway, or the demo upstream itself) and streams
one answer with the SDK's own helper, returning what the SDK's final message says as a
`Final` (text, tool calls, whether reasoning was there). The wrapper also keeps the raw bytes
the SDK read (a tee on its HTTP transport) and knows which seam checker of `seams.py` reads
its format.

Adding a format: a class with `FORMAT`, `ask(...)` and `check_seams(...)`, one line in
`WRAPPERS`; run.py's gateway cases and direct.py's cases then name it.
"""

import json
from typing import NamedTuple

import anthropic
import httpx2
import openai
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

import seams

QUESTION = "What happens when a stream breaks half-way?"
TOOL = {"name": "get_weather", "description": "Current weather in a city.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                         "required": ["city"]}}
OPENAI_TOOL = {"type": "function", "function": {"name": TOOL["name"], "description": TOOL["description"],
                                                 "parameters": TOOL["input_schema"]}}
RESPONSES_TOOL = {"type": "function", "name": TOOL["name"], "description": TOOL["description"],
                  "parameters": TOOL["input_schema"]}
GEMINI_TOOL = genai_types.Tool(function_declarations=[genai_types.FunctionDeclaration(
    name=TOOL["name"], description=TOOL["description"], parameters_json_schema=TOOL["input_schema"])])

# What a client raises for an error the server sent: the SDKs' own API error classes.
API_ERRORS = (anthropic.APIError, openai.APIError, genai_errors.APIError)
BAD_REQUEST = (anthropic.BadRequestError, openai.BadRequestError)


class Final(NamedTuple):
    """What the SDK's final message holds: the text, the tool calls (name, arguments as parsed
    JSON, or the raw string when it is not JSON) and whether reasoning was in it."""
    text: str
    tools: list
    thinking: bool


def arguments(raw):
    try:
        return json.loads(raw)
    except ValueError:
        return raw  # incomplete: never equal to the whole answer


class Tee(httpx2.BaseTransport):
    """The SDK's transport, keeping a copy of the last response body as the SDK read it. With
    `keep_alive`, those bytes reach the SDK twice after every event end a read holds (as the
    layer writes keep-alives between events while it waits for a fallback), each on its own
    read; `inserted` counts them."""

    def __init__(self, keep_alive: bytes = b""):
        self.inner = httpx2.HTTPTransport()
        self.body = bytearray()
        self.request = None
        self.keep_alive, self.inserted = keep_alive, 0

    def handle_request(self, request):
        self.request = (request.method, str(request.url), dict(request.headers), request.read())
        response = self.inner.handle_request(request)
        self.body = bytearray()
        self.inserted = 0
        body, inner, tee = self.body, response.stream, self

        def pieces(chunk):
            if not tee.keep_alive:
                yield chunk
                return
            events = chunk.split(b"\r\n\r\n")
            for n, event in enumerate(events):
                last = n + 1 == len(events)
                yield event if last else event + b"\r\n\r\n"
                if not last:
                    for _ in range(2):
                        tee.inserted += 1
                        yield tee.keep_alive

        class Stream(httpx2.SyncByteStream):
            def __iter__(self):
                for chunk in inner:
                    for piece in pieces(chunk):
                        if piece:
                            body.extend(piece)
                            yield piece

            def close(self):
                inner.close()

        return httpx2.Response(response.status_code, headers=response.headers, stream=Stream(),
                               extensions=response.extensions)


class Wrapper:
    """One SDK client on `base` and the bytes it last read. `FORMAT` names the wire format."""
    FORMAT = ""
    SDK = None

    def __init__(self, base: str, keep_alive: bytes = b""):
        self.tee = Tee(keep_alive)
        self.http = httpx2.Client(transport=self.tee, timeout=60)
        self.base = base

    @classmethod
    def version(cls):
        return f"{cls.SDK.__name__.split('.')[0]}=={cls.SDK.__version__}"

    def raw(self, expect_error=False) -> bytes:
        return self.replay_raw() if expect_error else bytes(self.tee.body)

    def replay_raw(self) -> bytes:
        """The whole response to the last request, read to its end (an SDK stops reading at an
        error); the demo upstream is deterministic, so it is the stream the SDK was reading."""
        method, url, headers, content = self.tee.request
        with httpx2.Client(timeout=60) as http:
            return http.request(method, url, headers=headers, content=content).content


class AnthropicMessages(Wrapper):
    """`client.messages.stream(...).get_final_message()` on `POST /v1/messages`."""
    FORMAT = "anthropic"
    SDK = anthropic

    def __init__(self, base: str):
        super().__init__(base)
        self.sdk = self.client()

    def client(self):
        return anthropic.Anthropic(base_url=self.base, api_key="sk-client-own-key", http_client=self.http,
                                   max_retries=0)

    def ask(self, model, answer, headers, usage=True, messages=None, **extra) -> Final:
        kwargs = dict(model=model, max_tokens=4096, messages=messages or [{"role": "user", "content": QUESTION}],
                      extra_headers={"x-demo-answer": answer, **headers}, **extra)
        if answer == "thinking":
            kwargs["thinking"] = {"type": "enabled", "budget_tokens": 1024}
        if answer in ("tool", "parallel-tools"):
            kwargs["tools"] = [TOOL]
        with self.sdk.messages.stream(**kwargs) as stream:
            message = stream.get_final_message()
        text = "".join(b.text for b in message.content if b.type == "text")
        tools = [(b.name, b.input) for b in message.content if b.type == "tool_use"]
        thinking = any(b.type in ("thinking", "redacted_thinking") for b in message.content)
        return Final(text, tools, thinking)

    def check_seams(self, usage=True, expect_error=False, **_):
        return seams.anthropic(self.raw(expect_error), expect_error=expect_error)


class AnthropicVertexMessages(AnthropicMessages):
    """The anthropic SDK's `AnthropicVertex` client: the same `messages.stream(...)`, sent to
    `.../publishers/anthropic/models/{model}:streamRawPredict`. The access token is given, so
    the SDK never calls a Google auth library (nothing leaves loopback)."""
    FORMAT = "vertex"

    def client(self):
        return anthropic.AnthropicVertex(region="global", project_id="demo-project", access_token="demo-token",
                                         base_url=self.base + "/v1", http_client=self.http, max_retries=0)


class OpenAIChat(Wrapper):
    """`client.chat.completions.stream(...).get_final_completion()`; `choice` picks which
    choice's message is returned (n=2)."""
    FORMAT = "openai-chat"
    SDK = openai

    def __init__(self, base: str):
        super().__init__(base)
        self.sdk = openai.OpenAI(base_url=base + "/v1", api_key="sk-client-own-key", http_client=self.http,
                                 max_retries=0)

    def ask(self, model, answer, headers, usage=True, messages=None, choice=0, reasoning_field=None,
            raw=False, **extra) -> Final:
        kwargs = dict(model=model, messages=messages or [{"role": "user", "content": QUESTION}],
                      extra_headers={"x-demo-answer": answer, **headers}, max_completion_tokens=4096, **extra)
        if usage:
            kwargs["stream_options"] = {"include_usage": True}
        if answer in ("tool", "parallel-tools"):
            kwargs["tools"] = [OPENAI_TOOL]
        if raw:
            return self.ask_raw(kwargs, choice)
        with self.sdk.chat.completions.stream(**kwargs) as stream:
            completion = stream.get_final_completion()
        message = completion.choices[choice].message
        tools = [(c.function.name, arguments(c.function.arguments)) for c in message.tool_calls or []]
        text = message.content or message.refusal or ""
        thinking = bool(reasoning_field and (message.model_extra or {}).get(reasoning_field))
        return Final(text, tools, thinking)

    def ask_raw(self, kwargs, choice) -> Final:
        """`create(stream=True)` read chunk by chunk and joined here: for shapes the stream
        helper cannot take (tool calls without `index`: they take the next position)."""
        text, calls = "", []
        for chunk in self.sdk.chat.completions.create(stream=True, **kwargs):
            for c in chunk.choices:
                if c.index != choice:
                    continue
                text += c.delta.content or c.delta.refusal or ""
                for call in c.delta.tool_calls or []:
                    at = call.index if call.index is not None else len(calls)
                    if at == len(calls):
                        calls.append([call.function.name, ""])
                    calls[at][1] += call.function.arguments or ""
        return Final(text, [(name, arguments(args)) for name, args in calls], False)

    def reasoning(self, field):
        """The reasoning text the last stream carried in `field`, joined as the SDK joins it."""
        out = ""
        for _, data in seams.parse(bytes(self.tee.body)):
            if data == "[DONE]":
                continue
            for choice in json.loads(data).get("choices") or []:
                out += (choice.get("delta") or {}).get(field) or ""
        return out

    def check_seams(self, usage=True, expect_error=False, **server):
        return seams.openai(self.raw(expect_error), usage, expect_error=expect_error, **server)


class OpenAIResponses(Wrapper):
    """`client.responses.stream(...).get_final_response()` on `POST /v1/responses`; with
    `raw=True`, `client.responses.create(stream=True)` iterated to its end, the final response
    being the one `response.completed` carries."""
    FORMAT = "openai-responses"
    SDK = openai

    def __init__(self, base: str, raw: bool = False):
        super().__init__(base)
        self.raw_iteration = raw
        self.sdk = openai.OpenAI(base_url=base + "/v1", api_key="sk-client-own-key", http_client=self.http,
                                 max_retries=0)

    def ask(self, model, answer, headers, usage=True, input=None, **extra) -> Final:
        kwargs = dict(model=model, input=input or QUESTION, extra_headers={"x-demo-answer": answer, **headers},
                      max_output_tokens=4096, **extra)
        if answer in ("tool", "parallel-tools"):
            kwargs["tools"] = [RESPONSES_TOOL]
        if answer == "thinking":
            kwargs["reasoning"] = {"effort": "low", "summary": "auto"}
            kwargs["include"] = ["reasoning.encrypted_content"]
        if self.raw_iteration:
            response = None
            for event in self.sdk.responses.create(stream=True, **kwargs):
                if event.type == "response.completed":
                    response = event.response
            if response is None:
                raise AssertionError("the stream had no response.completed")
        else:
            with self.sdk.responses.stream(**kwargs) as stream:
                response = stream.get_final_response()
        text, tools, thinking = "", [], False
        for item in response.output:
            if item.type == "message":
                for part in item.content:
                    text += part.text if part.type == "output_text" else part.refusal
            elif item.type == "function_call":
                tools.append((item.name, arguments(item.arguments)))
            elif item.type == "reasoning":
                thinking = True
        return Final(text, tools, thinking)

    def check_seams(self, usage=True, expect_error=False, **_):
        return seams.responses(self.raw(expect_error), expect_error=expect_error)


class GeminiStream(Wrapper):
    """`google.genai.Client(...).models.generate_content_stream(...)`, the chunks joined as a
    client joins them; `api_version` None is the SDK's default (`v1` in 3.x)."""
    FORMAT = "gemini"
    SDK = genai

    def __init__(self, base: str, api_version=None, keep_alive: bytes = b""):
        super().__init__(base, keep_alive)
        options = genai_types.HttpOptions(base_url=base, httpx_client=self.http)
        if api_version:
            options.api_version = api_version
        self.sdk = genai.Client(api_key="client-own-key", http_options=options)

    @classmethod
    def version(cls):
        return f"google-genai=={genai.__version__}"

    def ask(self, model, answer, headers, usage=True, contents=None, **extra) -> Final:
        config = genai_types.GenerateContentConfig(
            http_options=genai_types.HttpOptions(headers={"x-demo-answer": answer, **headers}))
        if answer in ("tool", "parallel-tools"):
            config.tools = [GEMINI_TOOL]
            config.automatic_function_calling = genai_types.AutomaticFunctionCallingConfig(disable=True)
        if answer == "thinking":
            config.thinking_config = genai_types.ThinkingConfig(include_thoughts=True)
        text, tools, thinking = "", [], False
        for chunk in self.sdk.models.generate_content_stream(model=model, contents=contents or QUESTION,
                                                             config=config):
            for candidate in chunk.candidates or []:
                for part in (candidate.content.parts if candidate.content else None) or []:
                    if part.thought:
                        thinking = True
                    elif part.text:
                        text += part.text
                    if part.function_call:
                        tools.append((part.function_call.name, dict(part.function_call.args or {})))
        return Final(text, tools, thinking)

    def check_seams(self, usage=True, expect_error=False, **_):
        if self.tee.keep_alive and not self.tee.inserted:
            raise AssertionError("no keep-alive reached the SDK: the case proves nothing")
        return seams.gemini(self.raw(expect_error), expect_error=expect_error)


# The wrappers by name, as run.py's and direct.py's case tables name them.
WRAPPERS = {
    "anthropic": AnthropicMessages,
    "openai": OpenAIChat,
    "openai-responses": OpenAIResponses,
    "openai-responses-raw": lambda base: OpenAIResponses(base, raw=True),
    "google-genai": GeminiStream,
    "google-genai-v1beta": lambda base: GeminiStream(base, api_version="v1beta"),
    # The keep-alive the layer writes to Gemini clients (ChunkEncoder::keep_alive): a bare
    # blank line between events, the only one google-genai survives.
    "google-genai-keep-alives": lambda base: GeminiStream(base, keep_alive=b"\r\n"),
    "anthropic-vertex": AnthropicVertexMessages,
}
