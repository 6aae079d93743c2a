//! The settings of the data-plane binaries, as environment variables of their containers.
//!
//! The operator wires `zori-ingest` and `zori-api` only through the `ZORI_…` variables their
//! `--help` documents: plain values for what is not secret, `secretKeyRef`s into the tenant
//! Secret (and the user's Stripe Secret) for the rest. [`resolve`] turns a container's env back
//! into plain values given the Secrets' data, so a journey can start the real binaries with
//! exactly the settings the operator wrote.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Container, EnvVar, EnvVarSource, SecretKeySelector},
};

use crate::{
    api::{KubeApi, ObjectKey},
    builders::{deployment, secret::keys, Dereferenced},
    config::{self, ClickHouseUsers, Platform, ProjectConfig},
    crd::ZoriProject,
    naming::{derive_tenant_id, secret_name, Component},
};

fn value(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// `ZORI_NATS_CREDS` with `--nats-auth accounts`: the tenant user's `.creds`.
fn nats_creds(platform: &Platform, secret: &str) -> Option<EnvVar> {
    platform
        .nats_accounts
        .as_ref()
        .map(|_| from_secret("ZORI_NATS_CREDS", secret, keys::NATS_CREDS))
}

/// Environment of the `zori-ingest` container.
pub fn ingest_env(config: &ProjectConfig, platform: &Platform) -> Vec<EnvVar> {
    let secret = secret_name(&config.name);
    let ingest = &config.ingest;
    let mut env = vec![
        value("ZORI_TENANT_ID", &config.names.tenant_id),
        value(
            "ZORI_INGEST_LISTEN",
            format!("0.0.0.0:{}", Component::Ingest.port()),
        ),
        from_secret("ZORI_PUBLISHABLE_KEY", &secret, keys::PUBLISHABLE_KEY),
        value("ZORI_ALLOWED_ORIGINS", config.allowed_origins.join(",")),
        from_secret("ZORI_NATS_URL", &secret, keys::NATS_URL),
        from_secret("ZORI_REDIS_URL", &secret, keys::REDIS_URL),
        from_secret("ZORI_EMAIL_SALT", &secret, keys::EMAIL_SALT),
        value("ZORI_BOT_TRAFFIC", ingest.bot_traffic),
        value(
            "ZORI_RATE_LIMIT_PER_VISITOR",
            ingest.rate_limit_per_visitor.to_string(),
        ),
        value(
            "ZORI_RATE_LIMIT_PER_IP",
            ingest.rate_limit_per_ip.to_string(),
        ),
        value("ZORI_RATE_LIMIT_WINDOW", &ingest.rate_limit_window),
        value("ZORI_MAX_PAST_SKEW", &ingest.max_past_skew),
        value("ZORI_MAX_FUTURE_SKEW", &ingest.max_future_skew),
    ];
    env.extend(nats_creds(platform, &secret));
    if let Some(header) = &ingest.client_ip_header {
        env.push(value("ZORI_CLIENT_IP_HEADER", header));
    }
    if let Some(n) = ingest.trusted_proxies {
        env.push(value("ZORI_TRUSTED_PROXIES", n.to_string()));
    }
    // `off` is zori-ingest's default, and a bare `off` reads as false in YAML 1.1: set only
    // the other modes.
    if ingest.identity_verification != "off" {
        env.push(value(
            "ZORI_IDENTITY_VERIFICATION",
            ingest.identity_verification,
        ));
    }
    env.push(from_secret(
        "ZORI_IDENTITY_SECRET",
        &secret,
        keys::IDENTITY_SECRET,
    ));
    // Identify requests the site's server sends with the API token are trusted unsigned.
    env.push(from_secret("ZORI_API_TOKEN", &secret, keys::API_TOKEN));
    env.push(value("ZORI_LOG_FORMAT", "json"));
    env
}

/// Environment of the `zori-api` container.
pub fn api_env(config: &ProjectConfig, platform: &Platform) -> Vec<EnvVar> {
    let secret = secret_name(&config.name);
    let mut env = vec![
        value("ZORI_TENANT_ID", &config.names.tenant_id),
        value(
            "ZORI_API_LISTEN",
            format!("0.0.0.0:{}", Component::Api.port()),
        ),
        from_secret("ZORI_API_TOKEN", &secret, keys::API_TOKEN),
        from_secret("ZORI_NATS_URL", &secret, keys::NATS_URL),
        from_secret("ZORI_POSTGRES_URL", &secret, keys::POSTGRES_URL),
        value("ZORI_POSTGRES_SCHEMA", &config.names.postgres_schema),
        value("ZORI_CLICKHOUSE_URL", &platform.clickhouse_url),
        value(
            "ZORI_CLICKHOUSE_DATABASE",
            &config.names.clickhouse_database,
        ),
    ];
    if let Some(cluster) = platform.clickhouse_topology.cluster() {
        env.push(value("ZORI_CLICKHOUSE_CLUSTER", cluster));
    }
    if let Some(creds) = nats_creds(platform, &secret) {
        env.push(creds);
        // The tenant NATS user may use this durable consumer only.
        env.push(value("ZORI_CONSUMER_NAME", crate::nats_auth::API_CONSUMER));
    }
    match &platform.clickhouse_users {
        ClickHouseUsers::PerTenant => {
            env.push(value("ZORI_CLICKHOUSE_USER", &config.names.clickhouse_user));
            env.push(from_secret(
                "ZORI_CLICKHOUSE_PASSWORD",
                &secret,
                keys::CLICKHOUSE_PASSWORD,
            ));
        }
        ClickHouseUsers::Shared { user, password } => {
            if let Some(user) = user {
                env.push(value("ZORI_CLICKHOUSE_USER", user));
            }
            if password.is_some() {
                env.push(from_secret(
                    "ZORI_CLICKHOUSE_PASSWORD",
                    &secret,
                    keys::CLICKHOUSE_PASSWORD,
                ));
            }
        }
    }
    if let Some(stripe) = &config.stripe_webhook_secret {
        env.push(from_secret(
            "ZORI_STRIPE_WEBHOOK_SECRETS",
            &stripe.name,
            &stripe.key,
        ));
    }
    env.push(from_secret("ZORI_EMAIL_SALT", &secret, keys::EMAIL_SALT));
    env.push(value(
        "ZORI_ATTRIBUTION_LOOKBACK",
        &config.attribution_lookback,
    ));
    env.push(value("ZORI_LOG_FORMAT", "json"));
    env
}

/// Data of Secrets by name, then key.
pub type SecretStore = BTreeMap<String, BTreeMap<String, String>>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("failed to resolve {var}: Secret {secret} has no key {key}")]
    MissingKey {
        var: String,
        secret: String,
        key: String,
    },
    #[error("failed to resolve {var}: Secret {secret} is missing")]
    MissingSecret { var: String, secret: String },
    #[error("failed to resolve {var}: only values and secretKeyRefs are supported")]
    Unsupported { var: String },
    #[error("failed to find container {container} in Deployment {deployment}")]
    NoContainer {
        deployment: String,
        container: String,
    },
    #[error("failed to build the settings of ZoriProject {project}: {message}")]
    Invalid { project: String, message: String },
    #[error("failed to read {what}: {message}")]
    Read { what: String, message: String },
}

