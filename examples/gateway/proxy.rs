//! The gateway proper: the layer in front of a router that sends each attempt to the upstream
//! serving the body's `model`.
//!
//! ```text
//! client ── server.rs ── Gateway::handle ── MidStreamFallback ── Router ── hyper-util client
//!                        (/healthz, x-midstream-  (one request,     (once per attempt: pick
//!                         fallback, errors in      one stream;      upstream, credentials,
//!                         the client's dialect)    keys redacted)   headers; error bodies
//!                                                                   bounded and redacted)
//! ```
//!
//! The trust boundary, both ways: the client's credentials and its claims about itself
//! (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`...) and its query string never reach an
//! upstream; response headers about the operator's account (`set-cookie`,
//! `anthropic-organization-id`, `openai-organization`...) never reach a client, and neither do
//! the upstream's key (redacted from error bodies), the list of configured models (a model
//! that exists but is asked for on the wrong endpoint gets the same 404 as one that does not;
//! `/metrics` is on the admin listener, see `admin.rs`), or which upstream failed and how (that
//! goes to the log). `x-midstream-served-by` names the model serving the answer by its name in
//! the config (the alias clients use, never `upstream_model`), and may name a fallback the
//! client did not ask for: that one is the operator's choice to show.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Either, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::Deserialize;
use serde_json::value::RawValue;
use tower::{Service, ServiceExt};
use tower_midstream::{
    Dialect, FallbackBody, FallbackChain, MetricsObserver, MidStreamFallback, NoFallback,
    Provenance, Redactor, ReplayBody, Target,
};

use crate::budget::{BodyBudget, BudgetFull, Counted, Held, Reservation};
use crate::config::{Config, Upstream};
use crate::token::token_of;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the router answers with: the upstream's body, or an error it made itself.
pub type RouterBody = Either<Incoming, Full<Bytes>>;

/// What clients receive: the layer's body, holding its request's share of the body budget
/// until it is dropped, or an answer the gateway made itself.
pub type GatewayBody = Either<Held<FallbackBody<RouterBody>>, Full<Bytes>>;

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Headers that are about one connection, not the message (RFC 9110, 7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The client's credentials, and headers tied to its account: each upstream gets its own.
const CREDENTIALS: &[&str] = &[
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "cookie",
    "openai-organization",
    "openai-project",
];

/// Other request headers not forwarded: set anew for the upstream, or meant for the gateway.
/// `accept-encoding` is replaced by `identity`: the layer reads the stream as plain SSE.
/// `expect` is answered by the gateway's own server.
const NOT_FORWARDED: &[&str] = &[
    "host",
    "content-length",
    "accept-encoding",
    "expect",
    "x-midstream-fallback",
];

/// What a client says about where it is or what it asked for: its word, not the gateway's,
/// so it is not passed on (any `x-forwarded-*` too).
const CLIENT_CLAIMS: &[&str] = &[
    "forwarded",
    "via",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "x-original-url",
    "x-rewrite-url",
    "x-original-host",
];

/// Response headers about the operator's account with the upstream, or the upstream's own
/// origin: they stay inside.
const OPERATOR_HEADERS: &[&str] = &[
    "set-cookie",
    "set-cookie2",
    "anthropic-organization-id",
    "openai-organization",
    "openai-project",
    "x-organization-id",
    "alt-svc",
];

/// The most of an upstream's error body passed on; it is read whole to redact keys from it.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// The whole gateway, cheap to clone: one per connection.
#[derive(Clone)]
pub struct Gateway {
    service: MidStreamFallback<Router, FallbackChain>,
    /// What the request bodies in flight may hold, all requests together.
    budget: Arc<BodyBudget>,
    max_request_bytes: usize,
}

/// Builds the gateway for `config`, with a client that speaks HTTP/1.1 and HTTP/2 over TLS
/// (webpki roots) or plain TCP.
pub fn build(config: &Config) -> Gateway {
    // Without a pool timer, hyper-util closes idle connections only when it next checks one
    // out: a quiet upstream would keep them (and their buffers) forever.
    let client = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .build(connector());
    let router = Router::new(config, client);
    // Only the models of the config become label values, whatever clients send.
    let observer = MetricsObserver::new().targets(config.models.iter().map(|m| m.name.as_str()));
    Gateway {
        service: tower::Layer::layer(&config.layer().observer(observer), router),
        budget: BodyBudget::new(config.server.max_request_bytes_held),
        max_request_bytes: config.fallback.max_request_bytes,
    }
}

/// How the gateway connects to upstreams: TLS (webpki roots) or plain TCP, with
/// `TCP_NODELAY`, so that each request and its events leave without waiting on Nagle.
pub fn connector() -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http)
}

