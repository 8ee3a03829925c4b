//! Counters to per-second rates from consecutive scrapes of the same pod, with Prometheus'
//! reset rule: a counter that went down restarted from zero.

use std::collections::HashMap;

use jiff::Timestamp;

/// Last seen value of every counter, per pod and series.
#[derive(Debug, Default)]
pub struct Rates {
    last: HashMap<(String, String, String), (f64, Timestamp)>,
}

impl Rates {
    /// Records `value` of counter `series` of `pod` at `at`; returns its rate since the previous
    /// scrape, `None` on the first scrape or when time did not advance.
    pub fn observe(
        &mut self,
        pod: &(String, String),
        series: &str,
        value: f64,
        at: Timestamp,
    ) -> Option<f64> {
        let key = (pod.0.clone(), pod.1.clone(), series.to_string());
        let previous = self.last.get(&key).copied();
        match previous {
            Some((_, t)) if at <= t => None,
            Some((v, t)) => {
                self.last.insert(key, (value, at));
                let secs = (at.as_millisecond() - t.as_millisecond()) as f64 / 1000.0;
                let increase = if value >= v { value - v } else { value };
                Some(increase / secs)
            }
            None => {
                self.last.insert(key, (value, at));
                None
            }
        }
    }

    /// Forgets pods that are no longer scraped, so memory follows the pod set.
    pub fn retain_pods(&mut self, keep: impl Fn(&str, &str) -> bool) {
        self.last.retain(|(ns, pod, _), _| keep(ns, pod));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn rates_and_resets() {
        let pod = ("pulsar".to_string(), "pulsar-broker-0".to_string());
        let mut r = Rates::default();
        assert_eq!(r.observe(&pod, "c", 100.0, at(0)), None);
        assert_eq!(r.observe(&pod, "c", 130.0, at(10)), Some(3.0));
        assert_eq!(r.observe(&pod, "c", 130.0, at(10)), None);
        // Restarted: 20 since the restart within 10 s.
        assert_eq!(r.observe(&pod, "c", 20.0, at(20)), Some(2.0));
        r.retain_pods(|_, _| false);
        assert_eq!(r.observe(&pod, "c", 40.0, at(30)), None);
    }
}
