#!/usr/bin/env python3
"""A tiny demo shop for Zori, standard library only.

It serves a few pages that load the Zori tracker, and takes payments the four ways
docs/site-owner-guide.md describes, doing on its server exactly what a real shop's server does
with Stripe: it passes the visitor id to Stripe.

  flow            what the shop's server asks Stripe for           Zori reads the visitor id from
  checkout        stripe.checkout.Session.create(mode="payment")   checkout.session.completed metadata
  subscription    stripe.checkout.Session.create(mode=             checkout.session.completed metadata, and
                  "subscription", subscription_data.metadata)      every invoice.paid (subscription metadata);
                                                                   invoice_payment.paid ties the invoice to
                                                                   its payment intent and charge
  payment_intent  stripe.PaymentIntent.create(metadata=...)        payment_intent.succeeded metadata
  payment_link    a Payment Link URL + ?client_reference_id=...    checkout.session.completed client_reference_id

The visitor id comes from the page (the tracker's getVisitorId fills a hidden form field) or,
failing that, from the tracker's first-party cookie `zori_visitor_id`.

With no Stripe account at hand (the default), the shop then plays Stripe: it sends zori-api the
webhooks Stripe sends for that payment on API version 2025-03-31.basil (every one of them, in a
shuffled order, as Stripe does not guarantee any order), signed exactly as Stripe signs them
(HMAC-SHA256 over "t.payload" with the endpoint's signing secret), so the whole story runs
offline. With STRIPE_SECRET_KEY set and the `stripe` package installed, the checkout and
subscription flows create real Stripe Checkout Sessions instead (test mode), and Stripe sends
the webhooks (forward them with `stripe listen --forward-to $ZORI_API_URL/webhooks/stripe`).

Settings (environment):
  ZORI_PUBLISHABLE_KEY        the tenant's publishable key (data-key of the script tag); required
  ZORI_STRIPE_WEBHOOK_SECRET  the signing secret zori-api verifies webhooks with; required
  ZORI_INGEST_URL             the tracking endpoint (default http://localhost:1324)
  ZORI_API_URL                zori-api (default http://localhost:1323)
  ZORI_DEMO_HOST, ZORI_DEMO_PORT   where the shop listens (default 127.0.0.1:8080)
  STRIPE_SECRET_KEY           optional: sk_test_... to use real Stripe Checkout
"""
import hashlib
import hmac
import html
import json
import os
import random
import re
import sys
import time
import urllib.error
import urllib.request
import uuid
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit


def setting(name, default=None):
    value = os.environ.get(name, default)
    if value is None or value == "":
        sys.exit(f"error: set {name} (see the top of {sys.argv[0]})")
    return value


HOST = os.environ.get("ZORI_DEMO_HOST", "127.0.0.1")
PORT = int(os.environ.get("ZORI_DEMO_PORT", "8080"))
INGEST_URL = os.environ.get("ZORI_INGEST_URL", "http://localhost:1324").rstrip("/")
API_URL = os.environ.get("ZORI_API_URL", "http://localhost:1323").rstrip("/")
KEY = setting("ZORI_PUBLISHABLE_KEY")
WEBHOOK_SECRET = setting("ZORI_STRIPE_WEBHOOK_SECRET")
STRIPE_SECRET_KEY = os.environ.get("STRIPE_SECRET_KEY", "")

# Metadata key Zori reads the visitor id from (the same on every Stripe object).
VISITOR_KEY = "zori_visitor_id"
VISITOR_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")

PRODUCTS = {
    "starter": {"name": "Starter plan", "amount": 4900, "mode": "payment"},
    "pro": {"name": "Pro plan", "amount": 9900, "mode": "payment"},
    "team": {"name": "Team plan", "amount": 2900, "mode": "subscription"},
}
FLOWS = ("checkout", "subscription", "payment_intent", "payment_link")


def money(cents):
    return f"${cents // 100}" + (f".{cents % 100:02d}" if cents % 100 else "")


def page(title, body):
    """Every page loads the tracker: the two lines of docs/site-owner-guide.md, step 1."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)} · Demo shop</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}}
nav a{{margin-right:1rem}} .card{{border:1px solid #ddd;border-radius:8px;padding:1rem;margin:1rem 0}}
button,.button{{font:inherit;padding:.4rem 1rem}} pre{{background:#f6f6f6;padding:.8rem;overflow:auto;font-size:13px}}
.muted{{color:#666}}</style>
<script>window.ZoriHQ = window.ZoriHQ || [];</script>
<script async src="{INGEST_URL}/zori.js" data-key="{KEY}"></script>
</head><body><nav><a href="/">Home</a><a href="/pricing">Pricing</a><a href="/features">Features</a>
<a href="#" id="login">Log in as Jane</a></nav>
<h1>{html.escape(title)}</h1>{body}
<script>
document.getElementById('login').addEventListener('click', function (e) {{
  e.preventDefault();
  // identify(): ties this visitor (and Jane's other devices) to one user.
  ZoriHQ.push(['identify', {{app_id: 'demo-user-1', email: 'jane@example.com', fullname: 'Jane Doe'}}]);
  this.textContent = 'Logged in as Jane';
}});
</script></body></html>"""


