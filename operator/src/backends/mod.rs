//! Provision: the tenant's stream, PostgreSQL schema and role, and ClickHouse database, behind
//! one trait with the real implementation ([`LiveBackends`]) and an in-memory one
//! (`MemoryBackends`, behind the `testing` feature) for the reconcile tests.

pub mod clickhouse;
#[cfg(any(test, feature = "testing"))]
mod memory;
pub mod nats;
pub mod postgres;

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
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Nats(#[from] nats::NatsError),
    #[error(transparent)]
    Postgres(#[from] postgres::PostgresError),
    #[error(transparent)]
    ClickHouse(#[from] clickhouse::ClickHouseError),
    /// Not attempted because something it depends on failed first.
    #[error("{0}")]
    NotAttempted(String),
    /// A failure injected into `MemoryBackends` by a test.
    #[error("{0}")]
    Injected(String),
}

/// The tenant's PostgreSQL objects.
#[derive(Debug, Clone, Copy)]
pub struct PgTenant<'a> {
    pub role: &'a str,
    pub schema: &'a str,
}

/// The tenant's ClickHouse objects; `user` only where the server has SQL users.
#[derive(Debug, Clone, Copy)]
pub struct ChTenant<'a> {
    pub database: &'a str,
    pub user: Option<(&'a str, &'a str)>,
}

/// Provisioning and reclaiming of the backends.
pub trait Backends: Send + Sync + 'static {
    fn ensure_stream(
        &self,
        desired: StreamConfig,
    ) -> impl Future<Output = Result<Provisioned, BackendError>> + Send;
    fn delete_stream(
        &self,
        stream: &str,
    ) -> impl Future<Output = Result<Removed, BackendError>> + Send;
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
}

/// The real backends.
#[derive(Clone)]
pub struct LiveBackends {
    pub nats: nats::NatsBackend,
    pub postgres: postgres::PostgresBackend,
    pub clickhouse: clickhouse::ClickHouseBackend,
}

impl Backends for LiveBackends {
    async fn ensure_stream(&self, desired: StreamConfig) -> Result<Provisioned, BackendError> {
        Ok(self.nats.ensure(desired).await?)
    }

    async fn delete_stream(&self, stream: &str) -> Result<Removed, BackendError> {
        Ok(self.nats.delete(stream).await?)
    }

    async fn ensure_postgres(
        &self,
        tenant: PgTenant<'_>,
        password: &str,
    ) -> Result<Provisioned, BackendError> {
        Ok(self
            .postgres
            .ensure(tenant.role, tenant.schema, password)
            .await?)
    }

    async fn drop_postgres(&self, tenant: PgTenant<'_>) -> Result<Removed, BackendError> {
        Ok(self.postgres.drop(tenant.role, tenant.schema).await?)
    }

    async fn ensure_clickhouse(&self, tenant: ChTenant<'_>) -> Result<Provisioned, BackendError> {
        Ok(self.clickhouse.ensure(tenant.database, tenant.user).await?)
    }

    async fn drop_clickhouse(&self, tenant: ChTenant<'_>) -> Result<Removed, BackendError> {
        Ok(self
            .clickhouse
            .drop(tenant.database, tenant.user.map(|(u, _)| u))
            .await?)
    }
}
