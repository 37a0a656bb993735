//! Wake-ups: how a committed event reaches an idle dispatcher at once.

use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::Notify;

/// Wakes idle dispatchers when deliveries become due (a committed event, a re-enabled
/// endpoint, a manual retry, a notification from another process). Cheap to clone; a
/// wake-up is never lost (a waiting permit is stored when nobody waits).
#[derive(Clone, Default)]
pub struct Waker(Arc<Notify>);

impl Waker {
    pub fn wake(&self) {
        self.0.notify_one();
    }

    /// Completes at the next wake-up (or at once if one is pending).
    pub async fn woken(&self) {
        self.0.notified().await;
    }

    /// Takes the pending wake-up, if there is one, without waiting: true if there was.
    pub fn take_pending(&self) -> bool {
        self.0.notified().now_or_never().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pending_wake_up_is_taken_once() {
        let waker = Waker::default();
        assert!(!waker.take_pending(), "nothing woke it yet");
        waker.wake();
        waker.wake(); // wake-ups do not add up
        assert!(waker.take_pending());
        assert!(!waker.take_pending(), "taken");
        // One that comes after a look that found none still wakes the next wait.
        waker.wake();
        tokio::time::timeout(std::time::Duration::from_secs(5), waker.woken())
            .await
            .expect("woken");
    }
}
