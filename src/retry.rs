//! Retrying: one backoff for everything that waits before trying again (store writes, the outbox
//! forwarder, MongoDB's index keeper, webhook deliveries), and the deadline helper their `select!`s
//! share. A leaf module, so that the store, the pipeline and the notifier need not import each other.

use std::time::Duration;

/// Delays that double per failure up to a cap, each drawn from the upper half of its range
/// ("equal jitter"), so that peers failing together do not retry in step, and no delay is ever
/// shorter than half the nominal one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The nominal delay before the first retry.
    pub first: Duration,
    /// The largest nominal delay.
    pub max: Duration,
}

impl Backoff {
    /// For a store that fails: 100 ms doubling to 5 s.
    pub const STORE: Backoff = Backoff {
        first: Duration::from_millis(100),
        max: Duration::from_secs(5),
    };

    /// The delay before retry `attempt` (0 = the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let doubling = 2u32.saturating_pow(attempt.min(30));
        let full = self.first.saturating_mul(doubling).min(self.max);
        let half = full / 2;
        let spread = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        let extra = match spread {
            0 => 0,
            _ => random_u64() % (spread + 1),
        };
        half + Duration::from_millis(extra)
    }
}

/// The one source of jitter. The OS's random numbers cost one system call per delay, and delays
/// only happen on failures; if the call fails, no jitter is a safe answer.
fn random_u64() -> u64 {
    getrandom::u64().unwrap_or(0)
}

/// Sleeps until `deadline`, or forever when there is none (one arm of a `select!`).
pub async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_with_jitter_in_their_upper_half_up_to_the_cap() {
        let b = Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        let ms = Duration::from_millis;
        for _ in 0..50 {
            let first = b.delay(0);
            assert!(first >= ms(50) && first <= ms(100), "{first:?}");
            let third = b.delay(2);
            assert!(third >= ms(200) && third <= ms(400), "{third:?}");
            let capped = b.delay(40);
            assert!(capped >= ms(500) && capped <= ms(1000), "{capped:?}");
        }
        let spread: std::collections::HashSet<Duration> = (0..50).map(|_| b.delay(3)).collect();
        assert!(spread.len() > 1, "no jitter: {spread:?}");
    }
}