def pricing():
    cards = []
    for pid, product in PRODUCTS.items():
        per = " / month" if product["mode"] == "subscription" else ""
        flow = "subscription" if product["mode"] == "subscription" else "checkout"
        buttons = f"""<form method="post" action="/checkout">
<input type="hidden" name="product" value="{pid}"><input type="hidden" name="flow" value="{flow}">
<input type="hidden" name="visitor_id" value=""><button>Buy {product["name"]} with Checkout</button></form>"""
        if product["mode"] == "payment":
            buttons += f"""<form method="post" action="/checkout">
<input type="hidden" name="product" value="{pid}"><input type="hidden" name="flow" value="payment_intent">
<input type="hidden" name="visitor_id" value=""><button>Pay on this page (PaymentIntent)</button></form>
<p><a class="button payment-link" href="/pay/{pid}">Buy with a Payment Link</a></p>"""
        cards.append(f"""<div class="card"><h2>{product["name"]}</h2>
<p>{money(product["amount"])}{per}</p>{buttons}</div>""")
    # The page asks the tracker for the visitor id and hands it to the server with the order
    # (hidden fields), and to Payment Links as client_reference_id.
    script = """<script>
ZoriHQ.push(['getVisitorId', function (id) {
  if (!id) return;
  document.querySelectorAll('input[name=visitor_id]').forEach(function (i) { i.value = id; });
  document.querySelectorAll('a.payment-link').forEach(function (a) {
    a.href += (a.href.indexOf('?') < 0 ? '?' : '&') + 'client_reference_id=' + encodeURIComponent(id);
  });
}]);
</script>"""
    return page("Pricing", "".join(cards) + script)


# --- What the shop's server sends to Stripe ------------------------------------------------------

def checkout_session_params(product_id, visitor_id):
    """The arguments of stripe.checkout.Session.create(**params) (docs/site-owner-guide.md)."""
    product = PRODUCTS[product_id]
    price_data = {"currency": "usd", "unit_amount": product["amount"],
                  "product_data": {"name": product["name"]}}
    if product["mode"] == "subscription":
        price_data["recurring"] = {"interval": "month"}
    params = {
        "mode": product["mode"],
        "line_items": [{"price_data": price_data, "quantity": 1}],
        "success_url": f"http://localhost:{PORT}/thanks?session_id={{CHECKOUT_SESSION_ID}}",
        "cancel_url": f"http://localhost:{PORT}/pricing",
        # Zori reads the visitor id from the session's metadata (checkout.session.completed)...
        "metadata": {VISITOR_KEY: visitor_id},
    }
    if product["mode"] == "payment":
        # ...and from the PaymentIntent's, so its charge and any refund are tied to the visitor.
        params["payment_intent_data"] = {"metadata": {VISITOR_KEY: visitor_id}}
    else:
        # ...and from the subscription's, so every renewal invoice is attributed too.
        params["subscription_data"] = {"metadata": {VISITOR_KEY: visitor_id}}
    return params


def payment_intent_params(product_id, visitor_id):
    """The arguments of stripe.PaymentIntent.create(**params) for a payment form on the page."""
    product = PRODUCTS[product_id]
    return {"amount": product["amount"], "currency": "usd",
            "automatic_payment_methods": {"enabled": True},
            "description": product["name"],
            "metadata": {VISITOR_KEY: visitor_id}}


def payment_link_url(product_id, visitor_id):
    """A Payment Link with the visitor id as client_reference_id (the page appends it)."""
    return f"https://buy.stripe.com/test_demo_{product_id}?" + urlencode({"client_reference_id": visitor_id})


# --- Playing Stripe: the webhooks Stripe would send -------------------------------------------

