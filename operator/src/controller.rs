//! `zori-operator run`: connects to Kubernetes and the backends, serves `/metrics`, `/healthz`
//! and `/readyz`, waits for the leader Lease, and runs one kube-runtime controller per watched
//! namespace (or one for all) until SIGTERM or the Lease is lost.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{future::join_all, StreamExt};
use k8s_openapi::api::{
    apps::v1::Deployment, core::v1::Service, networking::v1::Ingress,
    policy::v1::PodDisruptionBudget,
};
use kube::{
    runtime::{
        controller::{self, Action},
        watcher, Controller,
    },
    Api, Client, Resource,
};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{debug, error, info, warn, Level};

use crate::{
    api::client::ClientApi,
    backends::{
        clickhouse::ClickHouseBackend, nats::NatsBackend, postgres::PostgresBackend,
        redis::RedisBackend, BackendError, Backends, LiveBackends,
    },
    buffer::FillGauge,
    cli::{ClickHouseUserMode, RunSettings},
    config::ClickHouseUsers,
    crd::ZoriProject,
    leader::{self, Elector, LeaseSettings},
    metrics::{Metrics, Started},
    reconcile::{self, Context, Next, ReconcileError},
};

/// What the controllers share.
pub struct Shared<B = LiveBackends> {
    pub ctx: Context<ClientApi, B>,
    pub metrics: Metrics,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("failed to connect to Kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("failed to serve metrics on {addr}: {source}")]
    Metrics {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Leader(#[from] leader::LeaderError),
    #[error("lost the leader Lease ({0}); exiting so that a fresh replica takes over")]
    LeaseLost(#[from] leader::LeaseLost),
}

async fn reconcile_one<B: Backends>(
    project: Arc<ZoriProject>,
    shared: Arc<Shared<B>>,
) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let result = reconcile::reconcile(&project, &shared.ctx).await;
    let failure = match &result {
        Ok(next) => next.failure(),
        Err(error) => Some(error.metric_label()),
    };
    shared.metrics.observe(started.elapsed(), failure);
    result.map(|next| match next {
        Next::Requeue(after) | Next::Retry { after, .. } => Action::requeue(after),
        Next::Invalid | Next::AwaitChange => Action::await_change(),
    })
}

fn error_policy<B: Backends>(
    project: Arc<ZoriProject>,
    error: &ReconcileError,
    shared: Arc<Shared<B>>,
) -> Action {
    let key = format!(
        "{} {}/{}",
        crate::crd::KIND,
        project.metadata.namespace.as_deref().unwrap_or_default(),
        project.metadata.name.as_deref().unwrap_or_default()
    );
    let delay = shared.ctx.backoff.next(&key);
    warn!(%error, project = %key, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Label selector of the objects the operator made.
const MANAGED_BY: &str = "app.kubernetes.io/managed-by=zori-operator";

/// At most this many projects reconcile at once (each one at most once at a time).
pub const MAX_CONCURRENT_RECONCILES: u16 = 4;

/// How loud an error of the controller stream is. Failing watches (403 for missing RBAC,
/// 404 for a missing CRD) stop all reconciling and are shown by default; failed reconciles
/// were already reported by the error policy.
pub fn controller_error_level(error: &controller::Error<ReconcileError, watcher::Error>) -> Level {
    match error {
        controller::Error::QueueError(_) => Level::WARN,
        controller::Error::RunnerError(_) => Level::ERROR,
        controller::Error::ReconcilerFailed(..) | controller::Error::ObjectNotFound(_) => {
            Level::DEBUG
        }
    }
}

fn log_controller_error(error: &controller::Error<ReconcileError, watcher::Error>) {
    let source = std::error::Error::source(error)
        .map(ToString::to_string)
        .unwrap_or_default();
    match controller_error_level(error) {
        Level::ERROR => error!(%error, %source, "the controller failed"),
        Level::WARN => warn!(%error, %source, "failed to watch the cluster; retrying"),
        _ => debug!(%error, %source, "controller event"),
    }
}

/// Connects the backends and settles how ClickHouse users are made.
async fn backends(settings: &mut RunSettings) -> Result<LiveBackends, RunError> {
    let nats = match (&settings.nats_auth, &settings.platform.nats_accounts) {
        (Some(auth), Some(keys)) => NatsBackend::connect_accounts(
            &settings.nats_url,
            &auth.system_creds,
            &auth.signing_key,
            keys.clone(),
        )
        .await
        .map_err(BackendError::from)?,
        _ => NatsBackend::connect(&settings.nats_url)
            .await
            .map_err(BackendError::from)?,
    };
    let postgres =
        PostgresBackend::connect_lazy(&settings.postgres_admin_url).map_err(BackendError::from)?;
    let clickhouse = ClickHouseBackend::new(
        &settings.clickhouse_url,
        settings.clickhouse_admin_user.clone(),
        settings.clickhouse_admin_password.clone(),
    )
    .map_err(BackendError::from)?
    .on(settings.platform.clickhouse_topology.clone());
    if settings.clickhouse_user_mode == ClickHouseUserMode::Auto {
        match clickhouse.supports_sql_users().await {
            Ok(true) => settings.platform.clickhouse_users = ClickHouseUsers::PerTenant,
            Ok(false) => info!("ClickHouse has no SQL users; tenants use the shared user"),
            Err(error) => {
                // Fail closed: never fall back to a user every tenant shares.
                warn!(%error, "failed to ask ClickHouse for its version; tenants get per-tenant users anyway");
                settings.platform.clickhouse_users = ClickHouseUsers::PerTenant;
                settings.platform.clickhouse_probe_error = Some(error.to_string());
            }
        }
    }
    let redis = settings
        .redis_admin_url
        .as_deref()
        .map(RedisBackend::new)
        .transpose()
        .map_err(BackendError::from)?;
    Ok(LiveBackends {
        nats,
        postgres,
        clickhouse,
        redis,
    })
}

async fn serve_metrics(
    settings: &RunSettings,
    registry: Registry,
    started: Started,
) -> Result<(), RunError> {
    let addr = settings.metrics_listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Metrics {
            addr: addr.to_string(),
            source,
        })?;
    let router = zori_service::ops::router(Arc::new(registry), Arc::new(started));
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            error!(%error, "the metrics server stopped");
        }
    });
    info!(%addr, "serving /metrics, /healthz and /readyz");
    Ok(())
}

/// The Api of a namespaced kind in one namespace, or in all.
fn scoped<K>(client: &Client, scope: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// One kube-runtime controller over the ZoriProjects of `scope` (all namespaces with `None`),
/// triggered by them, their children and the Secrets, until `shutdown` completes.
pub fn controller<B: Backends>(
    client: &Client,
    scope: Option<String>,
    shared: Arc<Shared<B>>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> + Send {
    let children = watcher::Config::default().labels(MANAGED_BY);
    let controller = Controller::new(
        scoped::<ZoriProject>(client, &scope),
        watcher::Config::default(),
    );
    controller
        .with_config(controller::Config::default().concurrency(MAX_CONCURRENT_RECONCILES))
        .owns(scoped::<Deployment>(client, &scope), children.clone())
        .owns(scoped::<Service>(client, &scope), children.clone())
        .owns(
            scoped::<PodDisruptionBudget>(client, &scope),
            children.clone(),
        )
        // Secrets are not watched: that needs list/watch on every Secret of the namespaces,
        // and the operator reads only its own and the Stripe Secret a project names (get).
        // A missing Stripe Secret is retried with backoff; a changed one, or a tampered
        // credentials Secret, is picked up at the resync (5 min).
        .owns(scoped::<Ingress>(client, &scope), children)
        .graceful_shutdown_on(shutdown)
        .run(reconcile_one, error_policy, shared)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => debug!(project = %object.name, "reconciled"),
                Err(error) => log_controller_error(&error),
            }
        })
}

