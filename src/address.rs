//! Where a request names the model it is for: the body's `model`, or the URL path.
//!
//! Most APIs read the model from the body. Gemini's own API reads it from the path
//! (`/v1beta/models/{model}:streamGenerateContent`), and so does Claude on Vertex AI
//! (`…/publishers/anthropic/models/{model}:streamRawPredict`), whose body then has no `model`
//! and carries an `anthropic_version`. A request is re-addressed in two steps: where the
//! client's request names its model is read once ([`Named`], kept in the request's index),
//! and a [`Placement`] says what the request for a target changes (its path, the body's
//! `model`, keys the address adds or takes away).
//!
//! A model name is never an address: placed in a path it is one segment, every byte outside
//! the unreserved set (and `@`, which Vertex model versions use) percent-encoded, so that
//! `../`, `?`, `#` or `%2F` in a name cannot add a segment, a query or a fragment, nor reach
//! the host.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use crate::dialect::Dialect;
use crate::json::{string_literal, RequestIndex, Splice};
use crate::strategy::RewriteError;

/// Where requests for a target name their model, and what else they carry for it.
///
/// The default, [`Address::native`], is the dialect's own: the body's `model` for Anthropic
/// Messages and OpenAI Chat Completions, the path for Gemini. [`Address::vertex`] is Claude
/// on Vertex AI: the same Anthropic Messages, with the model in the URL.
///
/// ```
/// use tower_midstream::{Address, FallbackChain, Prefill, Target};
///
/// // Claude on the Anthropic API first; the same model on Vertex AI when that API is down.
/// let chain = FallbackChain::new()
///     .target(Target::new("claude-sonnet-4-5"))
///     .target(
///         Target::new("claude-sonnet-4-5@20250929")
///             .prefill(Prefill::Assistant)
///             .at(Address::vertex("my-project", "us-east5")),
///     )
///     .fallbacks("claude-sonnet-4-5", ["claude-sonnet-4-5@20250929"]);
/// # let _ = chain;
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Address(Kind);

#[derive(Debug, Clone, PartialEq, Eq, Default)]
enum Kind {
    #[default]
    Native,
    Vertex(Vertex),
}

/// Claude on Vertex AI: the project and region in the path, the body's `anthropic_version`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Vertex {
    project: Arc<str>,
    region: Arc<str>,
    anthropic_version: Arc<str>,
}

/// The `anthropic_version` a request to Claude on Vertex AI carries unless told otherwise: the
/// value Google's documentation gives. (anthropic-python 2.x sends `2026-10-21`; a request that
/// already carries a value keeps it.)
pub const VERTEX_ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

impl Address {
    /// The dialect's own place for the model: the body's `model` (Anthropic Messages, OpenAI
    /// Chat Completions), or the path (Gemini: `/v1beta/models/{model}:…`, the client's API
    /// version kept). The default.
    pub fn native() -> Self {
        Address(Kind::Native)
    }

    /// Claude on Vertex AI, in `project` and `region` (`us-east5`, `europe-west1`, `global`):
    /// `POST /v1/projects/{project}/locations/{region}/publishers/anthropic/models/{model}:streamRawPredict`
    /// (`:rawPredict` when the request does not stream), the body without `model` and with
    /// `anthropic_version` ([`VERTEX_ANTHROPIC_VERSION`] unless the request has one, or
    /// [`anthropic_version`](Self::anthropic_version) says otherwise), no `anthropic-version`
    /// header. For Anthropic Messages requests.
    pub fn vertex(project: impl Into<Arc<str>>, region: impl Into<Arc<str>>) -> Self {
        Address(Kind::Vertex(Vertex {
            project: project.into(),
            region: region.into(),
            anthropic_version: VERTEX_ANTHROPIC_VERSION.into(),
        }))
    }

    /// The `anthropic_version` a Vertex request carries when the client's has none (no effect
    /// on other addresses).
    pub fn anthropic_version(mut self, version: impl Into<Arc<str>>) -> Self {
        if let Kind::Vertex(v) = &mut self.0 {
            v.anthropic_version = version.into();
        }
        self
    }

