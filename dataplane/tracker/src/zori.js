// The Zori browser tracker. build.mjs minifies it (pinned terser) into ../zori.js, which
// zori-ingest serves at /zori.js and /v/<version>/zori.js. Documented in docs/tracker.md; the
// gzipped size is held under 2,500 bytes by tests/tests/tracker_size.rs.
//
// Wire format: POST <base>/batch?key=<data-key>&v=<version> with a text/plain JSON body
// {"events": [RawEvent...], "identifies": [RawIdentify...]} (dataplane/core/src/event.rs).
// A text/plain body and no custom header make it a "simple" CORS request: no preflight.
// Addresses are sent as the browser has them: zori-ingest derives host, path, query, UTM
// parameters and click ids from page_url, drops query parameters that look like personal data
// or secrets (emails, tokens, JWTs) and fragments before anything is stored, and keeps only
// scheme, host and path of a referrer.
//
// Test hook: the tracker reads the clock only through `now()`, which calls
// `window.__zoriNow()` when the page defines it (tests move time with it).
((w, d) => {
  let undef;
  const nav = navigator;
  const loc = location;
  const hist = history;
  const assign = Object.assign;
  const script = d.currentScript || d.querySelector("script[data-key]");
  const attr = (name) => script?.getAttribute("data-" + name);
  const key = attr("key");
  if (!key) return console.error("zori: no data-key");
  const endpoint =
    (attr("base-url") || new URL(script.src).origin).replace(/\/(ingest)?\/?$/, "") +
    "/batch?key=" +
    key +
    "&v=" +
    VERSION;
  const cookieless = attr("cookieless") == "true";
  const quickSwitches = attr("track-quick-switches") == "true";
  let cookieDomain = attr("cookie-domain");

  const VISITOR = "zori_visitor_id";
  const SESSION = "zori_session";
  const CONSENT = "zori_consent";
  const QUEUE = "zori_queue";
  const SESSION_MS = 18e5; // 30 minutes of inactivity end a session

  const now = () => (w.__zoriNow || Date.now)();
  // 128 random bits; ids only need to be unique.
  const uuid = () => crypto.getRandomValues(new Uint32Array(4)).join("");

  // --- storage ------------------------------------------------------------------------------
  let local, tab;
  try {
    local = localStorage;
    tab = sessionStorage;
  } catch (e) {}
  // Queue and session mirror: per origin; in cookieless mode per tab.
  const store = cookieless ? tab : local;
  const read = (s, k) => s?.getItem(k);
  const write = (s, k, v) => {
    try {
      v == undef ? s.removeItem(k) : s.setItem(k, v);
    } catch (e) {}
  };
  const readCookie = (k) => d.cookie.match("(^|; )" + k + "=([^;]*)")?.[2];
  const writeCookie = (k, v, days, domain) =>
    (d.cookie =
      k +
      "=" +
      v +
      ";path=/;SameSite=Lax" +
      (days ? ";max-age=" + days * 864e2 : "") +
      (domain ? ";domain=" + domain : "") +
      (loc.protocol == "https:" ? ";Secure" : ""));
  // Visitor id, session and consent: first-party cookies on the registrable domain, found as
  // the shortest parent the browser accepts a cookie on (www.shop.com → shop.com: www. and app.
  // share a visitor); data-cookie-domain overrides it. In cookieless mode the tab's
  // sessionStorage holds them (consent: localStorage, so that a refusal lasts).
  const get = (k) => (cookieless ? read(k == CONSENT ? local : tab, k) : readCookie(k));
  const set = (k, v, days) => {
    if (cookieless) return write(k == CONSENT ? local : tab, k, days < 0 ? undef : v);
    if (cookieDomain == undef)
      for (let parts = loc.hostname.split("."), i = parts.length - 1, c = (cookieDomain = ""); i-- && !cookieDomain; )
        writeCookie("zori_t", 1, 0, (c = parts.slice(i).join("."))),
          readCookie("zori_t") && writeCookie("zori_t", 1, -1, (cookieDomain = c));
    writeCookie(k, v, days, cookieDomain);
  };

  // --- privacy --------------------------------------------------------------------------------
  // Do-Not-Track and Global Privacy Control win over everything; then the stored choice; with
  // none, data-consent="required" means no until setConsent({analytics: true}).
  const refused = (c = get(CONSENT)) =>
    nav.doNotTrack == 1 || nav.globalPrivacyControl || (c ? c < "1" : attr("consent") == "required");
  const visitor = (v) => (refused() ? null : (set(VISITOR, (v = get(VISITOR) || "vis_" + uuid()), 730), v));

  // --- sessions -------------------------------------------------------------------------------
  // State "id.start.last.pages.campaign" (cookie-safe characters only) lives in a session
  // cookie (shared by subdomains, gone when the browser closes), mirrored in storage so that
  // the end of a session whose browser was closed is still reported, once, on the next visit.
  const saveSession = (s) => {
    set(SESSION, (s = s.join(".")));
    write(store, SESSION, s);
  };
  // The live session, after ending the stored one if it is over (30 minutes idle, the browser
  // was closed, or the URL brings other UTM parameters). `keep`: events that are not activity
  // (the page being hidden or left) neither extend nor end the session.
  const session = (keep) => {
    const t = now();
    const campaign = loc.search.match(/utm_[^&]+/g)?.join().replace(/\W/g, "");
    const live = get(SESSION);
    let s = (live || read(store, SESSION) || "").split(".");
    if (keep && s[1]) return s;
    if (s[1] && !(live && t - s[2] <= SESSION_MS && (!campaign || campaign == s[4]))) {
      enqueue(event("session_end", { duration_ms: s[2] - s[1], page_count: +s[3] }, s, +s[2], "end_" + s[0]));
      s = [];
    }
    s[1] || enqueue(event("session_start", 0, (s = ["ses_" + uuid(), t, t, 0, campaign])));
    s[2] = t;
    saveSession(s);
    return s;
  };

  // --- events ---------------------------------------------------------------------------------
  let referrer = d.referrer || null;
  let lastUrl;
  // Compact keys (dataplane/core/src/event.rs): n event_name, i client_generated_event_id,
  // v visitor_id, s session_id, t client_timestamp_utc, r referrer, u page_url,
  // p custom_properties, e click_element, c click_position, a additional_properties.
  const event = (name, props, s, t = now(), id = uuid()) => ({
    n: "" + name,
    i: id,
    v: visitor(),
    s: s[0],
    t: new Date(t).toISOString(),
    r: referrer,
    u: loc.href,
    p: { ...props },
  });
  const send = (name, props, extra, keep, pageView) => {
    if (refused()) return false;
    const s = session(keep);
    pageView && saveSession(s, s[3]++);
    enqueue(assign(event(name, props, s), extra));
    return true;
  };
  const pageView = () => {
    lastUrl = loc.href;
    send(
      "page_view",
      { page_title: d.title, page_path: loc.pathname, page_search: loc.search, page_hash: loc.hash },
      0,
      0,
      1,
    );
  };
  // One page view per navigation: only when the URL really changed.
  const route = () => loc.href != lastUrl && pageView();
  const hidden = (ms) => ({ hidden_duration_ms: ms, hidden_duration_seconds: Math.round(ms / 1e3) });

  const onClick = ({ target: t, clientX: x, clientY: y }) => {
    const el = t.closest?.("a,button,input,select,textarea,[role=button]") || t;
    const tag = el.localName;
    const type =
      tag == "a" ? "link" : el.role == "button" || /^(bu|su|re|im)/.test(el.type) ? "button" : el.type && "input";
    tag &&
      send("click", 0, {
        e: {
          tag,
          selector: el.id ? "#" + el.id : tag + [...el.classList].slice(0, 2).map((c) => "." + c).join(""),
          // Never the value of a form field: only text the page itself shows.
          text: type == "input" ? undef : el.textContent.trim().slice(0, 100),
          type,
          href: typeof el.href == "string" ? el.href : undef,
          d: { ...el.dataset }, // data-* attributes
        },
        c: { x, y, w: w.innerWidth, h: w.innerHeight }, // viewport size
      });
  };

  // --- delivery -------------------------------------------------------------------------------
  // Events wait in storage until the server acknowledged them, so they survive reloads while
  // offline; a retry re-sends the same client ids, which the server de-duplicates.
  let queue = JSON.parse(read(store, QUEUE) || "[]");
  let busy = 0;
  let failures = 0;
  let timer = 0;
  const saveQueue = () => write(store, QUEUE, queue[0] && JSON.stringify(queue));
  const schedule = (ms) => (timer ||= setTimeout(flush, ms));
  const enqueue = (item) => {
    queue.push(item);
    saveQueue();
    queue[19] ? flush() : schedule(1e3);
  };
  // `all`: the page is being hidden or left: send now, with keepalive, even if a request is
  // still on its way (the server de-duplicates).
  const flush = (all) => {
    clearTimeout(timer);
    timer = 0;
    if (refused()) return saveQueue((queue = []));
    const batch = queue.slice(0, 20);
    if (batch[0] && nav.onLine && (all || !busy)) {
      const body = JSON.stringify({
        events: batch.filter((x) => !x.a),
        identifies: batch.filter((x) => x.a),
      });
      busy = 1;
      fetch(endpoint, { method: "POST", body, keepalive: !body[6e4] })
        .then((r) => {
          if (r.status == 429 || r.status > 499) throw r;
          // 2xx, or a 4xx that no retry can fix: either way the batch is done.
          busy = failures = 0;
          queue = queue.filter((x) => !batch.includes(x));
          saveQueue();
          flush();
        })
        .catch(() => {
          // Network error, 429 or 5xx: back off 2 s, 4 s, … 60 s.
          busy = 0;
          clearTimeout(timer);
          timer = setTimeout(flush, Math.min(6e4, 1e3 * 2 ** ++failures));
        });
    }
  };

  // --- automatic tracking ---------------------------------------------------------------------
  let started = 0;
  let hiddenAt = 0;
  const on = (target, type, f) => target.addEventListener(type, f, true);
  const start = () => {
    if (started || refused()) return;
    started = 1;
    pageView();
    on(d, "click", onClick);
    for (const m of ["pushState", "replaceState"]) {
      const original = hist[m];
      hist[m] = (...args) => {
        const path = loc.pathname;
        original.apply(hist, args);
        // A replaceState that keeps the path (dropping a query, updating a filter) is no
        // navigation.
        setTimeout(() => (m > "q" && loc.pathname == path ? (lastUrl = loc.href) : route()));
      };
    }
    on(w, "popstate", route);
    on(w, "hashchange", route);
    on(w, "online", () => flush((failures = 0)));
    on(d, "visibilitychange", () => {
      const t = now() - hiddenAt;
      if (d.hidden) {
        hiddenAt = now();
        quickSwitches && send("page_hidden", 0, 0, 1);
        flush(1);
      } else if (hiddenAt) {
        t > (attr("comeback-threshold") * 1 || 3e4)
          ? send("user_comeback", hidden(t))
          : quickSwitches && send("page_visible", hidden(t));
        hiddenAt = 0;
      }
    });
    // pagehide, not beforeunload: it fires on mobile too.
    on(w, "pagehide", () => {
      hiddenAt && send("left_while_hidden", hidden(now() - hiddenAt), 0, 1);
      flush(1);
    });
  };

  // --- API ------------------------------------------------------------------------------------
  const api = {
    version: VERSION,
    // A manual page_view goes through the automatic one, so a page is never counted twice.
    track: async (name, props) => (name == "page_view" ? !refused() && !route() : send(name, props)),
    // signature: the site server's HMAC of app_id (identity verification), passed through.
    identify: async ({ app_id, email, fullname, full_name, signature, ...traits } = {}) => {
      if (refused() || !(app_id || email)) return false;
      enqueue(
        assign(event("identify", 0, session()), {
          app_id: app_id?.toString(),
          email,
          fullname: fullname || full_name,
          signature,
          a: traits,
        }),
      );
      flush();
      return true; // queued: delivered, with retries, as soon as the server can take it
    },
    // Never creates an id against the visitor's choice: null when tracking is refused.
    getVisitorId: async (callback, id = visitor()) => (callback?.(id), id),
    getSessionId: (s = get(SESSION)?.split(".")) => (!refused() && now() - s?.[2] <= SESSION_MS ? s[0] : null),
    setConsent: (choice) => {
      // Only analytics consent changes what the tracker does; marketing is the site's business.
      set(CONSENT, +(choice?.analytics !== false), 730);
      refused()
        ? (set(VISITOR, "", -1), set(SESSION, "", -1), write(store, SESSION), saveQueue((queue = [])))
        : start();
      return true;
    },
    hasConsent: () => !refused(),
    optOut: () => api.setConsent({ analytics: false }),
    push: (command) => api[command[0]]?.(...command.slice(1)),
  };

  // Queued commands: consent first, then the automatic page view, then the rest in order.
  const boot = (commands = w.ZoriHQ || []) => {
    const early = (c) => /^(setC|optO)/.test(c[0]);
    w.ZoriHQ = api;
    commands.filter(early).map(api.push);
    start();
    flush();
    commands.filter((c) => !early(c)).map(api.push);
  };
  boot();
})(window, document);
