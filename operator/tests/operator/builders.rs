//! Pure tests of every builder on the example specs.

use std::{collections::BTreeMap, time::Duration};

use async_nats::jetstream::stream::{DiscardPolicy, StorageType};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Container, EnvVar},
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use zori_operator::{
    builders::{
        self,
        deployment::{build_deployment, CONFIG_HASH_ANNOTATION},
        env::{self, SecretStore},
        ingress::build_ingress,
        pdb::build_pdb,
        secret::{self, keys},
        service::build_service,
        stream::desired_stream,
        Dereferenced,
    },
    config::{ClickHouseUsers, Platform},
    naming::Component,
};

use super::common::{config_of, minimal, production, CountingRandomness};

fn container(deployment: &Deployment) -> &Container {
    &deployment
        .spec
        .as_ref()
        .expect("spec")
        .template
        .spec
        .as_ref()
        .expect("pod spec")
        .containers[0]
}

/// `NAME=value` or `NAME<-secret/key` for every env var, in order.
fn env_summary(container: &Container) -> Vec<String> {
    container
        .env
        .iter()
        .flatten()
        .map(
            |EnvVar {
                 name,
                 value,
                 value_from,
             }| match (value, value_from) {
                (Some(v), _) => format!("{name}={v}"),
                (None, Some(from)) => {
                    let r = from.secret_key_ref.as_ref().expect("secret ref");
                    format!("{name}<-{}/{}", r.name, r.key)
                }
                (None, None) => format!("{name}="),
            },
        )
        .collect()
}

#[test]
fn ingest_deployment_of_the_minimal_example() {
    let platform = Platform::local();
    let config = config_of(&minimal(), &platform);
    let d = build_deployment(&config, &platform, Component::Ingest, "hash1");
    assert_eq!(d.metadata.name.as_deref(), Some("acme-ingest"));
    assert_eq!(d.metadata.namespace.as_deref(), Some("shops"));
    let owner = &d.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("ZoriProject", "acme", "uid-acme")
    );
    assert_eq!(owner.controller, Some(true));
    let labels = d.metadata.labels.as_ref().expect("labels");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "zori-operator");
    assert_eq!(labels["zori.dev/project"], "acme");

    let spec = d.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(1));
    let selector = spec.selector.match_labels.as_ref().expect("selector");
    let template_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .expect("labels");
    assert!(
        selector
            .iter()
            .all(|(k, v)| template_labels.get(k) == Some(v)),
        "the selector selects the pods"
    );
    assert_eq!(
        spec.template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .expect("annotations")[CONFIG_HASH_ANNOTATION],
        "hash1"
    );

    let c = container(&d);
    assert_eq!(c.name, "ingest");
    assert_eq!(
        c.image.as_deref(),
        Some(format!("ghcr.io/zori-k8s/zori-ingest:{}", env!("CARGO_PKG_VERSION")).as_str())
    );
    let port = &c.ports.as_ref().expect("ports")[0];
    assert_eq!(
        (port.name.as_deref(), port.container_port),
        (Some("http"), 1324)
    );
    let liveness = c
        .liveness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .expect("liveness");
    let readiness = c
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .expect("readiness");
    assert_eq!(liveness.path.as_deref(), Some("/healthz"));
    assert_eq!(readiness.path.as_deref(), Some("/readyz"));
    assert_eq!(liveness.port, IntOrString::String("http".to_owned()));

    let sc = c.security_context.as_ref().expect("security context");
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_owned()])
    );
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault")
    );
    let pod = spec.template.spec.as_ref().expect("pod");
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(
        pod.security_context
            .as_ref()
            .and_then(|s| s.run_as_non_root),
        Some(true)
    );

    let resources = c.resources.as_ref().expect("resources");
    let requests = resources.requests.as_ref().expect("requests");
    assert_eq!(requests["cpu"].0, "50m");
    assert_eq!(requests["memory"].0, "64Mi");
    assert_eq!(
        resources.limits.as_ref().expect("limits")["memory"].0,
        "256Mi"
    );

    assert_eq!(
        env_summary(c),
        vec![
            "ZORI_TENANT_ID=shops_acme",
            "ZORI_INGEST_LISTEN=0.0.0.0:1324",
            "ZORI_PUBLISHABLE_KEY<-acme-credentials/publishable-key",
            "ZORI_ALLOWED_ORIGINS=https://shop.example.com",
            "ZORI_NATS_URL<-acme-credentials/nats-url",
            "ZORI_REDIS_URL<-acme-credentials/redis-url",
            "ZORI_EMAIL_SALT<-acme-credentials/email-salt",
            "ZORI_BOT_TRAFFIC=drop",
            "ZORI_RATE_LIMIT_PER_VISITOR=600",
            "ZORI_RATE_LIMIT_PER_IP=3000",
            "ZORI_RATE_LIMIT_WINDOW=60s",
            "ZORI_MAX_PAST_SKEW=259200s",
            "ZORI_MAX_FUTURE_SKEW=300s",
            "ZORI_IDENTITY_SECRET<-acme-credentials/identity-secret",
            "ZORI_API_TOKEN<-acme-credentials/api-token",
            "ZORI_LOG_FORMAT=json",
        ]
    );
}

