//! The Pulsar admin REST API of each broker pod (`<scheme>://<pod IP>:<port>`), for moving
//! bundles off a broker before it goes and onto brokers that were just added.
//!
//! Facts this client is built on (Pulsar 4.0.7): a broker id is `<advertised address>:<web
//! port>`; `ownedNamespaces` answers only on the broker itself and always lists the broker's
//! heartbeat namespaces, which never move; an unload is a `PUT` answered with 307 redirects (to
//! the leader, then to the owner) that must be followed with the same method and credentials,
//! and only to brokers of the cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use reqwest::Method;
use serde::Deserialize;

use crate::api::{AdminScheme, AdminSpec};
use crate::metrics::credentials;
use crate::metrics::http::ensure_crypto_provider;

/// How the admin API is reached and authenticated.
#[derive(Clone, Default)]
pub struct AdminSettings {
    /// `https` instead of `http`.
    pub https: bool,
    /// Web service port of every broker.
    pub port: u16,
    /// Pulsar JWT, sent as a bearer token.
    pub token: Option<String>,
    /// PEM CA bundle that signs the brokers' certificates.
    pub ca_pem: Option<Vec<u8>>,
    /// Accept any certificate.
    pub insecure_skip_verify: bool,
    /// Bound on one call, connect and answer.
    pub timeout: Duration,
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("https", &self.https)
            .field("port", &self.port)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl AdminSettings {
    /// The settings `brokers.admin` describes, with the token and CA read from their Secrets
    /// (only Secrets carrying the consent label, as for metrics sources). Read on every call,
    /// so a rotated token or CA is used from the next evaluation on.
    pub async fn from_spec(
        secrets: &Api<Secret>,
        spec: &AdminSpec,
        timeout: Duration,
    ) -> Result<AdminSettings, AdminError> {
        let namespace = secrets.namespace().unwrap_or("default").to_string();
        let read = |name: String, key: String| {
            let namespace = namespace.clone();
            async move {
                let secret = credentials::fetch(secrets, &namespace, &name).await?;
                credentials::key(&secret, &namespace, &name, &key)
            }
        };
        let mut settings = AdminSettings {
            https: spec.scheme == AdminScheme::Https,
            port: u16::try_from(spec.port)
                .map_err(|_| AdminError::Config(format!("port {} is out of range", spec.port)))?,
            timeout,
            insecure_skip_verify: spec.tls.as_ref().is_some_and(|t| t.insecure_skip_verify),
            ..AdminSettings::default()
        };
        if let Some(r) = spec.auth.as_ref().map(|a| &a.token_secret_ref) {
            let bytes = read(r.name.clone(), r.key.clone())
                .await
                .map_err(|e| AdminError::Secret(format!("auth.tokenSecretRef: {e}")))?;
            let token = credentials::text(&bytes, &namespace, &r.name, &r.key)
                .map_err(|e| AdminError::Secret(format!("auth.tokenSecretRef: {e}")))?;
            settings.token = Some(token);
        }
        if let Some(r) = spec.tls.as_ref().and_then(|t| t.ca_secret_ref.as_ref()) {
            let pem = read(r.name.clone(), r.key.clone())
                .await
                .map_err(|e| AdminError::Secret(format!("tls.caSecretRef: {e}")))?;
            settings.ca_pem = Some(pem);
        }
        Ok(settings)
    }
}

/// The id (`<advertised address>:<port>`) among `active` of the broker in pod `pod` at `ip`: the
/// advertised address is the pod IP, the pod's name, or a DNS name starting with it (Pulsar's
/// Helm chart advertises `<pod>.<service>.<namespace>.svc...`).
pub fn broker_id(active: &[String], pod: &str, ip: &str) -> Option<String> {
    let host = |id: &str| {
        id.rsplit_once(':')
            .map_or(id, |(h, _)| h)
            .trim_matches(['[', ']'])
            .to_string()
    };
    let by_ip = active.iter().find(|id| host(id) == ip);
    let by_name = || {
        active.iter().find(|id| {
            let h = host(id);
            h == pod
                || h.strip_prefix(pod)
                    .is_some_and(|rest| rest.starts_with('.'))
        })
    };
    by_ip.or_else(by_name).cloned()
}

/// What went wrong, naming the broker and the call.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Nothing answered.
    #[error("broker {broker}: {call}: cannot connect: {detail}")]
    Connect {
        /// Broker address.
        broker: String,
        /// The call, e.g. `GET /admin/v2/brokers/health`.
        call: String,
        /// Transport error.
        detail: String,
    },
    /// No answer in time.
    #[error("broker {broker}: {call}: no answer within {after:?}")]
    Timeout {
        /// Broker address.
        broker: String,
        /// The call.
        call: String,
        /// The timeout.
        after: Duration,
    },
    /// The broker refused: 401/403 (token), 404, 409, 412, 5xx.
    #[error("broker {broker}: {call}: HTTP {status}{}", reason_suffix(.reason))]
    Http {
        /// Broker address.
        broker: String,
        /// The call.
        call: String,
        /// HTTP status.
        status: u16,
        /// Pulsar's own `reason`, bounded.
        reason: String,
    },
    /// A redirect to somewhere that is not a broker of the cluster, or too many.
    #[error("broker {broker}: {call}: redirected to {location}, {why}")]
    Redirect {
        /// Broker address.
        broker: String,
        /// The call.
        call: String,
        /// Where it pointed.
        location: String,
        /// Why it was not followed.
        why: &'static str,
    },
    /// An answer that is not what the API documents.
    #[error("broker {broker}: {call}: unexpected answer: {detail}")]
    Decode {
        /// Broker address.
        broker: String,
        /// The call.
        call: String,
        /// What was wrong.
        detail: String,
    },
    /// The client could not be built (bad CA bundle).
    #[error("admin client: {0}")]
    Config(String),
    /// A Secret named by `brokers.admin` could not be read.
    #[error("brokers.admin: {0}")]
    Secret(String),
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(" ({reason})")
    }
}

