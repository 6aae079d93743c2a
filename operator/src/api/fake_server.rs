//! [`FakeApi`] served over HTTP, as a tower service a real `kube::Client` talks to (behind the
//! `testing` feature): the real `ClientApi` and the real kube-runtime `Controller` (watches,
//! owner triggers, error policy) run against it in tests.
//!
//! It speaks the API server's REST dialect for the kinds the operator uses: list (items
//! without TypeMeta, a list resourceVersion), watch (newline-delimited events from a
//! resourceVersion on, no gap after a list), get, server-side apply (`apply-patch+yaml`, also on
//! `/status`), finalizer JSON patches with `test`, create, replace, delete, and Events. Errors
//! are `Status` bodies with the API server's codes and reasons; the faults injected into the
//! [`FakeApi`] handle apply (a watch takes those of `List`).
//!
//! Clients made with [`logged_client`] record every request in a [`RequestLog`]: who sent it,
//! when it arrived, and when it was answered or abandoned by the client (a watch: when its
//! stream ended), so tests can see what each operator replica was doing at any moment.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use futures::{stream, StreamExt};
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use kube::client::Body;
use serde_json::{json, Value};

use super::{
    fake::{Change, FakeApi, Verb},
    ApiError, EventRecord, EventType, KubeApi, ObjectKey,
};
use crate::builders::FIELD_MANAGER;

/// The response body: whole, or a watch stream.
pub type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

/// A `kube::Client` whose API server is `api`.
pub fn client(api: &FakeApi) -> kube::Client {
    kube::Client::new(FakeApiServer::new(api.clone()), "default")
}

/// A `kube::Client` whose API server is `api`, recording every request it sends into `log`
/// under the name `who` (one replica of the operator).
pub fn logged_client(api: &FakeApi, log: &RequestLog, who: &str) -> kube::Client {
    let server = FakeApiServer {
        api: api.clone(),
        log: Some((log.clone(), who.to_owned())),
    };
    kube::Client::new(server, "default")
}

/// How a request recorded in a [`RequestLog`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still waiting for its answer, or a watch still streaming.
    Open,
    /// Answered with this status code (a watch: its stream ended).
    Answered(u16),
    /// The client gave up on it before its answer was complete (dropped the request or
    /// stopped reading the watch).
    Abandoned,
}

/// One request that reached the double.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// Who sent it (the name given to [`logged_client`]).
    pub who: String,
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    pub watch: bool,
    pub arrived: tokio::time::Instant,
    /// When its answer was complete or it was abandoned; `None` while open.
    pub ended: Option<tokio::time::Instant>,
    pub outcome: Outcome,
}

impl LoggedRequest {
    /// Whether it was open at `at`: arrived at or before, and not ended before.
    pub fn open_at(&self, at: tokio::time::Instant) -> bool {
        self.arrived <= at && self.ended.is_none_or(|ended| ended > at)
    }
}

/// Every request that reached the double through the clients of [`logged_client`], in order of
/// arrival, with when it ended.
#[derive(Debug, Clone, Default)]
pub struct RequestLog(Arc<Mutex<Vec<LoggedRequest>>>);

impl RequestLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// The requests so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records a request's arrival; the guard records its end. Also says whether it is a watch.
    fn open(&self, who: &str, parts: &http::request::Parts) -> (Ended, bool) {
        let watch = parts
            .uri
            .query()
            .is_some_and(|q| q.split('&').any(|pair| pair == "watch=true"));
        let mut requests = self.0.lock().unwrap_or_else(|e| e.into_inner());
        requests.push(LoggedRequest {
            who: who.to_owned(),
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            watch,
            arrived: tokio::time::Instant::now(),
            ended: None,
            outcome: Outcome::Open,
        });
        let ended = Ended {
            log: self.clone(),
            index: requests.len() - 1,
            outcome: Outcome::Abandoned,
        };
        (ended, watch)
    }
}

/// Marks a logged request ended when dropped: with the answer's code once it was given out
/// whole (or the watch stream ran dry), as abandoned when the client dropped it before.
struct Ended {
    log: RequestLog,
    index: usize,
    outcome: Outcome,
}

impl Ended {
    /// The answer was given out whole: the request ends now, with `code`.
    fn answered(mut self, code: u16) {
        self.outcome = Outcome::Answered(code);
    }
}

impl Drop for Ended {
    fn drop(&mut self) {
        let mut requests = self.log.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(request) = requests.get_mut(self.index) {
            request.ended = Some(tokio::time::Instant::now());
            request.outcome = self.outcome;
        }
    }
}

