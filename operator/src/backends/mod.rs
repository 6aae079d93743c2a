//! Provision: the tenant's stream, PostgreSQL schema and role, and ClickHouse database, behind
//! one trait with the real implementation ([`LiveBackends`]) and an in-memory one
//! (`MemoryBackends`, behind the `testing` feature) for the reconcile tests.

pub mod clickhouse;
#[cfg(any(test, feature = "testing"))]
mod memory;
pub mod nats;
pub mod postgres;
pub mod redis;

#[cfg(any(test, feature = "testing"))]
pub use memory::MemoryBackends;

use std::future::Future;

use async_nats::jetstream::stream::Config as StreamConfig;

/// What an ensure did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provisioned {
    Created,
    /// Names of the settings that were repaired.
    Updated(Vec<String>),
    Unchanged,
}

/// What a drop did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    Removed,
    AlreadyGone,
}

/// Which backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Backend {
    Stream,
    Postgres,
    ClickHouse,
    Redis,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Nats(#[from] nats::NatsError),
    #[error(transparent)]
    Postgres(#[from] postgres::PostgresError),
    #[error(transparent)]
    ClickHouse(#[from] clickhouse::ClickHouseError),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    /// Not attempted because something it depends on failed first.
    #[error("{0}")]
    NotAttempted(String),
    /// A failure injected into `MemoryBackends` by a test.
    #[error("{0}")]
    Injected(String),
    /// The object exists but is not this project's: never adopted, never dropped.
    #[error(transparent)]
    Foreign(#[from] Foreign),
}

impl BackendError {
    /// Whether the object exists but belongs to another project (never adopted).
    pub fn is_foreign(&self) -> bool {
        matches!(
            self,
            BackendError::Foreign(_)
                | BackendError::Nats(nats::NatsError::Foreign(_))
                | BackendError::Postgres(postgres::PostgresError::Foreign(_))
                | BackendError::ClickHouse(clickhouse::ClickHouseError::Foreign(_))
        )
    }
}

/// Prefix of the owner marker the operator stamps on every object it makes outside
/// Kubernetes (stream description, role and schema comments, ClickHouse marker table).
pub const OWNER_MARKER: &str = "zori-owner:";

/// Who may use an existing backend object: the project's uid, and whether an object with no
/// marker at all may be adopted (only for a project that pinned its tenant id before owner
/// markers existed: an upgrade of a live project, never a newcomer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner<'a> {
    pub uid: &'a str,
    pub adopt_unmarked: bool,
}

/// An existing object that carries another project's marker, or none where one is required.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refusing to use {what}: {why}")]
pub struct Foreign {
    pub what: String,
    pub why: String,
}

impl Owner<'_> {
    /// `zori-owner:<uid>`.
    pub fn marker(&self) -> String {
        format!("{OWNER_MARKER}{}", self.uid)
    }

    /// Checks the marker found on an existing object (`None`: the object has none).
    /// `Ok(true)` when the marker must be (re)stamped.
    pub fn check(&self, what: &str, found: Option<&str>) -> Result<bool, Foreign> {
        match found {
            Some(uid) if uid == self.uid => Ok(false),
            Some(uid) => Err(Foreign {
                what: what.to_owned(),
                why: format!("it belongs to another ZoriProject (uid {uid})"),
            }),
            None if self.adopt_unmarked => Ok(true),
            None => Err(Foreign {
                what: what.to_owned(),
                why: "it exists without an owner marker and this project never pinned it \
                      (a retained tenant of a deleted project is never adopted)"
                    .to_owned(),
            }),
        }
    }
}

/// The uid in an owner marker found anywhere in `text`.
pub fn marker_in(text: &str) -> Option<&str> {
    let start = text.find(OWNER_MARKER)? + OWNER_MARKER.len();
    let rest = &text[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .unwrap_or(rest.len());
    Some(&rest[..end]).filter(|uid| !uid.is_empty())
}

/// The tenant's PostgreSQL objects.
#[derive(Debug, Clone, Copy)]
pub struct PgTenant<'a> {
    pub role: &'a str,
    pub schema: &'a str,
    pub owner: Owner<'a>,
}

/// The tenant's ClickHouse objects; `user` only where the server has SQL users.
#[derive(Debug, Clone, Copy)]
pub struct ChTenant<'a> {
    pub database: &'a str,
    pub user: Option<(&'a str, &'a str)>,
    pub owner: Owner<'a>,
}

