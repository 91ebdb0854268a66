//! Which attempts served an answer, for the caller.

use std::sync::{Arc, Mutex, PoisonError};

use crate::attempt::Attempt;

/// The attempts whose response reached the client, in order: their target and strategy.
///
/// The layer puts one in the extensions of every response of an attempt to a request it
/// watches (a stream, or a response passed on as it came), and
/// [`FallbackBody::provenance`](crate::FallbackBody::provenance) returns the same; a response
/// the layer makes itself (a 413, or after every attempt failed before its stream) carries the
/// [`FallbackError`](crate::FallbackError) instead. It is a
/// shared handle that grows while the body streams: when the response headers go out it names
/// the attempt whose headers they are (a fallback, if the first attempt failed before its
/// stream); a fallback that continues the stream later is added when its first bytes reach the
/// client. Read it again once the body has ended for the whole story.
///
/// ```
/// # fn example(response: http::Response<tower_midstream::FallbackBody<()>>) {
/// use tower_midstream::Provenance;
///
/// if let Some(provenance) = response.extensions().get::<Provenance>() {
///     for attempt in provenance.served_by() {
///         println!("attempt {} from {:?}", attempt.number(), attempt.target());
///     }
/// }
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Provenance(Arc<Mutex<Vec<Attempt>>>);

impl Provenance {
    /// The attempts whose response reached the client so far, in order.
    pub fn served_by(&self) -> Vec<Attempt> {
        self.lock().clone()
    }

    /// The attempt serving the client now: the last of [`served_by`](Self::served_by).
    pub fn current(&self) -> Option<Attempt> {
        self.lock().last().cloned()
    }

    /// Records that `attempt` reached the client, once.
    pub(crate) fn push(&self, attempt: &Attempt) {
        let mut served = self.lock();
        if served.last().map(Attempt::number) != Some(attempt.number()) {
            served.push(attempt.clone());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Attempt>> {
        // Only pushes and clones happen under the lock: a panic cannot leave it half-written.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