/// The tower service answering for a [`FakeApi`].
#[derive(Clone)]
pub struct FakeApiServer {
    api: FakeApi,
    /// Where requests are recorded, and under which name.
    log: Option<(RequestLog, String)>,
}

impl FakeApiServer {
    pub fn new(api: FakeApi) -> Self {
        Self { api, log: None }
    }
}

impl tower::Service<Request<Body>> for FakeApiServer {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let api = self.api.clone();
        let log = self.log.clone();
        Box::pin(async move {
            let Some((log, who)) = log else {
                return Ok(serve(&api, request).await);
            };
            let (parts, body) = request.into_parts();
            let (ended, watch) = log.open(&who, &parts);
            let response = serve(&api, Request::from_parts(parts, body)).await;
            let code = response.status().as_u16();
            if !watch || code != 200 {
                ended.answered(code);
                return Ok(response);
            }
            // A watch stays open while its stream is read: it ends when the stream does, or
            // is abandoned when the client drops it.
            let (parts, body) = response.into_parts();
            let frames = stream::unfold((body, ended), move |(mut body, ended)| async move {
                match body.frame().await {
                    Some(frame) => Some((frame, (body, ended))),
                    None => {
                        ended.answered(code);
                        None
                    }
                }
            });
            Ok(Response::from_parts(
                parts,
                BodyExt::boxed_unsync(StreamBody::new(frames)),
            ))
        })
    }
}

/// What a request path names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    api_version: String,
    kind: &'static str,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn kind_of(plural: &str) -> Option<&'static str> {
    Some(match plural {
        "secrets" => "Secret",
        "services" => "Service",
        "configmaps" => "ConfigMap",
        "deployments" => "Deployment",
        "poddisruptionbudgets" => "PodDisruptionBudget",
        "ingresses" => "Ingress",
        "leases" => "Lease",
        "events" => "Event",
        "zoriprojects" => crate::crd::KIND,
        _ => return None,
    })
}

fn route(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (api_version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ((*version).to_owned(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        _ => (None, rest),
    };
    let (plural, name, status) = match rest {
        [plural] => (*plural, None, false),
        [plural, name] => (*plural, Some((*name).to_owned()), false),
        [plural, name, "status"] => (*plural, Some((*name).to_owned()), true),
        _ => return None,
    };
    Some(Target {
        api_version,
        kind: kind_of(plural)?,
        namespace,
        name,
        status,
    })
}

fn whole(code: StatusCode, body: &Value) -> Response<ResponseBody> {
    let bytes = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(bytes).boxed_unsync())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed_unsync()))
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<ResponseBody> {
    whole(
        code,
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code.as_u16()
        }),
    )
}

fn error_response(error: &ApiError) -> Response<ResponseBody> {
    let message = error.to_string();
    match error {
        ApiError::NotFound { .. } => status(StatusCode::NOT_FOUND, "NotFound", &message),
        ApiError::Conflict { .. } => status(StatusCode::CONFLICT, "Conflict", &message),
        ApiError::AlreadyExists { .. } => status(StatusCode::CONFLICT, "AlreadyExists", &message),
        ApiError::Invalid { .. } => status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", &message),
        ApiError::Malformed { .. } => status(StatusCode::BAD_REQUEST, "BadRequest", &message),
        ApiError::Forbidden { .. } => status(StatusCode::FORBIDDEN, "Forbidden", &message),
        // An injected failure: the server says only what went wrong, as a webhook would.
        ApiError::Request { message, .. } => {
            status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
        }
    }
}

fn labels_of(selector: Option<&String>) -> BTreeMap<String, String> {
    selector
        .map(|s| {
            s.split(',')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// A request as the handlers need it.
struct Call {
    method: Method,
    target: Target,
    query: BTreeMap<String, String>,
    content_type: String,
    body: Value,
}

impl Call {
    fn key(&self, name: &str) -> ObjectKey {
        ObjectKey::new(
            &self.target.api_version,
            self.target.kind,
            self.target.namespace.as_deref(),
            name,
        )
    }
}

/// Reads the request: its target, query, content type and JSON body.
async fn parse(request: Request<Body>) -> Result<Call, Response<ResponseBody>> {
    let (parts, body) = request.into_parts();
    let query = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let target = route(parts.uri.path()).ok_or_else(|| {
        status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        )
    })?;
    let content_type = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bad_request =
        |e: &dyn std::fmt::Display| status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string());
    let bytes = body.collect_bytes().await.map_err(|e| bad_request(&e))?;
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).map_err(|e| bad_request(&e))?
    };
    Ok(Call {
        method: parts.method,
        target,
        query,
        content_type,
        body,
    })
}

