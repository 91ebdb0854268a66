//! The gateway's configuration: the TOML file, checked whole before anything listens.
//!
//! Every error names the key it is about (`models[1] "gpt-4o".fallbacks[0]: ...`), so that a
//! typo is found from the message alone.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::Uri;
use serde::Deserialize;
use tower_midstream::{
    Address, Backoff, Breaker, Dialect, FallbackChain, MidStreamFallbackLayer, Prefill, Redactor,
    RetryBudget, Target, WhenNoPrefill,
};

use crate::token::{AccessToken, DEFAULT_REFRESH};

/// A configuration that passed every check.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Where `/metrics` (and `/healthz`) are served, if anywhere: not on `listen`, since the
    /// metrics name every configured model.
    pub admin_listen: Option<SocketAddr>,
    pub server: Server,
    pub fallback: Fallback,
    pub upstreams: Vec<Upstream>,
    pub models: Vec<Model>,
    /// Settings that work but are likely mistakes, each naming its key; logged at startup.
    pub warnings: Vec<String>,
}

/// `[server]`: what one client may hold, and for how long.
#[derive(Debug, Clone)]
pub struct Server {
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// HTTP/1.1: the request line and headers must arrive within this (hyper also counts the
    /// wait for the next request on a kept-alive connection).
    pub header_read_timeout: Option<Duration>,
    /// The longest wait for the next piece of a request body (tower-http's timeout).
    pub request_body_timeout: Option<Duration>,
    /// The whole request body must arrive within this.
    pub request_body_deadline: Option<Duration>,
    /// A connection with no request in flight for this long is closed.
    pub keep_alive_timeout: Option<Duration>,
    /// HTTP/2: streams (requests) at once on one connection.
    pub max_concurrent_streams: u32,
    /// Request headers, in bytes (HTTP/1.1 read buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// After SIGTERM, how long open streams may take to finish.
    pub shutdown_grace: Duration,
    /// Request bodies held at once by the whole process, in bytes: each is kept until its
    /// answer ends (it is replayed to fallbacks). See `budget.rs`.
    pub max_request_bytes_held: usize,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            max_connections: 512,
            header_read_timeout: Some(Duration::from_secs(10)),
            request_body_timeout: Some(Duration::from_secs(10)),
            request_body_deadline: Some(Duration::from_secs(60)),
            keep_alive_timeout: Some(Duration::from_secs(60)),
            max_concurrent_streams: 32,
            max_header_bytes: 64 * 1024,
            shutdown_grace: Duration::from_secs(30),
            max_request_bytes_held: 256 << 20,
        }
    }
}

/// `[fallback]`: how the layer recovers.
#[derive(Debug, Clone)]
pub struct Fallback {
    pub max_attempts: u32,
    pub idle_timeout: Option<Duration>,
    pub keep_alive: Option<Duration>,
    pub when_no_prefill: WhenNoPrefill,
    pub instruction: Option<String>,
    pub max_request_bytes: usize,
    pub policy: Policy,
}

/// `[fallback]`'s attempt policy (issue 11): deadlines, same-target retries, circuits.
#[derive(Debug, Clone)]
pub struct Policy {
    pub first_token_timeout: Option<Duration>,
    /// After this long with no content, the next target races the attempt; `None`: never.
    pub hedge_after: Option<Duration>,
    pub retries: u32,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// Same-target retries per second, all requests together.
    pub retry_budget: u32,
    /// Failures in a row that open a target's circuit; `None`: no circuit breaking.
    pub breaker_failures: Option<u32>,
    pub breaker_cooldown: Duration,
}