    /// Whether this is the dialect's own place ([`Address::native`]).
    pub fn is_native(&self) -> bool {
        matches!(self.0, Kind::Native)
    }

    /// The Vertex AI project and region, for a Vertex address.
    pub fn vertex_location(&self) -> Option<(&str, &str)> {
        match &self.0 {
            Kind::Vertex(v) => Some((&v.project, &v.region)),
            Kind::Native => None,
        }
    }

    /// The dialect every request to this address is in, where the address implies one
    /// (Claude on Vertex AI: Anthropic Messages); `None` for the dialect's own.
    pub fn dialect(&self) -> Option<Dialect> {
        match self.0 {
            Kind::Native => None,
            Kind::Vertex(_) => Some(Dialect::ANTHROPIC_MESSAGES),
        }
    }

    /// `native` or `vertex`, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self.0 {
            Kind::Native => "native",
            Kind::Vertex(_) => "vertex",
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Native => f.write_str("native"),
            Kind::Vertex(v) => write!(f, "vertex ({}, {})", v.project, v.region),
        }
    }
}

/// Where the request as the client sent it names its model.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum Named {
    /// The body's `model` (or nothing at all).
    #[default]
    Body,
    /// The path, at `model` (percent-encoded as it came), in the dialect's own form (Gemini).
    NativePath { model: Range<usize> },
    /// A Claude-on-Vertex path.
    Vertex {
        model: Range<usize>,
        project: String,
        region: String,
    },
}

impl Named {
    /// Where a request of `dialect` to `path` names its model.
    pub(crate) fn of(dialect: Dialect, path: &str) -> Named {
        if let Some(model) = dialect.spec().rules.model_in_path(path) {
            return Named::NativePath { model };
        }
        if dialect == Dialect::ANTHROPIC_MESSAGES {
            if let Some(vertex) = vertex_path(path) {
                return vertex;
            }
        }
        Named::Body
    }

    /// The model named in `path`, percent-decoded; `None` if it is not in the path, or does
    /// not decode to UTF-8 text.
    pub(crate) fn path_model(&self, path: &str) -> Option<String> {
        let range = match self {
            Named::Body => return None,
            Named::NativePath { model } | Named::Vertex { model, .. } => model,
        };
        percent_decode(path.get(range.clone())?)
    }

    /// The address the client's own request is at.
    pub(crate) fn address(&self) -> Address {
        match self {
            Named::Vertex {
                project, region, ..
            } => Address::vertex(project.as_str(), region.as_str()),
            Named::Body | Named::NativePath { .. } => Address::native(),
        }
    }
}

/// `/…/v1/projects/{p}/locations/{r}/publishers/anthropic/models/{m}:{streamRawPredict|rawPredict}`:
/// the model's range and the project and region. Vertex's own `count-tokens` pseudo-model names
/// no model (its body does).
fn vertex_path(path: &str) -> Option<Named> {
    let (head, method) = path.rsplit_once(':')?;
    if !matches!(method, "streamRawPredict" | "rawPredict") {
        return None;
    }
    let at = head.find("/projects/")?;
    let segments: Vec<&str> = head[at + 1..].split('/').collect();
    let ["projects", project, "locations", region, "publishers", "anthropic", "models", model] =
        segments.as_slice()
    else {
        return None;
    };
    if project.is_empty() || region.is_empty() || model.is_empty() || *model == "count-tokens" {
        return None;
    }
    let start = head.len() - model.len();
    Some(Named::Vertex {
        model: start..head.len(),
        project: percent_decode(project)?,
        region: percent_decode(region)?,
    })
}

/// What a request for a target changes, by address: computed from where the client's request
/// names its model and where the target wants it.
#[derive(Debug)]
pub(crate) struct Placement {
    /// The new path and query, or `None` to keep the client's.
    pub(crate) path: Option<String>,
    model: ModelEdit,
    /// The client's request names its model in the body, so the body must have one.
    model_in_body: bool,
    /// `anthropic_version`: added if the body has none (`Some`), or taken out (`None`);
    /// untouched when the address has no say.
    anthropic_version: Option<Option<Arc<str>>>,
    /// Request headers the target must not get.
    pub(crate) drop_headers: &'static [&'static str],
}

