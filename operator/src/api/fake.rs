//! An in-memory Kubernetes API for tests (behind the `testing` feature), faithful to an API
//! server on the points the reconcile depends on:
//!
//! - list items of built-in kinds carry no `apiVersion`/`kind` (kubernetes#3030, kube-rs#946);
//! - server-side apply creates or replaces the fields a manager owns and keeps what another
//!   manager set, merging keyed lists (containers, env, ports, volumes, …) item by item;
//! - `metadata.generation` moves only when `spec` changes, and when a deletion is held by a
//!   finalizer (`deletionTimestamp` set);
//! - finalizers are changed by JSON patches whose `test` operation fails when the live list
//!   differs; no new finalizer is accepted on an object being deleted;
//! - deletion waits for finalizers, then collects owned objects (owner-reference GC);
//! - every verb can be made to fail or to hang ([`FakeApi::inject`]), per client handle
//!   ([`FakeApi::handle`]), so that two replicas can share one API with different faults.
//!
//! Every write is logged with whether it changed anything, so "a second reconcile writes
//! nothing" can be asserted, and every change is kept in a history with a live feed, from which
//! `api::fake_server` serves watches. Admission, defaulting and validation are not
//! modelled: docs/operator.md lists what only a real cluster shows.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use serde_json::{json, Map, Value};

use super::{resource_version, ApiError, EventRecord, KubeApi, ObjectKey};
use crate::builders::FIELD_MANAGER;

/// Time the fake stamps on creation and deletion.
pub const FAKE_TIME: &str = "2025-01-01T00:00:00Z";

/// Field manager of the objects stored with [`FakeApi::insert`] (a user's `kubectl apply`).
pub const USER_MANAGER: &str = "kubectl";

/// The verbs of [`KubeApi`], to inject faults into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    Get,
    List,
    Apply,
    ApplyStatus,
    Finalizers,
    Delete,
    Create,
    Replace,
    Event,
}

impl Verb {
    pub const ALL: [Verb; 9] = [
        Verb::Get,
        Verb::List,
        Verb::Apply,
        Verb::ApplyStatus,
        Verb::Finalizers,
        Verb::Delete,
        Verb::Create,
        Verb::Replace,
        Verb::Event,
    ];

    /// How an error message names the verb.
    fn describe(self) -> &'static str {
        match self {
            Verb::Get => "read",
            Verb::List => "list",
            Verb::Apply => "apply",
            Verb::ApplyStatus => "apply the status of",
            Verb::Finalizers => "set the finalizers of",
            Verb::Delete => "delete",
            Verb::Create => "create",
            Verb::Replace => "replace",
            Verb::Event => "publish an event about",
        }
    }

    /// The name in the write log, for writes.
    fn log_name(self) -> Option<&'static str> {
        match self {
            Verb::Get | Verb::List => None,
            Verb::Apply => Some("apply"),
            Verb::ApplyStatus => Some("apply-status"),
            Verb::Finalizers => Some("finalizers"),
            Verb::Delete => Some("delete"),
            Verb::Create => Some("create"),
            Verb::Replace => Some("replace"),
            Verb::Event => Some("event"),
        }
    }
}

/// What an injected fault does to a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The call fails with this message (as a webhook or an API server error would).
    Error(String),
    /// The call never answers (a partitioned or overloaded API server).
    Hang,
    /// The call is refused by RBAC (403).
    Forbidden,
    /// The inner fault, only for calls across all namespaces (a cluster-wide list).
    ClusterWide(Box<Fault>),
}

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

/// One change of a stored object, as a watch reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The resourceVersion the change made (the store's counter).
    pub resource_version: u64,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub type_: &'static str,
    pub key: ObjectKey,
    /// The object after the change (before it, for `DELETED`), with its TypeMeta.
    pub object: Value,
}

#[derive(Debug)]
struct State {
    objects: BTreeMap<ObjectKey, Stored>,
    writes: Vec<Write>,
    events: Vec<EventRecord>,
    counter: u64,
    /// Every change, for watches that start at an older resourceVersion.
    history: Vec<Change>,
    feed: tokio::sync::broadcast::Sender<Change>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            writes: Vec::new(),
            events: Vec::new(),
            counter: 0,
            history: Vec::new(),
            feed: tokio::sync::broadcast::channel(4096).0,
        }
    }
}

