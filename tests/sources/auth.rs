//! Credentials and TLS against a real Prometheus started with `--web.config.file` (basic auth
//! behind TLS with a CA made for the test), and bearer tokens against a loopback server
//! (Prometheus 2.42's web config has no bearer tokens).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use jiff::Timestamp;
use pulsar_autoscaler::metrics::{
    Auth, Credentials, Flavor, MetricsError, PrometheusSource, QueryResult,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use crate::support;

/// A CA and a server certificate for 127.0.0.1/localhost signed by it, as PEM.
fn certificates() -> (String, String, String) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "pulsar-autoscaler test CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut server =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    server
        .distinguished_name
        .push(DnType::CommonName, "prometheus");
    let cert = server.signed_by(&key, &ca).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

fn source(url: &str, credentials: Credentials) -> Result<PrometheusSource, MetricsError> {
    PrometheusSource::new(
        Flavor::Prometheus,
        url,
        Duration::from_secs(5),
        &BTreeMap::new(),
        &credentials,
    )
}

fn basic(user: &str, password: &str) -> Option<Auth> {
    Some(Auth::Basic {
        username: user.into(),
        password: password.into(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_with_tls_and_basic_auth() {
    support::crypto();
    let (ca, cert, key) = certificates();
    let pki = tempfile::tempdir().unwrap();
    let cert_file = pki.path().join("server.crt");
    let key_file = pki.path().join("server.key");
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let hash = bcrypt::hash("correct horse", 4).unwrap();
    // Prometheus 2.42 web configuration (exporter-toolkit): TLS plus bcrypt basic-auth users.
    let web = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  alice: '{hash}'\n",
        cert_file.display(),
        key_file.display()
    );
    let scrape = "global:\n  scrape_interval: 1s\nscrape_configs: []\n";
    let prom = support::prometheus(scrape, Some(&web));
    assert!(prom.url.starts_with("https://"));
    let right = Credentials {
        auth: basic("alice", "correct horse"),
        ca_pem: Some(ca.clone().into_bytes()),
        insecure_skip_verify: false,
    };
    let good = source(&prom.url, right.clone()).unwrap();
    let at = Timestamp::now();
    support::eventually("TLS Prometheus answers", 160, || async {
        good.query("vector(1)", Timestamp::now())
            .await
            .map(|_| ())
            .map_err(|e| format!("{e}; log:\n{}", prom.log_tail()))
    })
    .await;
    let r = good.query("vector(42)", at).await.unwrap();
    assert!(
        matches!(r, QueryResult::Vector(ref v) if v.len() == 1 && v[0].point.value == 42.0),
        "{r:?}"
    );

    let wrong = Credentials {
        auth: basic("alice", "wrong"),
        ..right.clone()
    };
    let e = source(&prom.url, wrong)
        .unwrap()
        .query("vector(1)", at)
        .await
        .unwrap_err();
    assert!(
        matches!(e, MetricsError::Unauthorized { status: 401, .. }),
        "{e}"
    );
    assert!(
        !e.to_string().contains("wrong"),
        "the password must not leak: {e}"
    );
    let anonymous = Credentials {
        auth: None,
        ..right.clone()
    };
    let e = source(&prom.url, anonymous)
        .unwrap()
        .query("vector(1)", at)
        .await
        .unwrap_err();
    assert!(matches!(e, MetricsError::Unauthorized { .. }), "{e}");

    // A CA that did not sign the server certificate: the TLS handshake fails.
    let (other_ca, _, _) = certificates();
    let untrusted = Credentials {
        ca_pem: Some(other_ca.into_bytes()),
        ..right.clone()
    };
    let e = source(&prom.url, untrusted)
        .unwrap()
        .query("vector(1)", at)
        .await
        .unwrap_err();
    assert!(matches!(e, MetricsError::Connect { .. }), "{e}");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    // insecureSkipVerify accepts it.
    let skip = Credentials {
        ca_pem: None,
        insecure_skip_verify: true,
        ..right.clone()
    };
    source(&prom.url, skip)
        .unwrap()
        .query("vector(1)", at)
        .await
        .unwrap();
    // A CA bundle that is not PEM is a settings error before any request.
    let garbage = Credentials {
        ca_pem: Some(b"not a certificate".to_vec()),
        ..right
    };
    assert_eq!(source(&prom.url, garbage).unwrap_err().label(), "config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_and_headers_are_sent() {
    support::crypto();
    let app = Router::new().route(
        "/api/v1/query",
        post(|headers: HeaderMap| async move {
            let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
            let tenant = headers.get("x-scope-orgid").and_then(|v| v.to_str().ok());
            if auth != Some("Bearer t0ken") {
                return (StatusCode::UNAUTHORIZED, "missing or wrong token".to_string());
            }
            let body = format!(
                r#"{{"status":"success","data":{{"resultType":"scalar","result":[1700000000,"{}"]}}}}"#,
                if tenant == Some("team-a") { 1 } else { 0 }
            );
            (StatusCode::OK, body)
        }),
    );
    let addr = support::serve(app).await;
    let url = format!("http://{addr}");
    let headers = BTreeMap::from([("X-Scope-OrgID".to_string(), "team-a".to_string())]);
    let creds = |t: &str| Credentials {
        auth: Some(Auth::Bearer(t.into())),
        ..Credentials::default()
    };
    let s = PrometheusSource::new(
        Flavor::Prometheus,
        &url,
        Duration::from_secs(5),
        &headers,
        &creds("t0ken"),
    )
    .unwrap();
    let r = s.query("x", Timestamp::now()).await.unwrap();
    assert!(
        matches!(r, QueryResult::Scalar(p) if p.value == 1.0),
        "{r:?}"
    );
    let s = PrometheusSource::new(
        Flavor::Prometheus,
        &url,
        Duration::from_secs(5),
        &headers,
        &creds("nope"),
    )
    .unwrap();
    let e = s.query("x", Timestamp::now()).await.unwrap_err();
    assert!(
        matches!(e, MetricsError::Unauthorized { status: 401, .. }),
        "{e}"
    );
    let bad = BTreeMap::from([("bad header".to_string(), "x".to_string())]);
    let e = PrometheusSource::new(
        Flavor::Prometheus,
        &url,
        Duration::from_secs(5),
        &bad,
        &Credentials::default(),
    )
    .unwrap_err();
    assert_eq!(e.label(), "config");
}