impl AdminError {
    /// Stable name for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            AdminError::Connect { .. } => "connect",
            AdminError::Timeout { .. } => "timeout",
            AdminError::Http { status, .. } if *status == 401 || *status == 403 => "unauthorized",
            AdminError::Http { .. } => "http_status",
            AdminError::Redirect { .. } => "redirect",
            AdminError::Decode { .. } => "decode",
            AdminError::Config(_) => "config",
            AdminError::Secret(_) => "secret",
        }
    }

    /// Worth another try: the broker may be starting, busy or between leaders.
    fn retryable(&self) -> bool {
        match self {
            AdminError::Connect { .. } | AdminError::Timeout { .. } => true,
            AdminError::Http { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// A namespace bundle: `tenant/namespace` and its hash range `0x..._0x...`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bundle {
    /// `tenant/namespace`.
    pub namespace: String,
    /// Hash range, e.g. `0x00000000_0x40000000`.
    pub range: String,
}

impl std::fmt::Display for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.range)
    }
}

impl Bundle {
    /// Parses `tenant/namespace/0x..._0x...` as `ownedNamespaces` keys it.
    pub fn parse(key: &str) -> Option<Bundle> {
        let (namespace, range) = key.rsplit_once('/')?;
        let valid =
            namespace.split('/').count() >= 2 && range.starts_with("0x") && range.contains("_0x");
        valid.then(|| Bundle {
            namespace: namespace.to_string(),
            range: range.to_string(),
        })
    }

    /// The broker's own heartbeat namespaces (`pulsar/<cluster>/<broker id>` and
    /// `pulsar/<broker id>`): they stay with their broker and never move.
    pub fn is_heartbeat(&self) -> bool {
        let Some(rest) = self.namespace.strip_prefix("pulsar/") else {
            return false;
        };
        let id = rest.rsplit('/').next().unwrap_or(rest);
        id.rsplit_once(':')
            .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
    }
}

/// The admin API of a cluster's brokers.
#[derive(Clone, Debug)]
pub struct AdminClient {
    http: reqwest::Client,
    settings: AdminSettings,
}

/// How many redirects one call follows (leader, then owner).
const MAX_REDIRECTS: usize = 3;

