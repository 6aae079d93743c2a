#!/usr/bin/env python3
"""Lints a Helm chart with the real Helm library (helm-sdkpy), and optionally renders it.

    .venv/bin/python scripts/helm_lint.py CHART [--render-dir DIR] [--values NAME=FILE]...

Lint: helm-sdkpy's `Lint` (Helm's own `helm lint`: Chart.yaml, values.yaml against
values.schema.json, every template rendered with the default values and parsed as YAML,
object names, deprecated APIs). Like `helm lint --strict`, warnings fail too. helm-sdkpy hands
back each message's severity and file but not its text, so on failure the chart is also
rendered (below), which prints Helm's full error.

Render (`--render-dir`): there is no `helm template` in helm-sdkpy, so the chart is installed
for real with helm-sdkpy's `Install` into a small in-memory Kubernetes API served by this
script on 127.0.0.1 (discovery, a fixed v1.33 server version (the chart's floor), and create/get of objects; no
controllers). Helm renders the templates exactly as `helm install` does (values merged, schema
checked, capabilities from discovery), installs the CRDs from crds/ first, creates every
object through the API and records the release. Written for each values set NAME (`default`
is always rendered with the chart's own values.yaml; each `--values NAME=FILE` adds one):
  DIR/NAME.yaml        the rendered manifest (the release's templates)
  DIR/NAME.created     one line per object Helm created through the API, in order
  DIR/NAME.NOTES.txt   the rendered NOTES.txt

Exits 0 when the lint is clean and every render succeeded; prints one line per finding.
"""
import argparse
import asyncio
import json
import re
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import helm_sdkpy
import yaml

SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}
NAMESPACE = "zori-system"
RELEASE = "zori"

# Kinds the in-memory API serves: group/version -> [(plural, kind, namespaced)].
RESOURCES = {
    "v1": [
        ("configmaps", "ConfigMap", True),
        ("namespaces", "Namespace", False),
        ("secrets", "Secret", True),
        ("serviceaccounts", "ServiceAccount", True),
        ("services", "Service", True),
    ],
    "apps/v1": [("deployments", "Deployment", True)],
    "rbac.authorization.k8s.io/v1": [
        ("clusterrolebindings", "ClusterRoleBinding", False),
        ("clusterroles", "ClusterRole", False),
        ("rolebindings", "RoleBinding", True),
        ("roles", "Role", True),
    ],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "apiextensions.k8s.io/v1": [
        ("customresourcedefinitions", "CustomResourceDefinition", False)
    ],
    "coordination.k8s.io/v1": [("leases", "Lease", True)],
    "networking.k8s.io/v1": [("ingresses", "Ingress", True)],
    "monitoring.coreos.com/v1": [("servicemonitors", "ServiceMonitor", True)],
}
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


