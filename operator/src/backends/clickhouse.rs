//! The tenant's ClickHouse database (and, where the server has SQL users, a user allowed only
//! that database), over the HTTP interface. Only SQL that ClickHouse 18.16 and current versions
//! both accept. On a cluster (`--clickhouse-cluster`) every statement runs `ON CLUSTER`, and the
//! owner marker lives in a replicated table behind a `Distributed` one, so every node reads it.

use std::time::Duration;

use sha2::{Digest, Sha256};
use zori_service::clickhouse::Topology;

use super::{Foreign, Owner, Provisioned, Removed};

/// Table in the tenant database holding the owner marker (the project uid): ClickHouse 18.16
/// has no database comments.
pub const OWNER_TABLE: &str = "zori_owner";

/// First version with SQL-driven users (`CREATE USER`, `GRANT`).
pub const SQL_USERS_SINCE: (u32, u32) = (20, 4);

#[derive(Debug, thiserror::Error)]
pub enum ClickHouseError {
    #[error("failed to {action} ClickHouse database {database}: {message}")]
    Request {
        action: &'static str,
        database: String,
        message: String,
    },
    #[error(
        "failed to provision ClickHouse database {database}: {name:?} is not a safe identifier"
    )]
    Identifier { database: String, name: String },
    #[error("failed to reach ClickHouse at {url}: {message}")]
    Server { url: String, message: String },
    #[error(transparent)]
    Foreign(#[from] Foreign),
}

/// ClickHouse with the operator's admin user.
#[derive(Clone, Debug)]
pub struct ClickHouseBackend {
    http: reqwest::Client,
    url: String,
    user: Option<String>,
    password: Option<String>,
    topology: Topology,
}

/// The owner marker table as written for one server (ClickHouse 18.16 has no database
/// comments); on a cluster the topology turns it into a replicated one.
fn owner_table(database: &str, topology: &Topology) -> Result<Vec<String>, ClickHouseError> {
    match topology {
        Topology::Single => Ok(vec![format!(
            "CREATE TABLE IF NOT EXISTS {database}.{OWNER_TABLE} (uid String) ENGINE = TinyLog"
        )]),
        cluster => cluster
            .statements(
                database,
                &format!(
                    "CREATE TABLE IF NOT EXISTS {OWNER_TABLE} (uid String) ENGINE = MergeTree() ORDER BY uid"
                ),
            )
            .map_err(|e| ClickHouseError::Request {
                action: "make the owner marker table of",
                database: database.to_owned(),
                message: e.to_string(),
            }),
    }
}

/// `error` and its causes, so that "error sending request" says why (refused, reset, timed out).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        cause = inner.source();
    }
    message
}

fn is_identifier(name: &str) -> bool {
    super::postgres::is_identifier(name)
}

/// Parses `18.16.1` or `24.3.2.23` into `(major, minor)`.
pub fn parse_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

