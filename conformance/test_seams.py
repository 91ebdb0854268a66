"""seams.py on recorded streams: each recording passes, and each rule, broken in a copy of
one, is caught. `python3 conformance/test_seams.py` (no dependencies; run by ./scripts/test).
"""

import json
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import seams  # noqa: E402

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
RESPONSES = ["openai_responses_function_call.sse", "openai_responses_legacy_no_sequence.sse",
             "openai_responses_reasoning_encrypted_text.sse", "openai_responses_reasoning_summary.sse",
             "openai_responses_text_queued.sse"]
GEMINI = ["gemini_text.sse", "gemini_thoughts.sse", "gemini_function_call.sse",
          "gemini_after_function_response.sse"]


def fixture(name):
    return (FIXTURES / name).read_bytes()


def events(raw, sep):
    """The recording's events as text, without their separators."""
    return [e for e in raw.decode().split(sep) if e]


def join(parts, sep):
    return (sep.join(parts) + sep).encode()


def data_of(event):
    return json.loads(event.split("data: ", 1)[1])


def with_data(event, data):
    head = event.split("data: ", 1)[0]
    return head + "data: " + json.dumps(data, separators=(",", ":"))


class ResponsesRules(unittest.TestCase):
    def setUp(self):
        self.raw = fixture("openai_responses_function_call.sse")
        self.events = events(self.raw, "\n\n")

    def broken(self, parts, rule):
        with self.assertRaises(seams.SeamError) as caught:
            seams.responses(join(parts, "\n\n"))
        self.assertIn(rule, str(caught.exception))

    def test_every_recorded_stream_passes(self):
        for name in RESPONSES:
            with self.subTest(name):
                self.assertIsNone(seams.responses(fixture(name)))

    def test_a_stream_must_open_with_response_created(self):
        self.broken(self.events[1:], "not response.created")

    def test_a_second_response_created_is_caught(self):
        second = with_data(self.events[0], {**data_of(self.events[0]), "sequence_number": 1})
        rest = [with_data(e, {**data_of(e), "sequence_number": data_of(e)["sequence_number"] + 1})
                for e in self.events[1:]]
        self.broken([self.events[0], second] + rest, "a second response.created")

    def test_a_gap_in_sequence_numbers_is_caught(self):
        bumped = [with_data(e, {**data_of(e), "sequence_number": data_of(e)["sequence_number"] + 1})
                  if i >= 5 else e for i, e in enumerate(self.events)]
        self.broken(bumped, "sequence_number 6 after 4")

    def test_output_indices_must_be_dense(self):
        added = [i for i, e in enumerate(self.events) if data_of(e)["type"] == "response.output_item.added"]
        parts = list(self.events)
        parts[added[1]] = with_data(parts[added[1]], {**data_of(parts[added[1]]), "output_index": 2})
        self.broken(parts, "output_index 2 is not the next (1)")

    def test_nothing_may_follow_the_terminal_event(self):
        extra = with_data(self.events[-1], {**data_of(self.events[-1]), "sequence_number": len(self.events)})
        self.broken(self.events + [extra], "after the terminal response.completed")

    def test_the_completed_response_must_hold_what_the_deltas_said(self):
        parts = list(self.events)
        i = next(i for i, e in enumerate(parts) if data_of(e)["type"] == "response.function_call_arguments.delta")
        parts[i] = with_data(parts[i], {**data_of(parts[i]), "delta": "X"})
        self.broken(parts, "not the joined deltas")

    def test_an_unknown_event_type_is_caught(self):
        parts = list(self.events)
        parts[1] = parts[1].replace("response.in_progress", "response.in_limbo")
        self.broken(parts, "unknown type")

    def test_a_stream_without_its_terminal_event_is_caught(self):
        self.broken(self.events[:-1], "not response.completed")

    def test_a_give_up_error_event_is_returned_as_the_error(self):
        error = 'event: error\ndata: {"type":"error","sequence_number":%d,"error":{"type":"server_error",' \
                '"code":"server_error","message":"stream broken","param":null}}' % (len(self.events) - 1)
        self.assertEqual(seams.responses(join(self.events[:-1] + [error], "\n\n"), expect_error=True),
                         "stream broken")


