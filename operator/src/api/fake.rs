//! An in-memory Kubernetes API for tests: objects keyed by apiVersion/kind/namespace/name,
//! server-side apply that creates or replaces the fields a manager owns (fields another manager
//! set are kept), resourceVersion and generation bookkeeping, finalizers and deletion with
//! owner-reference garbage collection, and a log of every write with whether it changed
//! anything, so "a second reconcile writes nothing" can be asserted.

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard},
};

use serde_json::{json, Map, Value};

use super::{resource_version, ApiError, Applied, ApplyOutcome, EventRecord, KubeApi, ObjectKey};
use crate::builders::FIELD_MANAGER;

/// Time the fake stamps on creation and deletion.
pub const FAKE_TIME: &str = "2025-01-01T00:00:00Z";

/// Field manager of the objects stored with [`FakeApi::insert`] (a user's `kubectl apply`).
pub const USER_MANAGER: &str = "kubectl";

/// One write made through the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// `apply`, `apply-status`, `finalizers`, `delete`, `create`, `replace` or `event`.
    pub verb: &'static str,
    pub key: ObjectKey,
    /// Whether the stored state changed.
    pub changed: bool,
}

#[derive(Debug, Clone)]
struct Stored {
    object: Value,
    /// The last applied configuration of each field manager.
    intents: BTreeMap<String, Value>,
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<ObjectKey, Stored>,
    writes: Vec<Write>,
    events: Vec<EventRecord>,
    counter: u64,
    failing_kinds: BTreeMap<String, String>,
}

impl State {
    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }
}

/// The in-memory API.
#[derive(Debug, Default)]
pub struct FakeApi {
    state: Mutex<State>,
}

impl FakeApi {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock only happens in a failing test; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores an object as if a user applied it as [`USER_MANAGER`] (uid, resourceVersion,
    /// generation set).
    pub fn insert(&self, object: Value) -> Result<Value, ApiError> {
        let mut state = self.lock();
        let key = ObjectKey::of(&object).ok_or(ApiError::Malformed {
            verb: "insert",
            field: "apiVersion, kind or metadata.name",
        })?;
        let mut intent = object.clone();
        if let Some(map) = intent.as_object_mut() {
            map.remove("status");
        }
        let stored = new_object(&mut state, object);
        state.objects.insert(
            key,
            Stored {
                object: stored.clone(),
                intents: BTreeMap::from([(USER_MANAGER.to_owned(), intent)]),
            },
        );
        Ok(stored)
    }

    /// The stored object.
    pub fn object(&self, key: &ObjectKey) -> Option<Value> {
        self.lock().objects.get(key).map(|s| s.object.clone())
    }

    /// Keys of every stored object.
    pub fn keys(&self) -> Vec<ObjectKey> {
        self.lock().objects.keys().cloned().collect()
    }

    /// Every write so far.
    pub fn writes(&self) -> Vec<Write> {
        self.lock().writes.clone()
    }

    /// Writes that changed something.
    pub fn changes(&self) -> Vec<Write> {
        self.lock()
            .writes
            .iter()
            .filter(|w| w.changed)
            .cloned()
            .collect()
    }

    /// Forgets the write log and events (to look at one reconcile at a time).
    pub fn clear_log(&self) {
        let mut state = self.lock();
        state.writes.clear();
        state.events.clear();
    }

    /// Events published so far.
    pub fn events(&self) -> Vec<EventRecord> {
        self.lock().events.clone()
    }

    /// Makes every apply of `kind` fail with `message` (`None` heals it).
    pub fn fail_applies_of(&self, kind: &str, message: Option<&str>) {
        let mut state = self.lock();
        match message {
            Some(m) => state.failing_kinds.insert(kind.to_owned(), m.to_owned()),
            None => state.failing_kinds.remove(kind),
        };
    }

    /// Applies as another field manager (a user, an autoscaler).
    pub fn apply_as(&self, manager: &str, object: &Value) -> Result<Applied, ApiError> {
        apply_locked(&mut self.lock(), manager, object)
    }

    /// Sets the status of an object as a controller would (e.g. a Deployment rolled out).
    pub fn set_status(&self, key: &ObjectKey, status: Value) -> Result<(), ApiError> {
        let mut state = self.lock();
        let rv = state.next().to_string();
        let stored = state
            .objects
            .get_mut(key)
            .ok_or_else(|| ApiError::NotFound {
                verb: "set the status of",
                key: key.to_string(),
            })?;
        set(&mut stored.object, "status", status);
        set_meta(&mut stored.object, "resourceVersion", json!(rv));
        Ok(())
    }

    /// Marks a Deployment as fully rolled out at its current generation and replicas.
    pub fn roll_out(&self, key: &ObjectKey) -> Result<(), ApiError> {
        let object = self.object(key).ok_or_else(|| ApiError::NotFound {
            verb: "roll out",
            key: key.to_string(),
        })?;
        let replicas = object
            .pointer("/spec/replicas")
            .cloned()
            .unwrap_or(json!(1));
        let generation = object
            .pointer("/metadata/generation")
            .cloned()
            .unwrap_or(json!(1));
        self.set_status(
            key,
            json!({
                "observedGeneration": generation,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
            }),
        )
    }
}

fn set(object: &mut Value, field: &str, value: Value) {
    if let Some(map) = object.as_object_mut() {
        map.insert(field.to_owned(), value);
    }
}

fn set_meta(object: &mut Value, field: &str, value: Value) {
    if let Some(map) = object.as_object_mut() {
        let meta = map
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert(field.to_owned(), value);
        }
    }
}

