//! Reconciles against the in-memory Kubernetes API and in-memory backends.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use serde_json::{json, Value};
use time::OffsetDateTime;
use zori_operator::{
    api::{
        fake::{FakeApi, Fault, Verb, USER_MANAGER},
        EventType, KubeApi, ObjectKey,
    },
    backends::{Backend, MemoryBackends},
    builders::secret::keys,
    config::Platform,
    crd::{self, ZoriProject, ZoriProjectSpec, ZoriProjectStatus},
    provision::Provisioning,
    reconcile::{reconcile, Backoff, Context, Next, FINALIZER, PROGRESS_CHECK, RESYNC},
    status::{reasons, types, Condition, ConditionStatus},
};

use zori_operator::naming::{derive_tenant_id, TenantNames};

use super::common::{minimal, production, CountingRandomness};

/// The names the operator derives for the examples' `shops/acme`.
fn acme() -> TenantNames {
    TenantNames::for_tenant(&derive_tenant_id("shops", "acme"))
}

struct Harness {
    ctx: Context<FakeApi, MemoryBackends>,
    now: Arc<AtomicI64>,
}

const T0: i64 = 1_750_000_000;

impl Harness {
    fn new() -> Self {
        let now = Arc::new(AtomicI64::new(T0));
        let clock = now.clone();
        Self {
            ctx: Context {
                api: FakeApi::new(),
                backends: MemoryBackends::new(),
                platform: Platform::local(),
                clock: Box::new(move || {
                    OffsetDateTime::from_unix_timestamp(clock.load(Ordering::SeqCst))
                        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
                }),
                random: Box::new(CountingRandomness::default()),
                backoff: Backoff::default(),
                provisioning: Provisioning::default(),
                stream_fill: Default::default(),
            },
            now,
        }
    }

    fn api(&self) -> &FakeApi {
        &self.ctx.api
    }

    fn advance(&self, seconds: i64) {
        self.now.fetch_add(seconds, Ordering::SeqCst);
    }

    /// Creates the project as a user would (no status, no uid: the fake gives one).
    fn create(&self, project: &ZoriProject) -> ObjectKey {
        let mut value = serde_json::to_value(project).expect("serialises");
        if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("uid");
            meta.remove("generation");
        }
        self.api().insert(value).expect("insert");
        ObjectKey::new(
            crd::API_VERSION,
            crd::KIND,
            project.metadata.namespace.as_deref(),
            project.metadata.name.as_deref().expect("name"),
        )
    }

    fn project(&self, key: &ObjectKey) -> ZoriProject {
        serde_json::from_value(self.api().object(key).expect("project exists"))
            .expect("a ZoriProject")
    }

    async fn reconcile(&self, key: &ObjectKey) -> Next {
        let project = self.project(key);
        reconcile(&project, &self.ctx).await.expect("reconcile")
    }

    fn status(&self, key: &ObjectKey) -> ZoriProjectStatus {
        self.project(key).status.expect("status")
    }

    fn condition(&self, key: &ObjectKey, type_: &str) -> Condition {
        self.status(key)
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} condition"))
    }

    /// Changes the spec as the user would (`kubectl apply` of the edited manifest).
    fn edit(&self, key: &ObjectKey, change: impl FnOnce(&mut ZoriProjectSpec)) {
        let mut spec = self.project(key).spec;
        change(&mut spec);
        self.api()
            .apply_as(
                USER_MANAGER,
                &json!({
                    "apiVersion": crd::API_VERSION,
                    "kind": crd::KIND,
                    "metadata": {"name": key.name, "namespace": key.namespace},
                    "spec": spec,
                }),
            )
            .expect("user apply");
    }

    fn child(&self, kind: &str, name: &str) -> Option<Value> {
        let api_version = match kind {
            "Deployment" => "apps/v1",
            "PodDisruptionBudget" => "policy/v1",
            "Ingress" => "networking.k8s.io/v1",
            _ => "v1",
        };
        self.api()
            .object(&ObjectKey::new(api_version, kind, Some("shops"), name))
    }

    fn roll_out(&self, name: &str) {
        self.api()
            .roll_out(&ObjectKey::new(
                "apps/v1",
                "Deployment",
                Some("shops"),
                name,
            ))
            .expect("roll out");
    }

    fn event_reasons(&self) -> Vec<String> {
        self.api().events().into_iter().map(|e| e.reason).collect()
    }
}

fn status_of(c: &Condition) -> (ConditionStatus, &str) {
    (c.status, c.reason.as_str())
}