class GeminiRules(unittest.TestCase):
    def setUp(self):
        self.events = events(fixture("gemini_text.sse"), "\r\n\r\n")

    def broken(self, raw, rule, expect_error=False):
        with self.assertRaises(seams.SeamError) as caught:
            seams.gemini(raw, expect_error=expect_error)
        self.assertIn(rule, str(caught.exception))

    def test_every_recorded_stream_passes(self):
        for name in GEMINI:
            with self.subTest(name):
                self.assertIsNone(seams.gemini(fixture(name)))

    def test_a_comment_line_is_caught(self):
        self.broken(join([": keep-alive"] + self.events, "\r\n\r\n"), "not `data: `")

    def test_the_response_id_must_stay_the_same(self):
        parts = list(self.events)
        parts[1] = with_data(parts[1], {**data_of(parts[1]), "responseId": "another"})
        self.broken(join(parts, "\r\n\r\n"), "responseId")

    def test_one_finish_reason_and_nothing_after_it(self):
        self.broken(join(self.events + [self.events[-1]], "\r\n\r\n"), "after the finishReason")

    def test_an_empty_chunk_is_caught(self):
        self.broken(join([self.events[0], "data: {}"] + self.events[1:], "\r\n\r\n"), "no parts")

    def test_the_last_event_needs_its_blank_line(self):
        self.broken(join(self.events, "\r\n\r\n")[:-4], "no blank line")

    def test_a_stream_without_a_finish_reason_is_caught(self):
        self.broken(join(self.events[:-1], "\r\n\r\n"), "0 finishReasons")

    def test_a_give_up_error_chunk_needs_error_first_and_a_numeric_code(self):
        good = 'data: {"error": {"code": 503,"message": "stream broken","status": "UNAVAILABLE"}}'
        raw = join(self.events[:-1] + [good], "\r\n\r\n")
        self.assertEqual(seams.gemini(raw, expect_error=True), "stream broken")
        late = 'data: {"candidates": [],"error": {"code": 503,"message": "x","status": "UNAVAILABLE"}}'
        self.broken(join(self.events[:-1] + [late], "\r\n\r\n"), "not the first key", expect_error=True)


class ChatServerOptions(unittest.TestCase):
    def stream(self, chunks, done=True, sep="\n\n"):
        parts = ["data: " + json.dumps(c) for c in chunks] + (["data: [DONE]"] if done else [])
        return join(parts, sep)

    def chunk(self, delta, finish=None, usage=None, index=0):
        c = {"id": "c", "created": 1, "model": "m", "choices": [{"index": index, "delta": delta,
                                                              "finish_reason": finish}]}
        if usage:
            c["usage"] = usage
        return c

    def test_usage_on_the_finish_chunk_is_accepted_only_where_declared(self):
        raw = self.stream([self.chunk({"role": "assistant", "content": "hi"}),
                           self.chunk({}, "stop", {"completion_tokens": 1})])
        self.assertIsNone(seams.openai(raw, True, usage_on_finish=True))
        with self.assertRaises(seams.SeamError):
            seams.openai(raw, True)

    def test_a_server_without_done_must_send_none(self):
        raw = self.stream([self.chunk({"role": "assistant", "content": "hi"}), self.chunk({}, "stop")], done=False)
        self.assertIsNone(seams.openai(raw, False, done=False))
        with self.assertRaises(seams.SeamError):
            seams.openai(raw, False)

    def test_each_of_n_choices_needs_its_one_finish(self):
        raw = self.stream([self.chunk({"role": "assistant"}), self.chunk({"role": "assistant"}, index=1),
                           self.chunk({}, "stop")])
        with self.assertRaises(seams.SeamError):
            seams.openai(raw, False, choices=2)

    def test_tool_calls_without_index_take_the_next_position(self):
        call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        raw = self.stream([self.chunk({"role": "assistant"}), self.chunk({"tool_calls": [call, dict(call, id="c2")]}),
                           self.chunk({}, "tool_calls")])
        self.assertIsNone(seams.openai(raw, False))


if __name__ == "__main__":
    unittest.main()