/// `[[upstreams]]`: a provider endpoint.
#[derive(Clone)]
pub struct Upstream {
    pub name: String,
    pub dialect: Dialect,
    /// Scheme, authority and an optional path prefix, without a trailing `/`.
    pub base_url: Uri,
    /// Where its requests name their model: the body (or Gemini's path), or Claude on Vertex
    /// AI's path.
    pub address: Address,
    /// The credential header this upstream gets (`x-api-key`, `x-goog-api-key` or
    /// `authorization`), if any.
    pub credential: Option<(HeaderName, HeaderValue)>,
    /// An OAuth access token sent as `Authorization: Bearer` (Vertex AI), fetched when needed.
    pub access_token: Option<Arc<AccessToken>>,
    /// The key itself, to redact wherever an upstream quotes it.
    pub api_key: Option<String>,
    /// Extra headers sent with every request (`anthropic-version`, `HTTP-Referer`...).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// How long to wait for the response headers of one attempt.
    pub headers_timeout: Duration,
}

// Keeps keys out of logs.
impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("dialect", &self.dialect)
            .field("address", &self.address)
            .field("base_url", &self.base_url)
            .field("access_token", &self.access_token)
            .field("credential", &self.credential.as_ref().map(|(n, _)| n))
            .field("headers_timeout", &self.headers_timeout)
            .finish_non_exhaustive()
    }
}

/// `[[models]]`: a model clients may ask for.
#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    pub upstream_model: String,
    pub prefill: Prefill,
    pub fallbacks: Vec<String>,
    /// Where a "prompt too long" 400 restarts.
    pub context_window_fallbacks: Vec<String>,
    /// Its own same-target retries and deadlines, where set.
    pub retries: Option<u32>,
    pub first_token_timeout: Option<Option<Duration>>,
    pub idle_timeout: Option<Option<Duration>>,
    pub hedge_after: Option<Option<Duration>>,
}

impl Config {
    /// The planner: what each model accepts and which models stand in for it.
    pub fn chain(&self) -> FallbackChain {
        let policy = &self.fallback.policy;
        let mut chain = FallbackChain::new()
            .when_no_prefill(self.fallback.when_no_prefill)
            .retries(policy.retries)
            .backoff(Backoff::new(policy.retry_base, policy.retry_cap))
            .retry_budget(RetryBudget::new(
                policy.retry_budget,
                Duration::from_secs(1),
            ));
        if let Some(failures) = policy.breaker_failures {
            chain = chain.circuit_breaker(Breaker::new(failures, policy.breaker_cooldown));
        }
        if let Some(text) = &self.fallback.instruction {
            chain = chain.instruction(text.clone());
        }
        for model in &self.models {
            // Each model speaks its upstream's dialect (a fallback of another dialect than the
            // client's gets the request translated), at its upstream's address.
            let upstream = &self.upstreams[model.upstream];
            let mut target = Target::new(model.name.clone())
                .prefill(model.prefill)
                .dialect(upstream.dialect)
                .at(upstream.address.clone());
            if let Some(retries) = model.retries {
                target = target.retries(retries);
            }
            if let Some(deadline) = model.first_token_timeout {
                target = target.first_token_timeout(deadline);
            }
            if let Some(idle) = model.idle_timeout {
                target = target.idle_timeout(idle);
            }
            if let Some(delay) = model.hedge_after {
                target = target.hedge_after(delay);
            }
            chain = chain.target(target);
            if !model.fallbacks.is_empty() {
                chain = chain.fallbacks(model.name.clone(), model.fallbacks.iter().cloned());
            }
            if !model.context_window_fallbacks.is_empty() {
                chain = chain.context_window_fallbacks(
                    model.name.clone(),
                    model.context_window_fallbacks.iter().cloned(),
                );
            }
        }
        chain
    }

    /// The layer, with `[fallback]`'s options, redacting every upstream's key.
    pub fn layer(&self) -> MidStreamFallbackLayer<FallbackChain> {
        MidStreamFallbackLayer::new(self.chain())
            .max_attempts(self.fallback.max_attempts)
            .idle_timeout(self.fallback.idle_timeout)
            .first_token_timeout(self.fallback.policy.first_token_timeout)
            .hedge_after(self.fallback.policy.hedge_after)
            .keep_alive(self.fallback.keep_alive)
            .max_request_bytes(self.fallback.max_request_bytes)
            .redact(self.redactor())
    }