impl Gateway {
    /// Answers one client request; never fails: errors become responses in the client's
    /// dialect.
    pub async fn handle<B>(&self, mut req: Request<B>) -> Response<GatewayBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        if let Some(response) = local_route(&req) {
            return response.map(Either::Right);
        }
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        if opted_out(req.headers()) {
            req.extensions_mut().insert(NoFallback);
        }
        let Ok(reservation) = self.reserve(&req) else {
            return busy(client_dialect(&req)).map(Either::Right);
        };
        let req = req.map(|body| Counted::new(body, reservation.clone()));
        // The layer answers every failure itself, in the client's dialect: a 502 once the
        // fallbacks failed too, or at once for a request without fallback. The router's error
        // says only what kind of failure it was (its log line names the upstream).
        let mut response = match self.service.clone().oneshot(req).await {
            Ok(response) => response.map(|body| Either::Left(Held::new(body, reservation))),
            Err(never) => match never {},
        };
        if let Some(value) = served_by(response.extensions().get::<Provenance>()) {
            response.headers_mut().insert(SERVED_BY, value);
        }
        tracing::info!(
            target: "gateway",
            %method,
            %path,
            status = response.status().as_u16(),
            headers_ms = started.elapsed().as_millis() as u64,
            "answered"
        );
        response
    }
}

impl Gateway {
    /// Reserves what this request's body may hold until its answer ends (see `budget.rs`): a
    /// POST's only, since no other request has its body read.
    fn reserve<B>(&self, req: &Request<B>) -> Result<Option<Arc<Reservation>>, BudgetFull> {
        if req.method() != Method::POST {
            return Ok(None);
        }
        // hyper holds the body to its content-length; without one, the most it may be.
        let bytes = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .and_then(|len| usize::try_from(len).ok())
            .map_or(self.max_request_bytes, |len| {
                len.min(self.max_request_bytes)
            });
        self.budget.reserve(bytes).map(Some)
    }
}

/// The body budget is full: a 503 the SDKs retry, in the client's dialect.
fn busy(dialect: Dialect) -> Response<Full<Bytes>> {
    let mut response = error(
        dialect,
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Overloaded,
        "the gateway holds as many request bodies as it may; retry shortly",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Names the model whose response the client is getting (a fallback's, when the primary failed
/// before its stream), e.g. `demo-claude-no-prefill; attempt=2; strategy=restart`. Set when the
/// headers go out; a fallback that takes over mid-stream is in the log and the metrics.
const SERVED_BY: HeaderName = HeaderName::from_static("x-midstream-served-by");

fn served_by(provenance: Option<&Provenance>) -> Option<HeaderValue> {
    let attempt = provenance?.current()?;
    let value = format!(
        "{}; attempt={}; strategy={}",
        attempt.target()?,
        attempt.number(),
        attempt.strategy_label()
    );
    HeaderValue::from_str(&value).ok()
}

/// `x-midstream-fallback: off` turns fallback off for one request.
fn opted_out(headers: &HeaderMap) -> bool {
    headers
        .get("x-midstream-fallback")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("off"))
}

/// Requests the gateway answers itself, before the layer: `/healthz`. (`/metrics` is on the
/// admin listener: it names every configured model.)
fn local_route<B>(req: &Request<B>) -> Option<Response<Full<Bytes>>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz") => {
            let mut response = Response::new(Full::new(Bytes::from_static(b"ok\n")));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            Some(response)
        }
        _ => None,
    }
}

/// One model's route.
struct Route {
    upstream: Arc<Upstream>,
    upstream_model: String,
}

/// The service inside the layer: called once per attempt, it sends the request to the upstream
/// serving the body's `model` (which the layer has set to the fallback's name on later
/// attempts).
#[derive(Clone)]
pub struct Router {
    routes: Arc<HashMap<String, Route>>,
    client: HttpClient,
    max_request_bytes: usize,
    /// Takes the upstreams' keys out of the error bodies passed on.
    redactor: Redactor,
}

