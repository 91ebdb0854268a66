//! Targets that name their model in the URL: Claude on Vertex AI as a fallback for the
//! Anthropic API and the other way round, the attempt the inner service routes by, a custom
//! planner doing the same, and model names that can never become an address.

mod support;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use support::*;
use tower::{Layer, ServiceExt};
use tower_midstream::{
    Address, Attempt, Failure, FailureClass, FallbackChain, MidStreamFallbackLayer, Plan, Prefill,
    RetryPlanner, Strategy, Target,
};

const VERTEX_MODEL: &str = "claude-sonnet-4-6@default";
const VERTEX_PATH: &str = "/v1/projects/my-proj/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-6@default:streamRawPredict";

/// The primary streams `sent` of HELLO's deltas and breaks; every request and the attempt it
/// came with are recorded.
struct Recorded {
    upstream: Upstream,
    attempts: Arc<Mutex<Vec<Attempt>>>,
}

impl Recorded {
    fn new(sent: usize) -> Self {
        Recorded {
            upstream: broken_after(Dialect::Anthropic, &HELLO, sent),
            attempts: Arc::default(),
        }
    }

    fn rejecting_prefill(self, model: &str) -> Self {
        Recorded {
            upstream: self.upstream.rejecting_prefill(model),
            ..self
        }
    }

    /// Sends `body` to `path` through a layer with `planner`; the client's stream, checked.
    async fn send<P>(&self, planner: P, path: &str, body: &Value) -> String
    where
        P: RetryPlanner + Clone + Send + 'static,
    {
        let upstream = self.upstream.clone();
        let attempts = self.attempts.clone();
        let inner = tower::service_fn(
            move |req: Request<tower_midstream::ReplayBody<Full<Bytes>>>| {
                let upstream = upstream.clone();
                attempts.lock().unwrap().push(
                    req.extensions()
                        .get::<Attempt>()
                        .expect("an attempt")
                        .clone(),
                );
                async move { Ok::<_, std::convert::Infallible>(upstream.answer(req).await) }
            },
        );
        let svc = MidStreamFallbackLayer::new(planner).layer(inner);
        let req = Request::post(path)
            .header("anthropic-version", "2023-06-01")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let response: Response<_> = svc.oneshot(req).await.unwrap();
        assert_eq!(response.status(), 200);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let events = check::parse_sse(&bytes);
        let got = check::anthropic(&events).unwrap_or_else(|e| {
            panic!("{e}\n{}", String::from_utf8_lossy(&bytes));
        });
        assert!(got.error.is_none(), "{}", String::from_utf8_lossy(&bytes));
        got.text
    }

    fn calls(&self) -> Vec<upstream::Call> {
        self.upstream.calls()
    }

    fn attempts(&self) -> Vec<Attempt> {
        self.attempts.lock().unwrap().clone()
    }
}

/// The `max_tokens` of a continuation: below the client's 100, by what was kept.
fn shrunk(body: &Value) -> Value {
    let n = body["max_tokens"].as_u64().expect("max_tokens");
    assert!((1..100).contains(&n), "max_tokens {n} did not shrink");
    json!(n)
}

fn vertex_chain(prefill: Prefill) -> FallbackChain {
    FallbackChain::new()
        .target(
            Target::new(VERTEX_MODEL)
                .prefill(prefill)
                .at(Address::vertex("my-proj", "us-east5")),
        )
        .fallbacks("primary", [VERTEX_MODEL])
}

