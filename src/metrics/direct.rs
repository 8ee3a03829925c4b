//! `Direct`, the embedded default: scrape broker and bookie pods by address, and read claim
//! usage from the kubelet summary API. No Prometheus needed.
//!
//! Each pod is scraped once per round whatever the number of presets or policies; counters
//! become rates from consecutive scrapes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use futures::future::{BoxFuture, join_all};
use jiff::Timestamp;

use super::credentials::Credentials;
use super::error::{MetricsError, snippet};
use super::exposition::{PageSeries, parse_page, preset_value};
use super::http::HttpClient;
use super::kubelet::{VolumeUsage, fetch_summary};
use super::preset::{Preset, Role};
use super::rates::Rates;
use super::response::Point;
use super::source::{CustomValue, Grouped, MetricsSource, ObjectKey};

/// A pod to scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEndpoint {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Broker or bookie.
    pub role: Role,
    /// Full URL of its metrics page, e.g. `http://10.0.0.5:8080/metrics/`.
    pub url: String,
}

impl PodEndpoint {
    /// A broker pod at `ip` with Pulsar's default web port (`http://<ip>:8080/metrics/`).
    pub fn broker(namespace: &str, pod: &str, ip: &str) -> Self {
        Self::for_pod(
            namespace,
            pod,
            Role::Broker,
            ip,
            Role::Broker.default_port(),
        )
    }

    /// A bookie pod at `ip` with BookKeeper's default stats port (`http://<ip>:8000/metrics`).
    pub fn bookie(namespace: &str, pod: &str, ip: &str) -> Self {
        Self::for_pod(
            namespace,
            pod,
            Role::Bookie,
            ip,
            Role::Bookie.default_port(),
        )
    }

    /// A pod at `ip:port` with the metrics path its component serves: a broker's page is
    /// `/metrics/` (it answers `/metrics` with a redirect), a bookie's `/metrics`.
    pub fn for_pod(namespace: &str, pod: &str, role: Role, ip: &str, port: u16) -> Self {
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        let path = match role {
            Role::Broker => "/metrics/",
            Role::Bookie | Role::Claim => "/metrics",
        };
        Self::at(namespace, pod, role, format!("http://{host}:{port}{path}"))
    }

    /// A pod with an explicit metrics URL.
    pub fn at(namespace: &str, pod: &str, role: Role, url: String) -> Self {
        PodEndpoint {
            namespace: namespace.to_string(),
            pod: pod.to_string(),
            role,
            url,
        }
    }

    fn key(&self) -> ObjectKey {
        (self.namespace.clone(), self.pod.clone())
    }
}

/// Where claim usage comes from in Direct mode.
#[derive(Clone)]
pub struct KubeletStats {
    /// Client of the API server whose node proxy reaches the kubelets.
    pub client: kube::Client,
    /// Nodes running the bookie pods.
    pub nodes: Vec<String>,
}

/// The Direct source.
pub struct DirectSource {
    http: HttpClient,
    pods: Vec<PodEndpoint>,
    kubelet: Option<KubeletStats>,
    rates: Mutex<Rates>,
    refreshes: Mutex<Refreshes>,
}

/// When each broker last refreshed its rates. A broker recomputes `pulsar_broker_rate_*` and
/// `pulsar_broker_throughput_*` only every `statsUpdateFrequencyInSecs` (60 s by default), so a
/// fresh scrape can carry an old number; its real age is the time since the value changed.
#[derive(Debug, Default)]
struct Refreshes {
    seen: HashMap<(ObjectKey, Preset), (f64, Timestamp)>,
}

impl Refreshes {
    /// The time `value` was measured: the scrape that first showed it, while it stays the
    /// same. An exact 0 is an idle broker's fresh figure, not an old one.
    fn measured_at(
        &mut self,
        key: &ObjectKey,
        preset: Preset,
        value: f64,
        scraped: Timestamp,
    ) -> Timestamp {
        let slot = (key.clone(), preset);
        match self.seen.get(&slot) {
            Some((v, since)) if *v == value && value != 0.0 => *since,
            _ => {
                self.seen.insert(slot, (value, scraped));
                scraped
            }
        }
    }

    fn retain(&mut self, keep: &BTreeSet<ObjectKey>) {
        self.seen.retain(|(k, _), _| keep.contains(k));
    }
}

/// One pod's scrape.
struct Scraped {
    key: ObjectKey,
    result: Result<(Vec<PageSeries>, Timestamp), MetricsError>,
}

