//! One evaluation round over many policies that share a source: one grouped read per preset
//! (plus one per distinct rendered Custom query), then each policy takes its own pods' and
//! claims' values. The number of requests does not grow with the number of policies.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;

use super::error::MetricsError;
use super::preset::{Placeholders, Preset, Reduce, render};
use super::response::Point;
use super::source::{CustomValue, Grouped, MetricsSource};
use crate::decide::{Sample, elapsed};
use crate::policy::Policy;

/// A policy as a round sees it.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The policy's namespace.
    pub namespace: &'a str,
    /// The policy's name.
    pub name: &'a str,
    /// Its checked settings.
    pub policy: &'a Policy,
}

/// One value for one policy, or why there is none.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The usable sample; `None` when missing, stale, NaN or infinite (never 0).
    pub sample: Option<Sample>,
    /// Why it is missing or partial; with a sample, what the sample cannot tell (partial data,
    /// or [`COUNT_UNKNOWN`]).
    pub problem: Option<String>,
}

impl Reading {
    fn missing(problem: impl Into<String>) -> Self {
        Reading {
            sample: None,
            problem: Some(problem.into()),
        }
    }
}

/// What one round found for one policy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyReadings {
    /// `brokers[i]` belongs to `policy.brokers.metrics[i]`.
    pub brokers: Vec<Reading>,
    /// Used percent per bookie claim name.
    pub claims: BTreeMap<String, Reading>,
    /// Source failures that touched this policy, e.g. "throughput: cannot reach …".
    pub errors: Vec<String>,
    /// `errors[i]`'s kind, the label of `source_errors_total` (`connect`, `timeout`, …).
    pub error_kinds: Vec<&'static str>,
}

impl PolicyReadings {
    /// Broker samples in the order the decision engine expects.
    pub fn broker_samples(&self) -> Vec<Option<Sample>> {
        self.brokers.iter().map(|r| r.sample).collect()
    }
}

/// What a round asks the source for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Presets, each read once.
    pub presets: Vec<Preset>,
    /// Distinct rendered Custom queries, each sent once.
    pub custom: Vec<String>,
}