impl Router {
    fn new(config: &Config, client: HttpClient) -> Self {
        let upstreams: Vec<Arc<Upstream>> =
            config.upstreams.iter().cloned().map(Arc::new).collect();
        let routes = config
            .models
            .iter()
            .map(|m| {
                let route = Route {
                    upstream: upstreams[m.upstream].clone(),
                    upstream_model: m.upstream_model.clone(),
                };
                (m.name.clone(), route)
            })
            .collect();
        Router {
            routes: Arc::new(routes),
            client,
            max_request_bytes: config.fallback.max_request_bytes,
            redactor: config.redactor(),
        }
    }
}

impl<B> Service<Request<ReplayBody<B>>> for Router
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<RouterBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RouterBody>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The hyper-util client pools connections and is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReplayBody<B>>) -> Self::Future {
        let router = self.clone();
        Box::pin(async move { router.forward(req).await })
    }
}

impl Router {
    async fn forward<B>(self, req: Request<ReplayBody<B>>) -> Result<Response<RouterBody>, BoxError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let dialect = client_dialect(&req);
        let local = |status, kind, message: &str| {
            Ok(error(dialect, status, kind, message).map(Either::Right))
        };
        let endpoint = endpoint_dialect(req.uri().path()).filter(|_| req.method() == Method::POST);
        let Some(endpoint) = endpoint else {
            return local(
                StatusCode::NOT_FOUND,
                ErrorKind::NotFound,
                &format!(
                    "{} {} is not served here: use POST /v1/messages, POST /v1/chat/completions, \
                     POST /v1/responses, POST /v1beta/models/{{model}}:streamGenerateContent or Claude on Vertex AI's \
                     POST /v1/projects/{{project}}/locations/{{region}}/publishers/anthropic/models/{{model}}:streamRawPredict",
                    req.method(),
                    req.uri().path()
                ),
            );
        };
        let (parts, body) = req.into_parts();
        // The layer collected the body already, unless fallback is off for this request.
        let body = match body.bytes() {
            Some(bytes) => bytes.clone(),
            None => match Limited::new(body, self.max_request_bytes).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(err) if err.is::<LengthLimitError>() => {
                    return local(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        ErrorKind::TooLarge,
                        &format!(
                            "the request body exceeds this gateway's limit of {} bytes",
                            self.max_request_bytes
                        ),
                    )
                }
                Err(err) => {
                    return local(
                        StatusCode::BAD_REQUEST,
                        ErrorKind::InvalidRequest,
                        &format!("cannot read the request body: {err}"),
                    )
                }
            },
        };
        // Gemini and Claude on Vertex AI name the model in the path: only a configured name,
        // compared decoded, is routed; anything else is a 404 before anything is sent.
        let path = parts.uri.path();
        let named_in_path = !matches!(
            path,
            "/v1/messages" | "/v1/messages/count_tokens" | "/v1/chat/completions" | "/v1/responses"
        );
        let model = if named_in_path {
            match endpoint.model_in_path(path) {
                Some(name) => ModelField { name, span: 0..0 },
                None => {
                    return local(
                        StatusCode::NOT_FOUND,
                        ErrorKind::ModelNotFound,
                        "the model in the path is not a model name",
                    )
                }
            }
        } else {
            match peek_model(&body) {
                Ok(model) => model,
                Err(message) => {
                    return local(StatusCode::BAD_REQUEST, ErrorKind::InvalidRequest, &message)
                }
            }
        };
        // Not the list of models, nor whether a name exists on another endpoint: which models
        // the operator serves is theirs to tell.
        let Some(route) = self
            .routes
            .get(&model.name)
            .filter(|r| r.upstream.dialect == endpoint)
        else {
            return local(
                StatusCode::NOT_FOUND,
                ErrorKind::ModelNotFound,
                &format!(
                    "model `{}` is not served by this gateway on POST {}",
                    model.name,
                    parts.uri.path()
                ),
            );
        };
        let upstream = &route.upstream;
        let vertex = !upstream.address.is_native();
        if vertex && path == "/v1/messages/count_tokens" {
            return local(
                StatusCode::NOT_FOUND,
                ErrorKind::NotFound,
                &format!("counting tokens is not served for `{}`", model.name),
            );
        }

        // The request as the upstream wants it: its own name for the model, where its
        // address puts it (the body's `model`, Gemini's path, Vertex's path and body rules).
        let request = if named_in_path || vertex {
            let request = Request::from_parts(parts, body);
            let target = Target::new(route.upstream_model.as_str()).at(upstream.address.clone());
            match target.readdress(endpoint, &request) {
                Ok(request) => request,
                Err(err) => {
                    return local(
                        StatusCode::BAD_REQUEST,
                        ErrorKind::InvalidRequest,
                        &err.to_string(),
                    )
                }
            }
        } else if route.upstream_model == model.name {
            Request::from_parts(parts, body)
        } else {
            let body = model.rename(&body, &route.upstream_model);
            Request::from_parts(parts, body)
        };
        let (parts, body) = request.into_parts();
        let token = match &upstream.access_token {
            None => None,
            Some(token) => match token.header().await {
                Ok(value) => Some(value),
                Err(why) => {
                    // `why` names the command, never its output.
                    tracing::warn!(
                        target: "gateway",
                        model = %model.name,
                        upstream = %upstream.name,
                        error = %why,
                        "no access token for the upstream"
                    );
                    return Err("the upstream's access token could not be fetched".into());
                }
            },
        };
        let uri = upstream_uri(&upstream.base_url, parts.uri.path())?;
        let mut out = Request::new(Full::new(body));
        *out.method_mut() = Method::POST;
        *out.uri_mut() = uri;
        *out.headers_mut() = forwarded_headers(&parts.headers, upstream);
        if let Some(token) = &token {
            out.headers_mut()
                .insert(header::AUTHORIZATION, token.clone());
        }

        let started = Instant::now();
        // The log names the upstream and its error; the client (through the layer's 502)
        // learns only the kind of failure.
        let response =
            match tokio::time::timeout(upstream.headers_timeout, self.client.request(out)).await {
                Ok(Ok(response)) => response,
                Ok(Err(err)) => {
                    tracing::warn!(
                        target: "gateway",
                        model = %model.name,
                        upstream = %upstream.name,
                        error = %describe(&err),
                        "upstream unreachable"
                    );
                    return Err("the upstream could not be reached".into());
                }
                Err(_) => {
                    tracing::warn!(
                        target: "gateway",
                        model = %model.name,
                        upstream = %upstream.name,
                        headers_timeout_ms = upstream.headers_timeout.as_millis() as u64,
                        "upstream sent no response headers in time"
                    );
                    return Err(format!(
                        "the upstream sent no response headers within {} ms",
                        upstream.headers_timeout.as_millis()
                    )
                    .into());
                }
            };
        tracing::info!(
            target: "gateway",
            model = %model.name,
            upstream = %upstream.name,
            upstream_model = %route.upstream_model,
            status = response.status().as_u16(),
            headers_ms = started.elapsed().as_millis() as u64,
            "upstream answered"
        );
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        for name in OPERATOR_HEADERS {
            parts.headers.remove(*name);
        }
        if parts.status.is_success() {
            return Ok(Response::from_parts(parts, Either::Left(body)));
        }
        // An error body may quote the key the upstream was sent: read it (bounded, within the
        // headers timeout) and redact it before anyone logs or passes it on.
        let read = Limited::new(body, ERROR_BODY_LIMIT).collect();
        let unreadable = |why: String| {
            tracing::warn!(
                target: "gateway",
                upstream = %upstream.name,
                status = parts.status.as_u16(),
                "the upstream's error body {why}: replaced"
            );
            let message = format!(
                "the upstream answered HTTP {} with an error body that {why}",
                parts.status.as_u16()
            );
            Ok(error(dialect, parts.status, ErrorKind::Upstream, &message).map(Either::Right))
        };
        let bytes = match tokio::time::timeout(upstream.headers_timeout, read).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(err)) if err.is::<LengthLimitError>() => {
                return unreadable(format!("exceeds {ERROR_BODY_LIMIT} bytes"))
            }
            Ok(Err(_)) => return unreadable("broke off".to_owned()),
            Err(_) => {
                return unreadable(format!(
                    "did not complete within {} ms",
                    upstream.headers_timeout.as_millis()
                ))
            }
        };
        let bytes = match self.redactor.redact_bytes(&bytes) {
            Cow::Borrowed(_) => bytes,
            Cow::Owned(redacted) => Bytes::from(redacted),
        };
        // A fetched access token is not in the layer's redactor: taken out here.
        let bytes = match token.as_ref().and_then(token_of) {
            Some(token) => match Redactor::new().secret(token).redact_bytes(&bytes) {
                Cow::Borrowed(_) => bytes,
                Cow::Owned(redacted) => Bytes::from(redacted),
            },
            None => bytes,
        };
        parts.headers.remove(header::CONTENT_LENGTH);
        Ok(Response::from_parts(parts, Either::Right(Full::new(bytes))))
    }
}

