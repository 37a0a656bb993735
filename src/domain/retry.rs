//! The whole retry policy in one place: exponential backoff with full jitter, `Retry-After`
//! honoured (clamped), and the decision between retrying and failing for good.

use std::time::Duration;

use rand::Rng;

/// Backoff settings; global defaults, with `max_attempts` overridable per endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay ceiling after the first failure; doubles with each further failure.
    pub base: Duration,
    /// Longest delay between two attempts, and the clamp for `Retry-After`.
    pub max_delay: Duration,
    /// Attempts before a delivery fails for good.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    /// 15 attempts; ceilings of 10 s, 20 s, 40 s, … capped at 6 h: the last attempt comes
    /// about 21 hours after the first on average (full jitter halves the 42 h of ceilings).
    fn default() -> Self {
        Self {
            base: Duration::from_secs(10),
            max_delay: Duration::from_secs(6 * 3600),
            max_attempts: 15,
        }
    }
}

impl RetryPolicy {
    /// Ceiling of the delay after failed attempt number `attempt` (1-based):
    /// `min(max_delay, base * 2^(attempt-1))`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
        self.base.saturating_mul(factor).min(self.max_delay)
    }

    /// Delay before the next attempt after failed attempt `attempt`: uniform in
    /// `[0, ceiling]` (full jitter), unless the destination asked for a delay with
    /// `Retry-After`, which is honoured up to `max_delay`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_delay);
        }
        let ceiling = self.ceiling(attempt);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::thread_rng().gen_range(0..=millis))
    }

    /// After retryable failed attempt `attempt` of a delivery allowed `max_attempts`: the
    /// delay before the next attempt, or `None` when the attempts are used up and the
    /// delivery fails for good.
    pub fn next_delay(
        &self,
        attempt: u32,
        max_attempts: u32,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        (attempt < max_attempts).then(|| self.delay(attempt, retry_after))
    }
}

/// Parses a `Retry-After` value: delay seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate_parse(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn httpdate_parse(value: &str) -> Option<std::time::SystemTime> {
    let parsed = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let secs = u64::try_from(parsed.timestamp()).ok()?;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(10),
            max_delay: Duration::from_secs(100),
            max_attempts: 5,
        }
    }

    #[test]
    fn ceilings_double_and_cap() {
        let p = policy();
        assert_eq!(p.ceiling(1), Duration::from_secs(10));
        assert_eq!(p.ceiling(2), Duration::from_secs(20));
        assert_eq!(p.ceiling(3), Duration::from_secs(40));
        assert_eq!(p.ceiling(5), Duration::from_secs(100));
        assert_eq!(p.ceiling(200), Duration::from_secs(100));
    }

    #[test]
    fn jitter_stays_within_ceiling_and_spreads() {
        let p = policy();
        let delays: Vec<_> = (0..200).map(|_| p.delay(3, None)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(40)));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 50, "full jitter should spread delays");
    }

    #[test]
    fn retry_after_is_honoured_and_clamped() {
        let p = policy();
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(42))),
            Duration::from_secs(42)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(4200))),
            Duration::from_secs(100)
        );
    }

    #[test]
    fn attempts_run_out() {
        let p = policy();
        assert!(p.next_delay(1, 3, None).is_some());
        assert_eq!(
            p.next_delay(2, 3, Some(Duration::from_secs(7))),
            Some(Duration::from_secs(7))
        );
        assert_eq!(p.next_delay(3, 3, None), None);
        assert_eq!(p.next_delay(4, 3, None), None);
    }

    #[test]
    fn retry_after_forms_parse() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
