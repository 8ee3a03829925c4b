//! Volume usage from the kubelet summary API, read through the API server's node proxy
//! (`/api/v1/nodes/{node}/proxy/stats/summary`), so no kubelet port needs to be reachable.

use jiff::Timestamp;
use serde::Deserialize;

use super::error::{MetricsError, chain};

/// One claim's usage as the kubelet measured it.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeUsage {
    /// Claim namespace.
    pub namespace: String,
    /// Claim name.
    pub claim: String,
    /// Used bytes.
    pub used_bytes: f64,
    /// Capacity bytes of the filesystem.
    pub capacity_bytes: f64,
    /// Bytes an unprivileged writer (the bookie) can still use; below `capacity - used` by
    /// the filesystem's reserved blocks.
    pub available_bytes: Option<f64>,
    /// When the kubelet measured it.
    pub at: Timestamp,
}

impl VolumeUsage {
    /// Used space in percent of capacity as BookKeeper judges its disk marks: everything the
    /// bookie cannot write to, reserved blocks included (NaN/Inf when the capacity is zero).
    pub fn used_percent(&self) -> f64 {
        let unusable = match self.available_bytes {
            Some(available) => self.used_bytes.max(self.capacity_bytes - available),
            None => self.used_bytes,
        };
        100.0 * unusable / self.capacity_bytes
    }
}

#[derive(Deserialize)]
struct Summary {
    #[serde(default)]
    pods: Vec<PodStats>,
}

#[derive(Deserialize)]
struct PodStats {
    #[serde(default)]
    volume: Vec<VolumeStats>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VolumeStats {
    #[serde(default)]
    pvc_ref: Option<PvcRef>,
    #[serde(default)]
    time: Option<Timestamp>,
    #[serde(default)]
    capacity_bytes: Option<f64>,
    #[serde(default)]
    used_bytes: Option<f64>,
    #[serde(default)]
    available_bytes: Option<f64>,
}

#[derive(Deserialize)]
struct PvcRef {
    name: String,
    namespace: String,
}

/// Parses a summary; volumes that are not claims or lack numbers are skipped.
pub fn parse_summary(json: &str) -> Result<Vec<VolumeUsage>, serde_json::Error> {
    let summary: Summary = serde_json::from_str(json)?;
    Ok(summary
        .pods
        .into_iter()
        .flat_map(|p| p.volume)
        .filter_map(|v| {
            let pvc = v.pvc_ref?;
            Some(VolumeUsage {
                namespace: pvc.namespace,
                claim: pvc.name,
                used_bytes: v.used_bytes?,
                capacity_bytes: v.capacity_bytes?,
                available_bytes: v.available_bytes,
                at: v.time?,
            })
        })
        .collect())
}

/// Fetches and parses one node's summary through the API server.
pub async fn fetch_summary(
    client: &kube::Client,
    node: &str,
) -> Result<Vec<VolumeUsage>, MetricsError> {
    let fail = |detail: String| MetricsError::Kubelet {
        node: node.to_string(),
        detail,
    };
    let path = format!("/api/v1/nodes/{node}/proxy/stats/summary");
    let request = http::Request::get(&path)
        .body(Vec::new())
        .map_err(|e| fail(format!("cannot build request {path}: {e}")))?;
    let text = client
        .request_text(request)
        .await
        .map_err(|e| fail(format!("GET {path}: {}", chain(&e))))?;
    parse_summary(&text).map_err(|e| {
        fail(format!(
            "GET {path}: not a kubelet summary: {}",
            super::error::json_problem(&e)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fixture() {
        let v = parse_summary(include_str!(
            "../../tests/fixtures/kubelet-stats-summary.json"
        ))
        .unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].claim, "ledgers-pulsar-bookie-0");
        assert_eq!(v[0].namespace, "pulsar");
        assert!((v[0].used_percent() - 83.257).abs() < 0.01);
        assert_eq!(v[1].claim, "journal-pulsar-bookie-0");
        assert_eq!(v[0].at.to_string(), "2026-11-26T10:00:00Z");
    }

    #[test]
    fn reserved_blocks_count_as_used() {
        // ext4 keeps 5 % for root: 80 % used leaves 15 % available to the bookie.
        let v = VolumeUsage {
            namespace: "pulsar".into(),
            claim: "ledgers-pulsar-bookie-0".into(),
            used_bytes: 80.0,
            capacity_bytes: 100.0,
            available_bytes: Some(15.0),
            at: Timestamp::UNIX_EPOCH,
        };
        assert!((v.used_percent() - 85.0).abs() < 1e-9);
        let without = VolumeUsage {
            available_bytes: None,
            ..v
        };
        assert!((without.used_percent() - 80.0).abs() < 1e-9);
    }

    #[test]
    fn skips_non_claims_and_rejects_garbage() {
        let json = r#"{"pods":[{"volume":[{"name":"tmp","usedBytes":1,"capacityBytes":2,"time":"2026-01-01T00:00:00Z"}]}]}"#;
        assert!(parse_summary(json).unwrap().is_empty());
        assert!(parse_summary("<html>").is_err());
        assert!(parse_summary("{}").unwrap().is_empty());
    }
}
