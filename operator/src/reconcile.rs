//! Reconcile one `ZoriProject` as a pipeline: pin names → validate → dereference → build →
//! apply the Secret → provision the backends → apply the workloads → prune → status.
//! Deletion runs the reclaim policy behind a finalizer (see [`crate::reclaim`]).
//!
//! Level-based and idempotent: a second run over an unchanged world changes nothing (every
//! apply is a no-op, no backend is touched, the status is not written, no Event is sent).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Mutex,
    time::Duration,
};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Secret};
use serde_json::Value;
use time::OffsetDateTime;
use tracing::{info, warn};

use crate::{
    api::{ApiError, EventRecord, EventType, KubeApi, ObjectKey},
    backends::{Backends, Owner},
    buffer,
    builders::{
        self, deployment::rollout_state, ingress, secret, service, BuildError, Dereferenced,
        Desired,
    },
    config::{self, Platform, ProjectConfig},
    crd::{self, Endpoints, PinnedNames, ZoriProject, ZoriProjectStatus},
    isolation,
    naming::{derive_tenant_id, may_hold, secret_name, Component, TenantNames},
    provision::{memo_key, provision, Credentials, Provisioning},
    status::{self, is_new_failure, reasons, set_condition, types, Observation},
};

/// Finalizer guarding deletion until the reclaim policy ran.
pub const FINALIZER: &str = "zori.dev/reclaim";
/// Resync period of a healthy project (catches drift in the backends).
pub const RESYNC: Duration = Duration::from_secs(300);
/// Longest wait before looking for a missing Stripe Secret again.
pub const STRIPE_SECRET_RECHECK: Duration = Duration::from_secs(15);
/// Requeue while workloads roll out.
pub const PROGRESS_CHECK: Duration = Duration::from_secs(30);
/// Requeue while the stream buffer is more than [`buffer::WATCH_CLOSELY_AT`] full.
pub const BUFFER_CHECK: Duration = Duration::from_secs(30);

/// What to do after a reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Done; look again after this long (drift check, rollout progress).
    Requeue(Duration),
    /// Something failed transiently (reported in status and events); retry with backoff.
    Retry {
        after: Duration,
        /// The condition reason of the first failure, for metrics.
        reason: &'static str,
    },
    /// The spec is invalid (reported in status and events); wait for a change.
    Invalid,
    /// Nothing to do until the object changes (a finished deletion).
    AwaitChange,
}

impl Next {
    /// The failure reason, when the reconcile did not get everything done.
    pub fn failure(&self) -> Option<&'static str> {
        match self {
            Next::Retry { reason, .. } => Some(reason),
            Next::Invalid => Some(reasons::INVALID_SPEC),
            Next::Requeue(_) | Next::AwaitChange => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("failed to reconcile a ZoriProject without {0}")]
    Malformed(&'static str),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("failed to serialise the status of {key}: {source}")]
    Status {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

impl ReconcileError {
    /// A short CamelCase label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ReconcileError::Malformed(_) => "Malformed",
            ReconcileError::Api(ApiError::Conflict { .. }) => "Conflict",
            ReconcileError::Api(_) => "ApiError",
            ReconcileError::Build(_) | ReconcileError::Status { .. } => "BuildError",
        }
    }
}

/// Exponential backoff per object: 5 s, 10 s, 20 s, … up to 5 min; reset on success.
#[derive(Debug, Default)]
pub struct Backoff {
    attempts: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    pub const BASE: Duration = Duration::from_secs(5);
    pub const MAX: Duration = Duration::from_secs(300);

    /// The delay before the next attempt, counting this failure.
    pub fn next(&self, key: &str) -> Duration {
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        let n = attempts.entry(key.to_owned()).or_insert(0);
        let delay = Self::BASE
            .saturating_mul(1u32 << (*n).min(16))
            .min(Self::MAX);
        *n = n.saturating_add(1);
        delay
    }

