//! The HTTP server: routes, the per-request pipeline (origin → key → in-flight permit → body →
//! parse, counting batch elements → identity check → enrich → bots → rate limit → publish →
//! answer) and the life cycle of `run`.

use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use async_nats::jetstream;
use axum::{
    extract::{Request, State},
    http::{header, request::Parts, HeaderName, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::{any, get, post},
    serve::ListenerExt,
    Json, Router,
};
use bytes::Bytes;
use prometheus_client::registry::Registry;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::{
    net::TcpListener,
    sync::{Semaphore, SemaphorePermit},
};
use tracing::Instrument;
use zori_core::{
    enrich::{enrich_event, enrich_identify, EnrichContext, EnrichSettings, EventError},
    event::{IdentifyRecord, RawEvent, RawIdentify, StreamMessage, TrackedEvent},
    identity::IdentityProof,
};
use zori_service::{
    jetstream::{ensure_tenant_stream, JetStreamError},
    ops::{self, Readiness},
};

use crate::{
    batch::parse_batch,
    config::{BotTraffic, Settings},
    http::{
        classify_event_error, client_ip, event_rejection, parse_json, read_body, user_agent,
        KeyCheck, Origins, Rejection, UNAVAILABLE_RETRY_AFTER,
    },
    identity::IdentityCheck,
    metrics::{Metrics, Reason, Route},
    publish::{PublishError, Publisher},
    ratelimit::{Decision, RateLimitError, RateLimiter},
    tracker,
};

/// Why `run` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    JetStream(#[from] JetStreamError),
    #[error("failed to set up the rate limiter: {0}")]
    RateLimiter(#[from] RateLimitError),
    #[error("failed to serve http: {0}")]
    Serve(#[source] std::io::Error),
}

const HEALTH_TEXT: &str = "Zori - Ingestion Server";
const READINESS_TIMEOUT: Duration = Duration::from_secs(2);
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request waits for an in-flight body permit before it is answered 503.
const INFLIGHT_WAIT: Duration = Duration::from_millis(100);
/// Retry-After of that 503.
const OVERLOADED_RETRY_AFTER: u64 = 1;

struct AppState {
    origins: Origins,
    key: KeyCheck,
    enrich: EnrichSettings,
    publisher: Publisher,
    limiter: Option<RateLimiter>,
    metrics: Metrics,
    max_body_bytes: usize,
    max_batch_events: usize,
    bot_traffic: BotTraffic,
    client_ip_header: Option<HeaderName>,
    trusted_proxies: usize,
    /// One permit per request body being read, parsed and handled.
    inflight: Semaphore,
    max_inflight_bodies: usize,
    identity: IdentityCheck,
}

type Shared = Arc<AppState>;

/// Connects to NATS (creating the stream with `--create-stream`) and Redis, then serves on
/// `listener` until `shutdown` resolves; in-flight requests are completed (their events
/// acknowledged) before it returns.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let stream = settings.subjects.stream.clone();

    let client = zori_service::jetstream::connect_tenant(
        settings.nats_url.expose(),
        "zori-ingest",
        &settings.tenant_id,
        settings.nats_creds.as_ref().map(|c| c.expose()),
    )
    .await?;
    let js = jetstream::new(client.clone());
    if settings.create_stream {
        let outcome = ensure_tenant_stream(
            &js,
            &stream,
            vec![settings.subjects.wildcard.clone()],
            &settings.stream_limits,
        )
        .await?;
        tracing::info!(stream = %stream, ?outcome, "stream ready");
    } else {
        match tokio::time::timeout(READINESS_TIMEOUT, js.get_stream(&stream)).await {
            Ok(Ok(_)) => tracing::info!(stream = %stream, "stream found"),
            Ok(Err(error)) => tracing::warn!(
                stream = %stream,
                %error,
                "stream not available; events are answered 503 until it exists"
            ),
            Err(_) => tracing::warn!(
                stream = %stream,
                "NATS did not answer; events are answered 503 until it does"
            ),
        }
    }

    let (limiter, reconnect_task) = if settings.rate_limits.enabled() {
        let (limiter, task) = RateLimiter::connect(
            settings.redis_url.expose(),
            &settings.tenant_id,
            settings.email_salt.expose(),
            settings.rate_limits.clone(),
            metrics.clone(),
        )
        .await?;
        (Some(limiter), task)
    } else {
        tracing::info!("rate limits are off; redis is not used");
        (None, None)
    };

    let state = Arc::new(AppState {
        origins: Origins::new(&settings.allowed_origins),
        key: KeyCheck::new(settings.publishable_key.expose()),
        enrich: settings.enrich_settings(),
        publisher: Publisher::new(
            js.clone(),
            &settings.subjects.ingress,
            &stream,
            settings.publish_timeout,
            metrics.clone(),
        ),
        limiter,
        metrics,
        max_body_bytes: settings.max_body_bytes,
        max_batch_events: settings.max_batch_events,
        bot_traffic: settings.bot_traffic,
        client_ip_header: settings.client_ip_header.clone(),
        trusted_proxies: settings.trusted_proxies,
        inflight: Semaphore::new(settings.max_inflight_bodies),
        max_inflight_bodies: settings.max_inflight_bodies,
        identity: IdentityCheck::new(
            settings.identity_verification,
            settings.identity_secret.clone(),
            settings.api_token.as_ref(),
        ),
    });
    let readiness = Arc::new(IngestReadiness {
        client: client.clone(),
        js,
        stream: stream.clone(),
        state: state.clone(),
    });
    let app = router(state.clone()).merge(ops::router(Arc::new(registry), readiness));

    let address = listener.local_addr().ok();
    tracing::info!(
        address = ?address,
        tenant = %settings.tenant_id,
        stream = %stream,
        "zori-ingest listening"
    );
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "failed to set TCP_NODELAY");
        }
    });
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;

    if let Some(task) = reconnect_task {
        task.abort();
    }
    if client.connection_state() == async_nats::connection::State::Connected
        && tokio::time::timeout(FLUSH_TIMEOUT, client.flush())
            .await
            .is_err()
    {
        tracing::warn!("timed out flushing the NATS connection");
    }
    tracing::info!("zori-ingest stopped");
    served.map_err(Error::Serve)
}

