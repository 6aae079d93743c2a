//! A hostile visitor: someone holding only the publishable key (it is in every page) and
//! sending whatever they like. They cannot choose their address behind a proxy, cannot claim
//! another user's identity when identity verification is on, cannot make ingest build a huge
//! heap from one body, and cannot hold more bodies in flight than ingest allows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{net::IpAddr, time::Duration};

use common::{error_of, event, new_id, raw_http, visitor, TestServer, HOST};
use serde_json::{json, Value};
use zori_core::{
    event::StreamMessage,
    geo,
    identity::{self, IdentityProof},
};

const SECRET: &str = "identity-secret-0123456789abcdef";

fn identify(visitor: &str, app_id: &str, signature: Option<&str>) -> Value {
    let mut body = json!({
        "client_generated_event_id": new_id(),
        "visitor_id": visitor,
        "page_url": "/account",
        "host": HOST,
        "app_id": app_id,
        "fullname": "Jane Doe",
    });
    if let Some(signature) = signature {
        body["signature"] = signature.into();
    }
    body
}

fn proofs(published: &[common::Published]) -> Vec<(String, IdentityProof)> {
    published
        .iter()
        .filter_map(|p| match &p.message {
            StreamMessage::Identify(record) => {
                Some((record.app_id.clone().unwrap_or_default(), record.proof))
            }
            StreamMessage::Event(_) => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// X-Forwarded-For
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_forged_forwarded_for_does_not_escape_the_per_ip_limit() {
    let server = TestServer::start(&[
        "--client-ip-header",
        "x-forwarded-for",
        "--rate-limit-per-ip",
        "2",
        "--rate-limit-window",
        "3600s",
    ])
    .await;
    // The proxy in front appends the address it saw (198.51.100.7); everything left of it is
    // what the client wrote, a new address each time.
    let mut statuses = Vec::new();
    for n in 0..4 {
        let response = server
            .post("/ingest")
            .header("X-Forwarded-For", format!("203.0.113.{n}, 198.51.100.7"))
            .json(&event("page_view", &visitor()))
            .send()
            .await
            .expect("answer");
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429, 429]);
    server.stop().await;
}

#[tokio::test]
async fn a_forged_forwarded_for_does_not_choose_the_country() {
    let real: IpAddr = "46.4.0.1".parse().unwrap();
    let forged: IpAddr = "8.8.8.8".parse().unwrap();
    let (real_country, forged_country) = (geo::country(real), geo::country(forged));
    assert!(real_country.is_some() && real_country != forged_country);

    // Two proxies (a load balancer, then an ingress): the client is the second hop from the
    // right; the forged entry left of it is ignored.
    let server = TestServer::start(&[
        "--client-ip-header",
        "x-forwarded-for",
        "--trusted-proxies",
        "2",
    ])
    .await;
    let response = server
        .post("/ingest")
        .header("X-Forwarded-For", format!("{forged}, {real}, 10.0.0.3"))
        .json(&event("page_view", &visitor()))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    let published = server.published().await;
    let StreamMessage::Event(tracked) = &published[0].message else {
        panic!("an event");
    };
    assert_eq!(tracked.country, real_country);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// identify
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn refuse_mode_rejects_unsigned_and_wrongly_signed_identifies() {
    let server = TestServer::start(&[
        "--identity-verification",
        "refuse",
        "--identity-secret",
        SECRET,
    ])
    .await;
    let visitor = visitor();

    let response = server
        .post("/identify")
        .json(&identify(&visitor, "user-42", None))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 403);
    assert!(error_of(response)
        .await
        .starts_with("identify is not signed: this site requires identity verification"),);

    let wrong = identity::sign(SECRET, "user-666");
    let response = server
        .post("/identify")
        .json(&identify(&visitor, "user-42", Some(&wrong)))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 403);
    assert_eq!(
        error_of(response).await,
        "identify signature does not match the app_id (or the email when there is no app_id)"
    );

    let good = identity::sign(SECRET, "user-42");
    let response = server
        .post("/identify")
        .json(&identify(&visitor, "user-42", Some(&good)))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);

    // In a batch, the unsigned identify is the only element refused.
    let response = server
        .post("/batch")
        .json(&json!({
            "events": [event("page_view", &visitor)],
            "identifies": [identify(&visitor, "user-43", None)],
        }))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.expect("json");
    assert_eq!(reply["accepted"], 1, "{reply}");
    assert_eq!(reply["rejected"][0]["kind"], "identify", "{reply}");
    assert!(
        reply["rejected"][0]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("identify is not signed")),
        "{reply}"
    );

    let published = server.published().await;
    assert_eq!(
        proofs(&published),
        [("user-42".to_owned(), IdentityProof::Signed)]
    );
    assert!(server
        .metrics()
        .await
        .contains("zori_ingest_rejected_total{reason=\"unverified_identity\"} 3"));
    server.stop().await;
}

