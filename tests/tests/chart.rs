//! The Helm chart, the CRD and the examples, checked with the real tools (installed into .venv by
//! scripts/python-tools.sh; a missing tool fails the test, it never skips):
//!
//! - `helm lint` through the Helm library (helm-sdkpy `Lint`, scripts/helm_lint.py), warnings
//!   included, and a real `helm install` (helm-sdkpy `Install`) of the chart with its default
//!   values and with every `ci/*-values.yaml` into an in-memory Kubernetes API: the rendered
//!   manifests then pass `kubernetes-validate --strict` for the oldest and newest Kubernetes the
//!   chart supports, and say what they must (images, security context, RBAC, wiring).
//! - Every plain YAML manifest in `charts/`, `crds/` and `examples/` passes
//!   `kubernetes-validate --strict`; `ZoriProject` examples are validated against the CRD.
//! - The chart ships exactly the committed CRD.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use serde::Deserialize;
use serde_json::{json, Value};

/// Kubernetes versions the manifests are validated against: the chart's `kubeVersion` floor and
/// the newest the operator's client knows (k8s-openapi 0.29: 1.33 to 1.37).
const KUBERNETES_VERSIONS: [&str; 2] = ["1.33", "1.37"];
const CHART: &str = "charts/zori-operator";
const CRD: &str = "crds/zoriprojects.zori.dev.yaml";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn venv(tool: &str) -> PathBuf {
    let path = repo().join(".venv/bin").join(tool);
    assert!(
        path.exists(),
        "{} is missing: run scripts/python-tools.sh first (it installs kubernetes-validate and \
         helm-sdkpy into .venv; scripts/test.sh runs it)",
        path.display()
    );
    path
}

