//! Streams with several answers at once (Chat `n > 1`, Gemini `candidateCount > 1`).
//!
//! A continuation request carries one partial answer, and the prefill of `n` choices cannot be
//! told apart, so these streams are not continued: their events go out as they came, nothing
//! is held (a choice's tool call is the client's to assemble), and the core only counts what
//! the client has of each choice. A failure before any choice's answer reached the client
//! restarts on a fallback invisibly (its events fitted to the client's envelope, no second
//! start for a choice the client has); after that, it ends the stream with an error event
//! naming the failure (the transcript says the answer cannot be continued), unless every
//! choice the client has is complete and only the closing events are missing.

use crate::dialect::StreamFailure;
use crate::error::FailureClass;
use crate::outbox::Outbox;
use crate::sse::Event;

use super::item::{Carried, Item, Source};
use super::{in_band_failure, step, unreadable_failure, Mode, Relay, Step};

/// More choices than any API allows (OpenAI's `n` is at most 128): the stream is malformed.
const MAX_CHOICES: usize = 128;

/// What the client has of a stream with several choices.
#[derive(Debug, Default)]
pub(super) struct Several {
    /// For each choice the client has a start for (they start in order, densely): whether it
    /// has the choice's finish.
    finished: Vec<bool>,
}

impl Several {
    /// Every choice the client has is complete (and it has one at least).
    pub(super) fn all_finished(&self) -> bool {
        !self.finished.is_empty() && self.finished.iter().all(|f| *f)
    }
}

impl Relay {
    /// The decoder found several choices in the stream: from here on, the stream is read in
    /// [`Mode::Choices`]. What this attempt held goes out now, as it stands.
    pub(super) fn enter_choices(&mut self, out: &mut Outbox) -> Result<(), StreamFailure> {
        if !self.attempt.verbatim && !self.transcript.is_empty() {
            // The client has one partial answer from an earlier attempt; this one answers
            // several, none of which continues it.
            return Err(StreamFailure::new(
                FailureClass::Malformed,
                "the fallback answered several choices after the client had part of one",
            ));
        }
        for open in self.attempt.drain() {
            step();
            if let super::Open::Held(held) = open {
                self.ready.push(*held);
            }
        }
        self.prelude(out);
        self.budget.clear();
        self.transcript.mark_several_choices();
        // A start the client has is the first choice's.
        let first = self.client.started.then_some(self.client.finish_sent);
        self.mode = Mode::Choices(Several {
            finished: first.into_iter().collect(),
        });
        Ok(())
    }

    /// One event of a stream with several choices, its items decoded into `self.items`.
    pub(super) fn read_choices(
        &mut self,
        ev: &Event<'_>,
        src: &Source<'_>,
        out: &mut Outbox,
    ) -> Step {
        let Mode::Choices(several) = &mut self.mode else {
            return Step::Fail(unreadable_failure("several choices outside their mode"));
        };
        // Choices the client had a start for before this event: a fitted event gives them no
        // second one.
        let had = several.finished.len() as u32;
        let (mut carried, mut terminal, mut client_error) = (Carried::Nothing, false, false);
        for i in 0..self.items.len() {
            let item = self.items[i];
            carried = carried.max(item.carries());
            match item {
                Item::Start(start) => {
                    let reported = &mut self.attempt.reported;
                    reported.response_model = super::value_text(src, start.model).map(Into::into);
                    if !self.client.started {
                        self.encoder.begin(&start, src);
                        self.client.start_owed = true;
                    }
                }
                Item::ChoiceStart { choice } => {
                    let choice = choice as usize;
                    if choice > several.finished.len() || choice >= MAX_CHOICES {
                        return Step::Fail(unreadable_failure(
                            "a choice that starts out of order, or beyond 128 choices",
                        ));
                    }
                    if choice == several.finished.len() {
                        several.finished.push(false);
                    }
                }
                Item::ChoiceContent { choice } => {
                    if choice as usize >= several.finished.len() {
                        return Step::Fail(unreadable_failure(
                            "an answer for a choice not started",
                        ));
                    }
                    self.attempt.spent = self.attempt.spent.saturating_add(1);
                    self.transcript.mark_choice_answered();
                }
                Item::ChoiceFinish { choice } => match several.finished.get_mut(choice as usize) {
                    Some(finished) => {
                        *finished = true;
                        self.transcript.mark_choice_answered();
                    }
                    None => {
                        return Step::Fail(unreadable_failure("a finish for a choice not started"))
                    }
                },
                Item::Usage(usage) => {
                    let reported = &mut self.attempt.reported;
                    reported.output_tokens = usage.output_tokens.or(reported.output_tokens);
                    reported.input_tokens = usage.input_tokens.or(reported.input_tokens);
                    self.client.usage_sent = true;
                }
                Item::Terminal => terminal = true,
                Item::Error(error) if !error.client => {
                    return Step::Fail(in_band_failure(&error, src, out.redactor()));
                }
                Item::Error(_) => client_error = true,
                _ => {}
            }
        }
        if self.attempt.as_came {
            if client_error {
                out.forward_error(ev);
                self.as_came(ev);
            } else {
                self.forward(ev, out);
            }
            if self.client.start_owed {
                self.started();
            }
        } else if client_error {
            out.push_error(crate::dialect::sse_event(src.name, src.data.as_bytes()));
        } else if terminal {
            self.encoder.terminal(out);
        } else {
            self.ensure_started(out);
            let base = self.attempt.usage_base;
            self.encoder.choices_event(src, base, had, out);
        }
        if terminal {
            self.mode = Mode::Done;
            return Step::Done;
        }
        if client_error {
            // A retry elsewhere would fail alike: the rest goes out as it comes.
            self.mode = Mode::Passthrough;
        }
        Step::Continue(carried)
    }
}