#[tokio::test]
async fn create_makes_children_backends_and_status() {
    let h = Harness::new();
    let key = h.create(&minimal());
    let next = h.reconcile(&key).await;
    assert_eq!(
        next,
        Next::Requeue(PROGRESS_CHECK),
        "workloads are not rolled out yet"
    );

    let project = h.project(&key);
    assert_eq!(
        project.metadata.finalizers,
        Some(vec![FINALIZER.to_owned()])
    );
    let uid = project.metadata.uid.clone().expect("uid");
    for (kind, name) in [
        ("Secret", "acme-credentials"),
        ("Deployment", "acme-ingest"),
        ("Deployment", "acme-api"),
        ("Service", "acme-ingest"),
        ("Service", "acme-api"),
        ("PodDisruptionBudget", "acme-ingest"),
        ("PodDisruptionBudget", "acme-api"),
    ] {
        let child = h
            .child(kind, name)
            .unwrap_or_else(|| panic!("{kind} {name} missing"));
        assert_eq!(
            child
                .pointer("/metadata/ownerReferences/0/uid")
                .and_then(Value::as_str),
            Some(uid.as_str()),
            "{kind} {name} is owned by the project"
        );
    }
    assert!(h.child("Ingress", "acme").is_none());

    assert!(h.ctx.backends.stream(&acme().subjects.stream).is_some());
    let secret = h.child("Secret", "acme-credentials").expect("secret");
    let password = secret
        .pointer(&format!("/data/{}", keys::POSTGRES_PASSWORD))
        .and_then(Value::as_str)
        .expect("password");
    let (schema, stored) = h
        .ctx
        .backends
        .postgres(&acme().postgres_role)
        .expect("role");
    assert_eq!(schema, acme().postgres_schema);
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(password)
        .expect("base64");
    assert_eq!(
        stored.as_bytes(),
        decoded.as_slice(),
        "the role uses the Secret's password"
    );
    assert!(h.ctx.backends.has_database(&acme().clickhouse_database));

    let status = h.status(&key);
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.tenant_id, Some(acme().tenant_id));
    let names = status.names.as_ref().expect("names");
    assert_eq!(names.stream, acme().subjects.stream);
    assert_eq!(names.subjects, acme().subjects.wildcard);
    assert!(names.subjects.starts_with("zori.shops_acme_"));
    assert_eq!(names.postgres_role, acme().postgres_role);
    assert_eq!(names.clickhouse_database, acme().clickhouse_database);
    assert_eq!(names.secret, "acme-credentials");
    let endpoints = status.endpoints.as_ref().expect("endpoints");
    assert_eq!(
        endpoints.tracking,
        "http://acme-ingest.shops.svc.cluster.local"
    );
    assert_eq!(
        endpoints.tracker_script,
        "http://acme-ingest.shops.svc.cluster.local/zori.js"
    );
    assert_eq!(
        endpoints.stripe_webhook,
        "http://acme-api.shops.svc.cluster.local/webhooks/stripe"
    );

    let types_seen: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(
        types_seen,
        vec![
            types::READY,
            types::SECRET,
            types::STREAM,
            types::POSTGRES,
            types::CLICKHOUSE,
            types::INGEST,
            types::API,
            types::ISOLATED,
            types::STREAM_BUFFER,
        ]
    );
    for t in [
        types::SECRET,
        types::STREAM,
        types::POSTGRES,
        types::CLICKHOUSE,
    ] {
        assert_eq!(
            status_of(&h.condition(&key, t)),
            (ConditionStatus::True, reasons::PROVISIONED),
            "{t}"
        );
    }
    assert_eq!(
        status_of(&h.condition(&key, types::INGEST)),
        (ConditionStatus::False, reasons::PROGRESSING)
    );
    assert_eq!(
        status_of(&h.condition(&key, types::READY)),
        (ConditionStatus::False, reasons::WORKLOAD_NOT_READY)
    );
    for c in &status.conditions {
        assert_eq!(c.observed_generation, Some(1));
        assert_eq!(c.last_transition_time, "2025-06-15T15:06:40Z");
    }
    assert_eq!(
        h.event_reasons(),
        vec![
            "SecretCreated",
            "StreamCreated",
            "PostgresCreated",
            "ClickHouseCreated"
        ]
    );

    // The pods come up: Ready flips, and only the flipped conditions get a new time.
    h.roll_out("acme-ingest");
    h.roll_out("acme-api");
    h.advance(60);
    h.api().clear_log();
    assert_eq!(h.reconcile(&key).await, Next::Requeue(RESYNC));
    let ready = h.condition(&key, types::READY);
    assert_eq!(
        status_of(&ready),
        (ConditionStatus::True, reasons::RECONCILED)
    );
    assert_eq!(ready.last_transition_time, "2025-06-15T15:07:40Z");
    assert_eq!(
        h.condition(&key, types::STREAM).last_transition_time,
        "2025-06-15T15:06:40Z"
    );
    assert_eq!(
        status_of(&h.condition(&key, types::API)),
        (ConditionStatus::True, reasons::AVAILABLE)
    );
    assert_eq!(h.event_reasons(), vec![reasons::RECONCILED]);
}

#[tokio::test]
async fn a_second_reconcile_writes_nothing() {
    let h = Harness::new();
    let key = h.create(&production());
    h.api()
        .insert(serde_json::to_value(stripe_secret()).expect("json"))
        .expect("stripe secret");
    h.reconcile(&key).await;
    h.roll_out("bakery-ingest");
    h.roll_out("bakery-api");
    h.reconcile(&key).await;
    assert_eq!(
        status_of(&h.condition(&key, types::READY)),
        (ConditionStatus::True, reasons::RECONCILED)
    );

    h.api().clear_log();
    h.ctx.backends.clear_mutations();
    h.advance(300);
    let before = h.api().object(&key);
    assert_eq!(h.reconcile(&key).await, Next::Requeue(RESYNC));
    assert_eq!(h.api().changes(), vec![], "no write changed anything");
    assert!(h.api().events().is_empty(), "no events");
    assert!(h.ctx.backends.mutations().is_empty(), "no backend changes");
    assert_eq!(h.api().object(&key), before);
    assert!(
        h.api().writes().iter().all(|w| w.verb == "apply"),
        "only no-op applies: {:?}",
        h.api().writes()
    );
}

fn stripe_secret() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "bakery-stripe", "namespace": "shops"},
        "data": {"webhook-secret": "d2hzZWNfdGVzdA=="}
    })
}

#[tokio::test]
async fn the_production_example_gets_an_ingress_and_public_endpoints() {
    let h = Harness::new();
    let key = h.create(&production());
    h.api().insert(stripe_secret()).expect("stripe secret");
    h.reconcile(&key).await;
    let ingress = h.child("Ingress", "bakery").expect("ingress");
    assert_eq!(
        ingress.pointer("/spec/rules/0/host"),
        Some(&json!("t.bakery.example.com"))
    );
    // The dashboard is reachable on the host: `/` (Exact) and its assets go to the api.
    let paths = ingress
        .pointer("/spec/rules/0/http/paths")
        .and_then(|p| p.as_array())
        .expect("paths");
    let dashboard = paths
        .iter()
        .find(|p| p["path"] == json!("/"))
        .expect("dashboard path");
    assert_eq!(dashboard["pathType"], json!("Exact"));
    assert_eq!(dashboard["backend"]["service"]["name"], json!("bakery-api"));
    assert!(paths
        .iter()
        .any(|p| p["path"] == json!("/assets") && p["pathType"] == json!("Prefix")));
    let endpoints = h.status(&key).endpoints.expect("endpoints");
    assert_eq!(endpoints.tracking, "https://t.bakery.example.com");
    assert_eq!(
        endpoints.stripe_webhook,
        "https://t.bakery.example.com/webhooks/stripe"
    );
    assert_eq!(
        status_of(&h.condition(&key, types::INGRESS)),
        (ConditionStatus::True, reasons::CONFIGURED)
    );
    let deployment = h.child("Deployment", "bakery-ingest").expect("deployment");
    assert_eq!(deployment.pointer("/spec/replicas"), Some(&json!(3)));

    // Removing the ingress from the spec removes the Ingress and its condition.
    h.edit(&key, |spec| spec.ingress = None);
    h.reconcile(&key).await;
    assert!(h.child("Ingress", "bakery").is_none());
    assert!(h
        .status(&key)
        .conditions
        .iter()
        .all(|c| c.type_ != types::INGRESS));
    assert_eq!(
        h.status(&key).endpoints.expect("endpoints").tracking,
        "http://bakery-ingest.shops.svc.cluster.local"
    );
}

