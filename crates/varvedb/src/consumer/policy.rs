//! The one failure policy of every processor, sync and async: what to do when a handler fails
//! on an event, given how many times it has been called on it.

use std::time::Duration;

#[cfg(doc)]
use crate::{Error, Processor, Storage};

/// What a processor does when its handler fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnError {
    /// Checkpoint before the failed event and stop with [`Error::HandlerFailed`].
    Stop,
    /// Call the handler again, up to `attempts` times in all, `backoff_ms` apart (doubling each
    /// time), then stop. The cursor never moves past the event meanwhile.
    Retry {
        /// Calls in all, the first included.
        attempts: u32,
        /// The first pause between two calls, in milliseconds.
        backoff_ms: u64,
    },
    /// Park the event (it is listed by [`Storage::parked_events`] with the reason, and can be
    /// replayed with [`Processor::replay_parked`]) and go on with the next.
    Park,
    /// [`Retry`](Self::Retry), then park instead of stopping.
    RetryThenPark {
        /// Calls in all, the first included.
        attempts: u32,
        /// The first pause between two calls, in milliseconds.
        backoff_ms: u64,
    },
}

/// What a processor does after its handler failed on an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Call the handler on the event again after this pause.
    Retry(Duration),
    /// Park the event and go on with the next.
    Park,
    /// Checkpoint before the event and stop.
    Stop,
}

impl OnError {
    /// The decision after the handler's `calls`-th failed call on one event (from 1). Retries
    /// wait `backoff_ms`, doubling each time (at most 2^16 times it).
    pub(crate) fn decide(self, calls: u32) -> Decision {
        match self {
            OnError::Stop => Decision::Stop,
            OnError::Park => Decision::Park,
            OnError::Retry {
                attempts,
                backoff_ms,
            }
            | OnError::RetryThenPark {
                attempts,
                backoff_ms,
            } if calls < attempts => {
                let factor = 1u64 << calls.saturating_sub(1).min(16);
                Decision::Retry(Duration::from_millis(backoff_ms.saturating_mul(factor)))
            }
            OnError::RetryThenPark { .. } => Decision::Park,
            OnError::Retry { .. } => Decision::Stop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_retries_with_a_doubling_pause_then_parks_or_stops() {
        let retry = OnError::Retry {
            attempts: 3,
            backoff_ms: 10,
        };
        assert_eq!(retry.decide(1), Decision::Retry(Duration::from_millis(10)));
        assert_eq!(retry.decide(2), Decision::Retry(Duration::from_millis(20)));
        assert_eq!(retry.decide(3), Decision::Stop);
        let park = OnError::RetryThenPark {
            attempts: 2,
            backoff_ms: 5,
        };
        assert_eq!(park.decide(1), Decision::Retry(Duration::from_millis(5)));
        assert_eq!(park.decide(2), Decision::Park);
        assert_eq!(OnError::Stop.decide(1), Decision::Stop);
        assert_eq!(OnError::Park.decide(1), Decision::Park);
        // No overflow, however long the retries go.
        let long = OnError::Retry {
            attempts: u32::MAX,
            backoff_ms: u64::MAX,
        };
        assert_eq!(
            long.decide(100),
            Decision::Retry(Duration::from_millis(u64::MAX))
        );
    }
}