    pub fn reset(&self, key: &str) {
        self.attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// Everything a reconcile needs besides the object.
pub struct Context<A, B> {
    pub api: A,
    pub backends: B,
    pub platform: Platform,
    pub clock: Box<dyn Fn() -> OffsetDateTime + Send + Sync>,
    pub random: Box<dyn secret::Randomness>,
    pub backoff: Backoff,
    pub provisioning: Provisioning,
    /// The fill gauge of the tenant streams (registered by the controller).
    pub stream_fill: buffer::FillGauge,
}

impl<A: KubeApi, B: Backends> Context<A, B> {
    /// A context with the system clock and the OS random generator.
    pub fn new(api: A, backends: B, platform: Platform) -> Self {
        Self {
            api,
            backends,
            platform,
            clock: Box::new(OffsetDateTime::now_utc),
            random: Box::new(secret::OsRandomness),
            backoff: Backoff::default(),
            provisioning: Provisioning::default(),
            stream_fill: buffer::FillGauge::default(),
        }
    }
}

fn project_key(project: &ZoriProject) -> Result<ObjectKey, ReconcileError> {
    let namespace = project
        .metadata
        .namespace
        .as_deref()
        .ok_or(ReconcileError::Malformed("metadata.namespace"))?;
    let name = project
        .metadata
        .name
        .as_deref()
        .ok_or(ReconcileError::Malformed("metadata.name"))?;
    Ok(ObjectKey::new(
        crd::API_VERSION,
        crd::KIND,
        Some(namespace),
        name,
    ))
}

pub(crate) struct Events<'a, A> {
    pub(crate) api: &'a A,
    pub(crate) key: &'a ObjectKey,
    pub(crate) uid: Option<String>,
}

impl<A: KubeApi> Events<'_, A> {
    pub(crate) async fn send(&self, type_: EventType, reason: &str, action: &str, note: String) {
        let event = EventRecord {
            regarding: self.key.clone(),
            uid: self.uid.clone(),
            type_,
            reason: reason.to_owned(),
            action: action.to_owned(),
            note,
        };
        if let Err(error) = self.api.publish_event(&event).await {
            warn!(%error, reason, "failed to publish an event");
        }
    }

    pub(crate) async fn normal(&self, reason: &str, note: String) {
        self.send(EventType::Normal, reason, "Reconcile", note)
            .await;
    }

