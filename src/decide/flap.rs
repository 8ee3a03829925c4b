//! Flap damping: counts how often the recommendation changes direction, and when that happens
//! more often per hour than the policy allows, capacity is held at what the swings of the hour
//! needed (their crests) instead of following each swing broker by broker; the swings' crests
//! also give their period, which spaces the troughs followed below that hold.

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

/// A trough below what the load's crests need is followed at most once every this many swing
/// periods (no action in between): a follow is two actions (down, then up with the next crest),
/// and the HPA spends about two on every swing it follows, so this keeps the actions near a
/// third of its own. At two swings the budget was exactly the HPA's half.
pub const TROUGH_EVERY_SWINGS: u32 = 3;

/// Crests within the flap window from which the swings count as regular: what most of them
/// needed is held, and their period spaces the troughs followed.
pub const MIN_CRESTS: usize = 3;

/// What a new value does to a rising or falling run whose extreme (highest or lowest so far)
/// is `extreme`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    /// Beyond the extreme: the run goes on, with the value as its new extreme.
    Further,
    /// [`MIN_SWING`] or more back from the extreme: the run has turned.
    Turned,
    /// Neither: a wobble within the run.
    Within,
}

/// How `value` moves a run that is `rising` (or falling) with `extreme` so far.
fn step(rising: bool, extreme: u32, value: u32) -> Step {
    if (rising && value > extreme) || (!rising && value < extreme) {
        Step::Further
    } else if value.abs_diff(extreme) >= MIN_SWING {
        Step::Turned
    } else {
        Step::Within
    }
}

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
            (Some(d), Some(e)) => match step(d > 0, e, r) {
                Step::Further => self.extreme = Some(r),
                Step::Turned => {
                    self.times.push(now);
                    self.last_direction = Some(-d);
                    self.extreme = Some(r);
                }
                Step::Within => {}
            },
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

    /// Whether the load counts as flapping at `now` with `limit` changes per hour, given whether
    /// it did before (`was`): it starts at `limit` changes within the window and ends once fewer
    /// than `limit - 1` (at least one) remain. A swing of exactly an hour turns exactly twice an
    /// hour, and at a `limit` of 2 its count fell to one for a moment before each turn: the hold
    /// lapsed then, a broker-by-broker step slipped through, and `Flapping` turned True again
    /// with a new Event.
    pub fn flapping(&self, now: Timestamp, limit: u32, was: bool) -> bool {
        let needed = if was {
            limit.saturating_sub(1).max(1)
        } else {
            limit
        };
        self.within(now) >= needed as usize
    }
}

/// Crests of the level (the fewest brokers that keep the load within tolerance): the highest
/// level of each swing, noted once the level has fallen [`MIN_SWING`] below it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Crests {
    /// `(time the crest was left, crest level)`, oldest first.
    pub peaks: Vec<(Timestamp, u32)>,
    /// Whether the level is in a rising run (`Some(true)`) or a falling one.
    pub rising: Option<bool>,
    /// Highest (rising) or lowest (falling) level of the current run.
    pub extreme: Option<u32>,
}

impl Crests {
    /// Notes the level of `now`; forgets crests older than the window.
    pub fn note(&mut self, level: u32, now: Timestamp) {
        match (self.rising, self.extreme) {
            (Some(rising), Some(e)) => match step(rising, e, level) {
                Step::Further => self.extreme = Some(level),
                Step::Turned => {
                    if rising {
                        self.peaks.push((now, e));
                    }
                    self.rising = Some(!rising);
                    self.extreme = Some(level);
                }
                Step::Within => {}
            },
            _ => {
                // The first run rises: a crest needs a fall behind it to count.
                self.rising = Some(true);
                self.extreme = Some(level);
            }
        }
        self.peaks.retain(|(t, _)| elapsed(now, *t) <= FLAP_WINDOW);
        let excess = self.peaks.len().saturating_sub(MAX_TURNS);
        self.peaks.drain(..excess);
    }

    /// Levels of the crests left within the window before `now`.
    fn levels_within(&self, now: Timestamp) -> impl Iterator<Item = u32> + '_ {
        self.peaks
            .iter()
            .filter(move |(t, _)| elapsed(now, *t) <= FLAP_WINDOW && *t <= now)
            .map(|(_, l)| *l)
    }

    /// Crests left within the window before `now`: the swings seen in it.
    pub fn within(&self, now: Timestamp) -> usize {
        self.levels_within(now).count()
    }

    /// The level most crests of the window needed: the lower median of the crests left within
    /// the window, `None` with fewer than [`MIN_CRESTS`] of them.
    pub fn typical(&self, now: Timestamp) -> Option<u32> {
        let mut v: Vec<u32> = self.levels_within(now).collect();
        if v.len() < MIN_CRESTS {
            return None;
        }
        v.sort_unstable();
        Some(v[(v.len() - 1) / 2])
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
        assert!(t.flapping(at(840), 3, false));
        assert!(!t.flapping(at(840), 4, false));
    }

    #[test]
    fn flapping_ends_one_turn_below_where_it_starts() {
        let mut t = Turns::default();
        t.note(Some(5), 7, at(0));
        // Turns at 10 and 40 minutes: two within the hour.
        t.note(Some(7), 5, at(600));
        t.note(Some(5), 7, at(2400));
        assert!(t.flapping(at(2400), 2, false));
        // Just after 70 minutes the first turn has left the window: one remains.
        t.note(Some(7), 7, at(4201));
        assert_eq!(t.within(at(4201)), 1);
        assert!(
            !t.flapping(at(4201), 2, false),
            "one turn does not start it"
        );
        assert!(t.flapping(at(4201), 2, true), "one turn keeps it");
        assert!(
            !t.flapping(at(4201), 3, true),
            "two fewer than the limit end it"
        );
        // An hour after the last turn none remain, and it ends even at a limit of 2.
        t.note(Some(7), 7, at(6001));
        assert!(!t.flapping(at(6001), 2, true));
    }

    #[test]
    fn a_crest_counts_once_the_level_has_fallen_from_it() {
        let mut c = Crests::default();
        // 7 → 6 is a wobble, not a crest; 8 is left at 9 min, 7 at 14 min; the last rise to 9
        // has not fallen yet.
        let levels = [5, 6, 7, 6, 7, 8, 7, 6, 5, 6, 7, 6, 5, 7, 9];
        for (i, l) in levels.into_iter().enumerate() {
            c.note(l, at(i as i64 * 60));
        }
        assert_eq!(c.peaks, vec![(at(420), 8), (at(720), 7)]);
        assert_eq!(c.typical(at(840)), None, "two crests are too few to say");
        c.note(7, at(900));
        assert_eq!(c.peaks.last(), Some(&(at(900), 9)));
        // 8, 7, 9: the lower median, 8; with another 9 still 8.
        assert_eq!(c.typical(at(900)), Some(8));
        for (t, l) in [(960, 9), (1020, 7)] {
            c.note(l, at(t));
        }
        assert_eq!(c.typical(at(1020)), Some(8));
        assert_eq!(c.within(at(1020)), 4, "four swings seen");
        // An hour after the first crests, only the newer ones count.
        c.note(7, at(420 + 3601));
        assert_eq!(c.peaks, vec![(at(720), 7), (at(900), 9), (at(1020), 9)]);
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