/// The dialect of an endpoint served: the generation endpoints, Anthropic's token counter
/// (it names a model too), Gemini's (`/v1beta/` and `/v1/`) and Claude on Vertex AI's.
fn endpoint_dialect(path: &str) -> Option<Dialect> {
    match path {
        "/v1/messages" | "/v1/messages/count_tokens" => Some(Dialect::ANTHROPIC_MESSAGES),
        "/v1/chat/completions" => Some(Dialect::OPENAI_CHAT),
        "/v1/responses" => Some(Dialect::OPENAI_RESPONSES),
        _ if gemini_path(path) => Some(Dialect::GEMINI),
        _ if vertex_path(path) => Some(Dialect::ANTHROPIC_MESSAGES),
        _ => None,
    }
}

/// `/v1beta/models/{model}:streamGenerateContent` (or `/v1/`, or `:generateContent`).
fn gemini_path(path: &str) -> bool {
    (path.starts_with("/v1beta/models/") || path.starts_with("/v1/models/"))
        && (path.ends_with(":streamGenerateContent") || path.ends_with(":generateContent"))
}

/// `/v1/projects/{p}/locations/{r}/publishers/anthropic/models/{m}:streamRawPredict` (or
/// `:rawPredict`).
fn vertex_path(path: &str) -> bool {
    path.starts_with("/v1/projects/")
        && path.contains("/publishers/anthropic/models/")
        && (path.ends_with(":streamRawPredict") || path.ends_with(":rawPredict"))
}