async fn serve(api: &FakeApi, request: Request<Body>) -> Response<ResponseBody> {
    let call = match parse(request).await {
        Ok(call) => call,
        Err(response) => return response,
    };
    if call.method == Method::GET
        && call.target.name.is_none()
        && call.query.get("watch").map(String::as_str) == Some("true")
    {
        let key = ObjectKey::new(
            &call.target.api_version,
            call.target.kind,
            call.target.namespace.as_deref(),
            "*",
        );
        if let Err(error) = api.check(Verb::List, &key).await {
            return error_response(&error);
        }
        return watch(api, &call.target, &call.query);
    }
    match dispatch(api, &call).await {
        Ok((code, value)) => whole(code, &value),
        Err(Refusal::Api(error)) => error_response(&error),
        Err(Refusal::Unsupported(code, reason, message)) => status(code, reason, &message),
    }
}

/// Why a request got no object back.
enum Refusal {
    Api(ApiError),
    Unsupported(StatusCode, &'static str, String),
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Refusal::Api(error)
    }
}

async fn dispatch(api: &FakeApi, call: &Call) -> Result<(StatusCode, Value), Refusal> {
    let target = &call.target;
    let ok = |value: Value| Ok((StatusCode::OK, value));
    match (&call.method, target.name.as_deref()) {
        (&Method::GET, None) => {
            let resource_version = api.resource_version();
            let items = api
                .list(
                    &target.api_version,
                    target.kind,
                    target.namespace.as_deref(),
                    &labels_of(call.query.get("labelSelector")),
                )
                .await?;
            ok(json!({
                "apiVersion": target.api_version,
                "kind": format!("{}List", target.kind),
                "metadata": {"resourceVersion": resource_version.to_string()},
                "items": items,
            }))
        }
        (&Method::GET, Some(name)) => match api.get(&call.key(name)).await? {
            Some(object) => ok(object),
            None => Err(Refusal::Api(ApiError::NotFound {
                verb: "read",
                key: call.key(name).to_string(),
            })),
        },
        // The recorder patches a repeated Event's series; the double keeps the first.
        (&Method::PATCH, Some(name)) if target.kind == "Event" => ok(json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": name, "namespace": target.namespace}
        })),
        (&Method::PATCH, Some(name))
            if call.content_type.starts_with("application/apply-patch") =>
        {
            ok(apply(api, &call.key(name), target, &call.query, &call.body).await?)
        }
        (&Method::PATCH, Some(name)) if call.content_type.starts_with("application/json-patch") => {
            ok(finalizers(api, &call.key(name), &call.body).await?)
        }
        (&Method::PATCH, Some(_)) => Err(Refusal::Unsupported(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("the API double does not take {} patches", call.content_type),
        )),
        (&Method::POST, None) if target.kind == "Event" => {
            api.record_event(event_record(&call.body));
            let mut stored = call.body.clone();
            stored["metadata"]["resourceVersion"] = json!(api.resource_version().to_string());
            Ok((StatusCode::CREATED, stored))
        }
        (&Method::POST, None) => Ok((StatusCode::CREATED, api.create(&call.body).await?)),
        (&Method::PUT, Some(_)) => ok(api.replace(&call.body).await?),
        (&Method::DELETE, Some(name)) => {
            if api.delete(&call.key(name)).await? {
                ok(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                          "status": "Success", "details": {"name": name}}))
            } else {
                Err(Refusal::Api(ApiError::NotFound {
                    verb: "delete",
                    key: call.key(name).to_string(),
                }))
            }
        }
        _ => Err(Refusal::Unsupported(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the API double does not serve this request".to_owned(),
        )),
    }
}

async fn apply(
    api: &FakeApi,
    key: &ObjectKey,
    target: &Target,
    query: &BTreeMap<String, String>,
    body: &Value,
) -> Result<Value, ApiError> {
    if query.get("fieldManager").map(String::as_str) != Some(FIELD_MANAGER) {
        return Err(ApiError::Invalid {
            verb: "apply",
            key: key.to_string(),
            message: "the API double serves applies of the operator's field manager only"
                .to_owned(),
        });
    }
    if target.status {
        api.apply_status(key, body.get("status").unwrap_or(&Value::Null))
            .await?;
    } else {
        api.apply(body).await?;
    }
    api.object(key).ok_or_else(|| ApiError::NotFound {
        verb: "apply",
        key: key.to_string(),
    })
}

