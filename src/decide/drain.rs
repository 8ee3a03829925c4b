//! Drain before scale-down, the pure part: which brokers leave, where their bundles go, how fast,
//! and what a round does with a drain in progress. The controller does the calls; everything it
//! decides about them is here, on a caller-driven clock.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

/// Ordinals of the brokers a scale-down from `from` to `to` removes: the highest, as a
/// StatefulSet removes them, highest first.
pub fn leaving(from: u32, to: u32) -> Vec<u32> {
    (to..from).rev().collect()
}

/// One bundle to move and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move<B> {
    /// The bundle.
    pub bundle: B,
    /// Broker id that owns it now.
    pub from: String,
    /// Broker id that receives it.
    pub to: String,
}

/// Assigns up to `budget` bundles of the leaving brokers to surviving brokers, each to the
/// survivor owning the fewest bundles at that point (ties: the smaller id), so the moved load
/// spreads evenly. `survivors` maps broker id to the bundles it owns now.
pub fn plan_moves<B: Clone>(
    leaving: &[(String, Vec<B>)],
    survivors: &BTreeMap<String, usize>,
    budget: usize,
) -> Vec<Move<B>> {
    let mut load = survivors.clone();
    let mut moves = Vec::new();
    // Round-robin over the leaving brokers, so several drain together rather than one by one.
    let longest = leaving.iter().map(|(_, b)| b.len()).max().unwrap_or(0);
    'outer: for i in 0..longest {
        for (from, bundles) in leaving {
            if moves.len() >= budget {
                break 'outer;
            }
            let Some(bundle) = bundles.get(i) else {
                continue;
            };
            let Some((to, count)) = load.iter_mut().min_by_key(|(id, n)| (**n, (*id).clone()))
            else {
                break 'outer;
            };
            *count += 1;
            moves.push(Move {
                bundle: bundle.clone(),
                from: from.clone(),
                to: to.clone(),
            });
        }
    }
    moves
}

/// How long to wait before the next unload so that no more than `per_second` happen, given
/// `done` unloads since `elapsed` ago.
pub fn pause(per_second: u32, done: u32, elapsed: Duration) -> Duration {
    let per_second = per_second.max(1);
    let due = Duration::from_secs_f64(f64::from(done) / f64::from(per_second));
    due.saturating_sub(elapsed)
}

/// What a broker needs beyond `brokerShutdownTimeoutMs` to exit after it closed, seconds.
pub const GRACE_MARGIN_SECS: i64 = 5;
/// Pulsar's default `brokerShutdownTimeoutMs`.
pub const DEFAULT_SHUTDOWN_MS: i64 = 60_000;

/// Whether the pod's `terminationGracePeriodSeconds` lets a broker that still owns bundles close
/// before it is killed: `Ok` or `Err`, each with the numbers in words.
pub fn grace_check(grace_secs: i64, shutdown_ms: Option<i64>) -> Result<String, String> {
    let shutdown_ms = shutdown_ms.unwrap_or(DEFAULT_SHUTDOWN_MS).max(0);
    let needed = (shutdown_ms + 999) / 1000 + GRACE_MARGIN_SECS;
    let shutdown = shutdown_ms as f64 / 1000.0;
    if grace_secs < needed {
        Err(format!(
            "terminationGracePeriodSeconds of the broker StatefulSet is {grace_secs} s, shorter \
             than the broker's brokerShutdownTimeoutMs ({shutdown} s) + {GRACE_MARGIN_SECS} s \
             margin = {needed} s: a broker that still owns bundles when it is stopped is killed \
             before it hands them over; set terminationGracePeriodSeconds to at least {needed}"
        ))
    } else {
        Ok(format!(
            "terminationGracePeriodSeconds {grace_secs} s covers brokerShutdownTimeoutMs \
             ({shutdown} s) + {GRACE_MARGIN_SECS} s"
        ))
    }
}

/// Phase of a drain as remembered in status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Bundles are being moved.
    Draining,
    /// It timed out or a broker could not be reached; the brokers were kept.
    Abandoned,
}

impl Phase {
    /// The word in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Draining => "Draining",
            Phase::Abandoned => "Abandoned",
        }
    }

    /// Reads the word in status; anything else is not a drain this controller knows.
    pub fn parse(s: &str) -> Option<Phase> {
        match s {
            "Draining" => Some(Phase::Draining),
            "Abandoned" => Some(Phase::Abandoned),
            _ => None,
        }
    }
}

/// What status remembers of a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remembered {
    /// Its phase.
    pub phase: Phase,
    /// Replicas before.
    pub from: u32,
    /// Replicas after.
    pub to: u32,
    /// When it began.
    pub started_at: Timestamp,
    /// When it was abandoned.
    pub finished_at: Option<Timestamp>,
}

