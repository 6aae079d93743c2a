//! Privacy in real headless Chromium: with Do-Not-Track (the browser's own setting) or Global
//! Privacy Control, and after `optOut()`, nothing is sent — also after a reload — and no id is
//! created (a queued `getVisitorId` callback gets `null`); `data-consent="required"` waits for
//! `setConsent`; the cookieless mode writes no cookie. "Nothing is sent" is checked at the
//! server: zori-ingest's request counters stay still and ClickHouse stays empty.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{json, Value};
use zori_e2e::{
    tracker::{
        clickhouse, events_of, events_until, ingest_requests, named, page, tracker_tag, Browser,
        BrowserOptions, PageServer,
    },
    Stack, StackOptions,
};

/// The page every scenario uses: a queued getVisitorId, a button and a link for clicks.
fn shop(stack: &Stack, attributes: &str, head: &str) -> String {
    page(
        "Shop",
        &format!(
            "{head}<script>window.ZoriHQ = window.ZoriHQ || [];\
             ZoriHQ.push(['getVisitorId', function (id) {{ window.queuedVisitor = String(id); }}]);</script>"
        ),
        "<button id=\"buy\">Buy</button><a id=\"next\" href=\"/next\">Next</a>",
        &tracker_tag(stack, attributes),
    )
}

/// Does what a visitor does on the page: clicks, a custom event, an SPA navigation, a reload.
async fn browse(browser: &Browser) {
    browser.click("#buy").await;
    browser
        .execute("ZoriHQ.track('added_to_cart', {sku: 'A1'})", vec![])
        .await;
    browser
        .execute("history.pushState({}, '', '/checkout')", vec![])
        .await;
    browser.refresh().await;
    browser.wait_tracker().await;
    browser.click("#buy").await;
    browser.click("#next").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
}