/// Resolves a container's env into `(name, value)` pairs, reading `secretKeyRef`s from
/// `secrets`. Optional references to missing keys are left out, as the kubelet does.
pub fn resolve(
    container: &Container,
    secrets: &SecretStore,
) -> Result<Vec<(String, String)>, EnvError> {
    let mut out = Vec::new();
    for var in container.env.iter().flatten() {
        if let Some(v) = &var.value {
            out.push((var.name.clone(), v.clone()));
            continue;
        }
        let Some(selector) = var
            .value_from
            .as_ref()
            .and_then(|f| f.secret_key_ref.as_ref())
        else {
            if var.value_from.is_none() {
                out.push((var.name.clone(), String::new()));
                continue;
            }
            return Err(EnvError::Unsupported {
                var: var.name.clone(),
            });
        };
        let optional = selector.optional.unwrap_or(false);
        match secrets
            .get(&selector.name)
            .map(|data| data.get(&selector.key))
        {
            Some(Some(v)) => out.push((var.name.clone(), v.clone())),
            _ if optional => {}
            Some(None) => {
                return Err(EnvError::MissingKey {
                    var: var.name.clone(),
                    secret: selector.name.clone(),
                    key: selector.key.clone(),
                })
            }
            None => {
                return Err(EnvError::MissingSecret {
                    var: var.name.clone(),
                    secret: selector.name.clone(),
                })
            }
        }
    }
    Ok(out)
}

