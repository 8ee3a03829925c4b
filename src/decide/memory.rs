//! What the broker engine remembers between evaluations; lives in the resource status so a
//! restarted controller continues the same stabilization windows and cooldowns.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::flap::{Crests, Turns};
use super::{Action, elapsed};
use crate::api::{BrokerStatus, FlapStatus, ForecastSeries, ForecastStatus, Recommendation};

/// Upper bound on remembered recommendations, whatever the windows.
pub const MAX_RECOMMENDATIONS: usize = 512;

/// Recommendation history and the times of the last changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BrokerMemory {
    /// `(time, replicas)` oldest first. A run of equal values keeps only its newest time,
    /// which loses nothing: a windowed min or max only asks whether the value was seen after
    /// the window's start.
    pub recommendations: Vec<(Timestamp, u32)>,
    /// Last scale-up carried out.
    pub last_scale_up: Option<Timestamp>,
    /// Last scale-down carried out.
    pub last_scale_down: Option<Timestamp>,
    /// What the forecast and flap damping remember; empty while `forecast` is off.
    pub ahead: AheadMemory,
    /// Brokers a scale-up added that do not carry their share of load yet; read from the
    /// rebalance status, never written by the engine.
    pub settling: Option<Settling>,
}

/// After a rebalance's last move, how long a broker-level rate may still count a moved bundle on
/// both brokers: the broker that lost it reports its old figure until its next stats refresh
/// (`statsUpdateFrequencyInSecs`, 60 s by default).
pub const SETTLE_AFTER_MOVES: Duration = Duration::from_secs(60);

/// Added brokers that a rebalance is still moving load onto.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settling {
    /// How many brokers the scale-up added.
    pub brokers: u32,
    /// When their numbers can be trusted again; `None` while bundles are still being moved.
    pub until: Option<Timestamp>,
}

impl Settling {
    /// Whether the added brokers still settle at `now`.
    pub fn active(&self, now: Timestamp) -> bool {
        self.brokers > 0 && self.until.is_none_or(|u| now < u)
    }
}

/// Entries of the running maximum of levels, at most (each is a distinct level).
pub const MAX_LEVELS: usize = 64;

/// Recent samples kept per metric for the trend, at most.
pub const MAX_FORECAST_SAMPLES: usize = 16;

/// Bounded memory of the forecast and of flap damping.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AheadMemory {
    /// Recent complete samples per metric name, oldest first.
    pub samples: Vec<(String, Vec<(Timestamp, f64)>)>,
    /// Last measured time from a scale-up until its brokers reported, and when it was measured.
    pub measured_horizon: Option<(Duration, Timestamp)>,
    /// A carried-out scale-up whose brokers have not all reported: when, and to how many.
    pub pending_scale_up: Option<(Timestamp, u32)>,
    /// The scale-up most recently taken into account (measured or pending).
    pub seen_scale_up: Option<Timestamp>,
    /// The last forecast, in words.
    pub last: Option<String>,
    /// Direction changes of the recommendation.
    pub turns: Turns,
    /// Whether scale-downs go no lower than the level the flap window's load needs.
    pub holding: bool,
    /// Running maximum of the fewest brokers that keep the load within tolerance: `(time,
    /// level)` oldest first with strictly falling levels, so the first entry still inside a
    /// window is that window's highest.
    pub levels: Vec<(Timestamp, u32)>,
    /// Why capacity is held, in words.
    pub flap_message: Option<String>,
    /// Crests of the level within the flap window.
    pub crests: Crests,
}

impl AheadMemory {
    /// Appends a sample of `metric`, keeping at most [`MAX_FORECAST_SAMPLES`].
    pub fn push_sample(&mut self, metric: &str, at: Timestamp, value: f64) {
        let i = match self.samples.iter().position(|(m, _)| m == metric) {
            Some(i) => i,
            None => {
                self.samples.push((metric.to_string(), Vec::new()));
                self.samples.len() - 1
            }
        };
        let series = &mut self.samples[i].1;
        if series.last().is_some_and(|(t, _)| *t >= at) {
            return;
        }
        series.push((at, value));
        let excess = series.len().saturating_sub(MAX_FORECAST_SAMPLES);
        series.drain(..excess);
    }

