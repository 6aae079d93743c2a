//! The Kubernetes API as the reconcile sees it: a few verbs on JSON objects. [`client`] is the
//! real implementation on `kube::Client`; `fake` (behind the `testing` feature) an in-memory
//! one for tests that behaves like an API server on the points the reconcile depends on.

pub mod client;
#[cfg(any(test, feature = "testing"))]
pub mod fake;
#[cfg(feature = "testing")]
pub mod fake_server;

use std::{collections::BTreeMap, fmt, future::Future};

use serde_json::Value;

/// Identifies one object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    pub fn new(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Self {
        Self {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        }
    }

    /// The key of a serialised object (`apiVersion`, `kind`, `metadata.namespace/name`).
    pub fn of(object: &Value) -> Option<Self> {
        Some(Self {
            api_version: object.get("apiVersion")?.as_str()?.to_owned(),
            kind: object.get("kind")?.as_str()?.to_owned(),
            namespace: object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_owned),
            name: object.pointer("/metadata/name")?.as_str()?.to_owned(),
        })
    }
}

impl ObjectKey {
    /// The key of an item of a list of `api_version`/`kind`: list items of built-in kinds
    /// carry no `apiVersion`/`kind` of their own, so the listed kind names them.
    pub fn listed(api_version: &str, kind: &str, item: &Value) -> Option<Self> {
        let name = item.pointer("/metadata/name")?.as_str()?;
        let namespace = item.pointer("/metadata/namespace").and_then(Value::as_str);
        Some(Self::new(api_version, kind, namespace, name))
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// Severity of an Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// An Event about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub regarding: ObjectKey,
    pub uid: Option<String>,
    pub type_: EventType,
    /// CamelCase, such as `StreamCreated` or `InvalidSpec`.
    pub reason: String,
    /// CamelCase verb, such as `Reconcile` or `Reclaim`.
    pub action: String,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("failed to write {key}: it was changed concurrently (conflict)")]
    Conflict { key: String },
    #[error("failed to create {key}: it already exists")]
    AlreadyExists { key: String },
    #[error("failed to {verb} {key}: it does not exist")]
    NotFound { verb: &'static str, key: String },
    /// 403: the operator's RBAC does not allow the call.
    #[error("failed to {verb} {key}: {message}")]
    Forbidden {
        verb: &'static str,
        key: String,
        message: String,
    },
    #[error("failed to {verb} {key}: {message}")]
    Request {
        verb: &'static str,
        key: String,
        message: String,
    },
    #[error("failed to {verb} {key}: {message}")]
    Invalid {
        verb: &'static str,
        key: String,
        message: String,
    },
    #[error("failed to {verb}: the object has no {field}")]
    Malformed {
        verb: &'static str,
        field: &'static str,
    },
}

/// The verbs the operator uses. Writes go through server-side apply with the fixed field
/// manager [`crate::builders::FIELD_MANAGER`], forced, except the Lease (create / replace with
/// a resourceVersion precondition) and finalizers (JSON patches guarded by a `test` operation,
/// as kube-runtime's `finalizer` does, so a stale cached copy fails only when the finalizers
/// themselves changed).
pub trait KubeApi: Send + Sync + 'static {
    /// The object, or `None` when it does not exist.
    fn get(&self, key: &ObjectKey) -> impl Future<Output = Result<Option<Value>, ApiError>> + Send;

    /// Objects of a kind in a namespace (all namespaces with `None`) carrying all `labels`.
    /// As from an API server, items of built-in kinds lack `apiVersion` and `kind`
    /// (kubernetes#3030): key them by the kind that was listed, see [`ObjectKey::listed`].
    fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        labels: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<Vec<Value>, ApiError>> + Send;

    /// Server-side apply of `object` (which names itself by apiVersion, kind and metadata);
    /// the live object after it.
    fn apply(&self, object: &Value) -> impl Future<Output = Result<Value, ApiError>> + Send;

    /// Server-side apply of the status subresource.
    fn apply_status(
        &self,
        key: &ObjectKey,
        status: &Value,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Appends `finalizer`, failing with [`ApiError::Conflict`] when the live finalizers are
    /// no longer `current`.
    fn add_finalizer(
        &self,
        key: &ObjectKey,
        current: &[String],
        finalizer: &str,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Removes the finalizer at `index`, failing with [`ApiError::Conflict`] when that entry
    /// is no longer `finalizer`.
    fn remove_finalizer(
        &self,
        key: &ObjectKey,
        index: usize,
        finalizer: &str,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Deletes the object (dependents in the background); `false` when it did not exist.
    fn delete(&self, key: &ObjectKey) -> impl Future<Output = Result<bool, ApiError>> + Send;

    /// Creates the object; [`ApiError::AlreadyExists`] when it exists.
    fn create(&self, object: &Value) -> impl Future<Output = Result<Value, ApiError>> + Send;

    /// Replaces the object; [`ApiError::Conflict`] when its `metadata.resourceVersion` is stale.
    fn replace(&self, object: &Value) -> impl Future<Output = Result<Value, ApiError>> + Send;

    /// Records an Event regarding an object.
    fn publish_event(
        &self,
        event: &EventRecord,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
}

/// `metadata.resourceVersion` of an object.
pub fn resource_version(object: &Value) -> Option<&str> {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
}