impl ClickHouseBackend {
    pub fn new(
        url: &str,
        user: Option<String>,
        password: Option<String>,
    ) -> Result<Self, ClickHouseError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            // Below ClickHouse's `keep_alive_timeout` (3 s on 18.16, 10 s later): a pooled
            // connection the server is closing would fail the next statement with "connection
            // closed before message completed".
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| ClickHouseError::Server {
                url: url.to_owned(),
                message: e.to_string(),
            })?;
        Ok(Self {
            http,
            url: url.trim_end_matches('/').to_owned(),
            user,
            password,
            topology: Topology::Single,
        })
    }

    /// The same backend for the tenant databases on `topology` (a cluster: `ON CLUSTER`).
    pub fn on(mut self, topology: Topology) -> Self {
        self.topology = topology;
        self
    }

    async fn run(&self, sql: &str) -> Result<String, String> {
        let mut request = self
            .http
            .post(format!("{}/", self.url))
            .query(self.topology.insert_settings())
            .body(sql.to_owned());
        if let Some(user) = &self.user {
            request = request.basic_auth(user, self.password.as_deref());
        }
        let response = request.send().await.map_err(|e| with_causes(&e))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| with_causes(&e))?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!("HTTP {}: {}", status.as_u16(), body.trim()))
        }
    }

    async fn query(
        &self,
        action: &'static str,
        database: &str,
        sql: &str,
    ) -> Result<String, ClickHouseError> {
        self.run(sql)
            .await
            .map_err(|message| ClickHouseError::Request {
                action,
                database: database.to_owned(),
                message,
            })
    }

    /// The server's `(major, minor)` version.
    pub async fn version(&self) -> Result<(u32, u32), ClickHouseError> {
        let text =
            self.run("SELECT version()")
                .await
                .map_err(|message| ClickHouseError::Server {
                    url: self.url.clone(),
                    message,
                })?;
        parse_version(&text).ok_or_else(|| ClickHouseError::Server {
            url: self.url.clone(),
            message: format!("unexpected version {:?}", text.trim()),
        })
    }

    /// Whether the server supports SQL users.
    pub async fn supports_sql_users(&self) -> Result<bool, ClickHouseError> {
        Ok(self.version().await? >= SQL_USERS_SINCE)
    }

    async fn exists(&self, database: &str) -> Result<bool, ClickHouseError> {
        let count = self
            .query(
                "look up",
                database,
                &format!("SELECT count() FROM system.databases WHERE name = '{database}'"),
            )
            .await?;
        Ok(count.trim() != "0")
    }

    /// The uid in the owner table of an existing database (`None`: no marker).
    async fn marker(&self, database: &str) -> Result<Option<String>, ClickHouseError> {
        let tables = self
            .query(
                "look up the owner marker of",
                database,
                &format!(
                    "SELECT count() FROM system.tables WHERE database = '{database}' AND name = '{OWNER_TABLE}'"
                ),
            )
            .await?;
        if tables.trim() == "0" {
            return Ok(None);
        }
        let uid = self
            .query(
                "read the owner marker of",
                database,
                &format!("SELECT uid FROM {database}.{OWNER_TABLE} LIMIT 1"),
            )
            .await?;
        Ok(Some(uid.trim().to_owned()).filter(|u| !u.is_empty()))
    }

    /// Checks the owner marker of an existing database; `Ok(true)` when it must be stamped.
    async fn check_owner(&self, database: &str, owner: Owner<'_>) -> Result<bool, ClickHouseError> {
        let found = self.marker(database).await?;
        Ok(owner.check(&format!("ClickHouse database {database}"), found.as_deref())?)
    }

    async fn stamp(&self, database: &str, owner: Owner<'_>) -> Result<(), ClickHouseError> {
        // A Kubernetes uid: hex digits and dashes; anything else never reaches the SQL.
        if owner.uid.is_empty()
            || !owner
                .uid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(ClickHouseError::Identifier {
                database: database.to_owned(),
                name: owner.uid.to_owned(),
            });
        }
        for statement in owner_table(database, &self.topology)? {
            self.query("create the owner marker of", database, &statement)
                .await?;
        }
        self.query(
            "stamp the owner marker of",
            database,
            &format!(
                "INSERT INTO {database}.{OWNER_TABLE} (uid) VALUES ('{}')",
                owner.uid
            ),
        )
        .await?;
        Ok(())
    }

    /// Creates the database (and the user, when given); reports what it did. An existing
    /// database is used only when it carries `owner`'s marker.
    pub async fn ensure(
        &self,
        database: &str,
        user: Option<(&str, &str)>,
        owner: Owner<'_>,
    ) -> Result<Provisioned, ClickHouseError> {
        for name in std::iter::once(database).chain(user.map(|(u, _)| u)) {
            if !is_identifier(name) {
                return Err(ClickHouseError::Identifier {
                    database: database.to_owned(),
                    name: name.to_owned(),
                });
            }
        }
        let mut created = false;
        let stamp = if self.exists(database).await? {
            self.check_owner(database, owner).await?
        } else {
            self.query("create", database, &self.topology.create_database(database))
                .await?;
            created = true;
            true
        };
        if stamp {
            self.stamp(database, owner).await?;
        }
        if let Some((user, password)) = user {
            let on_cluster = self.topology.on_cluster();
            let hash = hex::encode(Sha256::digest(password.as_bytes()));
            let users = self
                .query(
                    "look up the user of",
                    database,
                    &format!("SELECT count() FROM system.users WHERE name = '{user}'"),
                )
                .await?;
            if users.trim() == "0" {
                self.query(
                    "create the user of",
                    database,
                    &format!(
                        "CREATE USER IF NOT EXISTS {user}{on_cluster} IDENTIFIED WITH sha256_hash BY '{hash}'"
                    ),
                )
                .await?;
                created = true;
            } else {
                // The server does not show password hashes: set it (an idempotent effect).
                self.query(
                    "set the password of the user of",
                    database,
                    &format!(
                        "ALTER USER {user}{on_cluster} IDENTIFIED WITH sha256_hash BY '{hash}'"
                    ),
                )
                .await?;
            }
            self.query(
                "grant the user",
                database,
                &format!("GRANT{on_cluster} ALL ON {database}.* TO {user}"),
            )
            .await?;
        }
        Ok(if created {
            Provisioned::Created
        } else {
            Provisioned::Unchanged
        })
    }

    /// Drops the database (and the user); already gone is fine.
    pub async fn drop(
        &self,
        database: &str,
        user: Option<&str>,
        owner: Owner<'_>,
    ) -> Result<Removed, ClickHouseError> {
        if !is_identifier(database) {
            return Err(ClickHouseError::Identifier {
                database: database.to_owned(),
                name: database.to_owned(),
            });
        }
        let existed = self.exists(database).await?;
        if existed {
            self.check_owner(database, owner).await?;
        }
        if existed {
            self.query("drop", database, &self.topology.drop_database(database))
                .await?;
        }
        if let Some(user) = user.filter(|u| is_identifier(u)) {
            self.query(
                "drop the user of",
                database,
                &format!("DROP USER IF EXISTS {user}{}", self.topology.on_cluster()),
            )
            .await?;
        }
        Ok(if existed {
            Removed::Removed
        } else {
            Removed::AlreadyGone
        })
    }

    /// Whether the database exists (for tests and diagnostics).
    pub async fn database_exists(&self, database: &str) -> Result<bool, ClickHouseError> {
        self.exists(database).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_marker_is_replicated_on_a_cluster() {
        assert_eq!(
            owner_table("zori_a", &Topology::Single).expect("ddl"),
            vec!["CREATE TABLE IF NOT EXISTS zori_a.zori_owner (uid String) ENGINE = TinyLog"]
        );
        let cluster = Topology::Cluster("zc".to_owned());
        assert_eq!(
            owner_table("zori_a", &cluster).expect("ddl"),
            vec![
                "CREATE TABLE IF NOT EXISTS zori_a.zori_owner_local ON CLUSTER zc (uid String) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/zori_a/zori_owner_local', '{replica}') ORDER BY uid",
                "CREATE TABLE IF NOT EXISTS zori_a.zori_owner ON CLUSTER zc AS zori_a.zori_owner_local ENGINE = Distributed('zc', 'zori_a', 'zori_owner_local', rand())",
            ]
        );
        assert_eq!(
            cluster.create_database("zori_a"),
            "CREATE DATABASE IF NOT EXISTS zori_a ON CLUSTER zc"
        );
    }

    #[test]
    fn parses_versions() {
        assert_eq!(parse_version("18.16.1\n"), Some((18, 16)));
        assert_eq!(parse_version("24.3.2.23"), Some((24, 3)));
        assert_eq!(parse_version("x"), None);
        assert!(parse_version("18.16.1").is_some_and(|v| v < SQL_USERS_SINCE));
        assert!(parse_version("24.3").is_some_and(|v| v >= SQL_USERS_SINCE));
    }
}
