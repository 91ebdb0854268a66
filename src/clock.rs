//! The one timer of an attempt: its deadlines, and the keep-alives owed to the client.
//!
//! Each deadline is a line in [`Deadlines::next`]:
//! * first token: from sending an attempt to its first event carrying content (text, a tool
//!   call, reasoning); it also bounds the wait for the attempt's response headers;
//! * idle: from one content event to the next (a stall);
//! * hedge: from sending an attempt, with no content yet, to starting a hedge beside it;
//! * keep-alive: the next comment owed to the client while it waits for a fallback.
//!
//! Pings, comments and envelope events (a message's start, its stop reason, usage) count for
//! neither deadline: they show the connection is alive, not that the model is.
//!
//! Like tower-http's `TimeoutBody`, the timer is armed lazily and not re-armed for every event:
//! progress only moves the idle deadline later, which is checked when the timer fires, so the
//! hot path costs a clock read per content frame and a look at the armed timer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

/// What came due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// No content from the attempt within the first-token deadline of sending it.
    FirstToken,
    /// No content from the attempt for the idle timeout since its last.
    Idle,
    /// The attempt has sent no content within the hedge delay: time to race it.
    Hedge,
    /// The client is owed a keep-alive.
    KeepAlive,
}

/// How long one attempt may take: the layer's options, as the planner set them for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    pub(crate) first_token: Option<Duration>,
    pub(crate) idle: Option<Duration>,
    /// After this long with no content, a hedge starts beside the attempt (`None`: never).
    pub(crate) hedge: Option<Duration>,
}

pin_project! {
    /// The deadlines of an attempt, on one timer.
    #[derive(Debug)]
    pub(crate) struct Clock {
        #[pin]
        sleep: Option<Sleep>,
        // The waker the timer last registered, so that it is not polled again for nothing.
        registered: Option<Waker>,
        deadlines: Deadlines,
    }
}

/// When things come due.
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    timing: Timing,
    every: Option<Duration>,
    /// When the attempt was sent: its first-token and hedge deadlines count from here.
    sent: Instant,
    /// Its last content event; `None` until its first.
    content: Option<Instant>,
    /// The next keep-alive, while the client waits for a fallback.
    keep_alive_at: Option<Instant>,
}

impl Deadlines {
    /// The earliest deadline, and what it is for.
    fn next(&self) -> Option<(Instant, Due)> {
        let t = &self.timing;
        let (stall, hedge) = match self.content {
            None => (
                t.first_token.map(|d| (self.sent + d, Due::FirstToken)),
                t.hedge.map(|d| (self.sent + d, Due::Hedge)),
            ),
            Some(at) => (t.idle.map(|d| (at + d, Due::Idle)), None),
        };
        let keep_alive = self.keep_alive_at.map(|at| (at, Due::KeepAlive));
        [stall, hedge, keep_alive]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
    }
}

impl Clock {
    /// The deadlines of an attempt sent at `sent`; keep-alives `every` so often while the
    /// client waits for a fallback.
    pub(crate) fn new(sent: Instant, timing: Timing, every: Option<Duration>) -> Clock {
        Clock {
            sleep: None,
            registered: None,
            deadlines: Deadlines {
                timing,
                every,
                sent,
                content: None,
                keep_alive_at: None,
            },
        }
    }

    /// What the attempt's deadlines are.
    pub(crate) fn timing(&self) -> Timing {
        self.deadlines.timing
    }

    /// The attempt sent content: its first token, or progress after it.
    pub(crate) fn content(self: Pin<&mut Self>) {
        let this = self.project();
        let first = this.deadlines.content.is_none();
        this.deadlines.content = Some(Instant::now());
        if first {
            // The idle deadline may come sooner than the first-token one the timer is armed for.
            *this.registered = None;
        }
    }

    /// A new attempt (a fallback) is called, to be sent at `sent`: its deadlines count from
    /// then, and the client gets keep-alives until its continuation flows.
    pub(crate) fn calling(self: Pin<&mut Self>, sent: Instant, timing: Timing) {
        let this = self.project();
        let d = this.deadlines;
        d.sent = sent;
        d.timing = timing;
        d.content = None;
        d.keep_alive_at = d.every.map(|every| Instant::now() + every);
        // A deadline may now come sooner than the timer is armed for.
        *this.registered = None;
    }

    /// No hedge for this attempt after all (one was started, or content reached the client).
    pub(crate) fn no_hedge(self: Pin<&mut Self>) {
        self.project().deadlines.timing.hedge = None;
    }

    /// The continuation reaches the client: no more keep-alives.
    pub(crate) fn flowing(self: Pin<&mut Self>) {
        self.project().deadlines.keep_alive_at = None;
    }

    /// A keep-alive went out: the next one is owed a period later.
    pub(crate) fn kept_alive(self: Pin<&mut Self>) {
        let deadlines = self.project().deadlines;
        deadlines.keep_alive_at = deadlines.every.map(|every| Instant::now() + every);
    }

