//! Flap damping: counts how often the recommendation changes direction, and when that happens
//! more often per hour than the policy allows, scale-downs wait for the highest recommendation of
//! the whole hour instead of following each swing.

use std::time::Duration;

use jiff::Timestamp;

use super::elapsed;

/// Look-back for direction changes and for the capacity held while flapping.
pub const FLAP_WINDOW: Duration = Duration::from_secs(3600);
/// Direction changes remembered, at most.
pub const MAX_TURNS: usize = 64;

/// Smallest swing, in replicas, that counts as a direction change: a recommendation that
/// wobbles by one broker around a boundary is noise, not flapping.
pub const MIN_SWING: u32 = 2;

/// Smallest gap, in replicas, between the flap level and a swing's low step for which the swing
/// is followed down in two steps (to the middle between them, then to the low step) instead of
/// one: on a long swing one step keeps the crest's brokers through most of the fall, while the
/// scale-down window would already allow half of it.
pub const TWO_STEP_SWING: u32 = 4;

/// Smallest gap, in replicas, between the flap level and a swing's low step for which a rise
/// that only the forecast asks for goes up in two steps too (to the middle, then to the level).
/// Each step costs an action a swing: from 4 or 5 brokers up that spent more than half the
/// HPA's actions on a measured swing, from 6 on it did not.
pub const TWO_STEP_RISE: u32 = 6;

/// Direction changes of the recommendation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Turns {
    /// Times at which the recommendation changed direction, oldest first.
    pub times: Vec<Timestamp>,
    /// Direction of the current run: 1 up, -1 down.
    pub last_direction: Option<i8>,
    /// Highest (in an up run) or lowest (in a down run) recommendation of the current run.
    pub extreme: Option<u32>,
}

impl Turns {
    /// Notes a recommendation of `now` that follows `previous`; forgets turns older than the
    /// window. A turn counts once the recommendation has moved [`MIN_SWING`] back from the
    /// run's extreme.
    pub fn note(&mut self, previous: Option<u32>, recommendation: u32, now: Timestamp) {
        let r = recommendation;
        match (self.last_direction, self.extreme) {
            (Some(d), Some(e)) => {
                let beyond = if d > 0 { r > e } else { r < e };
                if beyond {
                    self.extreme = Some(r);
                } else if r.abs_diff(e) >= MIN_SWING {
                    self.times.push(now);
                    self.last_direction = Some(-d);
                    self.extreme = Some(r);
                }
            }
            _ => {
                if let Some(p) = previous
                    && p != r
                {
                    self.last_direction = Some(if r > p { 1 } else { -1 });
                    self.extreme = Some(r);
                }
            }
        }
        self.times.retain(|t| elapsed(now, *t) <= FLAP_WINDOW);
        let excess = self.times.len().saturating_sub(MAX_TURNS);
        self.times.drain(..excess);
    }

    /// Direction changes within the window before `now`.
    pub fn within(&self, now: Timestamp) -> usize {
        self.times
            .iter()
            .filter(|t| elapsed(now, **t) <= FLAP_WINDOW && **t <= now)
            .count()
    }

    /// Whether the load counts as flapping at `now` with `limit` changes per hour.
    pub fn flapping(&self, now: Timestamp, limit: u32) -> bool {
        self.within(now) >= limit as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn counts_swings_not_steps_or_wobbles() {
        let mut t = Turns::default();
        let recs = [5, 6, 7, 7, 6, 7, 6, 5, 4, 5, 6, 7, 8, 7, 6];
        let mut prev = None;
        for (i, r) in recs.into_iter().enumerate() {
            t.note(prev, r, at(i as i64 * 60));
            prev = Some(r);
        }
        // 7→6→7 is a wobble; turns at 7→5 (7 min), 4→6 (10 min), 8→6 (14 min).
        assert_eq!(t.times, vec![at(420), at(600), at(840)]);
        assert_eq!(t.within(at(840)), 3);
        assert!(t.flapping(at(840), 3));
        assert!(!t.flapping(at(840), 4));
    }

    #[test]
    fn old_turns_are_forgotten() {
        let mut t = Turns::default();
        t.note(Some(5), 7, at(0));
        t.note(Some(7), 5, at(10));
        assert_eq!(t.within(at(10)), 1);
        t.note(Some(5), 5, at(3700));
        assert_eq!(t.within(at(3700)), 0);
        assert!(t.times.is_empty());
    }
}
