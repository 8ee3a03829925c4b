//! The test API server itself: identities, RBAC, kubeconfig and teardown behave as the
//! controller tests rely on.

mod support;

use anyhow::anyhow;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use support::apiserver::{ApiServer, ensure_namespace, eventually};

fn role(namespace: &str) -> Role {
    Role {
        metadata: ObjectMeta {
            name: Some("configmap-reader".into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..PolicyRule::default()
        }]),
    }
}

fn binding(namespace: &str, name: &str, subject: Subject) -> RoleBinding {
    RoleBinding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "configmap-reader".into(),
        },
        subjects: Some(vec![subject]),
    }
}

fn forbidden(result: Result<impl Sized, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(e)) if e.code == 403)
}

#[tokio::test]
async fn admin_user_and_service_account_are_authorized_by_rbac() {
    let server = ApiServer::builder()
        .user("alice", &["developers"])
        .start()
        .await;
    let admin = server.client().await;
    let version = admin.apiserver_version().await.unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "34")
    );

    ensure_namespace(&admin, "team").await;
    let roles: Api<Role> = Api::namespaced(admin.clone(), "team");
    roles
        .create(&PostParams::default(), &role("team"))
        .await
        .unwrap();

    // A named user from the token file: nothing allowed until a binding names it.
    let alice: Api<ConfigMap> = Api::namespaced(server.user_client("alice").await, "team");
    assert!(forbidden(alice.list(&ListParams::default()).await));
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), "team");
    let user = Subject {
        kind: "User".into(),
        name: "alice".into(),
        api_group: Some("rbac.authorization.k8s.io".into()),
        namespace: None,
    };
    bindings
        .create(&PostParams::default(), &binding("team", "alice", user))
        .await
        .unwrap();
    eventually("alice lists configmaps after the binding", || async {
        alice
            .list(&ListParams::default())
            .await
            .map_err(|e| anyhow!(e))
    })
    .await;
    // The binding is for one namespace only.
    let elsewhere: Api<ConfigMap> = Api::namespaced(server.user_client("alice").await, "default");
    assert!(forbidden(elsewhere.list(&ListParams::default()).await));

    // A ServiceAccount token from the TokenRequest API, bound the same way.
    let sa: Api<ConfigMap> =
        Api::namespaced(server.service_account_client("team", "robot").await, "team");
    assert!(forbidden(sa.list(&ListParams::default()).await));
    let account = Subject {
        kind: "ServiceAccount".into(),
        name: "robot".into(),
        namespace: Some("team".into()),
        api_group: None,
    };
    bindings
        .create(&PostParams::default(), &binding("team", "robot", account))
        .await
        .unwrap();
    eventually(
        "the ServiceAccount lists configmaps after the binding",
        || async {
            sa.list(&ListParams::default())
                .await
                .map_err(|e| anyhow!(e))
        },
    )
    .await;
}

#[tokio::test]
async fn kubeconfig_file_reaches_the_server_and_files_go_with_it() {
    let server = ApiServer::builder().user("bob", &[]).start().await;
    let dir = server.dir().to_path_buf();
    let text = std::fs::read_to_string(server.kubeconfig()).unwrap();
    let kubeconfig = Kubeconfig::from_yaml(&text).unwrap();
    assert_eq!(kubeconfig.current_context.as_deref(), Some("admin"));
    for context in ["admin", "bob"] {
        let options = KubeConfigOptions {
            context: Some(context.into()),
            ..KubeConfigOptions::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig.clone(), &options)
            .await
            .unwrap();
        assert_eq!(
            config.cluster_url.to_string().trim_end_matches('/'),
            server.url()
        );
        let client = kube::Client::try_from(config).unwrap();
        // /version is open to every authenticated user, so both contexts must reach it over TLS.
        client.apiserver_version().await.unwrap();
    }
    drop(server);
    assert!(!dir.exists(), "{} left behind", dir.display());
}
