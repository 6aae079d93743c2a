//! The controller's wiring: how loudly the controller's errors are logged.

use kube::{
    core::Status,
    runtime::{controller::Error as ControllerError, reflector::ObjectRef, watcher},
};
use tracing::Level;
use zori_operator::{
    controller::controller_error_level, crd::ZoriProject, reconcile::ReconcileError,
};

#[test]
fn watch_failures_are_warnings_and_failed_reconciles_are_not_logged_twice() {
    let forbidden = Status::failure(
        "zoriprojects.zori.dev is forbidden: User \
         \"system:serviceaccount:zori-system:zori-operator\" cannot watch resource \
         \"zoriprojects\" in API group \"zori.dev\" at the cluster scope",
        "Forbidden",
    )
    .with_code(403);
    let watch: ControllerError<ReconcileError, watcher::Error> =
        ControllerError::QueueError(watcher::Error::WatchError(forbidden.boxed()));
    assert_eq!(controller_error_level(&watch), Level::WARN);
    let list: ControllerError<ReconcileError, watcher::Error> =
        ControllerError::QueueError(watcher::Error::InitialListFailed(kube::Error::Api(
            Status::failure(
                "the server could not find the requested resource",
                "NotFound",
            )
            .with_code(404)
            .boxed(),
        )));
    assert_eq!(controller_error_level(&list), Level::WARN);
    // The default filter shows them.
    assert!(controller_error_level(&watch) <= Level::INFO);

    let reconcile: ControllerError<ReconcileError, watcher::Error> =
        ControllerError::ReconcilerFailed(
            ReconcileError::Malformed("metadata.name"),
            Box::new(
                ObjectRef::<ZoriProject>::new("acme")
                    .within("shops")
                    .erase(),
            ),
        );
    assert_eq!(controller_error_level(&reconcile), Level::DEBUG);
}

/// The real kube-runtime controller (watches, owner triggers, the Secret mapping, error
/// policy) on the real `ClientApi`, against `FakeApi` served over HTTP.
mod whole {
    use std::{
        sync::Arc,
        time::{Duration, Instant},
    };

    use prometheus_client::registry::Registry;
    use serde_json::{json, Value};
    use tokio::sync::oneshot;
    use zori_operator::{
        api::{
            client::ClientApi,
            fake::{FakeApi, Fault, Verb, USER_MANAGER},
            fake_server, ObjectKey,
        },
        backends::MemoryBackends,
        config::Platform,
        controller::{controller, Shared},
        crd::{self, ZoriProject},
        metrics::Metrics,
        reconcile::{Context, STRIPE_SECRET_RECHECK},
        status::{reasons, types},
    };

    use super::super::common::{minimal, production};

    struct Running {
        api: FakeApi,
        shared: Arc<Shared<MemoryBackends>>,
        stop: Option<oneshot::Sender<()>>,
        task: Option<tokio::task::JoinHandle<()>>,
    }

    impl Running {
        /// Stores the projects as a user's `kubectl apply` would, then starts the controller.
        fn start(projects: &[ZoriProject]) -> Self {
            let api = FakeApi::new();
            for project in projects {
                let mut value = serde_json::to_value(project).expect("json");
                if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.remove("uid");
                    meta.remove("generation");
                }
                api.insert(value).expect("insert");
            }
            let client = fake_server::client(&api);
            let shared = Arc::new(Shared {
                ctx: Context::new(
                    ClientApi::new(client.clone(), Some("test-0".to_owned())),
                    MemoryBackends::new(),
                    Platform::local(),
                ),
                metrics: Metrics::register(&mut Registry::default()),
            });
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(controller(
                &client,
                Some("shops".to_owned()),
                shared.clone(),
                async move {
                    let _ = stopped.await;
                },
            ));
            Self {
                api,
                shared,
                stop: Some(stop),
                task: Some(task),
            }
        }

        fn condition(&self, project: &str, type_: &str) -> Option<(String, String)> {
            let key = ObjectKey::new(crd::API_VERSION, crd::KIND, Some("shops"), project);
            let object = self.api.object(&key)?;
            object
                .pointer("/status/conditions")?
                .as_array()?
                .iter()
                .find(|c| c["type"] == json!(type_))
                .map(|c| {
                    (
                        c["status"].as_str().unwrap_or_default().to_owned(),
                        c["reason"].as_str().unwrap_or_default().to_owned(),
                    )
                })
        }

