//! The offline optimum behind the short-swing rows of `benches/README.md`
//! (`examples/flap_bound.rs`) against every replica path of small cases.

#[path = "../examples/flap_bound.rs"]
#[allow(dead_code)]
mod flap_bound;

use flap_bound::{Path, cheapest_path, with_ready_delay};

/// Σ replicas, actions and under-provisioned rows of `replicas` from `initial`.
fn score(replicas: &[u32], needed: &[u32], initial: u32) -> (u64, usize, usize) {
    let mut previous = initial;
    let mut actions = 0;
    for &r in replicas {
        actions += usize::from(r != previous);
        previous = r;
    }
    let over = replicas.iter().zip(needed).filter(|(r, n)| r < n).count();
    (replicas.iter().map(|r| u64::from(*r)).sum(), actions, over)
}

/// Every path of replicas 1..=top over `needed.len()` rows, cheapest within the limits.
fn brute_force(needed: &[u32], initial: u32, actions: usize, over: usize) -> Option<u64> {
    let top = needed.iter().copied().max().unwrap().max(initial);
    let rows = needed.len();
    let mut best: Option<u64> = None;
    let mut path = vec![1u32; rows];
    loop {
        let (c, a, o) = score(&path, needed, initial);
        if a <= actions && o <= over {
            best = Some(best.map_or(c, |b| b.min(c)));
        }
        let mut i = 0;
        while i < rows && path[i] == top {
            path[i] = 1;
            i += 1;
        }
        if i == rows {
            return best;
        }
        path[i] += 1;
    }
}

#[test]
fn the_optimum_is_the_cheapest_of_all_paths_within_the_limits() {
    // A few swinging needs (fixed, no randomness) and every limit up to the path's length.
    let cases: [&[u32]; 4] = [
        &[2, 4, 4, 1, 1, 4, 4, 2],
        &[3, 3, 1, 1, 1, 3, 1, 1],
        &[1, 4, 1, 4, 1, 4, 1, 4],
        &[4, 4, 4, 2, 2, 2, 2, 4],
    ];
    for needed in cases {
        for initial in [1, 3] {
            for actions in 0..=4 {
                for over in 0..=3 {
                    let found = cheapest_path(needed, initial, actions, over);
                    let expected = brute_force(needed, initial, actions, over);
                    assert_eq!(
                        found.as_ref().map(|p| p.broker_steps),
                        expected,
                        "{needed:?} from {initial}, {actions} actions, {over} rows over"
                    );
                    if let Some(p) = found {
                        let (c, a, o) = score(&p.replicas, needed, initial);
                        assert_eq!((c, a, o), (p.broker_steps, p.actions, p.overloaded_rows));
                        assert!(a <= actions && o <= over, "{p:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn with_the_ready_delay_rises_come_earlier_and_cover_the_same_rows() {
    let needed = [2, 2, 2, 5, 5, 2, 2, 2, 2, 2];
    let path = Path {
        replicas: vec![2, 2, 2, 5, 5, 2, 2, 2, 2, 2],
        broker_steps: 29,
        actions: 2,
        overloaded_rows: 0,
    };
    let real = with_ready_delay(&path, &needed, 2, 2);
    // Asked for two rows earlier, ready when the load arrives; the fall stays where it was.
    assert_eq!(real.replicas, vec![2, 5, 5, 5, 5, 2, 2, 2, 2, 2]);
    assert_eq!((real.actions, real.overloaded_rows), (2, 0));
    // A rise in the first rows cannot come earlier: those rows stay short until it is ready.
    let early = Path {
        replicas: vec![5, 5, 2, 2],
        broker_steps: 14,
        actions: 2,
        overloaded_rows: 0,
    };
    let real = with_ready_delay(&early, &[5, 5, 2, 2], 2, 1);
    assert_eq!(
        (real.replicas.clone(), real.overloaded_rows),
        (vec![5, 5, 2, 2], 1)
    );
}
