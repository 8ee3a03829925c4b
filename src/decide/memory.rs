//! What the broker engine remembers between evaluations; lives in the resource status so a
//! restarted controller continues the same stabilization windows and cooldowns.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Action, elapsed};
use crate::api::{BrokerStatus, Recommendation};

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

    /// Reads the memory back from a status. Status times have whole seconds; each is read as the
    /// latest instant it may stand for, so a window or cooldown never ends early after a restart.
    pub fn from_status(status: &BrokerStatus) -> Self {
        let late = |t: Timestamp| {
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
        }
    }

    /// Writes the memory into a status.
    pub fn write_status(&self, status: &mut BrokerStatus) {
        status.recommendations = self
            .recommendations
            .iter()
            .map(|(t, r)| Recommendation {
                time: Time(*t),
                replicas: *r as i32,
            })
            .collect();
        status.last_scale_up_time = self.last_scale_up.map(Time);
        status.last_scale_down_time = self.last_scale_down.map(Time);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
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
    fn forgets_what_no_window_sees() {
        let mut m = BrokerMemory::default();
        m.record(at(0), 3, Duration::from_secs(60));
        m.record(at(100), 4, Duration::from_secs(60));
        assert_eq!(m.recommendations, vec![(at(100), 4)]);
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
}