    pub(crate) async fn warning(&self, reason: &str, action: &str, note: String) {
        self.send(EventType::Warning, reason, action, note).await;
    }
}

/// Reconciles one project.
#[tracing::instrument(skip_all, fields(project = %project_key(project).map(|k| k.to_string()).unwrap_or_default()))]
pub async fn reconcile<A: KubeApi, B: Backends>(
    project: &ZoriProject,
    ctx: &Context<A, B>,
) -> Result<Next, ReconcileError> {
    let key = project_key(project)?;
    if project.metadata.deletion_timestamp.is_some() {
        return crate::reclaim::cleanup(project, &key, ctx).await;
    }
    let finalizers = project.metadata.finalizers.clone().unwrap_or_default();
    if !finalizers.iter().any(|f| f == FINALIZER) {
        ctx.api.add_finalizer(&key, &finalizers, FINALIZER).await?;
    }
    apply(project, &key, ctx).await
}

/// The tenant id a project holds, or why it may not hold the one in its status.
enum TenantId {
    Held(String),
    Refused(String),
}

/// Every ZoriProject the operator may list: cluster-wide, or only the project's own namespace
/// when the operator has no cluster-wide list rights (403). Any other failure (5xx, timeout)
/// is returned: the uniqueness check never silently shrinks.
async fn visible_projects<A: KubeApi>(api: &A, namespace: &str) -> Result<Vec<Value>, ApiError> {
    match api
        .list(crd::API_VERSION, crd::KIND, None, &BTreeMap::new())
        .await
    {
        Ok(all) => Ok(all),
        Err(ApiError::Forbidden { .. }) => {
            api.list(
                crd::API_VERSION,
                crd::KIND,
                Some(namespace),
                &BTreeMap::new(),
            )
            .await
        }
        Err(error) => Err(error),
    }
}

/// The id pinned in status, or a new one derived from namespace and name (unique by
/// construction). A pinned id must be derivable from the project's own namespace and name
/// (current or legacy form), and must not be held by another ZoriProject that may hold it.
async fn tenant_id<A: KubeApi>(
    project: &ZoriProject,
    key: &ObjectKey,
    api: &A,
) -> Result<TenantId, ReconcileError> {
    let namespace = key.namespace.clone().unwrap_or_default();
    let derived = derive_tenant_id(&namespace, &key.name);
    let pinned = project.status.as_ref().and_then(|s| s.tenant_id.clone());
    let id = match pinned {
        Some(id) if !may_hold(&namespace, &key.name, &id) => {
            return Ok(TenantId::Refused(format!(
                "status.tenantId {id:?} is not derived from {namespace}/{}: the operator did not \
                 write it, so it is refused and nothing is provisioned",
                key.name
            )));
        }
        // The current form holds a hash of the project's own namespace/name: nobody else's.
        Some(id) if id == derived => return Ok(TenantId::Held(id)),
        Some(id) => id,
        None => derived,
    };
    let uid = project.metadata.uid.as_deref();
    let holder = visible_projects(api, &namespace)
        .await?
        .into_iter()
        .find(|o| {
            let text = |p: &str| o.pointer(p).and_then(Value::as_str).unwrap_or_default();
            text("/metadata/uid") != uid.unwrap_or_default()
                && text("/status/tenantId") == id
                && may_hold(text("/metadata/namespace"), text("/metadata/name"), &id)
        });
    Ok(match holder {
        Some(other) => {
            let text = |p: &str| other.pointer(p).and_then(Value::as_str).unwrap_or_default();
            TenantId::Refused(format!(
                "tenant id {id} is held by ZoriProject {}/{}",
                text("/metadata/namespace"),
                text("/metadata/name")
            ))
        }
        None => TenantId::Held(id),
    })
}

fn pinned_names(names: &TenantNames, project: &str) -> PinnedNames {
    PinnedNames {
        stream: names.subjects.stream.clone(),
        subjects: names.subjects.wildcard.clone(),
        postgres_schema: names.postgres_schema.clone(),
        postgres_role: names.postgres_role.clone(),
        clickhouse_database: names.clickhouse_database.clone(),
        secret: secret_name(project),
    }
}

fn endpoints(config: &ProjectConfig, platform: &Platform) -> Endpoints {
    let public = ingress::public_url(config);
    let tracking = public.clone().unwrap_or_else(|| {
        service::cluster_url(config, Component::Ingest, &platform.cluster_domain)
    });
    let api = public
        .unwrap_or_else(|| service::cluster_url(config, Component::Api, &platform.cluster_domain));
    Endpoints {
        tracker_script: format!("{tracking}/zori.js"),
        stripe_webhook: format!("{api}/webhooks/stripe"),
        api: format!("{api}/api/v1"),
        tracking,
    }
}

/// Writes the status when it differs from the live one; sends Warning events for new failures.
pub(crate) async fn write_status<A: KubeApi>(
    api: &A,
    key: &ObjectKey,
    previous: &ZoriProjectStatus,
    mut next: ZoriProjectStatus,
    events: &Events<'_, A>,
    observations: &[Observation],
    action: &str,
) -> Result<(), ReconcileError> {
    for observation in observations {
        let failure = matches!(
            observation.reason,
            reasons::PROVISIONING_FAILED
                | reasons::APPLY_FAILED
                | reasons::STRIPE_SECRET_NOT_FOUND
                | reasons::INVALID_SPEC
                | reasons::RECLAIM_FAILED
                | reasons::TENANT_ID_REFUSED
                | reasons::NOT_OWNED
                | reasons::ISOLATION_REQUIRED
                | reasons::BUFFER_FILLING
        );
        if failure && is_new_failure(&previous.conditions, observation) {
            events
                .warning(
                    observation.reason,
                    action,
                    format!("{}: {}", observation.type_, observation.message),
                )
                .await;
        }
    }
    status::sort_conditions(&mut next.conditions);
    if next == *previous {
        return Ok(());
    }
    let value = serde_json::to_value(&next).map_err(|source| ReconcileError::Status {
        key: key.to_string(),
        source,
    })?;
    api.apply_status(key, &value).await?;
    Ok(())
}

async fn apply<A: KubeApi, B: Backends>(
    project: &ZoriProject,
    key: &ObjectKey,
    ctx: &Context<A, B>,
) -> Result<Next, ReconcileError> {
    let api = &ctx.api;
    let events = Events {
        api,
        key,
        uid: project.metadata.uid.clone(),
    };
    let previous = project.status.clone().unwrap_or_default();
    let now = status::timestamp((ctx.clock)());
    let generation = project.metadata.generation;
    let tenant_id = match tenant_id(project, key, api).await? {
        TenantId::Held(id) => id,
        TenantId::Refused(why) => {
            let mut next = previous.clone();
            next.observed_generation = generation;
            let ready = Observation::failed(types::READY, reasons::TENANT_ID_REFUSED, why);
            set_condition(&mut next.conditions, &ready, &now, generation);
            write_status(api, key, &previous, next, &events, &[ready], "Validate").await?;
            warn!("the tenant id is refused; waiting for a change");
            ctx.backoff.reset(&key.to_string());
            return Ok(Next::Invalid);
        }
    };
    // Objects without an owner marker are adopted only by a project that pinned this id
    // before (an upgrade from a version without markers), never by a newcomer.
    let owner = Owner {
        uid: project.metadata.uid.as_deref().unwrap_or_default(),
        adopt_unmarked: previous.tenant_id.as_deref() == Some(tenant_id.as_str()),
    };
    let names = TenantNames::for_tenant(&tenant_id);

    let mut next = previous.clone();
    next.observed_generation = generation;
    next.tenant_id = Some(tenant_id.clone());
    next.names = Some(pinned_names(&names, &key.name));

    // Validate.
    let config = match config::validate(project, &tenant_id, &ctx.platform) {
        Ok(config) => config,
        Err(invalid) => {
            let ready =
                Observation::failed(types::READY, reasons::INVALID_SPEC, invalid.to_string());
            set_condition(&mut next.conditions, &ready, &now, generation);
            write_status(api, key, &previous, next, &events, &[ready], "Validate").await?;
            info!(%invalid, "the spec is invalid; waiting for a change");
            ctx.backoff.reset(&key.to_string());
            return Ok(Next::Invalid);
        }
    };
    next.endpoints = Some(endpoints(&config, &ctx.platform));

    // Isolation: said in status always; with --require-isolation, a tenant that cannot be
    // isolated gets nothing but the conditions saying why.
    let isolated = isolation::observation(&ctx.platform);
    set_condition(&mut next.conditions, &isolated, &now, generation);
    if ctx.platform.require_isolation && !isolated.is_true() {
        let ready = Observation::failed(
            types::READY,
            reasons::ISOLATION_REQUIRED,
            format!(
                "the operator runs with --require-isolation and this tenant cannot be isolated; \
                 no Secret, backends or workloads are made ({})",
                isolated.message
            ),
        );
        set_condition(&mut next.conditions, &ready, &now, generation);
        write_status(api, key, &previous, next, &events, &[ready], "Isolate").await?;
        warn!("the tenant cannot be isolated and isolation is required; waiting for a change");
        ctx.backoff.reset(&key.to_string());
        return Ok(Next::Invalid);
    }

    // Dereference: the existing tenant Secret and the user's Stripe Secret.
    let secret_key = ObjectKey::new(
        "v1",
        "Secret",
        Some(&config.namespace),
        &secret_name(&config.name),
    );
    let existing_secret = read_secret(api, &secret_key).await?;
    let mut stripe_problem = None;
    let mut stripe_secret_hash = None;
    if let Some(reference) = &config.stripe_webhook_secret {
        let stripe_key = ObjectKey::new("v1", "Secret", Some(&config.namespace), &reference.name);
        match read_secret(api, &stripe_key).await? {
            None => {
                stripe_problem = Some(format!(
                    "Secret {} named in spec.stripe.webhookSecretRef does not exist",
                    reference.name
                ))
            }
            Some(data) => match data.get(&reference.key) {
                Some(value) if !value.trim().is_empty() => {
                    stripe_secret_hash = Some(secret::value_hash(value))
                }
                _ => {
                    stripe_problem = Some(format!(
                        "Secret {} has no key {} (spec.stripe.webhookSecretRef.key)",
                        reference.name, reference.key
                    ))
                }
            },
        }
    }

    // Build.
    let data = secret::secret_data(
        &config,
        &ctx.platform,
        existing_secret.as_ref(),
        ctx.random.as_ref(),
    );
    // A Secret this project had written before lost values: say so loudly.
    let had_secret = previous
        .conditions
        .iter()
        .any(|c| c.type_ == types::SECRET && c.status == status::ConditionStatus::True);
    if !data.generated.is_empty() {
        if had_secret {
            // Keys this version introduced are expected to be missing after an upgrade (or
            // when per-tenant Redis users are turned on): added quietly, not a lost value.
            let (added, lost): (Vec<&str>, Vec<&str>) = data
                .generated
                .iter()
                .partition(|k| secret::keys::ADDED_LATER.contains(k));
            if !lost.is_empty() {
                events
                    .warning(
                        "SecretRecreated",
                        "Reconcile",
                        format!(
                            "Secret {} lacked {}; new values were generated",
                            secret_key.name,
                            lost.join(", ")
                        ),
                    )
                    .await;
            }
            if !added.is_empty() {
                events
                    .normal(
                        "SecretKeysAdded",
                        format!(
                            "generated {} in Secret {}",
                            added.join(", "),
                            secret_key.name
                        ),
                    )
                    .await;
            }
        } else {
            events
                .normal(
                    "SecretCreated",
                    format!(
                        "generated {} in Secret {}",
                        data.generated.join(", "),
                        secret_key.name
                    ),
                )
                .await;
        }
    }
    let password = data
        .data
        .get(secret::keys::POSTGRES_PASSWORD)
        .cloned()
        .unwrap_or_default();
    let clickhouse_password = data
        .data
        .get(secret::keys::CLICKHOUSE_PASSWORD)
        .cloned()
        .unwrap_or_default();
    let redis_password = ctx
        .platform
        .redis_per_tenant
        .then(|| data.data.get(secret::keys::REDIS_PASSWORD).cloned())
        .flatten();
    let inputs = Dereferenced {
        secret_data: data.data,
        stripe_secret_hash,
    };
    let children = builders::desired_children(&config, &ctx.platform, &inputs)?;
    let mut transient = false;
    let mut observations = Vec::new();

    // Apply the Secret first: the role's password must be stored before the role uses it.
    let (secret_child, workloads) = children
        .split_first()
        .ok_or(ReconcileError::Malformed("children"))?;
    let secret_ok = match api.apply(&secret_child.object).await {
        Ok(_) => {
            observations.push(Observation::ok(
                types::SECRET,
                reasons::PROVISIONED,
                format!(
                    "Secret {} holds the tenant's keys and credentials",
                    secret_key.name
                ),
            ));
            true
        }
        Err(error) => {
            transient = true;
            observations.push(Observation::failed(
                types::SECRET,
                reasons::APPLY_FAILED,
                error.to_string(),
            ));
            false
        }
    };

    // Provision the backends (unless they answered for the same inputs recently).
    let provisioned = provision(
        ctx,
        &memo_key(project, key),
        &config,
        &names,
        Credentials {
            postgres: &password,
            clickhouse: &clickhouse_password,
            redis: redis_password.as_deref(),
            secret_ok,
            secret_name: &secret_key.name,
            owner,
        },
        &events,
    )
    .await;
    observations.extend(provisioned.observations.iter().cloned());
    let backends_failed = provisioned.failed;

    // Apply the workloads, their Services and budgets, and the Ingress.
    let mut failures: BTreeMap<&'static str, String> = BTreeMap::new();
    let mut deployments: BTreeMap<String, Deployment> = BTreeMap::new();
    for child in workloads {
        let condition = condition_of(&config, child);
        match api.apply(&child.object).await {
            Ok(applied) => {
                if child.key.kind == "Deployment" {
                    if let Ok(d) = serde_json::from_value::<Deployment>(applied) {
                        deployments.insert(child.key.name.clone(), d);
                    }
                }
            }
            Err(error) => {
                transient = true;
                failures
                    .entry(condition)
                    .or_insert_with(|| error.to_string());
            }
        }
    }
    for component in Component::ALL {
        let type_ = match component {
            Component::Ingest => types::INGEST,
            Component::Api => types::API,
        };
        let name = component.object_name(&config.name);
        let observation = if let Some(error) = failures.get(type_) {
            Observation::failed(type_, reasons::APPLY_FAILED, error.clone())
        } else if config.suspend {
            Observation::failed(
                type_,
                reasons::SUSPENDED,
                format!("Deployment {name} is scaled to zero"),
            )
        } else if let (Component::Api, Some(problem)) = (component, &stripe_problem) {
            transient = true;
            Observation::failed(type_, reasons::STRIPE_SECRET_NOT_FOUND, problem.clone())
        } else {
            match deployments.get(&name).map(rollout_state) {
                Some((true, message)) => Observation::ok(
                    type_,
                    reasons::AVAILABLE,
                    format!("Deployment {name}: {message}"),
                ),
                Some((false, message)) => Observation::failed(
                    type_,
                    reasons::PROGRESSING,
                    format!("Deployment {name}: {message}"),
                ),
                None => Observation::failed(
                    type_,
                    reasons::PROGRESSING,
                    format!("Deployment {name} was not read back"),
                ),
            }
        };
        observations.push(observation);
    }
    if let Some(ingress) = &config.ingress {
        observations.push(match failures.get(types::INGRESS) {
            Some(error) => {
                Observation::failed(types::INGRESS, reasons::APPLY_FAILED, error.clone())
            }
            None => Observation::ok(
                types::INGRESS,
                reasons::CONFIGURED,
                format!(
                    "Ingress {} routes {}",
                    crate::naming::ingress_name(&config.name),
                    ingress.host
                ),
            ),
        });
    }

    // Prune children that are no longer desired (only what this project owns).
    let desired_keys: BTreeSet<ObjectKey> = children.iter().map(|c| c.key.clone()).collect();
    if let Err(error) = prune(api, &config, &desired_keys).await {
        transient = true;
        events
            .warning("PruneFailed", "Prune", error.to_string())
            .await;
    }

    // Status.
    for observation in &observations {
        set_condition(&mut next.conditions, observation, &now, generation);
    }
    if config.ingress.is_none() {
        status::remove_condition(&mut next.conditions, types::INGRESS);
    }
    let ready = status::summarise(&observations, config.suspend);
    let was_ready = previous
        .conditions
        .iter()
        .any(|c| c.type_ == types::READY && c.status == status::ConditionStatus::True);
    if ready.is_true() && !was_ready {
        events
            .normal(reasons::RECONCILED, ready.message.clone())
            .await;
    }
    set_condition(&mut next.conditions, &ready, &now, generation);
    observations.push(ready.clone());
    // The stream buffer: read at every reconcile (not part of Ready: the tenant works until
    // the buffer is full, and the condition says so before).
    let (buffer_observation, fill_ratio) = stream_buffer(ctx, &config, &names).await;
    set_condition(&mut next.conditions, &buffer_observation, &now, generation);
    observations.push(buffer_observation);
    write_status(
        api,
        key,
        &previous,
        next,
        &events,
        &observations,
        "Reconcile",
    )
    .await?;

    let backoff_key = key.to_string();
    let now_time = (ctx.clock)();
    if transient || backends_failed {
        let reason = observations
            .iter()
            .map(|o| o.reason)
            .find(|r| {
                matches!(
                    *r,
                    reasons::PROVISIONING_FAILED
                        | reasons::NOT_OWNED
                        | reasons::APPLY_FAILED
                        | reasons::STRIPE_SECRET_NOT_FOUND
                )
            })
            .unwrap_or("PruneFailed");
        // A failure the backends reported earlier and nothing else: wait out its backoff
        // rather than counting this pass (triggered by something else) as another attempt.
        let after = match provisioned.retry_at {
            Some(due) if !transient => Duration::try_from(due - now_time)
                .unwrap_or(Duration::ZERO)
                .max(Duration::from_secs(1)),
            _ => ctx.backoff.next(&backoff_key),
        };
        // Secrets are not watched (no list/watch RBAC on them): a missing Stripe Secret is
        // looked for again at least every STRIPE_SECRET_RECHECK.
        let after = if reason == reasons::STRIPE_SECRET_NOT_FOUND {
            after.min(STRIPE_SECRET_RECHECK)
        } else {
            after
        };
        provisioned.remember(ctx, now_time + after);
        return Ok(Next::Retry { after, reason });
    }
    ctx.backoff.reset(&backoff_key);
    provisioned.remember(ctx, now_time + RESYNC);
    let after = if ready.is_true() || config.suspend {
        RESYNC
    } else {
        PROGRESS_CHECK
    };
    Ok(Next::Requeue(
        if fill_ratio.is_some_and(|r| r >= buffer::WATCH_CLOSELY_AT) {
            after.min(BUFFER_CHECK)
        } else {
            after
        },
    ))
}

/// Reads the tenant stream's fill: the `StreamBuffer` condition, and the gauge (with the
/// ratio, when the stream could be read).
async fn stream_buffer<A: KubeApi, B: Backends>(
    ctx: &Context<A, B>,
    config: &ProjectConfig,
    names: &TenantNames,
) -> (status::Observation, Option<f64>) {
    let stream = &names.subjects.stream;
    match ctx.backends.stream_fill(stream).await {
        Ok(Some(fill)) => {
            let ratio = fill.ratio();
            ctx.stream_fill
                .set(&config.namespace, &config.name, stream, ratio);
            (buffer::observation(stream, &fill), Some(ratio))
        }
        Ok(None) => (buffer::unknown(stream, "it does not exist"), None),
        Err(error) => (buffer::unknown(stream, &error.to_string()), None),
    }
}

/// The condition a child's failure is reported under.
fn condition_of(config: &ProjectConfig, child: &Desired) -> &'static str {
    if child.key.kind == "Ingress" {
        return types::INGRESS;
    }
    if child.key.name == Component::Api.object_name(&config.name) {
        types::API
    } else {
        types::INGEST
    }
}

