//! Rebalance after a scale-up: which bundles to move from the busiest brokers onto the brokers
//! just added, so that each added broker carries a fair share. Pure: the controller reads who owns
//! what through the admin API, asks this planner, and carries out the moves it returns.
//!
//! Load is counted in bundles. The admin API lists each broker's bundles exactly and at once,
//! while the per-broker rates a metrics round has are summed per metric and can be a stats
//! period (60 s by default) old; per-bundle rates would cost one more call per bundle. With
//! Pulsar's default of several bundles per namespace, an equal bundle count is also what the
//! load manager itself starts from.

use std::collections::BTreeMap;

/// States of `status.brokers.rebalance.state`.
pub mod state {
    /// Added brokers not Ready or registered yet.
    pub const WAITING: &str = "Waiting";
    /// Bundles are being moved.
    pub const MOVING: &str = "Moving";
    /// Every added broker carries its fair share (or nothing more can be moved).
    pub const DONE: &str = "Done";
    /// Given up; the message says why.
    pub const FAILED: &str = "Failed";
    /// A scale-down started, or rebalance was switched off.
    pub const STOPPED: &str = "Stopped";
}

/// One broker's movable bundles (heartbeat namespaces left out) and whether it was just added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// Broker id, `<advertised address>:<web port>`.
    pub broker: String,
    /// Bundles it owns, `tenant/namespace/0x..._0x...`.
    pub bundles: Vec<String>,
    /// Added by the scale-up being rebalanced: a receiver, never a donor.
    pub added: bool,
}

/// One bundle to unload from `from` onto `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The bundle.
    pub bundle: String,
    /// Its owner now.
    pub from: String,
    /// The added broker it goes to.
    pub to: String,
}

/// What the planner concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Bundles each added broker should carry at least: the floor of the mean over all brokers.
    pub fair_share: usize,
    /// Moves to make now, at most the budget given.
    pub moves: Vec<Move>,
    /// Every added broker carries its fair share already, or no move would bring one closer.
    pub balanced: bool,
}

/// The floor of the mean bundle count over `brokers` (0 without brokers).
pub fn fair_share(brokers: &[Holding]) -> usize {
    let total: usize = brokers.iter().map(|b| b.bundles.len()).sum();
    total.checked_div(brokers.len()).unwrap_or(0)
}

/// Plans at most `budget` moves. Each move goes to the added broker with the fewest bundles
/// (while below its fair share) from the broker (not added) with the most, and only when the
/// donor keeps at least as many as the receiver then has: a move never makes the spread worse,
/// so repeated plans end. Ties are broken by broker id, and a donor gives its last bundle in
/// sorted order, so the same holdings always give the same plan.
pub fn plan(brokers: &[Holding], budget: usize) -> Plan {
    let share = fair_share(brokers);
    let mut counts: BTreeMap<&str, usize> = brokers
        .iter()
        .map(|b| (b.broker.as_str(), b.bundles.len()))
        .collect();
    let mut left: BTreeMap<&str, Vec<&str>> = brokers
        .iter()
        .filter(|b| !b.added)
        .map(|b| {
            let mut v: Vec<&str> = b.bundles.iter().map(String::as_str).collect();
            v.sort_unstable();
            (b.broker.as_str(), v)
        })
        .collect();
    let added: Vec<&str> = brokers
        .iter()
        .filter(|b| b.added)
        .map(|b| b.broker.as_str())
        .collect();
    let mut moves = Vec::new();
    let balanced = loop {
        let receiver = added
            .iter()
            .copied()
            .filter(|b| counts[b] < share)
            .min_by_key(|b| (counts[b], *b));
        let Some(to) = receiver else {
            break true;
        };
        let donor = left
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(b, _)| *b)
            .max_by_key(|b| (counts[b], std::cmp::Reverse(*b)));
        let Some(from) = donor else {
            break true;
        };
        // After the move the donor has one less and the receiver one more; moving when the
        // donor would end below the receiver only swaps who is short.
        if counts[from] < counts[to] + 2 {
            break true;
        }
        if moves.len() >= budget {
            break false;
        }
        let Some(bundle) = left.get_mut(from).and_then(Vec::pop) else {
            break true;
        };
        *counts.entry(from).or_default() -= 1;
        *counts.entry(to).or_default() += 1;
        moves.push(Move {
            bundle: bundle.to_string(),
            from: from.to_string(),
            to: to.to_string(),
        });
    };
    Plan {
        fair_share: share,
        moves,
        balanced,
    }
}