#[tokio::test]
async fn ignore_mode_marks_what_it_could_not_verify() {
    let token = "zori_at_hostile_0123456789abcdef";
    let server = TestServer::start(&[
        "--identity-verification",
        "ignore",
        "--identity-secret",
        SECRET,
        "--api-token",
        token,
    ])
    .await;
    let visitor = visitor();
    let good = identity::sign(SECRET, "signed");
    let bodies = [
        identify(&visitor, "unsigned", None),
        identify(
            &visitor,
            "wrong",
            Some(&identity::sign("another-secret-0123456789", "wrong")),
        ),
        identify(&visitor, "signed", Some(&good)),
    ];
    for body in &bodies {
        let response = server
            .post("/identify")
            .json(body)
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 200);
    }
    // The site's server: the API token, no Origin, no signature.
    let response = server
        .http
        .post(server.url("/identify"))
        .header("X-Zori-PT", &server.key)
        .bearer_auth(token)
        .json(&identify(&visitor, "server", None))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    // A guessed token is refused, not demoted to a browser.
    let response = server
        .http
        .post(server.url("/identify"))
        .header("X-Zori-PT", &server.key)
        .bearer_auth("zori_at_guessed_0123456789")
        .json(&identify(&visitor, "guessed", None))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 401);

    assert!(server
        .metrics()
        .await
        .contains("zori_ingest_unverified_identifies_total 2"));
    let mut proofs = proofs(&server.published().await);
    proofs.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        proofs,
        [
            ("server".to_owned(), IdentityProof::Token),
            ("signed".to_owned(), IdentityProof::Signed),
            ("unsigned".to_owned(), IdentityProof::Unsigned),
            ("wrong".to_owned(), IdentityProof::Unsigned),
        ]
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_flood_of_tiny_elements_is_refused_while_parsing() {
    let server = TestServer::start(&[]).await;
    // 64 KiB of empty events: refused at the 101st, whatever follows (here: not even JSON).
    let mut body = String::from("{\"events\":[");
    while body.len() < 64 * 1024 - 8 {
        body.push_str("{},");
    }
    body.push_str("oops");
    let response = server
        .post("/batch")
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 413);
    assert_eq!(
        error_of(response).await,
        "batch has more than 100 events and identifies; at most 100 are allowed per request"
    );
    assert!(server.published().await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn bodies_beyond_the_in_flight_cap_get_503_with_retry_after() {
    let server = TestServer::start(&["--max-inflight-bodies", "1"]).await;
    let body = event("page_view", &visitor()).to_string();
    let (first, second) = body.split_at(body.len() / 2);
    let head = format!(
        "POST /ingest HTTP/1.1\r\nHost: x\r\nX-Zori-PT: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{first}",
        server.key,
        body.len()
    );
    // A slow client holds the only permit while it trickles its body in.
    let slow = tokio::spawn(raw_http(
        server.base.clone(),
        vec![
            (Duration::ZERO, head.into_bytes()),
            (Duration::from_millis(1500), second.as_bytes().to_vec()),
        ],
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = server
        .post("/ingest")
        .json(&event("page_view", &visitor()))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert!(error_of(response)
        .await
        .starts_with("too many requests in flight (at most 1 bodies at once)"));

    // The slow request is served in full; then there is room again.
    let slow = slow.await.expect("task");
    assert!(slow.starts_with("HTTP/1.1 200"), "{slow}");
    let response = server
        .post("/ingest")
        .json(&event("page_view", &visitor()))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    assert!(server
        .metrics()
        .await
        .contains("zori_ingest_rejected_total{reason=\"overloaded\"} 1"));
    server.stop().await;
}