#[derive(Debug)]
enum ModelEdit {
    /// Write this name into the body's `model`, adding the key if it has none.
    Set(String),
    /// The body must have no `model`.
    Remove,
    /// The body has no say: leave it.
    Keep,
}

impl Placement {
    /// What sending the client's request (`dialect`, to `uri`, named as `named`) to `model`
    /// at `address` changes. A path the client's request names its model in keeps its query
    /// (Gemini's `alt=sse`); a path made anew has none.
    pub(crate) fn new(
        dialect: Dialect,
        uri: &http::Uri,
        named: &Named,
        model: &str,
        address: &Address,
        body_stream: bool,
    ) -> Result<Placement, RewriteError> {
        let body_model = !dialect.spec().request.model.is_empty();
        match &address.0 {
            Kind::Native => {
                let path = match named {
                    // Gemini: the client's path, its model segment replaced.
                    Named::NativePath { model: range } => {
                        let mut path = replace_segment(uri.path(), range, model);
                        if let Some(query) = uri.query() {
                            path.push('?');
                            path.push_str(query);
                        }
                        Some(path)
                    }
                    // From Vertex back to the dialect's own endpoint.
                    Named::Vertex { .. } => Some(format!("/v1{}", dialect.spec().path)),
                    Named::Body => None,
                };
                let leaving_vertex = matches!(named, Named::Vertex { .. });
                Ok(Placement {
                    path,
                    model_in_body: body_model && *named == Named::Body,
                    model: if body_model {
                        ModelEdit::Set(model.to_owned())
                    } else {
                        ModelEdit::Keep
                    },
                    anthropic_version: leaving_vertex.then_some(None),
                    drop_headers: &[],
                })
            }
            Kind::Vertex(vertex) => {
                if dialect != Dialect::ANTHROPIC_MESSAGES {
                    return Err(RewriteError::new(format!(
                        "Claude on Vertex AI speaks Anthropic Messages, not {}",
                        dialect.name()
                    )));
                }
                let method = if body_stream {
                    "streamRawPredict"
                } else {
                    "rawPredict"
                };
                Ok(Placement {
                    path: Some(format!(
                        "/v1/projects/{}/locations/{}/publishers/anthropic/models/{}:{method}",
                        encode_segment(&vertex.project),
                        encode_segment(&vertex.region),
                        encode_segment(model),
                    )),
                    model: ModelEdit::Remove,
                    model_in_body: *named == Named::Body,
                    anthropic_version: Some(Some(vertex.anthropic_version.clone())),
                    drop_headers: &["anthropic-version"],
                })
            }
        }
    }

    /// Writes the body's part of the placement into `splice` (the body `index` describes).
    pub(crate) fn edit_body(
        &self,
        splice: &mut Splice<'_>,
        index: &RequestIndex,
        model_key: &str,
    ) -> Result<(), RewriteError> {
        if self.model_in_body && index.model.is_none() {
            return Err(RewriteError::new(format!(
                "the request has no `{model_key}`"
            )));
        }
        let version = index.member("anthropic_version");
        // Keys are added before any is taken out, so that the object keeps a member.
        match (&self.anthropic_version, version) {
            (Some(Some(wanted)), None) => match (&self.model, &index.model) {
                // The body's `model` makes way for the version: one edit, no commas to mend.
                (ModelEdit::Remove, Some(m)) => {
                    let mut with = string_literal("anthropic_version").into_bytes();
                    with.push(b':');
                    with.extend_from_slice(string_literal(wanted).as_bytes());
                    splice.replace(m.whole.clone(), with);
                    return Ok(());
                }
                _ => splice.add_key("anthropic_version", string_literal(wanted).as_bytes()),
            },
            (Some(None), Some(v)) => {
                if let (ModelEdit::Set(name), None) = (&self.model, &index.model) {
                    // The version makes way for the model the native address wants.
                    let mut with = string_literal(model_key).into_bytes();
                    with.push(b':');
                    with.extend_from_slice(string_literal(name).as_bytes());
                    splice.replace(v.whole.clone(), with);
                    return Ok(());
                }
                splice.remove(v);
            }
            _ => {}
        }
        match (&self.model, &index.model) {
            (ModelEdit::Set(name), Some(m)) => {
                splice.replace(m.value.clone(), string_literal(name).into_bytes())
            }
            (ModelEdit::Set(name), None) => {
                splice.add_key(model_key, string_literal(name).as_bytes())
            }
            (ModelEdit::Remove, Some(m)) => splice.remove(m),
            (ModelEdit::Remove, None) | (ModelEdit::Keep, _) => {}
        }
        Ok(())
    }
}