#[tokio::test]
async fn a_spec_change_updates_the_children_and_the_stream() {
    let h = Harness::new();
    let key = h.create(&minimal());
    h.reconcile(&key).await;
    let secret_before = h.child("Secret", "acme-credentials");
    h.edit(&key, |spec| {
        spec.ingest.workload.replicas = 4;
        spec.stream_limits.max_bytes = crd::Quantity::new("2Gi");
        spec.allowed_origins
            .push("https://www.shop.example.com".to_owned());
    });
    h.api().clear_log();
    h.ctx.backends.clear_mutations();
    assert_eq!(h.project(&key).metadata.generation, Some(2));
    h.reconcile(&key).await;

    let deployment = h.child("Deployment", "acme-ingest").expect("deployment");
    assert_eq!(deployment.pointer("/spec/replicas"), Some(&json!(4)));
    let env = deployment
        .pointer("/spec/template/spec/containers/0/env")
        .expect("env");
    assert!(env.as_array().expect("list").iter().any(|e| e
        == &json!({"name": "ZORI_ALLOWED_ORIGINS", "value": "https://shop.example.com,https://www.shop.example.com"})));
    assert_eq!(
        h.ctx.backends.mutations(),
        vec![format!(
            "update stream {}: max_bytes",
            acme().subjects.stream
        )]
    );
    assert_eq!(
        h.ctx
            .backends
            .stream(&acme().subjects.stream)
            .expect("stream")
            .max_bytes,
        2 << 30
    );
    assert_eq!(
        h.child("Secret", "acme-credentials"),
        secret_before,
        "the Secret is untouched"
    );
    let changed: Vec<String> = h
        .api()
        .changes()
        .iter()
        .map(|w| format!("{} {}", w.verb, w.key))
        .collect();
    assert_eq!(
        changed,
        vec![
            "event ZoriProject shops/acme",
            "apply Deployment shops/acme-ingest",
            "apply-status ZoriProject shops/acme"
        ]
    );
    assert_eq!(h.event_reasons(), vec!["StreamUpdated"]);
    assert_eq!(h.status(&key).observed_generation, Some(2));
    assert_eq!(
        h.condition(&key, types::STREAM).observed_generation,
        Some(2)
    );
}

#[tokio::test]
async fn drift_in_the_stream_is_repaired() {
    let h = Harness::new();
    let key = h.create(&minimal());
    h.reconcile(&key).await;
    h.ctx.backends.tamper_stream(&acme().subjects.stream, |s| {
        s.max_age = Duration::from_secs(60)
    });
    // A reconcile triggered by something else before the resync leaves the backends alone…
    h.reconcile(&key).await;
    assert_eq!(
        h.ctx
            .backends
            .stream(&acme().subjects.stream)
            .expect("stream")
            .max_age,
        Duration::from_secs(60)
    );
    // …the resync repairs the drift.
    h.advance(RESYNC.as_secs() as i64);
    h.reconcile(&key).await;
    assert_eq!(
        h.ctx
            .backends
            .stream(&acme().subjects.stream)
            .expect("stream")
            .max_age,
        Duration::from_secs(168 * 3600)
    );
}

#[tokio::test]
async fn an_invalid_spec_gets_a_condition_and_an_event_and_no_children() {
    let h = Harness::new();
    let mut project = minimal();
    project.spec.allowed_origins = vec!["shop.example.com".to_owned()];
    project.spec.stream_limits.replicas = 9;
    let key = h.create(&project);
    assert_eq!(h.reconcile(&key).await, Next::Invalid);

    let ready = h.condition(&key, types::READY);
    assert_eq!(
        status_of(&ready),
        (ConditionStatus::False, reasons::INVALID_SPEC)
    );
    assert_eq!(
        ready.message,
        "spec.allowedOrigins[0]: \"shop.example.com\" is not an http(s) origin such as https://shop.example.com; \
         spec.streamLimits.replicas: must be between 1 and 5"
    );
    let events = h.api().events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].type_, EventType::Warning);
    assert_eq!(events[0].reason, reasons::INVALID_SPEC);
    assert!(events[0].note.contains("spec.allowedOrigins[0]"));
    let kinds: Vec<String> = h.api().keys().into_iter().map(|k| k.kind).collect();
    assert_eq!(kinds, vec![crd::KIND], "no children");
    assert!(h.ctx.backends.mutations().is_empty(), "no backends");
    assert_eq!(
        h.status(&key).tenant_id,
        Some(acme().tenant_id),
        "the id is pinned"
    );

    // Waiting: the same invalid spec again writes nothing and sends nothing.
    h.api().clear_log();
    assert_eq!(h.reconcile(&key).await, Next::Invalid);
    assert!(h.api().changes().is_empty(), "{:?}", h.api().changes());

    // Fixing it reconciles everything.
    h.edit(&key, |spec| {
        spec.allowed_origins = vec!["https://shop.example.com".to_owned()];
        spec.stream_limits.replicas = 1;
    });
    h.api().clear_log();
    h.reconcile(&key).await;
    assert!(h.child("Deployment", "acme-api").is_some());
    assert_eq!(
        status_of(&h.condition(&key, types::READY)),
        (ConditionStatus::False, reasons::WORKLOAD_NOT_READY)
    );
    assert_eq!(
        h.event_reasons(),
        vec![
            "SecretCreated",
            "StreamCreated",
            "PostgresCreated",
            "ClickHouseCreated"
        ]
    );
}

#[tokio::test]
async fn transient_backend_failures_back_off_and_recover() {
    let h = Harness::new();
    let key = h.create(&minimal());
    h.ctx.backends.fail(
        Backend::ClickHouse,
        Some("failed to create ClickHouse database zori_shops_acme: connection refused"),
    );
    assert_eq!(
        h.reconcile(&key).await,
        Next::Retry {
            after: Backoff::BASE,
            reason: reasons::PROVISIONING_FAILED
        }
    );
    let condition = h.condition(&key, types::CLICKHOUSE);
    assert_eq!(
        status_of(&condition),
        (ConditionStatus::False, reasons::PROVISIONING_FAILED)
    );
    assert!(condition.message.contains("connection refused"));
    assert_eq!(
        status_of(&h.condition(&key, types::READY)),
        (ConditionStatus::False, reasons::BACKEND_NOT_READY)
    );
    let warnings: Vec<_> = h
        .api()
        .events()
        .into_iter()
        .filter(|e| e.type_ == EventType::Warning)
        .collect();
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].reason, reasons::PROVISIONING_FAILED);
    assert!(warnings[0]
        .note
        .starts_with("ClickHouseReady: failed to create ClickHouse database"));
    // The rest was still provisioned and applied.
    assert!(h.child("Deployment", "acme-ingest").is_some());

    h.api().clear_log();
    h.advance(Backoff::BASE.as_secs() as i64);
    assert_eq!(
        h.reconcile(&key).await,
        Next::Retry {
            after: Backoff::BASE * 2,
            reason: reasons::PROVISIONING_FAILED
        },
        "backs off"
    );
    assert!(
        h.api().events().is_empty(),
        "the same failure is reported once"
    );

    h.ctx.backends.fail(Backend::ClickHouse, None);
    h.advance((Backoff::BASE * 2).as_secs() as i64);
    h.reconcile(&key).await;
    assert_eq!(
        status_of(&h.condition(&key, types::CLICKHOUSE)),
        (ConditionStatus::True, reasons::PROVISIONED)
    );
    h.ctx.backends.fail(Backend::Stream, Some("nats down"));
    h.advance(RESYNC.as_secs() as i64);
    assert_eq!(
        h.reconcile(&key).await,
        Next::Retry {
            after: Backoff::BASE,
            reason: reasons::PROVISIONING_FAILED
        },
        "success reset the backoff"
    );
}

