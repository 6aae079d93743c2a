//! Delivery in real headless Chromium: events made while the browser is offline wait in
//! localStorage and arrive once it is back online; events made while zori-ingest is down
//! survive a reload and arrive once it is up again (retries with backoff). Every event arrives
//! exactly once: a batch sent again after the server had accepted it (its answer lost) carries
//! the same client-made ids and is not counted twice.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{json, Value};
use zori_e2e::{
    tracker::{
        events_of, events_until, named, page, summary, tracker_tag, Browser, BrowserOptions,
        PageServer,
    },
    Stack, StackOptions,
};

async fn queued_names(browser: &Browser) -> Vec<String> {
    let queue = browser
        .execute(
            "return JSON.parse(localStorage.getItem('zori_queue') || '[]')",
            vec![],
        )
        .await;
    queue
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["n"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn queue_drained(browser: &Browser) {
    browser
        .wait_for(
            "!localStorage.getItem('zori_queue')",
            Duration::from_secs(30),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_made_offline_arrive_exactly_once() {
    let site = PageServer::start().await;
    let mut stack = Stack::start_with(
        "tracker_offline",
        StackOptions {
            allowed_origins: vec![site.origin()],
        },
    )
    .await;
    site.add(
        "/",
        page(
            "Shop",
            "",
            "<button id=\"buy\">Buy</button>",
            &tracker_tag(&stack, ""),
        ),
    );
    let browser = Browser::launch(BrowserOptions::default()).await;
    browser.goto(&site.url("/")).await;
    browser.wait_tracker().await;
    let visitor = browser.visitor_id().await.unwrap();
    events_until(&stack, &visitor, Duration::from_secs(30), |e| {
        named(e, "page_view").len() == 1
    })
    .await;

    // 1. The browser goes offline: events wait in localStorage.
    browser.set_offline(true).await;
    assert_eq!(
        browser.execute("return navigator.onLine", vec![]).await,
        false
    );
    for i in 1..=5 {
        browser
            .execute(
                "ZoriHQ.track(arguments[0], {i: arguments[1]})",
                vec![json!(format!("offline_{i}")), json!(i)],
            )
            .await;
    }
    browser.click("#buy").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        queued_names(&browser).await,
        [
            "offline_1",
            "offline_2",
            "offline_3",
            "offline_4",
            "offline_5",
            "click"
        ],
        "queued in localStorage"
    );
    let stored = events_of(&stack, &visitor).await;
    assert!(
        stored
            .iter()
            .all(|e| !e["name"].as_str().unwrap().starts_with("offline")),
        "nothing left the browser: {}",
        summary(&stored)
    );
    let sent_offline: Value = browser
        .execute("return localStorage.getItem('zori_queue')", vec![])
        .await;

    // Back online: everything is delivered at once.
    browser.set_offline(false).await;
    events_until(&stack, &visitor, Duration::from_secs(20), |e| {
        (1..=5).all(|i| named(e, &format!("offline_{i}")).len() == 1)
            && named(e, "click").len() == 1
    })
    .await;
    queue_drained(&browser).await;

    // 2. The same batch again, as after an answer lost on its way back: the next page re-sends
    // what its queue holds, with the same ids.
    browser
        .execute(
            "localStorage.setItem('zori_queue', arguments[0])",
            vec![sent_offline],
        )
        .await;
    browser.refresh().await;
    browser.wait_tracker().await;
    queue_drained(&browser).await;

    // 3. zori-ingest goes down; the visitor goes on and reloads the page.
    stack.stop_ingest();
    browser.execute("ZoriHQ.track('down_1')", vec![]).await;
    browser.click("#buy").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    browser.refresh().await;
    browser.wait_tracker().await;
    browser.execute("ZoriHQ.track('down_2')", vec![]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let waiting = queued_names(&browser).await;
    for name in ["down_1", "click", "page_view", "down_2"] {
        assert!(
            waiting.iter().any(|n| n == name),
            "{name} waits: {waiting:?}"
        );
    }
    stack.start_ingest().await;
    events_until(&stack, &visitor, Duration::from_secs(90), |e| {
        named(e, "down_1").len() == 1
            && named(e, "down_2").len() == 1
            && named(e, "page_view").len() == 3
    })
    .await;
    queue_drained(&browser).await;

    // Exactly once: one event id per event made, and the reports count each once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = events_of(&stack, &visitor).await;
    for (name, count) in [
        ("session_start", 1),
        ("page_view", 3),
        ("click", 2),
        ("offline_1", 1),
        ("offline_5", 1),
        ("down_1", 1),
        ("down_2", 1),
    ] {
        assert_eq!(
            named(&events, name).len(),
            count,
            "{name}: {}",
            summary(&events)
        );
    }
    let today = time::OffsetDateTime::now_utc().date();
    let report = stack
        .report(&format!("/api/v1/events?from={today}&to={today}"))
        .await;
    let count = |name: &str| {
        report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .map(|r| r["count"].clone())
    };
    for (name, expected) in [
        ("page_view", 3),
        ("click", 2),
        ("offline_3", 1),
        ("down_2", 1),
    ] {
        assert_eq!(count(name), Some(json!(expected)), "{name}: {report:#}");
    }

    browser.close().await;
    stack.tenant.cleanup().await;
}