#[test]
fn api_deployment_of_the_minimal_example() {
    let platform = Platform::local();
    let config = config_of(&minimal(), &platform);
    let d = build_deployment(&config, &platform, Component::Api, "hash1");
    assert_eq!(d.metadata.name.as_deref(), Some("acme-api"));
    let c = container(&d);
    assert_eq!(c.name, "api");
    assert_eq!(c.ports.as_ref().expect("ports")[0].container_port, 1323);
    assert_eq!(
        env_summary(c),
        vec![
            "ZORI_TENANT_ID=shops_acme",
            "ZORI_API_LISTEN=0.0.0.0:1323",
            "ZORI_API_TOKEN<-acme-credentials/api-token",
            "ZORI_NATS_URL<-acme-credentials/nats-url",
            "ZORI_POSTGRES_URL<-acme-credentials/postgres-url",
            "ZORI_POSTGRES_SCHEMA=zori_shops_acme",
            "ZORI_CLICKHOUSE_URL=http://127.0.0.1:8123",
            "ZORI_CLICKHOUSE_DATABASE=zori_shops_acme",
            "ZORI_EMAIL_SALT<-acme-credentials/email-salt",
            "ZORI_ATTRIBUTION_LOOKBACK=7776000s",
            "ZORI_LOG_FORMAT=json",
        ]
    );
}

#[test]
fn deployments_of_the_production_example() {
    let platform = Platform::local();
    let config = config_of(&production(), &platform);
    let ingest = build_deployment(&config, &platform, Component::Ingest, "h");
    let api = build_deployment(&config, &platform, Component::Api, "h");
    assert_eq!(ingest.spec.as_ref().and_then(|s| s.replicas), Some(3));
    assert_eq!(api.spec.as_ref().and_then(|s| s.replicas), Some(2));
    let ingest_env = env_summary(container(&ingest));
    for expected in [
        "ZORI_TENANT_ID=shops_bakery",
        "ZORI_ALLOWED_ORIGINS=https://bakery.example.com,https://www.bakery.example.com",
        "ZORI_BOT_TRAFFIC=flag",
        "ZORI_RATE_LIMIT_PER_VISITOR=300",
        "ZORI_RATE_LIMIT_PER_IP=2000",
        "ZORI_MAX_PAST_SKEW=172800s",
        "ZORI_CLIENT_IP_HEADER=x-forwarded-for",
    ] {
        assert!(
            ingest_env.iter().any(|e| e == expected),
            "{expected} missing from {ingest_env:#?}"
        );
    }
    let api_container = container(&api);
    assert!(env_summary(api_container)
        .contains(&"ZORI_STRIPE_WEBHOOK_SECRETS<-bakery-stripe/webhook-secret".to_owned()));
    assert_eq!(
        api_container.image_pull_policy.as_deref(),
        Some("IfNotPresent")
    );
    let resources = api_container.resources.as_ref().expect("resources");
    assert_eq!(
        resources.requests.as_ref().expect("requests")["cpu"].0,
        "250m"
    );
    assert_eq!(
        resources.limits.as_ref().expect("limits")["memory"].0,
        "1Gi"
    );
    assert!(!resources
        .limits
        .as_ref()
        .expect("limits")
        .contains_key("cpu"));
    let ingest_limits = container(&ingest)
        .resources
        .as_ref()
        .and_then(|r| r.limits.clone())
        .expect("limits");
    assert_eq!(ingest_limits["cpu"].0, "1");
}