/// What one round does about draining.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// No scale-down wanted and none in progress.
    Nothing,
    /// Begin draining for a scale-down `from → to` (once the guard admits it).
    Start {
        /// Replicas now.
        from: u32,
        /// Replicas wanted.
        to: u32,
    },
    /// Keep moving bundles.
    Continue,
    /// Stop draining and keep every broker: the reason says what changed.
    Cancel(String),
    /// Stop draining and keep every broker: it took longer than the timeout.
    TimedOut(String),
    /// A drain was abandoned recently: the scale-down waits until a new attempt is due.
    Wait(String),
    /// An abandoned drain that no longer matters: forget it.
    Clear,
}

/// Decides what a round does. `wanted` is the engine's scale-down `(from, to)` this round, if
/// any; `current` the StatefulSet's replicas; `timeout` the drain's limit; `retry_after` how long
/// an abandoned drain holds new attempts.
pub fn next(
    wanted: Option<(u32, u32)>,
    current: u32,
    drain: Option<&Remembered>,
    now: Timestamp,
    timeout: Duration,
    retry_after: Duration,
) -> Next {
    let Some(d) = drain else {
        return match wanted {
            Some((from, to)) => Next::Start { from, to },
            None => Next::Nothing,
        };
    };
    let since = |t: Timestamp| now.duration_since(t).try_into().unwrap_or(Duration::ZERO);
    match d.phase {
        Phase::Draining => {
            if current != d.from {
                return Next::Cancel(format!(
                    "the StatefulSet has {current} replicas, not the {} the drain began at; \
                     someone else changed it",
                    d.from
                ));
            }
            match wanted {
                None => {
                    return Next::Cancel(
                        "the policy no longer wants a scale-down (load came back)".into(),
                    );
                }
                Some((_, to)) if to > d.to => {
                    return Next::Cancel(format!(
                        "the policy now wants {to} replicas, not {}",
                        d.to
                    ));
                }
                Some(_) => {}
            }
            let took = since(d.started_at);
            if took >= timeout {
                Next::TimedOut(format!(
                    "not drained within drain.timeout {}",
                    humantime::format_duration(timeout)
                ))
            } else {
                Next::Continue
            }
        }
        Phase::Abandoned => {
            let Some(wanted) = wanted else {
                return Next::Clear;
            };
            let waited = d.finished_at.map_or(retry_after, since);
            if waited >= retry_after {
                Next::Start {
                    from: wanted.0,
                    to: wanted.1,
                }
            } else {
                Next::Wait(format!(
                    "the last drain was abandoned; a new attempt in {}",
                    humantime::format_duration(Duration::from_secs(
                        (retry_after - waited).as_secs()
                    ))
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn draining(from: u32, to: u32, started: i64) -> Remembered {
        Remembered {
            phase: Phase::Draining,
            from,
            to,
            started_at: at(started),
            finished_at: None,
        }
    }

    const T: Duration = Duration::from_secs(300);
    const R: Duration = Duration::from_secs(60);

    #[test]
    fn the_highest_ordinals_leave_highest_first() {
        assert_eq!(leaving(3, 2), vec![2]);
        assert_eq!(leaving(6, 3), vec![5, 4, 3]);
        assert!(leaving(2, 2).is_empty());
        assert!(leaving(2, 3).is_empty());
    }

    #[test]
    fn each_bundle_goes_to_the_survivor_with_the_fewest() {
        let survivors = BTreeMap::from([("a".to_string(), 3), ("b".to_string(), 1)]);
        let leaving = vec![("c".to_string(), vec![1, 2, 3, 4])];
        let moves = plan_moves(&leaving, &survivors, 10);
        let to: Vec<&str> = moves.iter().map(|m| m.to.as_str()).collect();
        // b: 1 → 2 → 3 (tie with a at 3: a is the smaller id) → a 4, b 4.
        assert_eq!(to, vec!["b", "b", "a", "b"]);
        assert!(moves.iter().all(|m| m.from == "c"));
        assert_eq!(
            moves.iter().map(|m| m.bundle).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
    }

    #[test]
    fn moves_stay_within_the_budget_and_alternate_between_leaving_brokers() {
        let survivors = BTreeMap::from([("a".to_string(), 0)]);
        let leaving = vec![
            ("x".to_string(), vec!["x1", "x2", "x3"]),
            ("y".to_string(), vec!["y1"]),
        ];
        let moves = plan_moves(&leaving, &survivors, 3);
        let order: Vec<&str> = moves.iter().map(|m| m.bundle).collect();
        assert_eq!(order, vec!["x1", "y1", "x2"]);
        assert!(plan_moves(&leaving, &survivors, 0).is_empty());
    }

    #[test]
    fn without_survivors_nothing_moves() {
        let leaving = vec![("x".to_string(), vec![1])];
        assert!(plan_moves(&leaving, &BTreeMap::new(), 5).is_empty());
    }

    #[test]
    fn pacing_keeps_unloads_at_the_rate() {
        // 10/s: the 5th unload is due 0.5 s after the first.
        assert_eq!(
            pause(10, 5, Duration::from_millis(200)),
            Duration::from_millis(300)
        );
        // Behind schedule (slow unloads): no pause.
        assert_eq!(pause(10, 5, Duration::from_secs(2)), Duration::ZERO);
        assert_eq!(pause(1, 3, Duration::ZERO), Duration::from_secs(3));
        // A rate of 0 is treated as 1, never a division by zero.
        assert_eq!(pause(0, 1, Duration::ZERO), Duration::from_secs(1));
    }

    #[test]
    fn a_wanted_scale_down_starts_a_drain() {
        assert_eq!(
            next(Some((3, 2)), 3, None, at(0), T, R),
            Next::Start { from: 3, to: 2 }
        );
        assert_eq!(next(None, 3, None, at(0), T, R), Next::Nothing);
    }

    #[test]
    fn a_drain_continues_while_the_same_scale_down_is_wanted() {
        let d = draining(3, 2, 0);
        assert_eq!(
            next(Some((3, 2)), 3, Some(&d), at(10), T, R),
            Next::Continue
        );
        // Wanting even fewer brokers keeps the drain to 2; the next step comes later.
        assert_eq!(
            next(Some((3, 1)), 3, Some(&d), at(10), T, R),
            Next::Continue
        );
    }

    #[test]
    fn a_drain_is_cancelled_when_load_comes_back_or_someone_else_scales() {
        let d = draining(4, 2, 0);
        assert!(matches!(
            next(None, 4, Some(&d), at(10), T, R),
            Next::Cancel(m) if m.contains("load came back")
        ));
        assert!(matches!(
            next(Some((4, 3)), 4, Some(&d), at(10), T, R),
            Next::Cancel(m) if m.contains("now wants 3")
        ));
        assert!(matches!(
            next(Some((5, 2)), 5, Some(&d), at(10), T, R),
            Next::Cancel(m) if m.contains("5 replicas")
        ));
    }

    #[test]
    fn a_drain_times_out_at_its_limit() {
        let d = draining(3, 2, 0);
        assert_eq!(
            next(Some((3, 2)), 3, Some(&d), at(299), T, R),
            Next::Continue
        );
        assert!(matches!(
            next(Some((3, 2)), 3, Some(&d), at(300), T, R),
            Next::TimedOut(m) if m.contains("5m")
        ));
    }

    #[test]
    fn an_abandoned_drain_holds_new_attempts_then_retries() {
        let d = Remembered {
            phase: Phase::Abandoned,
            finished_at: Some(at(100)),
            ..draining(3, 2, 0)
        };
        assert!(matches!(
            next(Some((3, 2)), 3, Some(&d), at(130), T, R),
            Next::Wait(m) if m.contains("30s")
        ));
        assert_eq!(
            next(Some((3, 2)), 3, Some(&d), at(160), T, R),
            Next::Start { from: 3, to: 2 }
        );
        assert_eq!(next(None, 3, Some(&d), at(130), T, R), Next::Clear);
    }

    #[test]
    fn the_grace_period_must_cover_the_shutdown_timeout_and_a_margin() {
        // Pulsar's Helm chart: 30 s grace, the broker's default 60 s shutdown timeout.
        let e = grace_check(30, None).unwrap_err();
        assert!(
            e.contains("is 30 s") && e.contains("(60 s)") && e.contains("= 65 s"),
            "{e}"
        );
        assert!(grace_check(65, Some(60_000)).is_ok());
        assert!(grace_check(64, Some(60_000)).is_err());
        // A shortened broker timeout: 25 s + 5 s fits in 30 s.
        let ok = grace_check(30, Some(25_000)).unwrap();
        assert!(ok.contains("(25 s)"), "{ok}");
        // Milliseconds round up: 25.5 s needs 31 s.
        assert!(grace_check(30, Some(25_500)).is_err());
    }

    #[test]
    fn phases_read_back_as_written() {
        for p in [Phase::Draining, Phase::Abandoned] {
            assert_eq!(Phase::parse(p.as_str()), Some(p));
        }
        assert_eq!(Phase::parse("Done"), None);
    }
}