/// A project made Ready, with its rolled-out Deployments.
async fn ready_project(h: &Harness) -> ObjectKey {
    let key = h.create(&minimal());
    h.reconcile(&key).await;
    h.roll_out("acme-ingest");
    h.roll_out("acme-api");
    h.reconcile(&key).await;
    assert_eq!(
        status_of(&h.condition(&key, types::READY)),
        (ConditionStatus::True, reasons::RECONCILED)
    );
    key
}

#[tokio::test]
async fn status_writes_and_rollouts_do_not_call_the_backends_again() {
    let h = Harness::new();
    let key = ready_project(&h).await;
    let calls = h.ctx.backends.calls();

    // The watch on the project sees its own status write; the watch on the Deployments sees
    // a rollout (a status change). Each triggers a reconcile; none reaches the backends.
    h.advance(1);
    h.reconcile(&key).await;
    h.api()
        .set_status(
            &ObjectKey::new("apps/v1", "Deployment", Some("shops"), "acme-api"),
            json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 0,
                   "readyReplicas": 0, "availableReplicas": 0}),
        )
        .expect("status");
    h.advance(1);
    h.reconcile(&key).await;
    assert_eq!(
        status_of(&h.condition(&key, types::API)),
        (ConditionStatus::False, reasons::PROGRESSING),
        "the rollout is still reported"
    );
    h.roll_out("acme-api");
    h.advance(1);
    assert_eq!(h.reconcile(&key).await, Next::Requeue(RESYNC));
    assert_eq!(h.ctx.backends.calls(), calls, "no backend call");
    assert_eq!(
        status_of(&h.condition(&key, types::STREAM)),
        (ConditionStatus::True, reasons::PROVISIONED)
    );

    // A spec change that concerns them does; so does the resync.
    h.edit(&key, |spec| {
        spec.stream_limits.max_bytes = crd::Quantity::new("2Gi")
    });
    h.reconcile(&key).await;
    assert_eq!(h.ctx.backends.calls(), calls + 3);
    h.advance(RESYNC.as_secs() as i64);
    h.reconcile(&key).await;
    assert_eq!(h.ctx.backends.calls(), calls + 6);
}

/// Drives reconciles as the controller would for `seconds`: on every change of the project
/// or its children (the watches), and when a requeue is due. Returns how many ran.
async fn run_controller(h: &Harness, key: &ObjectKey, seconds: i64, tick: impl Fn(i64)) -> usize {
    let fingerprint = |h: &Harness| -> Vec<Option<Value>> {
        h.api()
            .keys()
            .into_iter()
            .map(|k| {
                h.api()
                    .object(&k)
                    .and_then(|o| o.pointer("/metadata/resourceVersion").cloned())
            })
            .collect()
    };
    let mut seen = fingerprint(h);
    let mut due = 0;
    let mut runs = 0;
    for t in 0..seconds {
        tick(t);
        let now = fingerprint(h);
        if now != seen || t >= due {
            // What this reconcile writes is seen by the watches in the next round.
            seen = now;
            runs += 1;
            let after = match h.reconcile(key).await {
                Next::Requeue(after) | Next::Retry { after, .. } => after,
                Next::Invalid | Next::AwaitChange => Duration::from_secs(3600),
            };
            due = t + after.as_secs() as i64;
        }
        h.advance(1);
    }
    runs
}

#[tokio::test]
async fn a_failing_backend_with_a_changing_message_is_retried_with_backoff() {
    let h = Harness::new();
    let key = ready_project(&h).await;
    let calls = h.ctx.backends.calls();
    h.advance(RESYNC.as_secs() as i64);
    // The error names the time: every attempt's message differs, and so does the status.
    let runs = run_controller(&h, &key, 120, |t| {
        h.ctx.backends.fail(
            Backend::ClickHouse,
            Some(&format!(
                "failed to create database: connection refused at +{t}s"
            )),
        );
    })
    .await;
    // Attempts at 0, 5, 15, 35 and 75 s: three backend calls each.
    assert_eq!(h.ctx.backends.calls() - calls, 5 * 3, "{runs} reconciles");
    assert!(runs <= 12, "{runs} reconciles in two minutes");
    let condition = h.condition(&key, types::CLICKHOUSE);
    assert!(
        condition.message.ends_with("at +75s"),
        "{}",
        condition.message
    );
}

#[tokio::test]
async fn a_failing_apply_is_reported_on_its_workload() {
    let h = Harness::new();
    let key = h.create(&minimal());
    h.api().inject(
        Verb::Apply,
        Some("PodDisruptionBudget"),
        Some(Fault::Error("admission webhook denied".to_owned())),
    );
    assert!(matches!(
        h.reconcile(&key).await,
        Next::Retry {
            reason: reasons::APPLY_FAILED,
            ..
        }
    ));
    let ingest = h.condition(&key, types::INGEST);
    assert_eq!(
        status_of(&ingest),
        (ConditionStatus::False, reasons::APPLY_FAILED)
    );
    assert!(
        ingest
            .message
            .contains("PodDisruptionBudget shops/acme-ingest"),
        "{}",
        ingest.message
    );
    assert!(h
        .event_reasons()
        .contains(&reasons::APPLY_FAILED.to_owned()));
}

