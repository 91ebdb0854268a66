//! Planners of one's own: the decisions `Failure` makes available, failures made by hand with
//! `FailureBuilder`, and what `FallbackChain` answers about the models it knows.

mod support;

use bytes::Bytes;
use http::Request;
use serde_json::{json, Value};
use support::*;
use tower_midstream::{
    Dialect as Wire, Failure, FailureBuilder, FailureClass, FallbackChain, MidStreamFallbackLayer,
    Plan, Prefill, RetryPlanner, Strategy, WhenNoPrefill,
};

fn anthropic(body: Value) -> FailureBuilder {
    let request = Request::post("/v1/messages")
        .body(Bytes::from(body.to_string()))
        .unwrap();
    Failure::builder(Wire::ANTHROPIC_MESSAGES, request)
}

fn request() -> FailureBuilder {
    anthropic(json!({"model":"big","max_tokens":100,"messages":[{"role":"user","content":"Hi"}]}))
}

fn body_of(plan: &mut Plan) -> Value {
    serde_json::from_slice(plan.request_mut().expect("a retry").body()).unwrap()
}

#[test]
fn the_strategy_follows_what_reached_the_client_and_what_the_target_accepts() {
    let when = WhenNoPrefill::Instruction;
    let nothing = request();
    let text = request().sent_text("Once upon a");
    let tools = request().sent_text("Let me look.").sent_tool_calls(1);
    let overflowed = request().overflowed();
    let thinking = anthropic(json!({"model":"big","max_tokens":4000,"thinking":{"type":"enabled","budget_tokens":2000},"messages":[{"role":"user","content":"Hi"}]}))
        .sent_text("Once");
    let cases: [(
        &FailureBuilder,
        Prefill,
        WhenNoPrefill,
        Result<Strategy, &str>,
    ); 9] = [
        (&nothing, Prefill::None, when, Ok(Strategy::Restart)),
        (
            &text,
            Prefill::Assistant,
            when,
            Ok(Strategy::Prefill(Prefill::Assistant)),
        ),
        (&text, Prefill::None, when, Ok(Strategy::instruction())),
        (
            &text,
            Prefill::None,
            WhenNoPrefill::Restart,
            Ok(Strategy::Restart),
        ),
        (
            &text,
            Prefill::None,
            WhenNoPrefill::Error,
            Err("does not accept prefill"),
        ),
        (
            &tools,
            Prefill::Assistant,
            when,
            Err("tool calls already reached the client"),
        ),
        // Text too long to continue: a clean error, unless the operator chose restarts.
        (
            &overflowed,
            Prefill::Assistant,
            when,
            Err("longer than the transcript limit"),
        ),
        (
            &overflowed,
            Prefill::Assistant,
            WhenNoPrefill::Restart,
            Ok(Strategy::Restart),
        ),
        // Extended thinking forbids prefill whatever the target accepts.
        (
            &thinking,
            Prefill::Assistant,
            when,
            Ok(Strategy::instruction()),
        ),
    ];
    for (i, (scenario, prefill, when, want)) in cases.into_iter().enumerate() {
        let got = scenario.build().strategy_for(prefill, when);
        match (got, want) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "case {i}"),
            (Err(why), Err(want)) => assert!(why.contains(want), "case {i}: {why}"),
            (got, want) => panic!("case {i}: got {got:?}, want {want:?}"),
        }
    }
    assert!(!nothing.build().answer_started());
    assert!(overflowed.build().answer_started());
    assert_eq!(
        overflowed.build().cannot_continue(),
        Some("the answer so far is longer than the transcript limit")
    );
    assert_eq!(text.build().cannot_continue(), None);
}

#[test]
fn a_hand_made_failure_gets_the_plan_the_layer_would_get() {
    let mut chain = FallbackChain::new()
        .model("small", Prefill::Assistant)
        .fallbacks("big", ["small", "other"]);
    let scenario = request()
        .class(FailureClass::Stall)
        .sent_text("Once upon a");
    let failure = scenario.build();
    assert_eq!((failure.attempt(), failure.target()), (1, Some("big")));
    let mut plan = chain.plan(&failure);
    assert_eq!(
        plan.strategy(),
        Some(&Strategy::Prefill(Prefill::Assistant))
    );
    let body = body_of(&mut plan);
    assert_eq!(body["model"], "small");
    assert_eq!(
        body["messages"][1],
        json!({"role":"assistant","content":"Once upon a"})
    );
    // The chain moves on: the next failure goes to `other`, which takes no prefill.
    let scenario = request()
        .after("big", Strategy::Restart, FailureClass::Stall)
        .attempt_to("small", Strategy::Prefill(Prefill::Assistant))
        .class(FailureClass::Transport)
        .sent_text("Once upon a");
    let failure = scenario.build();
    assert_eq!(failure.attempt(), 2);
    assert_eq!(failure.history().len(), 2);
    assert_eq!(failure.history()[0].target(), Some("big"));
    let mut plan = chain.plan(&failure);
    assert_eq!(plan.strategy(), Some(&Strategy::instruction()));
    assert_eq!(body_of(&mut plan)["model"], "other");
}