    /// Recent samples of `metric`, oldest first.
    pub fn series(&self, metric: &str) -> &[(Timestamp, f64)] {
        self.samples
            .iter()
            .find(|(m, _)| m == metric)
            .map_or(&[], |(_, s)| s.as_slice())
    }

    /// Notes the fewest brokers that keep the load of `now` within tolerance, and forgets what
    /// is older than `keep`.
    pub fn note_level(&mut self, now: Timestamp, level: u32, keep: Duration) {
        // An older entry at or below this level can never be a window's maximum again.
        while self.levels.last().is_some_and(|(_, l)| *l <= level) {
            self.levels.pop();
        }
        self.levels.push((now, level));
        self.levels.retain(|(t, _)| elapsed(now, *t) <= keep);
        let excess = self.levels.len().saturating_sub(MAX_LEVELS);
        self.levels.drain(..excess);
    }

    /// Highest level noted within `window` before `now`.
    pub fn level_within(&self, now: Timestamp, window: Duration) -> Option<u32> {
        self.levels
            .iter()
            .filter(|(t, _)| elapsed(now, *t) <= window && *t <= now)
            .map(|(_, l)| *l)
            .max()
    }

    /// Forgets the samples of `metric` (a gap, or data that cannot be trusted).
    pub fn clear_samples(&mut self, metric: &str) {
        self.samples.retain(|(m, _)| m != metric);
    }
}

impl BrokerMemory {
    /// Adds a recommendation and forgets what no window can see any more.
    pub fn record(&mut self, now: Timestamp, replicas: u32, keep: Duration) {
        if let Some(last) = self.recommendations.last_mut()
            && last.1 == replicas
        {
            last.0 = now;
        } else {
            self.recommendations.push((now, replicas));
        }
        self.recommendations
            .retain(|(t, _)| elapsed(now, *t) <= keep);
        let excess = self
            .recommendations
            .len()
            .saturating_sub(MAX_RECOMMENDATIONS);
        self.recommendations.drain(..excess);
    }

    /// Lowest and highest recommendation made within `window` before `now` (inclusive of now).
    pub fn range_within(&self, now: Timestamp, window: Duration) -> Option<(u32, u32)> {
        self.recommendations
            .iter()
            .filter(|(t, _)| elapsed(now, *t) <= window && *t <= now)
            .map(|(_, r)| *r)
            .fold(None, |acc, r| match acc {
                None => Some((r, r)),
                Some((lo, hi)) => Some((lo.min(r), hi.max(r))),
            })
    }

    /// Notes that an action was carried out at `now`.
    pub fn note_action(&mut self, action: Action, now: Timestamp) {
        match action {
            Action::ScaleUp => self.last_scale_up = Some(now),
            Action::ScaleDown => self.last_scale_down = Some(now),
            Action::Hold | Action::Expand => {}
        }
    }