#[tokio::test]
async fn a_missing_stripe_secret_is_named() {
    let h = Harness::new();
    let key = h.create(&production());
    assert!(matches!(
        h.reconcile(&key).await,
        Next::Retry {
            reason: reasons::STRIPE_SECRET_NOT_FOUND,
            ..
        }
    ));
    let api = h.condition(&key, types::API);
    assert_eq!(
        status_of(&api),
        (ConditionStatus::False, reasons::STRIPE_SECRET_NOT_FOUND)
    );
    assert_eq!(
        api.message,
        "Secret bakery-stripe named in spec.stripe.webhookSecretRef does not exist"
    );
    assert!(h
        .event_reasons()
        .contains(&reasons::STRIPE_SECRET_NOT_FOUND.to_owned()));

    h.api().insert(stripe_secret()).expect("stripe secret");
    h.roll_out("bakery-ingest");
    h.roll_out("bakery-api");
    h.reconcile(&key).await;
    // The Stripe secret's hash joined the pod template: a new rollout starts.
    assert_eq!(
        status_of(&h.condition(&key, types::API)),
        (ConditionStatus::False, reasons::PROGRESSING)
    );
    h.roll_out("bakery-api");
    h.reconcile(&key).await;
    assert_eq!(
        status_of(&h.condition(&key, types::READY)),
        (ConditionStatus::True, reasons::RECONCILED)
    );
}

#[tokio::test]
async fn the_secret_survives_and_is_recreated_loudly() {
    let h = Harness::new();
    let key = h.create(&minimal());
    h.reconcile(&key).await;
    let first = h.child("Secret", "acme-credentials").expect("secret");
    h.reconcile(&key).await;
    assert_eq!(
        h.child("Secret", "acme-credentials").expect("secret")["data"],
        first["data"]
    );

    // Someone deletes it: new values, a Warning, and the role follows the new password.
    let secret_key = ObjectKey::new("v1", "Secret", Some("shops"), "acme-credentials");
    h.api().delete(&secret_key).await.expect("delete");
    h.api().clear_log();
    h.reconcile(&key).await;
    let second = h.child("Secret", "acme-credentials").expect("secret");
    assert_ne!(second["data"], first["data"]);
    assert!(h.event_reasons().contains(&"SecretRecreated".to_owned()));
    assert!(h
        .ctx
        .backends
        .mutations()
        .contains(&format!("update role {}", acme().postgres_role)));
}

#[tokio::test]
async fn other_managers_fields_are_kept() {
    let h = Harness::new();
    let key = h.create(&minimal());
    h.reconcile(&key).await;
    h.api()
        .apply_as(
            "someone",
            &json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "acme-api", "namespace": "shops", "annotations": {"team": "growth"}}
            }),
        )
        .expect("apply");
    h.api().clear_log();
    h.reconcile(&key).await;
    let deployment = h.child("Deployment", "acme-api").expect("deployment");
    assert_eq!(
        deployment.pointer("/metadata/annotations/team"),
        Some(&json!("growth"))
    );
    assert!(h.api().changes().is_empty());
}

#[tokio::test]
async fn suspend_scales_to_zero_and_says_so() {
    let h = Harness::new();
    let key = h.create(&minimal());
    h.reconcile(&key).await;
    h.edit(&key, |spec| spec.suspend = true);
    assert_eq!(h.reconcile(&key).await, Next::Requeue(RESYNC));
    assert_eq!(
        h.child("Deployment", "acme-api")
            .expect("api")
            .pointer("/spec/replicas"),
        Some(&json!(0))
    );
    assert_eq!(
        status_of(&h.condition(&key, types::READY)),
        (ConditionStatus::False, reasons::SUSPENDED)
    );
    assert_eq!(
        status_of(&h.condition(&key, types::INGEST)),
        (ConditionStatus::False, reasons::SUSPENDED)
    );
    assert!(
        h.ctx.backends.stream(&acme().subjects.stream).is_some(),
        "data is kept"
    );
}

fn project_in(namespace: &str, name: &str) -> ZoriProject {
    let mut project = minimal();
    project.metadata.namespace = Some(namespace.to_owned());
    project.metadata.name = Some(name.to_owned());
    project
}

#[tokio::test]
async fn colliding_names_get_different_tenant_ids() {
    let h = Harness::new();
    let first_key = h.create(&project_in("a-b", "c"));
    let second_key = h.create(&project_in("a", "b-c"));
    h.reconcile(&first_key).await;
    h.reconcile(&second_key).await;
    let a = h.status(&first_key).tenant_id.expect("id");
    let b = h.status(&second_key).tenant_id.expect("id");
    assert_ne!(a, b);
    for id in [&a, &b] {
        assert!(
            id.starts_with("a_b_c_") && id.len() == "a_b_c_".len() + 8,
            "{id}"
        );
    }
    assert!(h
        .ctx
        .backends
        .stream(&format!("ZORI_{}", a.to_uppercase()))
        .is_some());
    assert!(h
        .ctx
        .backends
        .stream(&format!("ZORI_{}", b.to_uppercase()))
        .is_some());
    // Pinned: reconciling again keeps it.
    h.reconcile(&second_key).await;
    assert_eq!(h.status(&second_key).tenant_id.expect("id"), b);
}

#[tokio::test]
async fn a_legacy_pinned_id_stays_and_its_unmarked_objects_are_adopted() {
    let h = Harness::new();
    let key = h.create(&minimal());
    // A project provisioned by a version without owner markers, with the plain id pinned.
    h.api()
        .set_status(&key, json!({"tenantId": "shops_acme"}))
        .expect("status");
    h.reconcile(&key).await;
    assert_eq!(h.status(&key).tenant_id.as_deref(), Some("shops_acme"));
    h.ctx
        .backends
        .unmark("ZORI_SHOPS_ACME", "zori_shops_acme", "zori_shops_acme");
    h.advance(RESYNC.as_secs() as i64);
    h.reconcile(&key).await;
    assert_eq!(h.status(&key).tenant_id.as_deref(), Some("shops_acme"));
    assert_eq!(
        status_of(&h.condition(&key, types::POSTGRES)),
        (ConditionStatus::True, reasons::PROVISIONED)
    );
    let uid = h.project(&key).metadata.uid.expect("uid");
    assert_eq!(h.ctx.backends.role_owner("zori_shops_acme"), Some(uid));
}

