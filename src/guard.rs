//! Rate limiters (per policy and controller-wide) and last-line safety clamps.
//!
//! A limited action is dropped and reported, never queued to fire later unseen. The limiters run
//! on a clock the caller drives with `now`, so the controller and a backtest behave the same.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, FakeRelativeClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use jiff::Timestamp;

use crate::decide::{Action, Decision, elapsed};
use crate::policy::{BookiePolicy, BrokerPolicy, RateLimit};

type Limiter = RateLimiter<
    NotKeyed,
    InMemoryState,
    FakeRelativeClock,
    NoOpMiddleware<<FakeRelativeClock as Clock>::Instant>,
>;

/// A token bucket on its own caller-driven clock.
struct Bucket {
    limit: RateLimit,
    limiter: Limiter,
    clock: FakeRelativeClock,
    epoch: Timestamp,
    position: Duration,
}

impl Bucket {
    fn new(limit: RateLimit, epoch: Timestamp) -> Self {
        let per_hour = NonZeroU32::new(limit.actions_per_hour.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limit.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::direct_with_clock(
            Quota::per_hour(per_hour).allow_burst(burst),
            clock.clone(),
        );
        Bucket {
            limit,
            limiter,
            clock,
            epoch,
            position: Duration::ZERO,
        }
    }

    /// Moves the clock to `now`; never backwards (a wall clock that steps back must not refill).
    fn advance_to(&mut self, now: Timestamp) {
        let target = elapsed(now, self.epoch);
        if target > self.position {
            self.clock.advance(target - self.position);
            self.position = target;
        }
    }

    /// Takes a token at `now`; when none is left, returns the wait until the next one.
    fn take(&mut self, now: Timestamp) -> Option<Duration> {
        self.advance_to(now);
        match self.limiter.check() {
            Ok(()) => None,
            Err(not_until) => Some(not_until.wait_time_from(self.clock.now())),
        }
    }
}

/// Why an action was not allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead.
    Allowed,
    /// Dropped by a rate limit; the text says which and when the next token comes.
    RateLimited(String),
    /// Refused by a safety clamp: the decision broke a rule it must never break.
    Unsafe(String),
}

/// Rate limiters for every policy plus one for the whole controller.
pub struct Guard {
    global: Option<Bucket>,
    global_limit: Option<RateLimit>,
    policies: HashMap<String, Bucket>,
}

impl Guard {
    /// A guard with an optional controller-wide limit (the `--max-actions-per-hour` flag).
    pub fn new(global: Option<RateLimit>) -> Self {
        Guard {
            global: None,
            global_limit: global,
            policies: HashMap::new(),
        }
    }

    /// Replays actions carried out before a restart (oldest first) into a policy's bucket, so
    /// a restarted controller does not grant a fresh burst. Call before the first `admit`.
    pub fn seed(&mut self, policy: &str, limit: RateLimit, past: &[Timestamp]) {
        let Some(first) = past.iter().min().copied() else {
            return;
        };
        let mut bucket = Bucket::new(limit, first);
        let mut times = past.to_vec();
        times.sort();
        for t in times {
            bucket.advance_to(t);
            let _ = bucket.limiter.check();
        }
        self.policies.insert(policy.to_string(), bucket);
    }

    /// Takes one token from the policy's and the controller's bucket, or says why not.
    /// The policy bucket is asked first, so a controller-wide drop still costs the policy a token:
    /// dropping is the conservative side.
    pub fn admit(&mut self, policy: &str, limit: RateLimit, now: Timestamp) -> Verdict {
        let bucket = self
            .policies
            .entry(policy.to_string())
            .or_insert_with(|| Bucket::new(limit, now));
        if bucket.limit != limit {
            *bucket = Bucket::new(limit, now);
        }
        if let Some(wait) = bucket.take(now) {
            return Verdict::RateLimited(format!(
                "policy rate limit {}/h (burst {}) exhausted; next action possible in {}",
                limit.actions_per_hour,
                limit.burst,
                crate::decide::units::duration(wait)
            ));
        }
        if let Some(global_limit) = self.global_limit {
            let global = self
                .global
                .get_or_insert_with(|| Bucket::new(global_limit, now));
            if let Some(wait) = global.take(now) {
                return Verdict::RateLimited(format!(
                    "controller-wide rate limit {}/h (burst {}) exhausted; next action possible in {}",
                    global_limit.actions_per_hour,
                    global_limit.burst,
                    crate::decide::units::duration(wait)
                ));
            }
        }
        Verdict::Allowed
    }

