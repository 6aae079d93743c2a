//! Contract tests of [`ClientApi`] on the real `kube::Client`, in the style of kube-rs's
//! controller-rs fixtures: a `tower-test` mock pair stands where the API server would, and an
//! API-server verifier asserts every request the client makes (method, path, query, content
//! type, body) and answers as an API server does: list items without apiVersion/kind, `Status`
//! bodies for errors. Response shapes follow the Kubernetes v1.33 API reference.

use std::collections::BTreeMap;

use http::{Request, Response};
use kube::client::Body;
use serde_json::{json, Value};
use tower_test::mock::{self, Handle};
use zori_operator::{
    api::{client::ClientApi, ApiError, EventRecord, EventType, KubeApi, ObjectKey},
    builders::FIELD_MANAGER,
    crd,
};

/// One request as the API server received it.
struct Received {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    content_type: Option<String>,
    body: Value,
    respond: mock::SendResponse<Response<Body>>,
}

impl Received {
    fn answer(self, code: u16, body: Value) {
        let response = Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&body).expect("json")))
            .expect("response");
        self.respond.send_response(response);
    }
}

/// The API server's side of the pair.
struct ApiServerVerifier(Handle<Request<Body>, Response<Body>>);

impl ApiServerVerifier {
    async fn next(&mut self) -> Received {
        let (request, respond) = self.0.next_request().await.expect("a request was made");
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("the body is readable");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("the body is JSON")
        };
        let query = parts
            .uri
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .filter(|(k, _)| !k.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Received {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query,
            content_type: parts
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body,
            respond,
        }
    }
}

fn pair() -> (ClientApi, ApiServerVerifier) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    (
        ClientApi::new(client, Some("zori-operator-0".to_owned())),
        ApiServerVerifier(handle),
    )
}

/// A `Status` body as the API server sends with an error.
fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code
    })
}

fn query(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "acme-api", "namespace": "shops", "labels": {"app.kubernetes.io/managed-by": "zori-operator"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "acme-api"}},
            "template": {
                "metadata": {"labels": {"app": "acme-api"}},
                "spec": {"containers": [{"name": "api", "image": "zori-api:1"}]}
            }
        }
    })
}

/// The Deployment as the API server answers an apply: with server-set metadata.
fn deployment_live(resource_version: &str) -> Value {
    let mut live = deployment();
    live["metadata"]["uid"] = json!("6f1c1c1e-0000-4000-8000-000000000001");
    live["metadata"]["resourceVersion"] = json!(resource_version);
    live["metadata"]["generation"] = json!(1);
    live["metadata"]["creationTimestamp"] = json!("2025-06-15T15:06:40Z");
    live["metadata"]["managedFields"] = json!([{
        "manager": FIELD_MANAGER, "operation": "Apply", "apiVersion": "apps/v1",
        "time": "2025-06-15T15:06:40Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}
    }]);
    live["status"] = json!({"observedGeneration": 1, "replicas": 2});
    live
}

fn project_key() -> ObjectKey {
    ObjectKey::new(crd::API_VERSION, crd::KIND, Some("shops"), "acme")
}

const PROJECTS: &str = "/apis/zori.dev/v1alpha1/namespaces/shops/zoriprojects/acme";

