//! [`KubeApi`] on a real `kube::Client`: dynamic objects, server-side apply with the operator's
//! field manager, finalizers by guarded JSON patches, Events through
//! `kube::runtime::events::Recorder`. Errors carry the API server's own message (such as
//! `deployments.apps "x" is forbidden: …`), not a debug dump.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    apps::v1::Deployment,
    coordination::v1::Lease,
    core::v1::{ObjectReference, Secret, Service},
    networking::v1::Ingress,
    policy::v1::PodDisruptionBudget,
};
use kube::{
    api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams},
    core::{ApiResource, GroupVersionKind},
    runtime::events::{Event, EventType as KubeEventType, Recorder, Reporter},
    Api, Client,
};
use serde_json::{json, Value};

use super::{resource_version, ApiError, EventRecord, EventType, KubeApi, ObjectKey};
use crate::{builders::FIELD_MANAGER, crd::ZoriProject};

/// The real API.
#[derive(Clone)]
pub struct ClientApi {
    client: Client,
    recorder: Recorder,
}

impl ClientApi {
    /// `reporter_instance` is the pod name (shown as the Event's reporting instance).
    pub fn new(client: Client, reporter_instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: reporter_instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn api(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
        let resource = api_resource(api_version, kind);
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        }
    }

    fn api_for(&self, key: &ObjectKey) -> Api<DynamicObject> {
        self.api(&key.api_version, &key.kind, key.namespace.as_deref())
    }
}

/// The resource (with its plural) of the kinds the operator touches; others are guessed.
fn api_resource(api_version: &str, kind: &str) -> ApiResource {
    match (api_version, kind) {
        ("v1", "Secret") => ApiResource::erase::<Secret>(&()),
        ("v1", "Service") => ApiResource::erase::<Service>(&()),
        ("apps/v1", "Deployment") => ApiResource::erase::<Deployment>(&()),
        ("policy/v1", "PodDisruptionBudget") => ApiResource::erase::<PodDisruptionBudget>(&()),
        ("networking.k8s.io/v1", "Ingress") => ApiResource::erase::<Ingress>(&()),
        ("coordination.k8s.io/v1", "Lease") => ApiResource::erase::<Lease>(&()),
        (crate::crd::API_VERSION, crate::crd::KIND) => ApiResource::erase::<ZoriProject>(&()),
        _ => {
            let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
            ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
        }
    }
}

/// The API server's explanation: its message with the code and reason, such as
/// `secrets "x" is forbidden: … (403 Forbidden)`; other errors by their own text.
fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(response) => {
            let message = if response.message.is_empty() {
                "the API server gave no reason"
            } else {
                response.message.as_str()
            };
            if response.reason.is_empty() {
                format!("{message} ({})", response.code)
            } else {
                format!("{message} ({} {})", response.code, response.reason)
            }
        }
        other => other.to_string(),
    }
}

fn request_error(verb: &'static str, key: &ObjectKey, error: kube::Error) -> ApiError {
    match &error {
        kube::Error::Api(response)
            if response.code == 409 && response.reason == "AlreadyExists" =>
        {
            ApiError::AlreadyExists {
                key: key.to_string(),
            }
        }
        kube::Error::Api(response) if response.code == 409 => ApiError::Conflict {
            key: key.to_string(),
        },
        kube::Error::Api(response) if response.code == 404 => ApiError::NotFound {
            verb,
            key: key.to_string(),
        },
        kube::Error::Api(response) if response.code == 403 => ApiError::Forbidden {
            verb,
            key: key.to_string(),
            message: describe(&error),
        },
        kube::Error::Api(response) if response.code == 422 => ApiError::Invalid {
            verb,
            key: key.to_string(),
            message: describe(&error),
        },
        _ => ApiError::Request {
            verb,
            key: key.to_string(),
            message: describe(&error),
        },
    }
}

/// A finalizer patch whose `test` operation failed: the API server answers 422 (kubernetes
/// #68838); for the caller the finalizers changed concurrently. The other 422 a finalizer
/// patch meets, "no new finalizers can be added if the object is being deleted", stays.
fn finalizer_error(key: &ObjectKey, error: kube::Error) -> ApiError {
    match request_error("set the finalizers of", key, error) {
        ApiError::Invalid { message, .. } if !message.contains("no new finalizers") => {
            ApiError::Conflict {
                key: key.to_string(),
            }
        }
        other => other,
    }
}

fn json_patch(verb: &'static str, key: &ObjectKey, ops: Value) -> Result<Patch<()>, ApiError> {
    serde_json::from_value::<json_patch::Patch>(ops)
        .map(Patch::Json)
        .map_err(|e| ApiError::Request {
            verb,
            key: key.to_string(),
            message: format!("failed to build the JSON patch: {e}"),
        })
}

fn to_value(
    verb: &'static str,
    key: &ObjectKey,
    object: &DynamicObject,
) -> Result<Value, ApiError> {
    serde_json::to_value(object).map_err(|e| ApiError::Request {
        verb,
        key: key.to_string(),
        message: format!("the answer is not JSON: {e}"),
    })
}

fn from_value(
    verb: &'static str,
    key: &ObjectKey,
    object: &Value,
) -> Result<DynamicObject, ApiError> {
    serde_json::from_value(object.clone()).map_err(|e| ApiError::Request {
        verb,
        key: key.to_string(),
        message: format!("the object is not a Kubernetes object: {e}"),
    })
}

