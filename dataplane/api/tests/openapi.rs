//! The OpenAPI 3.1 document (docs/openapi.yaml, served at `/api/v1/openapi.json`) against the
//! running API: the served JSON is the YAML; every route the reports router serves is
//! documented and every documented operation exists; and every documented path, called with
//! seeded data (and with bad input for its error answers), answers with a body its documented
//! schema accepts (JSON Schema 2020-12, formats checked).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::{
    days_ago, event, identify, insert_payment, page_view, range, session, visitor, Harness, DIRECT,
    GOOGLE, TWITTER,
};
use jsonschema::{Draft, Registry};
use serde_json::{json, Value};
use zori_core::event::StreamMessage;

const DOC_URI: &str = "urn:zori:openapi";
const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

fn repo_file(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn yaml_document() -> Value {
    serde_yaml::from_str(&repo_file("../../docs/openapi.yaml")).expect("docs/openapi.yaml parses")
}

/// (method, path) of every documented operation.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_some() {
                ops.insert((method.to_owned(), path.clone()));
            }
        }
    }
    ops
}

/// (method, path) of every route `reports::router` registers, read from its source.
fn served() -> BTreeSet<(String, String)> {
    let source = repo_file("src/reports/mod.rs");
    let router = source
        .split("pub fn router(")
        .nth(1)
        .and_then(|s| s.split(".fallback(").next())
        .expect("reports::router is in src/reports/mod.rs");
    let mut ops = BTreeSet::new();
    for chunk in router.split(".route(").skip(1) {
        let path = chunk.split('"').nth(1).expect("a route's path literal");
        let handlers = chunk.split_once(',').map(|(_, h)| h).unwrap_or_default();
        let mut found = false;
        for method in METHODS {
            let call = format!("{method}(");
            let mut rest = handlers;
            while let Some(at) = rest.find(&call) {
                let before = rest[..at].chars().last();
                if matches!(before, Some('.' | '(' | ' ' | '\n')) {
                    ops.insert((method.to_owned(), format!("/api/v1{path}")));
                    found = true;
                }
                rest = &rest[at + call.len()..];
            }
        }
        assert!(found, "no method found for route {path}");
    }
    ops
}

/// A JSON pointer token (RFC 6901), percent-encoded for a URI fragment.
fn token(s: &str) -> String {
    s.replace('~', "~0")
        .replace('/', "~1")
        .replace('{', "%7B")
        .replace('}', "%7D")
}

/// The pointer to the JSON schema of the answer `status` of `method path`.
fn schema_pointer(doc: &Value, method: &str, path: &str, status: u16) -> String {
    let base = format!("/paths/{}/{method}/responses/{status}", token(path));
    let response = doc
        .pointer(&base.replace("%7B", "{").replace("%7D", "}"))
        .unwrap_or_else(|| panic!("{method} {path} does not document status {status}"));
    let base = match response.get("$ref").and_then(Value::as_str) {
        Some(target) => target.trim_start_matches('#').to_owned(),
        None => base,
    };
    let pointer = format!("{base}/content/application~1json/schema");
    assert!(
        doc.pointer(&pointer.replace("%7B", "{").replace("%7D", "}"))
            .is_some(),
        "{method} {path} {status} documents no JSON schema"
    );
    pointer
}

struct Contract {
    doc: Value,
    registry: Registry<'static>,
    called: BTreeSet<(String, String)>,
}

impl Contract {
    fn new(doc: Value) -> Self {
        let registry = Registry::new()
            .add(DOC_URI, Draft::Draft202012.create_resource(doc.clone()))
            .expect("the document is a resource")
            .prepare()
            .expect("every reference of the document resolves");
        Self {
            doc,
            registry,
            called: BTreeSet::new(),
        }
    }

