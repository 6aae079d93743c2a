//! Every manifest the operator produces, and the CRD, pass `kubernetes-validate --strict`
//! (PyPI, installed by scripts/python-tools.sh into .venv) for the oldest and newest
//! Kubernetes the operator targets. ZoriProject objects are checked against the CRD's schema
//! by validate_custom_resources.py, since kubernetes-validate knows only built-in kinds.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;
use zori_operator::{
    api::{fake::FakeApi, ObjectKey},
    backends::MemoryBackends,
    builders::{self, secret, Dereferenced},
    config::{ClickHouseUsers, Platform},
    crd::{self, crd_yaml, ZoriProject},
    leader::{Elector, LeaseSettings},
    reconcile::{reconcile, Context},
};

use super::common::{config_of, examples_dir, minimal, production, CountingRandomness};

/// Kubernetes versions validated against: the k8s-openapi feature (v1_33, the chart's floor) and
/// the newest the client supports (v1_37).
const KUBERNETES_VERSIONS: [&str; 2] = ["1.33", "1.37"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn venv_tool(name: &str) -> PathBuf {
    let path = repo().join(".venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/python-tools.sh to install kubernetes-validate into .venv",
        path.display()
    );
    path
}

fn out_dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("zori-operator-manifests")
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn write_yaml(dir: &Path, name: &str, object: &Value) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, serde_yaml::to_string(object).expect("yaml")).expect("write");
    path
}

/// Runs kubernetes-validate --strict; returns its output, failing on any error or warning
/// (a kind it has no schema for is only a warning there, so warnings fail too).
fn kubernetes_validate(files: &[PathBuf]) -> String {
    let mut command = Command::new(venv_tool("kubernetes-validate"));
    command.arg("--strict");
    for version in KUBERNETES_VERSIONS {
        command.args(["-k", version]);
    }
    let output = command
        .args(files)
        .output()
        .expect("kubernetes-validate runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "kubernetes-validate failed:\n{text}"
    );
    assert!(
        !text.contains("WARN") && !text.contains("ERROR"),
        "kubernetes-validate complained:\n{text}"
    );
    let passed = text
        .lines()
        .filter(|l| l.starts_with("INFO") && l.contains(" passed "))
        .count();
    assert_eq!(
        passed,
        files.len() * KUBERNETES_VERSIONS.len(),
        "one pass per file and version:\n{text}"
    );
    text
}