#[test]
fn per_tenant_clickhouse_users_get_their_own_credentials() {
    let mut platform = Platform::local();
    platform.clickhouse_users = ClickHouseUsers::PerTenant;
    let config = config_of(&minimal(), &platform);
    let env = env_summary(container(&build_deployment(
        &config,
        &platform,
        Component::Api,
        "h",
    )));
    assert!(
        env.contains(&"ZORI_CLICKHOUSE_USER=zori_shops_acme".to_owned()),
        "{env:#?}"
    );
    assert!(
        env.contains(&"ZORI_CLICKHOUSE_PASSWORD<-acme-credentials/clickhouse-password".to_owned())
    );
    let data = secret::secret_data(&config, &platform, None, &CountingRandomness::default());
    assert!(data.generated.contains(&keys::CLICKHOUSE_PASSWORD));

    platform.clickhouse_users = ClickHouseUsers::Shared {
        user: Some("tenants".to_owned()),
        password: Some("shared-password".to_owned()),
    };
    let env = env_summary(container(&build_deployment(
        &config,
        &platform,
        Component::Api,
        "h",
    )));
    assert!(env.contains(&"ZORI_CLICKHOUSE_USER=tenants".to_owned()));
    let data = secret::secret_data(&config, &platform, None, &CountingRandomness::default());
    assert_eq!(data.data[keys::CLICKHOUSE_PASSWORD], "shared-password");
}

#[test]
fn suspended_projects_scale_to_zero() {
    let platform = Platform::local();
    let mut project = production();
    project.spec.suspend = true;
    let config = config_of(&project, &platform);
    for component in Component::ALL {
        let d = build_deployment(&config, &platform, component, "h");
        assert_eq!(
            d.spec.as_ref().and_then(|s| s.replicas),
            Some(0),
            "{component:?}"
        );
    }
}

#[test]
fn services_route_port_80_to_the_pods() {
    let platform = Platform::local();
    let config = config_of(&minimal(), &platform);
    for component in Component::ALL {
        let service = build_service(&config, component);
        let deployment = build_deployment(&config, &platform, component, "h");
        assert_eq!(service.metadata.name, deployment.metadata.name);
        let spec = service.spec.as_ref().expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        let port = &spec.ports.as_ref().expect("ports")[0];
        assert_eq!(port.port, 80);
        assert_eq!(
            port.target_port,
            Some(IntOrString::String("http".to_owned()))
        );
        assert_eq!(
            spec.selector.as_ref(),
            deployment
                .spec
                .as_ref()
                .and_then(|s| s.selector.match_labels.as_ref())
        );
    }
}

#[test]
fn disruption_budgets_allow_one_pod_down() {
    let platform = Platform::local();
    let config = config_of(&production(), &platform);
    for component in Component::ALL {
        let pdb = build_pdb(&config, component);
        let spec = pdb.spec.as_ref().expect("spec");
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(spec.min_available, None);
        let deployment = build_deployment(&config, &platform, component, "h");
        assert_eq!(
            spec.selector.as_ref().and_then(|s| s.match_labels.as_ref()),
            deployment
                .spec
                .as_ref()
                .and_then(|s| s.selector.match_labels.as_ref())
        );
    }
}

