//! Retry policy: exponential backoff with jitter. The only module that uses the `backoff`
//! crate (flagged unmaintained by RustSec), so it can be swapped in a day.

use std::time::Duration;

use backoff::backoff::Backoff as _;
use backoff::ExponentialBackoff;

use crate::error::ConfigError;

/// How often and how patiently a handler is retried on transient errors.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial: Duration,
    max_delay: Duration,
    multiplier: f64,
    jitter: f64,
}

impl Default for RetryPolicy {
    /// 5 attempts, 100 ms doubling up to 10 s, ±50 % jitter.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.5,
        }
    }
}

impl RetryPolicy {
    /// Start from the defaults.
    pub fn builder() -> RetryPolicyBuilder {
        RetryPolicyBuilder(Self::default())
    }

    /// Attempts in total, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The delays before retries 2, 3, … `max_attempts` (jittered): for code outside the
    /// runtime that retries with the same policy (model clients, tools).
    pub fn delays(&self) -> impl Iterator<Item = Duration> {
        let mut s = self.schedule();
        (1..self.max_attempts).map(move |_| s.next_delay())
    }

    pub(crate) fn schedule(&self) -> Schedule {
        Schedule(ExponentialBackoff {
            current_interval: self.initial,
            initial_interval: self.initial,
            randomization_factor: self.jitter,
            multiplier: self.multiplier,
            max_interval: self.max_delay,
            max_elapsed_time: None,
            ..ExponentialBackoff::default()
        })
    }
}

/// Builder for [`RetryPolicy`].
#[derive(Clone, Debug)]
pub struct RetryPolicyBuilder(RetryPolicy);

impl RetryPolicyBuilder {
    /// Attempts in total (>= 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.0.max_attempts = n;
        self
    }
    /// First delay.
    pub fn initial_delay(mut self, d: Duration) -> Self {
        self.0.initial = d;
        self
    }
    /// Largest delay.
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.0.max_delay = d;
        self
    }
    /// Growth factor (>= 1).
    pub fn multiplier(mut self, m: f64) -> Self {
        self.0.multiplier = m;
        self
    }
    /// Randomisation factor in [0, 1]: each delay is drawn from `d * (1 ± jitter)`.
    pub fn jitter(mut self, j: f64) -> Self {
        self.0.jitter = j;
        self
    }
    /// Validate and build.
    pub fn build(self) -> Result<RetryPolicy, ConfigError> {
        let p = self.0;
        if p.max_attempts == 0 {
            return Err(ConfigError::new("retry max_attempts must be at least 1"));
        }
        if !(p.multiplier >= 1.0 && p.multiplier.is_finite()) {
            return Err(ConfigError::new(
                "retry multiplier must be a finite number >= 1",
            ));
        }
        if !(0.0..=1.0).contains(&p.jitter) {
            return Err(ConfigError::new("retry jitter must be within [0, 1]"));
        }
        if p.initial > p.max_delay {
            return Err(ConfigError::new("retry initial delay exceeds max delay"));
        }
        Ok(p)
    }
}

/// The delays of one input's retries.
pub(crate) struct Schedule(ExponentialBackoff);

impl Schedule {
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.0.next_backoff().unwrap_or(self.0.max_interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_within_jitter_and_cap() {
        let p = RetryPolicy::builder()
            .initial_delay(Duration::from_millis(100))
            .max_delay(Duration::from_millis(400))
            .jitter(0.5)
            .build()
            .expect("valid");
        let mut s = p.schedule();
        let d: Vec<Duration> = (0..6).map(|_| s.next_delay()).collect();
        assert!(
            d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(150),
            "{d:?}"
        );
        assert!(
            d[1] >= Duration::from_millis(100) && d[1] <= Duration::from_millis(300),
            "{d:?}"
        );
        assert!(d.iter().all(|x| *x <= Duration::from_millis(600)), "{d:?}");
    }

    #[test]
    fn rejects_nonsense() {
        assert!(RetryPolicy::builder().max_attempts(0).build().is_err());
        assert!(RetryPolicy::builder().jitter(2.0).build().is_err());
        assert!(RetryPolicy::builder().multiplier(0.5).build().is_err());
    }
}