async fn no_zori_cookie(browser: &Browser) {
    let cookies: Vec<Value> = browser.cookies().await;
    let zori: Vec<&Value> = cookies
        .iter()
        .filter(|c| {
            c["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("zori") && n != "zori_consent")
        })
        .collect();
    assert!(zori.is_empty(), "no tracking cookie: {zori:?}");
}

async fn all_events(stack: &Stack) -> u64 {
    clickhouse(stack, "SELECT count() AS n FROM events")
        .await
        .first()
        .and_then(|r| {
            r["n"]
                .as_str()
                .map(|n| n.parse().unwrap())
                .or(r["n"].as_u64())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn do_not_track_gpc_opt_out_and_consent() {
    let site = PageServer::start().await;
    let stack = Stack::start_with(
        "tracker_privacy",
        StackOptions {
            allowed_origins: vec![site.origin()],
        },
    )
    .await;
    site.add("/", shop(&stack, "", ""));
    site.add("/checkout", shop(&stack, "", ""));
    site.add("/next", shop(&stack, "", ""));
    site.add(
        "/gpc",
        shop(
            &stack,
            "",
            "<script>Object.defineProperty(navigator, 'globalPrivacyControl', {value: true});</script>",
        ),
    );
    site.add("/opt-in", shop(&stack, "data-consent=\"required\"", ""));

    // 1. Do-Not-Track, set in the browser's preferences.
    let dnt = Browser::launch(BrowserOptions {
        do_not_track: true,
        ..BrowserOptions::default()
    })
    .await;
    dnt.goto(&site.url("/")).await;
    dnt.wait_tracker().await;
    assert_eq!(
        dnt.execute("return navigator.doNotTrack", vec![]).await,
        "1"
    );
    assert_eq!(
        dnt.wait_for("window.queuedVisitor", Duration::from_secs(5))
            .await,
        "null"
    );
    assert_eq!(
        dnt.execute("return ZoriHQ.hasConsent()", vec![]).await,
        false
    );
    browse(&dnt).await;
    assert_eq!(dnt.visitor_id().await, None);
    assert_eq!(
        dnt.execute_async(
            "const done = arguments[arguments.length - 1]; ZoriHQ.track('x').then(done);",
            vec![]
        )
        .await,
        false
    );
    no_zori_cookie(&dnt).await;
    assert_eq!(dnt.zori_storage().await, json!({}), "nothing stored");
    dnt.close().await;

    // 2. Global Privacy Control (as an extension or a browser sets it).
    let gpc = Browser::launch(BrowserOptions::default()).await;
    gpc.goto(&site.url("/gpc")).await;
    gpc.wait_tracker().await;
    assert_eq!(
        gpc.wait_for("window.queuedVisitor", Duration::from_secs(5))
            .await,
        "null"
    );
    gpc.click("#buy").await;
    gpc.execute("ZoriHQ.track('x')", vec![]).await;
    no_zori_cookie(&gpc).await;
    gpc.close().await;

    // 3. Consent required: nothing until the visitor agrees.
    let opt_in = Browser::launch(BrowserOptions::default()).await;
    opt_in.goto(&site.url("/opt-in")).await;
    opt_in.wait_tracker().await;
    assert_eq!(
        opt_in
            .wait_for("window.queuedVisitor", Duration::from_secs(5))
            .await,
        "null"
    );
    opt_in.click("#buy").await;
    opt_in.execute("ZoriHQ.track('x')", vec![]).await;
    no_zori_cookie(&opt_in).await;

    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        ingest_requests(&stack).await,
        0,
        "not one request reached zori-ingest"
    );
    assert_eq!(all_events(&stack).await, 0);

    // The visitor agrees: the page they are on is recorded, and tracking goes on.
    opt_in
        .execute("ZoriHQ.setConsent({analytics: true})", vec![])
        .await;
    let visitor = opt_in.visitor_id().await.expect("an id once agreed");
    opt_in.refresh().await;
    opt_in.wait_tracker().await;
    opt_in.click("#buy").await;
    events_until(&stack, &visitor, Duration::from_secs(30), |e| {
        named(e, "page_view").len() == 2 && named(e, "click").len() == 1
    })
    .await;
    assert_eq!(opt_in.cookie("zori_consent").await.unwrap()["value"], "1");
    opt_in.close().await;

    // 4. optOut(): after it, nothing more is sent, also after a reload; ids are deleted.
    let out = Browser::launch(BrowserOptions::default()).await;
    out.goto(&site.url("/")).await;
    out.wait_tracker().await;
    let visitor = out.visitor_id().await.unwrap();
    out.click("#buy").await;
    events_until(&stack, &visitor, Duration::from_secs(30), |e| {
        named(e, "click").len() == 1
    })
    .await;
    // Whatever the tracker had to send is sent.
    out.wait_for(
        "!localStorage.getItem('zori_queue')",
        Duration::from_secs(10),
    )
    .await;
    let before = ingest_requests(&stack).await;
    let stored = events_of(&stack, &visitor).await.len();
    assert_eq!(out.execute("return ZoriHQ.optOut()", vec![]).await, true);
    assert_eq!(
        out.execute("return ZoriHQ.hasConsent()", vec![]).await,
        false
    );
    assert_eq!(out.visitor_id().await, None);
    no_zori_cookie(&out).await;
    assert_eq!(out.cookie("zori_consent").await.unwrap()["value"], "0");
    browse(&out).await;
    assert_eq!(
        out.wait_for("window.queuedVisitor", Duration::from_secs(5))
            .await,
        "null",
        "after the reload, the queued callback still gets an answer"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        ingest_requests(&stack).await,
        before,
        "nothing sent after optOut()"
    );
    assert_eq!(events_of(&stack, &visitor).await.len(), stored);
    no_zori_cookie(&out).await;
    out.close().await;

    stack.tenant.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cookieless_mode_writes_no_cookie() {
    let site = PageServer::start().await;
    let stack = Stack::start_with(
        "tracker_cookieless",
        StackOptions {
            allowed_origins: vec![site.origin()],
        },
    )
    .await;
    site.add("/", shop(&stack, "data-cookieless=\"true\"", ""));
    site.add("/next", shop(&stack, "data-cookieless=\"true\"", ""));
    let browser = Browser::launch(BrowserOptions::default()).await;
    browser.goto(&site.url("/")).await;
    browser.wait_tracker().await;
    let visitor = browser.visitor_id().await.unwrap();
    browser.click("#next").await;
    browser.wait_tracker().await;
    assert_eq!(
        browser.visitor_id().await.as_deref(),
        Some(visitor.as_str()),
        "the same visitor within the tab"
    );
    let events = events_until(&stack, &visitor, Duration::from_secs(30), |e| {
        named(e, "page_view").len() == 2
    })
    .await;
    assert_eq!(named(&events, "session_start").len(), 1);
    assert!(browser.cookies().await.is_empty(), "not one cookie");
    let local: Value = browser
        .execute(
            "return Object.keys(localStorage).filter(k => k.startsWith('zori'))",
            vec![],
        )
        .await;
    assert_eq!(local, json!([]), "nothing in localStorage either");
    browser.close().await;
    stack.tenant.cleanup().await;
}
