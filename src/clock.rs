//! The one timer of a watched body.
//!
//! Two deadlines today, each a line in [`Clock::next`]: the idle deadline (no event of the
//! upstream's for `idle_timeout`: a stall) and the next keep-alive owed to the client while a
//! fallback is on its way. A first-token deadline (time from an attempt's start to its first
//! event carrying content) is one more: set when an attempt starts, cleared by the first event
//! the relay reports as [`Carried::Content`](crate::relay::item::Carried).
//!
//! Like tower-http's `TimeoutBody`, the timer is armed lazily and not re-armed for every event:
//! progress only moves the idle deadline later, which is checked when the timer fires, so the
//! hot path costs a clock read per frame and a look at the armed timer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

/// What came due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Nothing from the upstream for the idle timeout.
    Idle,
    /// The client is owed a keep-alive.
    KeepAlive,
}

pin_project! {
    /// The deadlines of a watched body, on one timer.
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
    idle: Option<Duration>,
    every: Option<Duration>,
    /// The upstream's last sign of progress.
    progress: Instant,
    /// The next keep-alive, while the client waits for a fallback.
    keep_alive_at: Option<Instant>,
}

impl Deadlines {
    /// The earliest deadline, and what it is for.
    fn next(&self) -> Option<(Instant, Due)> {
        let idle = self.idle.map(|idle| (self.progress + idle, Due::Idle));
        let keep_alive = self.keep_alive_at.map(|at| (at, Due::KeepAlive));
        [idle, keep_alive]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
    }
}

impl Clock {
    /// Stalls after `idle` without progress; keep-alives `every` so often while waiting.
    pub(crate) fn new(idle: Option<Duration>, every: Option<Duration>) -> Clock {
        Clock {
            sleep: None,
            registered: None,
            deadlines: Deadlines {
                idle,
                every,
                progress: Instant::now(),
                keep_alive_at: None,
            },
        }
    }

    /// The idle timeout, to name a stall.
    pub(crate) fn idle(&self) -> Duration {
        self.deadlines.idle.unwrap_or_default()
    }

    /// The upstream showed progress (an event that was not a keep-alive).
    pub(crate) fn progressed(self: Pin<&mut Self>) {
        self.project().deadlines.progress = Instant::now();
    }

    /// A fallback is being called: its wait counts from now, and the client gets keep-alives
    /// until the continuation flows.
    pub(crate) fn calling(self: Pin<&mut Self>) {
        let this = self.project();
        let now = Instant::now();
        this.deadlines.progress = now;
        this.deadlines.keep_alive_at = this.deadlines.every.map(|every| now + every);
        // A deadline may now come sooner than the timer is armed for.
        *this.registered = None;
    }

    /// A new attempt's stream begins: its idle deadline counts from now.
    pub(crate) fn attempt(self: Pin<&mut Self>) {
        self.progressed();
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
                Some(sleep) if sleep.deadline() > at => sleep.reset(at),
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
            // Fired for an earlier deadline that has since moved: re-arm for the current one.
            this.sleep
                .as_mut()
                .as_pin_mut()
                .expect("armed above")
                .reset(at);
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

    #[tokio::test(start_paused = true)]
    async fn progress_moves_the_stall_later_and_keep_alives_come_while_calling() {
        let mut clock = std::pin::pin!(Clock::new(
            Some(Duration::from_secs(10)),
            Some(Duration::from_secs(3))
        ));
        assert!(poll(clock.as_mut()).is_pending());
        tokio::time::advance(Duration::from_secs(6)).await;
        clock.as_mut().progressed();
        tokio::time::advance(Duration::from_secs(6)).await;
        // 12 s since the start, 6 s since the progress: not stalled.
        assert!(poll(clock.as_mut()).is_pending());
        clock.as_mut().calling();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(poll(clock.as_mut()), Poll::Ready(Due::KeepAlive));
        clock.as_mut().kept_alive();
        assert!(poll(clock.as_mut()).is_pending());
        clock.as_mut().flowing();
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(
            poll(clock.as_mut()).is_pending(),
            "no keep-alive once flowing"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(poll(clock.as_mut()), Poll::Ready(Due::Idle));
    }

    #[tokio::test(start_paused = true)]
    async fn without_an_idle_timeout_nothing_comes_due() {
        let mut clock = std::pin::pin!(Clock::new(None, None));
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(poll(clock.as_mut()).is_pending());
    }
}
