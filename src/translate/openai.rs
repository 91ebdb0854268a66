//! What OpenAI's two wires, Chat Completions and Responses, read and write alike: a message's
//! content (a string or parts), system messages, images as URLs, the tool choice's modes, an
//! assistant turn's text and calls. Each wire keeps its own shapes (part types, where a
//! function's name sits) and passes them in.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{
    is_null, parse, Conversation, Image, Message, Part, ToolCall, ToolChoice, ToolResult,
    Untranslatable,
};

// ---- reading --------------------------------------------------------------------------

/// A part of a message's content, in both wires: its `type`, a text or a refusal, or an image
/// in the wire's own form (`I`).
#[derive(Deserialize)]
pub(super) struct ContentPart<'a, I> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) refusal: Option<Cow<'a, str>>,
    pub(super) image_url: Option<I>,
}

/// A message's `content` (or a function call's `output`): a string, a list of parts each read
/// by `part` (the wire's own types; `None` for one that says nothing), or nothing.
pub(super) fn content<'a, P: Deserialize<'a>>(
    raw: Option<&'a RawValue>,
    part: impl Fn(P) -> Result<Option<Part>, Untranslatable>,
) -> Result<Vec<Part>, Untranslatable> {
    let Some(raw) = raw.filter(|r| !is_null(r)) else {
        return Ok(Vec::new());
    };
    if raw.get().starts_with('"') {
        let text: Cow<'_, str> = parse(raw, "content")?;
        return Ok(text_part(Some(text)).into_iter().collect());
    }
    let list: Vec<P> = parse(raw, "content")?;
    let mut out = Vec::with_capacity(list.len());
    for p in list {
        out.extend(part(p)?);
    }
    Ok(out)
}

/// A text (or refusal) part: an empty one says nothing.
pub(super) fn text_part(text: Option<Cow<'_, str>>) -> Option<Part> {
    text.filter(|t| !t.is_empty())
        .map(|t| Part::Text(t.into_owned()))
}

/// A `system` or `developer` message's `parts`, as the system prompt: only ahead of the
/// conversation, and only text.
pub(super) fn system(parts: Vec<Part>, c: &mut Conversation) -> Result<(), Untranslatable> {
    if !c.messages.is_empty() {
        return Err(Untranslatable::new(
            "a system message after the first turn (other dialects have one system \
             prompt, ahead of the conversation)",
        ));
    }
    for part in parts {
        match part {
            Part::Text(text) => c.system.push(text),
            _ => return Err(Untranslatable::new("a system message that is not text")),
        }
    }
    Ok(())
}

/// An image URL: a base64 `data:` URL is inline data, anything else a URL to fetch.
pub(super) fn image(url: &str) -> Result<Image, Untranslatable> {
    let Some(rest) = url.strip_prefix("data:") else {
        return Ok(Image::Url(url.to_owned()));
    };
    match rest.split_once(',') {
        Some((meta, data)) if meta.ends_with(";base64") => Ok(Image::Base64 {
            media_type: meta.trim_end_matches(";base64").to_owned(),
            data: data.to_owned(),
        }),
        _ => Err(Untranslatable::new("an image data URL that is not base64")),
    }
}

/// A `tool_choice`: a mode, or a tool named in the form `named` reads (the wire's own),
/// which gives its `type` and the function's name if it has one.
pub(super) fn tool_choice<'a>(
    raw: &'a RawValue,
    named: impl FnOnce(&'a RawValue) -> Result<(Cow<'a, str>, Option<Cow<'a, str>>), Untranslatable>,
) -> Result<ToolChoice, Untranslatable> {
    if raw.get().starts_with('"') {
        let mode: Cow<'_, str> = parse(raw, "tool_choice")?;
        return match mode.as_ref() {
            "auto" => Ok(ToolChoice::Auto),
            "required" => Ok(ToolChoice::Any),
            "none" => Ok(ToolChoice::None),
            other => Err(Untranslatable::new(format!("the tool_choice `{other}`"))),
        };
    }
    match named(raw)? {
        (kind, Some(name)) if kind == "function" => Ok(ToolChoice::Tool(name.into_owned())),
        (kind, _) => Err(Untranslatable::new(format!(
            "the tool_choice of type `{kind}`"
        ))),
    }
}

// ---- writing --------------------------------------------------------------------------

/// A message's content: one text as a string, else parts (`P`, the wire's own).
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum Content<'a, P> {
    Text(&'a str),
    Parts(Vec<P>),
}

/// A user message's `parts` as its content: a lone text as a string (the form every server
/// reads), else the parts; nothing for no parts. `text_of` says which part is a text.
pub(super) fn user_content<'a, P>(
    parts: Vec<P>,
    text_of: impl Fn(&P) -> Option<&'a str>,
) -> Option<Content<'a, P>> {
    match <[_; 1]>::try_from(parts) {
        Ok([one]) => Some(match text_of(&one) {
            Some(text) => Content::Text(text),
            None => Content::Parts(vec![one]),
        }),
        Err(parts) if parts.is_empty() => None,
        Err(parts) => Some(Content::Parts(parts)),
    }
}

/// `image` as an image URL: its URL, or a base64 `data:` URL.
pub(super) fn image_url(image: &Image) -> Cow<'_, str> {
    match image {
        Image::Url(url) => Cow::Borrowed(url.as_str()),
        Image::Base64 { media_type, data } => {
            Cow::Owned(format!("data:{media_type};base64,{data}"))
        }
    }
}

/// The texts of a tool result (both wires carry text only there; `why` says so in the wire's
/// terms when it holds anything else).
pub(super) fn result_texts<'a>(
    result: &'a ToolResult,
    why: &'static str,
) -> Result<Vec<&'a str>, Untranslatable> {
    result
        .content
        .iter()
        .map(|p| match p {
            Part::Text(text) => Ok(text.as_str()),
            _ => Err(Untranslatable::new(why)),
        })
        .collect()
}

/// An assistant turn's text, joined, and its calls, each written by `call`.
pub(super) fn assistant<'a, C>(
    m: &'a Message,
    call: impl Fn(&'a ToolCall) -> C,
) -> Result<(String, Vec<C>), Untranslatable> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for part in &m.parts {
        match part {
            Part::Text(t) => text.push_str(t),
            Part::ToolCall(c) => calls.push(call(c)),
            Part::Image(_) | Part::ToolResult(_) => {
                return Err(Untranslatable::new(
                    "an assistant turn with images or tool results",
                ))
            }
        }
    }
    Ok((text, calls))
}

/// A `tool_choice` in both wires: a mode, or a tool named in the wire's form (`N`), made by
/// `named` from the tool's name.
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum OutChoice<N> {
    Mode(&'static str),
    Named(N),
}

impl<N> OutChoice<N> {
    pub(super) fn new<'a>(choice: &'a ToolChoice, named: impl FnOnce(&'a str) -> N) -> Self {
        match choice {
            ToolChoice::Auto => OutChoice::Mode("auto"),
            ToolChoice::Any => OutChoice::Mode("required"),
            ToolChoice::None => OutChoice::Mode("none"),
            ToolChoice::Tool(name) => OutChoice::Named(named(name)),
        }
    }
}