    /// Whether the policy already has a bucket.
    pub fn knows(&self, policy: &str) -> bool {
        self.policies.contains_key(policy)
    }

    /// Forgets a policy that no longer exists.
    pub fn forget(&mut self, policy: &str) {
        self.policies.remove(policy);
    }
}

/// Last-line checks on a broker decision, independent of how it was computed.
pub fn check_brokers(policy: &BrokerPolicy, decision: &Decision) -> Verdict {
    let (from, to) = (decision.from, decision.to);
    let (min, max) = (
        u64::from(policy.min_replicas),
        u64::from(policy.max_replicas),
    );
    match decision.action {
        Action::ScaleUp if to <= from => {
            Verdict::Unsafe(format!("scale-up from {from} to {to} is not an increase"))
        }
        Action::ScaleDown if to >= from => {
            Verdict::Unsafe(format!("scale-down from {from} to {to} is not a decrease"))
        }
        Action::ScaleUp | Action::ScaleDown if !(min..=max).contains(&to) => {
            Verdict::Unsafe(format!("{to} replicas is outside [{min}, {max}]"))
        }
        Action::Expand => Verdict::Unsafe("brokers cannot be expanded".into()),
        _ => Verdict::Allowed,
    }
}

/// Last-line checks on a claim decision: never shrink, never past maxSize.
pub fn check_claim(policy: &BookiePolicy, decision: &Decision) -> Verdict {
    match decision.action {
        Action::Expand if decision.to <= decision.from => Verdict::Unsafe(format!(
            "{} → {} bytes would not grow the claim",
            decision.from, decision.to
        )),
        Action::Expand if decision.to > policy.max_size => Verdict::Unsafe(format!(
            "{} bytes is past maxSize {}",
            decision.to, policy.max_size
        )),
        Action::Hold | Action::Expand => Verdict::Allowed,
        Action::ScaleUp | Action::ScaleDown => Verdict::Unsafe("claims cannot be scaled".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    const LIMIT: RateLimit = RateLimit {
        actions_per_hour: 6,
        burst: 2,
    };

    #[test]
    fn burst_then_one_per_period() {
        let mut g = Guard::new(None);
        assert_eq!(g.admit("a", LIMIT, at(0)), Verdict::Allowed);
        assert_eq!(g.admit("a", LIMIT, at(1)), Verdict::Allowed);
        let Verdict::RateLimited(why) = g.admit("a", LIMIT, at(2)) else {
            panic!("third action must be limited")
        };
        assert!(why.contains("6/h"), "{why}");
        // 6/h replenishes one token every 10 minutes.
        assert!(matches!(
            g.admit("a", LIMIT, at(590)),
            Verdict::RateLimited(_)
        ));
        assert_eq!(g.admit("a", LIMIT, at(601)), Verdict::Allowed);
        // Other policies have their own bucket.
        assert_eq!(g.admit("b", LIMIT, at(601)), Verdict::Allowed);
    }

    #[test]
    fn controller_wide_limit_applies_across_policies() {
        let mut g = Guard::new(Some(RateLimit {
            actions_per_hour: 1,
            burst: 1,
        }));
        assert_eq!(g.admit("a", LIMIT, at(0)), Verdict::Allowed);
        let Verdict::RateLimited(why) = g.admit("b", LIMIT, at(1)) else {
            panic!("global limit must apply")
        };
        assert!(why.starts_with("controller-wide"), "{why}");
    }

    #[test]
    fn seeded_history_leaves_no_fresh_burst() {
        let mut g = Guard::new(None);
        g.seed("a", LIMIT, &[at(0), at(10)]);
        assert!(matches!(
            g.admit("a", LIMIT, at(20)),
            Verdict::RateLimited(_)
        ));
    }

    #[test]
    fn a_clock_that_steps_back_does_not_refill() {
        let mut g = Guard::new(None);
        let one = RateLimit {
            actions_per_hour: 1,
            burst: 1,
        };
        assert_eq!(g.admit("a", one, at(1000)), Verdict::Allowed);
        assert!(matches!(g.admit("a", one, at(0)), Verdict::RateLimited(_)));
    }
}