#[tokio::test]
async fn apply_is_one_forced_server_side_apply() {
    let (api, mut server) = pair();
    let desired = deployment();
    let (applied, ()) = tokio::join!(api.apply(&desired), async {
        let request = server.next().await;
        assert_eq!(request.method, "PATCH");
        assert_eq!(
            request.path,
            "/apis/apps/v1/namespaces/shops/deployments/acme-api"
        );
        assert_eq!(
            request.query,
            query(&[("fieldManager", FIELD_MANAGER), ("force", "true")])
        );
        assert_eq!(
            request.content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
        assert_eq!(request.body, deployment(), "the desired object, as built");
        request.answer(200, deployment_live("4711"));
    });
    let applied = applied.expect("applied");
    assert_eq!(applied["metadata"]["resourceVersion"], json!("4711"));
    assert_eq!(applied["status"]["replicas"], json!(2));
}

#[tokio::test]
async fn a_forbidden_apply_reads_like_the_api_server_said_it() {
    let (api, mut server) = pair();
    let message = "deployments.apps \"acme-api\" is forbidden: User \
        \"system:serviceaccount:zori-system:zori-operator\" cannot patch resource \
        \"deployments\" in API group \"apps\" in the namespace \"shops\"";
    let desired = deployment();
    let (result, ()) = tokio::join!(api.apply(&desired), async {
        server
            .next()
            .await
            .answer(403, status(403, "Forbidden", message));
    });
    let error = result.expect_err("forbidden");
    let text = error.to_string();
    assert_eq!(
        text,
        format!("failed to apply Deployment shops/acme-api: {message} (403 Forbidden)")
    );
    assert!(!text.contains("ErrorResponse"), "{text}");
    assert!(
        matches!(error, zori_operator::api::ApiError::Forbidden { .. }),
        "a 403 is Forbidden (the tenant-id check falls back on it alone)"
    );

    // A 500 on a list is not Forbidden: the tenant-id check must not fall back on it.
    let no_labels = BTreeMap::new();
    let (listed, ()) = tokio::join!(
        api.list(crd::API_VERSION, crd::KIND, None, &no_labels),
        async {
            server.next().await.answer(
                500,
                status(500, "InternalError", "etcdserver: request timed out"),
            );
        }
    );
    let error = listed.expect_err("a 500");
    assert!(
        !matches!(error, zori_operator::api::ApiError::Forbidden { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn apply_status_patches_the_status_subresource() {
    let (api, mut server) = pair();
    let status_value = json!({"observedGeneration": 2, "tenantId": "shops_acme"});
    let key = project_key();
    let (result, ()) = tokio::join!(api.apply_status(&key, &status_value), async {
        let request = server.next().await;
        assert_eq!(request.method, "PATCH");
        assert_eq!(request.path, format!("{PROJECTS}/status"));
        assert_eq!(
            request.query,
            query(&[("fieldManager", FIELD_MANAGER), ("force", "true")])
        );
        assert_eq!(
            request.content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
        assert_eq!(
            request.body,
            json!({
                "apiVersion": crd::API_VERSION,
                "kind": crd::KIND,
                "metadata": {"name": "acme"},
                "status": status_value,
            })
        );
        request.answer(
            200,
            json!({
                "apiVersion": crd::API_VERSION, "kind": crd::KIND,
                "metadata": {"name": "acme", "namespace": "shops", "resourceVersion": "12"},
                "spec": {}, "status": status_value
            }),
        );
    });
    result.expect("status applied");
}

#[tokio::test]
async fn get_reads_one_object_and_a_404_is_none() {
    let (api, mut server) = pair();
    let key = ObjectKey::new("v1", "Secret", Some("shops"), "bakery-stripe");
    let (found, ()) = tokio::join!(api.get(&key), async {
        let request = server.next().await;
        assert_eq!(request.method, "GET");
        assert_eq!(
            request.path,
            "/api/v1/namespaces/shops/secrets/bakery-stripe"
        );
        request.answer(
            200,
            json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "bakery-stripe", "namespace": "shops", "resourceVersion": "5"},
                "type": "Opaque",
                "data": {"webhook-secret": "d2hzZWNfdGVzdA=="}
            }),
        );
    });
    let found = found.expect("read").expect("exists");
    assert_eq!(found["data"]["webhook-secret"], json!("d2hzZWNfdGVzdA=="));

    let (missing, ()) = tokio::join!(api.get(&key), async {
        server.next().await.answer(
            404,
            status(404, "NotFound", "secrets \"bakery-stripe\" not found"),
        );
    });
    assert_eq!(missing.expect("a 404 is not an error"), None);
}

#[tokio::test]
async fn list_items_without_type_meta_are_keyed_by_the_listed_kind() {
    let (api, mut server) = pair();
    let labels = BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "zori-operator".to_owned(),
        ),
        ("app.kubernetes.io/instance".to_owned(), "bakery".to_owned()),
    ]);
    let (items, ()) = tokio::join!(
        api.list("networking.k8s.io/v1", "Ingress", Some("shops"), &labels),
        async {
            let request = server.next().await;
            assert_eq!(request.method, "GET");
            assert_eq!(
                request.path,
                "/apis/networking.k8s.io/v1/namespaces/shops/ingresses"
            );
            assert_eq!(
                request.query.get("labelSelector").map(String::as_str),
                Some(
                    "app.kubernetes.io/instance=bakery,app.kubernetes.io/managed-by=zori-operator"
                )
            );
            // As kube-apiserver answers: the list has TypeMeta, its items do not.
            request.answer(
                200,
                json!({
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "IngressList",
                    "metadata": {"resourceVersion": "99"},
                    "items": [{
                        "metadata": {
                            "name": "bakery", "namespace": "shops", "resourceVersion": "98",
                            "ownerReferences": [{"apiVersion": "zori.dev/v1alpha1", "kind": "ZoriProject", "name": "bakery", "uid": "u-1", "controller": true}]
                        },
                        "spec": {"rules": [{"host": "t.bakery.example.com"}]}
                    }]
                }),
            );
        }
    );
    let items = items.expect("listed");
    assert_eq!(items.len(), 1);
    assert_eq!(ObjectKey::of(&items[0]), None, "no TypeMeta on the item");
    assert_eq!(
        ObjectKey::listed("networking.k8s.io/v1", "Ingress", &items[0]),
        Some(ObjectKey::new(
            "networking.k8s.io/v1",
            "Ingress",
            Some("shops"),
            "bakery"
        ))
    );
}

