//! A circuit breaker per action endpoint: after `threshold` failures in a
//! row the endpoint is not called for `cool_down`; then one probe is let
//! through (half-open), whose success closes the circuit again and whose
//! failure opens it for another `cool_down`. A server that is down costs
//! its users an immediate answer instead of a deadline each, and gets room
//! to recover.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    /// The gauge value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cool_down: Duration,
    failures: u32,
    /// While open: when a probe may go.
    open_until: Option<Instant>,
    /// A half-open probe is in flight; others are refused meanwhile.
    probing: bool,
}

impl Breaker {
    pub fn new(threshold: u32, cool_down: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cool_down,
            failures: 0,
            open_until: None,
            probing: false,
        }
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        match self.open_until {
            None => BreakerState::Closed,
            Some(t) if now >= t => BreakerState::HalfOpen,
            Some(_) => BreakerState::Open,
        }
    }

    /// May a call go now? A half-open breaker lets exactly one through.
    pub fn admit(&mut self, now: Instant) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen if self.probing => false,
            BreakerState::HalfOpen => {
                self.probing = true;
                true
            }
        }
    }

    /// The endpoint answered as a healthy server does (a 2xx, or a 4xx
    /// that is the caller's fault).
    pub fn success(&mut self) {
        self.failures = 0;
        self.open_until = None;
        self.probing = false;
    }

    /// The endpoint failed (no connection, a deadline, a 5xx, a 429).
    pub fn failure(&mut self, now: Instant) {
        self.failures += 1;
        if self.probing || self.failures >= self.threshold {
            self.open_until = Some(now + self.cool_down);
        }
        self.probing = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_probes_once_and_closes_on_success() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(5));
        for _ in 0..2 {
            assert!(b.admit(t0));
            b.failure(t0);
        }
        assert_eq!(b.state(t0), BreakerState::Closed);
        b.failure(t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert!(!b.admit(t0 + Duration::from_secs(4)));
        let later = t0 + Duration::from_secs(5);
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert!(b.admit(later), "one probe goes");
        assert!(!b.admit(later), "and only one");
        b.success();
        assert_eq!(b.state(later), BreakerState::Closed);
        assert!(b.admit(later));
    }

    #[test]
    fn a_failed_probe_opens_it_again() {
        let t0 = Instant::now();
        let mut b = Breaker::new(1, Duration::from_secs(1));
        b.failure(t0);
        let later = t0 + Duration::from_secs(1);
        assert!(b.admit(later));
        b.failure(later);
        assert_eq!(b.state(later), BreakerState::Open);
        assert_eq!(
            b.state(later + Duration::from_secs(1)),
            BreakerState::HalfOpen
        );
    }

    #[test]
    fn success_resets_the_count() {
        let t0 = Instant::now();
        let mut b = Breaker::new(2, Duration::from_secs(1));
        b.failure(t0);
        b.success();
        b.failure(t0);
        assert_eq!(b.state(t0), BreakerState::Closed);
    }
}
