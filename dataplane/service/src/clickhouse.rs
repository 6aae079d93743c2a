//! ClickHouse DDL for one server or for a cluster.
//!
//! On a cluster (a name from the servers' `remote_servers`, with the `{shard}` and `{replica}`
//! macros and ZooKeeper configured), every statement runs `ON CLUSTER`, and a table `t` becomes
//! two: `t_local` on every node with the `Replicated` form of its engine (one ZooKeeper path per
//! shard), and `t`, a `Distributed` table over them that reads and writes go through, so the
//! code that queries `t` is the same on one server and on a cluster. Rows of one visitor stay on
//! one shard (sharding key `sipHash64(visitor_id)` where the table has that column), so a
//! retried event meets its first copy and `ReplacingMergeTree` folds them.
//!
//! Only SQL that ClickHouse 18.16 and current versions both accept.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DdlError {
    #[error(
        "{0:?} is not a ClickHouse cluster name (letters, digits and _, not starting with a digit)"
    )]
    ClusterName(String),
    #[error("failed to make cluster DDL of {statement:?}: {why}")]
    Unsupported { statement: String, why: String },
}

/// Where the tenant databases live.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Topology {
    /// One server: the statements as written.
    #[default]
    Single,
    /// The cluster of this name in the servers' `remote_servers`.
    Cluster(String),
}

/// Whether `name` may be used as a cluster name in the SQL built here.
fn is_cluster_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64
}

/// Suffix of the per-node table behind a `Distributed` one.
pub const LOCAL_SUFFIX: &str = "_local";

impl Topology {
    /// `None` or an empty name: one server; otherwise a checked cluster name.
    pub fn new(cluster: Option<&str>) -> Result<Self, DdlError> {
        match cluster.map(str::trim).filter(|c| !c.is_empty()) {
            None => Ok(Topology::Single),
            Some(name) if is_cluster_name(name) => Ok(Topology::Cluster(name.to_owned())),
            Some(name) => Err(DdlError::ClusterName(name.to_owned())),
        }
    }

    pub fn cluster(&self) -> Option<&str> {
        match self {
            Topology::Single => None,
            Topology::Cluster(name) => Some(name),
        }
    }

    /// ` ON CLUSTER name`, or nothing on one server.
    pub fn on_cluster(&self) -> String {
        match self {
            Topology::Single => String::new(),
            Topology::Cluster(name) => format!(" ON CLUSTER {name}"),
        }
    }

    pub fn create_database(&self, database: &str) -> String {
        format!(
            "CREATE DATABASE IF NOT EXISTS {database}{}",
            self.on_cluster()
        )
    }

    pub fn drop_database(&self, database: &str) -> String {
        format!("DROP DATABASE IF EXISTS {database}{}", self.on_cluster())
    }

    /// What to run for a schema statement written for one server, in `database`: on one
    /// server the statement as written; on a cluster, for `CREATE TABLE [IF NOT EXISTS] name
    /// (columns) ENGINE = E(args) …` the replicated per-node table and the `Distributed` table
    /// over it (any other statement is refused, saying why).
    pub fn statements(&self, database: &str, statement: &str) -> Result<Vec<String>, DdlError> {
        let Topology::Cluster(cluster) = self else {
            return Ok(vec![statement.to_owned()]);
        };
        let table = CreateTable::parse(statement)?;
        if !table.engine.ends_with("MergeTree") || table.engine.starts_with("Replicated") {
            return Err(DdlError::Unsupported {
                statement: statement.to_owned(),
                why: format!(
                    "engine {} has no Replicated form to put behind a Distributed table",
                    table.engine
                ),
            });
        }
        let local = format!("{}{LOCAL_SUFFIX}", table.name);
        let path = format!("'/clickhouse/tables/{{shard}}/{database}/{local}'");
        let args = if table.args.trim().is_empty() {
            format!("{path}, '{{replica}}'")
        } else {
            format!("{path}, '{{replica}}', {}", table.args.trim())
        };
        let sharding_key = if has_column(table.columns, "visitor_id") {
            "sipHash64(visitor_id)"
        } else {
            "rand()"
        };
        Ok(vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {database}.{local} ON CLUSTER {cluster} {} ENGINE = Replicated{}({args}){}",
                table.columns, table.engine, table.clauses
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {database}.{} ON CLUSTER {cluster} AS {database}.{local} ENGINE = Distributed('{cluster}', '{database}', '{local}', {sharding_key})",
                table.name
            ),
        ])
    }

    /// Settings every insert needs: on a cluster, an insert into a `Distributed` table
    /// returns only once every shard has the rows (not queued on the node taking it), so an
    /// acknowledged batch is stored.
    pub fn insert_settings(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            Topology::Single => &[],
            Topology::Cluster(_) => &[("insert_distributed_sync", "1")],
        }
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topology::Single => f.write_str("one server"),
            Topology::Cluster(name) => write!(f, "cluster {name}"),
        }
    }
}