fn router(state: Shared) -> Router {
    let versioned = tracker::versioned_path();
    Router::new()
        .route(
            "/ingest",
            post(ingest).options(preflight).fallback(method_not_allowed),
        )
        .route(
            "/identify",
            post(identify)
                .options(preflight)
                .fallback(method_not_allowed),
        )
        .route(
            "/batch",
            post(batch).options(preflight).fallback(method_not_allowed),
        )
        .route("/zori.js", get(tracker_latest).options(preflight))
        .route(&versioned, get(tracker_versioned).options(preflight))
        .route("/health", any(health))
        .fallback(not_found)
        .with_state(state)
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

async fn ingest(State(state): State<Shared>, request: Request) -> Response {
    let span = tracing::debug_span!("request", route = "ingest");
    respond(&state, Route::Ingest, request, ingest_inner)
        .instrument(span)
        .await
}

async fn identify(State(state): State<Shared>, request: Request) -> Response {
    let span = tracing::debug_span!("request", route = "identify");
    respond(&state, Route::Identify, request, identify_inner)
        .instrument(span)
        .await
}

async fn batch(State(state): State<Shared>, request: Request) -> Response {
    let span = tracing::debug_span!("request", route = "batch");
    respond(&state, Route::Batch, request, batch_inner)
        .instrument(span)
        .await
}

/// Runs a route's pipeline, turns a rejection into its JSON answer, adds CORS headers and
/// records the metrics.
async fn respond<'a, F, Fut>(
    state: &'a AppState,
    route: Route,
    request: Request,
    inner: F,
) -> Response
where
    F: FnOnce(&'a AppState, Request) -> Fut,
    Fut: Future<Output = Result<Response, Rejection>> + 'a,
{
    let origin = request.headers().get(header::ORIGIN).cloned();
    let mut response = match inner(state, request).await {
        Ok(response) => response,
        Err(rejection) => {
            state.metrics.rejected(rejection.reason, rejection.events);
            let (status, error) = (rejection.status.as_u16(), &rejection.message);
            if rejection.status.is_server_error() {
                tracing::warn!(status, %error, "request not accepted");
            } else {
                tracing::debug!(status, %error, "request rejected");
            }
            rejection.into_response()
        }
    };
    state.origins.decorate(origin, &mut response);
    state.metrics.request(route, response.status());
    response
}

/// A request that passed the checks every ingest route has in common, with its body.
struct Admitted<'a> {
    parts: Parts,
    body: Bytes,
    /// Held until the request is answered: the body and what it parses into count against
    /// `--max-inflight-bodies` until then.
    _permit: SemaphorePermit<'a>,
}

