//! ClickHouse as a cluster: a one-node cluster owned by the test (its own ZooKeeper and
//! `clickhouse-server`, with `remote_servers`, macros and a distributed DDL queue), zori-api
//! started with `--clickhouse-cluster` as the operator starts it. zori-api makes its schema
//! `ON CLUSTER` (replicated per-node tables behind `Distributed` ones), and page views sent
//! through zori-ingest, every batch twice, are written through the `Distributed` table and
//! counted exactly once by the reports.
//!
//! One node only: the replication between nodes and the spread over several shards are
//! ClickHouse's own; what Zori decides (the DDL, the engines, the sharding key, synchronous
//! distributed inserts, queries through the `Distributed` names) all runs here.

use std::time::Duration;

use zori_e2e::{faults::ClickHouseCluster, page_view_batches, Overrides, Stack, StackOptions};

const VISITORS: usize = 10;
const ROUNDS: usize = 10;

#[tokio::test(flavor = "multi_thread")]
async fn the_api_makes_its_schema_on_the_cluster_and_counts_every_event_once() {
    let cluster = ClickHouseCluster::start().await;
    let overrides = Overrides {
        clickhouse_url: Some(cluster.url()),
        api_args: vec![
            "--clickhouse-cluster".to_owned(),
            ClickHouseCluster::NAME.to_owned(),
        ],
        ..Overrides::default()
    };
    let stack = Stack::start_overriding("ch_cluster", StackOptions::default(), overrides).await;
    let database = stack.tenant.schema();
    assert_eq!(
        cluster
            .query(&format!(
                "SELECT name, engine FROM system.tables WHERE database = '{database}' ORDER BY name FORMAT TSV"
            ))
            .await,
        "events\tDistributed\nevents_local\tReplicatedReplacingMergeTree\n\
         zori_migrations\tDistributed\nzori_migrations_local\tReplicatedMergeTree\n"
    );

    // Every batch twice (a client retry): counted once.
    for batch in page_view_batches(VISITORS, ROUNDS) {
        for _ in 0..2 {
            stack
                .send_batch_until_accepted(&batch, Duration::from_secs(30))
                .await;
        }
    }
    stack
        .assert_page_views_exactly(VISITORS * ROUNDS, VISITORS, Duration::from_secs(60))
        .await;
    // Written through the Distributed table onto the replicated one.
    let local = cluster
        .query(&format!(
            "SELECT uniqExact(event_id) FROM {database}.events_local FORMAT TSV"
        ))
        .await;
    assert_eq!(local.trim(), (VISITORS * ROUNDS).to_string());
    stack.tenant.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_makes_and_drops_a_tenant_database_on_the_cluster() {
    use zori_operator::backends::{clickhouse::ClickHouseBackend, Owner, Provisioned, Removed};
    use zori_service::clickhouse::Topology;

    let cluster = ClickHouseCluster::start().await;
    let backend = ClickHouseBackend::new(&cluster.url(), None, None)
        .expect("client")
        .on(Topology::Cluster(ClickHouseCluster::NAME.to_owned()));
    let database = format!(
        "zori_opc_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let owner = Owner {
        uid: "5d1e-cluster-owner",
        adopt_unmarked: false,
    };
    assert_eq!(
        backend
            .ensure(&database, None, owner)
            .await
            .expect("ensure"),
        Provisioned::Created
    );
    assert_eq!(
        cluster
            .query(&format!(
                "SELECT name, engine FROM system.tables WHERE database = '{database}' ORDER BY name FORMAT TSV"
            ))
            .await,
        "zori_owner\tDistributed\nzori_owner_local\tReplicatedMergeTree\n"
    );
    // The marker is read back through the Distributed table: the same project may use it,
    // another may not.
    assert_eq!(
        backend.ensure(&database, None, owner).await.expect("again"),
        Provisioned::Unchanged
    );
    let other = Owner {
        uid: "9f00-another-project",
        adopt_unmarked: false,
    };
    let refused = backend
        .ensure(&database, None, other)
        .await
        .expect_err("another project's database");
    assert!(
        refused.to_string().contains("another ZoriProject"),
        "{refused}"
    );
    assert_eq!(
        backend.drop(&database, None, owner).await.expect("drop"),
        Removed::Removed
    );
    assert!(!backend.database_exists(&database).await.expect("exists"));
}