/// `base_url` (with its path prefix) followed by the endpoint's path. The client's query
/// string is not passed on (it is the client's word, and may carry its key); Gemini's stream
/// gets the one query it needs, `alt=sse`.
fn upstream_uri(base: &Uri, path: &str) -> Result<Uri, BoxError> {
    let query = if path.ends_with(":streamGenerateContent") {
        "?alt=sse"
    } else {
        ""
    };
    let uri = format!("{}{path}{query}", base.to_string().trim_end_matches('/'));
    Ok(uri.parse()?)
}

/// The client's headers minus credentials, hop-by-hop and gateway headers, plus the
/// upstream's own. Anthropic's own headers (`anthropic-version`, `anthropic-beta`) go to
/// Anthropic upstreams only: a request translated for another provider has no use for them.
fn forwarded_headers(client: &HeaderMap, upstream: &Upstream) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(client.len() + 4);
    let listed_in_connection: Vec<String> = client
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .collect();
    for (name, value) in client {
        // `x_api_key` is `x-api-key` to many servers and proxies: one spelling for the checks.
        let n = name.as_str().replace('_', "-");
        let n = n.as_str();
        if HOP_BY_HOP.contains(&n)
            || CREDENTIALS.contains(&n)
            || NOT_FORWARDED.contains(&n)
            || CLIENT_CLAIMS.contains(&n)
            || n.starts_with("x-forwarded-")
            || (n.starts_with("anthropic-") && upstream.dialect != Dialect::ANTHROPIC_MESSAGES)
            || listed_in_connection
                .iter()
                .any(|c| c.replace('_', "-") == n)
        {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    for (name, value) in &upstream.headers {
        headers.insert(name.clone(), value.clone());
    }
    // Vertex AI reads the version from the body (`anthropic_version`), never this header.
    if upstream.dialect == Dialect::ANTHROPIC_MESSAGES
        && upstream.address.is_native()
        && !headers.contains_key("anthropic-version")
    {
        // The API requires it; the SDKs send it, curl users tend not to.
        headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
    }
    if let Some((name, value)) = &upstream.credential {
        headers.insert(name.clone(), value.clone());
    }
    headers
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|v| HeaderName::try_from(v.trim()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// The `model` of a request body, and where its string literal sits.
struct ModelField {
    name: String,
    span: std::ops::Range<usize>,
}

impl ModelField {
    /// `body` with the model replaced, everything else byte for byte as the client sent it.
    fn rename(&self, body: &Bytes, to: &str) -> Bytes {
        let literal = serde_json::to_string(to).expect("a string serializes");
        let mut out = Vec::with_capacity(body.len() + literal.len());
        out.extend_from_slice(&body[..self.span.start]);
        out.extend_from_slice(literal.as_bytes());
        out.extend_from_slice(&body[self.span.end..]);
        Bytes::from(out)
    }
}

/// Checks that the body is a JSON object naming a model, without building a tree of it.
fn peek_model(body: &[u8]) -> Result<ModelField, String> {
    #[derive(Deserialize)]
    struct Peek<'a> {
        #[serde(borrow)]
        model: Option<&'a RawValue>,
    }
    // A derived struct would also read an array, field by field: no request is one.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err("the request body is not a JSON object".into());
    }
    let peek: Peek<'_> = serde_json::from_slice(body)
        .map_err(|e| format!("the request body is not a JSON object: {e}"))?;
    let raw = peek.model.ok_or("the request body has no `model`")?;
    let name: String =
        serde_json::from_str(raw.get()).map_err(|_| "`model` must be a string".to_owned())?;
    // `raw` borrows from `body`: its offset there is where the literal sits.
    let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
    Ok(ModelField {
        name,
        span: start..start + raw.get().len(),
    })
}

/// The dialect a client speaks, for the errors the gateway writes itself: by path, else by
/// the header only Anthropic clients send.
fn client_dialect<B>(req: &Request<B>) -> Dialect {
    if let Some(d) = endpoint_dialect(req.uri().path()) {
        return d;
    }
    if req.uri().path().starts_with("/v1beta/") || req.headers().contains_key("x-goog-api-key") {
        return Dialect::GEMINI;
    }
    if req.headers().contains_key("anthropic-version") {
        Dialect::ANTHROPIC_MESSAGES
    } else {
        Dialect::OPENAI_CHAT
    }
}

#[derive(Clone, Copy)]
enum ErrorKind {
    InvalidRequest,
    TooLarge,
    NotFound,
    ModelNotFound,
    Upstream,
    /// The gateway's own capacity, not an upstream's: clients retry it.
    Overloaded,
}

/// An error response in the format the client's SDK parses.
fn error(
    dialect: Dialect,
    status: StatusCode,
    kind: ErrorKind,
    message: &str,
) -> Response<Full<Bytes>> {
    let body = if dialect == Dialect::GEMINI {
        // Google's shape: the HTTP code and its status name; `error` first.
        let name = match status.as_u16() {
            400 | 413 => "INVALID_ARGUMENT",
            404 => "NOT_FOUND",
            _ => "INTERNAL",
        };
        serde_json::json!({"error": {"code": status.as_u16(), "message": message, "status": name}})
    } else if dialect == Dialect::ANTHROPIC_MESSAGES {
        let kind = match kind {
            ErrorKind::InvalidRequest => "invalid_request_error",
            ErrorKind::TooLarge => "request_too_large",
            ErrorKind::NotFound | ErrorKind::ModelNotFound => "not_found_error",
            ErrorKind::Upstream => "api_error",
            ErrorKind::Overloaded => "overloaded_error",
        };
        serde_json::json!({"type": "error", "error": {"type": kind, "message": message}})
    } else {
        let (kind, code) = match kind {
            ErrorKind::InvalidRequest | ErrorKind::TooLarge => ("invalid_request_error", None),
            ErrorKind::NotFound => ("invalid_request_error", Some("not_found")),
            ErrorKind::ModelNotFound => ("invalid_request_error", Some("model_not_found")),
            ErrorKind::Upstream => ("server_error", None),
            ErrorKind::Overloaded => ("server_error", Some("overloaded")),
        };
        serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
    };
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An error and its causes on one line, for the log: hyper-util's own message alone says only
/// "client error (Connect)".
fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    // It may carry the upstream's words (a TLS certificate's names...): one log line, no
    // control characters.
    out.escape_debug().to_string()
}