impl State {
    /// Reports the current state of `key` to watches (`DELETED` with `gone` when removed).
    fn emit(&mut self, key: &ObjectKey, type_: &'static str, gone: Option<Value>) {
        let Some(object) = gone.or_else(|| self.objects.get(key).map(|s| s.object.clone())) else {
            return;
        };
        let change = Change {
            resource_version: self.counter,
            type_,
            key: key.clone(),
            object,
        };
        self.history.push(change.clone());
        // Nobody watching is fine.
        let _ = self.feed.send(change);
    }

    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn log(&mut self, verb: &'static str, key: &ObjectKey, changed: bool) {
        self.writes.push(Write {
            verb,
            key: key.clone(),
            changed,
        });
    }
}

/// Faults of one client handle: by verb, and by kind (`None`: every kind).
type Faults = BTreeMap<(Verb, Option<String>), Fault>;

/// The in-memory API. Clones share state and faults; [`FakeApi::handle`] shares only the state.
#[derive(Debug, Default, Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    faults: Arc<Mutex<Faults>>,
}

/// Locks a mutex; a panic while holding it only happens in a failing test, so keep going.
fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeApi {
    pub fn new() -> Self {
        Self::default()
    }

    /// Another client of the same API server, with faults of its own (a second replica).
    pub fn handle(&self) -> Self {
        Self {
            state: self.state.clone(),
            faults: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        locked(&self.state)
    }

    /// Makes `verb` on objects of `kind` (every kind with `None`) fail or hang through this
    /// handle; `fault: None` heals it.
    pub fn inject(&self, verb: Verb, kind: Option<&str>, fault: Option<Fault>) {
        let mut faults = locked(&self.faults);
        let rule = (verb, kind.map(str::to_owned));
        match fault {
            Some(f) => faults.insert(rule, f),
            None => faults.remove(&rule),
        };
    }

    /// Makes every verb hang through this handle (the API server became unreachable).
    pub fn hang_everything(&self) {
        for verb in Verb::ALL {
            self.inject(verb, None, Some(Fault::Hang));
        }
    }

    /// Heals every fault of this handle.
    pub fn heal(&self) {
        locked(&self.faults).clear();
    }

    /// Applies the fault injected for `verb` on `key`, if any: an error, or a wait forever.
    /// (A watch goes through the `List` faults: a list that hangs or fails, watches alike.)
    pub(crate) async fn check(&self, verb: Verb, key: &ObjectKey) -> Result<(), ApiError> {
        let fault = {
            let faults = locked(&self.faults);
            faults
                .get(&(verb, Some(key.kind.clone())))
                .or_else(|| faults.get(&(verb, None)))
                .cloned()
        };
        let fault = match fault {
            Some(Fault::ClusterWide(inner)) if key.namespace.is_none() => Some(*inner),
            Some(Fault::ClusterWide(_)) => None,
            other => other,
        };
        match fault {
            None | Some(Fault::ClusterWide(_)) => Ok(()),
            Some(Fault::Hang) => std::future::pending().await,
            Some(Fault::Forbidden) => Err(ApiError::Forbidden {
                verb: verb.describe(),
                key: key.to_string(),
                message: "forbidden: the service account may not do this (403 Forbidden)"
                    .to_owned(),
            }),
            Some(Fault::Error(message)) => {
                if let Some(name) = verb.log_name() {
                    self.lock().log(name, key, false);
                }
                Err(ApiError::Request {
                    verb: verb.describe(),
                    key: key.to_string(),
                    message,
                })
            }
        }
    }

    /// Stores an object as if a user applied it as [`USER_MANAGER`] (uid, resourceVersion,
    /// generation set).
    pub fn insert(&self, object: Value) -> Result<Value, ApiError> {
        let mut state = self.lock();
        let key = key_of("insert", &object)?;
        let mut intent = object.clone();
        if let Some(map) = intent.as_object_mut() {
            map.remove("status");
        }
        let stored = new_object(&mut state, object);
        state.objects.insert(
            key.clone(),
            Stored {
                object: stored.clone(),
                intents: BTreeMap::from([(USER_MANAGER.to_owned(), intent)]),
            },
        );
        state.emit(&key, "ADDED", None);
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

    /// The store's current resourceVersion (what a list reports).
    pub fn resource_version(&self) -> u64 {
        self.lock().counter
    }

    /// Changes after `resource_version` so far, and a receiver of the ones to come, with no
    /// gap between them (a watch starting at a listed resourceVersion).
    pub fn changes_since(
        &self,
        resource_version: u64,
    ) -> (Vec<Change>, tokio::sync::broadcast::Receiver<Change>) {
        let state = self.lock();
        let past = state
            .history
            .iter()
            .filter(|c| c.resource_version > resource_version)
            .cloned()
            .collect();
        (past, state.feed.subscribe())
    }

    /// Records an Event as the API server stores it (the HTTP double's events endpoint).
    pub fn record_event(&self, event: EventRecord) {
        let mut state = self.lock();
        state.log("event", &event.regarding, true);
        state.events.push(event);
    }

    /// Applies as another field manager (a user, an autoscaler).
    pub fn apply_as(&self, manager: &str, object: &Value) -> Result<Value, ApiError> {
        apply_locked(&mut self.lock(), manager, object).map(|(object, _)| object)
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
        state.emit(key, "MODIFIED", None);
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

fn key_of(verb: &'static str, object: &Value) -> Result<ObjectKey, ApiError> {
    ObjectKey::of(object).ok_or(ApiError::Malformed {
        verb,
        field: "apiVersion, kind or metadata.name",
    })
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

fn bump_generation(object: &mut Value) {
    let generation = object
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    set_meta(object, "generation", json!(generation + 1));
}

/// The merge key of an item of a list field under server-side apply (the
/// `x-kubernetes-list-map-keys` of the built-in kinds the operator writes); `None` for atomic
/// lists, which are replaced whole.
fn item_key(field: &str, item: &Value) -> Option<Value> {
    let key_field = match field {
        "containers" | "initContainers" | "env" | "volumes" | "imagePullSecrets" => "name",
        "volumeMounts" => "mountPath",
        "ownerReferences" => "uid",
        "conditions" => "type",
        // Container ports are keyed by containerPort, Service ports by port.
        "ports" if item.get("containerPort").is_some() => "containerPort",
        "ports" => "port",
        _ => return None,
    };
    item.get(key_field).cloned()
}

fn is_keyed_list(field: &str, list: &Value) -> bool {
    const KEYED: [&str; 9] = [
        "containers",
        "initContainers",
        "env",
        "volumes",
        "imagePullSecrets",
        "volumeMounts",
        "ownerReferences",
        "conditions",
        "ports",
    ];
    KEYED.contains(&field)
        && list
            .as_array()
            .is_some_and(|items| items.iter().all(|i| item_key(field, i).is_some()))
}

fn position(list: &[Value], field: &str, key: &Value) -> Option<usize> {
    list.iter()
        .position(|i| item_key(field, i).as_ref() == Some(key))
}

/// Removes from `live` what `previous` (the manager's last intent) set and `next` no longer
/// sets, descending into objects and keyed-list items present in both.
fn prune(live: &mut Value, previous: &Value, next: &Value) {
    let (Some(live), Some(previous)) = (live.as_object_mut(), previous.as_object()) else {
        return;
    };
    for (field, pv) in previous {
        let Some(nv) = next.get(field) else {
            live.remove(field);
            continue;
        };
        let Some(lv) = live.get_mut(field) else {
            continue;
        };
        if pv.is_object() && nv.is_object() {
            prune(lv, pv, nv);
        } else if is_keyed_list(field, pv) && is_keyed_list(field, nv) {
            prune_list(field, lv, pv, nv);
        }
    }
}

fn prune_list(field: &str, live: &mut Value, previous: &Value, next: &Value) {
    let (Some(live), Some(previous), Some(next)) =
        (live.as_array_mut(), previous.as_array(), next.as_array())
    else {
        return;
    };
    for item in previous {
        let Some(key) = item_key(field, item) else {
            continue;
        };
        let Some(at) = position(live, field, &key) else {
            continue;
        };
        match position(next, field, &key) {
            None => {
                live.remove(at);
            }
            Some(n) => prune(&mut live[at], item, &next[n]),
        }
    }
}

/// Merges `intent` into `live`: objects recursively, keyed lists item by item, other lists
/// and scalars replaced.
fn merge(live: &mut Value, intent: &Value) {
    let (Some(live), Some(intent)) = (live.as_object_mut(), intent.as_object()) else {
        *live = intent.clone();
        return;
    };
    for (field, value) in intent {
        match live.get_mut(field) {
            Some(existing) if existing.is_object() && value.is_object() => merge(existing, value),
            Some(existing) if is_keyed_list(field, existing) && is_keyed_list(field, value) => {
                merge_list(field, existing, value);
            }
            _ => {
                live.insert(field.clone(), value.clone());
            }
        }
    }
}

fn merge_list(field: &str, live: &mut Value, intent: &Value) {
    let (Some(live), Some(intent)) = (live.as_array_mut(), intent.as_array()) else {
        return;
    };
    for item in intent {
        match item_key(field, item).and_then(|key| position(live, field, &key)) {
            Some(at) => merge(&mut live[at], item),
            None => live.push(item.clone()),
        }
    }
}

fn finalizers(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| {
            f.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn terminating(object: &Value) -> bool {
    object.pointer("/metadata/deletionTimestamp").is_some()
}

/// The API server's answer to a new finalizer on an object being deleted.
fn no_new_finalizers(verb: &'static str, key: &ObjectKey, new: &[String]) -> ApiError {
    ApiError::Invalid {
        verb,
        key: key.to_string(),
        message: format!(
            "metadata.finalizers: Forbidden: no new finalizers can be added if the object is \
             being deleted, found new finalizers {new:?}"
        ),
    }
}

fn apply_locked(
    state: &mut State,
    manager: &str,
    object: &Value,
) -> Result<(Value, bool), ApiError> {
    let key = key_of("apply", object)?;
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
        state.log("apply", &key, true);
        state.emit(&key, "ADDED", None);
        return Ok((created, true));
    };

    let previous = stored.intents.get(manager).cloned().unwrap_or(Value::Null);
    let mut next = stored.object.clone();
    prune(&mut next, &previous, &intent);
    merge(&mut next, &intent);
    if terminating(&stored.object) {
        let before = finalizers(&stored.object);
        let new: Vec<String> = finalizers(&next)
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        if !new.is_empty() {
            return Err(no_new_finalizers("apply", &key, &new));
        }
    }
    let changed = next != stored.object;
    if changed {
        let rv = state.next();
        set_meta(&mut next, "resourceVersion", json!(rv.to_string()));
        if next.get("spec") != stored.object.get("spec") {
            bump_generation(&mut next);
        }
    }
    let entry = state.objects.entry(key.clone()).or_insert(stored);
    entry.object = next.clone();
    entry.intents.insert(manager.to_owned(), intent);
    state.log("apply", &key, changed);
    if changed {
        state.emit(&key, "MODIFIED", None);
    }
    Ok((next, changed))
}

/// Removes an object and, as the garbage collector does, everything it owns.
fn remove_cascading(state: &mut State, key: &ObjectKey) {
    let Some(stored) = state.objects.remove(key) else {
        return;
    };
    state.counter += 1;
    state.emit(key, "DELETED", Some(stored.object.clone()));
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

/// Deletes as the API server does: an object with finalizers only gets a
/// `deletionTimestamp` (and a new generation); others go at once, with their dependents.
fn delete_locked(state: &mut State, key: &ObjectKey) -> bool {
    let Some(stored) = state.objects.get(key).cloned() else {
        return false;
    };
    if finalizers(&stored.object).is_empty() {
        remove_cascading(state, key);
    } else if !terminating(&stored.object) {
        let rv = state.next();
        if let Some(s) = state.objects.get_mut(key) {
            set_meta(&mut s.object, "deletionTimestamp", json!(FAKE_TIME));
            set_meta(&mut s.object, "resourceVersion", json!(rv.to_string()));
            bump_generation(&mut s.object);
        }
        state.emit(key, "MODIFIED", None);
    }
    true
}

/// Whether an apiVersion is one of Kubernetes' own groups (core, `apps`, `*.k8s.io`, …) rather
/// than a custom resource's.
fn built_in(api_version: &str) -> bool {
    match api_version.split_once('/') {
        None => true,
        Some((group, _)) => !group.contains('.') || group.ends_with(".k8s.io"),
    }
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

/// Stores `next` as the object's finalizers (a new resourceVersion); a terminating object
/// whose last finalizer went is removed.
fn store_finalizers(state: &mut State, key: &ObjectKey, next: &[String]) {
    let rv = state.next();
    let Some(stored) = state.objects.get_mut(key) else {
        return;
    };
    if next.is_empty() {
        remove_meta(&mut stored.object, "finalizers");
    } else {
        set_meta(&mut stored.object, "finalizers", json!(next));
    }
    set_meta(&mut stored.object, "resourceVersion", json!(rv.to_string()));
    let gone = terminating(&stored.object) && next.is_empty();
    state.emit(key, "MODIFIED", None);
    if gone {
        remove_cascading(state, key);
    }
    state.log("finalizers", key, true);
}

impl KubeApi for FakeApi {
    async fn get(&self, key: &ObjectKey) -> Result<Option<Value>, ApiError> {
        self.check(Verb::Get, key).await?;
        Ok(self.object(key))
    }

    async fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<Value>, ApiError> {
        self.check(
            Verb::List,
            &ObjectKey::new(api_version, kind, namespace, "*"),
        )
        .await?;
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
            .map(|(k, s)| {
                // As kube-apiserver answers a list of a built-in kind: the items carry no
                // TypeMeta (custom resources, served unstructured, keep theirs).
                let mut item = s.object.clone();
                if let Some(map) = item.as_object_mut().filter(|_| built_in(&k.api_version)) {
                    map.remove("apiVersion");
                    map.remove("kind");
                }
                item
            })
            .collect())
    }

    async fn apply(&self, object: &Value) -> Result<Value, ApiError> {
        self.check(Verb::Apply, &key_of("apply", object)?).await?;
        apply_locked(&mut self.lock(), FIELD_MANAGER, object).map(|(object, _)| object)
    }

    async fn apply_status(&self, key: &ObjectKey, status: &Value) -> Result<(), ApiError> {
        self.check(Verb::ApplyStatus, key).await?;
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
            state.emit(key, "MODIFIED", None);
        }
        state.log("apply-status", key, changed);
        Ok(())
    }

    async fn add_finalizer(
        &self,
        key: &ObjectKey,
        current: &[String],
        finalizer: &str,
    ) -> Result<(), ApiError> {
        self.check(Verb::Finalizers, key).await?;
        let mut state = self.lock();
        let Some(stored) = state.objects.get(key).cloned() else {
            return Err(ApiError::NotFound {
                verb: "set the finalizers of",
                key: key.to_string(),
            });
        };
        // `test /metadata/finalizers` against the caller's copy.
        if finalizers(&stored.object) != current {
            return Err(ApiError::Conflict {
                key: key.to_string(),
            });
        }
        if terminating(&stored.object) {
            return Err(no_new_finalizers(
                "set the finalizers of",
                key,
                &[finalizer.to_owned()],
            ));
        }
        let mut next = current.to_vec();
        next.push(finalizer.to_owned());
        store_finalizers(&mut state, key, &next);
        Ok(())
    }

    async fn remove_finalizer(
        &self,
        key: &ObjectKey,
        index: usize,
        finalizer: &str,
    ) -> Result<(), ApiError> {
        self.check(Verb::Finalizers, key).await?;
        let mut state = self.lock();
        let Some(stored) = state.objects.get(key).cloned() else {
            return Err(ApiError::NotFound {
                verb: "set the finalizers of",
                key: key.to_string(),
            });
        };
        // `test /metadata/finalizers/{index}` against the finalizer's name.
        let mut next = finalizers(&stored.object);
        if next.get(index).map(String::as_str) != Some(finalizer) {
            return Err(ApiError::Conflict {
                key: key.to_string(),
            });
        }
        next.remove(index);
        store_finalizers(&mut state, key, &next);
        Ok(())
    }

    async fn delete(&self, key: &ObjectKey) -> Result<bool, ApiError> {
        self.check(Verb::Delete, key).await?;
        let mut state = self.lock();
        let existed = delete_locked(&mut state, key);
        state.log("delete", key, existed);
        Ok(existed)
    }

    async fn create(&self, object: &Value) -> Result<Value, ApiError> {
        let key = key_of("create", object)?;
        self.check(Verb::Create, &key).await?;
        let mut state = self.lock();
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
        state.log("create", &key, true);
        state.emit(&key, "ADDED", None);
        Ok(created)
    }

    async fn replace(&self, object: &Value) -> Result<Value, ApiError> {
        let key = key_of("replace", object)?;
        self.check(Verb::Replace, &key).await?;
        let mut state = self.lock();
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
        if next.get("spec") != stored.object.get("spec") {
            bump_generation(&mut next);
        }
        set_meta(&mut next, "resourceVersion", json!(rv.to_string()));
        if let Some(s) = state.objects.get_mut(&key) {
            s.object = next.clone();
        }
        state.log("replace", &key, true);
        state.emit(&key, "MODIFIED", None);
        Ok(next)
    }

    async fn publish_event(&self, event: &EventRecord) -> Result<(), ApiError> {
        self.check(Verb::Event, &event.regarding).await?;
        let mut state = self.lock();
        state.events.push(event.clone());
        state.log("event", &event.regarding, true);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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

    fn deployment(env: Value, labels: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "ns", "labels": labels},
            "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "a:1", "env": env}]}}}
        })
    }

    fn deployment_key() -> ObjectKey {
        ObjectKey::new("apps/v1", "Deployment", Some("ns"), "d")
    }

    #[tokio::test]
    async fn apply_creates_then_changes_only_what_differs() {
        let api = FakeApi::new();
        let first = api
            .apply(&deployment(json!([]), json!({"a": "1"})))
            .await
            .expect("apply");
        let again = api
            .apply(&deployment(json!([]), json!({"a": "1"})))
            .await
            .expect("apply");
        assert_eq!(resource_version(&first), resource_version(&again));
        // A label is metadata: a new resourceVersion, the same generation.
        let relabelled = api
            .apply(&deployment(json!([]), json!({"a": "2"})))
            .await
            .expect("apply");
        assert_ne!(resource_version(&relabelled), resource_version(&first));
        assert_eq!(relabelled.pointer("/metadata/generation"), Some(&json!(1)));
        // A spec change moves the generation.
        let changed = api
            .apply(&deployment(
                json!([{"name": "X", "value": "1"}]),
                json!({"a": "2"}),
            ))
            .await
            .expect("apply");
        assert_eq!(changed.pointer("/metadata/generation"), Some(&json!(2)));
        // So does nothing else: a status write leaves it.
        api.roll_out(&deployment_key()).expect("roll out");
        assert_eq!(
            api.object(&deployment_key())
                .and_then(|d| d.pointer("/metadata/generation").cloned()),
            Some(json!(2))
        );
        assert_eq!(api.changes().len(), 3);
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
        assert_eq!(applied["data"], json!({"a": "1", "theirs": "x"}));
    }

    #[tokio::test]
    async fn keyed_lists_merge_item_by_item() {
        let api = FakeApi::new();
        let ours = json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]);
        api.apply(&deployment(ours, json!({})))
            .await
            .expect("apply");
        // A mutating admission or a user adds an env var and a sidecar of their own.
        api.apply_as(
            "injector",
            &json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "d", "namespace": "ns"},
                "spec": {"template": {"spec": {"containers": [
                    {"name": "app", "env": [{"name": "THEIRS", "value": "x"}]},
                    {"name": "sidecar", "image": "s:1"}
                ]}}}
            }),
        )
        .expect("apply");
        // We drop B and change A: theirs stay.
        let applied = api
            .apply(&deployment(json!([{"name": "A", "value": "9"}]), json!({})))
            .await
            .expect("apply");
        let containers = applied
            .pointer("/spec/template/spec/containers")
            .and_then(Value::as_array)
            .expect("containers");
        let names: Vec<&str> = containers
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, vec!["app", "sidecar"]);
        assert_eq!(
            containers[0]["env"],
            json!([{"name": "A", "value": "9"}, {"name": "THEIRS", "value": "x"}])
        );
    }

    #[tokio::test]
    async fn list_items_carry_no_type_meta() {
        let api = FakeApi::new();
        api.apply(&config_map(json!({}))).await.expect("apply");
        let items = api
            .list("v1", "ConfigMap", Some("ns"), &BTreeMap::new())
            .await
            .expect("list");
        assert_eq!(items.len(), 1);
        assert!(ObjectKey::of(&items[0]).is_none(), "{}", items[0]);
        assert_eq!(ObjectKey::listed("v1", "ConfigMap", &items[0]), Some(key()));
    }

    #[tokio::test]
    async fn finalizers_hold_deletion_and_owners_cascade() {
        let api = FakeApi::new();
        let owner = api.apply(&config_map(json!({}))).await.expect("apply");
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
        api.add_finalizer(&key(), &[], "x").await.expect("add");
        // A stale copy that saw no finalizers fails the `test` operation.
        assert!(matches!(
            api.add_finalizer(&key(), &[], "y").await,
            Err(ApiError::Conflict { .. })
        ));
        // A copy stale only in its resourceVersion does not matter.
        api.apply_as("someone", &config_map(json!({"other": "1"})))
            .expect("apply");
        api.add_finalizer(&key(), &["x".to_owned()], "y")
            .await
            .expect("add");

        assert!(api.delete(&key()).await.expect("delete"));
        let held = api.object(&key()).expect("held by the finalizers");
        assert_eq!(held.pointer("/metadata/generation"), Some(&json!(2)));
        assert!(matches!(
            api.add_finalizer(&key(), &["x".to_owned(), "y".to_owned()], "z")
                .await,
            Err(ApiError::Invalid { .. })
        ));
        assert!(matches!(
            api.remove_finalizer(&key(), 0, "y").await,
            Err(ApiError::Conflict { .. })
        ));
        api.remove_finalizer(&key(), 0, "x").await.expect("remove");
        assert!(api.object(&key()).is_some(), "y still holds it");
        api.remove_finalizer(&key(), 0, "y").await.expect("remove");
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

    #[tokio::test]
    async fn faults_fail_or_hang_one_handle() {
        let api = FakeApi::new();
        let other = api.handle();
        api.inject(
            Verb::Apply,
            Some("ConfigMap"),
            Some(Fault::Error("admission webhook denied".to_owned())),
        );
        let error = api
            .apply(&config_map(json!({})))
            .await
            .expect_err("injected");
        assert_eq!(
            error.to_string(),
            "failed to apply ConfigMap ns/c: admission webhook denied"
        );
        other
            .apply(&config_map(json!({})))
            .await
            .expect("the other handle is healthy");

        api.heal();
        api.hang_everything();
        for verb in Verb::ALL {
            let call = async {
                match verb {
                    Verb::Get => api.get(&key()).await.map(drop),
                    Verb::List => api
                        .list("v1", "ConfigMap", None, &BTreeMap::new())
                        .await
                        .map(drop),
                    Verb::Apply => api.apply(&config_map(json!({}))).await.map(drop),
                    Verb::ApplyStatus => api.apply_status(&key(), &json!({})).await,
                    Verb::Finalizers => api.add_finalizer(&key(), &[], "x").await,
                    Verb::Delete => api.delete(&key()).await.map(drop),
                    Verb::Create => api.create(&config_map(json!({}))).await.map(drop),
                    Verb::Replace => api.replace(&config_map(json!({}))).await.map(drop),
                    Verb::Event => {
                        api.publish_event(&EventRecord {
                            regarding: key(),
                            uid: None,
                            type_: super::super::EventType::Normal,
                            reason: "R".to_owned(),
                            action: "A".to_owned(),
                            note: String::new(),
                        })
                        .await
                    }
                }
            };
            assert!(
                tokio::time::timeout(Duration::from_millis(20), call)
                    .await
                    .is_err(),
                "{verb:?} hangs"
            );
        }
        api.heal();
        assert!(api.get(&key()).await.expect("healed").is_some());
    }
}
