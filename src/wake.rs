//! Wake-ups: how a committed event reaches an idle dispatcher at once.

use std::sync::Arc;

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
}