    /// The newest broker change of either direction.
    pub fn last_change(&self) -> Option<Timestamp> {
        match (self.last_scale_up, self.last_scale_down) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Reads the memory back from a status. Status times read from the API server have whole
    /// seconds; each is read as the latest instant it may stand for, so a window or cooldown
    /// never ends early after a restart. A time with a fraction comes from the in-process copy
    /// and is exact: moving it too would push it later at every evaluation.
    pub fn from_status(status: &BrokerStatus) -> Self {
        let late = |t: Timestamp| {
            if t.subsec_nanosecond() != 0 {
                return t;
            }
            t.checked_add(jiff::SignedDuration::from_millis(999))
                .unwrap_or(t)
        };
        let mut recommendations: Vec<(Timestamp, u32)> = status
            .recommendations
            .iter()
            .filter(|r| r.replicas >= 0)
            .map(|r| (late(r.time.0), r.replicas as u32))
            .collect();
        recommendations.sort_by_key(|(t, _)| *t);
        BrokerMemory {
            recommendations,
            last_scale_up: status.last_scale_up_time.as_ref().map(|t| late(t.0)),
            last_scale_down: status.last_scale_down_time.as_ref().map(|t| late(t.0)),
            ahead: ahead_from_status(status),
            settling: settling_from_status(status),
        }
    }

    /// Writes the memory into a status.
    pub fn write_status(&self, status: &mut BrokerStatus) {
        status.recommendations = timed_to_status(&self.recommendations);
        status.last_scale_up_time = self.last_scale_up.map(Time);
        status.last_scale_down_time = self.last_scale_down.map(Time);
        ahead_to_status(&self.ahead, status);
    }
}

/// Added brokers still settling: while a rebalance waits or moves, and for
/// [`SETTLE_AFTER_MOVES`] after one that moved bundles finished. A failed or stopped rebalance
/// moves nothing more, so its brokers are counted like any other.
fn settling_from_status(status: &BrokerStatus) -> Option<Settling> {
    let r = status.rebalance.as_ref()?;
    let brokers = u32::try_from(r.to_replicas.saturating_sub(r.from_replicas)).ok()?;
    use super::rebalance::state;
    let until = match r.state.as_str() {
        state::WAITING | state::MOVING => None,
        state::DONE if r.bundles_moved > 0 => {
            let end = r.finished_at.as_ref()?.0;
            Some(end.checked_add(SETTLE_AFTER_MOVES).ok()?)
        }
        _ => return None,
    };
    Some(Settling { brokers, until })
}

/// Reads the forecast and flap memory back; sample times stay exact (they are the samples' own).
fn ahead_from_status(status: &BrokerStatus) -> AheadMemory {
    let mut ahead = AheadMemory::default();
    if let Some(f) = &status.forecast {
        ahead.samples = f
            .samples
            .iter()
            .map(|s| {
                let points = s.times.iter().zip(&s.values).map(|(t, v)| (t.0, *v));
                let mut points: Vec<_> = points.filter(|(_, v)| v.is_finite()).collect();
                points.sort_by_key(|(t, _)| *t);
                let excess = points.len().saturating_sub(MAX_FORECAST_SAMPLES);
                points.drain(..excess);
                (s.metric.clone(), points)
            })
            .collect();
        ahead.measured_horizon = f
            .measured_horizon_seconds
            .filter(|s| *s >= 0)
            .zip(f.measured_at.as_ref())
            .map(|(s, t)| (Duration::from_secs(s as u64), t.0));
        ahead.pending_scale_up = f
            .pending_scale_up
            .as_ref()
            .filter(|r| r.replicas >= 0)
            .map(|r| (r.time.0, r.replicas as u32));
        // Read late, like the scale-up times it is compared with.
        ahead.seen_scale_up = f.seen_scale_up.as_ref().map(|t| {
            t.0.checked_add(jiff::SignedDuration::from_millis(999))
                .unwrap_or(t.0)
        });
        ahead.last = f.last.clone();
    }
    if let Some(fl) = &status.flapping {
        let mut times: Vec<Timestamp> = fl.turns.iter().map(|t| t.0).collect();
        times.sort();
        let excess = times.len().saturating_sub(super::flap::MAX_TURNS);
        times.drain(..excess);
        ahead.turns = Turns {
            times,
            last_direction: fl
                .last_direction
                .map(|d| d.signum() as i8)
                .filter(|d| *d != 0),
            extreme: fl.extreme.filter(|e| *e >= 0).map(|e| e as u32),
        };
        ahead.holding = fl.holding;
        ahead.flap_message = fl.message.clone();
        ahead.levels = timed_from_status(&fl.levels, MAX_LEVELS);
        ahead.crests = Crests {
            peaks: timed_from_status(&fl.crests, super::flap::MAX_TURNS),
            rising: fl.level_rising,
            extreme: fl.level_extreme.filter(|e| *e >= 0).map(|e| e as u32),
        };
    }
    ahead
}

/// Replicas by time read from a status list: negative counts dropped, oldest first, at most the
/// newest `keep`.
fn timed_from_status(list: &[Recommendation], keep: usize) -> Vec<(Timestamp, u32)> {
    let mut v: Vec<(Timestamp, u32)> = list
        .iter()
        .filter(|r| r.replicas >= 0)
        .map(|r| (r.time.0, r.replicas as u32))
        .collect();
    v.sort_by_key(|(t, _)| *t);
    let excess = v.len().saturating_sub(keep);
    v.drain(..excess);
    v
}

/// Replicas by time as a status list.
fn timed_to_status(list: &[(Timestamp, u32)]) -> Vec<Recommendation> {
    list.iter()
        .map(|(t, r)| Recommendation {
            time: Time(*t),
            replicas: *r as i32,
        })
        .collect()
}

/// Writes the forecast and flap memory; nothing when there is nothing to remember.
fn ahead_to_status(ahead: &AheadMemory, status: &mut BrokerStatus) {
    let forecast_used = !ahead.samples.is_empty()
        || ahead.measured_horizon.is_some()
        || ahead.pending_scale_up.is_some()
        || ahead.seen_scale_up.is_some()
        || ahead.last.is_some();
    status.forecast = forecast_used.then(|| {
        Box::new(ForecastStatus {
            measured_horizon_seconds: ahead.measured_horizon.map(|(d, _)| d.as_secs() as i64),
            measured_at: ahead.measured_horizon.map(|(_, t)| Time(t)),
            pending_scale_up: ahead.pending_scale_up.map(|(t, r)| Recommendation {
                time: Time(t),
                replicas: r as i32,
            }),
            seen_scale_up: ahead.seen_scale_up.map(Time),
            samples: ahead
                .samples
                .iter()
                .map(|(m, s)| ForecastSeries {
                    metric: m.clone(),
                    times: s.iter().map(|(t, _)| Time(*t)).collect(),
                    values: s.iter().map(|(_, v)| *v).collect(),
                })
                .collect(),
            last: ahead.last.clone(),
        })
    });
    let flap_used = ahead.turns.last_direction.is_some()
        || ahead.holding
        || !ahead.levels.is_empty()
        || ahead.crests.extreme.is_some();
    status.flapping = flap_used.then(|| {
        Box::new(FlapStatus {
            holding: ahead.holding,
            turns_last_hour: ahead.turns.times.len() as i32,
            turns: ahead.turns.times.iter().map(|t| Time(*t)).collect(),
            last_direction: ahead.turns.last_direction.map(i32::from),
            extreme: ahead.turns.extreme.map(|e| e as i32),
            message: ahead.flap_message.clone(),
            levels: timed_to_status(&ahead.levels),
            crests: timed_to_status(&ahead.crests.peaks),
            level_rising: ahead.crests.rising,
            level_extreme: ahead.crests.extreme.map(|e| e as i32),
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    /// The memory a successor reads back from the status `m` writes.
    fn through_status(m: &BrokerMemory) -> BrokerMemory {
        let mut status = BrokerStatus::default();
        m.write_status(&mut status);
        BrokerMemory::from_status(&status)
    }

    #[test]
    fn merges_runs_and_keeps_windows_exact() {
        let mut m = BrokerMemory::default();
        let keep = Duration::from_secs(600);
        for (s, r) in [(0, 5), (15, 5), (30, 7), (45, 7), (60, 4)] {
            m.record(at(s), r, keep);
        }
        assert_eq!(
            m.recommendations,
            vec![(at(15), 5), (at(45), 7), (at(60), 4)]
        );
        assert_eq!(
            m.range_within(at(60), Duration::from_secs(30)),
            Some((4, 7))
        );
        assert_eq!(
            m.range_within(at(60), Duration::from_secs(50)),
            Some((4, 7))
        );
        assert_eq!(m.range_within(at(60), Duration::from_secs(0)), Some((4, 4)));
        // at(15) is 45 s old: inside a 45 s window, outside a 44 s one.
        assert_eq!(
            m.range_within(at(60), Duration::from_secs(45)),
            Some((4, 7))
        );
        assert_eq!(
            m.range_within(at(60), Duration::from_secs(44)).map(|r| r.1),
            Some(7)
        );
    }

    #[test]
    fn levels_keep_the_highest_of_any_window() {
        let mut a = AheadMemory::default();
        let keep = Duration::from_secs(3600);
        for (t, l) in [(0, 7), (60, 9), (120, 8), (180, 8), (240, 5)] {
            a.note_level(at(t), l, keep);
        }
        // 7 can never be a maximum again once 9 came after it; the equal 8 replaces the older.
        assert_eq!(a.levels, vec![(at(60), 9), (at(180), 8), (at(240), 5)]);
        assert_eq!(a.level_within(at(240), keep), Some(9));
        assert_eq!(a.level_within(at(240), Duration::from_secs(150)), Some(8));
        assert_eq!(a.level_within(at(240), Duration::ZERO), Some(5));
        // An hour later only the newest is inside the window.
        a.note_level(at(3900), 4, keep);
        assert_eq!(a.levels, vec![(at(3900), 4)]);
        // And the levels survive a status round trip.
        let m = BrokerMemory {
            ahead: a,
            ..BrokerMemory::default()
        };
        assert_eq!(through_status(&m).ahead.levels, m.ahead.levels);
    }

    #[test]
    fn crests_survive_a_status_round_trip() {
        let mut a = AheadMemory::default();
        for (t, l) in [(0, 5), (60, 7), (120, 5), (180, 8), (240, 7), (300, 6)] {
            a.crests.note(l, at(t));
        }
        assert_eq!(a.crests.peaks, vec![(at(120), 7), (at(300), 8)]);
        let m = BrokerMemory {
            ahead: a,
            ..BrokerMemory::default()
        };
        assert_eq!(through_status(&m).ahead.crests, m.ahead.crests);
    }

    #[test]
    fn forgets_what_no_window_sees() {
        let mut m = BrokerMemory::default();
        m.record(at(0), 3, Duration::from_secs(60));
        m.record(at(100), 4, Duration::from_secs(60));
        assert_eq!(m.recommendations, vec![(at(100), 4)]);
    }

    #[test]
    fn the_horizon_is_measured_across_status_round_trips() {
        use crate::decide::{Sample, horizon};
        let reporting = |n: u32, t: i64| {
            vec![Some(Sample {
                value: 1.0,
                observed_at: at(t),
                reporting: Some(n),
            })]
        };
        // A scale-up to 6 is carried out at 0; the controller reads its memory back from the
        // status before every evaluation.
        let mut m = BrokerMemory::default();
        m.note_action(Action::ScaleUp, at(0));
        let mut m = through_status(&m);
        for (t, n) in [(15, 4), (30, 5), (45, 6)] {
            let last = m.last_scale_up;
            horizon::observe(&mut m.ahead, last, 6, &reporting(n, t), at(t));
            m = through_status(&m);
        }
        let (h, _) = m.ahead.measured_horizon.expect("measured");
        // Status times are whole seconds read as late as they may be: 45 s less up to 999 ms.
        assert_eq!(h.as_secs(), 44);
        // And the same scale-up is not measured again after another round trip.
        let last = m.last_scale_up;
        horizon::observe(&mut m.ahead, last, 6, &reporting(6, 300), at(300));
        assert_eq!(m.ahead.measured_horizon.map(|(h, _)| h.as_secs()), Some(44));
    }

    #[test]
    fn round_trips_through_status() {
        let mut m = BrokerMemory::default();
        m.record(at(0), 3, Duration::from_secs(600));
        m.record(at(15), 6, Duration::from_secs(600));
        m.note_action(Action::ScaleUp, at(15));
        let mut status = BrokerStatus::default();
        m.write_status(&mut status);
        let json = serde_json::to_string(&status).unwrap();
        let back: BrokerStatus = serde_json::from_str(&json).unwrap();
        let read = BrokerMemory::from_status(&back);
        let late = |t: Timestamp| t + jiff::SignedDuration::from_millis(999);
        assert_eq!(
            read.recommendations,
            vec![(late(at(0)), 3), (late(at(15)), 6)]
        );
        assert_eq!(read.last_scale_up, Some(late(at(15))));
        assert_eq!(read.last_scale_down, None);
    }

    #[test]
    fn the_in_process_status_is_read_back_exactly_every_evaluation() {
        // Times with a fraction never went through the API server: an evaluation every 2 s
        // must not push the last action later each time (a 40 s cooldown lasting 80 s).
        let acted = at(15) + jiff::SignedDuration::from_millis(250);
        let mut m = BrokerMemory::default();
        m.note_action(Action::ScaleUp, acted);
        for _ in 0..10 {
            let mut status = BrokerStatus::default();
            m.write_status(&mut status);
            m = BrokerMemory::from_status(&status);
        }
        assert_eq!(m.last_scale_up, Some(acted));
    }
}
