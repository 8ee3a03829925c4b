//! Pod lists read in pages from a real API server: `limit` + `continue` until the last page,
//! and a bound on the whole listing.

mod support;

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::Api;
use kube::api::{ListParams, PostParams};
use pulsar_autoscaler::controller::pages::{PagesError, list_all};

use support::apiserver::{ApiServer, ensure_namespace};

fn pod(name: &str, app: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "broker", "image": "pulsar:4.0.7"}]}
    }))
    .unwrap()
}

#[tokio::test]
async fn pods_are_listed_page_by_page_and_bounded() {
    support::monitoring::crypto();
    let server = ApiServer::start().await;
    let client = server.client().await;
    ensure_namespace(&client, "pulsar").await;
    // No controller-manager here to create the namespace's default ServiceAccount.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "pulsar");
    let account =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}})).unwrap();
    accounts
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "pulsar");
    for n in 0..25 {
        pods.create(
            &PostParams::default(),
            &pod(&format!("pulsar-broker-{n}"), "broker"),
        )
        .await
        .unwrap();
    }
    for n in 0..3 {
        pods.create(
            &PostParams::default(),
            &pod(&format!("pulsar-bookie-{n}"), "bookie"),
        )
        .await
        .unwrap();
    }
    let brokers = ListParams::default().labels("app=broker");

    // The server really pages: one request with limit 10 gives 10 and a continue token.
    let first = pods.list(&brokers.clone().limit(10)).await.unwrap();
    assert_eq!(first.items.len(), 10);
    assert!(first.metadata.continue_.is_some_and(|t| !t.is_empty()));

    // Three pages of at most 10 give every broker pod once, and no bookie.
    let all = list_all(&pods, &brokers, 10, 1000).await.unwrap();
    let mut names: Vec<String> = all.iter().filter_map(|p| p.metadata.name.clone()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 25, "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("pulsar-broker-")));

    // One page that holds them all, and an exact fit, are complete too.
    assert_eq!(
        list_all(&pods, &brokers, 500, 1000).await.unwrap().len(),
        25
    );
    assert_eq!(list_all(&pods, &brokers, 5, 25).await.unwrap().len(), 25);

    // Past the bound the listing is refused, not truncated.
    match list_all(&pods, &brokers, 10, 20).await {
        Err(PagesError::TooMany { max: 20 }) => {}
        other => panic!("{other:?}"),
    }
}
