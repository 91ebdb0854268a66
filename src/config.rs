//! The options every request through one layer shares.

use std::time::Duration;

use crate::clock::Timing;
use crate::dialect::{Dialect, Limits};
use crate::observe::Observers;
use crate::reasoning::Reasoning;
use crate::untrusted::Redactor;

/// Options shared by every request through one layer.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) max_attempts: u32,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) first_token_timeout: Option<Duration>,
    /// After this long with no content from an attempt, a hedge races it (`None`: never).
    pub(crate) hedge_after: Option<Duration>,
    pub(crate) keep_alive: Option<Duration>,
    pub(crate) max_request_bytes: usize,
    pub(crate) max_transcript_bytes: usize,
    pub(crate) max_event_bytes: usize,
    pub(crate) max_held_bytes: usize,
    pub(crate) reasoning: Reasoning,
    pub(crate) dialect: Option<Dialect>,
    pub(crate) observer: Observers,
    pub(crate) redactor: Redactor,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_attempts: 3,
            idle_timeout: Some(Duration::from_secs(60)),
            first_token_timeout: Some(Duration::from_secs(60)),
            hedge_after: None,
            keep_alive: Some(Duration::from_secs(5)),
            max_request_bytes: 4 << 20,
            max_transcript_bytes: 1 << 20,
            max_event_bytes: 1 << 20,
            max_held_bytes: 4 << 20,
            reasoning: Reasoning::Live,
            dialect: None,
            observer: Observers::default(),
            redactor: Redactor::new(),
        }
    }
}

impl Config {
    /// An attempt's deadlines, unless the planner sets others for it.
    pub(crate) fn timing(&self) -> Timing {
        Timing {
            first_token: self.first_token_timeout,
            idle: self.idle_timeout,
            hedge: self.hedge_after,
        }
    }

    pub(crate) fn limits(&self) -> Limits {
        Limits {
            transcript: self.max_transcript_bytes,
            held: self.max_held_bytes,
            reasoning: self.reasoning,
        }
    }
}