def stripe_events(flow, product_id, visitor_id, params):
    """The events (type, object) Stripe sends for a completed payment of this flow."""
    product = PRODUCTS[product_id]
    now = int(time.time())
    n = uuid.uuid4().hex[:24]
    amount = product["amount"]
    email = "buyer@example.com"
    charge = {"id": f"ch_{n}", "object": "charge", "amount": amount, "amount_captured": amount,
              "amount_refunded": 0, "currency": "usd", "created": now, "paid": True,
              "status": "succeeded", "payment_intent": f"pi_{n}", "customer": f"cus_{n}",
              "billing_details": {"email": email}, "description": product["name"], "metadata": {}}
    intent = {"id": f"pi_{n}", "object": "payment_intent", "amount": amount,
              "amount_received": amount, "currency": "usd", "created": now, "status": "succeeded",
              "latest_charge": f"ch_{n}", "customer": f"cus_{n}", "receipt_email": email,
              "description": product["name"], "metadata": {}}
    session = {"id": f"cs_test_{n}", "object": "checkout.session", "mode": "payment",
               "amount_total": amount, "amount_subtotal": amount, "currency": "usd",
               "created": now, "payment_status": "paid", "status": "complete",
               "customer": f"cus_{n}", "customer_details": {"email": email},
               "client_reference_id": None, "payment_intent": f"pi_{n}", "invoice": None,
               "subscription": None, "metadata": {}}
    if flow == "checkout":
        session["metadata"] = dict(params["metadata"])
        intent["metadata"] = dict(params["payment_intent_data"]["metadata"])
        return [("checkout.session.completed", session), ("payment_intent.succeeded", intent),
                ("charge.succeeded", charge)]
    if flow == "payment_intent":
        intent["metadata"] = dict(params["metadata"])
        intent["description"] = params["description"]
        return [("payment_intent.succeeded", intent), ("charge.succeeded", charge)]
    if flow == "payment_link":
        session["client_reference_id"] = visitor_id
        session["payment_link"] = f"plink_{n}"
        return [("checkout.session.completed", session), ("payment_intent.succeeded", intent),
                ("charge.succeeded", charge)]
    # subscription: the session, the subscription, its first invoice, the invoice payment that
    # links the invoice to its payment intent (basil: the invoice no longer names it), and the
    # payment intent and charge themselves (no visitor id on either).
    metadata = dict(params["subscription_data"]["metadata"])
    session.update({"mode": "subscription", "payment_intent": None, "invoice": f"in_{n}",
                    "subscription": f"sub_{n}", "metadata": dict(params["metadata"])})
    subscription = {"id": f"sub_{n}", "object": "subscription", "customer": f"cus_{n}",
                    "created": now, "status": "active", "metadata": metadata,
                    "latest_invoice": f"in_{n}", "currency": "usd"}
    invoice_payment = {"id": f"inpay_{n}", "object": "invoice_payment", "invoice": f"in_{n}",
                       "amount_paid": amount, "amount_requested": amount, "currency": "usd",
                       "created": now, "is_default": True, "livemode": False, "status": "paid",
                       "payment": {"type": "payment_intent", "payment_intent": f"pi_{n}"},
                       "status_transitions": {"canceled_at": None, "paid_at": now}}
    intent["description"] = "Subscription creation"
    charge["description"] = "Subscription creation"
    invoice = {"id": f"in_{n}", "object": "invoice", "amount_due": amount, "amount_paid": amount,
               "total": amount, "currency": "usd", "created": now, "status": "paid",
               "customer": f"cus_{n}", "customer_email": email,
               "billing_reason": "subscription_create", "metadata": {},
               "parent": {"type": "subscription_details", "subscription_details": {
                   "subscription": f"sub_{n}", "metadata": metadata}},
               "lines": {"object": "list", "data": [{"id": f"il_{n}", "description": f"1 × {product['name']}",
                                                    "amount": amount, "metadata": metadata}]}}
    return [("checkout.session.completed", session), ("customer.subscription.created", subscription),
            ("invoice.paid", invoice), ("invoice.payment_succeeded", invoice),
            ("invoice_payment.paid", invoice_payment), ("payment_intent.succeeded", intent),
            ("charge.succeeded", charge)]