/// The resolved settings of both containers of a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadEnv {
    pub ingest: Vec<(String, String)>,
    pub api: Vec<(String, String)>,
}

/// Resolves the env of the named container of a Deployment.
pub fn deployment_env(
    deployment: &Deployment,
    container: &str,
    secrets: &SecretStore,
) -> Result<Vec<(String, String)>, EnvError> {
    let found = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.iter().find(|c| c.name == container));
    match found {
        Some(c) => resolve(c, secrets),
        None => Err(EnvError::NoContainer {
            deployment: deployment.metadata.name.clone().unwrap_or_default(),
            container: container.to_owned(),
        }),
    }
}

/// For a reconciled project and the data of its Secrets (the tenant Secret, and the Stripe
/// Secret it references, by name), the settings each container gets: build the Deployments
/// exactly as the operator does and resolve their env.
pub fn project_env(
    project: &ZoriProject,
    platform: &Platform,
    secrets: &SecretStore,
) -> Result<WorkloadEnv, EnvError> {
    let name = project.metadata.name.clone().unwrap_or_default();
    let namespace = project.metadata.namespace.clone().unwrap_or_default();
    let tenant_id = project
        .status
        .as_ref()
        .and_then(|s| s.tenant_id.clone())
        .unwrap_or_else(|| derive_tenant_id(&namespace, &name));
    let config =
        config::validate(project, &tenant_id, platform).map_err(|e| EnvError::Invalid {
            project: name.clone(),
            message: e.to_string(),
        })?;
    let inputs = Dereferenced::default();
    let hash = super::secret::config_hash(&inputs.secret_data, None);
    let ingest = deployment::build_deployment(&config, platform, Component::Ingest, &hash);
    let api = deployment::build_deployment(&config, platform, Component::Api, &hash);
    Ok(WorkloadEnv {
        ingest: deployment_env(&ingest, Component::Ingest.as_str(), secrets)?,
        api: deployment_env(&api, Component::Api.as_str(), secrets)?,
    })
}

/// The settings of the Deployments the operator actually wrote for a project: reads
/// `<project>-ingest` and `<project>-api` and every Secret their env references through `api`
/// (the in-memory API after a reconcile, or a cluster), and resolves their env.
pub async fn applied_env<A: KubeApi>(
    api: &A,
    namespace: &str,
    project: &str,
) -> Result<WorkloadEnv, EnvError> {
    let mut deployments = Vec::new();
    for component in Component::ALL {
        let key = ObjectKey::new(
            "apps/v1",
            "Deployment",
            Some(namespace),
            &component.object_name(project),
        );
        let read_error = |message: String| EnvError::Read {
            what: key.to_string(),
            message,
        };
        let value = api
            .get(&key)
            .await
            .map_err(|e| read_error(e.to_string()))?
            .ok_or_else(|| read_error("it does not exist".to_owned()))?;
        let deployment: Deployment =
            serde_json::from_value(value).map_err(|e| read_error(e.to_string()))?;
        deployments.push((component, deployment));
    }
    let mut secrets = SecretStore::new();
    for (_, deployment) in &deployments {
        let names = deployment
            .spec
            .iter()
            .filter_map(|s| s.template.spec.as_ref())
            .flat_map(|p| p.containers.iter())
            .flat_map(|c| c.env.iter().flatten())
            .filter_map(|v| {
                v.value_from
                    .as_ref()
                    .and_then(|f| f.secret_key_ref.as_ref())
            })
            .map(|r| r.name.clone());
        for name in names {
            if secrets.contains_key(&name) {
                continue;
            }
            let key = ObjectKey::new("v1", "Secret", Some(namespace), &name);
            let value = api.get(&key).await.map_err(|e| EnvError::Read {
                what: key.to_string(),
                message: e.to_string(),
            })?;
            if let Some(value) = value {
                let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(value)
                    .map_err(|e| EnvError::Read {
                        what: key.to_string(),
                        message: e.to_string(),
                    })?;
                secrets.insert(name, super::secret::decode(&secret));
            }
        }
    }
    let mut env = WorkloadEnv {
        ingest: Vec::new(),
        api: Vec::new(),
    };
    for (component, deployment) in &deployments {
        let resolved = deployment_env(deployment, component.as_str(), &secrets)?;
        match component {
            Component::Ingest => env.ingest = resolved,
            Component::Api => env.api = resolved,
        }
    }
    Ok(env)
}
