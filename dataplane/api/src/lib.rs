//! `zori-api`: consumes a tenant's event stream into ClickHouse ("what they did") and
//! PostgreSQL ("who they are"), receives Stripe webhooks, and serves the attribution reports.
//!
//! ```text
//! stream ZORI_<ID> ──pull consumer──▶ batch ──▶ ClickHouse events (one insert)
//!                                          └──▶ PostgreSQL visitors, touches, visitor_days,
//!                                               users, identities (one transaction) ──▶ ack
//! Stripe ──POST /webhooks/stripe──▶ PostgreSQL payments
//! Stripe GET /v1/events ◀──POST /api/v1/stripe/backfill (bearer token), same ledger
//! GET /api/v1/… (bearer token or session cookie) ◀── reports over both stores
//! GET / ◀── the dashboard (embedded static page rendering those reports)
//! ```
//!
//! [`run`] wires it together; `main.rs` only parses [`Config`], sets up logging and calls it.

pub mod batch;
pub mod ch;
pub mod config;
pub mod consumer;
pub mod dashboard;
pub mod identity;
pub mod known;
pub mod metrics;
pub mod pg;
pub mod reconcile;
pub mod reports;
pub mod rollup;
pub mod stripe;
pub mod wire;

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use axum::Router;
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use tokio::{net::TcpListener, sync::watch};
use tower_http::{timeout::TimeoutLayer, trace::TraceLayer};
use zori_core::event::Subjects;
use zori_service::ops::{self, Readiness};

pub use config::{Config, ConfigError, Settings};

use crate::{
    ch::{ChError, EventStore},
    consumer::{Backends, Consumer, ConsumerError},
    metrics::ApiMetrics,
    pg::PgError,
};

/// Longest time one HTTP request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error(transparent)]
    ClickHouse(#[from] ChError),
    #[error(transparent)]
    JetStream(#[from] zori_service::jetstream::JetStreamError),
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    #[error("{0} (--stripe-api-key is set)")]
    StripeApi(String),
    #[error("failed to serve HTTP: {0}")]
    Serve(#[source] std::io::Error),
    #[error("the stream consumer stopped unexpectedly: {0}")]
    ConsumerTask(#[source] tokio::task::JoinError),
}

/// `/readyz`: ready only when PostgreSQL, ClickHouse and NATS all answer.
struct BackendReadiness {
    pool: PgPool,
    events: EventStore,
    nats: async_nats::Client,
}

impl Readiness for BackendReadiness {
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            let timeout = Duration::from_secs(2);
            pg::ping(&self.pool, timeout).await?;
            self.events.ping(timeout).await?;
            match self.nats.connection_state() {
                async_nats::connection::State::Connected => Ok(()),
                state => Err(format!("nats: {state}")),
            }
        })
    }
}

/// Runs the consumer and the HTTP server until `shutdown` resolves; then stops accepting
/// requests, stops fetching, finishes, commits and acknowledges the batch in flight, and
/// returns.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let subjects = Subjects::for_tenant(&settings.tenant_id);
    tracing::info!(
        tenant = %settings.tenant_id,
        schema = %settings.postgres_schema,
        database = %settings.clickhouse_database,
        stream = %subjects.stream,
        "starting zori-api"
    );

    let stripe_api = settings
        .stripe_api_key
        .clone()
        .map(|key| stripe::StripeApi::new(&settings.stripe_api_url, key))
        .transpose()
        .map_err(Error::StripeApi)?;
    let pool = pg::open(&settings).await?;
    tracing::info!(schema = %settings.postgres_schema, "PostgreSQL schema migrated");
    let events = EventStore::open(&settings).await?;
    tracing::info!(database = %settings.clickhouse_database, "ClickHouse database migrated");
    let nats = zori_service::jetstream::connect_tenant(
        &settings.nats_url,
        "zori-api",
        &settings.tenant_id,
        settings.nats_creds.as_ref().map(|c| c.expose()),
    )
    .await?;
    let js = async_nats::jetstream::new(nats.clone());
    let pull = consumer::setup(&js, &settings).await?;
    tracing::info!(consumer = %settings.consumer_name, subject = %subjects.ingress, "consumer ready");

    let mut registry = Registry::default();
    let metrics = ApiMetrics::register(&mut registry);
    let stripe_metrics = stripe::StripeMetrics::register(&mut registry);
    let registry = Arc::new(registry);

    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let signal_tx = stop_tx.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: no new requests, finishing the batch in flight");
        signal_tx.send_replace(true);
    });

    let rollup_lock = events.has_rollups().then(|| {
        reconcile::RollupLock::new(pool.clone(), events.database(), settings.rollup_audit_every)
    });
    let reconcile_task = tokio::spawn(reconcile::run(
        rollup_lock.clone(),
        events.clone(),
        pool.clone(),
        settings.reconcile_interval,
        stop_rx.clone(),
    ));
    let consumer = Consumer {
        client: nats.clone(),
        js,
        consumer: pull,
        subjects,
        backends: Backends {
            events: events.clone(),
            pool: pool.clone(),
            known: Arc::new(known::Known::default()),
            rollup_lock: rollup_lock.clone(),
        },
        metrics: metrics.clone(),
        batch_size: settings.batch_size,
        batch_wait: settings.batch_wait,
        batches_in_flight: settings.batches_in_flight,
        ack_wait: settings.ack_wait,
        max_deliver: settings.max_deliver,
    };
    let consumer_task = tokio::spawn(consumer.run(stop_rx.clone()));

    let readiness = Arc::new(BackendReadiness {
        pool: pool.clone(),
        events: events.clone(),
        nats: nats.clone(),
    });
    let stripe_state = stripe::StripeState {
        pool: pool.clone(),
        tenant_id: settings.tenant_id.clone(),
        secrets: settings
            .stripe_webhook_secrets
            .iter()
            .map(|s| s.expose().to_owned())
            .collect(),
        tolerance: settings.stripe_tolerance,
        lookback: settings.attribution_lookback,
        email_salt: settings.email_salt.expose().to_owned(),
        metrics: stripe_metrics,
    };
    let auth = dashboard::Auth::new(&settings.api_token);
    let stripe_admin = stripe::AdminState {
        stripe: stripe_state.clone(),
        auth: auth.clone(),
        api: stripe_api,
    };
    let reports_state =
        reports::ReportsState::new(pool.clone(), events.clone(), auth.clone(), metrics);
    let app = Router::new()
        .merge(dashboard::router(auth))
        .merge(reports::router(reports_state))
        .merge(stripe::router(stripe_state))
        .merge(stripe::admin_router(stripe_admin))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .layer(TraceLayer::new_for_http())
        .merge(ops::router(registry, readiness));

    match listener.local_addr() {
        Ok(addr) => tracing::info!(%addr, "listening"),
        Err(error) => tracing::warn!(%error, "listening on an unknown address"),
    }
    let mut server_stop = stop_rx.clone();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = server_stop.wait_for(|stop| *stop).await;
        })
        .await;
    if let Err(error) = &served {
        tracing::error!(%error, "HTTP server failed; stopping the consumer");
    }
    // The server returns on shutdown (or failure); make sure the consumer stops as well.
    stop_tx.send_replace(true);
    let consumed = consumer_task.await;
    reconcile_task.abort();
    nats.flush().await.ok();
    pool.close().await;
    served.map_err(Error::Serve)?;
    consumed.map_err(Error::ConsumerTask)?;
    tracing::info!("stopped");
    Ok(())
}
