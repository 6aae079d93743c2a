//! In-memory backends for tests (behind the `testing` feature): the same create / compare /
//! update semantics as the real ones, failure injection, and a log of calls and changes.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Mutex, MutexGuard},
};

use async_nats::jetstream::stream::Config as StreamConfig;
use zori_service::jetstream::differences;

use super::{
    marker_in, Backend, BackendError, Backends, ChTenant, Owner, PgTenant, Provisioned, Removed,
};

#[derive(Debug, Default)]
struct Memory {
    streams: BTreeMap<String, StreamConfig>,
    /// Role → (schema, password).
    postgres: BTreeMap<String, (String, String)>,
    databases: BTreeSet<String>,
    /// Owner marker (project uid) of each role and database; streams keep theirs in the
    /// description, as on the server.
    role_owners: BTreeMap<String, String>,
    database_owners: BTreeMap<String, String>,
    /// Redis ACL user → (rules, password).
    redis_users: BTreeMap<String, (String, String)>,
    failing: BTreeMap<Backend, String>,
    /// `(bytes, messages)` each stream holds (empty unless a test says otherwise).
    stream_held: BTreeMap<String, (u64, u64)>,
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

    /// Says what a stream holds, as if events waited in it.
    pub fn hold_in_stream(&self, name: &str, bytes: u64, messages: u64) {
        self.lock()
            .stream_held
            .insert(name.to_owned(), (bytes, messages));
    }

    /// Changes a stream behind the operator's back (drift).
    pub fn tamper_stream(&self, name: &str, change: impl FnOnce(&mut StreamConfig)) {
        if let Some(s) = self.lock().streams.get_mut(name) {
            change(s);
        }
    }

    /// Removes the owner markers of a tenant's objects, as they were before markers existed.
    pub fn unmark(&self, stream: &str, role: &str, database: &str) {
        let mut state = self.lock();
        if let Some(s) = state.streams.get_mut(stream) {
            s.description = None;
        }
        state.role_owners.remove(role);
        state.database_owners.remove(database);
    }

    /// The owner marker (uid) of a role.
    pub fn role_owner(&self, role: &str) -> Option<String> {
        self.lock().role_owners.get(role).cloned()
    }

    /// `(rules, password)` of a Redis ACL user.
    pub fn redis_user(&self, user: &str) -> Option<(String, String)> {
        self.lock().redis_users.get(user).cloned()
    }

    /// How many calls were made, changing something or not, failing or not.
    pub fn calls(&self) -> usize {
        self.lock().calls
    }

    /// Checks the marker of an existing role and stamps it (a new role gets one too).
    fn check_role(state: &mut Memory, role: &str, owner: Owner<'_>) -> Result<(), BackendError> {
        if state.postgres.contains_key(role) {
            let found = state.role_owners.get(role).cloned();
            owner.check(&format!("PostgreSQL role {role}"), found.as_deref())?;
        }
        state
            .role_owners
            .insert(role.to_owned(), owner.uid.to_owned());
        Ok(())
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
    async fn ensure_stream(
        &self,
        desired: StreamConfig,
        owner: Owner<'_>,
    ) -> Result<Provisioned, BackendError> {
        let mut state = self.lock();
        Self::check(&mut state, Backend::Stream)?;
        let name = desired.name.clone();
        if let Some(live) = state.streams.get(&name) {
            let found = live.description.as_deref().and_then(marker_in);
            if owner.check(&format!("stream {name}"), found)? {
                let description = desired.description.clone();
                if let Some(live) = state.streams.get_mut(&name) {
                    live.description = description;
                }
            }
        }
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

    async fn delete_stream(&self, stream: &str, owner: Owner<'_>) -> Result<Removed, BackendError> {
        let mut state = self.lock();
        Self::check(&mut state, Backend::Stream)?;
        if let Some(live) = state.streams.get(stream) {
            let found = live.description.as_deref().and_then(marker_in);
            owner.check(&format!("stream {stream}"), found)?;
        }
        if state.streams.remove(stream).is_some() {
            state.mutations.push(format!("delete stream {stream}"));
            Ok(Removed::Removed)
        } else {
            Ok(Removed::AlreadyGone)
        }
    }

    /// A read: not counted in [`MemoryBackends::calls`], but fails with the stream backend.
    async fn stream_fill(
        &self,
        stream: &str,
    ) -> Result<Option<crate::buffer::StreamFill>, BackendError> {
        let state = self.lock();
        if let Some(message) = state.failing.get(&Backend::Stream) {
            return Err(BackendError::Injected(message.clone()));
        }
        let (bytes, messages) = state.stream_held.get(stream).copied().unwrap_or_default();
        Ok(state
            .streams
            .get(stream)
            .map(|config| crate::buffer::StreamFill {
                bytes,
                messages,
                max_bytes: config.max_bytes,
                max_messages: config.max_messages,
            }))
    }

    async fn ensure_postgres(
        &self,
        tenant: PgTenant<'_>,
        password: &str,
    ) -> Result<Provisioned, BackendError> {
        let mut state = self.lock();
        Self::check(&mut state, Backend::Postgres)?;
        Self::check_role(&mut state, tenant.role, tenant.owner)?;
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
        if state.postgres.contains_key(tenant.role) {
            Self::check_role(&mut state, tenant.role, tenant.owner)?;
            state.role_owners.remove(tenant.role);
        }
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
        if state.databases.contains(tenant.database) {
            let found = state.database_owners.get(tenant.database).cloned();
            tenant.owner.check(
                &format!("ClickHouse database {}", tenant.database),
                found.as_deref(),
            )?;
        }
        state
            .database_owners
            .insert(tenant.database.to_owned(), tenant.owner.uid.to_owned());
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
        if state.databases.contains(tenant.database) {
            let found = state.database_owners.get(tenant.database).cloned();
            tenant.owner.check(
                &format!("ClickHouse database {}", tenant.database),
                found.as_deref(),
            )?;
            state.database_owners.remove(tenant.database);
        }
        if state.databases.remove(tenant.database) {
            state
                .mutations
                .push(format!("drop database {}", tenant.database));
            Ok(Removed::Removed)
        } else {
            Ok(Removed::AlreadyGone)
        }
    }

    async fn ensure_redis(
        &self,
        tenant: super::redis::RedisTenant<'_>,
    ) -> Result<Provisioned, BackendError> {
        let mut state = self.lock();
        Self::check(&mut state, Backend::Redis)?;
        let wanted = (tenant.rules.to_owned(), tenant.password.to_owned());
        match state
            .redis_users
            .insert(tenant.user.to_owned(), wanted.clone())
        {
            None => {
                state
                    .mutations
                    .push(format!("create redis user {}", tenant.user));
                Ok(Provisioned::Created)
            }
            Some(live) if live == wanted => Ok(Provisioned::Unchanged),
            Some(_) => {
                state
                    .mutations
                    .push(format!("update redis user {}", tenant.user));
                Ok(Provisioned::Updated(vec!["acl".to_owned()]))
            }
        }
    }

    async fn drop_redis(&self, user: &str) -> Result<Removed, BackendError> {
        let mut state = self.lock();
        Self::check(&mut state, Backend::Redis)?;
        if state.redis_users.remove(user).is_some() {
            state.mutations.push(format!("drop redis user {user}"));
            Ok(Removed::Removed)
        } else {
            Ok(Removed::AlreadyGone)
        }
    }
}