#[tokio::test(start_paused = true)]
async fn an_anthropic_request_that_breaks_on_the_anthropic_api_completes_on_claude_on_vertex() {
    for prefill in [Prefill::None, Prefill::Assistant] {
        let mut up = Recorded::new(1);
        if prefill == Prefill::None {
            up = up.rejecting_prefill(VERTEX_MODEL);
        }
        let request = anthropic_request();
        let text = up
            .send(vertex_chain(prefill), "/v1/messages", &request)
            .await;
        assert_eq!(text, HELLO.concat(), "{prefill:?}");

        let calls = up.calls();
        assert_eq!(calls.len(), 2, "{prefill:?}: one fallback suffices");
        assert_eq!(calls[0].uri, "/v1/messages");
        assert_eq!(calls[1].uri, VERTEX_PATH);
        assert!(calls[1].headers.get("anthropic-version").is_none());
        // The exact Vertex request: no `model`, the version Vertex wants, the partial answer
        // as a prefill only for a model that takes one, else the instruction after it.
        let partial = HELLO[0];
        let mut want = request.clone();
        let body = want.as_object_mut().unwrap();
        body.remove("model");
        body.insert("anthropic_version".into(), json!("vertex-2023-10-16"));
        body["max_tokens"] = shrunk(&calls[1].body);
        let messages = body["messages"].as_array_mut().unwrap();
        match prefill {
            Prefill::Assistant => {
                messages.push(json!({"role": "assistant", "content": partial}));
            }
            _ => {
                messages.push(json!({"role": "assistant", "content": partial}));
                messages
                    .push(json!({"role": "user", "content": tower_midstream::DEFAULT_INSTRUCTION}));
            }
        }
        assert_eq!(calls[1].body, want, "{prefill:?}");

        // The inner service is told where each attempt goes.
        let attempts = up.attempts();
        assert_eq!(attempts[0].target(), Some("primary"));
        assert!(attempts[0].address().is_native());
        assert_eq!(attempts[1].target(), Some(VERTEX_MODEL));
        assert_eq!(
            attempts[1].address(),
            &Address::vertex("my-proj", "us-east5")
        );
    }
}

#[tokio::test(start_paused = true)]
async fn claude_on_vertex_as_the_primary_falls_back_to_the_anthropic_api() {
    let up = Recorded::new(1);
    // As anthropic-python 2.x sends it: no `model`, its own `anthropic_version`.
    let mut request = anthropic_request();
    request.as_object_mut().unwrap().remove("model");
    request["anthropic_version"] = json!("2026-10-21");
    let chain = FallbackChain::new()
        .target(Target::new("claude-sonnet-4-5").prefill(Prefill::Assistant))
        .fallbacks(VERTEX_MODEL, ["claude-sonnet-4-5"]);
    let text = up.send(chain, VERTEX_PATH, &request).await;
    assert_eq!(text, HELLO.concat());

    let calls = up.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].uri, VERTEX_PATH);
    assert_eq!(calls[1].uri, "/v1/messages");
    let mut want = request.clone();
    let body = want.as_object_mut().unwrap();
    body.remove("anthropic_version");
    body.insert("model".into(), json!("claude-sonnet-4-5"));
    body["max_tokens"] = shrunk(&calls[1].body);
    body["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "assistant", "content": HELLO[0]}));
    assert_eq!(calls[1].body, want);

    let attempts = up.attempts();
    // The first attempt's model is read from the path.
    assert_eq!(attempts[0].target(), Some(VERTEX_MODEL));
    assert_eq!(
        attempts[0].address(),
        &Address::vertex("my-proj", "us-east5")
    );
    assert_eq!(attempts[1].target(), Some("claude-sonnet-4-5"));
    assert!(attempts[1].address().is_native());
}

/// A planner of its own: restarts on Claude on Vertex AI whatever failed.
#[derive(Clone)]
struct ToVertex;

impl RetryPlanner for ToVertex {
    fn plan(&mut self, failure: &Failure<'_>) -> Plan {
        if failure.attempt() > 1 {
            return Plan::give_up("one fallback only");
        }
        let target = Target::new(VERTEX_MODEL).at(Address::vertex("my-proj", "us-east5"));
        failure.retry(target, Strategy::Restart)
    }
}

#[tokio::test(start_paused = true)]
async fn a_custom_planner_addresses_its_target_the_same_way() {
    // Broken before any text: a restart sends the request as it came, re-addressed.
    let up = Recorded::new(0);
    let request = anthropic_request();
    let text = up.send(ToVertex, "/v1/messages", &request).await;
    assert_eq!(text, HELLO.concat());
    let calls = up.calls();
    assert_eq!(calls[1].uri, VERTEX_PATH);
    let mut want = request.clone();
    let body = want.as_object_mut().unwrap();
    body.remove("model");
    body.insert("anthropic_version".into(), json!("vertex-2023-10-16"));
    assert_eq!(calls[1].body, want);
    assert_eq!(
        up.attempts()[1].address(),
        &Address::vertex("my-proj", "us-east5")
    );
}