#[tokio::test]
async fn a_forged_tenant_id_is_refused() {
    let h = Harness::new();
    let victim = h.create(&project_in("shops", "victim"));
    h.reconcile(&victim).await;
    let victim_id = h.status(&victim).tenant_id.expect("id");
    let victim_names = TenantNames::for_tenant(&victim_id);
    h.ctx.backends.clear_mutations();

    let attacker = h.create(&project_in("shops", "attacker"));
    h.api()
        .set_status(&attacker, json!({"tenantId": victim_id}))
        .expect("status");
    assert_eq!(h.reconcile(&attacker).await, Next::Invalid);
    let ready = h.condition(&attacker, types::READY);
    assert_eq!(
        status_of(&ready),
        (ConditionStatus::False, reasons::TENANT_ID_REFUSED)
    );
    assert!(
        ready.message.contains("not derived from shops/attacker"),
        "{}",
        ready.message
    );
    assert!(h.ctx.backends.mutations().is_empty(), "no backend touched");
    assert!(h.child("Secret", "attacker-credentials").is_none());
    assert!(h.child("Deployment", "attacker-api").is_none());
    let (_, password) = h
        .ctx
        .backends
        .postgres(&victim_names.postgres_role)
        .expect("the victim's role");
    assert!(!password.is_empty());

    // A legacy id another project holds is refused too: `a/b-c` may not take `a-b/c`'s `a_b_c`.
    let first = h.create(&project_in("a-b", "c"));
    h.api()
        .set_status(&first, json!({"tenantId": "a_b_c"}))
        .expect("status");
    h.reconcile(&first).await;
    let second = h.create(&project_in("a", "b-c"));
    h.api()
        .set_status(&second, json!({"tenantId": "a_b_c"}))
        .expect("status");
    assert_eq!(h.reconcile(&second).await, Next::Invalid);
    let ready = h.condition(&second, types::READY);
    assert_eq!(
        status_of(&ready),
        (ConditionStatus::False, reasons::TENANT_ID_REFUSED)
    );
    assert!(
        ready.message.contains("held by ZoriProject a-b/c"),
        "{}",
        ready.message
    );
}

#[tokio::test]
async fn a_retained_tenant_is_not_adopted_by_a_newcomer() {
    let h = Harness::new();
    let key = h.create(&minimal());
    h.reconcile(&key).await;
    let (_, password) = h
        .ctx
        .backends
        .postgres(&acme().postgres_role)
        .expect("role");
    // Deleted with reclaimPolicy Retain: the data stays, marked for the old project.
    h.api().delete(&key).await.expect("delete");
    h.reconcile(&key).await;
    assert!(h.api().object(&key).is_none(), "gone");

    // A newcomer with the same namespace and name derives the same id, but is not the owner.
    let key = h.create(&minimal());
    h.ctx.backends.clear_mutations();
    h.reconcile(&key).await;
    for type_ in [types::STREAM, types::POSTGRES] {
        let condition = h.condition(&key, type_);
        assert_eq!(
            status_of(&condition),
            (ConditionStatus::False, reasons::NOT_OWNED),
            "{type_}"
        );
        assert!(
            condition.message.contains("belongs to another ZoriProject"),
            "{}",
            condition.message
        );
    }
    assert_eq!(
        status_of(&h.condition(&key, types::CLICKHOUSE)),
        (ConditionStatus::False, reasons::NOT_OWNED)
    );
    assert!(
        h.ctx.backends.mutations().is_empty(),
        "{:?}",
        h.ctx.backends.mutations()
    );
    assert_eq!(
        h.ctx
            .backends
            .postgres(&acme().postgres_role)
            .expect("role")
            .1,
        password,
        "the retained role's password was not reset"
    );
    assert!(h.event_reasons().contains(&reasons::NOT_OWNED.to_owned()));

    // Deleting the newcomer with reclaimPolicy Delete drops nothing of the retained tenant.
    h.edit(&key, |spec| {
        spec.reclaim_policy = crd::ReclaimPolicy::Delete
    });
    h.api().delete(&key).await.expect("delete");
    h.reconcile(&key).await;
    assert!(h.ctx.backends.stream(&acme().subjects.stream).is_some());
    assert!(h.ctx.backends.postgres(&acme().postgres_role).is_some());
    assert!(h.ctx.backends.has_database(&acme().clickhouse_database));
}

#[tokio::test]
async fn the_uniqueness_check_falls_back_to_the_namespace_only_on_403() {
    let h = Harness::new();
    let key = h.create(&minimal());
    h.api().inject(
        Verb::List,
        Some(crd::KIND),
        Some(Fault::ClusterWide(Box::new(Fault::Error(
            "etcdserver: request timed out (500 InternalError)".to_owned(),
        )))),
    );
    let error = reconcile(&h.project(&key), &h.ctx)
        .await
        .expect_err("a 500 on the cluster-wide list fails the reconcile");
    assert!(error.to_string().contains("request timed out"), "{error}");
    assert!(h.ctx.backends.mutations().is_empty(), "nothing provisioned");
    assert!(h.project(&key).status.is_none(), "no id pinned");

    h.api().inject(
        Verb::List,
        Some(crd::KIND),
        Some(Fault::ClusterWide(Box::new(Fault::Forbidden))),
    );
    h.reconcile(&key).await;
    assert_eq!(h.status(&key).tenant_id, Some(acme().tenant_id));
}

#[tokio::test]
async fn delete_with_retain_keeps_the_data() {
    let h = Harness::new();
    let key = h.create(&minimal());
    h.reconcile(&key).await;
    h.api().delete(&key).await.expect("delete");
    assert!(
        h.api().object(&key).is_some(),
        "the finalizer holds the object"
    );
    h.api().clear_log();
    assert_eq!(h.reconcile(&key).await, Next::AwaitChange);
    assert!(h.api().object(&key).is_none(), "the finalizer was removed");
    assert!(
        h.api().keys().is_empty(),
        "the children were collected: {:?}",
        h.api().keys()
    );
    assert!(h.ctx.backends.stream(&acme().subjects.stream).is_some());
    assert!(h.ctx.backends.postgres(&acme().postgres_role).is_some());
    assert!(h.ctx.backends.has_database(&acme().clickhouse_database));
    assert_eq!(h.event_reasons(), vec!["Retained"]);
}

#[tokio::test]
async fn delete_with_delete_drops_the_data_even_if_some_is_gone() {
    let h = Harness::new();
    let mut project = minimal();
    project.spec.reclaim_policy = crd::ReclaimPolicy::Delete;
    let key = h.create(&project);
    h.reconcile(&key).await;
    use zori_operator::backends::{Backends, ChTenant};
    let uid = h.project(&key).metadata.uid.expect("uid");
    h.ctx
        .backends
        .drop_clickhouse(ChTenant {
            database: &acme().clickhouse_database,
            user: None,
            owner: zori_operator::backends::Owner {
                uid: &uid,
                adopt_unmarked: false,
            },
        })
        .await
        .expect("drop");

    h.api().delete(&key).await.expect("delete");
    h.ctx
        .backends
        .fail(Backend::Postgres, Some("postgres is down"));
    assert_eq!(
        h.reconcile(&key).await,
        Next::Retry {
            after: Backoff::BASE,
            reason: reasons::RECLAIM_FAILED
        }
    );
    let ready = h.condition(&key, types::READY);
    assert_eq!(
        status_of(&ready),
        (ConditionStatus::False, reasons::RECLAIM_FAILED)
    );
    assert!(ready.message.contains("postgres is down"));
    assert!(
        h.api().object(&key).is_some(),
        "the finalizer stays until the data is gone"
    );

    h.ctx.backends.fail(Backend::Postgres, None);
    h.api().clear_log();
    assert_eq!(h.reconcile(&key).await, Next::AwaitChange);
    assert!(h.api().object(&key).is_none());
    assert!(
        h.ctx.backends.stream(&acme().subjects.stream).is_none(),
        "stream dropped (already on the failed try)"
    );
    assert!(h.ctx.backends.postgres(&acme().postgres_role).is_none());
    assert!(!h.ctx.backends.has_database(&acme().clickhouse_database));
    let events = h.api().events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reason, "Reclaimed");
    assert!(
        events[0].note.contains("already gone: stream, database"),
        "{}",
        events[0].note
    );
}