def send_webhook(event_type, obj):
    """POSTs one event to zori-api, signed as Stripe signs it; returns the HTTP status."""
    now = int(time.time())
    event = {"id": f"evt_{uuid.uuid4().hex[:24]}", "object": "event", "api_version": "2025-03-31.basil",
             "created": now, "livemode": False, "type": event_type, "data": {"object": obj}}
    payload = json.dumps(event, separators=(",", ":"))
    signature = hmac.new(WEBHOOK_SECRET.encode(), f"{now}.{payload}".encode(), hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        f"{API_URL}/webhooks/stripe", data=payload.encode(), method="POST",
        headers={"Content-Type": "application/json", "Stripe-Signature": f"t={now},v1={signature}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as error:
        return error.code


def real_checkout(params):
    """The real thing: a Stripe Checkout Session (test mode); the browser goes to its URL."""
    import stripe  # pip install stripe

    stripe.api_key = STRIPE_SECRET_KEY
    return stripe.checkout.Session.create(**params).url


def complete(flow, product_id, visitor_id):
    """Takes one payment; returns (status, page)."""
    if product_id not in PRODUCTS:
        return 400, page("Unknown product", "<p>No such product.</p>")
    product = PRODUCTS[product_id]
    if flow not in FLOWS or (product["mode"] == "subscription") != (flow == "subscription"):
        return 400, page("Unknown payment flow", f"<p>{html.escape(flow)} cannot sell {product['name']}.</p>")
    if flow == "payment_intent":
        asked = ("stripe.PaymentIntent.create", payment_intent_params(product_id, visitor_id))
    elif flow == "payment_link":
        asked = ("Payment Link", {"url": payment_link_url(product_id, visitor_id)})
    else:
        asked = ("stripe.checkout.Session.create", checkout_session_params(product_id, visitor_id))
    if STRIPE_SECRET_KEY and flow in ("checkout", "subscription"):
        return 303, real_checkout(asked[1])
    events = stripe_events(flow, product_id, visitor_id, asked[1])
    random.shuffle(events)  # Stripe does not deliver a payment's events in any fixed order.
    deliveries = [(event_type, send_webhook(event_type, obj)) for event_type, obj in events]
    ok = all(200 <= status < 300 for _, status in deliveries)
    rows = "".join(f"<li><code>{t}</code> → {s}</li>" for t, s in deliveries)
    body = f"""<p>{'Paid' if ok else 'Payment not recorded:'} {html.escape(product['name'])},
{money(product['amount'])}{' / month' if flow == 'subscription' else ''}.</p>
<p>Visitor id: <code id="visitor">{html.escape(visitor_id or '(none)')}</code></p>
<h2>What this shop's server asked Stripe for</h2>
<p><code>{asked[0]}</code></p><pre>{html.escape(json.dumps(asked[1], indent=2))}</pre>
<h2>Webhooks sent to zori-api, as Stripe would</h2><ul id="webhooks">{rows}</ul>
<p class="muted">Now ask the reports API which source brought the money:<br>
<code>curl -H "Authorization: Bearer $ZORI_API_TOKEN" "{API_URL}/api/v1/attribution?dimension=source"</code></p>"""
    return (200 if ok else 502), page("Thank you!" if ok else "Checkout failed", body)


class Shop(BaseHTTPRequestHandler):
    def send_page(self, status, body, location=None):
        data = body.encode()
        self.send_response(status)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def cookie_visitor(self):
        """The tracker's first-party cookie, read on the server."""
        cookies = SimpleCookie(self.headers.get("Cookie") or "")
        return cookies[VISITOR_KEY].value if VISITOR_KEY in cookies else ""

    def visitor(self, given):
        for candidate in (given, self.cookie_visitor()):
            if candidate and VISITOR_ID.match(candidate):
                return candidate
        return ""

    def respond(self, result):
        status, body = result
        if status == 303:
            return self.send_page(303, "", location=body)
        self.send_page(status, body)

    def do_GET(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/":
            self.send_page(200, page("Demo shop", "<p>Browse around, then buy a plan on the "
                                     "<a href='/pricing'>pricing page</a>.</p>"))
        elif url.path == "/pricing":
            self.send_page(200, pricing())
        elif url.path == "/features":
            self.send_page(200, page("Features", "<p>Everything you need.</p>"))
        elif url.path == "/thanks":
            # Where real Stripe Checkout sends the buyer back (success_url).
            self.send_page(200, page("Thank you!", "<p>Your payment is being confirmed by Stripe; "
                                     "Zori learns of it from Stripe's webhook.</p>"))
        elif url.path.startswith("/pay/"):
            # Stands in for the Payment Link page on Stripe: client_reference_id is what the
            # link carried.
            reference = query.get("client_reference_id", [""])[0]
            self.respond(complete("payment_link", url.path[len("/pay/"):], self.visitor(reference)))
        else:
            self.send_page(404, page("Not found", ""))

    def do_POST(self):
        if urlsplit(self.path).path != "/checkout":
            return self.send_page(404, page("Not found", ""))
        length = min(int(self.headers.get("Content-Length") or 0), 8192)
        form = parse_qs(self.rfile.read(length).decode())
        product = form.get("product", ["pro"])[0]
        default_flow = "subscription" if PRODUCTS.get(product, {}).get("mode") == "subscription" else "checkout"
        flow = form.get("flow", [default_flow])[0]
        self.respond(complete(flow, product, self.visitor(form.get("visitor_id", [""])[0])))

    def log_message(self, fmt, *args):
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer((HOST, PORT), Shop)
    print(f"demo shop on http://localhost:{server.server_port}", flush=True)
    server.serve_forever()