/// The requests a round over `targets` needs.
pub fn plan(targets: &[Target<'_>]) -> Plan {
    let mut presets = BTreeSet::new();
    let mut custom = BTreeSet::new();
    for t in targets {
        if let Some(b) = &t.policy.brokers {
            for m in &b.metrics {
                match Preset::for_metric(m.kind) {
                    Some(p) => {
                        presets.insert(p);
                    }
                    None => {
                        if let Some(Ok(q)) = custom_query(t, m.query.as_deref()) {
                            custom.insert(q);
                        }
                    }
                }
            }
        }
        if t.policy.bookies.is_some() {
            presets.insert(Preset::ClaimUsage);
            presets.insert(Preset::LedgerUsage);
        }
    }
    Plan {
        presets: presets.into_iter().collect(),
        custom: custom.into_iter().collect(),
    }
}

fn custom_query(t: &Target<'_>, template: Option<&str>) -> Option<Result<String, String>> {
    let template = template?;
    let statefulset = t
        .policy
        .brokers
        .as_ref()
        .map_or("", |b| b.stateful_set.as_str());
    let values = Placeholders {
        namespace: t.namespace,
        policy: t.name,
        statefulset,
    };
    Some(render(template, values).map_err(|e| e.to_string()))
}

/// Runs one round: every request concurrently, then each policy's share.
pub async fn collect(
    source: &dyn MetricsSource,
    targets: &[Target<'_>],
    now: Timestamp,
) -> Vec<PolicyReadings> {
    let plan = plan(targets);
    let custom = futures::future::join_all(plan.custom.iter().map(|q| source.custom(q, now)));
    let (presets, custom) = futures::join!(source.fetch(&plan.presets, now), custom);
    let presets: BTreeMap<Preset, Result<Grouped, MetricsError>> =
        plan.presets.iter().copied().zip(presets).collect();
    let custom: BTreeMap<&str, Result<Option<CustomValue>, MetricsError>> =
        plan.custom.iter().map(String::as_str).zip(custom).collect();
    targets
        .iter()
        .map(|t| split(t, &presets, &custom, &source.describe(), now))
        .collect()
}

/// One policy's share of a round's results.
pub fn split(
    t: &Target<'_>,
    presets: &BTreeMap<Preset, Result<Grouped, MetricsError>>,
    custom: &BTreeMap<&str, Result<Option<CustomValue>, MetricsError>>,
    source: &str,
    now: Timestamp,
) -> PolicyReadings {
    let max_staleness = t.policy.source.max_staleness;
    let mut out = PolicyReadings::default();
    let mut note = |what: &str, e: &MetricsError| {
        let line = format!("{what}: {e}");
        if !out.errors.contains(&line) {
            out.errors.push(line);
            out.error_kinds.push(e.label());
        }
    };
    if let Some(b) = &t.policy.brokers {
        for m in &b.metrics {
            let reading = match Preset::for_metric(m.kind) {
                Some(p) => match presets.get(&p) {
                    Some(Ok(g)) => broker_reading(
                        p,
                        g,
                        t.namespace,
                        &b.stateful_set,
                        max_staleness,
                        now,
                        source,
                    ),
                    Some(Err(e)) => {
                        note(p.name(), e);
                        Reading::missing(e.to_string())
                    }
                    None => Reading::missing(format!("{} was not read", p.name())),
                },
                None => match custom_query(t, m.query.as_deref()) {
                    None => Reading::missing("Custom metric without a query"),
                    Some(Err(e)) => Reading::missing(e),
                    Some(Ok(q)) => match custom.get(q.as_str()) {
                        Some(Ok(Some(c))) => custom_reading(c, &b.stateful_set, max_staleness, now),
                        Some(Ok(None)) => Reading::missing(format!("query {q} returned no series")),
                        Some(Err(e)) => {
                            note(&m.name, e);
                            Reading::missing(e.to_string())
                        }
                        None => Reading::missing(format!("query {q} was not sent")),
                    },
                },
            };
            out.brokers.push(reading);
        }
    }
    if let Some(b) = &t.policy.bookies {
        // The bookie's own ledger-directory measure, when its pages are read; a failure here
        // only loses that refinement, the claim still has the kubelet's figure.
        let ledger_dirs = match presets.get(&Preset::LedgerUsage) {
            Some(Ok(g)) => Some(g),
            _ => None,
        };
        match presets.get(&Preset::ClaimUsage) {
            Some(Ok(g)) => {
                for ((ns, claim), p) in in_namespace(&g.points, t.namespace, "") {
                    if claim_of(claim, &b.stateful_set, &b.templates) {
                        let bookie = ledger_dirs
                            .and_then(|l| ledger_dir_point(l, ns, claim, &b.stateful_set));
                        let reading = match closer_to_read_only(p, bookie, max_staleness, now) {
                            Ok(s) => Reading {
                                sample: Some(s),
                                problem: None,
                            },
                            Err(why) => Reading::missing(why),
                        };
                        out.claims.insert(claim.clone(), reading);
                    }
                }
            }
            Some(Err(e)) => note(Preset::ClaimUsage.name(), e),
            None => {}
        }
    }
    out
}

/// The note on a Custom value whose series name no broker pod: it is used as the complete
/// total, and a broker missing from it cannot be told from a smaller load.
pub const COUNT_UNKNOWN: &str = "broker count unknown: the answer has no pod label of the \
    StatefulSet, so a missing broker is not seen (group the query: sum by (pod) (...))";

/// A Custom answer as a reading. A per-pod query (`sum by (pod) (…)`) names the brokers that
/// reported, so one whose series vanished makes the value partial (scale-up only) rather than
/// a smaller total taken as complete; an answer whose series name none of the StatefulSet's
/// pods carries no count.
fn custom_reading(
    c: &CustomValue,
    statefulset: &str,
    max_staleness: Duration,
    now: Timestamp,
) -> Reading {
    match usable(&c.point, max_staleness, now) {
        Ok(mut s) => {
            let n = c.pods.iter().filter(|p| pod_of(p, statefulset)).count();
            s.reporting = (n > 0).then(|| u32::try_from(n).unwrap_or(u32::MAX));
            Reading {
                sample: Some(s),
                // Used as complete, but said: an operator can only fix it in the query.
                problem: (n == 0).then(|| COUNT_UNKNOWN.to_string()),
            }
        }
        Err(why) => Reading::missing(why),
    }
}

/// The bookie's own usage of the ledger directory a claim holds: claims of a template whose
/// name says `ledger` (Pulsar's chart: `ledgers`) belong to pod `<statefulset>-<n>`.
fn ledger_dir_point<'g>(
    ledger_dirs: &'g Grouped,
    namespace: &str,
    claim: &str,
    statefulset: &str,
) -> Option<&'g Point> {
    let (head, n) = claim.rsplit_once('-')?;
    let template = head.strip_suffix(statefulset)?.strip_suffix('-')?;
    if !template.contains("ledger") {
        return None;
    }
    let pod = format!("{statefulset}-{n}");
    ledger_dirs.points.get(&(namespace.to_string(), pod))
}

