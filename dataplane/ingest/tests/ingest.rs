//! `zori-ingest` against the real NATS JetStream and Redis of this machine. Every test runs its
//! own server for its own random tenant, so they run in parallel.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use zori_core::event::StreamMessage;

#[tokio::test]
async fn accepted_event_is_in_the_stream_with_its_id_and_no_raw_ip() {
    let server = TestServer::start(&["--client-ip-header", "x-forwarded-for"]).await;
    let event = event("page_view", &visitor());
    let body = serde_json::to_vec(&event).expect("json");
    let response = server
        .post("/ingest")
        .header("Content-Type", "application/json")
        .header("X-Forwarded-For", "203.0.113.77, 10.1.2.3")
        .body(body.clone())
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        ORIGIN,
        "an allowed origin gets CORS headers"
    );
    assert_eq!(response.headers()["vary"], "Origin");
    assert_eq!(
        response.text().await.expect("text"),
        format!("ACCEPTED {}", body.len())
    );

    let published = server.published().await;
    assert_eq!(published.len(), 1);
    let id = event["client_generated_event_id"].as_str().expect("id");
    assert_eq!(published[0].msg_id.as_deref(), Some(id));
    let StreamMessage::Event(tracked) = &published[0].message else {
        panic!("not an event: {}", published[0].payload);
    };
    assert_eq!(tracked.id, id);
    assert_eq!(tracked.name, "page_view");
    assert_eq!(tracked.page.host, HOST);
    assert!(!tracked.client.is_bot);
    for ip in ["203.0.113.77", "10.1.2.3", "127.0.0.1"] {
        assert!(
            !published[0].payload.contains(ip),
            "raw IP {ip} leaked: {}",
            published[0].payload
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn the_same_event_sent_twice_is_stored_once() {
    let server = TestServer::start(&[]).await;
    let event = event("click", &visitor());
    for _ in 0..2 {
        let response = server.track(&event).await;
        assert_eq!(response.status(), 200, "a duplicate is a success too");
    }
    let published = server.published().await;
    assert_eq!(published.len(), 1);
    assert!(server
        .metrics()
        .await
        .contains("zori_ingest_publish_duplicates_total 1"));
    server.stop().await;
}

#[tokio::test]
async fn send_beacon_text_plain_with_key_in_query_is_accepted() {
    let server = TestServer::start(&[]).await;
    let event = event("page_view", &visitor());
    let response = server
        .http
        .post(server.url(&format!("/ingest?key={}", server.key)))
        .header("Content-Type", "text/plain;charset=UTF-8")
        .header("Origin", ORIGIN)
        .body(event.to_string())
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    assert_eq!(server.published().await.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn identify_is_published_without_the_email() {
    let server = TestServer::start(&[]).await;
    let id = new_id();
    let body = json!({
        "client_generated_event_id": id,
        "visitor_id": visitor(),
        "session_id": "ses_1",
        "client_timestamp_utc": "2026-01-01T00:00:00Z",
        "page_url": "/account",
        "host": HOST,
        "app_id": "user_42",
        "email": "Jane.Doe@Example.com",
        "fullname": "Jane Doe",
    });
    let response = server
        .post("/identify")
        .json(&body)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("text");
    assert!(text.starts_with("IDENTIFIED "), "{text}");
    let published = server.published().await;
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].msg_id.as_deref(), Some(id.as_str()));
    let StreamMessage::Identify(record) = &published[0].message else {
        panic!("not an identify: {}", published[0].payload);
    };
    assert_eq!(record.app_id.as_deref(), Some("user_42"));
    assert!(record.email_hash.is_some());
    assert!(!published[0]
        .payload
        .to_lowercase()
        .contains("jane.doe@example.com"));
    server.stop().await;
}

#[tokio::test]
async fn batch_with_one_invalid_element_publishes_the_others() {
    let server = TestServer::start(&[]).await;
    let visitor = visitor();
    let mut invalid = event("click", &visitor);
    invalid
        .as_object_mut()
        .expect("object")
        .remove("visitor_id");
    let events = vec![
        event("page_view", &visitor),
        invalid,
        event("signup", &visitor),
    ];
    let identify = json!({
        "client_generated_event_id": new_id(),
        "visitor_id": visitor,
        "app_id": "user_7",
    });
    let response = server
        .post("/batch")
        .json(&json!({ "events": events, "identifies": [identify] }))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.expect("json");
    assert_eq!(reply["accepted"], 3, "{reply}");
    let rejected = reply["rejected"].as_array().expect("rejected list");
    assert_eq!(rejected.len(), 1, "{reply}");
    assert_eq!(rejected[0]["index"], 1);
    assert_eq!(rejected[0]["kind"], "event");
    assert!(
        rejected[0]["error"]
            .as_str()
            .expect("error")
            .contains("visitor_id"),
        "{reply}"
    );

    let published = server.published().await;
    assert_eq!(published.len(), 3);
    let ids: Vec<&str> = published.iter().map(|p| p.message.id()).collect();
    for expected in [
        events[0]["client_generated_event_id"].as_str(),
        events[2]["client_generated_event_id"].as_str(),
        identify["client_generated_event_id"].as_str(),
    ] {
        assert!(ids.contains(&expected.expect("id")), "{ids:?}");
    }
    for p in &published {
        assert_eq!(p.msg_id.as_deref(), Some(p.message.id()));
    }
    server.stop().await;
}

#[tokio::test]
async fn batch_over_the_element_limit_is_413() {
    let server = TestServer::start(&["--max-batch-events", "3"]).await;
    let visitor = visitor();
    let events: Vec<Value> = (0..4).map(|_| event("click", &visitor)).collect();
    let response = server
        .post("/batch")
        .json(&json!({ "events": events }))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 413);
    let error = error_of(response).await;
    assert_eq!(
        error,
        "batch has more than 3 events and identifies; at most 3 are allowed per request"
    );
    assert!(server.published().await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn malformed_json_is_400_naming_line_and_column() {
    let server = TestServer::start(&[]).await;
    for path in ["/ingest", "/identify", "/batch"] {
        let response = server
            .post(path)
            .header("Content-Type", "application/json")
            .body("{\"event_name\": \"x\",\n  oops}")
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 400, "{path}");
        assert_eq!(response.headers()["content-type"], "application/json");
        let error = error_of(response).await;
        assert!(error.starts_with("malformed json body: "), "{error}");
        assert!(error.contains("line 2 column 3"), "{error}");
    }
    server.stop().await;
}

#[tokio::test]
async fn invalid_event_is_400_with_the_enrichment_error() {
    let server = TestServer::start(&[]).await;
    let mut event = event("page_view", &visitor());
    event["visitor_id"] = json!("vis with spaces");
    let response = server.track(&event).await;
    assert_eq!(response.status(), 400);
    let error = error_of(response).await;
    assert!(error.contains("visitor_id"), "{error}");
    server.stop().await;
}

#[tokio::test]
async fn oversized_body_is_413_naming_the_limit() {
    let server = TestServer::start(&["--max-body-bytes", "2048"]).await;
    let mut event = event("page_view", &visitor());
    event["custom_properties"] = json!({ "padding": "x".repeat(4096) });
    let response = server.track(&event).await;
    assert_eq!(response.status(), 413);
    assert_eq!(
        error_of(response).await,
        "request body is larger than the limit of 2048 bytes"
    );

    // Without Content-Length (chunked), the limit still holds.
    let head = format!(
        "POST /ingest HTTP/1.1\r\nHost: x\r\nX-Zori-PT: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        server.key
    );
    let mut pieces = vec![(Duration::ZERO, head.into_bytes())];
    for _ in 0..5 {
        let mut chunk = b"3e8\r\n".to_vec();
        chunk.extend(vec![b' '; 1000]);
        chunk.extend(b"\r\n");
        pieces.push((Duration::from_millis(10), chunk));
    }
    pieces.push((Duration::ZERO, b"0\r\n\r\n".to_vec()));
    let response = raw_http(server.base.clone(), pieces).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(
        response.contains("larger than the limit of 2048 bytes"),
        "{response}"
    );
    assert!(server.published().await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn missing_and_wrong_keys_are_401() {
    let server = TestServer::start(&[]).await;
    let event = event("page_view", &visitor());
    let response = server
        .http
        .post(server.url("/ingest"))
        .json(&event)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 401);
    assert_eq!(
        error_of(response).await,
        "missing publishable key: send it in the X-Zori-PT header or the key query parameter"
    );

    for request in [
        server
            .http
            .post(server.url("/ingest"))
            .header("X-Zori-PT", "zori_pt_wrong_wrong_wrong"),
        server.http.post(server.url("/ingest?key=zori_pt_nope")),
        server
            .http
            .post(server.url("/batch"))
            .header("X-Zori-PT", format!("{}x", server.key)),
    ] {
        let response = request.json(&event).send().await.expect("answer");
        assert_eq!(response.status(), 401);
        assert_eq!(error_of(response).await, "invalid publishable key");
    }
    assert!(server.published().await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn cors_only_for_allowed_origins() {
    let server = TestServer::start(&[]).await;
    let event = event("page_view", &visitor());

    let response = server
        .http
        .post(server.url("/ingest"))
        .header("X-Zori-PT", &server.key)
        .header("Origin", "https://evil.example")
        .json(&event)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 403);
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    assert_eq!(
        error_of(response).await,
        "origin https://evil.example is not allowed"
    );

    let preflight = |origin: &'static str| {
        server
            .http
            .request(reqwest::Method::OPTIONS, server.url("/batch"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "content-type,x-zori-version",
            )
            .send()
    };
    let response = preflight(ORIGIN).await.expect("answer");
    assert_eq!(response.status(), 204);
    let h = response.headers();
    assert_eq!(h["access-control-allow-origin"], ORIGIN);
    assert_eq!(h["access-control-allow-methods"], "POST, GET, OPTIONS");
    assert_eq!(
        h["access-control-allow-headers"],
        "Content-Type, X-Zori-PT, X-Zori-Version"
    );
    assert_eq!(h["access-control-max-age"], "86400");
    assert_eq!(h["vary"], "Origin");

    let response = preflight("https://evil.example").await.expect("answer");
    assert_eq!(response.status(), 204);
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());

    // Server-side senders (no Origin) are fine with the right key, and get no CORS headers.
    let response = server
        .http
        .post(server.url("/ingest"))
        .header("X-Zori-PT", &server.key)
        .json(&event)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    assert_eq!(server.published().await.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn page_host_not_allowed_is_403() {
    let server = TestServer::start(&[]).await;
    let mut event = event("page_view", &visitor());
    event["host"] = json!("phishing.example");
    event["page_url"] = json!("https://phishing.example/pricing");
    let response = server.track(&event).await;
    assert_eq!(response.status(), 403);
    let error = error_of(response).await;
    assert!(
        error.contains("phishing.example") && error.contains("is not one of the allowed origins"),
        "{error}"
    );
    assert!(server.published().await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn over_the_visitor_limit_is_429_with_retry_after() {
    // A long window, so that the test never straddles two windows.
    let server = TestServer::start(&[
        "--rate-limit-per-visitor",
        "3",
        "--rate-limit-window",
        "3600s",
    ])
    .await;
    let visitor = visitor();
    for _ in 0..3 {
        assert_eq!(server.track(&event("click", &visitor)).await.status(), 200);
    }
    let response = server.track(&event("click", &visitor)).await;
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .expect("text")
        .parse()
        .expect("seconds");
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    assert_eq!(
        response.headers()["access-control-expose-headers"],
        "Retry-After"
    );
    assert!(error_of(response).await.starts_with("rate limit exceeded"));
    // Another visitor from the same address is still welcome.
    assert_eq!(
        server
            .track(&event("click", &common::visitor()))
            .await
            .status(),
        200
    );
    assert_eq!(server.published().await.len(), 4);
    assert!(server
        .metrics()
        .await
        .contains("zori_ingest_rate_limited_total 1"));

    // The counters are in Redis, under the tenant's prefix, and hold no raw address.
    let redis = redis::Client::open(REDIS_URL).expect("redis url");
    let mut conn = redis
        .get_multiplexed_async_connection()
        .await
        .expect("redis is up");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("zori:{{{}}}:rl:*", server.tenant))
        .query_async(&mut conn)
        .await
        .expect("keys");
    assert!(keys.iter().any(|k| k.contains(":ip:")), "{keys:?}");
    assert!(keys.iter().any(|k| k.contains(":v:")), "{keys:?}");
    assert!(keys.iter().all(|k| !k.contains(&visitor)), "{keys:?}");
    assert!(keys.iter().all(|k| !k.contains("127.0.0.1")), "{keys:?}");
    let ttl: i64 = redis::cmd("TTL")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .expect("ttl");
    assert!((1..=3601).contains(&ttl), "{ttl}");
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .expect("del");
    server.stop().await;
}

#[tokio::test]
async fn over_the_ip_limit_is_429_weighted_by_events() {
    let server =
        TestServer::start(&["--rate-limit-per-ip", "5", "--rate-limit-window", "3600s"]).await;
    let events: Vec<Value> = (0..4).map(|_| event("click", &visitor())).collect();
    let ok = server
        .post("/batch")
        .json(&json!({ "events": events }))
        .send()
        .await
        .expect("answer");
    assert_eq!(ok.status(), 200);
    let events: Vec<Value> = (0..2).map(|_| event("click", &visitor())).collect();
    let limited = server
        .post("/batch")
        .json(&json!({ "events": events }))
        .send()
        .await
        .expect("answer");
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(server.published().await.len(), 4);
    server.stop().await;
}

#[tokio::test]
async fn rate_limiter_fails_open_when_redis_is_down() {
    let server = TestServer::start(&["--redis-url", "redis://127.0.0.1:1"]).await;
    let response = server.track(&event("page_view", &visitor())).await;
    assert_eq!(response.status(), 200);
    assert_eq!(server.published().await.len(), 1);
    assert!(!server
        .metrics()
        .await
        .contains("zori_ingest_rate_limiter_errors_total 0"));
    // Failing open, the pod serves well without Redis: it stays ready.
    let ready = server
        .http
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("answer");
    assert_eq!(ready.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn rate_limiter_failing_closed_answers_503_while_redis_is_down() {
    let server = TestServer::start(&[
        "--redis-url",
        "redis://127.0.0.1:1",
        "--rate-limit-failure-mode",
        "closed",
    ])
    .await;
    let response = server.track(&event("page_view", &visitor())).await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    let body = response.text().await.expect("text");
    assert!(body.contains("rate limiter unavailable"), "{body}");
    assert!(server.published().await.is_empty());
    let ready = server
        .http
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("answer");
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.expect("text").contains("redis"));
    server.stop().await;
}

#[tokio::test]
async fn bots_are_dropped_but_answered() {
    let server = TestServer::start(&[]).await;
    let googlebot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    let response = server
        .post("/ingest")
        .header("User-Agent", googlebot)
        .json(&event("page_view", &visitor()))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    assert!(response
        .text()
        .await
        .expect("text")
        .starts_with("ACCEPTED "));
    assert!(server.published().await.is_empty());
    assert!(server
        .metrics()
        .await
        .contains("zori_ingest_bot_events_total 1"));
    server.stop().await;
}

#[tokio::test]
async fn bots_are_published_flagged_with_bot_traffic_flag() {
    let server = TestServer::start(&["--bot-traffic", "flag"]).await;
    let response = server
        .post("/ingest")
        .header(
            "User-Agent",
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        )
        .json(&event("page_view", &visitor()))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    let published = server.published().await;
    assert_eq!(published.len(), 1);
    let StreamMessage::Event(event) = &published[0].message else {
        panic!("not an event");
    };
    assert!(event.client.is_bot);
    server.stop().await;
}

#[tokio::test]
async fn missing_stream_is_503_with_retry_after() {
    let server = TestServer::start(&[]).await;
    server
        .js
        .delete_stream(&server.stream)
        .await
        .expect("stream deleted");
    let response = server.track(&event("page_view", &visitor())).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    let error = error_of(response).await;
    assert!(error.starts_with("event was not accepted: "), "{error}");
    assert!(error.contains(&server.stream), "{error}");

    let response = server
        .post("/batch")
        .json(&json!({ "events": [event("a", &visitor()), event("b", &visitor())] }))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 503);
    assert!(error_of(response)
        .await
        .starts_with("events were not accepted: "));

    let ready = server
        .http
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("answer");
    assert_eq!(ready.status(), 503);
    server.stop().await;
}

#[tokio::test]
async fn unreachable_nats_is_503_not_a_hang() {
    // Nothing listens on port 1: the client keeps trying to connect in the background while
    // the server answers.
    let tenant = random_tenant();
    let settings = settings(
        &tenant,
        &[
            "--nats-url",
            "nats://127.0.0.1:1",
            "--publish-timeout",
            "300ms",
        ],
    );
    let mut settings = settings;
    settings.create_stream = false;
    let server = TestServer::start_settings(settings).await;
    let started = std::time::Instant::now();
    let response = server.track(&event("page_view", &visitor())).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    assert!(error_of(response).await.contains("not accepted"));
    assert!(started.elapsed() < Duration::from_secs(3));
    let ready = server
        .http
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("answer");
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.expect("text").contains("nats"));
    server.stop().await;
}

#[tokio::test]
async fn tracker_is_served_with_etag_and_cache_headers() {
    let server = TestServer::start(&[]).await;
    let response = server
        .http
        .get(server.url("/zori.js"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    let h = response.headers().clone();
    assert_eq!(h["content-type"], "application/javascript; charset=utf-8");
    assert_eq!(h["cache-control"], "public, max-age=300");
    assert_eq!(h["access-control-allow-origin"], "*");
    let etag = h["etag"].to_str().expect("etag").to_owned();
    assert!(etag.starts_with('"') && !etag.starts_with("W/"), "{etag}");
    assert_eq!(
        response.text().await.expect("text"),
        zori_ingest::tracker::SOURCE
    );

    let response = server
        .http
        .get(server.url("/zori.js"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 304);
    assert_eq!(response.headers()["etag"], etag.as_str());

    let versioned = zori_ingest::tracker::versioned_path();
    let response = server
        .http
        .get(server.url(&versioned))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(response.headers()["etag"], etag.as_str());

    let response = server
        .http
        .get(server.url("/v/0.0.0-old/zori.js"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 404);
    server.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let server = TestServer::start(&[]).await;
    let get = |path: &str| server.http.get(server.url(path)).send();
    let health = get("/health").await.expect("answer");
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.text().await.expect("text"),
        "Zori - Ingestion Server"
    );
    assert_eq!(get("/healthz").await.expect("answer").status(), 200);
    let ready = get("/readyz").await.expect("answer");
    assert_eq!(ready.status(), 200, "{:?}", ready.text().await);

    assert_eq!(
        server.track(&event("page_view", &visitor())).await.status(),
        200
    );
    let wrong = server
        .http
        .get(server.url("/ingest"))
        .send()
        .await
        .expect("answer");
    assert_eq!(wrong.status(), 405);
    assert!(error_of(wrong).await.contains("use POST"));
    let metrics = server.metrics().await;
    for line in [
        "zori_ingest_requests_total{route=\"ingest\",status=\"200\"} 1",
        "zori_ingest_accepted_total{kind=\"event\"} 1",
        "zori_ingest_publishes_total 1",
        "zori_ingest_publish_latency_seconds_count 1",
        "zori_ingest_body_bytes_total ",
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }
    server.stop().await;
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let mut server = TestServer::start(&[]).await;
    let event = event("page_view", &visitor());
    let body = event.to_string();
    let (first, second) = body.split_at(body.len() / 2);
    let head = format!(
        "POST /ingest HTTP/1.1\r\nHost: x\r\nX-Zori-PT: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{first}",
        server.key,
        body.len()
    );
    let in_flight = tokio::spawn(raw_http(
        server.base.clone(),
        vec![
            (Duration::ZERO, head.into_bytes()),
            // The server is reading the body when the shutdown starts.
            (Duration::from_millis(400), second.as_bytes().to_vec()),
        ],
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.trigger_shutdown();
    let response = in_flight.await.expect("task");
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "an in-flight request completes: {response}"
    );
    server.wait_stopped().await;
    let published = read_stream(&server.js, &server.stream).await;
    assert_eq!(published.len(), 1);
    assert_eq!(
        published[0].msg_id.as_deref(),
        event["client_generated_event_id"].as_str()
    );
    server.stop().await;
}

#[tokio::test]
async fn server_side_senders_relay_the_visitors_user_agent() {
    let server = TestServer::start(&[]).await;
    let googlebot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    // No Origin: a server SDK relaying a browser event; the body's user agent describes the
    // visitor (zori-spec §9.32), whatever the sender's own header says.
    let response = server
        .http
        .post(server.url("/ingest"))
        .header("X-Zori-PT", &server.key)
        .header("User-Agent", googlebot)
        .json(&event("purchase", &visitor()))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    let published = server.published().await;
    assert_eq!(published.len(), 1);
    let StreamMessage::Event(tracked) = &published[0].message else {
        panic!("not an event");
    };
    assert!(!tracked.client.is_bot, "{:?}", tracked.client);
    assert_eq!(tracked.client.browser, "Chrome", "{:?}", tracked.client);

    // From a browser page the header wins: a bot cannot pass as a browser through the body.
    let response = server
        .post("/ingest")
        .header("User-Agent", googlebot)
        .json(&event("page_view", &visitor()))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    assert_eq!(
        server.published().await.len(),
        1,
        "the bot event is dropped"
    );
    server.stop().await;
}