class FakeKube(BaseHTTPRequestHandler):
    """Just enough of the Kubernetes API for `helm install` to run to the end."""

    objects = {}
    created = []
    lock = threading.Lock()

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def not_found(self):
        self.reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                         "reason": "NotFound", "code": 404, "message": "not found"})

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length)

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/version":
            return self.reply(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0",
                                    "platform": "linux/amd64"})
        if path == "/api":
            return self.reply(200, {"kind": "APIVersions", "versions": ["v1"]})
        if path == "/apis":
            groups = []
            for gv in RESOURCES:
                if "/" in gv:
                    group, version = gv.split("/")
                    entry = {"groupVersion": gv, "version": version}
                    groups.append({"name": group, "versions": [entry], "preferredVersion": entry})
            return self.reply(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        gv = "v1" if path == "/api/v1" else path[len("/apis/"):] if path.startswith("/apis/") else None
        if gv in RESOURCES:
            return self.reply(200, {
                "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                "resources": [{"name": plural, "singularName": kind.lower(), "namespaced": ns,
                               "kind": kind, "verbs": VERBS}
                              for plural, kind, ns in RESOURCES[gv]]})
        with self.lock:
            found = self.objects.get(path)
        if found is not None:
            return self.reply(200, found)
        if "labelSelector=" in self.path or re.search(r"/(namespaces/[^/]+/)?[a-z]+s$", path):
            return self.reply(200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": []})
        return self.not_found()

    def do_POST(self):
        raw = self.body()
        path = self.path.split("?")[0]
        if "protobuf" in (self.headers.get("Content-Type") or ""):
            # Helm's release record (a Secret written by the typed client as protobuf).
            return self.reply(201, {"kind": "Secret", "apiVersion": "v1", "metadata": {
                "name": f"sh.helm.release.v1.{RELEASE}.v1", "namespace": NAMESPACE,
                "resourceVersion": "1"}})
        obj = json.loads(raw or b"{}")
        meta = obj.setdefault("metadata", {})
        meta.setdefault("resourceVersion", "1")
        meta.setdefault("uid", f"uid-{len(self.created) + 1}")
        if obj.get("kind") == "CustomResourceDefinition":
            obj["status"] = {"acceptedNames": obj["spec"]["names"], "conditions": [
                {"type": "NamesAccepted", "status": "True"},
                {"type": "Established", "status": "True"}]}
        with self.lock:
            self.objects[f"{path}/{meta.get('name')}"] = obj
            where = f"{meta['namespace']}/" if meta.get("namespace") else ""
            self.created.append(f"{obj.get('apiVersion')} {obj.get('kind')} {where}{meta.get('name')}")
        self.reply(201, obj)

    def do_PUT(self):
        raw = self.body()
        if "protobuf" in (self.headers.get("Content-Type") or ""):
            return self.reply(200, {"kind": "Secret", "apiVersion": "v1", "metadata": {
                "name": f"sh.helm.release.v1.{RELEASE}.v1", "namespace": NAMESPACE,
                "resourceVersion": "2"}})
        obj = json.loads(raw or b"{}")
        with self.lock:
            self.objects[self.path.split("?")[0]] = obj
        self.reply(200, obj)

    do_PATCH = do_PUT

    def log_message(self, *args):
        pass


def lint(chart):
    config = helm_sdkpy.Configuration(namespace=NAMESPACE)
    result = asyncio.run(helm_sdkpy.Lint(config).run(chart))
    failed = False
    for message in result.get("Messages") or []:
        severity = message.get("Severity", 0)
        label = SEVERITY.get(severity, str(severity))
        print(f"lint {label} {message.get('Path')}")
        failed |= severity >= 2
    if result.get("Errors"):
        failed = True
    print(f"lint: {result.get('TotalChartsLinted', 0)} chart(s) linted, "
          f"{'FAILED' if failed else 'clean'}")
    return not failed


def render(chart, name, values, out_dir):
    FakeKube.objects = {}
    FakeKube.created = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKube)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
        "users": [{"name": "fake", "user": {"token": "fake"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake",
                                                  "namespace": NAMESPACE}}],
    })
    try:
        config = helm_sdkpy.Configuration(namespace=NAMESPACE, kubeconfig=kubeconfig)
        release = asyncio.run(helm_sdkpy.Install(config).run(
            RELEASE, chart, values=values, wait=False, timeout=60))
    except helm_sdkpy.HelmError as error:
        print(f"render {name}: FAILED: {error}")
        return False
    finally:
        server.shutdown()
        server.server_close()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.yaml").write_text(release.get("manifest", ""))
    (out / f"{name}.created").write_text("".join(f"{line}\n" for line in FakeKube.created))
    notes = (release.get("info") or {}).get("notes", "")
    (out / f"{name}.NOTES.txt").write_text(notes)
    print(f"render {name}: ok, {len(FakeKube.created)} object(s) created -> {out / (name + '.yaml')}")
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("chart")
    parser.add_argument("--render-dir")
    parser.add_argument("--values", action="append", default=[], metavar="NAME=FILE")
    args = parser.parse_args()

    ok = lint(args.chart)
    sets = [("default", None)]
    for item in args.values:
        name, _, file = item.partition("=")
        if not name or not file:
            parser.error(f"--values {item!r}: expected NAME=FILE")
        sets.append((name, yaml.safe_load(Path(file).read_text()) or {}))
    if args.render_dir or not ok:
        out_dir = args.render_dir or tempfile.mkdtemp(prefix="helm-render-")
        for name, values in sets:
            ok &= render(args.chart, name, values, out_dir)
    print(f"helm_lint: helm {helm_sdkpy.get_version()}, {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