#[tokio::test]
async fn delete_before_any_name_was_pinned_touches_nothing() {
    let h = Harness::new();
    let mut project = minimal();
    project.spec.reclaim_policy = crd::ReclaimPolicy::Delete;
    project.metadata.finalizers = Some(vec![FINALIZER.to_owned(), "other.example/keep".to_owned()]);
    let key = h.create(&project);
    h.api().delete(&key).await.expect("delete");
    assert_eq!(h.reconcile(&key).await, Next::AwaitChange);
    assert!(h.ctx.backends.mutations().is_empty());
    assert_eq!(
        h.project(&key).metadata.finalizers,
        Some(vec!["other.example/keep".to_owned()]),
        "only our finalizer is removed"
    );
}

#[tokio::test]
async fn status_round_trips_through_the_crd_types() {
    let h = Harness::new();
    let key = h.create(&minimal());
    h.reconcile(&key).await;
    let raw = h.api().object(&key).expect("object");
    let status: BTreeMap<String, Value> =
        serde_json::from_value(raw["status"].clone()).expect("map");
    assert!(status.contains_key("observedGeneration"));
    assert!(status.contains_key("tenantId"));
    let ready = &raw["status"]["conditions"][0];
    for field in [
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    ] {
        assert!(ready.get(field).is_some(), "{field} missing from {ready}");
    }
}

#[tokio::test]
async fn the_applied_settings_are_the_built_ones() {
    use zori_operator::builders::env::{applied_env, project_env, SecretStore};
    let h = Harness::new();
    let key = h.create(&production());
    h.api().insert(stripe_secret()).expect("stripe secret");
    h.reconcile(&key).await;
    let applied = applied_env(h.api(), "shops", "bakery")
        .await
        .expect("resolves");

    let decode = |name: &str| -> BTreeMap<String, String> {
        let secret: k8s_openapi::api::core::v1::Secret =
            serde_json::from_value(h.child("Secret", name).expect("secret")).expect("a Secret");
        zori_operator::builders::secret::decode(&secret)
    };
    let secrets: SecretStore = BTreeMap::from([
        (
            "bakery-credentials".to_owned(),
            decode("bakery-credentials"),
        ),
        ("bakery-stripe".to_owned(), decode("bakery-stripe")),
    ]);
    let built = project_env(&h.project(&key), &h.ctx.platform, &secrets).expect("resolves");
    assert_eq!(applied, built);
    let api: BTreeMap<_, _> = applied.api.into_iter().collect();
    assert_eq!(api["ZORI_STRIPE_WEBHOOK_SECRETS"], "whsec_test");
    let bakery = TenantNames::for_tenant(&derive_tenant_id("shops", "bakery"));
    assert_eq!(api["ZORI_POSTGRES_SCHEMA"], bakery.postgres_schema);
    assert!(api["ZORI_POSTGRES_URL"].starts_with(&format!("postgres://{}:", bakery.postgres_role)));
}

#[tokio::test]
async fn isolated_says_which_backends_share_credentials() {
    let h = Harness::new();
    let key = h.create(&minimal());
    h.reconcile(&key).await;
    let isolated = h.condition(&key, types::ISOLATED);
    assert_eq!(
        status_of(&isolated),
        (ConditionStatus::False, reasons::SHARED_CREDENTIALS)
    );
    for backend in ["NATS", "Redis", "ClickHouse"] {
        assert!(isolated.message.contains(backend), "{}", isolated.message);
    }
    assert!(isolated
        .message
        .contains("run with --nats-auth accounts for per-tenant NATS accounts"));
    assert!(
        h.child("Deployment", "acme-api").is_some(),
        "a dev install runs un-isolated, and says so"
    );
}

#[tokio::test]
async fn nats_accounts_redis_users_and_clickhouse_users_isolate_a_tenant() {
    let mut h = Harness::new();
    h.ctx.platform.require_isolation = true;
    h.ctx.platform.clickhouse_users = zori_operator::config::ClickHouseUsers::PerTenant;
    h.ctx.platform.redis_per_tenant = true;
    h.ctx.platform.nats_accounts =
        Some(zori_operator::nats_auth::AccountKeys::new(&"k".repeat(40)).expect("account key"));
    let key = h.create(&minimal());
    h.reconcile(&key).await;
    let isolated = h.condition(&key, types::ISOLATED);
    assert_eq!(
        status_of(&isolated),
        (ConditionStatus::True, reasons::ISOLATED),
        "{}",
        isolated.message
    );
    let secret = h.child("Secret", "acme-credentials").expect("secret");
    for key in [keys::NATS_CREDS, keys::NATS_USER_SEED, keys::REDIS_PASSWORD] {
        assert!(
            secret.pointer(&format!("/data/{key}")).is_some(),
            "{key} in the tenant Secret"
        );
    }
    assert!(
        h.child("Deployment", "acme-api").is_some(),
        "an isolated tenant is provisioned under --require-isolation"
    );
}

#[tokio::test]
async fn require_isolation_refuses_tenants_that_cannot_be_isolated() {
    let mut h = Harness::new();
    h.ctx.platform.require_isolation = true;
    h.ctx.platform.clickhouse_users = zori_operator::config::ClickHouseUsers::PerTenant;
    let key = h.create(&minimal());
    assert_eq!(h.reconcile(&key).await, Next::Invalid);
    let ready = h.condition(&key, types::READY);
    assert_eq!(
        status_of(&ready),
        (ConditionStatus::False, reasons::ISOLATION_REQUIRED)
    );
    assert!(ready.message.contains("NATS"), "{}", ready.message);
    assert!(!ready.message.contains("ClickHouse"), "{}", ready.message);
    assert_eq!(
        status_of(&h.condition(&key, types::ISOLATED)),
        (ConditionStatus::False, reasons::SHARED_CREDENTIALS)
    );
    let kinds: Vec<String> = h.api().keys().into_iter().map(|k| k.kind).collect();
    assert_eq!(kinds, vec![crd::KIND], "no Secret, no Deployments");
    assert!(h.ctx.backends.mutations().is_empty(), "no backends");
    assert!(h
        .event_reasons()
        .contains(&reasons::ISOLATION_REQUIRED.to_owned()));
}