        /// Waits up to `limit` for `done`; how long it took.
        async fn until(&self, limit: Duration, done: impl Fn(&Self) -> bool) -> Option<Duration> {
            let started = Instant::now();
            while started.elapsed() < limit {
                if done(self) {
                    return Some(started.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            None
        }

        fn roll_out(&self, name: &str) {
            self.api
                .roll_out(&ObjectKey::new(
                    "apps/v1",
                    "Deployment",
                    Some("shops"),
                    name,
                ))
                .expect("roll out");
        }

        async fn stop(mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            if let Some(task) = self.task.take() {
                let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
            }
        }
    }

    fn reason_is(
        project: &'static str,
        type_: &'static str,
        reason: &'static str,
    ) -> impl Fn(&Running) -> bool {
        move |r: &Running| {
            r.condition(project, type_)
                .is_some_and(|(_, got)| got == reason)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fixed_stripe_secret_is_picked_up_by_the_retry() {
        let running = Running::start(&[production()]);
        running
            .until(
                Duration::from_secs(20),
                reason_is("bakery", types::API, reasons::STRIPE_SECRET_NOT_FOUND),
            )
            .await
            .expect("the missing Secret is reported");
        // Let the failure's own triggers settle: the next retry is now 10 s or more away.
        tokio::time::sleep(Duration::from_millis(500)).await;

        running
            .api
            .insert(json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "bakery-stripe", "namespace": "shops"},
                "data": {"webhook-secret": "d2hzZWNfdGVzdA=="}
            }))
            .expect("the user creates the Secret");
        // Secrets are not watched (the operator may not list them): the retry, at most
        // STRIPE_SECRET_RECHECK away, finds it.
        let took = running
            .until(
                STRIPE_SECRET_RECHECK + Duration::from_secs(3),
                reason_is("bakery", types::API, reasons::PROGRESSING),
            )
            .await;
        assert!(
            took.is_some(),
            "the fixed Secret was not picked up by the retry: {:?}",
            running.condition("bakery", types::API)
        );
        running.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_spec_ingress_removes_the_ingress() {
        let running = Running::start(&[production()]);
        let ingress = ObjectKey::new("networking.k8s.io/v1", "Ingress", Some("shops"), "bakery");
        running
            .until(Duration::from_secs(20), |r| {
                r.api.object(&ingress).is_some()
            })
            .await
            .expect("the Ingress is made");

        // The user drops spec.ingress (kubectl apply of the edited manifest).
        let key = ObjectKey::new(crd::API_VERSION, crd::KIND, Some("shops"), "bakery");
        let mut spec = serde_json::to_value(production().spec).expect("json");
        if let Some(map) = spec.as_object_mut() {
            map.remove("ingress");
        }
        running
            .api
            .apply_as(
                USER_MANAGER,
                &json!({
                    "apiVersion": crd::API_VERSION, "kind": crd::KIND,
                    "metadata": {"name": key.name, "namespace": "shops"},
                    "spec": spec,
                }),
            )
            .expect("user apply");
        // Listed over HTTP, the Ingress comes without apiVersion/kind; it is pruned all the same.
        running
            .until(Duration::from_secs(10), |r| {
                r.api.object(&ingress).is_none()
            })
            .await
            .expect("the Ingress is pruned");
        running
            .until(Duration::from_secs(10), |r| {
                r.condition("bakery", types::INGRESS).is_none()
            })
            .await
            .expect("and its condition is gone");
        running.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn api_errors_read_as_the_server_said_them_in_conditions_and_events() {
        let denied = "admission webhook \"budgets.example.com\" denied the request: \
                      minAvailable must be at least 2";
        let running = Running::start(&[]);
        running.api.inject(
            Verb::Apply,
            Some("PodDisruptionBudget"),
            Some(Fault::Error(denied.to_owned())),
        );
        let mut value = serde_json::to_value(minimal()).expect("json");
        if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("uid");
            meta.remove("generation");
        }
        running.api.insert(value).expect("insert");
        running
            .until(
                Duration::from_secs(20),
                reason_is("acme", types::INGEST, reasons::APPLY_FAILED),
            )
            .await
            .expect("the failed apply is reported");
        let key = ObjectKey::new(crd::API_VERSION, crd::KIND, Some("shops"), "acme");
        let object = running.api.object(&key).expect("project");
        let message = object
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|c| c.iter().find(|c| c["type"] == json!(types::INGEST)))
            .and_then(|c| c["message"].as_str())
            .expect("message")
            .to_owned();
        assert_eq!(
            message,
            format!(
                "failed to apply PodDisruptionBudget shops/acme-ingest: {denied} (500 InternalError)"
            )
        );
        let warning = running
            .api
            .events()
            .into_iter()
            .find(|e| e.reason == reasons::APPLY_FAILED)
            .expect("a Warning event");
        assert_eq!(warning.note, format!("{}: {message}", types::INGEST));
        assert!(!warning.note.contains("ErrorResponse"), "{}", warning.note);
        running.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rollouts_and_status_writes_reach_the_status_but_not_the_backends() {
        let running = Running::start(&[minimal()]);
        running
            .until(Duration::from_secs(20), |r| {
                r.condition("acme", types::INGEST).is_some()
            })
            .await
            .expect("reconciled");
        running.roll_out("acme-ingest");
        running.roll_out("acme-api");
        running
            .until(
                Duration::from_secs(10),
                reason_is("acme", types::READY, reasons::RECONCILED),
            )
            .await
            .expect("Ready after the rollout, through the Deployment watch");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let calls = running.shared.ctx.backends.calls();

        // A rollout starts and finishes: the Deployment watch triggers reconciles that
        // report it, and none calls the backends.
        running
            .api
            .set_status(
                &ObjectKey::new("apps/v1", "Deployment", Some("shops"), "acme-api"),
                json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 0,
                       "readyReplicas": 0, "availableReplicas": 0}),
            )
            .expect("status");
        running
            .until(
                Duration::from_secs(10),
                reason_is("acme", types::API, reasons::PROGRESSING),
            )
            .await
            .expect("the rollout is reported");
        running.roll_out("acme-api");
        running
            .until(
                Duration::from_secs(10),
                reason_is("acme", types::READY, reasons::RECONCILED),
            )
            .await
            .expect("Ready again");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            running.shared.ctx.backends.calls(),
            calls,
            "no backend call"
        );
        running.stop().await;
    }
}