/// A claim's usage as the higher of the kubelet's figure and the bookie's own (BookKeeper
/// turns read-only on its own measure, which can run ahead of the kubelet's), each used only
/// when it is fresh and finite.
fn closer_to_read_only(
    claim: &Point,
    bookie: Option<&Point>,
    max_staleness: Duration,
    now: Timestamp,
) -> Result<Sample, String> {
    let from_claim = usable(claim, max_staleness, now);
    let from_bookie = bookie.and_then(|p| usable(p, max_staleness, now).ok());
    match (from_claim, from_bookie) {
        (Ok(c), Some(b)) if b.value > c.value => Ok(b),
        (Ok(c), _) => Ok(c),
        (Err(_), Some(b)) => Ok(b),
        (Err(why), None) => Err(why),
    }
}

/// A point as a sample, or why it cannot be used.
fn usable(p: &Point, max_staleness: Duration, now: Timestamp) -> Result<Sample, String> {
    if p.value.is_nan() {
        return Err("value is NaN".into());
    }
    if p.value.is_infinite() {
        return Err("value is infinite".into());
    }
    let age = elapsed(now, p.at);
    if age > max_staleness {
        return Err(format!(
            "sample is {} old, older than maxStaleness {}",
            humantime::format_duration(Duration::from_secs(age.as_secs())),
            humantime::format_duration(max_staleness)
        ));
    }
    Ok(Sample::new(p.value, p.at))
}

fn broker_reading(
    preset: Preset,
    g: &Grouped,
    namespace: &str,
    statefulset: &str,
    max_staleness: Duration,
    now: Timestamp,
    source: &str,
) -> Reading {
    let mut values = Vec::new();
    let mut oldest: Option<Timestamp> = None;
    let mut problems = Vec::new();
    let prefix = format!("{statefulset}-");
    for ((_, pod), p) in in_namespace(&g.points, namespace, &prefix) {
        if !pod_of(pod, statefulset) {
            continue;
        }
        match usable(p, max_staleness, now) {
            Ok(s) => {
                values.push(s.value);
                oldest = Some(oldest.map_or(s.observed_at, |o| o.min(s.observed_at)));
            }
            Err(why) => problems.push(format!("{pod}: {why}")),
        }
    }
    for ((_, pod), why) in in_namespace(&g.failures, namespace, &prefix) {
        if pod_of(pod, statefulset) {
            problems.push(format!("{pod}: {why}"));
        }
    }
    let problem = (!problems.is_empty()).then(|| problems.join("; "));
    let Some(observed_at) = oldest else {
        return Reading::missing(problem.unwrap_or_else(|| {
            format!(
                "no {} series for pods of {namespace}/{statefulset} from {source}",
                preset.name()
            )
        }));
    };
    let n = values.len();
    let total: f64 = values.iter().sum();
    let value = match preset.reduce() {
        Reduce::Mean => total / n as f64,
        Reduce::Sum | Reduce::PerObject => total,
    };
    Reading {
        sample: Some(Sample {
            value,
            observed_at,
            reporting: Some(n as u32),
        }),
        problem,
    }
}