/// Runs the custom-resource check; returns (success, output).
fn validate_custom_resources(crd: &Path, files: &[PathBuf]) -> (bool, String) {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/operator/validate_custom_resources.py");
    let output = Command::new(venv_tool("python"))
        .arg(script)
        .arg(crd)
        .args(files)
        .output()
        .expect("python runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn crd_file(dir: &Path) -> PathBuf {
    let path = dir.join("crd.yaml");
    std::fs::write(&path, crd_yaml().expect("renders")).expect("write");
    path
}

#[test]
fn the_crd_and_every_built_object_of_the_examples_validate() {
    let dir = out_dir("built");
    let mut files = vec![
        crd_file(&dir),
        examples_dir().join("stripe-webhook-secret.yaml"),
    ];
    let mut suspended = production();
    suspended.spec.suspend = true;
    let mut per_tenant = Platform::local();
    per_tenant.clickhouse_users = ClickHouseUsers::PerTenant;
    let cases = [
        ("minimal", minimal(), Platform::local()),
        ("production", production(), Platform::local()),
        ("suspended", suspended, per_tenant),
    ];
    for (label, project, platform) in cases {
        let config = config_of(&project, &platform);
        let inputs = Dereferenced {
            secret_data: secret::secret_data(
                &config,
                &platform,
                None,
                &CountingRandomness::default(),
            )
            .data,
            stripe_secret_hash: Some(secret::value_hash("whsec_test")),
        };
        for desired in builders::desired_children(&config, &platform, &inputs).expect("builds") {
            let name = format!(
                "{label}-{}-{}",
                desired.key.kind.to_lowercase(),
                desired.key.name
            );
            files.push(write_yaml(&dir, &name, &desired.object));
        }
    }
    kubernetes_validate(&files);
}

#[tokio::test]
async fn every_object_a_reconcile_writes_validates() {
    let dir = out_dir("reconciled");
    let ctx = Context::new(FakeApi::new(), MemoryBackends::new(), Platform::local());
    let stripe: Value = serde_yaml::from_str(
        &std::fs::read_to_string(examples_dir().join("stripe-webhook-secret.yaml")).expect("read"),
    )
    .expect("yaml");
    let mut stripe_secret = stripe.clone();
    if let Some(s) = stripe_secret.as_object_mut() {
        // The API server turns stringData into data.
        let data: serde_json::Map<String, Value> = s
            .remove("stringData")
            .and_then(|d| d.as_object().cloned())
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| {
                use base64::Engine;
                let text = v.as_str().unwrap_or_default().to_owned();
                (
                    k,
                    Value::String(base64::engine::general_purpose::STANDARD.encode(text)),
                )
            })
            .collect();
        s.insert("data".to_owned(), Value::Object(data));
    }
    ctx.api.insert(stripe_secret).expect("stripe secret");
    for project in [minimal(), production()] {
        let mut value = serde_json::to_value(&project).expect("json");
        if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("uid");
        }
        ctx.api.insert(value).expect("insert");
        let key = ObjectKey::new(
            crd::API_VERSION,
            crd::KIND,
            Some("shops"),
            project.metadata.name.as_deref().expect("name"),
        );
        for _ in 0..2 {
            let current: ZoriProject =
                serde_json::from_value(ctx.api.object(&key).expect("exists")).expect("project");
            reconcile(&current, &ctx).await.expect("reconcile");
        }
    }
    let lease = LeaseSettings::new("zori-system", "zori-operator", "zori-operator-0");
    Elector::new(ctx.api.clone(), lease)
        .try_acquire_or_renew()
        .await
        .expect("lease");

    let mut builtin = Vec::new();
    let mut custom = Vec::new();
    for key in ctx.api.keys() {
        let object = ctx.api.object(&key).expect("exists");
        // JSON, as sent to the API: in YAML, PyYAML would read timestamps as dates.
        let path = dir.join(format!("{}-{}.json", key.kind.to_lowercase(), key.name));
        std::fs::write(&path, serde_json::to_string_pretty(&object).expect("json")).expect("write");
        if key.kind == crd::KIND {
            custom.push(path);
        } else {
            builtin.push(path);
        }
    }
    assert!(builtin.len() >= 15, "{builtin:?}");
    kubernetes_validate(&builtin);
    assert_eq!(custom.len(), 2);
    let (ok, text) = validate_custom_resources(&crd_file(&dir), &custom);
    assert!(
        ok,
        "reconciled ZoriProjects (with status) do not match the CRD:\n{text}"
    );
}

#[test]
fn the_example_zoriprojects_match_the_crd_schema() {
    let dir = out_dir("examples");
    let crd = crd_file(&dir);
    let examples = vec![
        examples_dir().join("zoriproject-minimal.yaml"),
        examples_dir().join("zoriproject-production.yaml"),
    ];
    let (ok, text) = validate_custom_resources(&crd, &examples);
    assert!(ok, "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("OK")).count(),
        2,
        "{text}"
    );

    // The check is not vacuous: unknown fields, bad values and wrong kinds are refused.
    let bad = [
        (
            "unknown-field",
            "spec:\n  allowedOrigins: [https://a.example]\n  replica: 2\n",
        ),
        ("bad-origin", "spec:\n  allowedOrigins: [a.example]\n"),
        (
            "bad-policy",
            "spec:\n  allowedOrigins: [https://a.example]\n  reclaimPolicy: Keep\n",
        ),
        (
            "bad-quantity",
            "spec:\n  allowedOrigins: [https://a.example]\n  streamLimits: {maxBytes: lots}\n",
        ),
        ("no-origins", "spec:\n  ingest: {replicas: 2}\n"),
    ];
    for (name, spec) in bad {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!("apiVersion: zori.dev/v1alpha1\nkind: ZoriProject\nmetadata:\n  name: {name}\n{spec}"),
        )
        .expect("write");
        let (ok, text) = validate_custom_resources(&crd, &[path]);
        assert!(!ok, "{name} should be refused:\n{text}");
    }
}
