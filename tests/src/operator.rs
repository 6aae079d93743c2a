//! A project reconciled by the operator, then its data plane run with exactly the settings
//! the operator applied: shared by the operator journeys (shared and isolated NATS) and the
//! isolation attack suite.

use std::time::Duration;

use serde_json::{json, Value};
use time::OffsetDateTime;
use zori_operator::{
    api::KubeApi,
    builders::env::{applied_env, WorkloadEnv},
};

use crate::{free_port, page_view, session_id, visitor_id, Process, SITE_ORIGIN};

/// The Stripe webhook secret of the journeys' `stripe-webhook` Secret.
pub const STRIPE_SECRET: &str = "whsec_operator_journey_0123456789";

/// A `ZoriProject` with a Stripe webhook Secret reference and `reclaimPolicy: Delete`.
pub fn project(namespace: &str, name: &str, uid: &str) -> Value {
    json!({
        "apiVersion": "zori.dev/v1alpha1",
        "kind": "ZoriProject",
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "generation": 1},
        "spec": {
            "allowedOrigins": [SITE_ORIGIN],
            "stripe": {"webhookSecretRef": {"name": "stripe-webhook", "key": "webhook-secret"}},
            "attribution": {"maxPastSkew": "720h"},
            "reclaimPolicy": "Delete"
        }
    })
}

/// The `stripe-webhook` Secret the projects refer to.
pub fn stripe_secret(namespace: &str) -> Value {
    use base64::Engine;
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "stripe-webhook", "namespace": namespace},
        "data": {"webhook-secret": base64::engine::general_purpose::STANDARD.encode(STRIPE_SECRET)}
    })
}

pub fn env_value<'a>(env: &'a [(String, String)], name: &str) -> &'a str {
    env.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{name} is not set by the operator"))
}

/// The Deployment's env with only the listen address moved to a free loopback port (in a
/// pod each binary has its own network namespace).
fn with_listen(env: &[(String, String)], var: &str, port: u16) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| {
            if k == var {
                (k.clone(), format!("127.0.0.1:{port}"))
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect()
}

/// Starts the real `zori-ingest` and `zori-api` with exactly the env the operator applied to
/// the project's Deployments, sends a tracked visit and a signed Stripe payment, and waits
/// for the €49 to be attributed to the visit's campaign in the report. Returns the env.
pub async fn attributes_a_payment<A: KubeApi>(api: &A, namespace: &str, name: &str) -> WorkloadEnv {
    let env = applied_env(api, namespace, name)
        .await
        .expect("both Deployments were applied with resolvable settings");
    let ingest_port = free_port();
    let api_port = free_port();
    let ingest = Process::start_with_env(
        "zori-ingest",
        ingest_port,
        &with_listen(&env.ingest, "ZORI_INGEST_LISTEN", ingest_port),
    )
    .await;
    let api = Process::start_with_env(
        "zori-api",
        api_port,
        &with_listen(&env.api, "ZORI_API_LISTEN", api_port),
    )
    .await;

    let http = reqwest::Client::new();
    let visitor = visitor_id();
    let now = OffsetDateTime::now_utc();
    let visit = page_view(
        &visitor,
        &session_id(),
        &format!("{SITE_ORIGIN}/?utm_source=newsletter&utm_medium=email&utm_campaign=winter"),
        None,
        now - time::Duration::days(2),
    );
    let response = http
        .post(format!("{}/ingest", ingest.base_url))
        .header("X-Zori-PT", env_value(&env.ingest, "ZORI_PUBLISHABLE_KEY"))
        .header("Origin", SITE_ORIGIN)
        .header(
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0 Safari/537.36",
        )
        .json(&visit)
        .send()
        .await
        .expect("ingest answers");
    assert_eq!(
        response.status(),
        200,
        "{}",
        response.text().await.unwrap_or_default()
    );

    let body = json!({
        "id": format!("evt_{}", uuid::Uuid::new_v4().simple()),
        "object": "event", "api_version": "2024-06-20", "created": now.unix_timestamp(),
        "livemode": false, "type": "checkout.session.completed",
        "data": {"object": {
            "id": "cs_test_operator_journey", "object": "checkout.session", "mode": "payment",
            "amount_total": 4900, "currency": "eur", "payment_status": "paid",
            "created": now.unix_timestamp(), "payment_intent": "pi_operator_journey",
            "metadata": {"zori_visitor_id": visitor}
        }}
    })
    .to_string();
    let signature =
        zori_core::stripe::signature::sign(body.as_bytes(), STRIPE_SECRET, now.unix_timestamp());
    let response = http
        .post(format!("{}/webhooks/stripe", api.base_url))
        .header("Stripe-Signature", signature)
        .body(body)
        .send()
        .await
        .expect("api answers");
    assert_eq!(
        response.status(),
        200,
        "{}",
        response.text().await.unwrap_or_default()
    );

    let token = env_value(&env.api, "ZORI_API_TOKEN");
    let url = format!(
        "{}/api/v1/attribution?dimension=campaign&from={}&to={}",
        api.base_url,
        (now - time::Duration::days(7)).date(),
        now.date()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let net = loop {
        let report: Value = http
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .expect("api answers")
            .json()
            .await
            .expect("json");
        let net = report["rows"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["value"] == "winter"))
            .and_then(|r| r["revenue"].as_array())
            .and_then(|m| m.iter().find(|m| m["currency"] == "eur"))
            .and_then(|m| m["net"].as_i64());
        if net == Some(4900) || std::time::Instant::now() > deadline {
            break (net, report);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        net.0,
        Some(4900),
        "the winter newsletter brought €49: {:#}",
        net.1
    );
    drop(ingest);
    drop(api);
    env
}