/// How long a request may wait for the API server's answer. kube 4 dropped the client's
/// default (295 s) and times out only watches; without one, a request the API server never
/// answers would hold its reconcile, and that project, forever. Longer than the API server's
/// own request timeout (60 s) and than a watch's (290 s), as kube's default was.
pub const READ_TIMEOUT: Duration = Duration::from_secs(295);

/// The in-cluster (or kubeconfig) client, with [`READ_TIMEOUT`] counted from each request.
async fn kube_client() -> Result<Client, kube::Error> {
    let mut config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    config.read_timeout = Some(READ_TIMEOUT);
    config.reset_reader_on_write = true;
    Client::try_from(config)
}

/// Runs the operator until SIGTERM.
pub async fn run(mut settings: RunSettings) -> Result<(), RunError> {
    let client = kube_client().await?;
    let api = ClientApi::new(client.clone(), Some(settings.identity.clone()));
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let stream_fill = FillGauge::default();
    stream_fill.register(&mut registry);
    let started = Started::default();
    serve_metrics(&settings, registry, started.clone()).await?;

    let backends = backends(&mut settings).await?;
    let mut ctx = Context::new(api.clone(), backends, settings.platform.clone());
    ctx.stream_fill = stream_fill;
    let shared = Arc::new(Shared { ctx, metrics });
    started.set();

    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        zori_service::shutdown::signal().await;
        let _ = stop.send(true);
    });

    let lease = LeaseSettings::new(
        &settings.lease_namespace,
        &settings.lease_name,
        &settings.identity,
    );
    let elector = Elector::new(api.clone(), lease);
    lead(&client, elector, &settings.namespaces, shared, stopped).await
}

/// One replica's life after start-up: waits for the leader Lease, then runs one controller per
/// namespace of `namespaces` (one for all when empty) while renewing it, until `stopped` turns
/// true (the Lease is then released) or the Lease is lost (the controllers are dropped first:
/// no reconcile runs, no request is in flight, before another replica can take over).
pub async fn lead<B: Backends>(
    client: &Client,
    mut elector: Elector<ClientApi>,
    namespaces: &[String],
    shared: Arc<Shared<B>>,
    mut stopped: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let identity = elector.settings().identity.clone();
    tokio::select! {
        () = elector.acquire() => {}
        _ = stopped.changed() => return Ok(()),
    }
    shared.metrics.set_leader(true);
    info!(%identity, "leading; starting the controllers");

    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().cloned().map(Some).collect()
    };
    let controllers = scopes.into_iter().map(|scope| {
        let mut shutdown = stopped.clone();
        controller(client, scope, shared.clone(), async move {
            let _ = shutdown.changed().await;
        })
    });
    let outcome = elector.lead(join_all(controllers)).await;
    shared.metrics.set_leader(false);
    match outcome {
        Ok(_) => {
            if let Err(error) = elector.release().await {
                warn!(%error, "failed to release the leader Lease");
            }
            info!("stopped");
            Ok(())
        }
        // The controllers were dropped (no reconcile runs any more) before the Lease can
        // expire for another replica; exit so that a fresh replica takes part again.
        Err(lost) => Err(RunError::LeaseLost(lost)),
    }
}