fn out_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("zori-chart")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a command in the repository; returns (success, stdout + stderr).
fn run(command: &mut Command) -> (bool, String) {
    let output = command
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("failed to run {command:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Every YAML document of a file, as JSON values.
fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// `kubernetes-validate --strict` itself over `files`: every object passes for every version;
/// the only complaint allowed is the warning that it has no schema for a ZoriProject (those
/// are validated against the CRD by [`validate_with_crd`]). Returns the number of objects.
fn kubernetes_validate(files: &[PathBuf]) -> usize {
    let mut command = Command::new(venv("kubernetes-validate"));
    command.arg("--strict");
    for version in KUBERNETES_VERSIONS {
        command.args(["-k", version]);
    }
    let (ok, text) = run(command.args(files));
    assert!(ok, "kubernetes-validate --strict failed:\n{text}");
    let mut passed = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if line.starts_with("INFO") && line.contains(" passed for resource ") {
            passed += 1;
        } else {
            assert!(
                line.starts_with("WARN")
                    && line.contains("Couldn't find schema for kind ZoriProject"),
                "kubernetes-validate --strict complained:\n{line}\n\nall output:\n{text}"
            );
        }
    }
    passed
}

/// scripts/k8s_validate.py: kubernetes-validate's strict validation for built-in kinds, and the
/// CRD's schema (made strict the same way) for ZoriProjects. Every object of every file passes.
fn validate_with_crd(files: &[PathBuf]) -> String {
    let mut command = Command::new(venv("python"));
    command.arg("scripts/k8s_validate.py").args(["--crd", CRD]);
    for version in KUBERNETES_VERSIONS {
        command.args(["-k", version]);
    }
    let (ok, text) = run(command.args(files));
    assert!(
        ok && !text.contains("ERROR"),
        "strict validation failed:\n{text}"
    );
    text
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

#[test]
fn the_chart_ships_exactly_the_committed_crd() {
    let chart_crds = repo().join(CHART).join("crds");
    let names: Vec<String> = std::fs::read_dir(&chart_crds)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["zoriprojects.zori.dev.yaml"],
        "{} must hold the ZoriProject CRD and nothing else",
        chart_crds.display()
    );
    let committed = std::fs::read_to_string(repo().join(CRD)).unwrap();
    let shipped = std::fs::read_to_string(chart_crds.join("zoriprojects.zori.dev.yaml")).unwrap();
    assert!(
        committed == shipped,
        "the chart's CRD differs from {CRD} (generated by `zori-operator crd`): run\n  \
         cp {CRD} {CHART}/crds/"
    );
}

#[test]
fn plain_yaml_of_charts_crds_and_examples_passes_kubernetes_validate_strict() {
    let root = repo();
    // Plain YAML in charts/: everything outside templates/ that is a Kubernetes object (Chart.yaml
    // and the values files are not).
    let mut chart_files = Vec::new();
    yaml_files(&root.join("charts"), &mut chart_files);
    let mut files: Vec<PathBuf> = chart_files
        .into_iter()
        .filter(|p| !p.components().any(|c| c.as_os_str() == "templates"))
        .filter(|p| {
            documents(&std::fs::read_to_string(p).unwrap())
                .iter()
                .any(|d| d.get("kind").is_some())
        })
        .collect();
    assert!(
        files.contains(&root.join(CHART).join("crds/zoriprojects.zori.dev.yaml")),
        "{files:?}"
    );
    yaml_files(&root.join("crds"), &mut files);
    let mut examples: Vec<PathBuf> = std::fs::read_dir(root.join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    examples.sort();
    assert!(examples.len() >= 3, "{examples:?}");
    files.extend(examples);

    let objects: usize = files
        .iter()
        .map(|f| documents(&std::fs::read_to_string(f).unwrap()).len())
        .sum();
    let zori_projects: usize = files
        .iter()
        .flat_map(|f| documents(&std::fs::read_to_string(f).unwrap()))
        .filter(|d| d["kind"] == "ZoriProject")
        .count();
    assert!(zori_projects >= 2, "the examples hold ZoriProjects");

    let passed = kubernetes_validate(&files);
    assert_eq!(
        passed,
        (objects - zori_projects) * KUBERNETES_VERSIONS.len(),
        "every built-in object passes for every version"
    );
    let text = validate_with_crd(&files);
    assert_eq!(
        text.lines().filter(|l| l.contains(" passed for ")).count(),
        objects * KUBERNETES_VERSIONS.len(),
        "{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("(from the CRD)"))
            .count(),
        zori_projects * KUBERNETES_VERSIONS.len(),
        "{text}"
    );

    // The CRD-based check is strict for real: an unknown field or a wrong type fails it.
    let dir = out_dir("bad-example");
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: zori.dev/v1alpha1\nkind: ZoriProject\nmetadata: {name: x, namespace: y}\n\
         spec:\n  allowedOrigins: [https://shop.example.com]\n  ingest: {replicas: two}\n  \
         retension: {}\n",
    )
    .unwrap();
    let (ok, text) = run(Command::new(venv("python"))
        .arg("scripts/k8s_validate.py")
        .args(["--crd", CRD])
        .arg(&bad));
    assert!(!ok, "{text}");
    assert!(text.contains("'retension' was unexpected"), "{text}");
    assert!(text.contains("spec.ingest.replicas"), "{text}");
}

/// One rendering of the chart: its objects by `Kind/namespace/name`, the ServiceMonitor apart.
struct Rendered {
    objects: BTreeMap<String, Value>,
    created: Vec<String>,
    notes: String,
}

impl Rendered {
    fn get(&self, kind: &str, name: &str) -> &Value {
        self.objects
            .get(&format!("{kind}/{name}"))
            .unwrap_or_else(|| {
                panic!(
                    "no {kind} {name}; rendered: {:?}",
                    self.objects.keys().collect::<Vec<_>>()
                )
            })
    }

    fn kinds(&self, kind: &str) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{kind}/")))
            .map(|(_, v)| v)
            .collect()
    }

    fn container(&self) -> &Value {
        let deployments = self.kinds("Deployment");
        assert_eq!(deployments.len(), 1);
        &deployments[0]["spec"]["template"]["spec"]["containers"][0]
    }

    fn env(&self) -> BTreeMap<String, Value> {
        self.container()["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap().to_owned(), e.clone()))
            .collect()
    }

    fn env_value(&self, name: &str) -> String {
        self.env()
            .get(name)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("{name} has no plain value: {:#?}", self.env()))
            .to_owned()
    }
}

fn render_all() -> BTreeMap<String, Rendered> {
    let dir = out_dir("rendered");
    let mut command = Command::new(venv("python"));
    command
        .arg("scripts/helm_lint.py")
        .arg(CHART)
        .arg("--render-dir")
        .arg(&dir);
    let mut sets = vec!["default".to_owned()];
    let mut ci: Vec<PathBuf> = std::fs::read_dir(repo().join(CHART).join("ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    ci.sort();
    for file in ci {
        let stem = file.file_name().unwrap().to_string_lossy().into_owned();
        let name = stem
            .strip_suffix("-values.yaml")
            .unwrap_or_else(|| panic!("{stem}: ci files are named <set>-values.yaml"))
            .to_owned();
        command
            .arg("--values")
            .arg(format!("{name}={}", file.display()));
        sets.push(name);
    }
    let (ok, text) = run(&mut command);
    assert!(ok, "helm lint / helm install of {CHART} failed:\n{text}");
    assert!(
        text.contains("lint: 1 chart(s) linted, clean"),
        "helm lint did not run clean:\n{text}"
    );

    let mut rendered = BTreeMap::new();
    for set in sets {
        let manifest = std::fs::read_to_string(dir.join(format!("{set}.yaml"))).unwrap();
        let mut objects = BTreeMap::new();
        let mut plain = Vec::new();
        for doc in documents(&manifest) {
            let key = format!(
                "{}/{}",
                doc["kind"].as_str().unwrap(),
                doc["metadata"]["name"].as_str().unwrap()
            );
            let key = match doc["metadata"]["namespace"].as_str() {
                Some(ns) if doc["kind"] == "Role" || doc["kind"] == "RoleBinding" => {
                    format!("{key}@{ns}")
                }
                _ => key,
            };
            // kubernetes-validate has no schema for prometheus-operator's kinds; the
            // ServiceMonitor is checked field by field below.
            if doc["apiVersion"] != "monitoring.coreos.com/v1" {
                plain.push(doc.clone());
            }
            assert!(
                objects.insert(key.clone(), doc).is_none(),
                "{key} rendered twice"
            );
        }
        let file = dir.join(format!("{set}.validate.yaml"));
        std::fs::write(
            &file,
            plain
                .iter()
                .map(|d| serde_yaml::to_string(d).unwrap())
                .collect::<Vec<_>>()
                .join("---\n"),
        )
        .unwrap();
        let passed = kubernetes_validate(std::slice::from_ref(&file));
        assert_eq!(
            passed,
            plain.len() * KUBERNETES_VERSIONS.len(),
            "{set}: every rendered object passes"
        );
        let created = std::fs::read_to_string(dir.join(format!("{set}.created")))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        let notes = std::fs::read_to_string(dir.join(format!("{set}.NOTES.txt"))).unwrap();
        rendered.insert(
            set,
            Rendered {
                objects,
                created,
                notes,
            },
        );
    }
    rendered
}

fn rules(role: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for rule in role["rules"].as_array().unwrap() {
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                let names = rule["resourceNames"]
                    .as_array()
                    .map(|n| {
                        format!(
                            "[{}]",
                            n.iter()
                                .map(|v| v.as_str().unwrap())
                                .collect::<Vec<_>>()
                                .join(",")
                        )
                    })
                    .unwrap_or_default();
                let key = format!(
                    "{}/{}{names}",
                    group.as_str().unwrap(),
                    resource.as_str().unwrap()
                );
                out.entry(key).or_default().extend(
                    rule["verbs"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_str().unwrap().to_owned()),
                );
            }
        }
    }
    out
}

fn table(entries: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
    entries
        .iter()
        .map(|(k, verbs)| {
            (
                (*k).to_owned(),
                verbs.iter().map(|v| (*v).to_owned()).collect(),
            )
        })
        .collect()
}

/// The operator's settings: the `[env: NAME` entries and the defaults of `zori-operator run --help`.
fn operator_help() -> String {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    let binary = target.join("debug/zori-operator");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        binary.display()
    );
    let (ok, text) = run(Command::new(binary).args(["run", "--help"]));
    assert!(ok, "{text}");
    text
}

