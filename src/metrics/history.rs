//! Past values of a policy's broker totals from a Prometheus or VictoriaMetrics source, fetched
//! with range queries: the daily pattern's input for the forecast (`brokers.forecast`).
//!
//! One fetch covers [`DAYS`] days at [`STEP`] and is reused for [`REFRESH`]; the engine only
//! looks at windows a day or more in the past, which an hour-old copy holds. Only cluster totals
//! (throughput, message rate, custom) are fetched: utilizations are not forecast.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::backtest::LoadedPolicy;
use crate::backtest::prometheus::{self, CHUNK_POINTS, FetchError, RangeQuery};
use crate::backtest::replay::metric_column;
use crate::decide::forecast::SeriesHistory;

/// Days of history fetched.
pub const DAYS: i64 = 7;
/// Resolution of the fetched history (five points in the engine's ±5-minute windows).
pub const STEP: Duration = Duration::from_secs(120);
/// Age after which a cached history is fetched again.
pub const REFRESH: Duration = Duration::from_secs(3600);
/// Policies whose history is kept at most; the oldest fetch is dropped first.
pub const MAX_POLICIES: usize = 256;

/// Fetches the policy's broker totals over the last [`DAYS`] days before `now`, one series per
/// policy metric (empty for utilizations), oldest first.
pub async fn fetch(
    client: &reqwest::Client,
    loaded: &LoadedPolicy,
    now: Timestamp,
) -> Result<SeriesHistory, FetchError> {
    let Some(brokers) = &loaded.policy.brokers else {
        return Ok(SeriesHistory::default());
    };
    let Some(url) = &loaded.policy.source.url else {
        return Ok(SeriesHistory::default());
    };
    let queries = prometheus::queries(loaded);
    let wanted: Vec<_> = brokers
        .metrics
        .iter()
        .filter(|m| !m.kind.is_utilization())
        .filter_map(|m| {
            let column = metric_column(m);
            queries.iter().find(|(c, _)| *c == column).cloned()
        })
        .collect();
    if wanted.is_empty() {
        return Ok(SeriesHistory::default());
    }
    let from = now
        .checked_sub(SignedDuration::from_hours(24 * DAYS))
        .map_err(|_| FetchError::Range("the history range is outside the calendar".into()))?;
    let range = RangeQuery {
        url: url.clone(),
        from,
        to: now,
        step: STEP,
        headers: loaded.policy.source.headers.clone(),
        chunk_points: CHUNK_POINTS,
    };
    let trace = prometheus::fetch(client, &range, &wanted, &mut |_, _| {}).await?;
    let series = brokers
        .metrics
        .iter()
        .map(|m| {
            let Some(c) = trace.index(&metric_column(m)) else {
                return Vec::new();
            };
            trace
                .rows
                .iter()
                .filter_map(|r| {
                    let at = from
                        .checked_add(SignedDuration::from_millis(r.millis()))
                        .ok()?;
                    Some((at, r.value(c)?))
                })
                .collect()
        })
        .collect();
    Ok(SeriesHistory { series })
}

/// Fetched histories by policy, reused for [`REFRESH`].
#[derive(Default)]
pub struct HistoryCache {
    entries: Mutex<HashMap<String, (Timestamp, Arc<SeriesHistory>)>>,
}

impl HistoryCache {
    /// The process-wide cache the controller uses.
    pub fn shared() -> &'static HistoryCache {
        static CACHE: OnceLock<HistoryCache> = OnceLock::new();
        CACHE.get_or_init(HistoryCache::default)
    }

    /// The history of `key` fetched within [`REFRESH`] before `now`, if any.
    pub fn fresh(&self, key: &str, now: Timestamp) -> Option<Arc<SeriesHistory>> {
        let entries = self.entries.lock().ok()?;
        let (fetched, history) = entries.get(key)?;
        let age = crate::decide::elapsed(now, *fetched);
        (age < REFRESH).then(|| history.clone())
    }

    /// Keeps `history` for `key`, dropping the oldest fetch beyond [`MAX_POLICIES`].
    pub fn keep(&self, key: &str, now: Timestamp, history: Arc<SeriesHistory>) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        entries.insert(key.to_string(), (now, history));
        while entries.len() > MAX_POLICIES {
            let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            entries.remove(&oldest);
        }
    }

    /// Forgets a deleted policy's history.
    pub fn forget(&self, key: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(key);
        }
    }

    /// The cached history of `loaded`, fetched when missing or older than [`REFRESH`]. A failed
    /// fetch is cached as empty for the same time, so an unreachable history costs one query
    /// per hour, not one per evaluation; the forecast then uses its trend only.
    pub async fn get(
        &self,
        client: &reqwest::Client,
        loaded: &LoadedPolicy,
        now: Timestamp,
    ) -> Result<Arc<SeriesHistory>, FetchError> {
        let key = format!("{}/{}", loaded.namespace, loaded.name);
        if let Some(h) = self.fresh(&key, now) {
            return Ok(h);
        }
        match fetch(client, loaded, now).await {
            Ok(h) => {
                let h = Arc::new(h);
                self.keep(&key, now, h.clone());
                Ok(h)
            }
            Err(e) => {
                self.keep(&key, now, Arc::new(SeriesHistory::default()));
                Err(e)
            }
        }
    }
}

/// Time one history fetch may take (a week of range queries, a few chunks per metric).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// The history of a policy with `forecast.enabled` and a Prometheus or VictoriaMetrics source,
/// from the shared cache; `None` (trend only) for other sources or when the fetch fails, which
/// is logged. Secret-based `auth` and `tls` of the source are not applied to these queries.
pub async fn for_policy(
    namespace: &str,
    name: &str,
    policy: &crate::policy::Policy,
    now: Timestamp,
) -> Option<Arc<SeriesHistory>> {
    static CLIENT: OnceLock<Option<reqwest::Client>> = OnceLock::new();
    if policy.forecast.is_none() || policy.source.url.is_none() {
        return None;
    }
    let client = CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .timeout(FETCH_TIMEOUT)
                .build()
                .ok()
        })
        .as_ref()?;
    let loaded = LoadedPolicy {
        name: name.to_string(),
        namespace: namespace.to_string(),
        policy: policy.clone(),
        drain_timeout: None,
    };
    match HistoryCache::shared().get(client, &loaded, now).await {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(policy = %name, namespace = %namespace, error = %e, "no history for the forecast's daily pattern; trend only for the next hour");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn the_cache_refreshes_hourly_and_stays_bounded() {
        let cache = HistoryCache::default();
        let h = Arc::new(SeriesHistory::default());
        cache.keep("a", at(0), h.clone());
        assert!(cache.fresh("a", at(3599)).is_some());
        assert!(cache.fresh("a", at(3600)).is_none());
        for i in 0..MAX_POLICIES + 5 {
            cache.keep(&format!("p{i}"), at(i as i64 + 1), h.clone());
        }
        assert!(cache.fresh("a", at(10)).is_none(), "the oldest went first");
        assert!(
            cache
                .fresh(&format!("p{}", MAX_POLICIES + 4), at(400))
                .is_some()
        );
        cache.forget(&format!("p{}", MAX_POLICIES + 4));
        assert!(
            cache
                .fresh(&format!("p{}", MAX_POLICIES + 4), at(400))
                .is_none()
        );
    }
}