/// Provisioning and reclaiming of the backends.
pub trait Backends: Send + Sync + 'static {
    fn ensure_stream(
        &self,
        desired: StreamConfig,
        owner: Owner<'_>,
    ) -> impl Future<Output = Result<Provisioned, BackendError>> + Send;
    fn delete_stream(
        &self,
        stream: &str,
        owner: Owner<'_>,
    ) -> impl Future<Output = Result<Removed, BackendError>> + Send;
    /// What the stream holds and may hold (`None`: it does not exist). A read: never changes
    /// anything, and is asked at every reconcile.
    fn stream_fill(
        &self,
        stream: &str,
    ) -> impl Future<Output = Result<Option<crate::buffer::StreamFill>, BackendError>> + Send;
    fn ensure_postgres(
        &self,
        tenant: PgTenant<'_>,
        password: &str,
    ) -> impl Future<Output = Result<Provisioned, BackendError>> + Send;
    fn drop_postgres(
        &self,
        tenant: PgTenant<'_>,
    ) -> impl Future<Output = Result<Removed, BackendError>> + Send;
    fn ensure_clickhouse(
        &self,
        tenant: ChTenant<'_>,
    ) -> impl Future<Output = Result<Provisioned, BackendError>> + Send;
    fn drop_clickhouse(
        &self,
        tenant: ChTenant<'_>,
    ) -> impl Future<Output = Result<Removed, BackendError>> + Send;
    fn ensure_redis(
        &self,
        tenant: redis::RedisTenant<'_>,
    ) -> impl Future<Output = Result<Provisioned, BackendError>> + Send;
    fn drop_redis(&self, user: &str) -> impl Future<Output = Result<Removed, BackendError>> + Send;
}

/// The real backends.
#[derive(Clone)]
pub struct LiveBackends {
    pub nats: nats::NatsBackend,
    pub postgres: postgres::PostgresBackend,
    pub clickhouse: clickhouse::ClickHouseBackend,
    /// Per-tenant ACL users, when the operator has a Redis admin URL.
    pub redis: Option<redis::RedisBackend>,
}

impl Backends for LiveBackends {
    async fn ensure_stream(
        &self,
        desired: StreamConfig,
        owner: Owner<'_>,
    ) -> Result<Provisioned, BackendError> {
        Ok(self.nats.ensure(desired, owner).await?)
    }

    async fn delete_stream(&self, stream: &str, owner: Owner<'_>) -> Result<Removed, BackendError> {
        Ok(self.nats.delete(stream, owner).await?)
    }

    async fn stream_fill(
        &self,
        stream: &str,
    ) -> Result<Option<crate::buffer::StreamFill>, BackendError> {
        Ok(self.nats.fill(stream).await?)
    }

    async fn ensure_postgres(
        &self,
        tenant: PgTenant<'_>,
        password: &str,
    ) -> Result<Provisioned, BackendError> {
        Ok(self
            .postgres
            .ensure(tenant.role, tenant.schema, password, tenant.owner)
            .await?)
    }

    async fn drop_postgres(&self, tenant: PgTenant<'_>) -> Result<Removed, BackendError> {
        Ok(self
            .postgres
            .drop(tenant.role, tenant.schema, tenant.owner)
            .await?)
    }

    async fn ensure_clickhouse(&self, tenant: ChTenant<'_>) -> Result<Provisioned, BackendError> {
        Ok(self
            .clickhouse
            .ensure(tenant.database, tenant.user, tenant.owner)
            .await?)
    }

    async fn drop_clickhouse(&self, tenant: ChTenant<'_>) -> Result<Removed, BackendError> {
        Ok(self
            .clickhouse
            .drop(tenant.database, tenant.user.map(|(u, _)| u), tenant.owner)
            .await?)
    }

    async fn ensure_redis(
        &self,
        tenant: redis::RedisTenant<'_>,
    ) -> Result<Provisioned, BackendError> {
        match &self.redis {
            Some(redis) => Ok(redis.ensure(tenant).await?),
            None => Err(BackendError::NotAttempted(
                "no per-tenant Redis users: the operator has no --redis-admin-url".to_owned(),
            )),
        }
    }

    async fn drop_redis(&self, user: &str) -> Result<Removed, BackendError> {
        match &self.redis {
            Some(redis) => Ok(redis.drop(user).await?),
            None => Ok(Removed::AlreadyGone),
        }
    }
}
