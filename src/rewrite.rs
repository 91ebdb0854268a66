//! The outline of a rewrite, shared by every dialect: read the body once (the dialect's
//! [`RequestIndex`]), name the target's model where its address wants it (a [`Placement`]),
//! append the partial answer (and the instruction) the way the dialect carries a continuation
//! ([`Rules`](crate::dialect::Rules)), and shrink the token limits by what was generated. A
//! request is spliced at the spans the index found, never rebuilt as a tree.

use bytes::Bytes;
use serde_json::Value;

use crate::address::Placement;
use crate::dialect::Wire;
use crate::json::{to_vec, RequestIndex, Splice};
use crate::strategy::{RewriteError, Strategy};
use crate::transcript::Transcript;

/// The part of the answer a rewritten request continues from.
#[derive(Debug)]
pub(crate) struct Continuation<'a> {
    pub(crate) text: &'a str,
    pub(crate) kept_tokens: u32,
}

impl Wire {
    /// Why this request cannot be retried as `strategy` once the client has `transcript`, if a
    /// retry of any kind would break what the client or the provider keeps (Responses:
    /// `background`, or an answer longer than the transcript keeps).
    pub(crate) fn check_retry(
        &self,
        strategy: &Strategy,
        index: &RequestIndex,
        transcript: &Transcript,
    ) -> Result<(), RewriteError> {
        self.rules.check_retry(strategy, index, transcript)
    }

    /// The body for the next attempt, in this format: `body` with its model placed as
    /// `placement` says and the answer so far carried as `strategy` says.
    pub(crate) fn rewrite(
        &self,
        body: &[u8],
        index: &RequestIndex,
        placement: &Placement,
        strategy: &Strategy,
        cont: &Continuation<'_>,
    ) -> Result<Bytes, RewriteError> {
        let shape = &self.request;
        if let Some(why) = &index.unusable {
            return Err(RewriteError::new(format!(
                "the request body is not a {} request: {why}",
                self.request_name
            )));
        }
        // Not a request of this dialect without them, whatever the strategy.
        let messages = index.messages.as_ref().ok_or_else(|| {
            RewriteError::new(format!("the request has no `{}` array", shape.messages))
        })?;
        if messages.text.is_none() && messages.last.is_none() {
            // Even a restart needs a conversation to send.
            return Err(RewriteError::new(format!(
                "the request's `{}` array is empty",
                shape.messages
            )));
        }
        let mut splice = Splice::new(body);
        placement.edit_body(&mut splice, index, shape.model)?;
        for key in self.rules.attempt_bound_keys() {
            if let Some(member) = index.member(key) {
                splice.remove(member);
            }
        }

        let partial = if self.trims_continuation {
            cont.text.trim_end()
        } else {
            cont.text
        };
        if partial.is_empty() || matches!(strategy, Strategy::Restart) {
            return Ok(splice.finish());
        }
        self.rules.check_continuation(strategy, index)?;
        // The client may have prefilled the answer itself: then the partial answer continues
        // its own assistant message instead of following it (where the format continues one).
        let own_prefill = match (&messages.last, self.rules.extends_own_prefill()) {
            (Some(_), true) => {
                let role = messages
                    .last_role
                    .as_deref()
                    .ok_or_else(|| RewriteError::new("the last message has no `role`"))?;
                role == self.rules.assistant_role()
            }
            _ => false,
        };
        let flag = self.rules.prefill_flag(strategy);
        let mut added = match (&messages.last, own_prefill) {
            (Some(last), true) => {
                let message = body
                    .get(last.clone())
                    .ok_or_else(|| RewriteError::new("the last message is out of the body"))?;
                self.extend_assistant(message, partial, flag)?
            }
            _ => self.rules.assistant_turn(partial, flag),
        };
        if let Strategy::Instruction(text) = strategy {
            added.push(b',');
            added.extend_from_slice(&self.rules.user_turn(text));
        }
        match (&messages.text, &messages.last) {
            // One string: it becomes the opening turn of an array that goes on with the rest.
            (Some(text), _) => {
                let literal = body
                    .get(text.clone())
                    .and_then(|t| std::str::from_utf8(t).ok())
                    .ok_or_else(|| RewriteError::new("the conversation is out of the body"))?;
                let turn = self.rules.text_turn(literal).ok_or_else(|| {
                    RewriteError::new(format!(
                        "the request's `{}` is not an array",
                        shape.messages
                    ))
                })?;
                let mut with = Vec::with_capacity(turn.len() + added.len() + 3);
                with.push(b'[');
                with.extend_from_slice(&turn);
                with.push(b',');
                with.extend_from_slice(&added);
                with.push(b']');
                splice.replace(text.clone(), with);
            }
            (None, Some(last)) if own_prefill => splice.replace(last.clone(), added),
            (None, Some(last)) => {
                let mut with = Vec::with_capacity(added.len() + 1);
                with.push(b',');
                with.extend_from_slice(&added);
                splice.insert(last.end, with);
            }
            (None, None) => {
                return Err(RewriteError::new(format!(
                    "the request's `{}` array is empty",
                    shape.messages
                )))
            }
        }
        for (key, value) in self.rules.continuation_flags(strategy) {
            match index.field(key) {
                Some(at) => splice.replace(at, value.to_vec()),
                None => splice.add_key(key, value),
            }
        }
        let floor = self.rules.min_token_limit(index);
        for name in shape.limits {
            if let Some(at) = index.field(name) {
                let max = RequestIndex::limit(body, &at)
                    .ok_or_else(|| RewriteError::new(format!("`{name}` is not a number")))?;
                let reduced = max
                    .saturating_sub(u64::from(cont.kept_tokens))
                    .max(1)
                    .max(floor);
                splice.replace(at, reduced.to_string().into_bytes());
            }
        }
        Ok(splice.finish())
    }

