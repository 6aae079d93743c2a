//! Deletion: the finalizer runs the reclaim policy. `Retain` keeps the stream, the schema and
//! role, and the database; `Delete` drops them, tolerating what is already gone, and keeps the
//! finalizer (retrying with backoff) until they are. Only names the project pinned in status are
//! touched: the operator never drops what it did not make.

use crate::{
    api::{KubeApi, ObjectKey},
    backends::{Backends, ChTenant, Owner, PgTenant, Removed},
    config::ClickHouseUsers,
    crd::{ReclaimPolicy, ZoriProject},
    naming::TenantNames,
    provision::memo_key,
    reconcile::{write_status, Context, Events, Next, ReconcileError, FINALIZER},
    status::{self, reasons, set_condition, types, Observation},
};

/// Deletion: runs the reclaim policy, then removes the finalizer.
pub(crate) async fn cleanup<A: KubeApi, B: Backends>(
    project: &ZoriProject,
    key: &ObjectKey,
    ctx: &Context<A, B>,
) -> Result<Next, ReconcileError> {
    let finalizers = project.metadata.finalizers.clone().unwrap_or_default();
    if !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(Next::AwaitChange);
    }
    let api = &ctx.api;
    let events = Events {
        api,
        key,
        uid: project.metadata.uid.clone(),
    };
    let previous = project.status.clone().unwrap_or_default();
    // Only names this project pinned are touched: the operator never drops what it did not make.
    let tenant = previous.tenant_id.clone();
    match (project.spec.reclaim_policy, tenant) {
        (_, None) => {
            events
                .normal(
                    "Reclaimed",
                    "no tenant id was pinned; nothing was provisioned".to_owned(),
                )
                .await;
        }
        (ReclaimPolicy::Retain, Some(id)) => {
            let names = TenantNames::for_tenant(&id);
            events
                .normal(
                    "Retained",
                    format!(
                        "reclaimPolicy Retain: kept stream {}, schema and role {}, database {}",
                        names.subjects.stream, names.postgres_schema, names.clickhouse_database
                    ),
                )
                .await;
        }
        (ReclaimPolicy::Delete, Some(id)) => {
            let names = TenantNames::for_tenant(&id);
            let user = match ctx.platform.clickhouse_users {
                ClickHouseUsers::PerTenant => Some((names.clickhouse_user.as_str(), "")),
                ClickHouseUsers::Shared { .. } => None,
            };
            // The id was pinned by this project: objects from before owner markers are its
            // own; objects marked for another project are never dropped.
            let owner = Owner {
                uid: project.metadata.uid.as_deref().unwrap_or_default(),
                adopt_unmarked: true,
            };
            let results = [
                ctx.backends
                    .delete_stream(&names.subjects.stream, owner)
                    .await,
                ctx.backends
                    .drop_postgres(PgTenant {
                        role: &names.postgres_role,
                        schema: &names.postgres_schema,
                        owner,
                    })
                    .await,
                ctx.backends
                    .drop_clickhouse(ChTenant {
                        database: &names.clickhouse_database,
                        user,
                        owner,
                    })
                    .await,
                if ctx.platform.redis_per_tenant {
                    ctx.backends.drop_redis(&names.redis_user).await
                } else {
                    // No per-tenant user was ever made: nothing to report as missing.
                    Ok(Removed::Removed)
                },
            ];
            let errors: Vec<String> = results
                .iter()
                .filter_map(|r| r.as_ref().err().map(ToString::to_string))
                .collect();
            if !errors.is_empty() {
                let failed =
                    Observation::failed(types::READY, reasons::RECLAIM_FAILED, errors.join("; "));
                let mut next = previous.clone();
                let now = status::timestamp((ctx.clock)());
                set_condition(
                    &mut next.conditions,
                    &failed,
                    &now,
                    project.metadata.generation,
                );
                write_status(api, key, &previous, next, &events, &[failed], "Reclaim").await?;
                return Ok(Next::Retry {
                    after: ctx.backoff.next(&key.to_string()),
                    reason: reasons::RECLAIM_FAILED,
                });
            }
            let gone: Vec<&str> = results
                .iter()
                .zip(["stream", "schema and role", "database", "Redis user"])
                .filter(|(r, _)| matches!(r, Ok(Removed::AlreadyGone)))
                .map(|(_, what)| what)
                .collect();
            let note = if gone.is_empty() {
                format!(
                    "reclaimPolicy Delete: dropped stream {}, schema and role {}, database {}",
                    names.subjects.stream, names.postgres_schema, names.clickhouse_database
                )
            } else {
                format!(
                    "reclaimPolicy Delete: dropped what remained of tenant {id} (already gone: {})",
                    gone.join(", ")
                )
            };
            events.normal("Reclaimed", note).await;
        }
    }
    if let Some(index) = finalizers.iter().position(|f| f == FINALIZER) {
        ctx.api.remove_finalizer(key, index, FINALIZER).await?;
    }
    ctx.provisioning.forget(&memo_key(project, key));
    if let Some(names) = &previous.names {
        ctx.stream_fill.remove(
            key.namespace.as_deref().unwrap_or_default(),
            &key.name,
            &names.stream,
        );
    }
    ctx.backoff.reset(&key.to_string());
    Ok(Next::AwaitChange)
}