#[test]
fn ingress_of_the_production_example() {
    let platform = Platform::local();
    assert!(build_ingress(&config_of(&minimal(), &platform)).is_none());
    let ingress = build_ingress(&config_of(&production(), &platform)).expect("ingress");
    assert_eq!(ingress.metadata.name.as_deref(), Some("bakery"));
    assert_eq!(
        ingress.metadata.annotations.as_ref().expect("annotations")
            ["cert-manager.io/cluster-issuer"],
        "letsencrypt"
    );
    let spec = ingress.spec.as_ref().expect("spec");
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    let tls = &spec.tls.as_ref().expect("tls")[0];
    assert_eq!(tls.secret_name.as_deref(), Some("t-bakery-example-com-tls"));
    assert_eq!(
        tls.hosts.as_deref(),
        Some(&["t.bakery.example.com".to_owned()][..])
    );
    let rule = &spec.rules.as_ref().expect("rules")[0];
    assert_eq!(rule.host.as_deref(), Some("t.bakery.example.com"));
    let routes: Vec<(String, String, String)> = rule
        .http
        .as_ref()
        .expect("http")
        .paths
        .iter()
        .map(|p| {
            (
                p.path.clone().unwrap_or_default(),
                p.path_type.clone(),
                p.backend
                    .service
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_default(),
            )
        })
        .collect();
    let route = |path: &str, path_type: &str, service: &str| {
        (path.to_owned(), path_type.to_owned(), service.to_owned())
    };
    assert_eq!(
        routes,
        vec![
            route("/ingest", "Prefix", "bakery-ingest"),
            route("/identify", "Prefix", "bakery-ingest"),
            route("/batch", "Prefix", "bakery-ingest"),
            route("/zori.js", "Prefix", "bakery-ingest"),
            route("/v", "Prefix", "bakery-ingest"),
            route("/", "Exact", "bakery-api"),
            route("/api", "Prefix", "bakery-api"),
            route("/webhooks", "Prefix", "bakery-api"),
            route("/assets", "Prefix", "bakery-api"),
            route("/session", "Prefix", "bakery-api"),
        ]
    );
    // The dashboard's `/` is the only `Exact` path; the probes and metrics stay private.
    for private in ["/metrics", "/readyz", "/healthz"] {
        assert!(
            !routes.iter().any(|(path, _, _)| path == private),
            "{private} must not be routed"
        );
    }
    assert!(!routes
        .iter()
        .any(|(path, path_type, _)| path == "/" && path_type == "Prefix"));
}

#[test]
fn stream_config_of_the_examples() {
    let platform = Platform::local();
    let minimal = desired_stream(&config_of(&minimal(), &platform));
    assert_eq!(minimal.name, "ZORI_SHOPS_ACME");
    assert_eq!(minimal.subjects, vec!["zori.shops_acme.>".to_owned()]);
    assert_eq!(minimal.storage, StorageType::File);
    assert_eq!(minimal.discard, DiscardPolicy::New);
    assert_eq!(minimal.max_age, Duration::from_secs(168 * 3600));
    assert_eq!(minimal.max_bytes, 1 << 30);
    assert_eq!(minimal.duplicate_window, Duration::from_secs(120));
    assert_eq!(minimal.num_replicas, 1);

    let production = desired_stream(&config_of(&production(), &platform));
    assert_eq!(production.name, "ZORI_SHOPS_BAKERY");
    assert_eq!(production.max_age, Duration::from_secs(336 * 3600));
    assert_eq!(production.max_bytes, 4 << 30);
    assert_eq!(production.max_messages, -1);
    assert_eq!(production.duplicate_window, Duration::from_secs(300));
}

