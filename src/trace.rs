//! The layer's spans: one per request, one per attempt inside it.
//!
//! Field names follow the OpenTelemetry GenAI semantic conventions where one fits
//! (`gen_ai.request.model`, `gen_ai.response.model`, `gen_ai.usage.input_tokens`,
//! `gen_ai.usage.output_tokens`, `gen_ai.response.time_to_first_chunk`, `error.type`), and are
//! `midstream.*` otherwise. Every field of ours names its unit (`_bytes`, `_tokens`, `_s`);
//! durations are seconds, as in the conventions; names and labels are plain strings.

use std::time::Duration;

use tracing::field::Empty;
use tracing::Span;

use crate::attempt::Attempt;
use crate::dialect::Dialect;
use crate::observe::{AttemptReport, RequestReport};
use crate::strategy::Strategy;

pub(crate) const TARGET: &str = "tower_midstream";

/// The span of one request, a child of the current span (a `TraceLayer`'s, if outside).
pub(crate) fn request_span(dialect: Dialect) -> Span {
    tracing::info_span!(
        target: TARGET,
        "midstream.request",
        gen_ai.operation.name = "chat",
        midstream.dialect = dialect.name(),
        gen_ai.request.model = Empty,
        midstream.attempts = Empty,
        midstream.outcome = Empty,
        gen_ai.response.model = Empty,
        error.type = Empty,
    )
}

/// The span of one attempt, inside its request's.
pub(crate) fn attempt_span(request: &Span, attempt: &Attempt) -> Span {
    let prefill = match attempt.strategy() {
        Some(Strategy::Prefill(kind)) => Some(kind.name()),
        _ => None,
    };
    tracing::info_span!(
        target: TARGET,
        parent: request,
        "midstream.attempt",
        midstream.attempt = attempt.number(),
        // The first attempt's is recorded once read (see `Recovery::record_model`).
        gen_ai.request.model = attempt.known_target(),
        midstream.strategy = attempt.strategy_label(),
        midstream.prefill = prefill,
        midstream.hedge = attempt.is_hedge(),
        midstream.outcome = Empty,
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        gen_ai.response.time_to_first_chunk = Empty,
        midstream.fallback_gap_s = Empty,
        error.type = Empty,
        midstream.sent_text_bytes = Empty,
        midstream.sent_tokens = Empty,
    )
}

/// Writes what an attempt came to into its span.
pub(crate) fn record_attempt(span: &Span, report: &AttemptReport) {
    if span.is_disabled() {
        return;
    }
    span.record("midstream.outcome", report.outcome().name());
    let usage = report.usage();
    if let Some(model) = usage.response_model() {
        span.record("gen_ai.response.model", model);
    }
    if let Some(n) = usage.input_tokens() {
        span.record("gen_ai.usage.input_tokens", n);
    }
    if let Some(n) = usage.output_tokens() {
        span.record("gen_ai.usage.output_tokens", n);
    }
    if let Some(t) = report.time_to_first_chunk() {
        span.record("gen_ai.response.time_to_first_chunk", seconds(t));
    }
    if let Some(t) = report.fallback_gap() {
        span.record("midstream.fallback_gap_s", seconds(t));
    }
    if let crate::observe::AttemptOutcome::Failed(class) = report.outcome() {
        span.record("error.type", class.name());
        span.record("midstream.sent_text_bytes", report.sent_text_bytes() as u64);
        span.record("midstream.sent_tokens", report.sent_tokens());
    }
}

/// Writes what a request came to into its span.
pub(crate) fn record_request(span: &Span, report: &RequestReport, response_model: Option<&str>) {
    if span.is_disabled() {
        return;
    }
    span.record("midstream.attempts", report.attempts());
    span.record("midstream.outcome", report.outcome().name());
    if let Some(model) = response_model {
        span.record("gen_ai.response.model", model);
    }
    if let Some(err) = report.error() {
        span.record("error.type", err.original().class().name());
    }
}

/// A duration as seconds, the unit of every duration field.
pub(crate) fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}
