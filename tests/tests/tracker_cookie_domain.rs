//! The visitor cookie lives on the site's registrable domain, so `www.` and `app.` share one
//! visitor and one session (zori-spec §9.18): real headless Chromium resolves www.shop.test
//! and app.shop.test to loopback (`--host-resolver-rules`), a visitor lands on www. and pays on
//! app., and the server sees one visitor id.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use zori_e2e::{
    tracker::{
        events_until, named, page, summary, tracker_tag, Browser, BrowserOptions, PageServer,
    },
    Stack, StackOptions,
};

#[tokio::test(flavor = "multi_thread")]
async fn www_and_app_share_one_visitor() {
    let site = PageServer::start().await;
    let www = format!("http://www.shop.test:{}", site.port);
    let app = format!("http://app.shop.test:{}", site.port);
    let stack = Stack::start_with(
        "tracker_cookie_domain",
        StackOptions {
            allowed_origins: vec![www.clone(), app.clone()],
        },
    )
    .await;
    let tag = tracker_tag(&stack, "");
    site.add(
        "/",
        page(
            "Home",
            "",
            &format!("<a id=\"checkout\" href=\"{app}/checkout\">Checkout</a>"),
            &tag,
        ),
    );
    site.add("/checkout", page("Checkout", "", "", &tag));

    let browser = Browser::launch(BrowserOptions {
        args: vec!["--host-resolver-rules=MAP *.shop.test 127.0.0.1".to_owned()],
        ..BrowserOptions::default()
    })
    .await;
    browser
        .goto(&format!("{www}/?utm_source=google&utm_medium=cpc"))
        .await;
    browser.wait_tracker().await;
    let visitor = browser.visitor_id().await.unwrap();
    let cookie = browser.cookie("zori_visitor_id").await.unwrap();
    assert_eq!(cookie["value"], json!(visitor));
    assert_eq!(cookie["domain"], ".shop.test", "{cookie}");
    let session = browser
        .execute("return ZoriHQ.getSessionId()", vec![])
        .await;

    browser.click("#checkout").await;
    browser.wait_tracker().await;
    assert_eq!(
        browser.execute("return location.host", vec![]).await,
        json!(format!("app.shop.test:{}", site.port))
    );
    assert_eq!(
        browser.visitor_id().await.as_deref(),
        Some(visitor.as_str())
    );
    assert_eq!(
        browser
            .execute("return ZoriHQ.getSessionId()", vec![])
            .await,
        session,
        "the session goes on across subdomains"
    );

    let events = events_until(&stack, &visitor, Duration::from_secs(30), |e| {
        named(e, "page_view").len() == 2
    })
    .await;
    let hosts: Vec<&str> = named(&events, "page_view")
        .iter()
        .map(|v| v["page_host"].as_str().unwrap())
        .collect();
    assert_eq!(
        hosts,
        [
            format!("www.shop.test:{}", site.port),
            format!("app.shop.test:{}", site.port)
        ],
        "{}",
        summary(&events)
    );
    assert_eq!(
        named(&events, "session_start").len(),
        1,
        "{}",
        summary(&events)
    );
    let journey = stack
        .report(&format!("/api/v1/visitors/{visitor}/journey"))
        .await;
    assert_eq!(journey["first_touch"]["source"], "google", "{journey:#}");
    assert_eq!(
        journey["touches"].as_array().unwrap().len(),
        1,
        "{journey:#}"
    );

    // data-cookie-domain overrides the automatic choice.
    site.add(
        "/own",
        page(
            "Own",
            "",
            "",
            &tracker_tag(&stack, "data-cookie-domain=\"app.shop.test\""),
        ),
    );
    browser.delete_cookie("zori_visitor_id").await;
    browser.goto(&format!("{app}/own")).await;
    browser.wait_tracker().await;
    let own = browser.visitor_id().await.unwrap();
    assert_ne!(own, visitor);
    let cookie = browser.cookie("zori_visitor_id").await.unwrap();
    assert_eq!(cookie["value"], json!(own));
    assert_eq!(cookie["domain"], ".app.shop.test", "{cookie}");

    browser.close().await;
    stack.tenant.cleanup().await;
}