impl AdminClient {
    /// Builds the client; redirects are followed by hand so credentials go to brokers only.
    pub fn new(settings: AdminSettings) -> Result<Self, AdminError> {
        ensure_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = &settings.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| AdminError::Config(format!("CA bundle is not PEM: {e}")))?;
            builder = builder.tls_certs_only(certs);
        }
        if settings.insecure_skip_verify {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let http = builder
            .build()
            .map_err(|e| AdminError::Config(format!("cannot build HTTP client: {e}")))?;
        Ok(AdminClient { http, settings })
    }

    fn base(&self, host: &str) -> String {
        let scheme = if self.settings.https { "https" } else { "http" };
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        format!("{scheme}://{host}:{}", self.settings.port)
    }

    /// `GET /admin/v2/brokers/health` on the broker at `host`.
    pub async fn health(&self, host: &str) -> Result<(), AdminError> {
        self.call(host, Method::GET, "/admin/v2/brokers/health", &[])
            .await
            .map(|_| ())
    }

    /// Broker ids (`<address>:<port>`) the cluster's load manager counts as active.
    pub async fn active_brokers(
        &self,
        host: &str,
        cluster: &str,
    ) -> Result<Vec<String>, AdminError> {
        let path = format!("/admin/v2/brokers/{cluster}");
        let body = self.call(host, Method::GET, &path, &[]).await?;
        decode(host, &path, &body)
    }

    /// The bundles the broker at `host` owns, heartbeat namespaces left out.
    pub async fn owned_bundles(
        &self,
        host: &str,
        cluster: &str,
        broker_id: &str,
    ) -> Result<Vec<Bundle>, AdminError> {
        let path = format!("/admin/v2/brokers/{cluster}/{broker_id}/ownedNamespaces");
        let body = self.call(host, Method::GET, &path, &[]).await?;
        let owned: BTreeMap<String, serde_json::Value> = decode(host, &path, &body)?;
        Ok(owned
            .keys()
            .filter_map(|k| Bundle::parse(k))
            .filter(|b| !b.is_heartbeat())
            .collect())
    }

    /// The broker's runtime configuration (every setting, as strings).
    pub async fn runtime_config(&self, host: &str) -> Result<BTreeMap<String, String>, AdminError> {
        let path = "/admin/v2/brokers/configuration/runtime";
        let body = self.call(host, Method::GET, path, &[]).await?;
        decode(host, path, &body)
    }

    /// Unloads `bundle` (asked of the broker at `host`), onto `destination` when given. The
    /// broker redirects to the leader and the owner; only redirects to `brokers` (ids of the
    /// cluster) are followed.
    pub async fn unload(
        &self,
        host: &str,
        bundle: &Bundle,
        destination: Option<&str>,
        brokers: &[String],
    ) -> Result<(), AdminError> {
        let path = format!(
            "/admin/v2/namespaces/{}/{}/unload",
            bundle.namespace, bundle.range
        );
        let mut url = format!("{}{path}", self.base(host));
        if let Some(d) = destination {
            // The redirects repeat the query in their Location; it is sent once, here.
            url = reqwest::Url::parse_with_params(&url, [("destinationBroker", d)])
                .map_err(|e| AdminError::Config(format!("unload URL: {e}")))?
                .to_string();
        }
        let call = format!("PUT {path}");
        for _ in 0..=MAX_REDIRECTS {
            let response = self.send(host, &call, Method::PUT, &url, &[]).await?;
            let status = response.status();
            if status.is_redirection() {
                let location = location(&response);
                let target =
                    allowed_redirect(&location, brokers).map_err(|why| AdminError::Redirect {
                        broker: host.to_string(),
                        call: call.clone(),
                        location: location.clone(),
                        why,
                    })?;
                url = target;
                continue;
            }
            return check(host, &call, response).await.map(|_| ());
        }
        Err(AdminError::Redirect {
            broker: host.to_string(),
            call,
            location: url,
            why: "too many redirects",
        })
    }

    /// One call with bounded retries on transport errors and 5xx.
    async fn call(
        &self,
        host: &str,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<String, AdminError> {
        let url = format!("{}{path}", self.base(host));
        let call = format!("{method} {path}");
        let attempt = || async {
            let response = self.send(host, &call, method.clone(), &url, query).await?;
            check(host, &call, response).await
        };
        attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_times(3),
            )
            .when(AdminError::retryable)
            .await
    }

    async fn send(
        &self,
        host: &str,
        call: &str,
        method: Method,
        url: &str,
        query: &[(&str, &str)],
    ) -> Result<reqwest::Response, AdminError> {
        let mut request = self.http.request(method, url).query(query);
        if let Some(token) = &self.settings.token {
            request = request.bearer_auth(token);
        }
        request.send().await.map_err(|e| {
            if e.is_timeout() {
                AdminError::Timeout {
                    broker: host.to_string(),
                    call: call.to_string(),
                    after: self.settings.timeout,
                }
            } else {
                AdminError::Connect {
                    broker: host.to_string(),
                    call: call.to_string(),
                    detail: crate::metrics::error::chain(&e),
                }
            }
        })
    }
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The redirect target when it is a broker of the cluster (`host:port` among `brokers`).
fn allowed_redirect(location: &str, brokers: &[String]) -> Result<String, &'static str> {
    let url = reqwest::Url::parse(location).map_err(|_| "not an absolute URL")?;
    let host = url.host_str().ok_or("no host")?;
    let port = url.port_or_known_default().ok_or("no port")?;
    let id = format!("{host}:{port}");
    if brokers.contains(&id) {
        Ok(url.to_string())
    } else {
        Err("not a broker of the cluster")
    }
}

