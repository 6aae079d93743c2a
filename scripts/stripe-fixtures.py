#!/usr/bin/env python3
"""Cuts the objects Zori's Stripe tests need out of Stripe's published fixtures.

Usage: stripe-fixtures.py <stripe/openapi git dir> <commit> <api version> <out.json>

The source is `openapi/fixtures3.json` of https://github.com/stripe/openapi at <commit>: the
example objects Stripe generates from its OpenAPI spec (fields that are null in the example are
present with null; optional fields the example omits are absent). Nothing is added or renamed.
"""
import json
import subprocess
import sys

OBJECTS = [
    "checkout.session",
    "charge",
    "customer",
    "dispute",
    "invoice",
    "invoice_payment",
    "payment_intent",
    "refund",
    "subscription",
    "event",
]

git_dir, commit, api_version, out = sys.argv[1:5]
raw = subprocess.run(
    ["git", "--git-dir", git_dir, "show", f"{commit}:openapi/fixtures3.json"],
    check=True,
    capture_output=True,
).stdout
resources = json.loads(raw)["resources"]
date = subprocess.run(
    ["git", "--git-dir", git_dir, "log", "-1", "--format=%ad", "--date=short", commit],
    check=True,
    capture_output=True,
    text=True,
).stdout.strip()
document = {
    "api_version": api_version,
    "source": {
        "repository": "https://github.com/stripe/openapi",
        "commit": subprocess.run(
            ["git", "--git-dir", git_dir, "rev-parse", f"{commit}^{{commit}}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip(),
        "date": date,
        "path": "openapi/fixtures3.json",
    },
    "objects": {name: resources[name] for name in OBJECTS if name in resources},
}
with open(out, "w") as f:
    json.dump(document, f, indent=1, sort_keys=True)
    f.write("\n")
