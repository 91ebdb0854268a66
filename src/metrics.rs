//! An [`Observer`] on the `metrics` facade (the `metrics` feature).

use std::collections::HashSet;
use std::sync::Arc;

use crate::observe::{AttemptReport, Observer, RequestReport};

/// Feeds the [`metrics`](https://docs.rs/metrics) facade, so any of its exporters (Prometheus,
/// StatsD, OpenTelemetry...) gets the layer's figures. Needs the `metrics` cargo feature.
///
/// | metric | kind | labels | counts |
/// |---|---|---|---|
/// | `midstream_attempts_total` | counter | `target`, `strategy`, `class` | attempts, by how they ended: `class` is `completed`, `passed_on`, `client_gone`, `lost_race` (a hedge race's loser) or the failure class (`transport`, `stall`, `status`...) |
/// | `midstream_requests_total` | counter | `dialect`, `outcome` | requests: `completed`, `passed_on`, `gave_up`, `client_gone` |
/// | `midstream_attempts_per_request` | histogram | `dialect`, `outcome` | attempts each request took, the first included |
/// | `midstream_time_to_first_chunk_seconds` | histogram | `target`, `strategy` | per attempt whose bytes reached the client: from its call to its first bytes at the client |
/// | `midstream_fallback_gap_seconds` | histogram | `target`, `strategy` | per fallback whose bytes reached the client: the pause the client saw, from the failure that interrupted it to the fallback's first bytes |
/// | `midstream_usage_tokens_total` | counter | `target`, `type` (`input`, `output`) | tokens, as the upstreams reported them |
///
/// `strategy` is `original` (the first attempt), `restart`, `prefill` or `instruction`. The
/// first attempt's `target` is the model the client's body names, which the client chooses, so
/// a target is a label value only when it is listed with [`targets`](Self::targets); any
/// other is counted as `other`, and a client cannot mint label values.
/// [`record_all_targets`](Self::record_all_targets) turns that off, for a service whose
/// clients cannot choose the model.
///
/// ```
/// use tower_midstream::{FallbackChain, MetricsObserver, MidStreamFallbackLayer};
///
/// let layer = MidStreamFallbackLayer::new(FallbackChain::new())
///     .observer(MetricsObserver::new().targets(["claude-sonnet-4-6", "claude-sonnet-4-5"]));
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Default)]
pub struct MetricsObserver {
    targets: Targets,
}

/// Which targets are label values of their own.
#[derive(Debug, Clone)]
enum Targets {
    /// These; any other is `other`.
    Listed(Arc<HashSet<Arc<str>>>),
    /// Every one, under its own name: as many label values as names clients send.
    All,
}

impl Default for Targets {
    fn default() -> Self {
        Targets::Listed(Arc::default())
    }
}

/// The label of a target not among those listed.
const OTHER: &str = "other";

impl MetricsObserver {
    /// Counts every target as `other` until [`targets`](Self::targets) lists them.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records these targets under their names and any other as `other`.
    pub fn targets<I, T>(mut self, targets: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<Arc<str>>,
    {
        self.targets = Targets::Listed(Arc::new(targets.into_iter().map(Into::into).collect()));
        self
    }

    /// Records every target under its own name, whatever model a client sends: for a service
    /// whose clients cannot choose the model, or whose models are checked before this layer.
    pub fn record_all_targets(mut self) -> Self {
        self.targets = Targets::All;
        self
    }

    fn target_label(&self, target: Option<&str>) -> String {
        match (target, &self.targets) {
            (Some(t), Targets::All) => t.to_owned(),
            (Some(t), Targets::Listed(known)) if known.contains(t) => t.to_owned(),
            _ => OTHER.to_owned(),
        }
    }
}

impl Observer for MetricsObserver {
    fn attempt_ended(&self, report: &AttemptReport) {
        let attempt = report.attempt();
        let target = self.target_label(attempt.target());
        let strategy = attempt.strategy_label();
        metrics::counter!(
            "midstream_attempts_total",
            "target" => target.clone(),
            "strategy" => strategy,
            "class" => report.outcome().class_name(),
        )
        .increment(1);
        if let Some(t) = report.time_to_first_chunk() {
            metrics::histogram!(
                "midstream_time_to_first_chunk_seconds",
                "target" => target.clone(),
                "strategy" => strategy,
            )
            .record(t.as_secs_f64());
        }
        if let Some(gap) = report.fallback_gap() {
            metrics::histogram!(
                "midstream_fallback_gap_seconds",
                "target" => target.clone(),
                "strategy" => strategy,
            )
            .record(gap.as_secs_f64());
        }
        let usage = report.usage();
        for (kind, tokens) in [
            ("input", usage.input_tokens()),
            ("output", usage.output_tokens()),
        ] {
            if let Some(tokens) = tokens {
                metrics::counter!(
                    "midstream_usage_tokens_total",
                    "target" => target.clone(),
                    "type" => kind,
                )
                .increment(tokens);
            }
        }
    }

    fn request_ended(&self, report: &RequestReport) {
        let dialect = report.dialect().name();
        let outcome = report.outcome().name();
        metrics::counter!(
            "midstream_requests_total",
            "dialect" => dialect,
            "outcome" => outcome,
        )
        .increment(1);
        metrics::histogram!(
            "midstream_attempts_per_request",
            "dialect" => dialect,
            "outcome" => outcome,
        )
        .record(f64::from(report.attempts()));
    }
}