fn key_of(verb: &'static str, object: &Value) -> Result<ObjectKey, ApiError> {
    ObjectKey::of(object).ok_or(ApiError::Malformed {
        verb,
        field: "apiVersion, kind or metadata.name",
    })
}

fn label_selector(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl KubeApi for ClientApi {
    async fn get(&self, key: &ObjectKey) -> Result<Option<Value>, ApiError> {
        let found = self
            .api_for(key)
            .get_opt(&key.name)
            .await
            .map_err(|e| request_error("read", key, e))?;
        found.map(|o| to_value("read", key, &o)).transpose()
    }

    async fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<Value>, ApiError> {
        let key = ObjectKey::new(api_version, kind, namespace, "*");
        let params = ListParams::default().labels(&label_selector(labels));
        let list = self
            .api(api_version, kind, namespace)
            .list(&params)
            .await
            .map_err(|e| request_error("list", &key, e))?;
        list.items
            .iter()
            .map(|o| to_value("list", &key, o))
            .collect()
    }

    async fn apply(&self, object: &Value) -> Result<Value, ApiError> {
        let key = key_of("apply", object)?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let after = self
            .api_for(&key)
            .patch(&key.name, &params, &Patch::Apply(object))
            .await
            .map_err(|e| request_error("apply", &key, e))?;
        to_value("apply", &key, &after)
    }

    async fn apply_status(&self, key: &ObjectKey, status: &Value) -> Result<(), ApiError> {
        let patch = json!({
            "apiVersion": key.api_version,
            "kind": key.kind,
            "metadata": {"name": key.name},
            "status": status,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.api_for(key)
            .patch_status(&key.name, &params, &Patch::Apply(&patch))
            .await
            .map_err(|e| request_error("apply the status of", key, e))?;
        Ok(())
    }

    async fn add_finalizer(
        &self,
        key: &ObjectKey,
        current: &[String],
        finalizer: &str,
    ) -> Result<(), ApiError> {
        // As kube-runtime's `finalizer`: fail rather than add a duplicate when someone else
        // changed the list meanwhile (the API server does not deduplicate finalizers).
        let ops = if current.is_empty() {
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": [finalizer]},
            ])
        } else {
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": current},
                {"op": "add", "path": "/metadata/finalizers/-", "value": finalizer},
            ])
        };
        let patch = json_patch("set the finalizers of", key, ops)?;
        self.api_for(key)
            .patch(&key.name, &PatchParams::default(), &patch)
            .await
            .map_err(|e| finalizer_error(key, e))?;
        Ok(())
    }

    async fn remove_finalizer(
        &self,
        key: &ObjectKey,
        index: usize,
        finalizer: &str,
    ) -> Result<(), ApiError> {
        let path = format!("/metadata/finalizers/{index}");
        let ops = json!([
            {"op": "test", "path": path, "value": finalizer},
            {"op": "remove", "path": path},
        ]);
        let patch = json_patch("set the finalizers of", key, ops)?;
        self.api_for(key)
            .patch(&key.name, &PatchParams::default(), &patch)
            .await
            .map_err(|e| finalizer_error(key, e))?;
        Ok(())
    }

    async fn delete(&self, key: &ObjectKey) -> Result<bool, ApiError> {
        match self
            .api_for(key)
            .delete(&key.name, &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(response)) if response.code == 404 => Ok(false),
            Err(e) => Err(request_error("delete", key, e)),
        }
    }

    async fn create(&self, object: &Value) -> Result<Value, ApiError> {
        let key = key_of("create", object)?;
        let created = self
            .api_for(&key)
            .create(&PostParams::default(), &from_value("create", &key, object)?)
            .await
            .map_err(|e| request_error("create", &key, e))?;
        to_value("create", &key, &created)
    }

    async fn replace(&self, object: &Value) -> Result<Value, ApiError> {
        let key = key_of("replace", object)?;
        if resource_version(object).is_none() {
            return Err(ApiError::Malformed {
                verb: "replace",
                field: "metadata.resourceVersion",
            });
        }
        let replaced = self
            .api_for(&key)
            .replace(
                &key.name,
                &PostParams::default(),
                &from_value("replace", &key, object)?,
            )
            .await
            .map_err(|e| request_error("replace", &key, e))?;
        to_value("replace", &key, &replaced)
    }

    async fn publish_event(&self, event: &EventRecord) -> Result<(), ApiError> {
        let regarding = ObjectReference {
            api_version: Some(event.regarding.api_version.clone()),
            kind: Some(event.regarding.kind.clone()),
            name: Some(event.regarding.name.clone()),
            namespace: event.regarding.namespace.clone(),
            uid: event.uid.clone(),
            ..ObjectReference::default()
        };
        let ev = Event {
            type_: match event.type_ {
                EventType::Normal => KubeEventType::Normal,
                EventType::Warning => KubeEventType::Warning,
            },
            reason: event.reason.clone(),
            note: Some(truncate(&event.note, 1000)),
            action: event.action.clone(),
            secondary: None,
        };
        self.recorder
            .publish(&ev, &regarding)
            .await
            .map_err(|e| request_error("publish an event about", &event.regarding, e))
    }
}

/// Cuts text to at most `max` bytes on a character boundary.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}
