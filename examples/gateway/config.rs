//! The gateway's configuration: the TOML file, checked whole before anything listens.
//!
//! Every error names the key it is about (`models[1] "gpt-4o".fallbacks[0]: ...`), so that a
//! typo is found from the message alone.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::Uri;
use serde::Deserialize;
use tower_midstream::{Dialect, FallbackChain, MidStreamFallbackLayer, Prefill, WhenNoPrefill};

/// A configuration that passed every check.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub fallback: Fallback,
    pub upstreams: Vec<Upstream>,
    pub models: Vec<Model>,
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
}

/// `[[upstreams]]`: a provider endpoint.
#[derive(Clone)]
pub struct Upstream {
    pub name: String,
    pub dialect: Dialect,
    /// Scheme, authority and an optional path prefix, without a trailing `/`.
    pub base_url: Uri,
    /// The credential header this upstream gets (`x-api-key` or `authorization`), if any.
    pub credential: Option<(HeaderName, HeaderValue)>,
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
            .field("base_url", &self.base_url)
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
}

impl Config {
    /// The planner: what each model accepts and which models stand in for it.
    pub fn chain(&self) -> FallbackChain {
        let mut chain = FallbackChain::new().when_no_prefill(self.fallback.when_no_prefill);
        if let Some(text) = &self.fallback.instruction {
            chain = chain.instruction(text.clone());
        }
        for model in &self.models {
            chain = chain.model(model.name.clone(), model.prefill);
            if !model.fallbacks.is_empty() {
                chain = chain.fallbacks(model.name.clone(), model.fallbacks.iter().cloned());
            }
        }
        chain
    }

    /// The layer, with `[fallback]`'s options.
    pub fn layer(&self) -> MidStreamFallbackLayer<FallbackChain> {
        MidStreamFallbackLayer::new(self.chain())
            .max_attempts(self.fallback.max_attempts)
            .idle_timeout(self.fallback.idle_timeout)
            .keep_alive(self.fallback.keep_alive)
            .max_request_bytes(self.fallback.max_request_bytes)
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamFile {
    name: String,
    dialect: String,
    base_url: String,
    api_key_env: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    headers_timeout_ms: Option<u64>,
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
    let fallback = Fallback {
        max_attempts,
        idle_timeout: millis(f.idle_timeout_ms, 60_000),
        keep_alive: millis(f.keep_alive_ms, 5_000),
        when_no_prefill,
        instruction: f.instruction,
        max_request_bytes: f.max_request_bytes.unwrap_or(4 << 20),
    };

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
                    "unknown dialect `{}`: expected \"anthropic\" or \"openai-chat\"",
                    u.dialect
                ),
            )
        })?;
        let base_url = base_url(&u.base_url).map_err(|m| err(key("base_url"), m))?;
        let credential = match &u.api_key_env {
            None => None,
            Some(var) => {
                let value = env(var).filter(|v| !v.is_empty()).ok_or_else(|| {
                    err(
                        key("api_key_env"),
                        format!("the environment variable `{var}` is not set"),
                    )
                })?;
                Some(credential(dialect, &value).ok_or_else(|| {
                    err(
                        key("api_key_env"),
                        format!("the value of `{var}` is not usable in an HTTP header"),
                    )
                })?)
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
            base_url,
            credential,
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
        if dialect == Dialect::ANTHROPIC_MESSAGES
            && !matches!(prefill, Prefill::None | Prefill::Assistant)
        {
            return Err(err(
                key("prefill"),
                format!(
                    "`{}` is not a prefill of Anthropic Messages: use \"assistant\" or \"none\"",
                    prefill.name()
                ),
            ));
        }
        models.push(Model {
            name: m.name.clone(),
            upstream,
            upstream_model: m.upstream_model.clone().unwrap_or_else(|| m.name.clone()),
            prefill,
            fallbacks: m.fallbacks.clone(),
        });
    }

    // Fallbacks are checked once every model is known, so they may refer forward.
    for (i, m) in models.iter().enumerate() {
        let dialect = upstreams[m.upstream].dialect;
        for (j, target) in m.fallbacks.iter().enumerate() {
            let key = format!("models[{i}] ({:?}).fallbacks[{j}]", m.name);
            let Some(&t) = model_index.get(target.as_str()) else {
                return Err(err(
                    key,
                    format!(
                        "`{target}` is not a model of this config: add a [[models]] entry for it"
                    ),
                ));
            };
            // A model may list itself: one more try on it, as `FallbackChain` allows.
            let target_dialect = upstreams[models[t].upstream].dialect;
            if target_dialect != dialect {
                return Err(err(
                    key,
                    format!(
                        "`{target}` speaks {} but `{}` speaks {}: a fallback must speak its primary's dialect",
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
        fallback,
        upstreams,
        models,
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

/// The header a key goes in: `x-api-key` for Anthropic, `Authorization: Bearer` otherwise.
fn credential(dialect: Dialect, key: &str) -> Option<(HeaderName, HeaderValue)> {
    let (name, value) = if dialect == Dialect::ANTHROPIC_MESSAGES {
        (HeaderName::from_static("x-api-key"), key.to_owned())
    } else {
        (http::header::AUTHORIZATION, format!("Bearer {key}"))
    };
    let mut value = HeaderValue::try_from(value).ok()?;
    value.set_sensitive(true);
    Some((name, value))
}