/// Checks origin and key, takes an in-flight body permit (503 when none frees up within
/// [`INFLIGHT_WAIT`]), reads and returns the body.
async fn admit(state: &AppState, request: Request) -> Result<Admitted<'_>, Rejection> {
    let (parts, body) = request.into_parts();
    state.origins.require(&parts.headers)?;
    state.key.require(&parts)?;
    let permit = match tokio::time::timeout(INFLIGHT_WAIT, state.inflight.acquire()).await {
        Ok(Ok(permit)) => permit,
        // Closed never happens (the semaphore lives as long as the state); treat it as full.
        Ok(Err(_)) | Err(_) => {
            return Err(Rejection::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Reason::Overloaded,
                format!(
                    "too many requests in flight (at most {} bodies at once); retry after {} \
                     second",
                    state.max_inflight_bodies, OVERLOADED_RETRY_AFTER
                ),
            )
            .retry_after(OVERLOADED_RETRY_AFTER))
        }
    };
    let body = read_body(&parts.headers, body, state.max_body_bytes).await?;
    state.metrics.body_bytes.inc_by(body.len() as u64);
    Ok(Admitted {
        parts,
        body,
        _permit: permit,
    })
}

fn context<'a>(state: &'a AppState, parts: &'a Parts) -> EnrichContext<'a> {
    EnrichContext {
        received_at: OffsetDateTime::now_utc(),
        client_ip: client_ip(
            parts,
            state.client_ip_header.as_ref(),
            state.trusted_proxies,
        ),
        user_agent: user_agent(&parts.headers),
        settings: &state.enrich,
    }
}

/// Enriches one event. A server-side sender (a request without `Origin`, such as a framework's
/// server SDK) relays the visitor's browser in the body's `user_agent`: that one is used then,
/// not the sender's own (zori-spec §9.32). From browsers the header always wins.
fn enrich_one(
    raw: RawEvent,
    ctx: &EnrichContext<'_>,
    server_side: bool,
) -> Result<TrackedEvent, EventError> {
    let relayed = raw
        .user_agent
        .as_deref()
        .is_some_and(|ua| !ua.trim().is_empty());
    if server_side && relayed {
        let ctx = EnrichContext {
            user_agent: None,
            ..ctx.clone()
        };
        enrich_event(raw, &ctx)
    } else {
        enrich_event(raw, ctx)
    }
}

fn is_server_side(parts: &Parts) -> bool {
    !parts.headers.contains_key(header::ORIGIN)
}

async fn ingest_inner(state: &AppState, request: Request) -> Result<Response, Rejection> {
    let Admitted { parts, body, .. } = &admit(state, request).await?;
    let raw: RawEvent = parse_json(body)?;
    let ctx = context(state, parts);
    let event =
        enrich_one(raw, &ctx, is_server_side(parts)).map_err(|error| event_rejection(&error))?;
    if event.client.is_bot && state.bot_traffic == BotTraffic::Drop {
        state.metrics.bot_events.inc();
        return Ok(text_reply("ACCEPTED", body.len()));
    }
    rate_limit(state, ctx.client_ip, 1, &[(&event.visitor_id, 1)], 1).await?;
    publish(state, &[StreamMessage::Event(event)]).await?;
    state.metrics.accepted_events(1);
    Ok(text_reply("ACCEPTED", body.len()))
}

async fn identify_inner(state: &AppState, request: Request) -> Result<Response, Rejection> {
    let Admitted { parts, body, .. } = &admit(state, request).await?;
    let sender = state.identity.sender(&parts.headers)?;
    let raw: RawIdentify = parse_json(body)?;
    let proof = state.identity.judge(&raw, sender);
    let ctx = context(state, parts);
    let mut record = enrich_identify(raw, &ctx).map_err(|error| event_rejection(&error))?;
    record.proof = proof.map_err(|unverified| unverified.rejection())?;
    rate_limit(state, ctx.client_ip, 1, &[(&record.visitor_id, 1)], 1).await?;
    let unverified = record.proof == IdentityProof::Unsigned;
    publish(state, &[StreamMessage::Identify(record)]).await?;
    state.metrics.accepted_identifies(1);
    if unverified {
        state.metrics.unverified_identifies.inc();
    }
    Ok(text_reply("IDENTIFIED", body.len()))
}