impl DirectSource {
    /// A source over `pods` (from pod discovery) and optionally the kubelet stats of `kubelet`.
    pub fn new(
        pods: Vec<PodEndpoint>,
        kubelet: Option<KubeletStats>,
        timeout: Duration,
        credentials: &Credentials,
    ) -> Result<Self, MetricsError> {
        Ok(DirectSource {
            http: HttpClient::new(timeout, &BTreeMap::new(), credentials)?,
            pods,
            kubelet,
            rates: Mutex::new(Rates::default()),
            refreshes: Mutex::new(Refreshes::default()),
        })
    }

    /// Replaces the pod set (after discovery saw pods come and go).
    pub fn set_pods(&mut self, pods: Vec<PodEndpoint>) {
        let keep: BTreeSet<ObjectKey> = pods.iter().map(PodEndpoint::key).collect();
        if let Ok(mut rates) = self.rates.lock() {
            rates.retain_pods(|ns, pod| keep.contains(&(ns.to_string(), pod.to_string())));
        }
        if let Ok(mut refreshes) = self.refreshes.lock() {
            refreshes.retain(&keep);
        }
        self.pods = pods;
    }

    /// Replaces where claim usage is read (the nodes running bookies change too).
    pub fn set_kubelet(&mut self, kubelet: Option<KubeletStats>) {
        self.kubelet = kubelet;
    }

    async fn scrape(&self, pod: &PodEndpoint) -> Scraped {
        let result = async {
            let (status, body) = self.http.send(&pod.url, self.http.get(&pod.url)).await?;
            let at = Timestamp::now();
            if !(200..300).contains(&status) {
                return Err(MetricsError::Http {
                    url: pod.url.clone(),
                    status,
                    snippet: snippet(&body),
                });
            }
            Ok((self.to_rates(pod, parse_page(&body), at), at))
        }
        .await;
        Scraped {
            key: pod.key(),
            result,
        }
    }

    /// Counters become rates since the previous scrape; on the first scrape they are dropped.
    fn to_rates(
        &self,
        pod: &PodEndpoint,
        series: Vec<PageSeries>,
        at: Timestamp,
    ) -> Vec<PageSeries> {
        if !series.iter().any(|s| s.counter) {
            return series;
        }
        let Ok(mut rates) = self.rates.lock() else {
            return series.into_iter().filter(|s| !s.counter).collect();
        };
        let key = pod.key();
        series
            .into_iter()
            .filter_map(|mut s| {
                if s.counter {
                    let id = format!("{}{{{}}}", s.name, s.labels);
                    s.value = rates.observe(&key, &id, s.value, at)?;
                }
                Some(s)
            })
            .collect()
    }

    /// Dates the broker-level rates by the broker's last refresh instead of the scrape.
    fn date_refreshes(&self, preset: Preset, mut grouped: Grouped) -> Grouped {
        if !matches!(preset, Preset::Throughput | Preset::MessageRate) {
            return grouped;
        }
        if let Ok(mut refreshes) = self.refreshes.lock() {
            for (key, point) in grouped.points.iter_mut() {
                point.at = refreshes.measured_at(key, preset, point.value, point.at);
            }
        }
        grouped
    }

