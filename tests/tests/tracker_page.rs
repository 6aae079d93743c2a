//! The tracker in real headless Chromium against the real zori-ingest and zori-api: a page load
//! records `page_view` with title, path, query and referrer (personal data stripped, UTM and
//! click ids kept); clicks record their element, position, viewport and data attributes;
//! single-page-app navigations record one page view each; `getVisitorId()` is the cookie value
//! and the id the server stores. zori-ingest serves the script at its versioned URL with an
//! ETag and long caching, and the script reports that version.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{json, Value};
use zori_e2e::{
    tracker::{
        events_until, named, page, properties, summary, tracker_path, Browser, BrowserOptions,
        PageServer,
    },
    Stack, StackOptions,
};

const VERSION: &str = env!("CARGO_PKG_VERSION");

#[tokio::test(flavor = "multi_thread")]
async fn page_views_clicks_and_spa_navigation_reach_the_reports() {
    let site = PageServer::start().await;
    let stack = Stack::start_with(
        "tracker_page",
        StackOptions {
            allowed_origins: vec![site.origin()],
        },
    )
    .await;

    // Served by zori-ingest itself: versioned, immutable, with a strong ETag.
    let versioned = format!("{}/v/{VERSION}/zori.js", stack.ingest.base_url);
    let response = stack.http.get(&versioned).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let cache = response.headers()["cache-control"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cache.contains("immutable") && cache.contains("max-age=31536000"),
        "{cache}"
    );
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let served = response.text().await.unwrap();
    let on_disk = std::fs::read_to_string(tracker_path()).unwrap();
    assert!(
        served == on_disk,
        "zori-ingest serves another tracker than dataplane/tracker/zori.js: rebuild it \
         (cargo build --workspace --bins)"
    );
    assert!(
        served.contains(&format!("version:\"{VERSION}\"")),
        "script reports {VERSION}"
    );
    let not_modified = stack
        .http
        .get(&versioned)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    let latest = stack
        .http
        .get(format!("{}/zori.js", stack.ingest.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(latest.headers()["cache-control"], "public, max-age=300");

    // The landing page loads the tracker from zori-ingest's versioned URL, as a site would.
    let tag = format!(
        "<script async src=\"{versioned}\" data-key=\"{}\"></script>",
        stack.tenant.publishable_key
    );
    let landing_query = "utm_source=newsletter&utm_medium=email&utm_campaign=spring\
        &utm_term=shoes&utm_content=hero&gclid=Cj0KCQiA1234&ref=blog\
        &email=jane%40example.com&token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln";
    site.add(
        "/ref",
        page(
            "Elsewhere",
            "",
            &format!(
                "<a id=\"go\" href=\"{}/landing?{landing_query}\">to the shop</a>",
                site.origin()
            ),
            "",
        ),
    );
    site.add(
        "/landing",
        page(
            "Spring sale – Zori shop",
            "",
            "<div id=\"hero\"><a class=\"cta primary big\" href=\"/pricing?plan=pro\" \
             data-plan=\"pro\" data-position=\"hero\" target=\"_blank\" \
             onclick=\"event.preventDefault()\">  Start free trial  </a></div>\
             <p style=\"margin-top:200px\"><button id=\"buy\" class=\"btn\" data-sku=\"A1\">\
             Buy now</button> <input id=\"q\" type=\"text\" value=\"secret text\"></p>",
            &tag,
        ),
    );

    let browser = Browser::launch(BrowserOptions::default()).await;
    // Arrive from another site (localhost is another host than 127.0.0.1).
    browser
        .goto(&format!("http://localhost:{}/ref", site.port))
        .await;
    browser.click("#go").await;
    browser.wait_tracker().await;
    assert_eq!(
        browser.execute("return ZoriHQ.version", vec![]).await,
        json!(VERSION)
    );

    // The visitor id: the API, the cookie and (below) the server agree.
    let visitor = browser.visitor_id().await.expect("a visitor id");
    assert!(visitor.starts_with("vis_"), "{visitor}");
    let cookie = browser
        .cookie("zori_visitor_id")
        .await
        .expect("visitor cookie");
    assert_eq!(cookie["value"], json!(visitor));
    let queued = browser
        .execute_async(
            "const done = arguments[arguments.length - 1]; ZoriHQ.push(['getVisitorId', done]);",
            vec![],
        )
        .await;
    assert_eq!(queued, json!(visitor));

    // Clicks, as a user makes them.
    browser.click("#hero a.cta").await;
    browser.click("#buy").await;
    browser.click("#q").await;
    let viewport = browser
        .execute("return [window.innerWidth, window.innerHeight]", vec![])
        .await;

    // Single-page navigation: push, a replace that only changes the query (no page view), a
    // replace to another path, a hash change, back, and a manual page_view for the same URL.
    let spa = [
        "history.pushState({}, '', '/app/step-1')",
        "history.replaceState({}, '', '/app/step-1?filter=red')",
        "history.replaceState({}, '', '/app/step-2')",
        "location.hash = '#reviews'",
        "history.back()",
        "ZoriHQ.push(['track', 'page_view'])",
    ];
    for step in spa {
        browser.execute(step, vec![]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        browser
            .execute("return location.pathname + location.hash", vec![])
            .await,
        json!("/app/step-2")
    );

    events_until(&stack, &visitor, Duration::from_secs(30), |e| {
        named(e, "page_view").len() >= 5 && named(e, "click").len() >= 3
    })
    .await;
    // Give a straggler (a second page view, say) the chance to show up, then count exactly.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = zori_e2e::tracker::events_of(&stack, &visitor).await;
    let views = named(&events, "page_view");
    let paths: Vec<(&str, String)> = views
        .iter()
        .map(|v| {
            (
                v["page_path"].as_str().unwrap(),
                properties(v)["page_hash"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        paths,
        vec![
            ("/landing", String::new()),
            ("/app/step-1", String::new()),
            ("/app/step-2", String::new()),
            ("/app/step-2", "#reviews".to_owned()),
            ("/app/step-2", String::new()),
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
    assert!(events.iter().all(|e| e["visitor_id"] == json!(visitor)));
    let session = &events[0]["session_id"];
    assert!(events.iter().all(|e| &e["session_id"] == session));

    // The landing page view: title, path, query without personal data, referrer, first touch.
    let landing = views[0];
    assert_eq!(landing["page_title"], "Spring sale – Zori shop");
    assert_eq!(landing["page_host"], format!("127.0.0.1:{}", site.port));
    let query = landing["page_query"].as_str().unwrap();
    for kept in [
        "utm_source=newsletter",
        "utm_term=shoes",
        "gclid=Cj0KCQiA1234",
        "ref=blog",
    ] {
        assert!(query.contains(kept), "{kept} kept in {query}");
    }
    for dropped in ["email=", "jane", "token", "eyJ"] {
        assert!(!query.contains(dropped), "{dropped} dropped from {query}");
        assert!(
            !landing["page_url"].as_str().unwrap().contains(dropped),
            "{dropped} dropped from the URL"
        );
    }
    assert_eq!(landing["referrer_host"], "localhost");
    for (column, value) in [
        ("utm_source", "newsletter"),
        ("utm_medium", "email"),
        ("utm_campaign", "spring"),
        ("utm_term", "shoes"),
        ("utm_content", "hero"),
    ] {
        assert_eq!(landing[column], value, "{column}");
    }
    assert!(landing["click_ids"]
        .as_str()
        .unwrap()
        .contains("Cj0KCQiA1234"));
    let props = properties(landing);
    assert_eq!(props["page_title"], "Spring sale – Zori shop");
    assert_eq!(props["page_path"], "/landing");
    let search = props["page_search"].as_str().unwrap();
    assert!(search.starts_with("?utm_source=newsletter"), "{search}");
    assert!(
        !search.contains("jane") && !search.contains("token"),
        "{search}"
    );

    // The clicks.
    let clicks = named(&events, "click");
    assert_eq!(clicks.len(), 3, "{}", summary(&events));
    let link = clicks[0];
    assert_eq!(link["click_tag"], "a");
    assert_eq!(link["click_selector"], "a.cta.primary");
    assert_eq!(link["click_text"], "Start free trial");
    assert_eq!(link["click_kind"], "link");
    assert_eq!(
        link["click_href"],
        format!("{}/pricing?plan=pro", site.origin())
    );
    let data: Value = serde_json::from_str(link["click_data"].as_str().unwrap()).unwrap();
    assert_eq!(data, json!({"plan": "pro", "position": "hero"}));
    for (column, value) in [
        ("click_viewport_width", &viewport[0]),
        ("click_viewport_height", &viewport[1]),
    ] {
        assert_eq!(link[column].as_f64(), value.as_f64(), "{column}");
    }
    assert!(link["click_x"].as_f64().unwrap() > 0.0 && link["click_y"].as_f64().unwrap() > 0.0);
    let button = clicks[1];
    assert_eq!(button["click_tag"], "button");
    assert_eq!(button["click_selector"], "#buy");
    assert_eq!(button["click_text"], "Buy now");
    assert_eq!(button["click_kind"], "button");
    assert!(button["click_y"].as_f64().unwrap() > link["click_y"].as_f64().unwrap());
    let input = clicks[2];
    assert_eq!(input["click_kind"], "input");
    assert_eq!(input["click_text"], "", "never the value of a form field");

    // The reports API sees the same.
    let today = time::OffsetDateTime::now_utc().date();
    let counts = stack
        .report(&format!("/api/v1/events?from={today}&to={today}"))
        .await;
    let count = |name: &str| {
        counts["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .map(|r| r["count"].as_u64().unwrap())
    };
    assert_eq!(count("page_view"), Some(5), "{counts:#}");
    assert_eq!(count("click"), Some(3), "{counts:#}");
    assert_eq!(count("session_start"), Some(1), "{counts:#}");
    let journey = stack
        .report(&format!("/api/v1/visitors/{visitor}/journey"))
        .await;
    assert_eq!(journey["known"], true);
    assert_eq!(
        journey["first_touch"]["source"], "newsletter",
        "{journey:#}"
    );
    assert_eq!(
        journey["first_touch"]["landing_page"], "/landing",
        "{journey:#}"
    );
    let journey_views = journey["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "page_view")
        .count();
    assert_eq!(journey_views, 5);

    browser.close().await;
    stack.tenant.cleanup().await;
}