/// `path` with the bytes at `range` replaced by `model`, encoded as one segment.
fn replace_segment(path: &str, range: &Range<usize>, model: &str) -> String {
    let (head, tail) = (
        path.get(..range.start).unwrap_or(""),
        path.get(range.end..).unwrap_or(""),
    );
    format!("{head}{}{tail}", encode_segment(model))
}

/// `name` as one path segment: RFC 3986 unreserved bytes and `@` as they are, every other
/// byte percent-encoded, so that no name adds a segment, a query or a fragment.
pub(crate) fn encode_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    // A segment of dots alone would be read as `.` or `..`: there is always a method after a
    // model here, but a name is encoded the same wherever it goes.
    if out.bytes().all(|b| b == b'.') {
        out = out.replace('.', "%2E");
    }
    out
}

/// The text of a percent-encoded path segment; `None` for a bad escape or bytes that are not
/// UTF-8.
pub(crate) fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_placed_in_a_path_is_always_one_segment() {
        for hostile in [
            "../../v1/other",
            "a?key=1",
            "a#frag",
            "a%2Fb",
            "a/b",
            "x@evil.example",
            "..",
            ".",
            "a b\r\nHost: evil",
            "模型",
        ] {
            let segment = encode_segment(hostile);
            assert!(
                segment.bytes().all(|b| b.is_ascii_alphanumeric()
                    || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@' | b'%')),
                "{hostile} -> {segment}"
            );
            assert!(segment != "." && segment != "..", "{hostile} -> {segment}");
            assert_eq!(percent_decode(&segment).as_deref(), Some(hostile));
            let uri: http::Uri = format!("https://aiplatform.example/v1/models/{segment}:x")
                .parse()
                .unwrap();
            assert_eq!(uri.host(), Some("aiplatform.example"), "{hostile}");
            assert_eq!(uri.query(), None, "{hostile}");
            assert_eq!(uri.path().split('/').count(), 4, "{hostile}");
        }
        assert_eq!(
            encode_segment("claude-sonnet-4-5@20250929"),
            "claude-sonnet-4-5@20250929"
        );
    }

    #[test]
    fn percent_decoding_refuses_what_is_not_text() {
        assert_eq!(percent_decode("a%2fb").as_deref(), Some("a/b"));
        for bad in ["%", "%2", "%zz", "%ff", "a%C3"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_vertex_path_names_its_model_project_and_region() {
        let path = "/v1/projects/my-proj/locations/us-east5/publishers/anthropic/models/claude-x%4020250929:streamRawPredict";
        let named = Named::of(Dialect::ANTHROPIC_MESSAGES, path);
        assert_eq!(named.path_model(path).as_deref(), Some("claude-x@20250929"));
        assert_eq!(named.address(), Address::vertex("my-proj", "us-east5"));
        for other in [
            "/v1/messages",
            "/v1/projects/p/locations/r/publishers/google/models/m:streamRawPredict",
            "/v1/projects/p/locations/r/publishers/anthropic/models/m:predict",
            "/v1/projects/p/locations/r/publishers/anthropic/models/count-tokens:rawPredict",
            "/v1/projects//locations/r/publishers/anthropic/models/m:rawPredict",
            "/v1/projects/p/locations/r/publishers/anthropic/models/a/b:rawPredict",
        ] {
            assert_eq!(
                Named::of(Dialect::ANTHROPIC_MESSAGES, other),
                Named::Body,
                "{other}"
            );
        }
        assert_eq!(Named::of(Dialect::OPENAI_CHAT, path), Named::Body);
    }
}
