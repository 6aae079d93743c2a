//! zori-api's schema as ClickHouse cluster DDL, run against this machine's single ClickHouse as
//! far as one server without ZooKeeper allows. The stock `remote_servers` of the server has the
//! one-shard cluster `test_shard_localhost` (itself, on the native port).
//!
//! What runs: every statement of the cluster schema with two changes such a server needs: no
//! `ON CLUSTER` (the distributed DDL queue lives in ZooKeeper), and the per-node tables'
//! `Replicated*` engines in their plain form (replication needs ZooKeeper). That proves the
//! column lists, engines, clauses and `Distributed` tables are SQL the server accepts, that an
//! insert through `Distributed` with the topology's settings is on the shard when it returns,
//! and that reading through it counts every row once. What does not run here: `ON CLUSTER`, and
//! the replicated engines' ZooKeeper paths and `{shard}` / `{replica}` macros (their text is
//! checked by the unit tests of `zori_service::clickhouse`).

use std::time::Duration;

use zori_api::ch::schema_statements;
use zori_service::clickhouse::Topology;

const CLICKHOUSE_URL: &str = "http://127.0.0.1:8123";
const CLUSTER: &str = "test_shard_localhost";

/// The statement as a server without ZooKeeper can run it (see the module comment).
fn without_zookeeper(statement: &str) -> String {
    let text = statement.replace(&format!(" ON CLUSTER {CLUSTER}"), "");
    let Some(at) = text.find("ENGINE = Replicated") else {
        return text;
    };
    let engine = at + "ENGINE = Replicated".len();
    let open = engine + text[engine..].find('(').expect("engine arguments");
    let close = open + text[open..].find(')').expect("closing parenthesis");
    // `'<path>', '{replica}'[, the plain engine's arguments]`
    let rest = text[open + 1..close]
        .splitn(3, ", ")
        .nth(2)
        .unwrap_or_default();
    format!(
        "{}ENGINE = {}({rest}){}",
        &text[..at],
        &text[engine..open],
        &text[close + 1..]
    )
}

async fn run(http: &reqwest::Client, sql: &str, settings: &[(&str, &str)]) -> String {
    let response = http
        .post(CLICKHOUSE_URL)
        .query(settings)
        .body(sql.to_owned())
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("ClickHouse answers on 127.0.0.1:8123 (scripts/services.sh)");
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "{sql}\n→ {status}: {body}");
    body
}

#[test]
fn the_test_strips_only_what_needs_zookeeper() {
    assert_eq!(
        without_zookeeper("CREATE TABLE IF NOT EXISTS d.e_local ON CLUSTER test_shard_localhost (a String) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/d/e_local', '{replica}') ORDER BY a"),
        "CREATE TABLE IF NOT EXISTS d.e_local (a String) ENGINE = ReplacingMergeTree() ORDER BY a"
    );
    assert_eq!(
        without_zookeeper("CREATE TABLE d.p_local ON CLUSTER test_shard_localhost (v UInt64) ENGINE = ReplicatedReplacingMergeTree('/p', '{replica}', v) ORDER BY v"),
        "CREATE TABLE d.p_local (v UInt64) ENGINE = ReplacingMergeTree(v) ORDER BY v"
    );
}

#[tokio::test]
async fn the_cluster_schema_runs_and_distributed_writes_are_on_the_shard_when_acknowledged() {
    let http = reqwest::Client::new();
    let database = format!(
        "zori_ddl_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let topology = Topology::new(Some(CLUSTER)).expect("cluster name");
    run(
        &http,
        &without_zookeeper(&topology.create_database(&database)),
        &[],
    )
    .await;
    let statements = schema_statements(&topology, &database).expect("cluster DDL");
    assert_eq!(statements.len(), 4, "{statements:#?}");
    for statement in &statements {
        assert!(
            statement.contains(&format!(" ON CLUSTER {CLUSTER} ")),
            "{statement}"
        );
        run(&http, &without_zookeeper(statement), &[]).await;
    }
    let tables = run(
        &http,
        &format!(
            "SELECT name, engine FROM system.tables WHERE database = '{database}' ORDER BY name FORMAT TSV"
        ),
        &[],
    )
    .await;
    assert_eq!(
        tables,
        "events\tDistributed\nevents_local\tReplacingMergeTree\n\
         zori_migrations\tDistributed\nzori_migrations_local\tMergeTree\n"
    );

    // Writes go through the Distributed tables with the topology's settings: on the shard
    // when the insert returns (the next query, on the per-node table, sees them all).
    let settings = topology.insert_settings();
    assert_eq!(settings, &[("insert_distributed_sync", "1")]);
    run(
        &http,
        &format!(
            "INSERT INTO {database}.events (event_id, name, visitor_id, occurred_at) FORMAT JSONEachRow\n\
             {{\"event_id\":\"e1\",\"name\":\"page_view\",\"visitor_id\":\"vis_a\",\"occurred_at\":\"2026-12-01 10:00:00\"}}\n\
             {{\"event_id\":\"e2\",\"name\":\"page_view\",\"visitor_id\":\"vis_a\",\"occurred_at\":\"2026-12-01 10:01:00\"}}\n\
             {{\"event_id\":\"e3\",\"name\":\"page_view\",\"visitor_id\":\"vis_b\",\"occurred_at\":\"2026-12-01 10:02:00\"}}"
        ),
        settings,
    )
    .await;
    run(
        &http,
        &format!("INSERT INTO {database}.zori_migrations (version, name) VALUES (1, 'events')"),
        settings,
    )
    .await;
    let on_shard = run(
        &http,
        &format!(
            "SELECT (SELECT count() FROM {database}.events_local), (SELECT count() FROM {database}.zori_migrations_local) FORMAT TSV"
        ),
        &[],
    )
    .await;
    assert_eq!(on_shard, "3\t1\n");
    let through_distributed = run(
        &http,
        &format!(
            "SELECT count(), uniqExact(visitor_id), uniqExact(event_id) FROM {database}.events FORMAT TSV"
        ),
        &[],
    )
    .await;
    assert_eq!(through_distributed, "3\t2\t3\n");

    run(&http, &format!("DROP DATABASE IF EXISTS {database}"), &[]).await;
}
