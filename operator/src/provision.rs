//! Provisioning of a project's backends (stream, PostgreSQL schema and role, ClickHouse
//! database) within a reconcile, and the memo that keeps reconciles triggered by anything but
//! a change of their inputs from calling them again: no hot loop on status writes, rollouts
//! or Secret events, and a failure retried only when its backoff is over.

use std::{collections::HashMap, sync::Mutex};

use async_nats::jetstream::stream::Config as StreamConfig;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::{
    api::{KubeApi, ObjectKey},
    backends::{
        redis::RedisTenant, BackendError, Backends, ChTenant, Owner, PgTenant, Provisioned,
    },
    builders::stream::desired_stream,
    config::{ClickHouseUsers, ProjectConfig},
    crd::ZoriProject,
    naming::TenantNames,
    reconcile::{Context, Events},
    status::{reasons, types, Observation},
};

/// What the backends last answered for each project, so that a reconcile triggered by
/// anything but a change of what they are asked for (the project's own status write, a
/// Deployment rolling out, a Secret changing) does not call them again before the resync
/// after a success, or before the backoff is over after a failure: no hot loop.
#[derive(Debug, Default)]
pub struct Provisioning {
    last: Mutex<HashMap<String, LastProvisioning>>,
}

#[derive(Debug, Clone)]
struct LastProvisioning {
    /// Digest of everything the backends were asked for.
    inputs: [u8; 32],
    observations: Vec<Observation>,
    failed: bool,
    /// When to ask them again even if nothing changed.
    due: OffsetDateTime,
}

impl Provisioning {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LastProvisioning>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last answer, while it still stands for `inputs` at `now`.
    fn current(
        &self,
        project: &str,
        inputs: &[u8; 32],
        now: OffsetDateTime,
    ) -> Option<LastProvisioning> {
        self.lock()
            .get(project)
            .filter(|last| last.inputs == *inputs && now < last.due)
            .cloned()
    }

    fn record(&self, project: &str, last: LastProvisioning) {
        self.lock().insert(project.to_owned(), last);
    }

    /// Forgets a project (it was deleted).
    pub fn forget(&self, project: &str) {
        self.lock().remove(project);
    }
}

/// The key of a project in the [`Provisioning`] memo: a recreated project starts afresh.
pub(crate) fn memo_key(project: &ZoriProject, key: &ObjectKey) -> String {
    format!(
        "{key} {}",
        project.metadata.uid.as_deref().unwrap_or_default()
    )
}

/// The tenant's credentials as the backends are given them.
pub(crate) struct Credentials<'a> {
    pub(crate) postgres: &'a str,
    pub(crate) clickhouse: &'a str,
    /// Password of the Redis ACL user (per-tenant Redis users only).
    pub(crate) redis: Option<&'a str>,
    /// Whether the Secret holding them was written (the role waits for it).
    pub(crate) secret_ok: bool,
    pub(crate) secret_name: &'a str,
    /// Whose objects the backends may use.
    pub(crate) owner: Owner<'a>,
}

/// What the backends answered in this pass.
pub(crate) struct ProvisionOutcome {
    pub(crate) observations: Vec<Observation>,
    pub(crate) failed: bool,
    /// The memo entry to store, when the backends were called in this pass.
    fresh: Option<(String, [u8; 32])>,
    /// When a failure reused from an earlier pass is due for a retry.
    pub(crate) retry_at: Option<OffsetDateTime>,
}

impl ProvisionOutcome {
    /// Stores a fresh answer until `due`.
    pub(crate) fn remember<A, B>(&self, ctx: &Context<A, B>, due: OffsetDateTime) {
        if let Some((project, inputs)) = &self.fresh {
            ctx.provisioning.record(
                project,
                LastProvisioning {
                    inputs: *inputs,
                    observations: self.observations.clone(),
                    failed: self.failed,
                    due,
                },
            );
        }
    }
}

/// A digest of everything the backends are asked for.
fn provisioning_inputs(
    stream: &StreamConfig,
    pg: PgTenant<'_>,
    ch: ChTenant<'_>,
    credentials: &Credentials<'_>,
) -> [u8; 32] {
    let mut digest = Sha256::new();
    digest.update(serde_json::to_vec(stream).unwrap_or_default());
    for part in [
        pg.role,
        pg.schema,
        credentials.postgres,
        ch.database,
        ch.user.map(|(u, _)| u).unwrap_or_default(),
        credentials.clickhouse,
        credentials.owner.uid,
        credentials.redis.unwrap_or("no redis user"),
        if credentials.secret_ok {
            "secret"
        } else {
            "no secret"
        },
    ] {
        digest.update(part.as_bytes());
        digest.update([0]);
    }
    digest.finalize().into()
}

