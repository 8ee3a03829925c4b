//! The admin API client against a real three-broker cluster under load: brokers listed, owned
//! bundles read from each broker, a broker drained by moving its bundles onto the others (the
//! unload's 307 redirects followed), the runtime configuration read, failures named.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pulsar_autoscaler::admin::{AdminClient, AdminError, AdminSettings, Bundle};

use crate::support;
use crate::support::real_pulsar::*;

fn client() -> AdminClient {
    AdminClient::new(AdminSettings {
        port: WEB_PORT,
        timeout: Duration::from_secs(10),
        ..AdminSettings::default()
    })
    .expect("admin client")
}

/// Whether `inner` is `outer` or a split of it.
fn within_range(inner: &Bundle, outer: &Bundle) -> bool {
    let bounds = |b: &Bundle| {
        let (lo, hi) = b.range.split_once('_')?;
        let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
        Some((hex(lo)?, hex(hi)?))
    };
    match (bounds(inner), bounds(outer)) {
        (Some((a, b)), Some((c, d))) => inner.namespace == outer.namespace && a >= c && b <= d,
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_is_drained_onto_the_others_without_losing_a_message() {
    support::monitoring::crypto();
    let cluster = Cluster::start(3, 3, 1, BrokerSettings::default()).await;
    let admin = client();
    let ips = cluster.broker_ips.clone();
    let ids: Vec<String> = ips.iter().map(|ip| format!("{ip}:{WEB_PORT}")).collect();

    let mut active = admin
        .active_brokers(&ips[0], CLUSTER)
        .await
        .expect("active brokers");
    active.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(
        active, want,
        "every broker registered under its <address>:<port> id"
    );

    create_namespace(&cluster.web_url(0), "public/second").await;
    let topics: Vec<String> = (0..16)
        .map(|i| {
            let ns = if i % 2 == 0 { "default" } else { "second" };
            format!("persistent://public/{ns}/drain-{i}")
        })
        .collect();
    let load = Load::start(&cluster.service_url(), 100.0, 1024, &topics);
    load.wait_acked(300).await;

    let owned = |i: usize| {
        let (admin, ip, id) = (&admin, ips[i].clone(), ids[i].clone());
        async move {
            admin
                .owned_bundles(&ip, CLUSTER, &id)
                .await
                .expect("owned bundles")
        }
    };
    let mut before = Vec::new();
    for i in 0..3 {
        before.push(owned(i).await);
    }
    eprintln!(
        "bundles per broker before: {:?}",
        before.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert!(
        before.iter().map(Vec::len).sum::<usize>() >= 2,
        "the load's topics are served from several bundles: {before:?}"
    );
    // The drained broker must own something for the test to mean anything: pick the busiest.
    let victim = (0..3)
        .max_by_key(|i| before[*i].len())
        .expect("three brokers");
    let survivors: Vec<usize> = (0..3).filter(|i| *i != victim).collect();

    // Move every bundle to the survivor owning fewer, asking a survivor (not the owner) so the
    // call is redirected to the leader and the owner.
    let started = Instant::now();
    let mut moves = Vec::new();
    loop {
        let left = owned(victim).await;
        if left.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "broker {victim} still owns {left:?}"
        );
        for bundle in left {
            let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
            for s in &survivors {
                counts.insert(*s, owned(*s).await.len());
            }
            let dest = *counts
                .iter()
                .min_by_key(|(_, n)| **n)
                .expect("a survivor")
                .0;
            let t = Instant::now();
            admin
                .unload(&ips[survivors[0]], &bundle, Some(&ids[dest]), &ids)
                .await
                .unwrap_or_else(|e| panic!("unloading {bundle}: {e}"));
            moves.push((bundle, dest, t.elapsed()));
        }
    }
    let drained_in = started.elapsed();
    let mut after = Vec::new();
    for i in 0..3 {
        after.push(owned(i).await);
    }
    eprintln!(
        "drained broker {victim} in {:.2}s with {} moves ({:?}); bundles after: {:?}",
        drained_in.as_secs_f64(),
        moves.len(),
        moves.iter().map(|m| m.2.as_secs_f64()).collect::<Vec<_>>(),
        after.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert!(after[victim].is_empty());
    // A moved bundle is owned again once a client looks its topics up (the load's clients
    // reconnect within a second); the load manager may also have split it meanwhile.
    for b in &before[victim] {
        support::monitoring::eventually(&format!("{b} owned by a survivor"), 4 * 30, || async {
            let mut held = Vec::new();
            for s in &survivors {
                held.extend(owned(*s).await);
            }
            if held.iter().any(|h| within_range(h, b)) {
                Ok(())
            } else {
                Err(format!("{held:?}"))
            }
        })
        .await;
    }
    // Traffic keeps flowing through the moves.
    let acked = load.latest().acked;
    load.wait_acked(acked + 200).await;
    let stats = load.stop().await;
    eprintln!("load through the drain: {stats:?}");
    assert_eq!(stats.failed, 0, "{stats:?}");
    // At least once: a bundle move can redeliver a message whose acknowledgement was in flight.
    assert!(stats.received >= stats.acked, "no message lost: {stats:?}");

    let config = admin
        .runtime_config(&ips[0])
        .await
        .expect("runtime configuration");
    assert_eq!(
        config.get("statsUpdateFrequencyInSecs").map(String::as_str),
        Some("5")
    );
    assert!(
        config
            .get("brokerShutdownTimeoutMs")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some(),
        "brokerShutdownTimeoutMs in {:?}",
        config.keys().take(5).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_name_the_broker_and_the_call() {
    support::monitoring::crypto();
    let admin = AdminClient::new(AdminSettings {
        port: WEB_PORT,
        timeout: Duration::from_secs(2),
        ..AdminSettings::default()
    })
    .expect("admin client");
    // A loopback address where nothing listens.
    let ip = loopback_ip(&[WEB_PORT]);
    let e = admin.health(&ip).await.expect_err("nothing listens there");
    assert!(matches!(e, AdminError::Connect { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&ip) && text.contains("GET /admin/v2/brokers/health"),
        "{text}"
    );
    let bundle = Bundle::parse("public/default/0x00000000_0x40000000").expect("bundle");
    let e = admin
        .unload(&ip, &bundle, None, &[])
        .await
        .expect_err("nothing listens there");
    assert_eq!(e.label(), "connect", "{e}");
}
