//! The distributed path: a three-node NATS cluster (three local `nats-server` processes with
//! JetStream), a `ZoriProject` with `streamLimits.replicas: 3` reconciled by the operator
//! against it (the Kubernetes API is the in-memory one), and the real zori-ingest and zori-api
//! started with the settings of the Deployments the operator applied: the NATS URL is the
//! seed list of the three nodes. The node leading the tenant stream is killed mid-ingest;
//! every event is stored once (stream sequence) and counted once (reports).

use std::time::Duration;

use serde_json::json;
use zori_e2e::{
    faults::NatsCluster, free_port, page_view_batches, Overrides, Process, Stack, StackOptions,
    Tenant, SITE_ORIGIN,
};
use zori_operator::{
    api::{fake::FakeApi, KubeApi, ObjectKey},
    backends::{
        clickhouse::ClickHouseBackend, nats::NatsBackend, postgres::PostgresBackend, LiveBackends,
    },
    builders::env::applied_env,
    config::Platform,
    crd::{self, ZoriProject},
    naming::derive_tenant_id,
    reconcile::{reconcile, Context},
};

const VISITORS: usize = 10;
const ROUNDS: usize = 60;
const PAUSE: Duration = Duration::from_millis(100);

fn env_value(env: &[(String, String)], name: &str) -> String {
    env.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("{name} is not set by the operator"))
}