async fn read_secret<A: KubeApi>(
    api: &A,
    key: &ObjectKey,
) -> Result<Option<BTreeMap<String, String>>, ReconcileError> {
    let Some(value) = api.get(key).await? else {
        return Ok(None);
    };
    let secret: Secret = serde_json::from_value(value).map_err(|e| ApiError::Request {
        verb: "read",
        key: key.to_string(),
        message: format!("not a Secret: {e}"),
    })?;
    Ok(Some(secret::decode(&secret)))
}

/// Kinds that may stop being desired while the project lives.
const PRUNABLE: [(&str, &str); 1] = [("networking.k8s.io/v1", "Ingress")];

async fn prune<A: KubeApi>(
    api: &A,
    config: &ProjectConfig,
    desired: &BTreeSet<ObjectKey>,
) -> Result<(), ApiError> {
    let selector = builders::ownership_selector(&config.name);
    for (api_version, kind) in PRUNABLE {
        for object in api
            .list(api_version, kind, Some(&config.namespace), &selector)
            .await?
        {
            // Keyed by the kind that was listed: list items carry no apiVersion/kind.
            let Some(key) = ObjectKey::listed(api_version, kind, &object) else {
                continue;
            };
            let owned = object
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| {
                    refs.iter()
                        .any(|r| r.get("uid").and_then(Value::as_str) == Some(config.uid.as_str()))
                });
            if owned && !desired.contains(&key) {
                api.delete(&key).await?;
                info!(object = %key, "deleted a child that is no longer desired");
            }
        }
    }
    Ok(())
}
