//! Sessions in real headless Chromium, with the tracker's clock moved through its test hook
//! (`window.__zoriNow`): a session ends after 30 minutes of inactivity, when the URL brings
//! new UTM parameters, and when the browser closed (its session cookie is gone); each end is
//! reported once, by one `session_end` carrying the duration and the page count. Also the
//! visibility events: `user_comeback` after a long hide, `left_while_hidden` when a hidden page
//! is left, and the quick-switch events.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{json, Value};
use zori_e2e::{
    tracker::{
        events_of, events_until, named, page, properties, summary, tracker_tag, Browser,
        BrowserOptions, PageServer, CLOCK_HOOK,
    },
    Stack, StackOptions,
};

const MINUTE: i64 = 60_000;

async fn set_skew(browser: &Browser, ms: i64) {
    browser
        .execute(
            "sessionStorage.setItem('zori_test_skew', String(arguments[0]))",
            vec![json!(ms)],
        )
        .await;
}

fn ms(event: &Value) -> i64 {
    event["occurred_ms"]
        .as_str()
        .map(|s| s.parse().unwrap())
        .or_else(|| event["occurred_ms"].as_i64())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_end_once_on_inactivity_new_campaign_and_browser_close() {
    let site = PageServer::start().await;
    let stack = Stack::start_with(
        "tracker_session",
        StackOptions {
            allowed_origins: vec![site.origin()],
        },
    )
    .await;
    let tag = tracker_tag(&stack, "");
    site.add("/blank", page("Blank", "", "", ""));
    for path in ["/a", "/b", "/c", "/d", "/e"] {
        site.add(path, page(&format!("Page {path}"), CLOCK_HOOK, "", &tag));
    }
    let browser = Browser::launch(BrowserOptions::default()).await;
    let visit = |path: &str| format!("{}{path}", site.origin());

    // Session 1: two pages, 45 and 41 minutes ago.
    browser.goto(&visit("/blank")).await;
    set_skew(&browser, -45 * MINUTE).await;
    browser.goto(&visit("/a")).await;
    browser.wait_tracker().await;
    let visitor = browser.visitor_id().await.unwrap();
    let first_session = browser
        .execute("return ZoriHQ.getSessionId()", vec![])
        .await;
    assert!(first_session.as_str().unwrap().starts_with("ses_"));
    set_skew(&browser, -41 * MINUTE).await;
    browser.goto(&visit("/b")).await;
    browser.wait_tracker().await;
    assert_eq!(
        browser
            .execute("return ZoriHQ.getSessionId()", vec![])
            .await,
        first_session,
        "4 minutes later: the same session"
    );

    // 41 minutes of inactivity: session 2.
    set_skew(&browser, 0).await;
    browser.goto(&visit("/c")).await;
    browser.wait_tracker().await;
    let second_session = browser
        .execute("return ZoriHQ.getSessionId()", vec![])
        .await;
    assert_ne!(second_session, first_session);

    // New UTM parameters: session 3, even though session 2 started without any.
    browser
        .goto(&visit("/c?utm_source=twitter&utm_campaign=launch"))
        .await;
    browser.wait_tracker().await;
    let third_session = browser
        .execute("return ZoriHQ.getSessionId()", vec![])
        .await;
    assert_ne!(third_session, second_session);
    // The same campaign again, or none: still session 3.
    browser.goto(&visit("/d")).await;
    browser.wait_tracker().await;
    browser
        .goto(&visit("/d?utm_source=twitter&utm_campaign=launch"))
        .await;
    browser.wait_tracker().await;
    assert_eq!(
        browser
            .execute("return ZoriHQ.getSessionId()", vec![])
            .await,
        third_session
    );

    // The browser closes: its session cookie is gone. Session 4, and session 3's end is
    // reported from the copy in localStorage.
    browser.delete_cookie("zori_session").await;
    browser.goto(&visit("/e")).await;
    browser.wait_tracker().await;
    let fourth_session = browser
        .execute("return ZoriHQ.getSessionId()", vec![])
        .await;
    assert_ne!(fourth_session, third_session);
    // Several more unloads: none of them ends a session.
    browser.refresh().await;
    browser.wait_tracker().await;
    browser.goto(&visit("/a")).await;
    browser.wait_tracker().await;

    events_until(&stack, &visitor, Duration::from_secs(30), |e| {
        named(e, "session_end").len() >= 3 && named(e, "page_view").len() >= 9
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = events_of(&stack, &visitor).await;
    let sessions = [
        &first_session,
        &second_session,
        &third_session,
        &fourth_session,
    ];
    let starts = named(&events, "session_start");
    assert_eq!(starts.len(), 4, "{}", summary(&events));
    for (start, session) in starts.iter().zip(sessions) {
        assert_eq!(&start["session_id"], session);
    }
    let ends = named(&events, "session_end");
    assert_eq!(
        ends.len(),
        3,
        "one end per ended session: {}",
        summary(&events)
    );
    let expected = [
        (&first_session, 2),
        (&second_session, 1),
        (&third_session, 3),
    ];
    for (end, (session, pages)) in ends.iter().zip(expected) {
        assert_eq!(&end["session_id"], session);
        let props = properties(end);
        assert_eq!(props["page_count"], json!(pages), "{session}: {props}");
        let views: Vec<&Value> = named(&events, "page_view")
            .into_iter()
            .filter(|v| &v["session_id"] == session)
            .collect();
        assert_eq!(views.len(), pages, "{session}");
        // The end is dated at the session's last activity and lasts from first to last.
        let first = ms(starts.iter().find(|s| &s["session_id"] == session).unwrap());
        let last = views.iter().map(|v| ms(v)).max().unwrap();
        assert!(
            (ms(end) - last).abs() < 1_000,
            "{session}: end at the last activity"
        );
        let duration = props["duration_ms"].as_i64().unwrap();
        assert!(
            (duration - (last - first)).abs() < 1_000,
            "{session}: {duration}"
        );
    }
    let first_duration = properties(ends[0])["duration_ms"].as_i64().unwrap();
    assert!(
        (4 * MINUTE..5 * MINUTE).contains(&first_duration),
        "session 1 lasted 4 minutes: {first_duration}"
    );
    assert_eq!(
        named(&events, "page_view")
            .iter()
            .filter(|v| v["session_id"] == fourth_session)
            .count(),
        3
    );

    // The reports API shows the same four sessions.
    let journey = stack
        .report(&format!("/api/v1/visitors/{visitor}/journey"))
        .await;
    let reported: Vec<&Value> = journey["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["session_id"])
        .collect();
    assert_eq!(reported, sessions.to_vec(), "{journey:#}");
    assert_eq!(journey["sessions"][0]["page_views"], 2);

    browser.close().await;
    stack.tenant.cleanup().await;
}

/// Visibility changes cannot be produced in headless Chromium, so the page overrides
/// `document.hidden` and dispatches `visibilitychange` as a browser does; time moves through
/// the clock hook.
const HIDE: &str =
    "Object.defineProperty(document, 'hidden', {configurable: true, get: () => true}); \
    document.dispatchEvent(new Event('visibilitychange'));";
const SHOW: &str =
    "Object.defineProperty(document, 'hidden', {configurable: true, get: () => false}); \
    document.dispatchEvent(new Event('visibilitychange'));";

#[tokio::test(flavor = "multi_thread")]
async fn comeback_left_while_hidden_and_quick_switches() {
    let site = PageServer::start().await;
    let stack = Stack::start_with(
        "tracker_visibility",
        StackOptions {
            allowed_origins: vec![site.origin()],
        },
    )
    .await;
    site.add(
        "/",
        page(
            "Home",
            CLOCK_HOOK,
            "",
            &tracker_tag(
                &stack,
                "data-comeback-threshold=\"60000\" data-track-quick-switches=\"true\"",
            ),
        ),
    );
    site.add("/next", page("Next", "", "", ""));
    let browser = Browser::launch(BrowserOptions::default()).await;
    browser.goto(&site.url("/")).await;
    browser.wait_tracker().await;
    let visitor = browser.visitor_id().await.unwrap();

    // A 10 s switch: below the 60 s threshold, a quick switch.
    browser.execute(HIDE, vec![]).await;
    set_skew(&browser, 10_000).await;
    browser.execute(SHOW, vec![]).await;
    // A 2 minute hide: a comeback.
    browser.execute(HIDE, vec![]).await;
    set_skew(&browser, 130_000).await;
    browser.execute(SHOW, vec![]).await;
    // Hidden for 20 s, then left.
    browser.execute(HIDE, vec![]).await;
    set_skew(&browser, 150_000).await;
    browser.goto(&site.url("/next")).await;

    let events = events_until(&stack, &visitor, Duration::from_secs(30), |e| {
        !named(e, "left_while_hidden").is_empty()
    })
    .await;
    let mut names: Vec<&str> = events.iter().map(|e| e["name"].as_str().unwrap()).collect();
    // Leaving the page also fires the browser's own visibilitychange (its real state was
    // visible all along), which quick-switch mode reports as one more page_hidden.
    if names.last() == Some(&"page_hidden") {
        names.pop();
    }
    assert_eq!(
        names,
        [
            "session_start",
            "page_view",
            "page_hidden",
            "page_visible",
            "page_hidden",
            "user_comeback",
            "page_hidden",
            "left_while_hidden"
        ],
        "{}",
        summary(&events)
    );
    let hidden = |name: &str| properties(named(&events, name)[0]);
    let visible = hidden("page_visible");
    assert!(
        (10_000..11_000).contains(&visible["hidden_duration_ms"].as_i64().unwrap()),
        "{visible}"
    );
    let comeback = hidden("user_comeback");
    assert!(
        (120_000..121_000).contains(&comeback["hidden_duration_ms"].as_i64().unwrap()),
        "{comeback}"
    );
    assert_eq!(comeback["hidden_duration_seconds"], 120);
    let left = hidden("left_while_hidden");
    assert!(
        (20_000..21_000).contains(&left["hidden_duration_ms"].as_i64().unwrap()),
        "{left}"
    );
    assert_eq!(left["hidden_duration_seconds"], 20);
    // Not a session end: the page was left, the session goes on.
    assert!(named(&events, "session_end").is_empty());

    browser.close().await;
    stack.tenant.cleanup().await;
}
