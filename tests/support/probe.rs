//! A planner that tries every rewrite strategy on whatever request it is given.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tower::{Layer, ServiceExt};
use tower_midstream::{Failure, MidStreamFallbackLayer, Plan, Prefill, RetryPlanner, Strategy};

use super::upstream::{self, Dialect, Fault, Scripted, Upstream, Whole};
use super::{
    anthropic_text_stream, events_of, gemini_text_stream, openai_text_stream, path,
    responses_text_stream,
};

/// The top level of a JSON body, nested values checked for syntax but not built (a body
/// nested deeper than serde_json's `Value` recursion limit is still well-formed).
pub fn shallow(body: &[u8]) -> Result<Value, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Top<'a> {
        #[serde(borrow)]
        model: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow)]
        messages: Option<&'a serde_json::value::RawValue>,
    }
    let top: Top<'_> = serde_json::from_slice(body)?;
    let model = top
        .model
        .map(|m| serde_json::from_str(m.get()))
        .transpose()?
        .unwrap_or(Value::Null);
    let messages = match top.messages {
        Some(m) if m.get().starts_with('[') => json!([]),
        Some(_) => json!("not an array"),
        None => Value::Null,
    };
    Ok(json!({"model": model, "messages": messages}))
}

/// A strategy's name and what its rewrite gave.
pub type Rewrite = (String, Result<Value, String>);

/// A planner that tries every rewrite on whatever body it is given, and records the results.
#[derive(Clone, Default)]
pub struct Probe {
    results: Arc<Mutex<Vec<Rewrite>>>,
}

impl RetryPlanner for Probe {
    fn plan(&mut self, failure: &Failure<'_>) -> Plan {
        for strategy in [
            Strategy::Restart,
            Strategy::Prefill(Prefill::Assistant),
            Strategy::Prefill(Prefill::Prefix),
            Strategy::Prefill(Prefill::ContinueFinalMessage),
            Strategy::instruction(),
        ] {
            let result = failure
                .rewrite("target", &strategy)
                .map_err(|e| e.to_string())
                .and_then(|req| shallow(req.body()).map_err(|e| format!("MALFORMED OUTPUT: {e}")));
            self.results
                .lock()
                .unwrap()
                .push((strategy.to_string(), result));
        }
        Plan::give_up("probe")
    }
}

/// Sends `body` as the request; the primary's stream breaks after some text; returns what each
/// strategy's rewrite gave.
pub fn rewrites(dialect: Dialect, body: Bytes) -> Vec<Rewrite> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let stream = match dialect {
            Dialect::Anthropic => anthropic_text_stream(&["Partial ", "answer "]),
            Dialect::OpenAi => openai_text_stream(&["Partial ", "answer "]),
            Dialect::Gemini => gemini_text_stream(&["Partial ", "answer ", "end"]),
            Dialect::Responses => responses_text_stream(&["Partial ", "answer "]),
        };
        let lead = match dialect {
            Dialect::Anthropic => 4,
            Dialect::OpenAi => 3,
            Dialect::Gemini => 2,
            Dialect::Responses => 6,
        };
        let upstream = Upstream::new(dialect, Whole::default()).then(Scripted::Stream {
            bytes: Bytes::from(events_of(&stream)[..lead].concat()),
            cuts: vec![],
            fault: Some(Fault::Reset),
        });
        let probe = Probe::default();
        let svc = MidStreamFallbackLayer::new(probe.clone()).layer(upstream::service(upstream));
        let req = Request::post(path(dialect)).body(Full::new(body)).unwrap();
        let res = svc.oneshot(req).await.unwrap();
        let _ = res.into_body().collect().await.unwrap();
        let results = probe.results.lock().unwrap().clone();
        results
    })
}
