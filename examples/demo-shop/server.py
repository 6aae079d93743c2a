#!/usr/bin/env python3
"""A tiny demo shop for Zori, standard library only.

It serves a few pages that load the Zori tracker, and a checkout that does what a real shop's
server does with Stripe Checkout: it puts the visitor id into the Checkout Session metadata.
With no Stripe account at hand, it then plays Stripe: it sends the `checkout.session.completed`
webhook to zori-api, signed exactly as Stripe signs (HMAC-SHA256 over "t.payload").

Settings come from the environment: ZORI_DEMO_PORT, ZORI_INGEST_URL, ZORI_API_URL,
ZORI_PUBLISHABLE_KEY, ZORI_STRIPE_WEBHOOK_SECRET.
"""
import hashlib
import hmac
import html
import json
import os
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

PORT = int(os.environ.get("ZORI_DEMO_PORT", "8080"))
INGEST_URL = os.environ.get("ZORI_INGEST_URL", "http://localhost:1324")
API_URL = os.environ.get("ZORI_API_URL", "http://localhost:1323")
KEY = os.environ["ZORI_PUBLISHABLE_KEY"]
SECRET = os.environ["ZORI_STRIPE_WEBHOOK_SECRET"]

PRODUCTS = {"starter": ("Starter plan", 4900), "pro": ("Pro plan", 9900)}


def page(title, body):
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)} · Demo shop</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:42rem;margin:2rem auto;padding:0 1rem}}
nav a{{margin-right:1rem}} .card{{border:1px solid #ddd;border-radius:8px;padding:1rem;margin:1rem 0}}
button{{font:inherit;padding:.4rem 1rem}}</style>
<script>window.ZoriHQ = window.ZoriHQ || [];</script>
<script async src="{INGEST_URL}/zori.js" data-key="{KEY}" data-base-url="{INGEST_URL}"></script>
</head><body><nav><a href="/">Home</a><a href="/pricing">Pricing</a><a href="/features">Features</a></nav>
<h1>{html.escape(title)}</h1>{body}</body></html>"""


def pricing():
    cards = "".join(
        f"""<div class="card"><h2>{name}</h2><p>${price // 100}</p>
<form method="post" action="/checkout" class="buy"><input type="hidden" name="product" value="{pid}">
<input type="hidden" name="visitor_id" value=""><button>Buy {name}</button></form></div>"""
        for pid, (name, price) in PRODUCTS.items()
    )
    # The page asks the tracker for the visitor id and puts it into the form, the way a real
    # shop passes it to its server, which passes it to Stripe.
    script = """<script>
ZoriHQ.push(['getVisitorId', function (id) {
  document.querySelectorAll('input[name=visitor_id]').forEach(function (i) { i.value = id || ''; });
}]);
</script>"""
    return page("Pricing", cards + script)


def signed_webhook(visitor_id, product):
    name, amount = PRODUCTS[product]
    now = int(time.time())
    suffix = uuid.uuid4().hex
    event = {
        "id": f"evt_demo_{suffix}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": now,
        "livemode": False,
        "type": "checkout.session.completed",
        "data": {"object": {
            "id": f"cs_test_{suffix}", "object": "checkout.session", "mode": "payment",
            "amount_total": amount, "currency": "usd", "created": now,
            "payment_status": "paid", "status": "complete",
            "payment_intent": f"pi_demo_{suffix}",
            "customer_details": {"email": "buyer@example.com"},
            # What the shop's server put into stripe.checkout.sessions.create(metadata=...):
            "metadata": {"zori_visitor_id": visitor_id, "product": name},
        }},
    }
    payload = json.dumps(event, separators=(",", ":"))
    signature = hmac.new(SECRET.encode(), f"{now}.{payload}".encode(), hashlib.sha256).hexdigest()
    return payload, f"t={now},v1={signature}"


class Shop(BaseHTTPRequestHandler):
    def send_html(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/":
            self.send_html(200, page("Demo shop", "<p>Browse around, then buy a plan on the "
                                     "<a href='/pricing'>pricing page</a>.</p>"))
        elif path == "/pricing":
            self.send_html(200, pricing())
        elif path == "/features":
            self.send_html(200, page("Features", "<p>Everything you need.</p>"))
        else:
            self.send_html(404, page("Not found", ""))

    def do_POST(self):
        if self.path != "/checkout":
            return self.send_html(404, page("Not found", ""))
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(min(length, 4096)).decode())
        product = form.get("product", ["pro"])[0]
        visitor_id = form.get("visitor_id", [""])[0]
        if product not in PRODUCTS:
            return self.send_html(400, page("Unknown product", ""))
        payload, signature = signed_webhook(visitor_id, product)
        request = urllib.request.Request(
            f"{API_URL}/webhooks/stripe", data=payload.encode(), method="POST",
            headers={"Content-Type": "application/json", "Stripe-Signature": signature})
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                status = reply.status
        except Exception as error:  # noqa: BLE001 - shown to the demo user as is
            return self.send_html(502, page("Checkout failed", f"<p>{html.escape(str(error))}</p>"))
        self.send_html(200, page("Thank you!", f"<p>Paid {PRODUCTS[product][0]} "
                                 f"(Stripe webhook answered {status}).</p>"))

    def log_message(self, fmt, *args):
        pass


if __name__ == "__main__":
    print(f"demo shop on http://localhost:{PORT}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", PORT), Shop).serve_forever()
