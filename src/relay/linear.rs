//! The relay's cost grows linearly with what it holds: every lookup of an open block or a held
//! tool call is O(1), whatever the number of calls (issue 15, item 3). Counted in steps (each
//! lookup and each turn of a loop over open or held blocks), never in time.

use bytes::Bytes;
use serde_json::json;

use super::{AttemptWire, Relay, Step, STEPS};
use crate::dialect::{Dialect, Limits};
use crate::outbox::Outbox;
use crate::sse::Framer;
use crate::untrusted::Redactor;
use crate::Reasoning;

/// The steps one Chat stream of `calls` tool calls at distinct indices costs (each call in a
/// chunk of its own), `indexed` or, as Gemini's endpoint sends them, without an index.
fn steps_for(calls: u32, indexed: bool) -> u64 {
    let limits = Limits {
        transcript: 1 << 20,
        held: usize::MAX,
        reasoning: Reasoning::Live,
    };
    let first = AttemptWire {
        wire: Dialect::OPENAI_CHAT,
        client_wants_usage: false,
    };
    let mut relay = Relay::new(Dialect::OPENAI_CHAT, first, limits, Bytes::new());
    let mut framer = Framer::new(1 << 20);
    let mut out = Outbox::new(Redactor::new());
    let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
        let c = json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":delta,"finish_reason":finish}]});
        Bytes::from(format!("data: {c}\n\n"))
    };
    let mut feed = |bytes: Bytes| {
        framer.push(bytes);
        while let Some(ev) = framer.next_event() {
            let ev = ev.expect("no oversized event");
            match relay.on_event(&ev, &mut out) {
                Step::Continue(_) | Step::Done => {}
                Step::Fail(failure) => panic!("{failure:?}"),
            }
        }
        while out.pop().is_some() {}
    };
    STEPS.with(|s| s.set(0));
    feed(chunk(
        json!({"role":"assistant","content":null}),
        json!(null),
    ));
    for n in 0..calls {
        let index = if indexed {
            format!("\"index\":{n},")
        } else {
            String::new()
        };
        feed(Bytes::from(format!(
            "data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[{{{index}\"id\":\"call_{n}\",\"type\":\"function\",\"function\":{{\"name\":\"f\",\"arguments\":\"{{}}\"}}}}]}},\"finish_reason\":null}}]}}\n\n"
        )));
    }
    feed(chunk(json!({}), json!("tool_calls")));
    feed(Bytes::from_static(b"data: [DONE]\n\n"));
    STEPS.with(|s| s.get())
}

/// `small` and four times as many calls cost four times the steps, a few per call.
fn four_times(small: u32, indexed: bool) {
    let (few, many) = (steps_for(small, indexed), steps_for(small * 4, indexed));
    let ratio = many as f64 / few as f64;
    assert!(
        (3.9..=4.1).contains(&ratio),
        "indexed={indexed}: {many} steps for {} calls, {few} for {small} ({ratio:.2}x)",
        small * 4
    );
    assert!(
        u64::from(small) * 4 * 8 > many,
        "indexed={indexed}: {many} steps"
    );
}

#[test]
fn sixty_thousand_tool_call_indices_cost_four_times_fifteen_thousand() {
    four_times(15_000, true);
}

#[test]
fn tool_calls_without_an_index_cost_four_times_as_much_for_four_times_as_many() {
    // Fewer: the debug build reads some 2,000 chunks a second on a busy CI machine.
    four_times(2_500, false);
}