fn chart_app_version() -> String {
    let chart: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join(CHART).join("Chart.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        chart["version"], chart["appVersion"],
        "chart version and appVersion move together"
    );
    chart["appVersion"].as_str().unwrap().to_owned()
}

#[test]
fn helm_lint_passes_and_the_installed_manifests_validate() {
    let rendered = render_all();
    let version = chart_app_version();
    assert_eq!(
        version,
        env!("CARGO_PKG_VERSION"),
        "the chart's appVersion is the workspace version (the operator's default image tag)"
    );
    let help = operator_help();

    // --- default values -----------------------------------------------------------------------
    let default = &rendered["default"];
    // helm installs the CRD from crds/ before anything else.
    assert_eq!(
        default.created.first().map(String::as_str),
        Some("apiextensions.k8s.io/v1 CustomResourceDefinition zoriprojects.zori.dev"),
        "{:?}",
        default.created
    );
    let deployment = default.get("Deployment", "zori-zori-operator");
    assert_eq!(deployment["spec"]["replicas"], 2, "two replicas by default");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = default.container();
    assert_eq!(
        container["image"],
        format!("ghcr.io/zori-k8s/zori-operator:{version}"),
        "the image the Dockerfile's zori-operator target is tagged as"
    );
    assert_eq!(container["args"], json!(["run"]));
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    for target in ["zori-operator", "zori-ingest", "zori-api"] {
        assert!(
            dockerfile.contains(&format!(" AS {target}\n"))
                && dockerfile.contains(&format!("ghcr.io/zori-k8s/{target}:{version}")),
            "Dockerfile builds target {target} as ghcr.io/zori-k8s/{target}:{version}"
        );
    }
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/zori-operator\"]"));

    // Restricted Pod Security Standard.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let security = &container["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["ports"][0]["name"], "metrics");
    assert!(container["resources"]["requests"]["memory"].is_string());

    // Every setting the chart passes is one the operator has.
    let read_elsewhere = [
        "POD_NAMESPACE", // cli.rs: the Lease namespace when --leader-election-namespace is absent
        "ZORI_LOG_FORMAT", // zori-service telemetry
        "RUST_LOG",      // tracing filter
    ];
    for name in default.env().keys() {
        assert!(
            help.contains(&format!("[env: {name}")) || read_elsewhere.contains(&name.as_str()),
            "the chart sets {name}, which `zori-operator run` does not read"
        );
    }
    assert_eq!(default.env_value("ZORI_NAMESPACES"), "");
    assert_eq!(
        default.env_value("ZORI_LEADER_ELECTION_NAMESPACE"),
        "zori-system"
    );
    assert_eq!(default.env_value("ZORI_DEFAULT_IMAGE_TAG"), version);
    let repository = default.env_value("ZORI_DEFAULT_IMAGE_REPOSITORY");
    assert!(
        help.contains(&format!("[default: {repository}]")),
        "the chart's data-plane repository {repository} is the operator's default too"
    );
    assert_eq!(
        default.env()["ZORI_POSTGRES_ADMIN_URL"]["valueFrom"]["secretKeyRef"],
        json!({"name": "zori-postgres-admin", "key": "url"}),
        "admin credentials come from an existing Secret"
    );
    assert_eq!(
        default.env()["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name",
        "the Lease identity is the pod"
    );

    // Least privilege: exactly the verbs and resources operator/src uses.
    let project_rules = table(&[
        ("zori.dev/zoriprojects", &["get", "list", "watch", "patch"]),
        ("zori.dev/zoriprojects/status", &["patch"]),
        ("zori.dev/zoriprojects/finalizers", &["update"]),
        // No list or watch: the operator gets its own and the named Stripe Secret only.
        ("/secrets", &["get", "create", "patch"]),
        ("/services", &["get", "list", "watch", "create", "patch"]),
        (
            "apps/deployments",
            &["get", "list", "watch", "create", "patch"],
        ),
        (
            "policy/poddisruptionbudgets",
            &["get", "list", "watch", "create", "patch"],
        ),
        (
            "networking.k8s.io/ingresses",
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        ("events.k8s.io/events", &["create", "patch"]),
    ]);
    assert_eq!(
        rules(default.get("ClusterRole", "zori-zori-operator")),
        project_rules
    );
    let lease_rules = table(&[
        ("coordination.k8s.io/leases", &["create"]),
        (
            "coordination.k8s.io/leases[zori-operator]",
            &["get", "update"],
        ),
    ]);
    assert_eq!(
        rules(default.get("Role", "zori-zori-operator-leader-election@zori-system")),
        lease_rules
    );
    let binding = default.get("ClusterRoleBinding", "zori-zori-operator");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "zori-zori-operator", "namespace": "zori-system"}])
    );
    assert_eq!(
        pod["serviceAccountName"], "zori-zori-operator",
        "the pod runs as the bound ServiceAccount"
    );
    let service = default.get("Service", "zori-zori-operator-metrics");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
    assert_eq!(
        default.get("PodDisruptionBudget", "zori-zori-operator")["spec"]["minAvailable"],
        1
    );
    assert!(default.kinds("ServiceMonitor").is_empty());

    // NOTES.txt says what to apply next, with files that exist.
    for needle in [
        "kubectl apply -f examples/zoriproject-minimal.yaml",
        "examples/stripe-webhook-secret.yaml",
        "docs/site-owner-guide.md",
        "docs/operator-guide.md",
        "rollout status deployment/zori-zori-operator",
    ] {
        assert!(
            default.notes.contains(needle),
            "NOTES.txt lacks {needle:?}:\n{}",
            default.notes
        );
    }
    for file in [
        "examples/zoriproject-minimal.yaml",
        "examples/zoriproject-production.yaml",
        "examples/stripe-webhook-secret.yaml",
        "docs/site-owner-guide.md",
        "docs/operator-guide.md",
    ] {
        assert!(
            repo().join(file).exists(),
            "NOTES.txt names {file}, which is missing"
        );
    }

    // --- watched namespaces: Roles there, nothing cluster-wide ---------------------------------
    let namespaced = &rendered["namespaced"];
    assert!(namespaced.kinds("ClusterRole").is_empty());
    assert!(namespaced.kinds("ClusterRoleBinding").is_empty());
    for ns in ["shops", "blogs"] {
        let role = namespaced.get("Role", &format!("zori-zori-operator@{ns}"));
        assert_eq!(role["metadata"]["namespace"], ns);
        assert_eq!(rules(role), project_rules);
        let binding = namespaced.get("RoleBinding", &format!("zori-zori-operator@{ns}"));
        assert_eq!(binding["subjects"][0]["namespace"], "zori-system");
    }
    assert_eq!(namespaced.env_value("ZORI_NAMESPACES"), "shops,blogs");
    assert_eq!(
        namespaced.container()["image"],
        "registry.example.com/zori/zori-operator:0.1.0-rc.1"
    );
    assert!(
        namespaced.kinds("PodDisruptionBudget").is_empty(),
        "no PDB for one replica"
    );
    assert!(namespaced.notes.contains("the namespaces shops, blogs"));

    // --- everything from Secrets, a ServiceMonitor ------------------------------------------
    let full = &rendered["full"];
    let env = full.env();
    for (name, secret, key) in [
        ("ZORI_NATS_URL", "zori-nats", "url"),
        (
            "ZORI_POSTGRES_ADMIN_URL",
            "zori-postgres-admin",
            "admin-url",
        ),
        (
            "ZORI_CLICKHOUSE_ADMIN_PASSWORD",
            "zori-clickhouse-admin",
            "password",
        ),
        (
            "ZORI_CLICKHOUSE_TENANT_PASSWORD",
            "zori-clickhouse-tenants",
            "password",
        ),
        ("ZORI_REDIS_URL", "zori-redis", "url"),
        ("ZORI_REDIS_ADMIN_URL", "zori-redis-admin", "url"),
        ("ZORI_NATS_SIGNING_KEY", "zori-nats-accounts", "signing-key"),
        (
            "ZORI_NATS_SYSTEM_CREDS",
            "zori-nats-accounts",
            "system.creds",
        ),
        ("ZORI_NATS_ACCOUNT_KEY", "zori-nats-accounts", "account-key"),
    ] {
        assert_eq!(
            env[name]["valueFrom"]["secretKeyRef"],
            json!({"name": secret, "key": key}),
            "{name}"
        );
        assert!(
            env[name].get("value").is_none(),
            "{name} has no plain value"
        );
    }
    for (name, value) in [
        ("ZORI_NATS_TENANT_URL", "nats://nats.nats.svc:4222"),
        ("ZORI_NATS_AUTH", "accounts"),
        ("ZORI_POSTGRES_TENANT_HOST", "pgbouncer.postgres.svc:6432"),
        ("ZORI_CLICKHOUSE_USERS", "shared"),
        ("ZORI_CLICKHOUSE_TENANT_USER", "zori_tenants"),
        ("ZORI_LEASE_NAME", "zori-operator-lock"),
        ("ZORI_METRICS_LISTEN", "0.0.0.0:9090"),
        ("ZORI_REQUIRE_ISOLATION", "true"),
    ] {
        assert_eq!(full.env_value(name), value);
    }
    for name in env.keys() {
        assert!(
            help.contains(&format!("[env: {name}")) || read_elsewhere.contains(&name.as_str()),
            "the chart sets {name}, which `zori-operator run` does not read"
        );
    }
    assert_eq!(
        full.container()["image"],
        "ghcr.io/zori-k8s/zori-operator@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
    assert_eq!(
        rules(full.get("Role", "zori-zori-operator-leader-election@zori-system"))
            ["coordination.k8s.io/leases[zori-operator-lock]"],
        ["get", "update"].iter().map(|s| (*s).to_owned()).collect()
    );
    let service = full.get("Service", "zori-zori-operator-metrics");
    let monitor = full.get("ServiceMonitor", "zori-zori-operator");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(service["spec"]["ports"][0]["name"], "metrics");
    assert_eq!(service["spec"]["ports"][0]["port"], 9090);
    assert_eq!(full.container()["ports"][0]["containerPort"], 9090);
    for (label, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &service["metadata"]["labels"][label], value,
            "the ServiceMonitor selects the metrics Service by {label}"
        );
    }
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"],
        json!(["zori-system"])
    );
    assert_eq!(
        full.get("ServiceAccount", "zori-operator")["metadata"]["annotations"]["example.com/role"],
        "zori"
    );
}