    /// The client's own trailing assistant message, continued by `partial`.
    fn extend_assistant(
        &self,
        message: &[u8],
        partial: &str,
        flag: Option<&str>,
    ) -> Result<Vec<u8>, RewriteError> {
        let mut message: Value = serde_json::from_slice(message)
            .map_err(|_| RewriteError::new("the last message is not an object"))?;
        if !message.is_object() {
            return Err(RewriteError::new("the last message is not an object"));
        }
        self.rules.continue_turn(&mut message, partial)?;
        if let Some(flag) = flag {
            message[flag] = Value::Bool(true);
        }
        Ok(to_vec(&message))
    }
}

/// Rewrites `body` as a request of `wire` for `target` (the request's own address),
/// continuing `text` (`kept` tokens): what the dialects' tests check.
#[cfg(test)]
pub(crate) fn rewritten(
    wire: &'static Wire,
    body: &[u8],
    target: &str,
    strategy: &Strategy,
    text: &str,
    kept: u32,
) -> Result<Value, RewriteError> {
    let out = rewritten_bytes(wire, body, target, strategy, text, kept)?;
    Ok(serde_json::from_slice(&out).expect("a rewritten body is JSON"))
}

/// [`rewritten`], as bytes.
#[cfg(test)]
pub(crate) fn rewritten_bytes(
    wire: &'static Wire,
    body: &[u8],
    target: &str,
    strategy: &Strategy,
    text: &str,
    kept: u32,
) -> Result<Bytes, RewriteError> {
    let dialect = crate::dialect::Dialect::from_name(wire.name).expect("a registered wire");
    let index = RequestIndex::read(body, &wire.request);
    let placement = Placement::new(
        dialect,
        &http::Uri::from_static("/"),
        &index.named,
        target,
        &crate::address::Address::native(),
        true,
    )?;
    let cont = Continuation {
        text,
        kept_tokens: kept,
    };
    wire.rewrite(body, &index, &placement, strategy, &cont)
}