    /// What a stall of `due` is, in words, for its failure.
    pub(crate) fn stall(&self, due: Due) -> String {
        let t = &self.deadlines.timing;
        match due {
            Due::FirstToken => format!(
                "no content within the first-token deadline of {} (pings, comments and envelope events do not count)",
                human(t.first_token.unwrap_or_default())
            ),
            _ => format!(
                "no content for {} (pings, comments and envelope events do not count)",
                human(t.idle.unwrap_or_default())
            ),
        }
    }

    /// Whether a deadline has come; registers for the next one otherwise.
    pub(crate) fn poll_due(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Due> {
        let mut this = self.project();
        // Already waiting to wake this task: nothing to do until the timer fires.
        if let (Some(sleep), Some(waker)) = (this.sleep.as_ref().as_pin_ref(), &*this.registered) {
            if !sleep.is_elapsed() && waker.will_wake(cx.waker()) {
                return Poll::Pending;
            }
        }
        let Some((at, due)) = this.deadlines.next() else {
            return Poll::Pending;
        };
        loop {
            match this.sleep.as_mut().as_pin_mut() {
                None => this.sleep.set(Some(tokio::time::sleep_until(at))),
                Some(sleep) if sleep.deadline() != at => sleep.reset(at),
                Some(_) => {}
            }
            let sleep = this.sleep.as_mut().as_pin_mut().expect("armed above");
            if sleep.poll(cx).is_pending() {
                *this.registered = Some(cx.waker().clone());
                return Poll::Pending;
            }
            *this.registered = None;
            if Instant::now() >= at {
                return Poll::Ready(due);
            }
        }
    }
}

/// A duration in words, for failure messages.
pub(crate) fn human(d: Duration) -> String {
    if d.as_millis() % 1000 == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(clock: Pin<&mut Clock>) -> Poll<Due> {
        let waker = futures_noop_waker();
        clock.poll_due(&mut Context::from_waker(&waker))
    }

    fn futures_noop_waker() -> Waker {
        struct Noop;
        impl std::task::Wake for Noop {
            fn wake(self: std::sync::Arc<Self>) {}
        }
        Waker::from(std::sync::Arc::new(Noop))
    }

    fn timing(first_token: u64, idle: u64, hedge: Option<u64>) -> Timing {
        Timing {
            first_token: Some(Duration::from_secs(first_token)),
            idle: Some(Duration::from_secs(idle)),
            hedge: hedge.map(Duration::from_secs),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_token_deadline_counts_from_sending_and_the_idle_one_from_content() {
        let sent = Instant::now();
        tokio::time::advance(Duration::from_secs(4)).await;
        let mut clock = std::pin::pin!(Clock::new(sent, timing(5, 10, None), None));
        assert!(poll(clock.as_mut()).is_pending());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(poll(clock.as_mut()), Poll::Ready(Due::FirstToken));

        let mut clock = std::pin::pin!(Clock::new(Instant::now(), timing(5, 10, None), None));
        clock.as_mut().content();
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(poll(clock.as_mut()).is_pending(), "past the first token");
        clock.as_mut().content();
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(
            poll(clock.as_mut()).is_pending(),
            "content moved the stall later"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(poll(clock.as_mut()), Poll::Ready(Due::Idle));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hedge_comes_due_before_the_first_token_only() {
        let mut clock = std::pin::pin!(Clock::new(Instant::now(), timing(10, 10, Some(2)), None));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(poll(clock.as_mut()), Poll::Ready(Due::Hedge));
        clock.as_mut().no_hedge();
        assert!(poll(clock.as_mut()).is_pending());

        let mut clock = std::pin::pin!(Clock::new(Instant::now(), timing(10, 10, Some(2)), None));
        clock.as_mut().content();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(
            poll(clock.as_mut()).is_pending(),
            "no hedge once content came"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alives_come_while_calling_until_the_continuation_flows() {
        let mut clock = std::pin::pin!(Clock::new(
            Instant::now(),
            timing(20, 10, None),
            Some(Duration::from_secs(3))
        ));
        clock.as_mut().content();
        tokio::time::advance(Duration::from_secs(6)).await;
        clock.as_mut().calling(Instant::now(), timing(20, 10, None));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(poll(clock.as_mut()), Poll::Ready(Due::KeepAlive));
        clock.as_mut().kept_alive();
        assert!(poll(clock.as_mut()).is_pending());
        clock.as_mut().flowing();
        tokio::time::advance(Duration::from_secs(16)).await;
        assert!(
            poll(clock.as_mut()).is_pending(),
            "no keep-alive once flowing; the fallback's first token is due 20 s after its call"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(poll(clock.as_mut()), Poll::Ready(Due::FirstToken));
    }

    #[tokio::test(start_paused = true)]
    async fn without_deadlines_nothing_comes_due() {
        let none = Timing {
            first_token: None,
            idle: None,
            hedge: None,
        };
        let mut clock = std::pin::pin!(Clock::new(Instant::now(), none, None));
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(poll(clock.as_mut()).is_pending());
    }
}