#[test]
fn secret_keys_are_generated_once_and_kept() {
    let platform = Platform::local();
    let config = config_of(&minimal(), &platform);
    let random = CountingRandomness::default();
    let first = secret::secret_data(&config, &platform, None, &random);
    let d = &first.data;
    assert!(d[keys::PUBLISHABLE_KEY].starts_with("zori_pt_"));
    assert_eq!(d[keys::PUBLISHABLE_KEY].len(), "zori_pt_".len() + 32);
    assert!(d[keys::API_TOKEN].starts_with("zori_at_"));
    assert_eq!(d[keys::API_TOKEN].len(), "zori_at_".len() + 48);
    assert_eq!(d[keys::EMAIL_SALT].len(), 64);
    assert_eq!(d[keys::POSTGRES_PASSWORD].len(), 48);
    assert_eq!(
        d[keys::POSTGRES_URL],
        format!(
            "postgres://zori_shops_acme:{}@127.0.0.1:5432/postgres",
            d[keys::POSTGRES_PASSWORD]
        )
    );
    assert_eq!(d[keys::NATS_URL], "nats://127.0.0.1:4222");
    assert_eq!(d[keys::REDIS_URL], "redis://127.0.0.1:6379");
    assert!(!d.contains_key(keys::CLICKHOUSE_PASSWORD));
    assert!(d[keys::IDENTITY_SECRET].starts_with("zori_is_"));
    assert_eq!(d[keys::IDENTITY_SECRET].len(), "zori_is_".len() + 48);
    assert_eq!(first.generated.len(), 5);

    // Kept when present; derived keys follow the platform.
    let mut moved = platform.clone();
    moved.nats_url = "nats://nats.zori:4222".to_owned();
    let second = secret::secret_data(&config, &moved, Some(&first.data), &random);
    assert!(second.generated.is_empty());
    assert_eq!(second.data[keys::API_TOKEN], first.data[keys::API_TOKEN]);
    assert_eq!(second.data[keys::NATS_URL], "nats://nats.zori:4222");

    // A value that the binaries would refuse is replaced; the others stay.
    let mut broken = first.data.clone();
    broken.insert(keys::API_TOKEN.to_owned(), "short".to_owned());
    let third = secret::secret_data(&config, &platform, Some(&broken), &random);
    assert_eq!(third.generated, vec![keys::API_TOKEN]);
    assert_ne!(third.data[keys::API_TOKEN], "short");
    assert_eq!(
        third.data[keys::PUBLISHABLE_KEY],
        first.data[keys::PUBLISHABLE_KEY]
    );

    let object = secret::build_secret(&config, &first.data);
    assert_eq!(object.metadata.name.as_deref(), Some("acme-credentials"));
    assert_eq!(object.type_.as_deref(), Some("Opaque"));
    assert_eq!(secret::decode(&object), first.data);
}