/// Ensures the stream, the PostgreSQL schema and role, and the ClickHouse database, or
/// reuses what they answered for the same inputs before it is due again.
pub(crate) async fn provision<A: KubeApi, B: Backends>(
    ctx: &Context<A, B>,
    project: &str,
    config: &ProjectConfig,
    names: &TenantNames,
    credentials: Credentials<'_>,
    events: &Events<'_, A>,
) -> ProvisionOutcome {
    let stream = desired_stream(config);
    let owner = credentials.owner;
    let pg = PgTenant {
        role: &names.postgres_role,
        schema: &names.postgres_schema,
        owner,
    };
    let ch = ChTenant {
        database: &names.clickhouse_database,
        user: match ctx.platform.clickhouse_users {
            ClickHouseUsers::PerTenant => {
                Some((names.clickhouse_user.as_str(), credentials.clickhouse))
            }
            ClickHouseUsers::Shared { .. } => None,
        },
        owner,
    };
    let inputs = provisioning_inputs(&stream, pg, ch, &credentials);
    if let Some(last) = ctx.provisioning.current(project, &inputs, (ctx.clock)()) {
        return ProvisionOutcome {
            retry_at: last.failed.then_some(last.due),
            observations: last.observations,
            failed: last.failed,
            fresh: None,
        };
    }

    let mut failed = false;
    let mut observations = Vec::new();
    let stream_name = stream.name.clone();
    let outcome = ctx.backends.ensure_stream(stream, owner).await;
    observations.push(
        backend_observation(
            types::STREAM,
            format!(
                "stream {stream_name} on {} matches the spec",
                names.subjects.wildcard
            ),
            "Stream",
            &outcome,
            events,
            &mut failed,
        )
        .await,
    );

    let outcome = if credentials.secret_ok {
        ctx.backends.ensure_postgres(pg, credentials.postgres).await
    } else {
        Err(BackendError::NotAttempted(format!(
            "not provisioned: Secret {} holding the role's password could not be written",
            credentials.secret_name
        )))
    };
    observations.push(
        backend_observation(
            types::POSTGRES,
            format!(
                "schema {} and role {} exist; the role can use only that schema",
                pg.schema, pg.role
            ),
            "Postgres",
            &outcome,
            events,
            &mut failed,
        )
        .await,
    );

    let outcome = ctx.backends.ensure_clickhouse(ch).await;
    let mut clickhouse = backend_observation(
        types::CLICKHOUSE,
        format!("database {} exists", ch.database),
        "ClickHouse",
        &outcome,
        events,
        &mut failed,
    )
    .await;
    if let (Err(_), Some(probe)) = (&outcome, &ctx.platform.clickhouse_probe_error) {
        clickhouse.message = format!(
            "{} (the ClickHouse version probe at operator start failed: {probe}; tenants get \
             per-tenant users rather than falling back to a shared one)",
            clickhouse.message
        );
    }
    observations.push(clickhouse);

    if let Some(password) = credentials.redis {
        let redis = RedisTenant {
            user: &names.redis_user,
            rules: &names.redis_rules,
            password,
        };
        let outcome = if credentials.secret_ok {
            ctx.backends.ensure_redis(redis).await
        } else {
            Err(BackendError::NotAttempted(format!(
                "not provisioned: Secret {} holding the user's password could not be written",
                credentials.secret_name
            )))
        };
        observations.push(
            backend_observation(
                types::REDIS,
                format!(
                    "ACL user {} may use only keys {} and the rate limiter's commands",
                    names.redis_user,
                    names
                        .redis_rules
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                ),
                "Redis",
                &outcome,
                events,
                &mut failed,
            )
            .await,
        );
    }
    ProvisionOutcome {
        observations,
        failed,
        fresh: Some((project.to_owned(), inputs)),
        retry_at: None,
    }
}

async fn backend_observation<A: KubeApi>(
    type_: &'static str,
    ok_message: String,
    event_prefix: &str,
    outcome: &Result<Provisioned, BackendError>,
    events: &Events<'_, A>,
    transient: &mut bool,
) -> Observation {
    match outcome {
        Ok(Provisioned::Created) => {
            events
                .normal(&format!("{event_prefix}Created"), ok_message.clone())
                .await;
            Observation::ok(type_, reasons::PROVISIONED, ok_message)
        }
        Ok(Provisioned::Updated(changed)) => {
            events
                .normal(
                    &format!("{event_prefix}Updated"),
                    format!("updated {}", changed.join(", ")),
                )
                .await;
            Observation::ok(type_, reasons::PROVISIONED, ok_message)
        }
        Ok(Provisioned::Unchanged) => Observation::ok(type_, reasons::PROVISIONED, ok_message),
        Err(error) if error.is_foreign() => {
            *transient = true;
            Observation::failed(type_, reasons::NOT_OWNED, error.to_string())
        }
        Err(error) => {
            *transient = true;
            Observation::failed(type_, reasons::PROVISIONING_FAILED, error.to_string())
        }
    }
}