#[tokio::test]
async fn finalizers_are_json_patches_guarded_by_a_test() {
    let (api, mut server) = pair();
    let key = project_key();
    let answer = json!({
        "apiVersion": crd::API_VERSION, "kind": crd::KIND,
        "metadata": {"name": "acme", "namespace": "shops", "finalizers": ["zori.dev/reclaim"]},
        "spec": {}
    });

    let (added, ()) = tokio::join!(api.add_finalizer(&key, &[], "zori.dev/reclaim"), async {
        let request = server.next().await;
        assert_eq!(request.method, "PATCH");
        assert_eq!(request.path, PROJECTS);
        assert_eq!(
            request.content_type.as_deref(),
            Some("application/json-patch+json")
        );
        assert!(!request.query.contains_key("fieldManager"));
        assert_eq!(
            request.body,
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": ["zori.dev/reclaim"]}
            ]),
            "no resourceVersion precondition"
        );
        request.answer(200, answer.clone());
    });
    added.expect("added");

    let others = vec!["other.example/keep".to_owned()];
    let (added, ()) = tokio::join!(
        api.add_finalizer(&key, &others, "zori.dev/reclaim"),
        async {
            let request = server.next().await;
            assert_eq!(
                request.body,
                json!([
                    {"op": "test", "path": "/metadata/finalizers", "value": ["other.example/keep"]},
                    {"op": "add", "path": "/metadata/finalizers/-", "value": "zori.dev/reclaim"}
                ])
            );
            // The live list changed meanwhile: the test fails, the API server answers 422.
            request.answer(
                422,
                status(
                    422,
                    "Invalid",
                    "the server rejected our request due to an error in our request",
                ),
            );
        }
    );
    assert!(matches!(added, Err(ApiError::Conflict { .. })), "{added:?}");

    let (removed, ()) = tokio::join!(api.remove_finalizer(&key, 1, "zori.dev/reclaim"), async {
        let request = server.next().await;
        assert_eq!(request.method, "PATCH");
        assert_eq!(
            request.content_type.as_deref(),
            Some("application/json-patch+json")
        );
        assert_eq!(
            request.body,
            json!([
                {"op": "test", "path": "/metadata/finalizers/1", "value": "zori.dev/reclaim"},
                {"op": "remove", "path": "/metadata/finalizers/1"}
            ])
        );
        request.answer(200, answer.clone());
    });
    removed.expect("removed");

    let (refused, ()) = tokio::join!(api.add_finalizer(&key, &[], "zori.dev/reclaim"), async {
        server.next().await.answer(
            422,
            status(
                422,
                "Invalid",
                "ZoriProject.zori.dev \"acme\" is invalid: metadata.finalizers: Forbidden: no new \
                 finalizers can be added if the object is being deleted, found new finalizers \
                 []string{\"zori.dev/reclaim\"}",
            ),
        );
    });
    let refused = refused.expect_err("refused");
    assert!(matches!(refused, ApiError::Invalid { .. }), "{refused:?}");
    assert!(
        refused.to_string().contains("no new finalizers"),
        "{refused}"
    );
}

