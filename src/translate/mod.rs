//! Requests across dialects: the client's request read into a [`Conversation`] (in no wire
//! format's terms), written in the target's dialect, so that a fallback may be another
//! provider's model. The stream comes back through the same core as any other (the attempt's
//! decoder, the client's encoder: see `crate::relay`); what is here is the request.
//!
//! Each dialect has a reader and a writer ([`Format`]). A reader refuses what its dialect can
//! say and no other can carry ([`Untranslatable`]): a request that needs it is never sent to a
//! target of another dialect, and the planner moves on. What it drops instead changes how the
//! answer is made, not what a valid answer is (caching hints, a user id, sampling knobs that
//! only one provider has); the crate documentation lists both.
//!
//! A new dialect is a file here with its `Format`, and one line in [`format`].

mod anthropic;
mod conversation;
mod gemini;
pub(crate) mod ids;
mod openai;
mod openai_chat;
mod openai_responses;

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::dialect::Dialect;
use crate::strategy::Prefill;

pub(crate) use conversation::*;

/// Something a request carries that the target's dialect has no form for; or a request this
/// reader cannot read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Untranslatable(pub(crate) Cow<'static, str>);

impl Untranslatable {
    pub(crate) fn new(why: impl Into<Cow<'static, str>>) -> Self {
        Untranslatable(why.into())
    }
}

impl fmt::Display for Untranslatable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A dialect's requests, read and written.
pub(crate) trait Format: Sync {
    /// The request `body` as a conversation, or what in it no other dialect can carry.
    fn read(&self, body: &[u8]) -> Result<Conversation, Untranslatable>;

    /// `conversation` as a streaming request for `model`. A conversation that ends with an
    /// assistant turn is continued in the form `prefill` names (the target's).
    fn write(
        &self,
        conversation: &Conversation,
        model: &str,
        prefill: Prefill,
    ) -> Result<Vec<u8>, Untranslatable>;
}

/// The reader and writer of `dialect`'s requests, if it has them.
fn format(dialect: Dialect) -> Option<&'static dyn Format> {
    match dialect.name() {
        "anthropic" => Some(&anthropic::Messages),
        "openai-chat" => Some(&openai_chat::Chat),
        "openai-responses" => Some(&openai_responses::Responses),
        "gemini" => Some(&gemini::GenerateContent),
        _ => None,
    }
}

impl Dialect {
    /// Whether a request in this dialect can be sent to a target that speaks `to`: the same
    /// dialect, or one the request can be translated into (Anthropic Messages, OpenAI Chat
    /// Completions, OpenAI Responses and Gemini, each to each). What a given request carries may
    /// still keep it from a target
    /// ([`Failure::cannot_send_to`](crate::Failure::cannot_send_to)).
    ///
    /// ```
    /// use tower_midstream::Dialect;
    ///
    /// assert!(Dialect::ANTHROPIC_MESSAGES.translates_to(Dialect::OPENAI_CHAT));
    /// assert!(Dialect::OPENAI_CHAT.translates_to(Dialect::OPENAI_CHAT));
    /// assert!(Dialect::GEMINI.translates_to(Dialect::ANTHROPIC_MESSAGES));
    /// assert!(Dialect::OPENAI_RESPONSES.translates_to(Dialect::ANTHROPIC_MESSAGES));
    /// assert!(Dialect::OPENAI_CHAT.translates_to(Dialect::OPENAI_RESPONSES));
    /// assert!(Dialect::GEMINI.translates_to(Dialect::OPENAI_RESPONSES));
    /// ```
    pub fn translates_to(self, to: Dialect) -> bool {
        self == to || (format(self).is_some() && format(to).is_some())
    }
}

/// The client's request `body` (in `from`) as a request of `to` for `model`, whose own prefill
/// form is `prefill`; or why it cannot be.
pub(crate) fn translate(
    from: Dialect,
    to: Dialect,
    body: &[u8],
    model: &str,
    prefill: Prefill,
) -> Result<Bytes, Untranslatable> {
    let (reader, writer) = match (format(from), format(to)) {
        (Some(r), Some(w)) => (r, w),
        (None, _) => return Err(no_translation(from)),
        (_, None) => return Err(no_translation(to)),
    };
    let conversation = reader.read(body)?;
    if !conversation.stream {
        return Err(Untranslatable::new(
            "the request is not streamed (only event streams are translated back)",
        ));
    }
    if conversation.ends_with_assistant() && prefill == Prefill::None {
        return Err(Untranslatable::new(
            "the request ends with an assistant message to continue, and the target does not \
             continue one (no prefill)",
        ));
    }
    writer.write(&conversation, model, prefill).map(Bytes::from)
}

fn no_translation(dialect: Dialect) -> Untranslatable {
    Untranslatable::new(format!(
        "requests of the {} dialect are not translated yet",
        dialect.name()
    ))
}

