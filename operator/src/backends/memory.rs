//! In-memory backends for tests (behind the `testing` feature): the same create / compare /
//! update semantics as the real ones, failure injection, and a log of calls and changes.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Mutex, MutexGuard},
};

use async_nats::jetstream::stream::Config as StreamConfig;
use zori_service::jetstream::differences;

use super::{Backend, BackendError, Backends, ChTenant, PgTenant, Provisioned, Removed};

#[derive(Debug, Default)]
struct Memory {
    streams: BTreeMap<String, StreamConfig>,
    /// Role → (schema, password).
    postgres: BTreeMap<String, (String, String)>,
    databases: BTreeSet<String>,
    failing: BTreeMap<Backend, String>,
    /// Every call that changed something, such as `create stream ZORI_X`.
    mutations: Vec<String>,
    /// Every call, whatever it did.
    calls: usize,
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

    /// How many calls were made, changing something or not, failing or not.
    pub fn calls(&self) -> usize {
        self.lock().calls
    }

    fn check(state: &mut Memory, backend: Backend) -> Result<(), BackendError> {
        state.calls += 1;
        match state.failing.get(&backend) {
            Some(m) => Err(BackendError::Injected(m.clone())),
            None => Ok(()),
        }
    }
}

impl Backends for MemoryBackends {
    async fn ensure_stream(&self, desired: StreamConfig) -> Result<Provisioned, BackendError> {
        let mut state = self.lock();
        Self::check(&mut state, Backend::Stream)?;
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
        Self::check(&mut state, Backend::Stream)?;
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
        Self::check(&mut state, Backend::Postgres)?;
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
        Self::check(&mut state, Backend::Postgres)?;
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
        Self::check(&mut state, Backend::ClickHouse)?;
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
        Self::check(&mut state, Backend::ClickHouse)?;
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