/// Moves allowed in one step of `seconds` at `per_second` unloads, at least one.
pub fn budget(per_second: u32, seconds: f64) -> usize {
    let n = (f64::from(per_second) * seconds).floor();
    if n.is_finite() && n >= 1.0 {
        n.min(10_000.0) as usize
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holding(broker: &str, n: usize, added: bool) -> Holding {
        Holding {
            broker: broker.into(),
            bundles: (0..n)
                .map(|i| format!("{broker}/ns/0x{i:08x}_0x1"))
                .collect(),
            added,
        }
    }

    fn after(brokers: &[Holding], moves: &[Move]) -> BTreeMap<String, usize> {
        let mut c: BTreeMap<String, usize> = brokers
            .iter()
            .map(|b| (b.broker.clone(), b.bundles.len()))
            .collect();
        for m in moves {
            *c.get_mut(&m.from).unwrap() -= 1;
            *c.get_mut(&m.to).unwrap() += 1;
        }
        c
    }

    #[test]
    fn two_busy_brokers_give_the_added_one_the_floor_of_the_mean() {
        // 8 + 8 + 0 = 16 bundles over 3 brokers: fair share floor(16/3) = 5.
        let b = [
            holding("a", 8, false),
            holding("b", 8, false),
            holding("c", 0, true),
        ];
        let p = plan(&b, 100);
        assert_eq!(p.fair_share, 5);
        assert!(p.balanced);
        assert_eq!(p.moves.len(), 5);
        let c = after(&b, &p.moves);
        assert_eq!(c["c"], 5);
        // Taken from the busiest each time: 8,8 -> 6,5 or 5,6.
        assert_eq!(c["a"] + c["b"], 11);
        assert!(c["a"].abs_diff(c["b"]) <= 1);
        assert!(p.moves.iter().all(|m| m.to == "c" && m.from != "c"));
    }

    #[test]
    fn the_budget_bounds_one_step_and_the_next_plan_continues() {
        let mut b = vec![
            holding("a", 6, false),
            holding("b", 6, false),
            holding("c", 0, true),
        ];
        let p = plan(&b, 2);
        assert_eq!(p.moves.len(), 2);
        assert!(!p.balanced, "4 are needed, 2 allowed");
        // Carry the moves out and plan again.
        for m in &p.moves {
            let from = b.iter().position(|h| h.broker == m.from).unwrap();
            b[from].bundles.retain(|x| x != &m.bundle);
            b[2].bundles.push(m.bundle.clone());
        }
        let p2 = plan(&b, 2);
        assert_eq!(p2.moves.len(), 2);
        assert!(!p2.moves.iter().any(|m| p.moves.contains(m)));
        for m in &p2.moves {
            let from = b.iter().position(|h| h.broker == m.from).unwrap();
            b[from].bundles.retain(|x| x != &m.bundle);
            b[2].bundles.push(m.bundle.clone());
        }
        let p3 = plan(&b, 2);
        assert!(p3.balanced && p3.moves.is_empty(), "{p3:?}");
        assert_eq!(b[2].bundles.len(), 4);
    }

    #[test]
    fn too_few_bundles_to_share_is_balanced_without_moves() {
        // One bundle in the cluster: fair share 0, nothing to do.
        let b = [
            holding("a", 1, false),
            holding("b", 0, false),
            holding("c", 0, true),
        ];
        let p = plan(&b, 10);
        assert_eq!((p.fair_share, p.moves.len(), p.balanced), (0, 0, true));
        // 2 + 1 + 0: fair share 1, but moving from a (2) to c (0) gives 1 + 1 + 1.
        let b = [
            holding("a", 2, false),
            holding("b", 1, false),
            holding("c", 0, true),
        ];
        let p = plan(&b, 10);
        assert_eq!(p.moves.len(), 1);
        assert_eq!(p.moves[0].from, "a");
    }

    #[test]
    fn an_added_broker_at_its_share_already_needs_nothing() {
        // The load manager got there first.
        let b = [
            holding("a", 4, false),
            holding("b", 4, false),
            holding("c", 4, true),
        ];
        let p = plan(&b, 10);
        assert!(p.balanced && p.moves.is_empty());
    }

    #[test]
    fn several_added_brokers_are_filled_fewest_first() {
        let b = [
            holding("a", 12, false),
            holding("b", 0, true),
            holding("c", 1, true),
        ];
        let p = plan(&b, 100);
        assert_eq!(p.fair_share, 4);
        let c = after(&b, &p.moves);
        assert_eq!((c["a"], c["b"], c["c"]), (5, 4, 4));
        assert_eq!(p.moves[0].to, "b", "the emptiest is served first");
        assert!(p.balanced);
    }

    #[test]
    fn added_brokers_never_give_and_nothing_moves_without_donors() {
        let b = [holding("b", 0, true), holding("c", 6, true)];
        let p = plan(&b, 10);
        assert!(p.moves.is_empty() && p.balanced);
    }

    proptest::proptest! {
        /// Planning and carrying out, step after step, ends; bundles are only ever moved from
        /// old brokers onto added ones; at the end every added broker has its fair share or no
        /// old broker has two more bundles than it.
        #[test]
        fn repeated_plans_end_balanced(
            old in proptest::collection::vec(0usize..40, 1..6),
            added in proptest::collection::vec(0usize..5, 1..4),
            step in 1usize..8,
        ) {
            let mut b: Vec<Holding> = old
                .iter()
                .enumerate()
                .map(|(i, n)| holding(&format!("o{i}"), *n, false))
                .chain(added.iter().enumerate().map(|(i, n)| holding(&format!("n{i}"), *n, true)))
                .collect();
            let total: usize = b.iter().map(|h| h.bundles.len()).sum();
            let mut rounds = 0;
            loop {
                let p = plan(&b, step);
                proptest::prop_assert!(p.moves.len() <= step);
                for m in &p.moves {
                    let from = b.iter().position(|h| h.broker == m.from).unwrap();
                    let to = b.iter().position(|h| h.broker == m.to).unwrap();
                    proptest::prop_assert!(!b[from].added && b[to].added);
                    let before = b[from].bundles.len();
                    b[from].bundles.retain(|x| x != &m.bundle);
                    proptest::prop_assert_eq!(b[from].bundles.len(), before - 1);
                    b[to].bundles.push(m.bundle.clone());
                }
                if p.balanced {
                    break;
                }
                rounds += 1;
                proptest::prop_assert!(rounds <= total, "no end");
            }
            proptest::prop_assert_eq!(b.iter().map(|h| h.bundles.len()).sum::<usize>(), total);
            let share = fair_share(&b);
            let most_old = b.iter().filter(|h| !h.added).map(|h| h.bundles.len()).max().unwrap_or(0);
            for h in b.iter().filter(|h| h.added) {
                proptest::prop_assert!(
                    h.bundles.len() >= share || most_old < h.bundles.len() + 2,
                    "{} has {} of share {}", h.broker, h.bundles.len(), share
                );
            }
        }
    }

    #[test]
    fn a_step_of_a_few_seconds_allows_rate_times_seconds_moves() {
        assert_eq!(budget(10, 2.0), 20);
        assert_eq!(budget(1, 0.5), 1, "at least one");
        assert_eq!(budget(3, f64::NAN), 1);
    }
}