#[tokio::test]
async fn a_failed_clickhouse_probe_fails_closed_and_says_so() {
    let mut h = Harness::new();
    // What the controller settles on when `--clickhouse-users auto` cannot ask the version.
    h.ctx.platform.clickhouse_users = zori_operator::config::ClickHouseUsers::PerTenant;
    h.ctx.platform.clickhouse_probe_error =
        Some("failed to reach ClickHouse at http://ch:8123: connection refused".to_owned());
    h.ctx.backends.fail(
        Backend::ClickHouse,
        Some("failed to create the user of ClickHouse database: Syntax error"),
    );
    let key = h.create(&minimal());
    h.reconcile(&key).await;
    let clickhouse = h.condition(&key, types::CLICKHOUSE);
    assert_eq!(clickhouse.status, ConditionStatus::False);
    assert!(
        clickhouse
            .message
            .contains("version probe at operator start failed"),
        "{}",
        clickhouse.message
    );
    let secret = h.child("Secret", "acme-credentials").expect("secret");
    assert!(
        secret
            .pointer(&format!("/data/{}", keys::CLICKHOUSE_PASSWORD))
            .is_some(),
        "a per-tenant password, not the shared one"
    );
    let api = h.child("Deployment", "acme-api").expect("api");
    let env = api
        .pointer("/spec/template/spec/containers/0/env")
        .and_then(Value::as_array)
        .expect("env");
    assert!(env.iter().any(
        |e| e["name"] == "ZORI_CLICKHOUSE_USER" && e["value"] == json!(acme().clickhouse_user)
    ));
}

#[tokio::test]
async fn per_tenant_redis_users_replace_the_shared_url() {
    let mut h = Harness::new();
    h.ctx.platform.redis_per_tenant = true;
    h.ctx.platform.redis_url = "redis://:shared-admin-password@redis.redis.svc:6379/0".to_owned();
    let key = h.create(&minimal());
    h.reconcile(&key).await;
    let secret = h.child("Secret", "acme-credentials").expect("secret");
    let read = |k: &str| {
        use base64::Engine;
        let raw = secret
            .pointer(&format!("/data/{k}"))
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{k}"));
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(raw)
                .expect("base64"),
        )
        .expect("utf-8")
    };
    let password = read(keys::REDIS_PASSWORD);
    let url = read(keys::REDIS_URL);
    assert_eq!(
        url,
        format!(
            "redis://{}:{password}@redis.redis.svc:6379/0",
            acme().redis_user
        )
    );
    assert!(!url.contains("shared-admin-password"), "{url}");
    let (rules, stored) = h
        .ctx
        .backends
        .redis_user(&acme().redis_user)
        .expect("the ACL user was made");
    assert_eq!(stored, password);
    assert_eq!(rules, acme().redis_rules);
    assert!(rules.starts_with(&format!("~zori:{{{}}}:*", acme().tenant_id)));
    assert_eq!(
        status_of(&h.condition(&key, types::REDIS)),
        (ConditionStatus::True, reasons::PROVISIONED)
    );
    let isolated = h.condition(&key, types::ISOLATED);
    assert!(!isolated.message.contains("Redis"), "{}", isolated.message);

    // Deleting with reclaimPolicy Delete removes the user.
    h.edit(&key, |spec| {
        spec.reclaim_policy = crd::ReclaimPolicy::Delete
    });
    h.api().delete(&key).await.expect("delete");
    h.reconcile(&key).await;
    assert!(h.ctx.backends.redis_user(&acme().redis_user).is_none());
}

#[tokio::test]
async fn keys_added_by_an_upgrade_are_no_lost_secret() {
    let h = Harness::new();
    let key = h.create(&minimal());
    h.reconcile(&key).await;
    // A Secret written by a version without identity secrets.
    let mut secret = h.child("Secret", "acme-credentials").expect("secret");
    secret["data"]
        .as_object_mut()
        .expect("data")
        .remove(keys::IDENTITY_SECRET);
    h.api().insert(secret).expect("older Secret");
    h.api().clear_log();
    h.reconcile(&key).await;
    let reasons = h.event_reasons();
    assert!(
        reasons.contains(&"SecretKeysAdded".to_owned()),
        "{reasons:?}"
    );
    assert!(
        !reasons.contains(&"SecretRecreated".to_owned()),
        "{reasons:?}"
    );
    assert!(h
        .child("Secret", "acme-credentials")
        .expect("secret")
        .pointer(&format!("/data/{}", keys::IDENTITY_SECRET))
        .is_some());
}

#[tokio::test]
async fn the_stream_buffer_follows_the_fill_and_says_when_it_cannot_be_read() {
    let h = Harness::new();
    let key = h.create(&minimal());
    h.reconcile(&key).await;
    let stream = acme().subjects.stream;
    let max_bytes = h
        .ctx
        .backends
        .stream(&stream)
        .expect("the stream")
        .max_bytes;
    assert_eq!(
        status_of(&h.condition(&key, types::STREAM_BUFFER)),
        (ConditionStatus::True, reasons::BUFFER_AVAILABLE)
    );

    // 95 % of max_bytes waits for the consumer: False, and a Warning Event.
    h.ctx
        .backends
        .hold_in_stream(&stream, (max_bytes as u64) / 100 * 95, 1000);
    h.advance(10);
    h.reconcile(&key).await;
    let filling = h.condition(&key, types::STREAM_BUFFER);
    assert_eq!(
        status_of(&filling),
        (ConditionStatus::False, reasons::BUFFER_FILLING)
    );
    assert!(
        filling.message.contains("at least 90 % full"),
        "{}",
        filling.message
    );
    assert!(h
        .api()
        .events()
        .iter()
        .any(|e| e.type_ == EventType::Warning && e.reason == reasons::BUFFER_FILLING));
    let gauge = h.ctx.stream_fill.get("shops", "acme", &stream);
    assert!(gauge.is_some_and(|r| (r - 0.95).abs() < 1e-6), "{gauge:?}");
    // Ready is about the tenant working: a filling buffer does not change it.
    assert_ne!(
        h.condition(&key, types::READY).reason,
        reasons::BACKEND_NOT_READY
    );

    // NATS cannot be read: Unknown, saying why.
    h.ctx.backends.fail(Backend::Stream, Some("nats down"));
    h.advance(10);
    h.reconcile(&key).await;
    let unknown = h.condition(&key, types::STREAM_BUFFER);
    assert_eq!(
        status_of(&unknown),
        (ConditionStatus::Unknown, reasons::STREAM_UNREADABLE)
    );
    assert!(unknown.message.contains("nats down"), "{}", unknown.message);
}