    /// Checks one answer of `method path` (the documented template) against its schema.
    fn check(&mut self, method: &str, template: &str, status: u16, body: &Value) {
        let pointer = schema_pointer(&self.doc, method, template, status);
        let validator = jsonschema::options()
            .with_registry(&self.registry)
            .with_draft(Draft::Draft202012)
            .should_validate_formats(true)
            .build(&json!({"$ref": format!("{DOC_URI}#{pointer}")}))
            .unwrap_or_else(|e| panic!("schema of {method} {template} {status}: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {template} answered {status} with a body its schema rejects:\n{}\nbody: {body:#}",
            errors.join("\n")
        );
        self.called.insert((method.to_owned(), template.to_owned()));
    }
}

async fn send(
    h: &Harness,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, String)>,
) -> (u16, Value) {
    let mut request = h.http.request(method, format!("{}{path}", h.base_url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some((content_type, body)) = body {
        request = request.header("content-type", content_type).body(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or_else(|_| {
        panic!("{path} answered {status} with a body that is not JSON: {text}")
    });
    (status, value)
}

/// A seeded tenant: three visitors (paid social, organic search, direct) with page views, a
/// custom `signup` event with a property, one identified user, payments in two currencies and
/// one unattributed, and ad spend.
async fn seed(h: &Harness) -> String {
    let (a, b, c) = (visitor(), visitor(), visitor());
    let (sa, sb) = (session(), session());
    let mut signup = event("signup", &a, &sa, days_ago(3), "/signup", &TWITTER);
    signup.properties.insert("plan".to_owned(), json!("pro"));
    let messages = [
        page_view(&a, &sa, days_ago(3), "/", &TWITTER),
        page_view(&a, &sa, days_ago(3), "/pricing", &TWITTER),
        StreamMessage::Event(signup),
        identify(&a, Some("user-42"), None, days_ago(3)),
        page_view(&a, &session(), days_ago(2), "/", &GOOGLE),
        page_view(&b, &sb, days_ago(2), "/", &GOOGLE),
        page_view(&c, &session(), days_ago(1), "/pricing", &DIRECT),
    ];
    for m in &messages {
        h.publish(m, m.id()).await;
    }
    h.drained().await;
    insert_payment(&h.pool, days_ago(1), 9900, "usd", 900, Some(&a), None).await;
    insert_payment(&h.pool, days_ago(1), 5000, "eur", 0, Some(&b), None).await;
    insert_payment(&h.pool, days_ago(1), 1234, "usd", 0, None, None).await;
    // A subscription's history, as the Stripe webhooks record it: a trial, then billed.
    sqlx::query(
        "INSERT INTO subscription_changes
             (event_id, subscription_id, customer_id, livemode, occurred_at, event_rank, status,
              currency, mrr)
         VALUES ('evt_seed_1', 'sub_seed', 'cus_seed', false, $1, 0, 'trialing', 'usd', 0),
                ('evt_seed_2', 'sub_seed', 'cus_seed', false, $2, 1, 'active', 'usd', 2900)",
    )
    .bind(days_ago(3))
    .bind(days_ago(2))
    .execute(&h.pool)
    .await
    .unwrap();
    a
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_matches_the_running_api() {
    let h = Harness::start().await;
    let doc = yaml_document();

    // The document is OpenAPI 3.1 in shape, and every operation is served (and vice versa).
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let mut ids = BTreeSet::new();
    for (method, path) in documented(&doc) {
        let op = &doc["paths"][&path][&method];
        assert!(
            ids.insert(op["operationId"].as_str().unwrap().to_owned()),
            "{method} {path}: operationId missing or not unique"
        );
        assert!(
            op["responses"]["200"].is_object(),
            "{method} {path}: no 200"
        );
        for name in path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        {
            let declared = op["parameters"].as_array().is_some_and(|ps| {
                ps.iter()
                    .any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true)
            });
            assert!(
                declared,
                "{method} {path}: path parameter {name} not declared"
            );
        }
    }
    assert_eq!(
        documented(&doc),
        served(),
        "documented operations (left) differ from the routes reports::router serves (right)"
    );

    // The served JSON is the YAML.
    let (status, served_doc) = send(
        &h,
        reqwest::Method::GET,
        "/api/v1/openapi.json",
        Some(&h.token),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        served_doc, doc,
        "/api/v1/openapi.json differs from docs/openapi.yaml"
    );

    let paying = seed(&h).await;
    let mut contract = Contract::new(doc.clone());
    contract.check("get", "/api/v1/openapi.json", 200, &served_doc);
    let spend = json!([
        {"day": days_ago(5).date().to_string(), "source": "twitter", "medium": "paid_social",
         "campaign": "launch", "currency": "usd", "amount": 4000},
        {"day": days_ago(4).date().to_string(), "source": "google", "currency": "eur", "amount": 1500}
    ])
    .to_string();
    let (status, body) = send(
        &h,
        reqwest::Method::PUT,
        "/api/v1/spend",
        Some(&h.token),
        Some(("application/json", spend)),
    )
    .await;
    assert_eq!(status, 200, "{body:#}");
    contract.check("put", "/api/v1/spend", 200, &body);
    let csv = format!(
        "day,source,currency,amount\n{},google,eur,12.50\n",
        days_ago(4).date()
    );
    let (status, body) = send(
        &h,
        reqwest::Method::PUT,
        "/api/v1/spend",
        Some(&h.token),
        Some(("text/csv", csv)),
    )
    .await;
    assert_eq!(status, 400, "{body:#}");
    contract.check("put", "/api/v1/spend", 400, &body);

    let r = range(30);
    // Wait until the reports see the seed (visitors and payments).
    h.until(&format!("/api/v1/attribution?{r}"), |v| {
        v["totals"]["visitors"] == 3 && v["totals"]["payments"] == 3
    })
    .await;

    let calls: Vec<(&str, String, u16)> = vec![
        (
            "/api/v1/attribution",
            format!("/api/v1/attribution?{r}"),
            200,
        ),
        (
            "/api/v1/attribution",
            format!("/api/v1/attribution?{r}&dimension=source&refunds_on=event&livemode=all"),
            200,
        ),
        (
            "/api/v1/attribution",
            format!("/api/v1/attribution?{r}&model=linear"),
            200,
        ),
        (
            "/api/v1/attribution",
            format!("/api/v1/attribution?{r}&model=time_decay&dimension=campaign&half_life_days=3"),
            200,
        ),
        (
            "/api/v1/attribution",
            format!("/api/v1/attribution?{r}&model=data_driven"),
            422,
        ),
        (
            "/api/v1/attribution",
            "/api/v1/attribution?from=2025-02-30".to_owned(),
            400,
        ),
        (
            "/api/v1/attribution/compare",
            format!("/api/v1/attribution/compare?{r}"),
            200,
        ),
        (
            "/api/v1/attribution/compare",
            format!("/api/v1/attribution/compare?{r}&models=first_touch,nope"),
            400,
        ),
        ("/api/v1/cohorts", format!("/api/v1/cohorts?{r}"), 200),
        ("/api/v1/mrr", "/api/v1/mrr".to_owned(), 200),
        (
            "/api/v1/mrr",
            format!("/api/v1/mrr?{r}&dimension=source&channel=paid_social"),
            200,
        ),
        (
            "/api/v1/mrr",
            "/api/v1/mrr?dimension=planet".to_owned(),
            400,
        ),
        ("/api/v1/spend", format!("/api/v1/spend?{r}"), 200),
        (
            "/api/v1/funnel",
            format!("/api/v1/funnel?{r}&steps=page:/,event:signup,paid"),
            200,
        ),
        (
            "/api/v1/funnel",
            format!("/api/v1/funnel?{r}&steps=paid,page:/"),
            400,
        ),
        (
            "/api/v1/overview",
            format!("/api/v1/overview?{r}&compare=previous"),
            200,
        ),
        (
            "/api/v1/overview",
            format!("/api/v1/overview?{r}&channel=paid_social"),
            200,
        ),
        ("/api/v1/timeseries", format!("/api/v1/timeseries?{r}"), 200),
        ("/api/v1/countries", format!("/api/v1/countries?{r}"), 200),
        (
            "/api/v1/devices",
            format!("/api/v1/devices?{r}&device=tablet"),
            200,
        ),
        ("/api/v1/customers", format!("/api/v1/customers?{r}"), 200),
        ("/api/v1/live", "/api/v1/live".to_owned(), 200),
        ("/api/v1/pages", format!("/api/v1/pages?{r}"), 200),
        ("/api/v1/pages", format!("/api/v1/pages?{r}&limit=0"), 400),
        ("/api/v1/events", format!("/api/v1/events?{r}"), 200),
        (
            "/api/v1/events/{name}/properties/{key}",
            format!("/api/v1/events/signup/properties/plan?{r}"),
            200,
        ),
        (
            "/api/v1/visitors/{visitor_id}/journey",
            format!("/api/v1/visitors/{paying}/journey"),
            200,
        ),
        (
            "/api/v1/visitors/{visitor_id}/journey",
            "/api/v1/visitors/vis_nobody/journey".to_owned(),
            200,
        ),
        (
            "/api/v1/visitors/{visitor_id}/journey",
            format!("/api/v1/visitors/{}/journey", "v".repeat(300)),
            400,
        ),
    ];
    for (template, path, expected) in &calls {
        let (status, body) = send(&h, reqwest::Method::GET, path, Some(&h.token), None).await;
        assert_eq!(status, *expected, "GET {path}: {body:#}");
        contract.check("get", template, status, &body);
    }
    // Seeded data reached the answers checked above (the schemas were not checked on empties).
    let (_, journey) = send(
        &h,
        reqwest::Method::GET,
        &format!("/api/v1/visitors/{paying}/journey"),
        Some(&h.token),
        None,
    )
    .await;
    let (_, mrr) = send(
        &h,
        reqwest::Method::GET,
        "/api/v1/mrr",
        Some(&h.token),
        None,
    )
    .await;
    assert_eq!(
        mrr["months"].as_array().unwrap().last().unwrap()["closing"],
        2900,
        "{mrr:#}"
    );
    assert_eq!(journey["known"], true);
    assert!(!journey["payments"].as_array().unwrap().is_empty());
    assert!(journey["identity"].is_object());

    // Every operation answers 401 without a token, in the documented error shape.
    for (method, template) in documented(&doc) {
        let path = template
            .replace("{name}", "signup")
            .replace("{key}", "plan")
            .replace("{visitor_id}", &paying)
            + "?steps=page:/";
        let method_ = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let (status, body) = send(&h, method_, &path, None, None).await;
        assert_eq!(status, 401, "{method} {path} without a token: {body:#}");
        contract.check(&method, &template, 401, &body);
    }

    let missed: Vec<_> = documented(&doc)
        .difference(&contract.called)
        .cloned()
        .collect();
    assert!(
        missed.is_empty(),
        "documented but never called with data: {missed:?}"
    );
    h.cleanup().await;
}

/// The document validates as OpenAPI 3.1 with openapi-spec-validator (PyPI, installed into
/// .venv by scripts/python-tools.sh; a missing tool fails the test, it never skips).
#[test]
fn the_document_validates_as_openapi_3_1() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tool = root.join(".venv/bin/openapi-spec-validator");
    assert!(
        tool.exists(),
        "{} is missing: run scripts/python-tools.sh",
        tool.display()
    );
    let output = std::process::Command::new(&tool)
        .arg(root.join("docs/openapi.yaml"))
        .output()
        .expect("openapi-spec-validator runs");
    assert!(
        output.status.success(),
        "docs/openapi.yaml is not a valid OpenAPI 3.1 document:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