/// The Deployment's env with only the listen address moved to a free loopback port.
fn with_listen(env: &[(String, String)], var: &str, port: u16) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| {
            if k == var {
                (k.clone(), format!("127.0.0.1:{port}"))
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_mid_ingest_loses_nothing_and_duplicates_nothing() {
    let mut cluster = NatsCluster::start().await;
    let seeds = cluster.seed_list();
    let namespace = format!("nc{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let backends = LiveBackends {
        nats: NatsBackend::connect(&seeds).await.expect("NATS cluster"),
        postgres: PostgresBackend::connect_lazy(zori_e2e::POSTGRES_URL).expect("postgres url"),
        clickhouse: ClickHouseBackend::new(zori_e2e::CLICKHOUSE_URL, None, None)
            .expect("clickhouse client"),
        redis: None,
    };
    let platform = Platform {
        nats_url: seeds.clone(),
        ..Platform::local()
    };
    let ctx = Context::new(FakeApi::new(), backends, platform);
    let project: ZoriProject = serde_json::from_value(json!({
        "apiVersion": "zori.dev/v1alpha1",
        "kind": "ZoriProject",
        "metadata": {"name": "shop", "namespace": namespace, "uid": "uid-nats-cluster", "generation": 1},
        "spec": {
            "allowedOrigins": [SITE_ORIGIN],
            "streamLimits": {"replicas": 3},
            "reclaimPolicy": "Delete"
        }
    }))
    .expect("a valid ZoriProject");
    ctx.api
        .insert(serde_json::to_value(&project).expect("json"))
        .expect("project");
    let key = ObjectKey::new(crd::API_VERSION, crd::KIND, Some(&namespace), "shop");
    let current: ZoriProject =
        serde_json::from_value(ctx.api.object(&key).expect("project")).expect("project");
    reconcile(&current, &ctx).await.expect("reconcile");

    // The operator made the stream with three replicas, one on each node.
    let tenant_id = derive_tenant_id(&namespace, "shop");
    let stream_name = zori_core::event::Subjects::for_tenant(&tenant_id).stream;
    let js = async_nats::jetstream::new(
        async_nats::connect(seeds.split(',').collect::<Vec<_>>())
            .await
            .expect("connect to the cluster"),
    );
    let mut stream = js
        .get_stream(&stream_name)
        .await
        .expect("the tenant stream");
    let info = stream.info().await.expect("stream info").clone();
    assert_eq!(info.config.num_replicas, 3);
    let placement = info.cluster.clone().expect("a clustered stream");
    assert_eq!(placement.replicas.len() + 1, 3, "{placement:?}");

    // The binaries, with exactly the operator's settings: the NATS URL is the seed list.
    let env = applied_env(&ctx.api, &namespace, "shop")
        .await
        .expect("both Deployments were applied with resolvable settings");
    assert_eq!(env_value(&env.ingest, "ZORI_NATS_URL"), seeds);
    assert_eq!(env_value(&env.api, "ZORI_NATS_URL"), seeds);
    let ingest_port = free_port();
    let api_port = free_port();
    let ingest = Process::start_with_env(
        "zori-ingest",
        ingest_port,
        &with_listen(&env.ingest, "ZORI_INGEST_LISTEN", ingest_port),
    )
    .await;
    let api = Process::start_with_env(
        "zori-api",
        api_port,
        &with_listen(&env.api, "ZORI_API_LISTEN", api_port),
    )
    .await;
    let mut tenant = Tenant::new("nats_cluster");
    tenant.id = tenant_id.clone();
    tenant.publishable_key = env_value(&env.ingest, "ZORI_PUBLISHABLE_KEY");
    tenant.api_token = env_value(&env.api, "ZORI_API_TOKEN");
    tenant.overrides = Overrides {
        nats_url: Some(seeds.clone()),
        stream_made_elsewhere: true,
        ..Overrides::default()
    };
    let stack = Stack {
        tenant,
        ingest,
        api,
        api_port,
        ingest_port,
        options: StackOptions::default(),
        http: reqwest::Client::new(),
    };

    // Events stream in; when a quarter went out, the node leading the stream is killed.
    let batches = page_view_batches(VISITORS, ROUNDS);
    let sender = stack.sender();
    let (head, tail) = batches.split_at(batches.len() / 4);
    let mut refusals = sender.stream(head, PAUSE).await;
    let tail = tail.to_vec();
    let background = tokio::spawn({
        let sender = sender.clone();
        async move { sender.stream(&tail, PAUSE).await }
    });
    let leader = stream
        .info()
        .await
        .expect("stream info")
        .cluster
        .clone()
        .and_then(|c| c.leader)
        .expect("the stream has a leader");
    assert!(cluster.names().contains(&leader), "{leader}");
    cluster.kill(&leader);
    refusals.extend(background.await.expect("sender task"));
    // Whatever the sender saw while the stream elected a new leader, it was only ever asked
    // to retry (503 or a dropped connection), never told no.
    assert!(
        refusals
            .iter()
            .all(|(status, _)| *status == 0 || *status == 503),
        "{refusals:?}"
    );

    let total = VISITORS * ROUNDS;
    stack
        .assert_page_views_exactly(total, VISITORS, Duration::from_secs(90))
        .await;
    // Nothing stored twice: the stream took in exactly one message per event (a retry of a
    // batch whose answer was lost is recognised by its ids on the new leader too).
    let after = stream.info().await.expect("stream info").clone();
    assert_eq!(after.state.last_sequence, total as u64);
    // Acknowledgements lost in the failover leave written messages in the stream until the
    // ack wait redelivers them; the consumer writes them again (idempotently) and acks: the
    // stream drains, and the counts do not move.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut left = after.state.messages;
    while left > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{left} messages still wait in the stream"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        left = stream.info().await.expect("stream info").state.messages;
    }
    stack
        .assert_page_views_exactly(total, VISITORS, Duration::from_secs(10))
        .await;
    let new_leader = after.cluster.and_then(|c| c.leader).unwrap_or_default();
    assert!(
        !new_leader.is_empty() && new_leader != leader,
        "a surviving node leads: {new_leader:?}"
    );
    assert_eq!(
        stack.api_metric("zori_api_dead_letters_total").await,
        Some(0.0)
    );

    drop(stack);
    ctx.api.delete(&key).await.expect("delete");
    let current: ZoriProject =
        serde_json::from_value(ctx.api.object(&key).expect("project")).expect("project");
    reconcile(&current, &ctx)
        .await
        .expect("reconcile the deletion");
    assert!(ctx.api.object(&key).is_none(), "reclaimed");
}
