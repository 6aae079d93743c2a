//! `/healthz`, `/readyz` and `/metrics`, the same on every binary.

use std::{future::Future, pin::Pin, sync::Arc};

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use prometheus_client::{encoding::text::encode, registry::Registry};

/// Answers whether the backends a binary needs are reachable right now.
pub trait Readiness: Send + Sync + 'static {
    /// `Ok(())` when ready, else the name of the first backend that does not answer and why.
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

#[derive(Clone)]
struct OpsState {
    registry: Arc<Registry>,
    readiness: Arc<dyn Readiness>,
}

/// Routes for liveness, readiness and Prometheus metrics, to be merged into a binary's router.
pub fn router(registry: Arc<Registry>, readiness: Arc<dyn Readiness>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(OpsState {
            registry,
            readiness,
        })
}

async fn readyz(State(state): State<OpsState>) -> Response {
    match state.readiness.check().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}"),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<OpsState>) -> Response {
    let mut body = String::new();
    match encode(&mut body, &state.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to encode metrics: {error}"),
        )
            .into_response(),
    }
}