fn remove_meta(object: &mut Value, field: &str) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove(field);
    }
}

fn new_object(state: &mut State, mut object: Value) -> Value {
    let n = state.next();
    set_meta(
        &mut object,
        "uid",
        json!(format!("00000000-0000-0000-0000-{n:012}")),
    );
    set_meta(&mut object, "resourceVersion", json!(n.to_string()));
    set_meta(&mut object, "generation", json!(1));
    set_meta(&mut object, "creationTimestamp", json!(FAKE_TIME));
    object
}

/// Removes from `live` what `previous` (the manager's last intent) set and `next` no longer
/// sets, descending into objects present in both.
fn prune(live: &mut Value, previous: &Value, next: &Value) {
    let (Some(live), Some(previous)) = (live.as_object_mut(), previous.as_object()) else {
        return;
    };
    for (k, pv) in previous {
        match next.get(k) {
            None => {
                live.remove(k);
            }
            Some(nv) if pv.is_object() && nv.is_object() => {
                if let Some(lv) = live.get_mut(k) {
                    prune(lv, pv, nv);
                }
            }
            Some(_) => {}
        }
    }
}

/// Merges `intent` into `live`: objects recursively, lists and scalars replaced.
fn merge(live: &mut Value, intent: &Value) {
    match (live.as_object_mut(), intent.as_object()) {
        (Some(live), Some(intent)) => {
            for (k, v) in intent {
                match live.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        live.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        _ => *live = intent.clone(),
    }
}

/// The object without metadata and status: what a change of bumps `generation`.
fn spec_part(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    copy
}

fn apply_locked(state: &mut State, manager: &str, object: &Value) -> Result<Applied, ApiError> {
    let key = ObjectKey::of(object).ok_or(ApiError::Malformed {
        verb: "apply",
        field: "apiVersion, kind or metadata.name",
    })?;
    if let Some(message) = state.failing_kinds.get(&key.kind) {
        let message = message.clone();
        state.writes.push(Write {
            verb: "apply",
            key: key.clone(),
            changed: false,
        });
        return Err(ApiError::Request {
            verb: "apply",
            key: key.to_string(),
            message,
        });
    }
    let mut intent = object.clone();
    remove_meta(&mut intent, "resourceVersion");
    if let Some(map) = intent.as_object_mut() {
        map.remove("status");
    }

    let Some(stored) = state.objects.get(&key).cloned() else {
        let created = new_object(state, intent.clone());
        state.objects.insert(
            key.clone(),
            Stored {
                object: created.clone(),
                intents: BTreeMap::from([(manager.to_owned(), intent)]),
            },
        );
        state.writes.push(Write {
            verb: "apply",
            key,
            changed: true,
        });
        return Ok(Applied {
            outcome: ApplyOutcome::Created,
            object: created,
        });
    };

    let previous = stored.intents.get(manager).cloned().unwrap_or(Value::Null);
    let mut next = stored.object.clone();
    prune(&mut next, &previous, &intent);
    merge(&mut next, &intent);
    let changed = next != stored.object;
    if changed {
        let rv = state.next();
        set_meta(&mut next, "resourceVersion", json!(rv.to_string()));
        if spec_part(&next) != spec_part(&stored.object) {
            let generation = stored
                .object
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            set_meta(&mut next, "generation", json!(generation + 1));
        }
    }
    let entry = state.objects.entry(key.clone()).or_insert(stored);
    entry.object = next.clone();
    entry.intents.insert(manager.to_owned(), intent);
    state.writes.push(Write {
        verb: "apply",
        key,
        changed,
    });
    Ok(Applied {
        outcome: if changed {
            ApplyOutcome::Configured
        } else {
            ApplyOutcome::Unchanged
        },
        object: next,
    })
}

/// Removes an object and, as the garbage collector does, everything it owns.
fn remove_cascading(state: &mut State, key: &ObjectKey) {
    let Some(stored) = state.objects.remove(key) else {
        return;
    };
    let Some(uid) = stored
        .object
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
    else {
        return;
    };
    let dependents: Vec<ObjectKey> = state
        .objects
        .iter()
        .filter(|(_, s)| {
            s.object
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| {
                    refs.iter()
                        .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
                })
        })
        .map(|(k, _)| k.clone())
        .collect();
    for dependent in dependents {
        delete_locked(state, &dependent);
    }
}

fn has_finalizers(object: &Value) -> bool {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

fn delete_locked(state: &mut State, key: &ObjectKey) -> bool {
    let Some(stored) = state.objects.get(key).cloned() else {
        return false;
    };
    if has_finalizers(&stored.object) {
        if stored
            .object
            .pointer("/metadata/deletionTimestamp")
            .is_none()
        {
            let rv = state.next();
            if let Some(s) = state.objects.get_mut(key) {
                set_meta(&mut s.object, "deletionTimestamp", json!(FAKE_TIME));
                set_meta(&mut s.object, "resourceVersion", json!(rv.to_string()));
            }
        }
    } else {
        remove_cascading(state, key);
    }
    true
}

fn matches_labels(object: &Value, labels: &BTreeMap<String, String>) -> bool {
    labels.iter().all(|(k, v)| {
        object
            .pointer("/metadata/labels")
            .and_then(|l| l.get(k))
            .and_then(Value::as_str)
            == Some(v.as_str())
    })
}

impl KubeApi for FakeApi {
    async fn get(&self, key: &ObjectKey) -> Result<Option<Value>, ApiError> {
        Ok(self.object(key))
    }

    async fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<Value>, ApiError> {
        Ok(self
            .lock()
            .objects
            .iter()
            .filter(|(k, s)| {
                k.api_version == api_version
                    && k.kind == kind
                    && (namespace.is_none() || k.namespace.as_deref() == namespace)
                    && matches_labels(&s.object, labels)
            })
            .map(|(_, s)| s.object.clone())
            .collect())
    }

    async fn apply(&self, object: &Value) -> Result<Applied, ApiError> {
        apply_locked(&mut self.lock(), FIELD_MANAGER, object)
    }

    async fn apply_status(
        &self,
        key: &ObjectKey,
        status: &Value,
    ) -> Result<ApplyOutcome, ApiError> {
        let mut state = self.lock();
        let Some(stored) = state.objects.get(key).cloned() else {
            return Err(ApiError::NotFound {
                verb: "apply the status of",
                key: key.to_string(),
            });
        };
        let changed = stored.object.get("status") != Some(status);
        if changed {
            let rv = state.next();
            if let Some(s) = state.objects.get_mut(key) {
                set(&mut s.object, "status", status.clone());
                set_meta(&mut s.object, "resourceVersion", json!(rv.to_string()));
            }
        }
        state.writes.push(Write {
            verb: "apply-status",
            key: key.clone(),
            changed,
        });
        Ok(if changed {
            ApplyOutcome::Configured
        } else {
            ApplyOutcome::Unchanged
        })
    }

    async fn set_finalizers(
        &self,
        key: &ObjectKey,
        finalizers: &[String],
        resource_version_expected: Option<&str>,
    ) -> Result<(), ApiError> {
        let mut state = self.lock();
        let Some(stored) = state.objects.get(key).cloned() else {
            return Err(ApiError::NotFound {
                verb: "set the finalizers of",
                key: key.to_string(),
            });
        };
        if let Some(expected) = resource_version_expected {
            if resource_version(&stored.object) != Some(expected) {
                return Err(ApiError::Conflict {
                    key: key.to_string(),
                });
            }
        }
        let rv = state.next();
        let mut object = stored.object.clone();
        if finalizers.is_empty() {
            remove_meta(&mut object, "finalizers");
        } else {
            set_meta(&mut object, "finalizers", json!(finalizers));
        }
        let changed = object != stored.object;
        set_meta(&mut object, "resourceVersion", json!(rv.to_string()));
        let deleting = object.pointer("/metadata/deletionTimestamp").is_some();
        if let Some(s) = state.objects.get_mut(key) {
            s.object = object;
        }
        if deleting && finalizers.is_empty() {
            remove_cascading(&mut state, key);
        }
        state.writes.push(Write {
            verb: "finalizers",
            key: key.clone(),
            changed,
        });
        Ok(())
    }

    async fn delete(&self, key: &ObjectKey) -> Result<bool, ApiError> {
        let mut state = self.lock();
        let existed = delete_locked(&mut state, key);
        state.writes.push(Write {
            verb: "delete",
            key: key.clone(),
            changed: existed,
        });
        Ok(existed)
    }

    async fn create(&self, object: &Value) -> Result<Value, ApiError> {
        let mut state = self.lock();
        let key = ObjectKey::of(object).ok_or(ApiError::Malformed {
            verb: "create",
            field: "apiVersion, kind or metadata.name",
        })?;
        if state.objects.contains_key(&key) {
            return Err(ApiError::AlreadyExists {
                key: key.to_string(),
            });
        }
        let created = new_object(&mut state, object.clone());
        state.objects.insert(
            key.clone(),
            Stored {
                object: created.clone(),
                intents: BTreeMap::new(),
            },
        );
        state.writes.push(Write {
            verb: "create",
            key,
            changed: true,
        });
        Ok(created)
    }

    async fn replace(&self, object: &Value) -> Result<Value, ApiError> {
        let mut state = self.lock();
        let key = ObjectKey::of(object).ok_or(ApiError::Malformed {
            verb: "replace",
            field: "apiVersion, kind or metadata.name",
        })?;
        let Some(stored) = state.objects.get(&key).cloned() else {
            return Err(ApiError::NotFound {
                verb: "replace",
                key: key.to_string(),
            });
        };
        if resource_version(object) != resource_version(&stored.object) {
            return Err(ApiError::Conflict {
                key: key.to_string(),
            });
        }
        let rv = state.next();
        let mut next = object.clone();
        for field in ["uid", "creationTimestamp", "generation"] {
            if let Some(v) = stored.object.pointer(&format!("/metadata/{field}")) {
                set_meta(&mut next, field, v.clone());
            }
        }
        set_meta(&mut next, "resourceVersion", json!(rv.to_string()));
        if let Some(s) = state.objects.get_mut(&key) {
            s.object = next.clone();
        }
        state.writes.push(Write {
            verb: "replace",
            key,
            changed: true,
        });
        Ok(next)
    }

    async fn publish_event(&self, event: &EventRecord) -> Result<(), ApiError> {
        let mut state = self.lock();
        state.events.push(event.clone());
        state.writes.push(Write {
            verb: "event",
            key: event.regarding.clone(),
            changed: true,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_map(data: Value) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "ns"},
            "data": data
        })
    }

    fn key() -> ObjectKey {
        ObjectKey::new("v1", "ConfigMap", Some("ns"), "c")
    }

    #[tokio::test]
    async fn apply_creates_then_changes_only_what_differs() {
        let api = FakeApi::new();
        let first = api
            .apply(&config_map(json!({"a": "1"})))
            .await
            .expect("apply");
        assert_eq!(first.outcome, ApplyOutcome::Created);
        let again = api
            .apply(&config_map(json!({"a": "1"})))
            .await
            .expect("apply");
        assert_eq!(again.outcome, ApplyOutcome::Unchanged);
        assert_eq!(
            resource_version(&first.object),
            resource_version(&again.object)
        );
        let changed = api
            .apply(&config_map(json!({"a": "2"})))
            .await
            .expect("apply");
        assert_eq!(changed.outcome, ApplyOutcome::Configured);
        assert_eq!(
            changed.object.pointer("/metadata/generation"),
            Some(&json!(2))
        );
        assert_eq!(api.changes().len(), 2);
    }

    #[tokio::test]
    async fn apply_removes_dropped_fields_and_keeps_other_managers_fields() {
        let api = FakeApi::new();
        api.apply(&config_map(json!({"a": "1", "b": "2"})))
            .await
            .expect("apply");
        api.apply_as("someone", &config_map(json!({"theirs": "x"})))
            .expect("apply");
        let applied = api
            .apply(&config_map(json!({"a": "1"})))
            .await
            .expect("apply");
        assert_eq!(applied.object["data"], json!({"a": "1", "theirs": "x"}));
    }

    #[tokio::test]
    async fn finalizers_hold_deletion_and_owners_cascade() {
        let api = FakeApi::new();
        let owner = api
            .apply(&config_map(json!({})))
            .await
            .expect("apply")
            .object;
        let uid = owner
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .expect("uid")
            .to_owned();
        api.apply(&json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "namespace": "ns", "ownerReferences": [{"uid": uid}]}
        }))
        .await
        .expect("apply");
        api.set_finalizers(&key(), &["x".to_owned()], None)
            .await
            .expect("finalizers");
        assert!(api.delete(&key()).await.expect("delete"));
        assert!(api.object(&key()).is_some(), "held by the finalizer");
        let stale = api.set_finalizers(&key(), &[], Some("1")).await;
        assert!(matches!(stale, Err(ApiError::Conflict { .. })));
        api.set_finalizers(&key(), &[], None)
            .await
            .expect("finalizers");
        assert!(
            api.keys().is_empty(),
            "owner and dependent are gone: {:?}",
            api.keys()
        );
        assert!(!api.delete(&key()).await.expect("delete"));
    }

    #[tokio::test]
    async fn replace_checks_the_resource_version() {
        let api = FakeApi::new();
        let created = api.create(&config_map(json!({}))).await.expect("create");
        assert!(matches!(
            api.create(&config_map(json!({}))).await,
            Err(ApiError::AlreadyExists { .. })
        ));
        let mut next = created.clone();
        next["data"] = json!({"a": "1"});
        let replaced = api.replace(&next).await.expect("replace");
        assert!(matches!(
            api.replace(&next).await,
            Err(ApiError::Conflict { .. })
        ));
        assert_eq!(replaced["data"], json!({"a": "1"}));
    }
}
