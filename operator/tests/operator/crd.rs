//! The committed CRD is the generated one, and `zori-operator crd` prints it.

use std::path::Path;

use zori_operator::crd::{self, crd_yaml};

const COMMITTED: &str = "../crds/zoriprojects.zori.dev.yaml";

#[test]
fn the_committed_crd_is_in_sync_with_the_types() {
    let generated = crd_yaml().expect("renders");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(COMMITTED);
    if std::env::var_os("ZORI_UPDATE_CRD").is_some() {
        std::fs::write(&path, &generated).expect("write the CRD");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "crds/zoriprojects.zori.dev.yaml is out of date with operator/src/crd.rs; regenerate it with \
         `cargo run -p zori-operator -- crd > crds/zoriprojects.zori.dev.yaml` \
         (or ZORI_UPDATE_CRD=1 cargo test -p zori-operator crd)"
    );
}

#[test]
fn the_binary_prints_the_crd() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_zori-operator"))
        .arg("crd")
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        crd_yaml().expect("renders")
    );
}

#[test]
fn the_crd_has_the_promised_shape() {
    let crd = crd::crd();
    assert_eq!(crd.metadata.name.as_deref(), Some(crd::CRD_NAME));
    assert_eq!(crd.spec.group, "zori.dev");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.short_names, Some(vec!["zp".to_owned()]));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(version
        .subresources
        .as_ref()
        .and_then(|s| s.status.as_ref())
        .is_some());
    let columns: Vec<&str> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        vec!["Ready", "Reason", "Tracking", "Tenant", "Age"]
    );
    let yaml = crd_yaml().expect("renders");
    for rule in [
        "duration(self.streamLimits.duplicateWindow) <= duration(self.retention.streamMaxAge)",
        "quantity(string(self.requests.memory))",
        "size(self.metadata.name) <= 56",
    ] {
        assert!(yaml.contains(rule), "CEL rule {rule} missing");
    }
    for default in [
        "default: Retain",
        "default: 168h",
        "default: 1Gi",
        "x-kubernetes-list-type: map",
    ] {
        assert!(yaml.contains(default), "{default} missing");
    }
}

#[test]
fn run_fails_fast_with_one_line_naming_the_setting() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_zori-operator"))
        .arg("run")
        .env_remove("ZORI_POSTGRES_ADMIN_URL")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim(),
        "error: missing --postgres-admin-url (ZORI_POSTGRES_ADMIN_URL): set the URL of a PostgreSQL role that may create roles and schemas"
    );
}

#[test]
fn run_help_names_every_environment_variable() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_zori-operator"))
        .args(["run", "--help"])
        .output()
        .expect("runs");
    let help = String::from_utf8_lossy(&output.stdout);
    for env in [
        "ZORI_NATS_URL",
        "ZORI_NATS_TENANT_URL",
        "ZORI_POSTGRES_ADMIN_URL",
        "ZORI_POSTGRES_TENANT_HOST",
        "ZORI_CLICKHOUSE_URL",
        "ZORI_CLICKHOUSE_ADMIN_USER",
        "ZORI_CLICKHOUSE_ADMIN_PASSWORD",
        "ZORI_CLICKHOUSE_USERS",
        "ZORI_REDIS_URL",
        "ZORI_NAMESPACES",
        "ZORI_DEFAULT_IMAGE_REPOSITORY",
        "ZORI_DEFAULT_IMAGE_TAG",
        "ZORI_METRICS_LISTEN",
        "ZORI_LEADER_ELECTION_NAMESPACE",
        "ZORI_LEASE_NAME",
    ] {
        assert!(
            help.contains(env),
            "{env} missing from `zori-operator run --help`"
        );
    }
}