#[test]
fn nats_accounts_give_each_tenant_its_own_stable_credentials() {
    use zori_operator::nats_auth::{self, AccountKeys};
    let mut platform = Platform::local();
    let keys_ = AccountKeys::new(&"a".repeat(40)).expect("account key");
    platform.nats_accounts = Some(keys_.clone());
    let config = config_of(&minimal(), &platform);
    let random = CountingRandomness::default();
    let first = secret::secret_data(&config, &platform, None, &random);
    assert!(first.generated.contains(&keys::NATS_USER_SEED));
    let seed = &first.data[keys::NATS_USER_SEED];
    assert!(seed.starts_with("SU"), "a user seed");
    let (jwt, creds_seed) = nats_auth::parse_creds(&first.data[keys::NATS_CREDS]).expect("creds");
    assert_eq!(&creds_seed, seed);
    let claims = nats_auth::verified_claims(&jwt).expect("signed");
    assert_eq!(
        claims["iss"],
        keys_
            .account(&config.names.tenant_id)
            .expect("account")
            .public_key(),
        "signed by the tenant's own account"
    );
    assert_eq!(
        claims["nats"]["sub"]["allow"],
        serde_json::json!([format!("_INBOX_{}.>", config.names.tenant_id)])
    );

    // The same Secret on the next reconcile: nothing generated, nothing changed (no pod roll).
    let second = secret::secret_data(&config, &platform, Some(&first.data), &random);
    assert!(second.generated.is_empty());
    assert_eq!(second.data, first.data);

    // A Secret from before NATS accounts gets the user quietly.
    let mut before = first.data.clone();
    before.remove(keys::NATS_USER_SEED);
    before.remove(keys::NATS_CREDS);
    let upgraded = secret::secret_data(&config, &platform, Some(&before), &random);
    assert_eq!(upgraded.generated, vec![keys::NATS_USER_SEED]);
    assert!(keys::ADDED_LATER.contains(&keys::NATS_USER_SEED));

    // Both binaries read the creds from the Secret; shared mode has neither key nor variable.
    for component in Component::ALL {
        let deployment = build_deployment(&config, &platform, component, "h");
        let creds = container(&deployment)
            .env
            .iter()
            .flatten()
            .find(|v| v.name == "ZORI_NATS_CREDS")
            .expect("ZORI_NATS_CREDS");
        let from = creds
            .value_from
            .as_ref()
            .and_then(|f| f.secret_key_ref.as_ref())
            .expect("from the Secret");
        assert_eq!(from.key, keys::NATS_CREDS);
    }
    let shared = Platform::local();
    let data = secret::secret_data(&config, &shared, None, &random).data;
    assert!(!data.contains_key(keys::NATS_CREDS) && !data.contains_key(keys::NATS_USER_SEED));
    let deployment = build_deployment(&config, &shared, Component::Api, "h");
    assert!(container(&deployment)
        .env
        .iter()
        .flatten()
        .all(|v| v.name != "ZORI_NATS_CREDS"));
}

#[test]
fn the_config_hash_follows_the_secrets() {
    let a = BTreeMap::from([("k".to_owned(), "v".to_owned())]);
    let b = BTreeMap::from([("k".to_owned(), "w".to_owned())]);
    assert_eq!(secret::config_hash(&a, None), secret::config_hash(&a, None));
    assert_ne!(secret::config_hash(&a, None), secret::config_hash(&b, None));
    assert_ne!(
        secret::config_hash(&a, None),
        secret::config_hash(&a, Some("s"))
    );
}

#[test]
fn desired_children_of_the_examples() {
    let platform = Platform::local();
    let names = |project| {
        let config = config_of(&project, &platform);
        builders::desired_children(&config, &platform, &Dereferenced::default())
            .expect("builds")
            .into_iter()
            .map(|d| format!("{}/{}", d.key.kind, d.key.name))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(minimal()),
        vec![
            "Secret/acme-credentials",
            "Deployment/acme-ingest",
            "Service/acme-ingest",
            "PodDisruptionBudget/acme-ingest",
            "Deployment/acme-api",
            "Service/acme-api",
            "PodDisruptionBudget/acme-api",
        ]
    );
    assert_eq!(
        names(production()).last().map(String::as_str),
        Some("Ingress/bakery")
    );
}