#[tokio::test(start_paused = true)]
async fn a_model_name_placed_in_a_path_never_adds_a_segment_a_query_or_a_host() {
    let hostile = "../../v1/other?key=1#f@evil.example/%2F";
    // Claude on Vertex AI.
    let up = Recorded::new(0);
    let chain = FallbackChain::new()
        .target(Target::new(hostile).at(Address::vertex("my-proj", "us-east5")))
        .fallbacks("primary", [hostile]);
    up.send(chain, "/v1/messages", &anthropic_request()).await;
    let encoded = "..%2F..%2Fv1%2Fother%3Fkey%3D1%23f@evil.example%2F%252F";
    assert_eq!(
        up.calls()[1].uri,
        format!(
            "/v1/projects/my-proj/locations/us-east5/publishers/anthropic/models/{encoded}:streamRawPredict"
        )
    );
    assert_eq!(up.attempts()[1].target(), Some(hostile));

    // Gemini: the client's path, its model segment replaced, its query kept.
    let bytes = gemini_text_stream(&HELLO);
    let upstream = Upstream::new(Dialect::Gemini, whole_of(Dialect::Gemini, &bytes))
        .lenient()
        .then(Scripted::Stream {
            bytes: Bytes::new(),
            cuts: vec![],
            fault: Some(upstream::Fault::Reset),
        });
    let chain = FallbackChain::new()
        .model(hostile, Prefill::Assistant)
        .fallbacks("primary", [hostile]);
    let out = send(
        MidStreamFallbackLayer::new(chain),
        &upstream,
        Dialect::Gemini,
        &gemini_request(),
    )
    .await;
    check(Dialect::Gemini, true, &out.bytes).unwrap();
    let calls = upstream.calls();
    assert_eq!(
        calls[1].uri,
        format!("/v1beta/models/{encoded}:streamGenerateContent?alt=sse")
    );
    let uri: http::Uri = format!("https://generativelanguage.example{}", calls[1].uri)
        .parse()
        .unwrap();
    assert_eq!(uri.host(), Some("generativelanguage.example"));
    assert_eq!(uri.query(), Some("alt=sse"));
    assert_eq!(uri.path().split('/').count(), 4);
}

#[test]
fn an_inner_service_addresses_a_first_attempt_where_the_model_is_served() {
    // A client speaks the Anthropic API; the operator serves its model on Vertex AI.
    let request = Request::post("/v1/messages")
        .header("anthropic-version", "2023-06-01")
        .body(Bytes::from(anthropic_request().to_string()))
        .unwrap();
    let target = Target::new(VERTEX_MODEL)
        .at(Address::vertex("my-proj", "us-east5").anthropic_version("2026-10-21"));
    let sent = target
        .readdress(tower_midstream::Dialect::ANTHROPIC_MESSAGES, &request)
        .unwrap();
    assert_eq!(sent.uri().path(), VERTEX_PATH);
    let body: Value = serde_json::from_slice(sent.body()).unwrap();
    let mut want = anthropic_request();
    want.as_object_mut().unwrap().remove("model");
    want["anthropic_version"] = json!("2026-10-21");
    assert_eq!(body, want);
    // Not a non-streaming request's method.
    let mut quiet = anthropic_request();
    quiet["stream"] = json!(false);
    let request = Request::post("/v1/messages")
        .body(Bytes::from(quiet.to_string()))
        .unwrap();
    let sent = target
        .readdress(tower_midstream::Dialect::ANTHROPIC_MESSAGES, &request)
        .unwrap();
    assert!(sent.uri().path().ends_with(":rawPredict"));
    // Vertex speaks Anthropic Messages only.
    let chat = Request::post("/v1/chat/completions")
        .body(Bytes::from(openai_request().to_string()))
        .unwrap();
    let err = target
        .readdress(tower_midstream::Dialect::OPENAI_CHAT, &chat)
        .unwrap_err();
    assert!(err.to_string().contains("Anthropic Messages"), "{err}");
}