    async fn claims(&self) -> Result<Grouped, MetricsError> {
        let Some(k) = &self.kubelet else {
            return Err(MetricsError::Unsupported(
                "claim usage in Direct mode needs API server access for the kubelet summary API"
                    .into(),
            ));
        };
        let results = join_all(k.nodes.iter().map(|n| fetch_summary(&k.client, n))).await;
        let mut grouped = Grouped::default();
        let mut first_error = None;
        for (node, r) in k.nodes.iter().zip(results) {
            match r {
                Ok(volumes) => grouped.points.extend(volumes.into_iter().map(claim_point)),
                Err(e) => {
                    grouped
                        .failures
                        .insert((String::new(), node.clone()), e.to_string());
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if grouped.points.is_empty() => Err(e),
            _ => Ok(grouped),
        }
    }
}

fn claim_point(v: VolumeUsage) -> (ObjectKey, Point) {
    let value = v.used_percent();
    ((v.namespace, v.claim), Point { value, at: v.at })
}

/// Builds one preset's result from the round's scrapes.
fn from_scrapes(
    preset: Preset,
    pods: &[&PodEndpoint],
    scrapes: &BTreeMap<ObjectKey, &Scraped>,
) -> Result<Grouped, MetricsError> {
    let mut grouped = Grouped::default();
    let mut first_error = None;
    for pod in pods.iter().filter(|p| p.role == preset.role()) {
        let Some(s) = scrapes.get(&pod.key()) else {
            continue;
        };
        match &s.result {
            Ok((series, at)) => {
                if let Some(value) = preset_value(preset, series) {
                    grouped
                        .points
                        .insert(s.key.clone(), Point { value, at: *at });
                }
            }
            Err(e) => {
                grouped.failures.insert(s.key.clone(), e.to_string());
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        // Every pod failed: the source is unreachable, not merely partial.
        Some(e) if grouped.points.is_empty() => Err(copy_error(e)),
        _ => Ok(grouped),
    }
}

/// Errors hold no clonable sources; rebuild the same variant for each preset that reports it.
fn copy_error(e: &MetricsError) -> MetricsError {
    match e {
        MetricsError::Connect { url, detail } => MetricsError::Connect {
            url: url.clone(),
            detail: detail.clone(),
        },
        MetricsError::Timeout { url, after } => MetricsError::Timeout {
            url: url.clone(),
            after: *after,
        },
        MetricsError::Unauthorized { url, status } => MetricsError::Unauthorized {
            url: url.clone(),
            status: *status,
        },
        MetricsError::Http {
            url,
            status,
            snippet,
        } => MetricsError::Http {
            url: url.clone(),
            status: *status,
            snippet: snippet.clone(),
        },
        other => MetricsError::Decode {
            url: String::new(),
            detail: other.to_string(),
            snippet: String::new(),
        },
    }
}

impl MetricsSource for DirectSource {
    fn describe(&self) -> String {
        format!("Direct scrape of {} pods", self.pods.len())
    }

    fn fetch<'a>(
        &'a self,
        presets: &'a [Preset],
        _at: Timestamp,
    ) -> BoxFuture<'a, Vec<Result<Grouped, MetricsError>>> {
        Box::pin(async move {
            let roles: BTreeSet<Role> = presets.iter().map(|p| p.role()).collect();
            let targets: Vec<&PodEndpoint> = self
                .pods
                .iter()
                .filter(|p| roles.contains(&p.role))
                .collect();
            let scrape_all = join_all(targets.iter().map(|p| self.scrape(p)));
            let claims = async {
                if presets.contains(&Preset::ClaimUsage) {
                    Some(self.claims().await)
                } else {
                    None
                }
            };
            let (scraped, mut claims) = futures::join!(scrape_all, claims);
            let by_key: BTreeMap<ObjectKey, &Scraped> =
                scraped.iter().map(|s| (s.key.clone(), s)).collect();
            presets
                .iter()
                .map(|p| match p.role() {
                    Role::Claim => claims.take().unwrap_or_else(|| Ok(Grouped::default())),
                    Role::Broker | Role::Bookie => {
                        from_scrapes(*p, &targets, &by_key).map(|g| self.date_refreshes(*p, g))
                    }
                })
                .collect()
        })
    }

    fn custom<'a>(
        &'a self,
        query: &'a str,
        _at: Timestamp,
    ) -> BoxFuture<'a, Result<Option<CustomValue>, MetricsError>> {
        Box::pin(async move {
            Err(MetricsError::Unsupported(format!(
                "custom query {query:?} needs a Prometheus or VictoriaMetrics source; Direct mode reads the presets only"
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_rate_keeps_the_time_it_first_appeared() {
        let at = |s: i64| Timestamp::from_second(1_700_000_000 + s).unwrap();
        let pod = ("pulsar".to_string(), "pulsar-broker-0".to_string());
        let mut r = Refreshes::default();
        assert_eq!(r.measured_at(&pod, Preset::Throughput, 5.5, at(0)), at(0));
        assert_eq!(r.measured_at(&pod, Preset::Throughput, 5.5, at(15)), at(0));
        assert_eq!(
            r.measured_at(&pod, Preset::MessageRate, 5.5, at(15)),
            at(15)
        );
        assert_eq!(r.measured_at(&pod, Preset::Throughput, 6.0, at(30)), at(30));
        // An idle broker's zero is always current.
        assert_eq!(r.measured_at(&pod, Preset::Throughput, 0.0, at(45)), at(45));
        assert_eq!(r.measured_at(&pod, Preset::Throughput, 0.0, at(60)), at(60));
        r.retain(&BTreeSet::new());
        assert_eq!(r.measured_at(&pod, Preset::Throughput, 6.0, at(75)), at(75));
    }
}