/// The parts of a `CREATE TABLE` statement.
#[derive(Debug, PartialEq, Eq)]
struct CreateTable<'a> {
    name: &'a str,
    /// With the parentheses.
    columns: &'a str,
    engine: &'a str,
    args: &'a str,
    /// Everything after the engine (`PARTITION BY …`, `ORDER BY …`, `SETTINGS …`), with its
    /// leading space.
    clauses: String,
}

/// The byte index of the parenthesis closing the one at `open`.
fn closing(text: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut quoted = false;
    for (i, c) in text[open..].char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(open + i);
                }
            }
            _ => {}
        }
    }
    None
}

fn has_column(columns: &str, name: &str) -> bool {
    columns
        .trim_start_matches('(')
        .split(',')
        .any(|column| column.split_whitespace().next() == Some(name))
}

impl<'a> CreateTable<'a> {
    fn parse(statement: &'a str) -> Result<Self, DdlError> {
        let unsupported = |why: &str| DdlError::Unsupported {
            statement: statement.chars().take(120).collect(),
            why: why.to_owned(),
        };
        let text = statement.trim();
        let upper = text.to_ascii_uppercase();
        let rest = if upper.starts_with("CREATE TABLE IF NOT EXISTS ") {
            &text["CREATE TABLE IF NOT EXISTS ".len()..]
        } else if upper.starts_with("CREATE TABLE ") {
            &text["CREATE TABLE ".len()..]
        } else {
            return Err(unsupported(
                "only CREATE TABLE statements are made for a cluster",
            ));
        };
        let rest = rest.trim_start();
        let open = rest
            .find('(')
            .ok_or_else(|| unsupported("no column list"))?;
        let name = rest[..open].trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(unsupported("the table name must be unqualified"));
        }
        let close = closing(rest, open).ok_or_else(|| unsupported("unbalanced parentheses"))?;
        let columns = &rest[open..=close];
        let after = rest[close + 1..].trim_start();
        let engine_part = after
            .strip_prefix("ENGINE")
            .map(str::trim_start)
            .and_then(|e| e.strip_prefix('='))
            .map(str::trim_start)
            .ok_or_else(|| unsupported("no ENGINE = after the columns"))?;
        let engine_open = engine_part
            .find('(')
            .ok_or_else(|| unsupported("the engine has no argument list"))?;
        let engine = engine_part[..engine_open].trim();
        let engine_close = closing(engine_part, engine_open)
            .ok_or_else(|| unsupported("unbalanced engine arguments"))?;
        let args = &engine_part[engine_open + 1..engine_close];
        let clauses = engine_part[engine_close + 1..]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        Ok(CreateTable {
            name,
            columns,
            engine,
            args,
            clauses: if clauses.is_empty() {
                clauses
            } else {
                format!(" {clauses}")
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: &str = "CREATE TABLE IF NOT EXISTS events (
        event_id String,
        visitor_id String,
        occurred_at DateTime('UTC')
    )
    ENGINE = ReplacingMergeTree()
    PARTITION BY toYYYYMM(occurred_at)
    ORDER BY (toDate(occurred_at), visitor_id, event_id)
    SETTINGS index_granularity = 8192";

    #[test]
    fn cluster_names_are_checked() {
        assert_eq!(Topology::new(None), Ok(Topology::Single));
        assert_eq!(Topology::new(Some(" ")), Ok(Topology::Single));
        assert_eq!(
            Topology::new(Some("zori_cluster")),
            Ok(Topology::Cluster("zori_cluster".to_owned()))
        );
        for bad in ["a b", "x;DROP", "1abc", "a'b"] {
            assert_eq!(
                Topology::new(Some(bad)),
                Err(DdlError::ClusterName(bad.to_owned()))
            );
        }
    }

    #[test]
    fn databases_are_made_on_every_node() {
        let cluster = Topology::Cluster("zc".to_owned());
        assert_eq!(
            cluster.create_database("zori_a"),
            "CREATE DATABASE IF NOT EXISTS zori_a ON CLUSTER zc"
        );
        assert_eq!(
            cluster.drop_database("zori_a"),
            "DROP DATABASE IF EXISTS zori_a ON CLUSTER zc"
        );
        assert_eq!(
            Topology::Single.create_database("zori_a"),
            "CREATE DATABASE IF NOT EXISTS zori_a"
        );
    }

    #[test]
    fn one_server_keeps_the_statement() {
        assert_eq!(
            Topology::Single.statements("zori_a", EVENTS),
            Ok(vec![EVENTS.to_owned()])
        );
        assert!(Topology::Single.insert_settings().is_empty());
    }

    #[test]
    fn a_cluster_gets_a_replicated_local_table_and_a_distributed_one() {
        let statements = Topology::Cluster("zc".to_owned())
            .statements("zori_a", EVENTS)
            .expect("cluster DDL");
        assert_eq!(statements.len(), 2);
        assert!(
            statements[0].starts_with(
                "CREATE TABLE IF NOT EXISTS zori_a.events_local ON CLUSTER zc (\n        event_id String,"
            ),
            "{}",
            statements[0]
        );
        assert!(
            statements[0].ends_with(
                ") ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/zori_a/events_local', '{replica}') PARTITION BY toYYYYMM(occurred_at) ORDER BY (toDate(occurred_at), visitor_id, event_id) SETTINGS index_granularity = 8192"
            ),
            "{}",
            statements[0]
        );
        assert_eq!(
            statements[1],
            "CREATE TABLE IF NOT EXISTS zori_a.events ON CLUSTER zc AS zori_a.events_local ENGINE = Distributed('zc', 'zori_a', 'events_local', sipHash64(visitor_id))"
        );
        assert_eq!(
            Topology::Cluster("zc".to_owned()).insert_settings(),
            &[("insert_distributed_sync", "1")]
        );
    }

    #[test]
    fn engine_arguments_follow_the_replication_ones() {
        let statements = Topology::Cluster("zc".to_owned())
            .statements(
                "db",
                "CREATE TABLE payments (id String, version UInt64) ENGINE = ReplacingMergeTree(version) ORDER BY id",
            )
            .expect("cluster DDL");
        assert_eq!(
            statements[0],
            "CREATE TABLE IF NOT EXISTS db.payments_local ON CLUSTER zc (id String, version UInt64) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db/payments_local', '{replica}', version) ORDER BY id"
        );
        assert!(
            statements[1].ends_with("'payments_local', rand())"),
            "{}",
            statements[1]
        );
    }

    #[test]
    fn what_cannot_be_distributed_is_refused_with_the_reason() {
        let cluster = Topology::Cluster("zc".to_owned());
        let tiny = cluster
            .statements("db", "CREATE TABLE t (uid String) ENGINE = TinyLog()")
            .expect_err("TinyLog");
        assert!(
            tiny.to_string()
                .contains("engine TinyLog has no Replicated form"),
            "{tiny}"
        );
        let view = cluster
            .statements("db", "CREATE MATERIALIZED VIEW v TO t AS SELECT 1")
            .expect_err("a view");
        assert!(view.to_string().contains("only CREATE TABLE"), "{view}");
        let qualified = cluster
            .statements(
                "db",
                "CREATE TABLE other.t (a String) ENGINE = MergeTree() ORDER BY a",
            )
            .expect_err("qualified");
        assert!(qualified.to_string().contains("unqualified"), "{qualified}");
    }
}
