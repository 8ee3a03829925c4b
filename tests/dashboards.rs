//! The Grafana dashboards of `dashboards/` and the alert rules of `deploy/monitoring/prometheusrule.yaml`:
//! well-formed for import and for `promtool`, and, in an end-to-end run (API server, emulator,
//! Prometheus, the controller as a subprocess, a second Prometheus scraping the controller as the
//! ServiceMonitor would), every query returns data, every metric they name is one the controller
//! exports, and the alerts fire in the situations they describe.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use support::monitoring::{self, Server, eventually};
use support::pulsar::{CONTROLLER_NS, Pulsar, Shape};

/// Grafana's own variables, replaced as Grafana would for a 1 s scrape interval.
const RATE_INTERVAL: &str = "10s";
const INTERVAL: &str = "2s";

fn dashboards() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("dashboards")
        .expect("dashboards/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "expected three dashboards, found {files:?}"
    );
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).unwrap();
            let value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", f.display()));
            (f.display().to_string(), value)
        })
        .collect()
}

/// Panels, rows' nested panels included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// Every query of a dashboard: `(where, expr)` for panel targets and annotations.
fn queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("panel {:?} {}", p["title"], t["refId"]),
                t["expr"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    for a in d["annotations"]["list"].as_array().expect("annotations") {
        if a["builtIn"] != 1 {
            out.push((
                format!("annotation {:?}", a["name"]),
                a["expr"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    out
}

fn variables(d: &Value) -> Vec<&Value> {
    d["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .collect()
}

fn variable_query(v: &Value) -> String {
    match &v["query"] {
        Value::String(s) => s.clone(),
        q => q["query"].as_str().unwrap_or_default().to_string(),
    }
}

/// `pulsar_autoscaler_*` names in a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("pulsar_autoscaler_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The rule groups of the PrometheusRule, as a Prometheus rules file.
fn rule_groups() -> Value {
    let rule: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string("deploy/monitoring/prometheusrule.yaml")
            .expect("deploy/monitoring/prometheusrule.yaml"),
    )
    .expect("PrometheusRule YAML");
    json!({"groups": rule["spec"]["groups"].clone()})
}

fn alerts(groups: &Value) -> Vec<&Value> {
    groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect()
}

fn promtool() -> PathBuf {
    monitoring::binary("PROMTOOL_BIN", "/usr/bin/promtool", "prometheus")
}

#[test]
fn dashboards_are_importable_with_their_template_variables() {
    let mut uids = BTreeSet::new();
    let datasource = json!({"type": "prometheus", "uid": "${datasource}"});
    for (file, d) in dashboards() {
        let uid = d["uid"].as_str().unwrap_or_default();
        assert!(!uid.is_empty() && uid.len() <= 40, "{file}: uid {uid:?}");
        assert!(uids.insert(uid.to_string()), "{file}: uid {uid} used twice");
        assert!(
            d["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{file}: title"
        );
        assert!(
            d["id"].is_null(),
            "{file}: id must be null to import anywhere"
        );
        assert!(
            d["schemaVersion"].as_u64().is_some(),
            "{file}: schemaVersion"
        );

        let vars = variables(&d);
        let names: Vec<&str> = vars.iter().filter_map(|v| v["name"].as_str()).collect();
        for want in ["datasource", "namespace", "policy"] {
            assert!(names.contains(&want), "{file}: no ${want} variable");
        }
        let ds = vars.iter().find(|v| v["name"] == "datasource").unwrap();
        assert_eq!(ds["type"], "datasource", "{file}");
        assert_eq!(ds["query"], "prometheus", "{file}");
        for v in vars.iter().filter(|v| v["type"] == "query") {
            assert_eq!(
                v["datasource"], datasource,
                "{file}: variable {}",
                v["name"]
            );
            let q = variable_query(v);
            // `why_namespace` offers namespaces, `why_policy` policies.
            let name = v["name"].as_str().unwrap();
            let label = name.strip_prefix("why_").unwrap_or(name);
            assert!(
                q.starts_with("label_values(") && q.ends_with(&format!(", {label})")),
                "{file}: variable {} query {q:?}",
                v["name"]
            );
        }

        let mut ids = BTreeSet::new();
        for p in panels(&d) {
            let title = p["title"].as_str().unwrap_or_default();
            assert!(!title.is_empty(), "{file}: a panel without title");
            assert!(
                ids.insert(p["id"].as_u64().expect("panel id")),
                "{file}: id"
            );
            for k in ["x", "y", "w", "h"] {
                assert!(p["gridPos"][k].is_u64(), "{file}: {title}: gridPos.{k}");
            }
            let Some(targets) = p["targets"].as_array() else {
                assert!(
                    matches!(p["type"].as_str(), Some("row" | "text")),
                    "{file}: {title}: a data panel without targets"
                );
                continue;
            };
            assert!(!targets.is_empty(), "{file}: {title}: no targets");
            assert_eq!(p["datasource"], datasource, "{file}: {title}");
            let mut refs = BTreeSet::new();
            for t in targets {
                assert_eq!(t["datasource"], datasource, "{file}: {title}");
                assert!(
                    t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                    "{file}: {title}: target without expr"
                );
                assert!(refs.insert(t["refId"].as_str().expect("refId")), "{file}");
            }
        }
        for a in d["annotations"]["list"].as_array().unwrap() {
            if a["builtIn"] == 1 {
                continue;
            }
            assert_eq!(
                a["datasource"], datasource,
                "{file}: annotation {}",
                a["name"]
            );
            assert!(a["expr"].as_str().is_some_and(|e| !e.is_empty()), "{file}");
        }
        // Every variable an expression uses is defined (Grafana's own `$__…` aside).
        for (place, expr) in queries(&d) {
            for (i, _) in expr.match_indices('$') {
                let name: String = expr[i + 1..]
                    .trim_start_matches('{')
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    name.starts_with("__") || names.contains(&name.as_str()),
                    "{file}: {place}: ${name} is not a variable"
                );
            }
        }
    }
    // Reasons live in status and Events: the scaling dashboard says where to read them.
    let (_, scaling) = dashboards()
        .into_iter()
        .find(|(_, d)| d["uid"] == "pulsar-autoscaler-scaling")
        .expect("the scaling dashboard");
    // Its commands are for one policy: single-valued variables, never a multi-value list.
    assert!(panels(&scaling).iter().any(|p| {
        p["options"]["content"]
            .as_str()
            .is_some_and(|c| c.contains("kubectl -n $why_namespace describe sp $why_policy"))
    }));
    for name in ["why_namespace", "why_policy"] {
        let v = variables(&scaling)
            .into_iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"));
        assert_eq!(v["multi"], false, "{name}");
        assert_eq!(v["includeAll"], false, "{name}");
    }
    // A row of "Metrics now" links to the Why panel for its own policy.
    let links = panels(&scaling)
        .iter()
        .filter(|p| p["title"] == "Metrics now")
        .map(|p| p["fieldConfig"].to_string())
        .collect::<String>();
    assert!(
        links.contains("var-why_policy=${__data.fields.policy}")
            && links.contains("var-why_namespace=${__data.fields.namespace}"),
        "{links}"
    );
}

/// The unit a panel plotting metric values must have, from the metric kinds it selects.
fn unit_for(expr: &str) -> Option<&'static str> {
    if expr.contains("metric=\"throughput\"") {
        Some("binBps")
    } else if expr.contains("metric=\"messagerate\"") {
        Some("suffix: msg/s")
    } else if expr.contains("metric=~\"heapmemory|directmemory\"") {
        Some("percent")
    } else if expr.contains("metric!~") {
        Some("short")
    } else {
        None
    }
}

#[test]
fn values_sit_next_to_targets_with_one_unit_per_panel() {
    let (_, scaling) = dashboards()
        .into_iter()
        .find(|(_, d)| d["uid"] == "pulsar-autoscaler-scaling")
        .expect("the scaling dashboard");
    let mut kinds = BTreeSet::new();
    for p in panels(&scaling) {
        let title = p["title"].as_str().unwrap_or_default();
        let exprs: Vec<&str> = p["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["expr"].as_str())
            .collect();
        let values: Vec<&&str> = exprs
            .iter()
            .filter(|e| e.contains("pulsar_autoscaler_metric_value"))
            .collect();
        if values.is_empty() {
            continue;
        }
        // Bytes/s and percent never share an axis: each panel selects one kind of metric.
        let units: BTreeSet<Option<&str>> = exprs.iter().map(|e| unit_for(e)).collect();
        assert_eq!(units.len(), 1, "{title}: mixes metric kinds: {exprs:?}");
        let unit =
            units.into_iter().next().flatten().unwrap_or_else(|| {
                panic!("{title}: plots values of every kind at once: {exprs:?}")
            });
        assert_eq!(p["fieldConfig"]["defaults"]["unit"], unit, "{title}");
        kinds.insert(unit);
        // The target is drawn next to the value, and the legend shows the latest of both.
        assert!(
            exprs
                .iter()
                .any(|e| e.contains("pulsar_autoscaler_metric_target")),
            "{title}: a value without its target"
        );
        let calcs = p["options"]["legend"]["calcs"].to_string();
        assert!(calcs.contains("lastNotNull"), "{title}: {calcs}");
    }
    assert_eq!(
        kinds.len(),
        4,
        "throughput, message rate, memory and custom: {kinds:?}"
    );
    // Replica counts are whole numbers.
    for p in panels(&scaling) {
        if p["title"].as_str().is_some_and(|t| t.contains("eplicas")) && p["type"] == "timeseries" {
            assert_eq!(
                p["fieldConfig"]["defaults"]["unit"], "none",
                "{}",
                p["title"]
            );
            assert_eq!(
                p["fieldConfig"]["defaults"]["decimals"], 0,
                "{}",
                p["title"]
            );
        }
    }
}

#[test]
fn alert_rules_pass_promtool() {
    let groups = rule_groups();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yml");
    std::fs::write(&file, serde_yaml_ng::to_string(&groups).unwrap()).unwrap();
    let out = Command::new(promtool())
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("running promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check rules:\n{text}");
    let rules = alerts(&groups);
    assert!(
        text.contains(&format!("SUCCESS: {} rules found", rules.len())),
        "{text}"
    );
    for r in rules {
        let name = r["alert"].as_str().expect("only alerting rules");
        assert!(r["labels"]["severity"].is_string(), "{name}: severity");
        for a in ["summary", "description"] {
            assert!(r["annotations"][a].is_string(), "{name}: {a}");
        }
    }
}

/// Prometheus's answer to a query, or its error.
async fn prom(server: &Server, path: &str, form: &[(&str, String)]) -> Result<Value, String> {
    let url = format!("{}{path}", server.url);
    let http = monitoring::client();
    // Every query endpoint takes a POSTed form; the rules listing is GET only.
    let request = if form.is_empty() {
        http.get(url)
    } else {
        http.post(url).form(form)
    };
    let body: Value = request
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    if body["status"] == "success" {
        Ok(body["data"].clone())
    } else {
        Err(format!("{} {}", body["errorType"], body["error"]))
    }
}

async fn firing(server: &Server, alert: &str) -> Result<Value, String> {
    let data = prom(
        server,
        "/api/v1/query",
        &[(
            "query",
            format!("ALERTS{{alertname=\"{alert}\", alertstate=\"firing\"}}"),
        )],
    )
    .await?;
    match data["result"].as_array() {
        Some(r) if !r.is_empty() => Ok(r[0]["metric"].clone()),
        _ => Err(format!("{alert} not firing")),
    }
}

async fn wait_firing(server: &Server, alert: &str) -> Value {
    eventually(&format!("{alert} fires"), 480, || firing(server, alert)).await
}

fn now_seconds() -> f64 {
    jiff::Timestamp::now().as_millisecond() as f64 / 1000.0
}

/// The values a `label_values(selector, label)` variable offers over the run.
async fn label_values(server: &Server, query: &str, start: f64) -> Vec<String> {
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .expect("label_values(...)");
    let (selector, label) = inner.rsplit_once(',').expect("selector, label");
    let data = prom(
        server,
        "/api/v1/series",
        &[
            ("match[]", selector.trim().to_string()),
            ("start", format!("{start:.3}")),
            ("end", format!("{:.3}", now_seconds())),
        ],
    )
    .await
    .unwrap_or_else(|e| panic!("variable query {query}: {e}"));
    let values: BTreeSet<String> = data
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s[label.trim()].as_str().map(String::from))
        .collect();
    values.into_iter().collect()
}

/// Replaces the dashboard's variables as Grafana does for multi-value selections.
fn substitute(expr: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = expr
        .replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__interval", INTERVAL);
    // Longest names first, so `$policy` never eats part of a longer name.
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for name in names {
        out = out
            .replace(&format!("${{{name}}}"), &vars[name])
            .replace(&format!("${name}"), &vars[name]);
    }
    out
}

fn rules_for_test(groups: &Value) -> String {
    // Production `for:` durations are minutes; the run lasts a few.
    let mut groups = groups.clone();
    for g in groups["groups"].as_array_mut().unwrap() {
        g["interval"] = json!("1s");
        for r in g["rules"].as_array_mut().unwrap() {
            if r.get("for").is_some() {
                r["for"] = json!("2s");
            }
        }
    }
    serde_yaml_ng::to_string(&groups).unwrap()
}

const BROKERS: &str = r#"
interval: 2s
metricsSource: {type: Prometheus, url: "{{prometheus}}", maxStaleness: 30s}
brokers:
  statefulSet: pulsar-broker
  minReplicas: 2
  maxReplicas: 5
  # Throughput decides; the other kinds have targets far above the load, so that every panel
  # per kind of metric has data.
  metrics:
    - {type: Throughput, targetPerBroker: 60Mi}
    - {type: MessageRate, targetPerBroker: "1000000000"}
    - {type: HeapMemory, targetUtilization: 99}
    - {type: Custom, name: inbound, query: "sum(pulsar_broker_rate_in)", targetPerBroker: "1000000000"}
  scaleUp: {stabilizationWindow: 0s, cooldown: 2s, maxStep: {replicas: 4}}
  scaleDown: {stabilizationWindow: 1m, cooldown: 1m, maxStep: {replicas: 1}}
rateLimit: {actionsPerHour: 1000, burst: 100}
"#;

/// Both ledgers claims cross the threshold at once; the limit lets one grow (to maxSize, where it
/// stays over the threshold) and drops the other. The journal's class forbids expansion.
const DISKS: &str = r#"
interval: 2s
metricsSource: {type: Prometheus, url: "{{prometheus}}", maxStaleness: 30s}
bookies:
  statefulSet: pulsar-bookie
  expandAtUsedPercent: 50
  increase: {percent: 20, minimum: 1Gi}
  maxSize: 60Gi
  cooldown: 5s
rateLimit: {actionsPerHour: 1, burst: 1}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_returns_data_and_the_alerts_fire_in_an_end_to_end_run() {
    let shape = Shape {
        bookies: 2,
        ledger_used: 70.0,
        journal_used: 92.0,
        journal_expandable: false,
        ..Shape::default()
    };
    let mut p = Pulsar::start(shape).await;
    let start = now_seconds() - 5.0;

    // The controller's /metrics port is known before it starts, so that the monitoring
    // Prometheus can be configured for it and a restarted controller is scraped on the same one.
    let port = monitoring::free_port();
    let groups = rule_groups();
    let rules_dir = tempfile::tempdir().unwrap();
    let rules = rules_dir.path().join("rules.yml");
    std::fs::write(&rules, rules_for_test(&groups)).unwrap();
    // As the ServiceMonitor: job from the Service name, the Service's namespace as a target label,
    // and the controller's own `namespace` label kept (honorLabels).
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files: ['{}']\n\
         scrape_configs:\n  - job_name: pulsar-autoscaler\n    honor_labels: true\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n        labels: {{namespace: {CONTROLLER_NS}}}\n",
        rules.display()
    );
    let mut monitor = monitoring::prometheus(&config, None);
    monitoring::ready(&mut monitor, "/-/ready", &monitoring::client()).await;
    let loaded = prom(&monitor, "/api/v1/rules", &[]).await.expect("rules");
    let loaded_rules: usize = loaded["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["rules"].as_array().unwrap().len())
        .sum();
    assert_eq!(
        loaded_rules,
        alerts(&groups).len(),
        "rules loaded: {loaded}"
    );

    let mut a = p.controller_at("a", port);

    // A scale-up the API server refuses: the ClusterRole without `patch` on statefulsets/scale.
    let rbac = std::fs::read_to_string("deploy/rbac.yaml").unwrap();
    let reduced = rbac.replace(
        "    resources: [statefulsets/scale]\n    verbs: [get, patch]",
        "    resources: [statefulsets/scale]\n    verbs: [get]",
    );
    assert_ne!(rbac, reduced, "deploy/rbac.yaml changed shape");
    support::pulsar::apply_yaml(&p.admin, &reduced).await;
    p.create_policy("brokers", BROKERS).await;
    p.create_policy("disks", DISKS).await;
    p.set_load(2.0).await;
    wait_firing(&monitor, "PulsarAutoscalerActionsFailing").await;
    support::pulsar::apply_yaml(&p.admin, &rbac).await;

    // 360 MiB/s over a 60 MiB/s target wants 6 brokers; maxReplicas is 5.
    let pinned = wait_firing(&monitor, "PulsarBrokersPinnedAtMaxReplicas").await;
    assert_eq!(pinned["policy"], "brokers", "{pinned}");
    assert_eq!(pinned["namespace"], "pulsar", "{pinned}");
    assert_eq!(p.replicas().await, 5);
    let at_max = wait_firing(&monitor, "PulsarBookieClaimAtMaxSize").await;
    assert!(
        at_max["claim"]
            .as_str()
            .is_some_and(|c| c.starts_with("ledgers-")),
        "{at_max}"
    );
    let blocked = wait_firing(&monitor, "PulsarBookieClaimExpansionBlocked").await;
    assert!(
        blocked["claim"]
            .as_str()
            .is_some_and(|c| c.starts_with("journal-")),
        "{blocked}"
    );
    wait_firing(&monitor, "PulsarBookieClaimNearlyFull").await;
    let dropped = wait_firing(&monitor, "PulsarAutoscalerActionsRateLimited").await;
    assert_eq!(dropped["policy"], "disks", "{dropped}");

    // Per-metric series exist while there is data, source errors once there is an outage: the
    // controller's names are those of both pages.
    let mut pages = a.metrics().await;

    // The outage: the policies' source goes away while the monitoring Prometheus keeps scraping.
    p.stop_prometheus();
    let unavailable = wait_firing(&monitor, "PulsarAutoscalerMetricsUnavailable").await;
    assert_eq!(unavailable["policy"], "brokers", "{unavailable}");
    // Without its source the policy cannot do its job: Ready False, and the alert says so.
    let not_ready = wait_firing(&monitor, "PulsarAutoscalerPolicyNotReady").await;
    assert!(
        ["brokers", "disks"].contains(&not_ready["policy"].as_str().unwrap_or_default()),
        "{not_ready}"
    );
    wait_firing(&monitor, "PulsarAutoscalerSourceErrors").await;
    assert!(
        firing(&monitor, "PulsarAutoscalerDown").await.is_err(),
        "the controller is up"
    );
    assert!(firing(&monitor, "PulsarAutoscalerNoLeader").await.is_err());

    // Every series the dashboards and rules name is one the controller exports.
    pages.push_str(&a.metrics().await);
    let exported: BTreeSet<String> = pages
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(String::from)
        .collect();
    let mut referenced =
        metric_names(&std::fs::read_to_string("deploy/monitoring/prometheusrule.yaml").unwrap());
    for (file, d) in dashboards() {
        for name in metric_names(&d.to_string()) {
            assert!(
                exported.contains(&name),
                "{file} reads {name}, which the controller does not export; it exports {exported:?}"
            );
        }
        referenced.extend(metric_names(&d.to_string()));
    }
    for name in &referenced {
        assert!(
            exported.contains(name),
            "{name} is not exported: {exported:?}"
        );
    }

    // The controller goes away, then runs again but cannot get the Lease.
    a.kill();
    wait_firing(&monitor, "PulsarAutoscalerDown").await;
    let leases: Api<Lease> = Api::namespaced(p.admin.clone(), CONTROLLER_NS);
    let now = jiff::Timestamp::now();
    let renew = format!(
        "{}.{:06}Z",
        now.strftime("%Y-%m-%dT%H:%M:%S"),
        now.subsec_microsecond()
    );
    leases
        .patch(
            "pulsar-autoscaler",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "elsewhere",
                "leaseDurationSeconds": 3600, "renewTime": renew, "acquireTime": renew}})),
        )
        .await
        .expect("taking the Lease away");
    let _b = p.controller_at("b", port);
    wait_firing(&monitor, "PulsarAutoscalerNoLeader").await;
    let fired = [
        "PulsarAutoscalerActionsFailing",
        "PulsarBrokersPinnedAtMaxReplicas",
        "PulsarBookieClaimAtMaxSize",
        "PulsarBookieClaimExpansionBlocked",
        "PulsarBookieClaimNearlyFull",
        "PulsarAutoscalerActionsRateLimited",
        "PulsarAutoscalerMetricsUnavailable",
        "PulsarAutoscalerPolicyNotReady",
        "PulsarAutoscalerSourceErrors",
        "PulsarAutoscalerDown",
        "PulsarAutoscalerNoLeader",
    ];
    for r in alerts(&groups) {
        let name = r["alert"].as_str().unwrap();
        assert!(fired.contains(&name), "{name} is never seen firing here");
    }

    // Each dashboard query over the whole run, as Grafana asks for a panel: a range query with
    // the variables set to every value they offer.
    let end = now_seconds();
    let mut empty = Vec::new();
    for (file, d) in dashboards() {
        let mut vars = BTreeMap::new();
        for v in variables(&d) {
            let name = v["name"].as_str().unwrap().to_string();
            if v["type"] != "query" {
                continue;
            }
            let query = substitute(&variable_query(v), &vars);
            let values = label_values(&monitor, &query, start).await;
            assert!(
                !values.is_empty(),
                "{file}: variable {name} ({query}) offers nothing"
            );
            vars.insert(name, format!("({})", values.join("|")));
        }
        for (place, expr) in queries(&d) {
            let expr = substitute(&expr, &vars);
            let data = prom(
                &monitor,
                "/api/v1/query_range",
                &[
                    ("query", expr.clone()),
                    ("start", format!("{start:.3}")),
                    ("end", format!("{end:.3}")),
                    ("step", "2".into()),
                ],
            )
            .await
            .unwrap_or_else(|e| panic!("{file}: {place}: {expr}\nfails: {e}"));
            if data["result"].as_array().is_none_or(|r| r.is_empty()) {
                empty.push(format!("{file}: {place}: {expr}"));
            }
        }
    }
    assert!(
        empty.is_empty(),
        "queries without data:\n{}",
        empty.join("\n")
    );
}