/// Every field path mentioned in backticks in a document. A table row may name siblings in
/// short: `` `spec.api.image`, `.imagePullPolicy` `` or `` `backends.nats.url` / `urlSecret` ``.
fn mentioned_paths(doc: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in doc.lines() {
        let mut last: Option<String> = None;
        for (i, token) in line.split('`').enumerate() {
            if i % 2 == 0 {
                continue;
            }
            let token = token.trim();
            let sibling = token.strip_prefix('.').or_else(|| {
                (last.is_some()
                    && !token.is_empty()
                    && token.chars().all(|c| c.is_ascii_alphanumeric()))
                .then_some(token)
            });
            match (sibling, &last) {
                (Some(name), Some(full)) => {
                    let parent = full.rsplit_once('.').map_or("", |(p, _)| p);
                    let path = if parent.is_empty() {
                        name.to_owned()
                    } else {
                        format!("{parent}.{name}")
                    };
                    out.insert(path);
                }
                _ if token.contains('.') || token.chars().all(|c| c.is_ascii_alphanumeric()) => {
                    out.insert(token.to_owned());
                    if token.contains('.') {
                        last = Some(token.to_owned());
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// Leaf paths of an OpenAPI / JSON schema's declared properties.
fn schema_paths(schema: &Value, prefix: &str, out: &mut Vec<String>) {
    let Some(properties) = schema["properties"].as_object() else {
        out.push(prefix.to_owned());
        return;
    };
    for (name, sub) in properties {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        schema_paths(sub, &path, out);
    }
}

/// `pub const X: &str = "Value";` inside `pub mod <module> { … }` of operator/src/status.rs.
fn status_constants(module: &str) -> Vec<String> {
    let source = std::fs::read_to_string(repo().join("operator/src/status.rs")).unwrap();
    let start = source
        .find(&format!("pub mod {module} {{"))
        .unwrap_or_else(|| panic!("operator/src/status.rs has no module {module}"));
    let body = &source[start..];
    let body = &body[..body.find("\n}").unwrap()];
    body.lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split('"').nth(1))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_operator_guide_names_every_field_condition_reason_and_value() {
    let guide = std::fs::read_to_string(repo().join("docs/operator-guide.md")).unwrap();
    let mentioned = mentioned_paths(&guide);

    // Every field of the CRD (read from the committed CRD, so a new field fails here).
    let crd: Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo().join(CRD)).unwrap()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"];
    let mut fields = Vec::new();
    schema_paths(&schema["spec"], "spec", &mut fields);
    let mut status = Vec::new();
    schema_paths(&schema["status"], "status", &mut status);
    // The fields of each condition are described in prose (the metav1.Condition shape).
    status.retain(|p| !p.starts_with("status.conditions."));
    fields.extend(status);
    assert!(fields.len() > 30, "{fields:?}");
    let missing: Vec<&String> = fields.iter().filter(|f| !mentioned.contains(*f)).collect();
    assert!(
        missing.is_empty(),
        "docs/operator-guide.md does not describe these ZoriProject fields: {missing:?}"
    );

    // Every condition type and reason the operator writes.
    let types = status_constants("types");
    let reasons = status_constants("reasons");
    assert!(types.contains(&"Ready".to_owned()) && reasons.len() > 10);
    for name in types.iter().chain(&reasons) {
        assert!(
            guide.contains(&format!("`{name}`")),
            "docs/operator-guide.md does not explain the condition type or reason {name}"
        );
    }

    // Every chart value (values.schema.json's declared keys; free-form maps by their key).
    let values: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join(CHART).join("values.schema.json")).unwrap(),
    )
    .unwrap();
    let mut keys = Vec::new();
    schema_paths(&values, "", &mut keys);
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !k.starts_with("global"))
        .filter(|key| {
            let parts: Vec<&str> = key.split('.').collect();
            // The key itself, or the object it belongs to (at least two levels deep).
            !(parts.len().min(2)..=parts.len()).any(|n| mentioned.contains(&parts[..n].join(".")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/operator-guide.md does not describe these chart values: {missing:?}"
    );
}