#[tokio::test]
async fn delete_propagates_in_the_background_and_a_404_is_false() {
    let (api, mut server) = pair();
    let key = ObjectKey::new("networking.k8s.io/v1", "Ingress", Some("shops"), "bakery");
    let (deleted, ()) = tokio::join!(api.delete(&key), async {
        let request = server.next().await;
        assert_eq!(request.method, "DELETE");
        assert_eq!(
            request.path,
            "/apis/networking.k8s.io/v1/namespaces/shops/ingresses/bakery"
        );
        assert_eq!(request.body["propagationPolicy"], json!("Background"));
        request.answer(
            200,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                   "details": {"name": "bakery", "group": "networking.k8s.io", "kind": "ingresses", "uid": "u-2"}}),
        );
    });
    assert!(deleted.expect("deleted"));
    let (gone, ()) = tokio::join!(api.delete(&key), async {
        server.next().await.answer(
            404,
            status(
                404,
                "NotFound",
                "ingresses.networking.k8s.io \"bakery\" not found",
            ),
        );
    });
    assert!(!gone.expect("a 404 is not an error"));
}

fn lease(resource_version: Option<&str>) -> Value {
    let mut lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "zori-operator", "namespace": "zori-system"},
        "spec": {"holderIdentity": "zori-operator-0", "leaseDurationSeconds": 15,
                 "renewTime": "2025-06-15T15:06:40.000000Z", "leaseTransitions": 0}
    });
    if let Some(rv) = resource_version {
        lease["metadata"]["resourceVersion"] = json!(rv);
    }
    lease
}

#[tokio::test]
async fn the_lease_is_created_and_replaced_with_its_resource_version() {
    let (api, mut server) = pair();
    let new = lease(None);
    let (created, ()) = tokio::join!(api.create(&new), async {
        let request = server.next().await;
        assert_eq!(request.method, "POST");
        assert_eq!(
            request.path,
            "/apis/coordination.k8s.io/v1/namespaces/zori-system/leases"
        );
        assert_eq!(request.content_type.as_deref(), Some("application/json"));
        assert_eq!(
            request.body["spec"]["holderIdentity"],
            json!("zori-operator-0")
        );
        request.answer(201, lease(Some("1")));
    });
    created.expect("created");

    let (exists, ()) = tokio::join!(api.create(&new), async {
        server.next().await.answer(
            409,
            status(
                409,
                "AlreadyExists",
                "leases.coordination.k8s.io \"zori-operator\" already exists",
            ),
        );
    });
    assert!(
        matches!(exists, Err(ApiError::AlreadyExists { .. })),
        "{exists:?}"
    );

    let stale = lease(Some("1"));
    let (replaced, ()) = tokio::join!(api.replace(&stale), async {
        let request = server.next().await;
        assert_eq!(request.method, "PUT");
        assert_eq!(
            request.path,
            "/apis/coordination.k8s.io/v1/namespaces/zori-system/leases/zori-operator"
        );
        assert_eq!(request.body["metadata"]["resourceVersion"], json!("1"));
        request.answer(
            409,
            status(
                409,
                "Conflict",
                "Operation cannot be fulfilled on leases.coordination.k8s.io \"zori-operator\": \
                 the object has been modified; please apply your changes to the latest version \
                 and try again",
            ),
        );
    });
    assert!(
        matches!(replaced, Err(ApiError::Conflict { .. })),
        "{replaced:?}"
    );
}

#[tokio::test]
async fn events_are_events_k8s_io_about_the_project() {
    let (api, mut server) = pair();
    let event = EventRecord {
        regarding: project_key(),
        uid: Some("u-1".to_owned()),
        type_: EventType::Warning,
        reason: "ProvisioningFailed".to_owned(),
        action: "Reconcile".to_owned(),
        note: "ClickHouseReady: failed to create database zori_shops_acme: connection refused"
            .to_owned(),
    };
    let (published, ()) = tokio::join!(api.publish_event(&event), async {
        let request = server.next().await;
        assert_eq!(request.method, "POST");
        assert_eq!(
            request.path,
            "/apis/events.k8s.io/v1/namespaces/shops/events"
        );
        let body = &request.body;
        assert_eq!(body["type"], json!("Warning"));
        assert_eq!(body["reason"], json!("ProvisioningFailed"));
        assert_eq!(body["action"], json!("Reconcile"));
        assert_eq!(body["note"], json!(event.note));
        assert_eq!(body["reportingController"], json!(FIELD_MANAGER));
        assert_eq!(body["reportingInstance"], json!("zori-operator-0"));
        assert_eq!(body["regarding"]["kind"], json!(crd::KIND));
        assert_eq!(body["regarding"]["name"], json!("acme"));
        assert_eq!(body["regarding"]["uid"], json!("u-1"));
        let mut stored = body.clone();
        stored["metadata"]["resourceVersion"] = json!("77");
        request.answer(201, stored);
    });
    published.expect("published");
}