#[derive(Debug, Serialize)]
struct BatchReply {
    accepted: usize,
    rejected: Vec<RejectedElement>,
}

#[derive(Debug, Serialize)]
struct RejectedElement {
    index: usize,
    kind: &'static str,
    error: String,
}

async fn batch_inner(state: &AppState, request: Request) -> Result<Response, Rejection> {
    let Admitted { parts, body, .. } = &admit(state, request).await?;
    let sender = state.identity.sender(&parts.headers)?;
    let raw = parse_batch(body, state.max_batch_events)?;
    let total = raw.events.len() + raw.identifies.len();

    let ctx = context(state, parts);
    let server_side = is_server_side(parts);
    let mut messages: Vec<StreamMessage> = Vec::with_capacity(total);
    let mut rejected: Vec<RejectedElement> = Vec::new();
    let mut bots = 0usize;
    for (index, raw) in raw.events.into_iter().enumerate() {
        match enrich_one(raw, &ctx, server_side) {
            Ok(event) if event.client.is_bot && state.bot_traffic == BotTraffic::Drop => bots += 1,
            Ok(event) => messages.push(StreamMessage::Event(event)),
            Err(error) => {
                state.metrics.rejected(classify_event_error(&error).1, 1);
                rejected.push(RejectedElement {
                    index,
                    kind: "event",
                    error: error.to_string(),
                });
            }
        }
    }
    let events = messages.len();
    for (index, raw) in raw.identifies.into_iter().enumerate() {
        let proof = state.identity.judge(&raw, sender);
        let outcome = enrich_identify(raw, &ctx)
            .map_err(|error| (classify_event_error(&error).1, error.to_string()))
            .and_then(|record| match proof {
                Ok(proof) => Ok(IdentifyRecord { proof, ..record }),
                Err(unverified) => Err((Reason::Unverified, unverified.to_string())),
            });
        match outcome {
            Ok(record) => messages.push(StreamMessage::Identify(record)),
            Err((reason, error)) => {
                state.metrics.rejected(reason, 1);
                rejected.push(RejectedElement {
                    index,
                    kind: "identify",
                    error,
                });
            }
        }
    }
    if bots > 0 {
        state.metrics.bot_events.inc_by(bots as u64);
    }

    if !messages.is_empty() {
        let visitors = visitor_weights(&messages);
        rate_limit(
            state,
            ctx.client_ip,
            total as u64,
            &visitors,
            messages.len(),
        )
        .await?;
        publish(state, &messages).await?;
        let unverified = messages
            .iter()
            .filter(
                |m| matches!(m, StreamMessage::Identify(r) if r.proof == IdentityProof::Unsigned),
            )
            .count();
        state
            .metrics
            .unverified_identifies
            .inc_by(unverified as u64);
        state.metrics.accepted_events(events as u64);
        state
            .metrics
            .accepted_identifies((messages.len() - events) as u64);
    }
    Ok(Json(BatchReply {
        accepted: messages.len() + bots,
        rejected,
    })
    .into_response())
}

/// Events per visitor id in a batch (usually one visitor).
fn visitor_weights(messages: &[StreamMessage]) -> Vec<(&str, u64)> {
    let mut weights: Vec<(&str, u64)> = Vec::with_capacity(1);
    for message in messages {
        let visitor = match message {
            StreamMessage::Event(event) => event.visitor_id.as_str(),
            StreamMessage::Identify(record) => record.visitor_id.as_str(),
        };
        match weights.iter_mut().find(|(v, _)| *v == visitor) {
            Some((_, weight)) => *weight += 1,
            None => weights.push((visitor, 1)),
        }
    }
    weights
}

