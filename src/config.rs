//! The options every request through one layer shares.

use std::time::Duration;

use crate::dialect::{Dialect, Limits};
use crate::observe::Observers;
use crate::reasoning::Reasoning;
use crate::untrusted::Redactor;

/// Options shared by every request through one layer.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) max_attempts: u32,
    pub(crate) idle_timeout: Option<Duration>,
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
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            transcript: self.max_transcript_bytes,
            held: self.max_held_bytes,
            reasoning: self.reasoning,
        }
    }
}