/// The finalizer patches of kube-runtime's shape: `test` then `add`, or `test` then `remove`.
async fn finalizers(api: &FakeApi, key: &ObjectKey, ops: &Value) -> Result<Value, ApiError> {
    let invalid = || ApiError::Invalid {
        verb: "patch",
        key: key.to_string(),
        message: format!("the API double does not take the JSON patch {ops}"),
    };
    let ops = ops.as_array().ok_or_else(invalid)?;
    let (Some(test), Some(change)) = (ops.first(), ops.get(1)) else {
        return Err(invalid());
    };
    let path = change
        .get("path")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match change.get("op").and_then(Value::as_str) {
        Some("add") => {
            let current: Vec<String> =
                serde_json::from_value(test.get("value").cloned().unwrap_or(Value::Null))
                    .unwrap_or_default();
            let finalizer = match change.get("value") {
                Some(Value::String(f)) => f.clone(),
                Some(Value::Array(list)) => list
                    .last()
                    .and_then(Value::as_str)
                    .ok_or_else(invalid)?
                    .to_owned(),
                _ => return Err(invalid()),
            };
            api.add_finalizer(key, &current, &finalizer).await?;
        }
        Some("remove") => {
            let index = path
                .rsplit('/')
                .next()
                .and_then(|i| i.parse().ok())
                .ok_or_else(invalid)?;
            let finalizer = test
                .get("value")
                .and_then(Value::as_str)
                .ok_or_else(invalid)?;
            api.remove_finalizer(key, index, finalizer).await?;
        }
        _ => return Err(invalid()),
    }
    // A finalizer removal may have completed a deletion.
    Ok(api.object(key).unwrap_or_else(|| json!({})))
}

fn event_record(body: &Value) -> EventRecord {
    let text = |pointer: &str| {
        body.pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let namespace = text("/regarding/namespace");
    EventRecord {
        regarding: ObjectKey::new(
            &text("/regarding/apiVersion"),
            &text("/regarding/kind"),
            (!namespace.is_empty()).then_some(namespace.as_str()),
            &text("/regarding/name"),
        ),
        uid: body
            .pointer("/regarding/uid")
            .and_then(Value::as_str)
            .map(str::to_owned),
        type_: if text("/type") == "Warning" {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: text("/reason"),
        action: text("/action"),
        note: text("/note"),
    }
}

fn matches(target: &Target, labels: &BTreeMap<String, String>, change: &Change) -> bool {
    change.key.api_version == target.api_version
        && change.key.kind == target.kind
        && (target.namespace.is_none() || change.key.namespace == target.namespace)
        && labels.iter().all(|(k, v)| {
            change
                .object
                .pointer("/metadata/labels")
                .and_then(|l| l.get(k))
                .and_then(Value::as_str)
                == Some(v.as_str())
        })
}

fn event_line(change: &Change) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": change.type_, "object": change.object}))
        .unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// A watch: the changes after the given resourceVersion, then live ones, one JSON line each.
/// Ends when the watcher falls too far behind (it then lists again, as after a `410 Gone`).
fn watch(
    api: &FakeApi,
    target: &Target,
    query: &BTreeMap<String, String>,
) -> Response<ResponseBody> {
    let since = query
        .get("resourceVersion")
        .and_then(|rv| rv.parse().ok())
        .unwrap_or_else(|| api.resource_version());
    let labels = labels_of(query.get("labelSelector"));
    let (past, receiver) = api.changes_since(since);
    let target = target.clone();
    let past: Vec<Bytes> = past
        .iter()
        .filter(|c| matches(&target, &labels, c))
        .map(event_line)
        .collect();
    let live = stream::unfold(receiver, move |mut receiver| {
        let target = target.clone();
        let labels = labels.clone();
        async move {
            loop {
                match receiver.recv().await {
                    Ok(change) if matches(&target, &labels, &change) => {
                        return Some((event_line(&change), receiver))
                    }
                    Ok(_) => {}
                    Err(_) => return None,
                }
            }
        }
    });
    let frames = stream::iter(past)
        .chain(live)
        .map(|line| Ok::<_, Infallible>(Frame::data(line)));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(BodyExt::boxed_unsync(StreamBody::new(frames)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed_unsync()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_the_paths_the_operator_uses() {
        assert_eq!(
            route("/apis/apps/v1/namespaces/shops/deployments/acme-api"),
            Some(Target {
                api_version: "apps/v1".to_owned(),
                kind: "Deployment",
                namespace: Some("shops".to_owned()),
                name: Some("acme-api".to_owned()),
                status: false,
            })
        );
        assert_eq!(
            route("/apis/zori.dev/v1alpha1/namespaces/shops/zoriprojects/acme/status")
                .map(|t| t.status),
            Some(true)
        );
        assert_eq!(
            route("/api/v1/secrets").map(|t| (t.kind, t.namespace, t.name)),
            Some(("Secret", None, None))
        );
        assert_eq!(route("/api/v1/namespaces/shops/widgets"), None);
    }
}