#[test]
fn a_refused_prefill_is_retried_once_on_the_same_target_with_the_instruction() {
    let refused = request()
        .after("big", Strategy::Restart, FailureClass::Transport)
        .attempt_to("small", Strategy::Prefill(Prefill::Assistant))
        .class(FailureClass::PrefillRejected)
        .sent_text("Once upon a");
    let failure = refused.build();
    assert!(failure.prefill_refused());
    let mut plan = failure
        .retry_refused_prefill(Strategy::instruction())
        .expect("a retry");
    assert_eq!(plan.strategy(), Some(&Strategy::instruction()));
    assert_eq!(body_of(&mut plan)["model"], "small");

    // Once tried that way, not again.
    let again = request()
        .after("big", Strategy::Restart, FailureClass::Transport)
        .after("small", Strategy::instruction(), FailureClass::Stall)
        .attempt_to("small", Strategy::Prefill(Prefill::Assistant))
        .class(FailureClass::PrefillRejected)
        .sent_text("Once upon a");
    assert!(again
        .build()
        .retry_refused_prefill(Strategy::instruction())
        .is_none());
    // Not a refusal: nothing to do.
    assert!(request()
        .sent_text("x")
        .build()
        .retry_refused_prefill(Strategy::instruction())
        .is_none());
}

/// A planner that keeps the chain's choice of fallback but never sends the instruction: it
/// restarts where the chain would instruct, asking the chain what each model accepts.
#[derive(Clone)]
struct NoInstruction(FallbackChain);

impl RetryPlanner for NoInstruction {
    fn plan(&mut self, failure: &Failure<'_>) -> Plan {
        let mut plan = self.0.plan(failure);
        if plan.strategy() != Some(&Strategy::instruction()) {
            return plan;
        }
        let target = body_of(&mut plan)["model"].as_str().unwrap().to_owned();
        match failure.strategy_for(self.0.prefill_of(&target), WhenNoPrefill::Restart) {
            Ok(strategy) => failure.retry(&target, strategy),
            Err(why) => Plan::give_up(why),
        }
    }
}

#[test]
fn a_wrapping_planner_asks_the_chain_what_a_model_accepts() {
    let chain = FallbackChain::new()
        .model("small", Prefill::Assistant)
        .model("strict", Prefill::None)
        .fallbacks("big", ["strict"])
        .default_fallbacks(["small"]);
    assert_eq!(chain.prefill_of("small"), Prefill::Assistant);
    assert_eq!(chain.prefill_of("never-declared"), Prefill::None);
    assert_eq!(&*chain.fallbacks_of("big")[0], "strict");
    assert_eq!(&*chain.fallbacks_of("anything-else")[0], "small");

    let mut planner = NoInstruction(chain);
    let scenario = request().sent_text("Once upon a");
    let mut plan = planner.plan(&scenario.build());
    assert_eq!(plan.strategy(), Some(&Strategy::Restart));
    let body = body_of(&mut plan);
    assert_eq!(body["model"], "strict");
    assert_eq!(
        body["messages"].as_array().unwrap().len(),
        1,
        "the original"
    );
}

#[tokio::test(start_paused = true)]
async fn a_model_listed_as_its_own_fallback_is_tried_again() {
    let upstream = broken_after(support::Dialect::Anthropic, &HELLO, 2);
    let chain = FallbackChain::new()
        .model("primary", Prefill::Assistant)
        .fallbacks("primary", ["primary"]);
    let out = send(
        MidStreamFallbackLayer::new(chain),
        &upstream,
        support::Dialect::Anthropic,
        &anthropic_request(),
    )
    .await;
    assert_eq!(
        check(support::Dialect::Anthropic, false, &out.bytes)
            .unwrap()
            .text,
        HELLO.concat()
    );
    let calls = upstream.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].body["model"], "primary");
    assert_eq!(
        calls[1].body["messages"][1],
        json!({"role":"assistant","content":"Hello there,"})
    );
}

#[tokio::test(start_paused = true)]
async fn an_answer_past_the_transcript_limit_ends_with_an_error_rather_than_a_second_answer() {
    let deltas = ["Hello, ", "wor", "ld!"];
    for when in [WhenNoPrefill::Error, WhenNoPrefill::Instruction] {
        let upstream = broken_after(support::Dialect::Anthropic, &deltas, 2);
        let chain = FallbackChain::new()
            .model("fallback", Prefill::Assistant)
            .fallbacks("primary", ["fallback"])
            .when_no_prefill(when);
        let layer = MidStreamFallbackLayer::new(chain).max_transcript_bytes(4);
        let out = send(
            layer,
            &upstream,
            support::Dialect::Anthropic,
            &anthropic_request(),
        )
        .await;
        let got = check(support::Dialect::Anthropic, false, &out.bytes).unwrap();
        assert_eq!(
            got.text, "Hello, wor",
            "{when:?}: nothing after the partial answer"
        );
        let message = got.error.expect("an error event");
        assert!(message.contains("stream broken"), "{when:?}: {message}");
        assert_eq!(
            upstream.calls().len(),
            1,
            "{when:?}: no fallback was called"
        );
        let err = out.error.expect("a typed FallbackError");
        assert!(
            err.reason().contains("transcript limit"),
            "{when:?}: {}",
            err.reason()
        );
    }
}
