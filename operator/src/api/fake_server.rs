//! [`FakeApi`] served over HTTP, as a tower service a real `kube::Client` talks to (behind the
//! `testing` feature): the real `ClientApi` and the real kube-runtime `Controller` (watches,
//! owner triggers, error policy) run against it in tests.
//!
//! It speaks the API server's REST dialect for the kinds the operator uses: list (items
//! without TypeMeta, a list resourceVersion), watch (newline-delimited events from a
//! resourceVersion on, no gap after a list), get, server-side apply (`apply-patch+yaml`, also on
//! `/status`), finalizer JSON patches with `test`, create, replace, delete, and Events. Errors
//! are `Status` bodies with the API server's codes and reasons.

use std::{collections::BTreeMap, convert::Infallible};

use bytes::Bytes;
use futures::{stream, StreamExt};
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use kube::client::Body;
use serde_json::{json, Value};

use super::{
    fake::{Change, FakeApi},
    ApiError, EventRecord, EventType, KubeApi, ObjectKey,
};
use crate::builders::FIELD_MANAGER;

/// The response body: whole, or a watch stream.
pub type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

/// A `kube::Client` whose API server is `api`.
pub fn client(api: &FakeApi) -> kube::Client {
    kube::Client::new(FakeApiServer(api.clone()), "default")
}

/// The tower service answering for a [`FakeApi`].
#[derive(Clone)]
pub struct FakeApiServer(pub FakeApi);

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
        let api = self.0.clone();
        Box::pin(async move { Ok(serve(&api, request).await) })
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