async fn rate_limit(
    state: &AppState,
    ip: Option<IpAddr>,
    ip_weight: u64,
    visitors: &[(&str, u64)],
    events: usize,
) -> Result<(), Rejection> {
    let Some(limiter) = &state.limiter else {
        return Ok(());
    };
    match limiter.check(ip, ip_weight, visitors).await {
        Decision::Allow => Ok(()),
        Decision::Limit { retry_after } => Err(Rejection::new(
            StatusCode::TOO_MANY_REQUESTS,
            Reason::RateLimited,
            format!(
                "rate limit exceeded: too many events from this visitor or address; retry after {retry_after} seconds"
            ),
        )
        .retry_after(retry_after)
        .events(events)),
        Decision::Unavailable => Err(Rejection::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Reason::Unavailable,
            format!(
                "rate limiter unavailable (redis does not answer) and it fails closed; retry after {UNAVAILABLE_RETRY_AFTER} seconds"
            ),
        )
        .retry_after(UNAVAILABLE_RETRY_AFTER)
        .events(events)),
    }
}

async fn publish(state: &AppState, messages: &[StreamMessage]) -> Result<(), Rejection> {
    let Err(error) = state.publisher.publish_all(messages).await else {
        return Ok(());
    };
    let what = if messages.len() == 1 {
        "event was not accepted"
    } else {
        "events were not accepted"
    };
    let rejection = match error {
        PublishError::Encode { .. } => Rejection::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Reason::Invalid,
            format!("{what}: {error}"),
        ),
        _ => Rejection::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Reason::Unavailable,
            format!("{what}: {error}; retry after {UNAVAILABLE_RETRY_AFTER} seconds"),
        )
        .retry_after(UNAVAILABLE_RETRY_AFTER),
    };
    Err(rejection.events(messages.len()))
}

fn text_reply(word: &'static str, body_len: usize) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        format!("{word} {body_len}"),
    )
        .into_response()
}

async fn preflight(State(state): State<Shared>, request: Request) -> Response {
    let response = state.origins.preflight(request.headers());
    state.metrics.request(Route::Preflight, response.status());
    response
}

async fn tracker_latest(State(state): State<Shared>, request: Request) -> Response {
    let response = tracker::serve(request.headers(), false);
    state.metrics.request(Route::Tracker, response.status());
    response
}

async fn tracker_versioned(State(state): State<Shared>, request: Request) -> Response {
    let response = tracker::serve(request.headers(), true);
    state.metrics.request(Route::Tracker, response.status());
    response
}

async fn health(State(state): State<Shared>) -> Response {
    state.metrics.request(Route::Health, StatusCode::OK);
    HEALTH_TEXT.into_response()
}

async fn method_not_allowed(State(state): State<Shared>, request: Request) -> Response {
    let rejection = Rejection::new(
        StatusCode::METHOD_NOT_ALLOWED,
        Reason::Invalid,
        format!("method {} is not allowed here; use POST", request.method()),
    );
    let mut response = rejection.into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
    state.metrics.request(Route::Other, response.status());
    response
}

async fn not_found(State(state): State<Shared>, request: Request) -> Response {
    if request.method() == Method::OPTIONS {
        return preflight(State(state), request).await;
    }
    let response = Rejection::new(
        StatusCode::NOT_FOUND,
        Reason::Invalid,
        format!("no route for {} {}", request.method(), request.uri().path()),
    )
    .into_response();
    state.metrics.request(Route::Other, response.status());
    response
}

// ---------------------------------------------------------------------------------------------
// Readiness
// ---------------------------------------------------------------------------------------------

struct IngestReadiness {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: String,
    state: Shared,
}

impl Readiness for IngestReadiness {
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            if self.client.connection_state() != async_nats::connection::State::Connected {
                return Err("nats: not connected".to_owned());
            }
            match tokio::time::timeout(READINESS_TIMEOUT, self.js.get_stream(&self.stream)).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return Err(format!("nats: stream {}: {error}", self.stream)),
                Err(_) => {
                    return Err(format!(
                        "nats: stream {} did not answer within {READINESS_TIMEOUT:?}",
                        self.stream
                    ))
                }
            }
            if let Some(limiter) = self.state.limiter.as_ref().filter(|l| l.fails_closed()) {
                limiter
                    .ping()
                    .await
                    .map_err(|error| format!("redis: {error}"))?;
            }
            Ok(())
        })
    }
}