#[test]
fn a_same_target_retry_and_a_larger_context_restart_keep_the_targets_address() {
    let vertex = Address::vertex("my-proj", "us-east5");
    let request = Request::post("/v1/messages")
        .header("anthropic-version", "2023-06-01")
        .body(Bytes::from(anthropic_request().to_string()))
        .unwrap();
    let mut chain = FallbackChain::new()
        .target(Target::new(VERTEX_MODEL).at(vertex.clone()))
        .target(Target::new("claude-1m@default").at(vertex.clone()))
        .fallbacks("primary", [VERTEX_MODEL])
        .context_window_fallbacks("primary", ["claude-1m@default"])
        .retries(1);
    let on_vertex = Target::new(VERTEX_MODEL).at(vertex.clone());
    const UNAVAILABLE: FailureClass = FailureClass::Status(http::StatusCode::SERVICE_UNAVAILABLE);

    // A 503 from the fallback on Vertex AI: the same model again, at the same address.
    let failed = Failure::builder(
        tower_midstream::Dialect::ANTHROPIC_MESSAGES,
        request.clone(),
    )
    .after("primary", Strategy::Restart, UNAVAILABLE)
    .attempt_to(on_vertex.clone(), Strategy::Restart)
    .class(UNAVAILABLE);
    let mut plan = chain.clone().plan(&failed.build());
    let retried = plan.request_mut().expect("a same-target retry");
    assert_eq!(retried.uri().path(), VERTEX_PATH);
    assert!(plan.wait().is_some());

    // "Prompt is too long" there: the larger-context target, at its own address.
    let too_long = Failure::builder(tower_midstream::Dialect::ANTHROPIC_MESSAGES, request)
        .after("primary", Strategy::Restart, UNAVAILABLE)
        .attempt_to(on_vertex, Strategy::Restart)
        .class(FailureClass::ContextWindow);
    let mut plan = chain.plan(&too_long.build());
    let restarted = plan.request_mut().expect("a restart on the larger target");
    assert_eq!(
        restarted.uri().path(),
        VERTEX_PATH.replace(VERTEX_MODEL, "claude-1m@default")
    );
    assert!(!String::from_utf8_lossy(restarted.body()).contains("\"model\""));
}

#[test]
fn a_chat_request_falls_back_to_claude_on_vertex_translated_then_placed_in_its_path() {
    let anthropic = tower_midstream::Dialect::ANTHROPIC_MESSAGES;
    let request = Request::post("/v1/chat/completions")
        .body(Bytes::from(openai_request().to_string()))
        .unwrap();
    let failed =
        Failure::builder(tower_midstream::Dialect::OPENAI_CHAT, request).sent_text("Hello there,");
    // The same model on the Anthropic API, for the translation alone.
    let native = Target::new(VERTEX_MODEL)
        .prefill(Prefill::Assistant)
        .dialect(anthropic);
    let mut on_api = FallbackChain::new()
        .target(native)
        .fallbacks("primary", [VERTEX_MODEL])
        .plan(&failed.build());
    let translated: Value = serde_json::from_slice(on_api.request_mut().unwrap().body()).unwrap();

    // A Vertex address implies Anthropic Messages: the chain translates without being told.
    let mut plan = vertex_chain(Prefill::Assistant).plan(&failed.build());
    assert_eq!(plan.dialect(), Some(anthropic));
    assert_eq!(
        plan.target().map(|t| t.address().clone()),
        Some(Address::vertex("my-proj", "us-east5"))
    );
    let sent = plan.request_mut().expect("a retry on Claude on Vertex AI");
    assert_eq!(sent.uri().path(), VERTEX_PATH);
    let body: Value = serde_json::from_slice(sent.body()).unwrap();
    let mut want = translated.clone();
    want.as_object_mut().unwrap().remove("model");
    want["anthropic_version"] = json!("vertex-2023-10-16");
    assert_eq!(body, want);
    assert_eq!(
        body["messages"].as_array().unwrap().last().unwrap()["role"],
        "assistant",
        "the partial answer continued as a prefill: {body}"
    );

    // The other way is not taken: a request sent to a Vertex path carries Vertex's
    // `anthropic_version`, which Chat has no form for; the chain says so and never sends it.
    let mut vertex_body = anthropic_request();
    vertex_body.as_object_mut().unwrap().remove("model");
    vertex_body["anthropic_version"] = json!("vertex-2023-10-16");
    let request = Request::post(VERTEX_PATH)
        .body(Bytes::from(vertex_body.to_string()))
        .unwrap();
    let failed = Failure::builder(anthropic, request);
    let gpt = Target::new("gpt-4.1").dialect(tower_midstream::Dialect::OPENAI_CHAT);
    let why = failed.build().cannot_send_to(&gpt).expect("never sent");
    assert!(why.contains("anthropic_version"), "{why}");
}
