//! What the controllers share when a reconcile fails: a backoff of its own for each
//! resource, and a panic caught and turned into an error for that resource alone.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::time::Duration;

use futures::FutureExt;

use crate::bounded::cut;

/// The backoff of a resource whose reconcile failed: doubling from the first, capped.
pub const ERROR_BACKOFF_FIRST: Duration = Duration::from_secs(5);
pub const ERROR_BACKOFF_CAP: Duration = Duration::from_secs(300);
/// Longest panic message kept (in logs and in the error), in bytes.
const MAX_PANIC_BYTES: usize = 300;

/// The wait after the `failures`-th failed reconcile in a row (1 is the first):
/// 5 s, doubling, at most 300 s.
pub fn error_backoff(failures: u32) -> Duration {
    ERROR_BACKOFF_FIRST
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
        .min(ERROR_BACKOFF_CAP)
}

/// Failed reconciles in a row, by uid, for each resource's own backoff.
#[derive(Debug, Default)]
pub struct Failures(Mutex<HashMap<String, u32>>);

impl Failures {
    /// Counts one more failure of `uid`; returns how many in a row and the wait.
    pub fn failed(&self, uid: &str) -> (u32, Duration) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(uid.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        (*n, error_backoff(*n))
    }

    /// `uid` reconciled: its next failure starts from the first step again.
    pub fn succeeded(&self, uid: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
    }
}

/// Runs `work`, turning a panic into `Err` with its message (cut): a panic is a bug
/// in the handling of one resource, and must not take the process (kube-runtime
/// would re-raise it), and every other resource, down.
pub async fn catch_panic<T>(work: impl Future<Output = T>) -> Result<T, String> {
    AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .map_err(|panic| cut(&panic_message(panic.as_ref()), MAX_PANIC_BYTES))
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_from_five_seconds_to_five_minutes() {
        let waits: Vec<u64> = (0..=9).map(|n| error_backoff(n).as_secs()).collect();
        assert_eq!(waits, [5, 5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(error_backoff(u32::MAX), ERROR_BACKOFF_CAP);
    }

    #[test]
    fn failures_count_per_resource_and_a_success_resets_them() {
        let f = Failures::default();
        assert_eq!(f.failed("a").1.as_secs(), 5);
        assert_eq!(f.failed("a").1.as_secs(), 10);
        assert_eq!(f.failed("b"), (1, Duration::from_secs(5)));
        f.succeeded("a");
        assert_eq!(f.failed("a"), (1, Duration::from_secs(5)));
    }

    #[tokio::test]
    async fn a_panic_becomes_its_message_cut() {
        let long = "x".repeat(5000);
        let caught = catch_panic(async move {
            if !long.is_empty() {
                panic!("{long}");
            }
        })
        .await;
        assert_eq!(caught.unwrap_err().len(), MAX_PANIC_BYTES);
        let caught = catch_panic(async { panic!("static text") }).await;
        assert_eq!(caught, Err::<(), _>("static text".to_string()));
        assert_eq!(catch_panic(async { 7 }).await, Ok(7));
    }
}