/// Points `request` at `to`'s endpoint: a path ending in `from`'s (`/v1/messages`) ends in
/// `to`'s instead (`/v1/chat/completions`), the query kept. A dialect that names its model in
/// the path (Gemini) gets its own path for `model` (`/v1beta/models/{model}:streamGenerateContent?alt=sse`),
/// and a request leaving one gets `/v1` and `to`'s endpoint, without the query (`alt=sse` is
/// Gemini's). Any other path is left as it is: the inner service routes by
/// [`Attempt::dialect`](crate::Attempt::dialect).
pub(crate) fn set_endpoint<B>(
    request: &mut http::Request<B>,
    from: Dialect,
    to: Dialect,
    model: &str,
) {
    let uri = request.uri();
    let path = uri.path();
    let path_and_query = if to == Dialect::GEMINI {
        // v1beta: where `parametersJsonSchema` is read (the JS client's default version).
        format!(
            "/v1beta/models/{}{}?alt=sse",
            crate::address::encode_segment(model),
            to.spec().path
        )
    } else if from.spec().rules.model_in_path(path).is_some() {
        format!("/v1{}", to.spec().path)
    } else {
        let trimmed = path.trim_end_matches('/');
        let Some(base) = trimmed.strip_suffix(from.spec().path) else {
            return;
        };
        let mut path_and_query = format!("{base}{}", to.spec().path);
        if let Some(query) = uri.query() {
            path_and_query.push('?');
            path_and_query.push_str(query);
        }
        path_and_query
    };
    let mut parts = uri.clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
}

/// The parameters of the request `body`: the members of its top-level object, in order, each
/// once (a key twice is refused: a client might read either), but those that are null (they
/// read as absent) and `model` (the target's name replaces it).
fn parameters(body: &[u8]) -> Result<Vec<(Cow<'_, str>, &RawValue)>, Untranslatable> {
    let mut out = members(body)?;
    out.retain(|(key, value)| key != "model" && !is_null(value));
    Ok(out)
}

/// The members of the JSON object `body`, in order, each once (a key twice is refused: a
/// client might read either).
fn members(body: &[u8]) -> Result<Vec<(Cow<'_, str>, &RawValue)>, Untranslatable> {
    struct Members;
    impl<'de> Visitor<'de> for Members {
        type Value = Vec<(Cow<'de, str>, &'de RawValue)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out: Self::Value = Vec::new();
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                if out.iter().any(|(k, _)| *k == key) {
                    return Err(serde::de::Error::custom(format!("`{key}` twice")));
                }
                let value = map.next_value::<&'de RawValue>()?;
                out.push((key, value));
            }
            Ok(out)
        }
    }
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Untranslatable::new("the request body is not a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    de.deserialize_map(Members)
        .and_then(|out| de.end().map(|()| out))
        .map_err(|e| Untranslatable::new(format!("the request body is not readable: {e}")))
}

/// `raw` as a `T`, or an error naming `what`.
fn parse<'a, T: serde::Deserialize<'a>>(
    raw: &'a RawValue,
    what: &str,
) -> Result<T, Untranslatable> {
    serde_json::from_str(raw.get())
        .map_err(|e| Untranslatable::new(format!("`{what}` is not readable: {e}")))
}

/// Whether `raw` is `null`: a member present with null reads as absent.
fn is_null(raw: &RawValue) -> bool {
    raw.get() == "null"
}

/// A parameter read only for its `type` (Anthropic's `thinking`, Chat's `response_format`,
/// Responses' `text.format`).
#[derive(serde::Deserialize)]
struct Tagged<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

/// What a function tool's definition holds in every wire, beside its schema, which each names
/// its own way (Anthropic `input_schema`, Chat and Responses `parameters`) and reads itself.
#[derive(serde::Deserialize)]
struct ToolSpec<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    description: Option<Cow<'a, str>>,
    strict: Option<bool>,
}

impl ToolSpec<'_> {
    /// The tool's definition, with `schema`, which must be a JSON object (`what` names it).
    fn def(self, schema: Option<&RawValue>, what: &str) -> Result<ToolDef, Untranslatable> {
        Ok(ToolDef {
            name: self.name.into_owned(),
            description: self.description.map(Cow::into_owned),
            parameters: schema.map(|s| object(s, what)).transpose()?,
            strict: self.strict,
        })
    }
}

/// The members the writers (Anthropic, Chat, Responses) put between the conversation and
/// `stream`, in this order: the sampling knobs, then the tools and the choice among them in
/// each wire's shapes (`T`, `C`).
#[derive(serde::Serialize)]
struct Knobs<T, C> {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<C>,
}

/// `raw`, which must be a JSON object (tool arguments), owned.
fn object(raw: &RawValue, what: &str) -> Result<Box<RawValue>, Untranslatable> {
    let text = raw.get().trim();
    if !text.starts_with('{') {
        return Err(Untranslatable::new(format!("{what} is not a JSON object")));
    }
    RawValue::from_string(text.to_owned())
        .map_err(|e| Untranslatable::new(format!("{what} is not JSON: {e}")))
}

/// The JSON object in the string `text` (Chat's tool-call `arguments`); an empty string is `{}`.
fn object_in(text: &str, what: &str) -> Result<Box<RawValue>, Untranslatable> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(RawValue::from_string("{}".to_owned()).expect("{} is JSON"));
    }
    if !text.starts_with('{') {
        return Err(Untranslatable::new(format!("{what} are not a JSON object")));
    }
    RawValue::from_string(text.to_owned())
        .map_err(|e| Untranslatable::new(format!("{what} are not JSON: {e}")))
}

#[cfg(test)]
mod tests;