#[test]
fn the_settings_of_each_container_resolve_from_the_secrets() {
    let platform = Platform::local();
    let project = production();
    let config = config_of(&project, &platform);
    let tenant = secret::secret_data(&config, &platform, None, &CountingRandomness::default()).data;
    let secrets: SecretStore = BTreeMap::from([
        ("bakery-credentials".to_owned(), tenant.clone()),
        (
            "bakery-stripe".to_owned(),
            BTreeMap::from([("webhook-secret".to_owned(), "whsec_test".to_owned())]),
        ),
    ]);
    let env = env::project_env(&project, &platform, &secrets).expect("resolves");
    let api: BTreeMap<_, _> = env.api.iter().cloned().collect();
    assert_eq!(api["ZORI_API_TOKEN"], tenant[keys::API_TOKEN]);
    assert_eq!(api["ZORI_POSTGRES_URL"], tenant[keys::POSTGRES_URL]);
    assert_eq!(api["ZORI_STRIPE_WEBHOOK_SECRETS"], "whsec_test");
    assert_eq!(api["ZORI_EMAIL_SALT"], tenant[keys::EMAIL_SALT]);
    let ingest: BTreeMap<_, _> = env.ingest.iter().cloned().collect();
    assert_eq!(
        ingest["ZORI_PUBLISHABLE_KEY"],
        tenant[keys::PUBLISHABLE_KEY]
    );
    assert_eq!(
        ingest["ZORI_EMAIL_SALT"], api["ZORI_EMAIL_SALT"],
        "ingest and api share the salt"
    );
    assert_eq!(
        ingest["ZORI_TENANT_ID"],
        zori_operator::naming::derive_tenant_id("shops", "bakery")
    );

    let mut without_stripe = secrets.clone();
    without_stripe.remove("bakery-stripe");
    let error = env::project_env(&project, &platform, &without_stripe).expect_err("missing secret");
    assert_eq!(
        error.to_string(),
        "failed to resolve ZORI_STRIPE_WEBHOOK_SECRETS: Secret bakery-stripe is missing"
    );
}

/// `env = "ZORI_…"` names declared by a data-plane binary's flag struct (read as text, so the
/// operator does not build the binaries to check its contract with them).
fn declared_env(config_rs: &str) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(config_rs);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.split("env = \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_variable_set_is_a_setting_of_its_binary() {
    let mut platform = Platform::local();
    platform.clickhouse_users = ClickHouseUsers::PerTenant;
    platform.nats_accounts =
        Some(zori_operator::nats_auth::AccountKeys::new(&"a".repeat(40)).expect("account key"));
    let config = config_of(&production(), &platform);
    for (component, file) in [
        (Component::Ingest, "dataplane/ingest/src/config.rs"),
        (Component::Api, "dataplane/api/src/config.rs"),
    ] {
        let declared = declared_env(file);
        assert!(declared.len() > 10, "{file}: {declared:?}");
        let deployment = build_deployment(&config, &platform, component, "h");
        for var in container(&deployment).env.iter().flatten() {
            assert!(
                declared.contains(&var.name),
                "{} sets {}, which {file} does not declare",
                component.binary(),
                var.name
            );
        }
    }
}

#[test]
fn identity_verification_and_trusted_proxies_reach_ingest() {
    let platform = Platform::local();
    let mut project = minimal();
    project.spec.ingest.identity_verification = zori_operator::crd::IdentityVerification::Refuse;
    project.spec.ingest.trusted_proxies = Some(2);
    let config = config_of(&project, &platform);
    let env = env_summary(
        &build_deployment(&config, &platform, Component::Ingest, "hash")
            .spec
            .expect("spec")
            .template
            .spec
            .expect("pod")
            .containers[0],
    );
    for expected in [
        "ZORI_IDENTITY_VERIFICATION=refuse",
        "ZORI_TRUSTED_PROXIES=2",
        "ZORI_IDENTITY_SECRET<-acme-credentials/identity-secret",
        "ZORI_API_TOKEN<-acme-credentials/api-token",
    ] {
        assert!(env.contains(&expected.to_owned()), "{expected}: {env:?}");
    }

    project.spec.ingest.trusted_proxies = Some(17);
    let invalid = zori_operator::config::validate(&project, "shops_acme", &platform)
        .expect_err("17 proxies")
        .to_string();
    assert_eq!(
        invalid,
        "spec.ingest.trustedProxies: 17 must be between 0 and 16"
    );
}