/// A successful answer's body, or the broker's refusal with Pulsar's `reason`.
async fn check(host: &str, call: &str, response: reqwest::Response) -> Result<String, AdminError> {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        return Ok(body);
    }
    #[derive(Deserialize)]
    struct Reason {
        reason: String,
    }
    let reason = serde_json::from_str::<Reason>(&body)
        .map(|r| r.reason)
        .unwrap_or_default();
    Err(AdminError::Http {
        broker: host.to_string(),
        call: call.to_string(),
        status: status.as_u16(),
        reason: crate::policy::bounded(&reason, 200),
    })
}

fn decode<T: serde::de::DeserializeOwned>(
    host: &str,
    path: &str,
    body: &str,
) -> Result<T, AdminError> {
    serde_json::from_str(body).map_err(|e| AdminError::Decode {
        broker: host.to_string(),
        call: format!("GET {path}"),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_parse_and_heartbeats_are_recognised() {
        let b = Bundle::parse("public/default/0x00000000_0x40000000").unwrap();
        assert_eq!(b.namespace, "public/default");
        assert_eq!(b.to_string(), "public/default/0x00000000_0x40000000");
        assert!(!b.is_heartbeat());
        for hb in [
            "pulsar/test/127.0.0.2:8080/0x00000000_0xffffffff",
            "pulsar/127.0.0.2:8080/0x00000000_0xffffffff",
        ] {
            assert!(Bundle::parse(hb).unwrap().is_heartbeat(), "{hb}");
        }
        assert!(
            !Bundle::parse("pulsar/system/0x00000000_0xffffffff")
                .unwrap()
                .is_heartbeat()
        );
        for bad in [
            "",
            "public",
            "public/default",
            "public/default/zz",
            "x/0x1_0x2",
        ] {
            assert_eq!(Bundle::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_pod_is_matched_to_its_broker_id_by_ip_or_name() {
        let active = vec![
            "10.0.0.5:8080".to_string(),
            "pulsar-broker-1.pulsar-broker.pulsar.svc.cluster.local:8080".to_string(),
            "pulsar-broker-10.pulsar-broker.pulsar.svc.cluster.local:8080".to_string(),
        ];
        assert_eq!(
            broker_id(&active, "pulsar-broker-0", "10.0.0.5").as_deref(),
            Some("10.0.0.5:8080")
        );
        assert_eq!(
            broker_id(&active, "pulsar-broker-1", "10.0.0.6").as_deref(),
            Some("pulsar-broker-1.pulsar-broker.pulsar.svc.cluster.local:8080")
        );
        assert_eq!(
            broker_id(&active, "pulsar-broker-10", "10.0.0.9").as_deref(),
            Some("pulsar-broker-10.pulsar-broker.pulsar.svc.cluster.local:8080")
        );
        assert_eq!(broker_id(&active, "pulsar-broker-2", "10.0.0.7"), None);
    }

    #[test]
    fn redirects_go_to_brokers_of_the_cluster_only() {
        let brokers = vec!["10.0.0.5:8080".to_string(), "10.0.0.6:8080".to_string()];
        assert_eq!(
            allowed_redirect("http://10.0.0.6:8080/admin/v2/x?y=1", &brokers).unwrap(),
            "http://10.0.0.6:8080/admin/v2/x?y=1"
        );
        assert!(allowed_redirect("http://evil.example:8080/admin", &brokers).is_err());
        assert!(allowed_redirect("http://10.0.0.6:9999/admin", &brokers).is_err());
        assert!(allowed_redirect("/relative", &brokers).is_err());
    }

    #[test]
    fn errors_say_which_broker_and_call_and_carry_a_label() {
        let e = AdminError::Http {
            broker: "10.0.0.5".into(),
            call: "PUT /admin/v2/namespaces/a/b/0x0_0x1/unload".into(),
            status: 412,
            reason: "not the owner".into(),
        };
        assert_eq!(
            e.to_string(),
            "broker 10.0.0.5: PUT /admin/v2/namespaces/a/b/0x0_0x1/unload: HTTP 412 (not the owner)"
        );
        assert_eq!(e.label(), "http_status");
        assert!(!e.retryable());
        let settings = AdminSettings {
            token: Some("secret-token".into()),
            ..AdminSettings::default()
        };
        assert!(!format!("{settings:?}").contains("secret-token"));
    }
}
