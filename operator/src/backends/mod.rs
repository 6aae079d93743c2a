//! Provision: the tenant's stream, PostgreSQL schema and role, and ClickHouse database, behind
//! one trait with the real implementation ([`LiveBackends`]) and an in-memory one
//! ([`MemoryBackends`]) for the reconcile tests.

pub mod clickhouse;
pub mod nats;
pub mod postgres;

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    sync::{Mutex, MutexGuard},
};

use async_nats::jetstream::stream::Config as StreamConfig;
use zori_service::jetstream::differences;

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
    /// A failure injected into [`MemoryBackends`] by a test.
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

#[derive(Debug, Default)]
struct Memory {
    streams: BTreeMap<String, StreamConfig>,
    /// Role → (schema, password).
    postgres: BTreeMap<String, (String, String)>,
    databases: BTreeSet<String>,
    failing: BTreeMap<Backend, String>,
    /// Every call that changed something, such as `create stream ZORI_X`.
    mutations: Vec<String>,
}

/// In-memory backends with the same create/compare/update semantics, and failure injection.
#[derive(Debug, Default)]
pub struct MemoryBackends {
    state: Mutex<Memory>,
}

impl MemoryBackends {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Memory> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes every call to `backend` fail with `message` (`None` heals it).
    pub fn fail(&self, backend: Backend, message: Option<&str>) {
        let mut state = self.lock();
        match message {
            Some(m) => state.failing.insert(backend, m.to_owned()),
            None => state.failing.remove(&backend),
        };
    }

    pub fn stream(&self, name: &str) -> Option<StreamConfig> {
        self.lock().streams.get(name).cloned()
    }

    /// `(schema, password)` of a role.
    pub fn postgres(&self, role: &str) -> Option<(String, String)> {
        self.lock().postgres.get(role).cloned()
    }

    pub fn has_database(&self, name: &str) -> bool {
        self.lock().databases.contains(name)
    }

    /// Calls that changed something, in order.
    pub fn mutations(&self) -> Vec<String> {
        self.lock().mutations.clone()
    }

    pub fn clear_mutations(&self) {
        self.lock().mutations.clear();
    }

    /// Changes a stream behind the operator's back (drift).
    pub fn tamper_stream(&self, name: &str, change: impl FnOnce(&mut StreamConfig)) {
        if let Some(s) = self.lock().streams.get_mut(name) {
            change(s);
        }
    }

    fn check(state: &Memory, backend: Backend) -> Result<(), BackendError> {
        match state.failing.get(&backend) {
            Some(m) => Err(BackendError::Injected(m.clone())),
            None => Ok(()),
        }
    }
}

impl Backends for MemoryBackends {
    async fn ensure_stream(&self, desired: StreamConfig) -> Result<Provisioned, BackendError> {
        let mut state = self.lock();
        Self::check(&state, Backend::Stream)?;
        let name = desired.name.clone();
        match state.streams.get(&name) {
            None => {
                state.streams.insert(name.clone(), desired);
                state.mutations.push(format!("create stream {name}"));
                Ok(Provisioned::Created)
            }
            Some(live) => {
                let changed = differences(live, &desired);
                if changed.is_empty() {
                    return Ok(Provisioned::Unchanged);
                }
                state
                    .mutations
                    .push(format!("update stream {name}: {}", changed.join(", ")));
                state.streams.insert(name, desired);
                Ok(Provisioned::Updated(
                    changed.into_iter().map(str::to_owned).collect(),
                ))
            }
        }
    }

    async fn delete_stream(&self, stream: &str) -> Result<Removed, BackendError> {
        let mut state = self.lock();
        Self::check(&state, Backend::Stream)?;
        if state.streams.remove(stream).is_some() {
            state.mutations.push(format!("delete stream {stream}"));
            Ok(Removed::Removed)
        } else {
            Ok(Removed::AlreadyGone)
        }
    }

    async fn ensure_postgres(
        &self,
        tenant: PgTenant<'_>,
        password: &str,
    ) -> Result<Provisioned, BackendError> {
        let mut state = self.lock();
        Self::check(&state, Backend::Postgres)?;
        let wanted = (tenant.schema.to_owned(), password.to_owned());
        match state.postgres.get(tenant.role) {
            None => {
                state.postgres.insert(tenant.role.to_owned(), wanted);
                state
                    .mutations
                    .push(format!("create role and schema {}", tenant.role));
                Ok(Provisioned::Created)
            }
            Some(live) if *live == wanted => Ok(Provisioned::Unchanged),
            Some(_) => {
                state.postgres.insert(tenant.role.to_owned(), wanted);
                state.mutations.push(format!("update role {}", tenant.role));
                Ok(Provisioned::Updated(vec!["password".to_owned()]))
            }
        }
    }

    async fn drop_postgres(&self, tenant: PgTenant<'_>) -> Result<Removed, BackendError> {
        let mut state = self.lock();
        Self::check(&state, Backend::Postgres)?;
        if state.postgres.remove(tenant.role).is_some() {
            state
                .mutations
                .push(format!("drop role and schema {}", tenant.role));
            Ok(Removed::Removed)
        } else {
            Ok(Removed::AlreadyGone)
        }
    }

    async fn ensure_clickhouse(&self, tenant: ChTenant<'_>) -> Result<Provisioned, BackendError> {
        let mut state = self.lock();
        Self::check(&state, Backend::ClickHouse)?;
        if state.databases.insert(tenant.database.to_owned()) {
            state
                .mutations
                .push(format!("create database {}", tenant.database));
            Ok(Provisioned::Created)
        } else {
            Ok(Provisioned::Unchanged)
        }
    }

    async fn drop_clickhouse(&self, tenant: ChTenant<'_>) -> Result<Removed, BackendError> {
        let mut state = self.lock();
        Self::check(&state, Backend::ClickHouse)?;
        if state.databases.remove(tenant.database) {
            state
                .mutations
                .push(format!("drop database {}", tenant.database));
            Ok(Removed::Removed)
        } else {
            Ok(Removed::AlreadyGone)
        }
    }
}
