//! The forecast horizon: how long a scale-up takes to help. Under `horizon: auto` it is measured
//! on the cluster itself, from a carried-out scale-up until every broker reports load.

use std::time::Duration;

use jiff::Timestamp;

use super::memory::AheadMemory;
use super::{Sample, elapsed, units};
use crate::policy::ForecastPolicy;

/// A scale-up whose brokers have not reported by then is given up on (not measured).
pub const GIVE_UP: Duration = Duration::from_secs(1800);

/// Follows the newest carried-out scale-up until its brokers report, and records the time it took.
///
/// `last_scale_up` is the memory's, `current` the replicas now; a sample's `reporting` count says
/// how many brokers contributed. Sources that do not count reporting brokers never measure.
pub fn observe(
    ahead: &mut AheadMemory,
    last_scale_up: Option<Timestamp>,
    current: u32,
    samples: &[Option<Sample>],
    now: Timestamp,
) {
    if let Some(t) = last_scale_up
        && ahead.seen_scale_up.is_none_or(|seen| t > seen)
    {
        ahead.pending_scale_up = Some((t, current));
        ahead.seen_scale_up = Some(t);
    }
    let Some((started, replicas)) = ahead.pending_scale_up else {
        return;
    };
    if current < replicas || elapsed(now, started) > GIVE_UP {
        ahead.pending_scale_up = None;
        return;
    }
    let reporting = samples.iter().flatten().filter_map(|s| s.reporting).min();
    if reporting.is_some_and(|r| r >= replicas) {
        ahead.measured_horizon = Some((elapsed(now, started), now));
        ahead.pending_scale_up = None;
    }
}

/// The horizon to use and where it comes from, in words.
pub fn horizon(
    policy: &ForecastPolicy,
    ahead: &AheadMemory,
    unmeasured: Duration,
) -> (Duration, String) {
    match (policy.horizon, ahead.measured_horizon) {
        (Some(h), _) => (h, format!("horizon {} (set)", units::duration(h))),
        (None, Some((h, _))) => (
            h,
            format!(
                "horizon {} (measured: scale-up until its brokers reported)",
                units::duration(h)
            ),
        ),
        (None, None) => (
            unmeasured,
            format!("horizon {} (not measured yet)", units::duration(unmeasured)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn reporting(n: u32, t: i64) -> Vec<Option<Sample>> {
        vec![Some(Sample {
            value: 1.0,
            observed_at: at(t),
            reporting: Some(n),
        })]
    }

    #[test]
    fn measures_from_scale_up_until_every_broker_reports() {
        let mut a = AheadMemory::default();
        observe(&mut a, Some(at(0)), 6, &reporting(4, 15), at(15));
        assert_eq!(a.pending_scale_up, Some((at(0), 6)));
        observe(&mut a, Some(at(0)), 6, &reporting(5, 45), at(45));
        assert_eq!(a.measured_horizon, None);
        observe(&mut a, Some(at(0)), 6, &reporting(6, 75), at(75));
        assert_eq!(a.measured_horizon, Some((Duration::from_secs(75), at(75))));
        assert_eq!(a.pending_scale_up, None);
        // The same scale-up is not measured twice.
        observe(&mut a, Some(at(0)), 6, &reporting(6, 90), at(90));
        assert_eq!(a.measured_horizon, Some((Duration::from_secs(75), at(75))));
    }

    #[test]
    fn a_scale_down_before_readiness_cancels_the_measurement() {
        let mut a = AheadMemory::default();
        observe(&mut a, Some(at(0)), 6, &reporting(4, 15), at(15));
        observe(&mut a, Some(at(0)), 4, &reporting(4, 30), at(30));
        assert_eq!((a.pending_scale_up, a.measured_horizon), (None, None));
    }

    #[test]
    fn set_horizon_wins_over_measured() {
        let mut a = AheadMemory::default();
        let mut p = ForecastPolicy {
            horizon: None,
            flap_turns_per_hour: 4,
            interval: Duration::from_secs(15),
        };
        assert_eq!(
            horizon(&p, &a, Duration::from_secs(60)).0,
            Duration::from_secs(60)
        );
        a.measured_horizon = Some((Duration::from_secs(90), at(0)));
        assert_eq!(
            horizon(&p, &a, Duration::from_secs(60)).0,
            Duration::from_secs(90)
        );
        p.horizon = Some(Duration::from_secs(300));
        assert_eq!(
            horizon(&p, &a, Duration::from_secs(60)).0,
            Duration::from_secs(300)
        );
    }
}