/// The entries of one namespace whose object name starts with `prefix`, found by a range
/// lookup: a round over N policies costs N lookups, not N passes over every object.
fn in_namespace<'a, V>(
    map: &'a BTreeMap<(String, String), V>,
    namespace: &'a str,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a (String, String), &'a V)> + 'a {
    map.range((namespace.to_string(), prefix.to_string())..)
        .take_while(move |((ns, name), _)| ns == namespace && name.starts_with(prefix))
}

/// Whether `pod` is an ordinal pod of StatefulSet `statefulset` (`<name>-<n>`).
pub fn pod_of(pod: &str, statefulset: &str) -> bool {
    pod.strip_prefix(statefulset)
        .and_then(|r| r.strip_prefix('-'))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `claim` is `<template>-<statefulset>-<n>` with `template` among `templates`
/// (any template when the list is empty).
pub fn claim_of(claim: &str, statefulset: &str, templates: &[String]) -> bool {
    let Some((head, n)) = claim.rsplit_once('-') else {
        return false;
    };
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Some(template) = head
        .strip_suffix(statefulset)
        .and_then(|t| t.strip_suffix('-'))
    else {
        return false;
    };
    !template.is_empty() && (templates.is_empty() || templates.iter().any(|t| t == template))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::preset::Preset;

    fn policy(max_staleness: &str) -> Policy {
        let yaml = format!(
            "apiVersion: pulsar-autoscaler.dev/v1alpha1
kind: ScalingPolicy
metadata: {{name: p, namespace: pulsar}}
spec:
  metricsSource: {{type: Prometheus, url: 'http://prom:9090', maxStaleness: {max_staleness}}}
  brokers:
    statefulSet: pulsar-broker
    maxReplicas: 10
    metrics:
      - {{type: Throughput, targetPerBroker: 50Mi}}
      - {{type: HeapMemory, targetUtilization: 75}}
      - {{type: Custom, name: backlog, query: 'sum(b{{namespace=\"{{{{namespace}}}}\"}})', targetPerBroker: '1000'}}
  bookies: {{statefulSet: pulsar-bookie, volumeClaimTemplates: [ledgers], maxSize: 1Ti}}
"
        );
        let v: serde_json::Value = serde_yaml_ng::from_str(&yaml).unwrap();
        crate::policy::check_object(&v).unwrap().1
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn grouped(points: &[(&str, &str, f64, i64)]) -> Grouped {
        Grouped {
            points: points
                .iter()
                .map(|(ns, obj, v, t)| {
                    (
                        (ns.to_string(), obj.to_string()),
                        Point {
                            value: *v,
                            at: at(*t),
                        },
                    )
                })
                .collect(),
            failures: BTreeMap::new(),
        }
    }

    #[test]
    fn splits_reduces_and_rejects_stale_and_nan() {
        let p = policy("30s");
        let t = Target {
            namespace: "pulsar",
            name: "p",
            policy: &p,
        };
        let mut presets = BTreeMap::new();
        presets.insert(
            Preset::Throughput,
            Ok(grouped(&[
                ("pulsar", "pulsar-broker-0", 10.0, 100),
                ("pulsar", "pulsar-broker-1", 20.0, 99),
                // Too old, another namespace, another StatefulSet: none counted.
                ("pulsar", "pulsar-broker-2", 1e9, 10),
                ("other", "pulsar-broker-0", 1e9, 100),
                ("pulsar", "pulsar-proxy-0", 1e9, 100),
            ])),
        );
        presets.insert(
            Preset::HeapMemory,
            Ok(grouped(&[
                ("pulsar", "pulsar-broker-0", 50.0, 100),
                ("pulsar", "pulsar-broker-1", 70.0, 100),
            ])),
        );
        presets.insert(
            Preset::ClaimUsage,
            Ok(grouped(&[
                ("pulsar", "ledgers-pulsar-bookie-0", 81.0, 100),
                ("pulsar", "ledgers-pulsar-bookie-1", f64::NAN, 100),
                ("pulsar", "journal-pulsar-bookie-0", 99.0, 100),
            ])),
        );
        let query = r#"sum(b{namespace="pulsar"})"#;
        let mut custom = BTreeMap::new();
        custom.insert(
            query,
            Ok(Some(CustomValue {
                point: Point {
                    value: 5.0,
                    at: at(0),
                },
                pods: BTreeSet::new(),
            })),
        );
        let r = split(&t, &presets, &custom, "test", at(101));
        let tp = r.brokers[0].sample.unwrap();
        assert_eq!(
            (tp.value, tp.reporting, tp.observed_at),
            (30.0, Some(2), at(99))
        );
        assert!(
            r.brokers[0]
                .problem
                .as_deref()
                .unwrap()
                .contains("pulsar-broker-2: sample is 1m 31s old")
        );
        assert_eq!(r.brokers[1].sample.unwrap().value, 60.0);
        // The custom value is 101 s old with maxStaleness 30 s: missing, not 5 and not 0.
        assert!(r.brokers[2].sample.is_none());
        assert!(
            r.brokers[2]
                .problem
                .as_deref()
                .unwrap()
                .contains("older than maxStaleness")
        );
        assert_eq!(r.claims.len(), 2);
        assert_eq!(
            r.claims["ledgers-pulsar-bookie-0"].sample.unwrap().value,
            81.0
        );
        assert!(r.claims["ledgers-pulsar-bookie-1"].sample.is_none());
        assert!(r.errors.is_empty());
    }

    #[test]
    fn source_errors_make_every_value_missing() {
        let p = policy("2m");
        let t = Target {
            namespace: "pulsar",
            name: "p",
            policy: &p,
        };
        let presets: BTreeMap<Preset, Result<Grouped, MetricsError>> =
            [Preset::Throughput, Preset::HeapMemory, Preset::ClaimUsage]
                .into_iter()
                .map(|k| {
                    (
                        k,
                        Err(MetricsError::Connect {
                            url: "http://prom:9090".into(),
                            detail: "refused".into(),
                        }),
                    )
                })
                .collect();
        let r = split(&t, &presets, &BTreeMap::new(), "test", at(0));
        assert!(
            r.brokers
                .iter()
                .all(|m| m.sample.is_none() && m.problem.is_some())
        );
        assert_eq!(r.errors.len(), 3, "{:?}", r.errors);
        // Each error keeps its kind for `source_errors_total{kind}`.
        assert_eq!(r.error_kinds, ["connect"; 3]);
        assert!(r.claims.is_empty());
        let plan = plan(&[t]);
        assert_eq!(
            plan.presets,
            vec![
                Preset::Throughput,
                Preset::HeapMemory,
                Preset::LedgerUsage,
                Preset::ClaimUsage
            ]
        );
        assert_eq!(
            plan.custom,
            vec![r#"sum(b{namespace="pulsar"})"#.to_string()]
        );
    }

    #[test]
    fn a_per_pod_custom_query_counts_the_brokers_that_reported() {
        let p = policy("2m");
        let t = Target {
            namespace: "pulsar",
            name: "p",
            policy: &p,
        };
        let query = r#"sum(b{namespace="pulsar"})"#;
        let answer = |pods: &[&str]| {
            let mut custom = BTreeMap::new();
            custom.insert(
                query,
                Ok(Some(CustomValue {
                    point: Point {
                        value: 300.0,
                        at: at(0),
                    },
                    pods: pods.iter().map(|p| p.to_string()).collect(),
                })),
            );
            let r = split(&t, &BTreeMap::new(), &custom, "test", at(1)).brokers[2].clone();
            (r.sample.unwrap(), r.problem)
        };
        // `sum by (pod)` over three brokers, one of whose series has gone: two reported.
        let (s, note) = answer(&["pulsar-broker-0", "pulsar-broker-2", "pulsar-proxy-0"]);
        assert_eq!((s.value, s.reporting, note), (300.0, Some(2), None));
        // A plain `sum(...)` names no pod: no count, used, and said so.
        let (s, note) = answer(&[]);
        assert_eq!((s.reporting, note.as_deref()), (None, Some(COUNT_UNKNOWN)));
        // Series of other pods only: no count either (they say nothing about the brokers).
        let (s, note) = answer(&["bookie-0", "pulsar-proxy-1"]);
        assert_eq!((s.reporting, note.as_deref()), (None, Some(COUNT_UNKNOWN)));
    }

    #[test]
    fn matches_pods_and_claims() {
        assert!(pod_of("pulsar-broker-0", "pulsar-broker"));
        assert!(pod_of("pulsar-broker-12", "pulsar-broker"));
        assert!(!pod_of("pulsar-broker-x", "pulsar-broker"));
        assert!(!pod_of("pulsar-broker-canary-0", "pulsar-broker"));
        assert!(!pod_of("pulsar-broker", "pulsar-broker"));
        let t = vec!["ledgers".to_string()];
        assert!(claim_of("ledgers-pulsar-bookie-0", "pulsar-bookie", &t));
        assert!(!claim_of("journal-pulsar-bookie-0", "pulsar-bookie", &t));
        assert!(claim_of("journal-pulsar-bookie-0", "pulsar-bookie", &[]));
        assert!(!claim_of("pulsar-bookie-0", "pulsar-bookie", &[]));
        assert!(!claim_of("ledgers-other-bookie-0", "pulsar-bookie", &[]));
    }

    #[test]
    fn ledger_claims_take_the_bookies_own_measure_when_it_is_closer_to_read_only() {
        let p = policy("2m");
        let t = Target {
            namespace: "pulsar",
            name: "p",
            policy: &p,
        };
        let point = |v: f64| Point {
            value: v,
            at: at(0),
        };
        let grouped = |pairs: &[(&str, f64)]| Grouped {
            points: pairs
                .iter()
                .map(|(k, v)| (("pulsar".to_string(), k.to_string()), point(*v)))
                .collect(),
            ..Grouped::default()
        };
        let mut presets: BTreeMap<Preset, Result<Grouped, MetricsError>> = BTreeMap::new();
        presets.insert(
            Preset::ClaimUsage,
            Ok(grouped(&[
                ("ledgers-pulsar-bookie-0", 80.0),
                ("ledgers-pulsar-bookie-1", 90.0),
            ])),
        );
        // Bookie 0 sees 86 % on its own measure (reserved blocks), bookie 1 only 70 %.
        presets.insert(
            Preset::LedgerUsage,
            Ok(grouped(&[
                ("pulsar-bookie-0", 86.0),
                ("pulsar-bookie-1", 70.0),
            ])),
        );
        let r = split(&t, &presets, &BTreeMap::new(), "test", at(1));
        let used = |c: &str| r.claims[c].sample.map(|s| s.value);
        assert_eq!(used("ledgers-pulsar-bookie-0"), Some(86.0));
        assert_eq!(used("ledgers-pulsar-bookie-1"), Some(90.0));
        // A failed bookie read loses only the refinement.
        presets.insert(
            Preset::LedgerUsage,
            Err(MetricsError::Connect {
                url: "http://bookie:8000/metrics".into(),
                detail: "refused".into(),
            }),
        );
        let r = split(&t, &presets, &BTreeMap::new(), "test", at(1));
        assert_eq!(
            r.claims["ledgers-pulsar-bookie-0"].sample.map(|s| s.value),
            Some(80.0)
        );
    }
}