    /// Takes every upstream's key (and anything key-like) out of what upstreams say.
    pub fn redactor(&self) -> Redactor {
        let fixed_tokens = self
            .upstreams
            .iter()
            .filter_map(|u| u.access_token.as_deref()?.given());
        self.upstreams
            .iter()
            .filter_map(|u| u.api_key.as_deref())
            .chain(fixed_tokens)
            .fold(Redactor::new(), Redactor::secret)
    }
}

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

// The file as written. Enumerations stay strings here so that a bad value is reported with
// the full path of its key, as the checks below do for everything else.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<String>,
    admin_listen: Option<String>,
    #[serde(default)]
    server: ServerFile,
    #[serde(default)]
    fallback: FallbackFile,
    #[serde(default)]
    upstreams: Vec<UpstreamFile>,
    #[serde(default)]
    models: Vec<ModelFile>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FallbackFile {
    max_attempts: Option<u32>,
    idle_timeout_ms: Option<u64>,
    keep_alive_ms: Option<u64>,
    when_no_prefill: Option<String>,
    instruction: Option<String>,
    max_request_bytes: Option<usize>,
    // The attempt policy (issue 11).
    first_token_timeout_ms: Option<u64>,
    hedge_after_ms: Option<u64>,
    retries: Option<u32>,
    retry_base_ms: Option<u64>,
    retry_cap_ms: Option<u64>,
    retry_budget_per_s: Option<u32>,
    breaker_failures: Option<u32>,
    breaker_cooldown_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ServerFile {
    max_connections: Option<usize>,
    header_read_timeout_ms: Option<u64>,
    request_body_timeout_ms: Option<u64>,
    request_body_deadline_ms: Option<u64>,
    keep_alive_timeout_ms: Option<u64>,
    max_concurrent_streams: Option<u32>,
    max_header_bytes: Option<usize>,
    shutdown_grace_ms: Option<u64>,
    max_request_bytes_held: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamFile {
    name: String,
    dialect: String,
    base_url: String,
    api_key_env: Option<String>,
    vertex: Option<VertexFile>,
    access_token_env: Option<String>,
    access_token_command: Option<Vec<String>>,
    access_token_refresh_s: Option<u64>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    headers_timeout_ms: Option<u64>,
}

/// `vertex = { project = "...", region = "..." }`: Claude on Vertex AI.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VertexFile {
    project: String,
    region: String,
    anthropic_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    name: String,
    upstream: String,
    upstream_model: Option<String>,
    prefill: Option<String>,
    #[serde(default)]
    fallbacks: Vec<String>,
    #[serde(default)]
    context_window_fallbacks: Vec<String>,
    retries: Option<u32>,
    first_token_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    hedge_after_ms: Option<u64>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Reads and checks the file at `path`; `env` looks up the variables named by `api_key_env`.
pub fn load(path: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{path}: cannot read the config file: {e}")))?;
    parse(&text, env).map_err(|e| ConfigError(format!("{path}: {e}")))
}

/// Checks a configuration given as TOML text.
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    // toml's message shows the line and names the offending key.
    let file: File = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
    let err = |key: String, msg: String| ConfigError(format!("{key}: {msg}"));

    let listen = file.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen: SocketAddr = listen.parse().map_err(|_| {
        err(
            "listen".into(),
            format!("`{listen}` is not an address and port such as \"127.0.0.1:8080\""),
        )
    })?;

    let admin_listen = match file.admin_listen.as_deref() {
        None => None,
        Some(text) => {
            let addr: SocketAddr = text.parse().map_err(|_| {
                err(
                    "admin_listen".into(),
                    format!("`{text}` is not an address and port such as \"127.0.0.1:9464\""),
                )
            })?;
            if addr == listen && addr.port() != 0 {
                return Err(err(
                    "admin_listen".into(),
                    "must differ from `listen`: clients must not reach the metrics".into(),
                ));
            }
            Some(addr)
        }
    };

    let mut warnings = Vec::new();
    let server = server(file.server).map_err(|(key, msg)| err(format!("server.{key}"), msg))?;

    let f = file.fallback;
    let max_attempts = f.max_attempts.unwrap_or(3);
    if max_attempts == 0 {
        return Err(err(
            "fallback.max_attempts".into(),
            "must be at least 1 (attempts in all, the first included)".into(),
        ));
    }
    let when_no_prefill = match f.when_no_prefill.as_deref() {
        None => WhenNoPrefill::Instruction,
        Some(s) => s
            .parse()
            .map_err(|e: String| err("fallback.when_no_prefill".into(), e))?,
    };
    let millis = |ms: Option<u64>, default: u64| match ms.unwrap_or(default) {
        0 => None,
        ms => Some(Duration::from_millis(ms)),
    };
    let retry_base = Duration::from_millis(f.retry_base_ms.unwrap_or(500));
    let retry_cap = Duration::from_millis(f.retry_cap_ms.unwrap_or(8_000));
    if retry_cap < retry_base {
        return Err(err(
            "fallback.retry_cap_ms".into(),
            format!(
                "must be at least retry_base_ms ({} ms)",
                retry_base.as_millis()
            ),
        ));
    }
    let breaker_failures = match f.breaker_failures.unwrap_or(0) {
        0 => None,
        n => Some(n),
    };
    let breaker_cooldown = Duration::from_millis(f.breaker_cooldown_ms.unwrap_or(30_000));
    if breaker_failures.is_some() && breaker_cooldown.is_zero() {
        return Err(err(
            "fallback.breaker_cooldown_ms".into(),
            "must be above 0 when breaker_failures is set".into(),
        ));
    }
    let fallback = Fallback {
        max_attempts,
        idle_timeout: millis(f.idle_timeout_ms, 60_000),
        keep_alive: millis(f.keep_alive_ms, 5_000),
        when_no_prefill,
        instruction: f.instruction,
        max_request_bytes: f.max_request_bytes.unwrap_or(4 << 20),
        policy: Policy {
            first_token_timeout: millis(f.first_token_timeout_ms, 60_000),
            hedge_after: millis(f.hedge_after_ms, 0),
            retries: f.retries.unwrap_or(0),
            retry_base,
            retry_cap,
            retry_budget: f.retry_budget_per_s.unwrap_or(20),
            breaker_failures,
            breaker_cooldown,
        },
    };
    if server.max_request_bytes_held < fallback.max_request_bytes {
        return Err(err(
            "server.max_request_bytes_held".into(),
            format!(
                "must be at least fallback.max_request_bytes ({}), or a request of that size \
                 could never be served",
                fallback.max_request_bytes
            ),
        ));
    }

    if file.upstreams.is_empty() {
        return Err(err(
            "upstreams".into(),
            "at least one [[upstreams]] entry is required".into(),
        ));
    }
    let mut upstreams: Vec<Upstream> = Vec::new();
    let mut upstream_index = HashMap::new();
    for (i, u) in file.upstreams.into_iter().enumerate() {
        let key = |field: &str| format!("upstreams[{i}] ({:?}).{field}", u.name);
        if upstream_index.insert(u.name.clone(), i).is_some() {
            return Err(err(key("name"), "another upstream has this name".into()));
        }
        let dialect = Dialect::from_name(&u.dialect).ok_or_else(|| {
            err(
                key("dialect"),
                format!(
                    "unknown dialect `{}`: expected \"anthropic\", \"openai-chat\", \"openai-responses\" or \"gemini\"",
                    u.dialect
                ),
            )
        })?;
        let base_url = base_url(&u.base_url).map_err(|m| err(key("base_url"), m))?;
        let address = match &u.vertex {
            None => Address::native(),
            Some(_) if dialect != Dialect::ANTHROPIC_MESSAGES => {
                return Err(err(
                    key("vertex"),
                    format!(
                        "Claude on Vertex AI speaks Anthropic Messages: set dialect = \"anthropic\", not `{}`",
                        u.dialect
                    ),
                ))
            }
            Some(v) => vertex_address(v).map_err(|(field, m)| err(key(&format!("vertex.{field}")), m))?,
        };
        let access_token = access_token(&u, env).map_err(|(field, m)| err(key(field), m))?;
        if address.is_native() != access_token.is_none() {
            return Err(if address.is_native() {
                err(
                    key("access_token_env"),
                    "an access token is for Claude on Vertex AI: add `vertex = { project, region }`, or use api_key_env".into(),
                )
            } else {
                err(
                    key("vertex"),
                    "Vertex AI needs an OAuth access token: set access_token_env or access_token_command (e.g. [\"gcloud\", \"auth\", \"print-access-token\"])".into(),
                )
            });
        }
        if !address.is_native() && u.api_key_env.is_some() {
            return Err(err(
                key("api_key_env"),
                "Vertex AI takes an access token, not an API key: use access_token_env or access_token_command".into(),
            ));
        }
        if base_url.path().trim_end_matches('/').ends_with("/v1") {
            warnings.push(format!(
                "{}: `{}` ends in /v1, and the gateway appends the client's whole path \
                 (/v1/messages, /v1/chat/completions): requests will go to .../v1/v1/...; \
                 leave /v1 out",
                key("base_url"),
                u.base_url
            ));
        }
        let (credential, api_key) = match &u.api_key_env {
            None => (None, None),
            Some(var) => {
                let value = env(var).filter(|v| !v.is_empty()).ok_or_else(|| {
                    err(
                        key("api_key_env"),
                        format!("the environment variable `{var}` is not set"),
                    )
                })?;
                let credential = credential(dialect, &value).ok_or_else(|| {
                    err(
                        key("api_key_env"),
                        format!("the value of `{var}` is not usable in an HTTP header"),
                    )
                })?;
                (Some(credential), Some(value))
            }
        };
        let mut headers = Vec::new();
        for (name, value) in &u.headers {
            let header_key = || key(&format!("headers.{name}"));
            let name = HeaderName::try_from(name.as_str())
                .map_err(|_| err(header_key(), "not a valid header name".into()))?;
            let value = HeaderValue::try_from(value.as_str())
                .map_err(|_| err(header_key(), "not a valid header value".into()))?;
            headers.push((name, value));
        }
        let headers_timeout = Duration::from_millis(u.headers_timeout_ms.unwrap_or(60_000));
        if headers_timeout.is_zero() {
            return Err(err(key("headers_timeout_ms"), "must be above 0".into()));
        }
        upstreams.push(Upstream {
            name: u.name,
            dialect,
            address,
            base_url,
            credential,
            access_token,
            api_key,
            headers,
            headers_timeout,
        });
    }

    if file.models.is_empty() {
        return Err(err(
            "models".into(),
            "at least one [[models]] entry is required".into(),
        ));
    }
    let mut models: Vec<Model> = Vec::new();
    let mut model_index = HashMap::new();
    for (i, m) in file.models.iter().enumerate() {
        let key = |field: &str| format!("models[{i}] ({:?}).{field}", m.name);
        if model_index.insert(m.name.as_str(), i).is_some() {
            return Err(err(key("name"), "another model has this name".into()));
        }
        let upstream = *upstream_index.get(&m.upstream).ok_or_else(|| {
            let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
            err(
                key("upstream"),
                format!(
                    "no upstream is named `{}` (known: {})",
                    m.upstream,
                    known.join(", ")
                ),
            )
        })?;
        let dialect = upstreams[upstream].dialect;
        let prefill: Prefill = match m.prefill.as_deref() {
            None => Prefill::None,
            Some(s) => s.parse().map_err(|e: String| err(key("prefill"), e))?,
        };
        if (dialect == Dialect::ANTHROPIC_MESSAGES || dialect == Dialect::GEMINI)
            && !matches!(prefill, Prefill::None | Prefill::Assistant)
        {
            return Err(err(
                key("prefill"),
                format!(
                    "`{}` is not a prefill of {}: use \"assistant\" or \"none\"",
                    prefill.name(),
                    dialect.name()
                ),
            ));
        }
        models.push(Model {
            name: m.name.clone(),
            upstream,
            upstream_model: m.upstream_model.clone().unwrap_or_else(|| m.name.clone()),
            prefill,
            fallbacks: m.fallbacks.clone(),
            context_window_fallbacks: m.context_window_fallbacks.clone(),
            retries: m.retries,
            first_token_timeout: m.first_token_timeout_ms.map(|ms| millis(Some(ms), 0)),
            idle_timeout: m.idle_timeout_ms.map(|ms| millis(Some(ms), 0)),
            hedge_after: m.hedge_after_ms.map(|ms| millis(Some(ms), 0)),
        });
    }

    // Fallbacks are checked once every model is known, so they may refer forward.
    for (i, m) in models.iter().enumerate() {
        let dialect = upstreams[m.upstream].dialect;
        let lists = [
            ("fallbacks", &m.fallbacks),
            ("context_window_fallbacks", &m.context_window_fallbacks),
        ];
        for (j, list, target) in lists
            .iter()
            .flat_map(|(list, l)| l.iter().enumerate().map(move |(j, t)| (j, *list, t)))
        {
            let key = format!("models[{i}] ({:?}).{list}[{j}]", m.name);
            let Some(&t) = model_index.get(target.as_str()) else {
                return Err(err(
                    key,
                    format!(
                        "`{target}` is not a model of this config: add a [[models]] entry for it"
                    ),
                ));
            };
            // A model may list itself: one more try on it, as `FallbackChain` allows. A
            // fallback of another dialect gets the request translated, where the layer can.
            let target_dialect = upstreams[models[t].upstream].dialect;
            if !dialect.translates_to(target_dialect) {
                return Err(err(
                    key,
                    format!(
                        "`{target}` speaks {} and `{}` speaks {}: requests are not translated \
                         between these dialects",
                        target_dialect.name(),
                        m.name,
                        dialect.name()
                    ),
                ));
            }
        }
    }

    Ok(Config {
        listen,
        admin_listen,
        server,
        fallback,
        upstreams,
        models,
        warnings,
    })
}

/// `[server]`, checked; an error names the key within the section.
fn server(f: ServerFile) -> Result<Server, (&'static str, String)> {
    let default = Server::default();
    let millis = |ms: Option<u64>, default: Option<Duration>| match ms {
        None => default,
        Some(0) => None,
        Some(ms) => Some(Duration::from_millis(ms)),
    };
    let max_connections = f.max_connections.unwrap_or(default.max_connections);
    if max_connections == 0 {
        return Err(("max_connections", "must be at least 1".into()));
    }
    let max_concurrent_streams = f
        .max_concurrent_streams
        .unwrap_or(default.max_concurrent_streams);
    if max_concurrent_streams == 0 {
        return Err(("max_concurrent_streams", "must be at least 1".into()));
    }
    let max_header_bytes = f.max_header_bytes.unwrap_or(default.max_header_bytes);
    if !(8192..=u32::MAX as usize).contains(&max_header_bytes) {
        return Err((
            "max_header_bytes",
            "must be at least 8192 (hyper's smallest read buffer)".into(),
        ));
    }
    Ok(Server {
        max_connections,
        header_read_timeout: millis(f.header_read_timeout_ms, default.header_read_timeout),
        request_body_timeout: millis(f.request_body_timeout_ms, default.request_body_timeout),
        request_body_deadline: millis(f.request_body_deadline_ms, default.request_body_deadline),
        keep_alive_timeout: millis(f.keep_alive_timeout_ms, default.keep_alive_timeout),
        max_concurrent_streams,
        max_header_bytes,
        shutdown_grace: f
            .shutdown_grace_ms
            .map_or(default.shutdown_grace, Duration::from_millis),
        max_request_bytes_held: f
            .max_request_bytes_held
            .unwrap_or(default.max_request_bytes_held),
    })
}

fn base_url(s: &str) -> Result<Uri, String> {
    let uri: Uri = s
        .trim_end_matches('/')
        .parse()
        .map_err(|e| format!("`{s}` is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("`{s}` must start with http:// or https://")),
    }
    if uri.authority().is_none() {
        return Err(format!("`{s}` has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("`{s}` must not have a query"));
    }
    Ok(uri)
}

/// `vertex = {...}`, checked: the project and region are path segments of every request.
fn vertex_address(v: &VertexFile) -> Result<Address, (&'static str, String)> {
    // Google's project ids and region names: lowercase letters, digits, hyphens.
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if !plain(&v.project) {
        return Err((
            "project",
            format!(
                "`{}` is not a Google Cloud project id (lowercase letters, digits, hyphens)",
                v.project
            ),
        ));
    }
    if !plain(&v.region) {
        return Err((
            "region",
            format!(
                "`{}` is not a region such as \"us-east5\", \"europe-west1\" or \"global\"",
                v.region
            ),
        ));
    }
    let mut address = Address::vertex(v.project.as_str(), v.region.as_str());
    if let Some(version) = &v.anthropic_version {
        if version.is_empty() {
            return Err(("anthropic_version", "must not be empty".into()));
        }
        address = address.anthropic_version(version.as_str());
    }
    Ok(address)
}

/// `access_token_env` or `access_token_command` (with `access_token_refresh_s`), checked.
fn access_token(
    u: &UpstreamFile,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Arc<AccessToken>>, (&'static str, String)> {
    match (&u.access_token_env, &u.access_token_command) {
        (Some(_), Some(_)) => Err((
            "access_token_command",
            "set access_token_env or access_token_command, not both".into(),
        )),
        (Some(var), None) => {
            let value = env(var).filter(|v| !v.is_empty()).ok_or_else(|| {
                (
                    "access_token_env",
                    format!("the environment variable `{var}` is not set"),
                )
            })?;
            let token = AccessToken::fixed(value.trim()).ok_or_else(|| {
                (
                    "access_token_env",
                    format!("the value of `{var}` is not usable in an HTTP header"),
                )
            })?;
            Ok(Some(Arc::new(token)))
        }
        (None, Some(argv)) => {
            if argv.first().map_or(true, |p| p.is_empty()) {
                return Err((
                    "access_token_command",
                    "must name a program, e.g. [\"gcloud\", \"auth\", \"print-access-token\"]"
                        .into(),
                ));
            }
            let refresh = match u.access_token_refresh_s {
                None => DEFAULT_REFRESH,
                Some(0) => return Err(("access_token_refresh_s", "must be above 0".into())),
                Some(s) => Duration::from_secs(s),
            };
            Ok(Some(Arc::new(AccessToken::command(argv.clone(), refresh))))
        }
        (None, None) if u.access_token_refresh_s.is_some() => Err((
            "access_token_refresh_s",
            "is for access_token_command, which is not set".into(),
        )),
        (None, None) => Ok(None),
    }
}

/// The header a key goes in: `x-api-key` for Anthropic, `x-goog-api-key` for Gemini,
/// `Authorization: Bearer` otherwise.
fn credential(dialect: Dialect, key: &str) -> Option<(HeaderName, HeaderValue)> {
    let (name, value) = if dialect == Dialect::ANTHROPIC_MESSAGES {
        (HeaderName::from_static("x-api-key"), key.to_owned())
    } else if dialect == Dialect::GEMINI {
        (HeaderName::from_static("x-goog-api-key"), key.to_owned())
    } else {
        (http::header::AUTHORIZATION, format!("Bearer {key}"))
    };
    let mut value = HeaderValue::try_from(value).ok()?;
    value.set_sensitive(true);
    Some((name, value))
}
