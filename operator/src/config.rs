//! Validate: a `ZoriProject` as given turns into a typed, checked [`ProjectConfig`], or into
//! errors that each name the field at fault. The operator-wide settings every project shares
//! are the [`Platform`].

use std::{fmt, time::Duration};

use zori_service::jetstream::StreamLimits;

use crate::{
    crd::{BotTraffic, Quantity, ReclaimPolicy, SecretKeyRef, WorkloadSpec, ZoriProject},
    naming::{is_valid_tenant_id, Component, TenantNames, MAX_PROJECT_NAME},
};

/// How the api authenticates to ClickHouse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClickHouseUsers {
    /// The server supports SQL users: each tenant gets its own user (`zori_<id>`), allowed only
    /// its database, with a generated password kept in the tenant Secret.
    PerTenant,
    /// The server has no SQL users (ClickHouse before 20.4): tenants use this user from the
    /// server's `users.xml` (the server's default user when `None`).
    Shared {
        user: Option<String>,
        password: Option<String>,
    },
}

/// Where the tenants' PostgreSQL role connects (the host may differ from the operator's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresTarget {
    pub host: String,
    pub port: u16,
    pub database: String,
    /// Query string carried over from the admin URL (such as `sslmode=require`).
    pub params: Option<String>,
}

/// Settings shared by every project, from the operator's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `<repository>/zori-ingest:<tag>` and `<repository>/zori-api:<tag>` unless a project names
    /// its images.
    pub image_repository: String,
    pub image_tag: String,
    /// NATS URL the tenants' binaries use (kept in the tenant Secret: it may carry credentials).
    pub nats_url: String,
    /// Redis URL of the rate limits (kept in the tenant Secret).
    pub redis_url: String,
    pub postgres: PostgresTarget,
    /// ClickHouse HTTP URL the api uses (no credentials in it).
    pub clickhouse_url: String,
    pub clickhouse_users: ClickHouseUsers,
    /// The ClickHouse cluster the tenant databases live on (`--clickhouse-cluster`): the
    /// operator's DDL runs `ON CLUSTER`, and zori-api makes replicated tables behind
    /// `Distributed` ones. One server when `Single`.
    pub clickhouse_topology: zori_service::clickhouse::Topology,
    /// DNS domain of the cluster, for the in-cluster endpoints in status.
    pub cluster_domain: String,
    /// Why `--clickhouse-users auto` could not ask the server for its version at start: the
    /// tenants then get per-tenant users anyway (fail closed, never the shared user), and a
    /// ClickHouse failure says so.
    pub clickhouse_probe_error: Option<String>,
    /// Refuse tenants that cannot be isolated (`--require-isolation`): no Secret, no backends,
    /// no workloads, only the conditions saying why.
    pub require_isolation: bool,
    /// Whether each tenant gets its own Redis ACL user (`--redis-admin-url` is set).
    pub redis_per_tenant: bool,
    /// Whether tenants get the operator's own NATS URL (no `--nats-tenant-url`).
    pub nats_tenant_is_admin: bool,
    /// `--nats-auth accounts`: each tenant gets a NATS account of its own (its key derived
    /// from these) and a user confined to its stream; `None` is `--nats-auth shared`.
    pub nats_accounts: Option<crate::nats_auth::AccountKeys>,
}

impl Platform {
    /// Settings for tests and examples: the services on this machine.
    pub fn local() -> Self {
        Self {
            image_repository: "ghcr.io/zori-k8s".to_owned(),
            image_tag: env!("CARGO_PKG_VERSION").to_owned(),
            nats_url: "nats://127.0.0.1:4222".to_owned(),
            redis_url: "redis://127.0.0.1:6379".to_owned(),
            postgres: PostgresTarget {
                host: "127.0.0.1".to_owned(),
                port: 5432,
                database: "postgres".to_owned(),
                params: None,
            },
            clickhouse_url: "http://127.0.0.1:8123".to_owned(),
            clickhouse_users: ClickHouseUsers::Shared {
                user: None,
                password: None,
            },
            clickhouse_topology: zori_service::clickhouse::Topology::Single,
            cluster_domain: "cluster.local".to_owned(),
            clickhouse_probe_error: None,
            require_isolation: false,
            redis_per_tenant: false,
            nats_tenant_is_admin: true,
            nats_accounts: None,
        }
    }
}

/// One bad field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path such as `spec.ingest.replicas`.
    pub field: String,
    pub message: String,
}

/// Everything wrong with a spec; displays as `spec.a: …; spec.b: …`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InvalidSpec {
    pub errors: Vec<FieldError>,
}

impl fmt::Display for InvalidSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        f.write_str(&parts.join("; "))
    }
}

/// CPU and memory of a container, as Kubernetes quantities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub requests_cpu: String,
    pub requests_memory: String,
    pub limits_cpu: Option<String>,
    pub limits_memory: String,
}

/// A checked workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadConfig {
    pub replicas: i32,
    pub image: String,
    pub image_pull_policy: Option<&'static str>,
    pub resources: Resources,
}

/// Checked settings of the tracking endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestConfig {
    pub workload: WorkloadConfig,
    pub rate_limit_per_visitor: u64,
    pub rate_limit_per_ip: u64,
    /// Whole seconds, as `60s`.
    pub rate_limit_window: String,
    pub client_ip_header: Option<String>,
    /// `--trusted-proxies` when the spec sets it.
    pub trusted_proxies: Option<u8>,
    /// `off`, `ignore` or `refuse`, as `zori-ingest` reads it.
    pub identity_verification: &'static str,
    /// `drop` or `flag`, as `zori-ingest` reads it.
    pub bot_traffic: &'static str,
    pub max_past_skew: String,
    pub max_future_skew: String,
}

/// The checked Ingress settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressConfig {
    pub host: String,
    pub class_name: Option<String>,
    pub tls_secret_name: Option<String>,
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// A project after validation: everything the builders need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectConfig {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub generation: Option<i64>,
    pub names: TenantNames,
    /// Serialised origins (`https://shop.example.com`), without duplicates.
    pub allowed_origins: Vec<String>,
    pub ingest: IngestConfig,
    pub api: WorkloadConfig,
    pub stripe_webhook_secret: Option<SecretKeyRef>,
    /// `spec.attribution.lookback`, as zori-api's `ZORI_ATTRIBUTION_LOOKBACK` reads it.
    pub attribution_lookback: String,
    pub stream_limits: StreamLimits,
    pub ingress: Option<IngressConfig>,
    pub reclaim_policy: ReclaimPolicy,
    pub suspend: bool,
}

impl ProjectConfig {
    pub fn workload(&self, component: Component) -> &WorkloadConfig {
        match component {
            Component::Ingest => &self.ingest.workload,
            Component::Api => &self.api,
        }
    }

    /// Replicas the Deployment asks for: zero while suspended.
    pub fn desired_replicas(&self, component: Component) -> i32 {
        if self.suspend {
            0
        } else {
            self.workload(component).replicas
        }
    }
}

struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.to_owned(),
            message: message.into(),
        });
    }

    /// Records the error of `result` under `field` and passes its value on.
    fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(message) => {
                self.add(field, message);
                None
            }
        }
    }
}

/// Checks `project` and turns it into a [`ProjectConfig`] for the given (pinned) tenant id.
pub fn validate(
    project: &ZoriProject,
    tenant_id: &str,
    platform: &Platform,
) -> Result<ProjectConfig, InvalidSpec> {
    let mut errors = Errors(Vec::new());
    let spec = &project.spec;
    let meta = &project.metadata;

    let name = meta.name.clone().unwrap_or_default();
    if !is_dns_label(&name) || name.len() > MAX_PROJECT_NAME {
        errors.add(
            "metadata.name",
            format!(
                "{name:?} must be at most {MAX_PROJECT_NAME} characters of a-z, 0-9 and -, \
                 starting with a letter (it names the <name>-ingest and <name>-api Services)"
            ),
        );
    }
    let namespace = meta.namespace.clone().unwrap_or_default();
    if namespace.is_empty() {
        errors.add(
            "metadata.namespace",
            "a ZoriProject is namespaced; the namespace is missing",
        );
    }
    let uid = meta.uid.clone().unwrap_or_default();
    if uid.is_empty() {
        errors.add(
            "metadata.uid",
            "missing; the object was not read from the API",
        );
    }
    if !is_valid_tenant_id(tenant_id) {
        errors.add(
            "status.tenantId",
            format!("{tenant_id:?} must be 1 to 48 characters of a-z, 0-9 and _"),
        );
    }

    let mut allowed_origins = Vec::new();
    if spec.allowed_origins.is_empty() {
        errors.add(
            "spec.allowedOrigins",
            "give at least one origin, such as https://shop.example.com",
        );
    }
    if spec.allowed_origins.len() > 32 {
        errors.add("spec.allowedOrigins", "at most 32 origins are allowed");
    }
    for (i, origin) in spec.allowed_origins.iter().enumerate() {
        if let Some(o) = errors.check(&format!("spec.allowedOrigins[{i}]"), parse_origin(origin)) {
            if !allowed_origins.contains(&o) {
                allowed_origins.push(o);
            }
        }
    }

    let ingest_workload = workload(
        &mut errors,
        "spec.ingest",
        &spec.ingest.workload,
        Component::Ingest,
        platform,
    );
    let api = workload(&mut errors, "spec.api", &spec.api, Component::Api, platform);

    let limits = &spec.ingest.rate_limits;
    let per_visitor = errors.check(
        "spec.ingest.rateLimits.perVisitor",
        u64::try_from(limits.per_visitor).map_err(|_| "must be 0 (off) or more".to_owned()),
    );
    let per_ip = errors.check(
        "spec.ingest.rateLimits.perIp",
        u64::try_from(limits.per_ip).map_err(|_| "must be 0 (off) or more".to_owned()),
    );
    let window = errors.check(
        "spec.ingest.rateLimits.window",
        parse_duration(&limits.window).and_then(|d| {
            if d.as_secs() >= 1 && d.subsec_nanos() == 0 {
                Ok(d)
            } else {
                Err(format!(
                    "{:?} must be a whole number of seconds, at least 1s",
                    limits.window
                ))
            }
        }),
    );
    let client_ip_header = match &spec.ingest.client_ip_header {
        Some(h) => errors
            .check(
                "spec.ingest.clientIpHeader",
                if !h.is_empty()
                    && h.len() <= 64
                    && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    Ok(h.to_ascii_lowercase())
                } else {
                    Err(format!("{h:?} is not an HTTP header name"))
                },
            )
            .map(Some),
        None if spec.ingress.is_some() => Some(Some("x-forwarded-for".to_owned())),
        None => Some(None),
    };

    let trusted_proxies = match spec.ingest.trusted_proxies {
        Some(n) => errors
            .check(
                "spec.ingest.trustedProxies",
                u8::try_from(n)
                    .ok()
                    .filter(|n| *n <= 16)
                    .ok_or_else(|| format!("{n} must be between 0 and 16")),
            )
            .map(Some),
        None => Some(None),
    };

    let attribution = &spec.attribution;
    let max_past_skew = errors.check(
        "spec.attribution.maxPastSkew",
        parse_duration(attribution.max_past_skew.as_deref().unwrap_or("72h")),
    );
    let max_future_skew = errors.check(
        "spec.attribution.maxFutureSkew",
        parse_duration(attribution.max_future_skew.as_deref().unwrap_or("5m")),
    );
    let lookback = errors.check(
        "spec.attribution.lookback",
        parse_duration(attribution.lookback.as_deref().unwrap_or("2160h")).and_then(|d| {
            if d < Duration::from_secs(3600) {
                Err(format!(
                    "{:?} must be at least 1h",
                    attribution.lookback.as_deref().unwrap_or_default()
                ))
            } else {
                Ok(d)
            }
        }),
    );

    let stripe_webhook_secret = spec.stripe.as_ref().map(|s| s.webhook_secret_ref.clone());
    if let Some(r) = &stripe_webhook_secret {
        if !is_dns_subdomain(&r.name) {
            errors.add(
                "spec.stripe.webhookSecretRef.name",
                format!("{:?} is not a Secret name", r.name),
            );
        }
        if r.key.is_empty()
            || r.key.len() > 253
            || !r
                .key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            errors.add(
                "spec.stripe.webhookSecretRef.key",
                format!("{:?} is not a Secret key", r.key),
            );
        }
    }

    let max_age = errors.check(
        "spec.retention.streamMaxAge",
        parse_duration(&spec.retention.stream_max_age).and_then(|d| {
            if d >= Duration::from_secs(60) {
                Ok(d)
            } else {
                Err(format!(
                    "{:?} must be at least 1m",
                    spec.retention.stream_max_age
                ))
            }
        }),
    );
    let stream = &spec.stream_limits;
    let max_bytes = errors.check(
        "spec.streamLimits.maxBytes",
        parse_quantity(&stream.max_bytes).and_then(|b| {
            if b.fract() != 0.0 || b < f64::from(1u32 << 20) || b > 9.0e18 {
                Err(format!(
                    "{} must be a whole number of bytes, at least 1Mi",
                    stream.max_bytes
                ))
            } else {
                // In range and whole: the conversion is exact.
                #[allow(clippy::cast_possible_truncation)]
                Ok(b as i64)
            }
        }),
    );
    if stream.max_messages == 0 || stream.max_messages < -1 {
        errors.add(
            "spec.streamLimits.maxMessages",
            "must be -1 (no limit) or at least 1",
        );
    }
    let replicas = errors.check(
        "spec.streamLimits.replicas",
        usize::try_from(stream.replicas)
            .ok()
            .filter(|r| (1..=5).contains(r))
            .ok_or_else(|| "must be between 1 and 5".to_owned()),
    );
    let duplicate_window = errors.check(
        "spec.streamLimits.duplicateWindow",
        parse_duration(&stream.duplicate_window).and_then(|d| {
            if d < Duration::from_secs(1) {
                Err(format!("{:?} must be at least 1s", stream.duplicate_window))
            } else if max_age.is_some_and(|age| d > age) {
                Err(format!(
                    "{:?} must not be longer than spec.retention.streamMaxAge ({:?})",
                    stream.duplicate_window, spec.retention.stream_max_age
                ))
            } else {
                Ok(d)
            }
        }),
    );

    let ingress = spec.ingress.as_ref().map(|i| {
        if !is_dns_subdomain(&i.host) {
            errors.add(
                "spec.ingress.host",
                format!("{:?} is not a DNS name such as t.shop.example.com", i.host),
            );
        }
        if let Some(c) = &i.class_name {
            if !is_dns_subdomain(c) {
                errors.add(
                    "spec.ingress.className",
                    format!("{c:?} is not an IngressClass name"),
                );
            }
        }
        if let Some(s) = &i.tls_secret_name {
            if !is_dns_subdomain(s) {
                errors.add(
                    "spec.ingress.tlsSecretName",
                    format!("{s:?} is not a Secret name"),
                );
            }
        }
        for key in i.annotations.keys() {
            if key.is_empty() || key.len() > 253 || key.chars().any(char::is_whitespace) {
                errors.add(
                    "spec.ingress.annotations",
                    format!("{key:?} is not an annotation key"),
                );
            }
        }
        IngressConfig {
            host: i.host.clone(),
            class_name: i.class_name.clone(),
            tls_secret_name: i.tls_secret_name.clone(),
            annotations: i.annotations.clone(),
        }
    });

    match (
        errors.0.is_empty(),
        ingest_workload,
        api,
        per_visitor,
        per_ip,
        window,
        client_ip_header,
        max_past_skew,
        max_future_skew,
        max_age,
        max_bytes,
        replicas,
        duplicate_window,
        trusted_proxies,
        lookback,
    ) {
        (
            true,
            Some(ingest_workload),
            Some(api),
            Some(per_visitor),
            Some(per_ip),
            Some(window),
            Some(client_ip_header),
            Some(max_past_skew),
            Some(max_future_skew),
            Some(max_age),
            Some(max_bytes),
            Some(replicas),
            Some(duplicate_window),
            Some(trusted_proxies),
            Some(lookback),
        ) => Ok(ProjectConfig {
            name,
            namespace,
            uid,
            generation: meta.generation,
            names: TenantNames::for_tenant(tenant_id),
            allowed_origins,
            ingest: IngestConfig {
                workload: ingest_workload,
                rate_limit_per_visitor: per_visitor,
                rate_limit_per_ip: per_ip,
                rate_limit_window: format_duration(window),
                client_ip_header,
                trusted_proxies,
                identity_verification: spec.ingest.identity_verification.as_flag(),
                bot_traffic: match attribution.bot_traffic {
                    BotTraffic::Drop => "drop",
                    BotTraffic::Flag => "flag",
                },
                max_past_skew: format_duration(max_past_skew),
                max_future_skew: format_duration(max_future_skew),
            },
            api,
            stripe_webhook_secret,
            attribution_lookback: format_duration(lookback),
            stream_limits: StreamLimits {
                max_age,
                max_bytes,
                max_messages: stream.max_messages,
                duplicate_window,
                replicas,
                // Work-queue retention (zori-service's default) until the CRD exposes it.
                ..StreamLimits::default()
            },
            ingress,
            reclaim_policy: spec.reclaim_policy,
            suspend: spec.suspend,
        }),
        _ => Err(InvalidSpec { errors: errors.0 }),
    }
}

fn workload(
    errors: &mut Errors,
    path: &str,
    spec: &WorkloadSpec,
    component: Component,
    platform: &Platform,
) -> Option<WorkloadConfig> {
    let mut ok = true;
    if !(1..=100).contains(&spec.replicas) {
        errors.add(
            &format!("{path}.replicas"),
            "must be between 1 and 100 (use spec.suspend to scale to zero)",
        );
        ok = false;
    }
    let image = match &spec.image {
        Some(image)
            if image.is_empty()
                || image.len() > 512
                || image.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            errors.add(
                &format!("{path}.image"),
                format!("{image:?} is not an image reference"),
            );
            ok = false;
            String::new()
        }
        Some(image) => image.clone(),
        None => format!(
            "{}/{}:{}",
            platform.image_repository.trim_end_matches('/'),
            component.binary(),
            platform.image_tag
        ),
    };

    let (default_cpu, default_memory, default_limit_memory) = match component {
        Component::Ingest => ("50m", "64Mi", "256Mi"),
        Component::Api => ("100m", "128Mi", "512Mi"),
    };
    let requests = spec.resources.requests.clone().unwrap_or_default();
    let limits = spec.resources.limits.clone().unwrap_or_default();
    let mut quantity = |field: &str, q: &Option<Quantity>| -> Option<(String, f64)> {
        let q = q.as_ref()?;
        match parse_quantity(q) {
            Ok(v) if v > 0.0 => Some((q.as_str().to_owned(), v)),
            Ok(_) => {
                errors.add(
                    &format!("{path}.resources.{field}"),
                    format!("{q} must be more than zero"),
                );
                ok = false;
                None
            }
            Err(message) => {
                errors.add(&format!("{path}.resources.{field}"), message);
                ok = false;
                None
            }
        }
    };
    let requests_cpu = quantity("requests.cpu", &requests.cpu);
    let requests_memory = quantity("requests.memory", &requests.memory);
    let limits_cpu = quantity("limits.cpu", &limits.cpu);
    let limits_memory = quantity("limits.memory", &limits.memory);
    if let (Some((r, rv)), Some((l, lv))) = (&requests_cpu, &limits_cpu) {
        if rv > lv {
            errors.add(
                &format!("{path}.resources.requests.cpu"),
                format!("{r} must not be more than limits.cpu ({l})"),
            );
            ok = false;
        }
    }
    if let (Some((r, rv)), Some((l, lv))) = (&requests_memory, &limits_memory) {
        if rv > lv {
            errors.add(
                &format!("{path}.resources.requests.memory"),
                format!("{r} must not be more than limits.memory ({l})"),
            );
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    let default_quantity = |q: &str| parse_quantity(&Quantity::new(q)).unwrap_or(0.0);
    // A limit below a default request lowers the request to the limit.
    let requests_cpu = match (requests_cpu, &limits_cpu) {
        (Some((r, _)), _) => r,
        (None, Some((l, lv))) if *lv < default_quantity(default_cpu) => l.clone(),
        (None, _) => default_cpu.to_owned(),
    };
    let limits_memory_value = limits_memory.clone();
    let requests_memory = match (requests_memory, &limits_memory_value) {
        (Some((r, _)), _) => r,
        (None, Some((l, lv))) if *lv < default_quantity(default_memory) => l.clone(),
        (None, _) => default_memory.to_owned(),
    };
    let limits_memory = match limits_memory {
        Some((l, _)) => l,
        None => {
            let request = default_quantity(&requests_memory).max(0.0);
            if request > default_quantity(default_limit_memory) {
                requests_memory.clone()
            } else {
                default_limit_memory.to_owned()
            }
        }
    };
    Some(WorkloadConfig {
        replicas: spec.replicas,
        image,
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str()),
        resources: Resources {
            requests_cpu,
            requests_memory,
            limits_cpu: limits_cpu.map(|(l, _)| l),
            limits_memory,
        },
    })
}

/// Parses an `http(s)` origin and returns its serialisation (`https://shop.example.com`).
fn parse_origin(item: &str) -> Result<String, String> {
    let not_origin =
        || format!("{item:?} is not an http(s) origin such as https://shop.example.com");
    let url = url::Url::parse(item).map_err(|_| not_origin())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(not_origin());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{item:?} must not contain credentials"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() || item.ends_with('/')
    {
        return Err(format!(
            "{item:?} must be an origin only: scheme, host and optional port, no path"
        ));
    }
    Ok(url.origin().ascii_serialization())
}

/// Parses a Kubernetes duration (`168h`, `1h30m`, `90s`, `500ms`), the syntax of the CRD.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration such as 168h, 90m, 30s or 1h30m");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.checked_mul(60).ok_or_else(bad)?),
            "h" => Duration::from_secs(number.checked_mul(3600).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Formats a duration for the data-plane flags: `90s`, or `250ms` below whole seconds.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Parses a Kubernetes quantity into its value in base units (`512Mi` → 536870912, `250m` → 0.25).
pub fn parse_quantity(q: &Quantity) -> Result<f64, String> {
    let text = q.as_str().trim();
    let bad = || format!("{text:?} is not a quantity such as 250m, 1, 512Mi or 1Gi");
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(end);
    if number.is_empty() || number == "." {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let multiplier = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        s if s.starts_with(['e', 'E']) => {
            let exponent: i32 = s[1..].parse().map_err(|_| bad())?;
            10f64.powi(exponent)
        }
        _ => return Err(bad()),
    };
    let result = value * multiplier;
    if result.is_finite() {
        Ok(result)
    } else {
        Err(bad())
    }
}

/// A DNS-1035 label: `^[a-z]([-a-z0-9]*[a-z0-9])?$`, at most 63 characters.
fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !s.is_empty()
        && s.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain: dot-separated labels of a-z, 0-9 and -, at most 253 characters.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{IngressSpec, ResourceAmounts, ResourcesSpec, StripeSpec, ZoriProjectSpec};

    fn project(spec: serde_json::Value) -> ZoriProject {
        let spec: ZoriProjectSpec = serde_json::from_value(spec).expect("spec parses");
        let mut p = ZoriProject::new("acme", spec);
        p.metadata.namespace = Some("shops".to_owned());
        p.metadata.uid = Some("uid-1".to_owned());
        p.metadata.generation = Some(1);
        p
    }

    fn minimal() -> serde_json::Value {
        serde_json::json!({"allowedOrigins": ["https://shop.example.com"]})
    }

    fn errors_of(spec: serde_json::Value) -> String {
        validate(&project(spec), "shops_acme", &Platform::local())
            .expect_err("should be invalid")
            .to_string()
    }

    #[test]
    fn minimal_spec_gets_defaults() {
        let config =
            validate(&project(minimal()), "shops_acme", &Platform::local()).expect("valid");
        assert_eq!(config.allowed_origins, vec!["https://shop.example.com"]);
        assert_eq!(config.ingest.workload.replicas, 1);
        assert_eq!(
            config.ingest.workload.image,
            format!("ghcr.io/zori-k8s/zori-ingest:{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(config.api.resources.requests_cpu, "100m");
        assert_eq!(config.api.resources.limits_memory, "512Mi");
        assert_eq!(config.api.resources.limits_cpu, None);
        assert_eq!(config.ingest.rate_limit_window, "60s");
        assert_eq!(config.ingest.bot_traffic, "drop");
        assert_eq!(config.ingest.client_ip_header, None);
        assert_eq!(config.ingest.max_past_skew, "259200s");
        assert_eq!(config.attribution_lookback, "7776000s");
        assert_eq!(
            config.stream_limits.max_age,
            Duration::from_secs(168 * 3600)
        );
        assert_eq!(config.stream_limits.max_bytes, 1 << 30);
        assert_eq!(config.stream_limits.max_messages, -1);
        assert_eq!(
            config.stream_limits.duplicate_window,
            Duration::from_secs(120)
        );
        assert_eq!(config.reclaim_policy, ReclaimPolicy::Retain);
        assert_eq!(config.names.subjects.stream, "ZORI_SHOPS_ACME");
        assert!(config.ingress.is_none());
    }

    #[test]
    fn an_ingress_turns_on_the_forwarded_header() {
        let mut spec = project(minimal()).spec;
        spec.ingress = Some(IngressSpec {
            host: "t.shop.example.com".to_owned(),
            class_name: None,
            tls_secret_name: None,
            annotations: Default::default(),
        });
        let mut p = project(minimal());
        p.spec = spec;
        let config = validate(&p, "shops_acme", &Platform::local()).expect("valid");
        assert_eq!(
            config.ingest.client_ip_header.as_deref(),
            Some("x-forwarded-for")
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let cases: &[(serde_json::Value, &str)] = &[
            (serde_json::json!({"allowedOrigins": []}), "spec.allowedOrigins: give at least one origin"),
            (serde_json::json!({"allowedOrigins": ["shop.example.com"]}), "spec.allowedOrigins[0]: \"shop.example.com\" is not an http(s) origin"),
            (serde_json::json!({"allowedOrigins": ["https://a.example/x"]}), "spec.allowedOrigins[0]: \"https://a.example/x\" must be an origin only"),
            (serde_json::json!({"allowedOrigins": ["https://a.example"], "ingest": {"replicas": 0}}), "spec.ingest.replicas: must be between 1 and 100"),
            (serde_json::json!({"allowedOrigins": ["https://a.example"], "api": {"image": "bad image"}}), "spec.api.image: \"bad image\" is not an image reference"),
            (serde_json::json!({"allowedOrigins": ["https://a.example"], "api": {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}}), "spec.api.resources.requests.cpu: 2 must not be more than limits.cpu (1)"),
            (serde_json::json!({"allowedOrigins": ["https://a.example"], "api": {"resources": {"limits": {"memory": "lots"}}}}), "spec.api.resources.limits.memory: \"lots\" is not a quantity"),
            (serde_json::json!({"allowedOrigins": ["https://a.example"], "ingest": {"rateLimits": {"window": "500ms"}}}), "spec.ingest.rateLimits.window: \"500ms\" must be a whole number of seconds"),
            (serde_json::json!({"allowedOrigins": ["https://a.example"], "ingest": {"rateLimits": {"perIp": -1}}}), "spec.ingest.rateLimits.perIp: must be 0 (off) or more"),
            (serde_json::json!({"allowedOrigins": ["https://a.example"], "ingest": {"clientIpHeader": "x forwarded"}}), "spec.ingest.clientIpHeader: \"x forwarded\" is not an HTTP header name"),
            (serde_json::json!({"allowedOrigins": ["https://a.example"], "attribution": {"maxPastSkew": "3d"}}), "spec.attribution.maxPastSkew: \"3d\" is not a duration"),
            (serde_json::json!({"allowedOrigins": ["https://a.example"], "attribution": {"lookback": "30m"}}), "spec.attribution.lookback: \"30m\" must be at least 1h"),
            (serde_json::json!({"allowedOrigins": ["https://a.example"], "retention": {"streamMaxAge": "30s"}}), "spec.retention.streamMaxAge: \"30s\" must be at least 1m"),
            (serde_json::json!({"allowedOrigins": ["https://a.example"], "retention": {"streamMaxAge": "1h"}, "streamLimits": {"duplicateWindow": "2h"}}), "spec.streamLimits.duplicateWindow: \"2h\" must not be longer than spec.retention.streamMaxAge (\"1h\")"),
            (serde_json::json!({"allowedOrigins": ["https://a.example"], "streamLimits": {"maxBytes": "1Ki"}}), "spec.streamLimits.maxBytes: 1Ki must be a whole number of bytes, at least 1Mi"),
            (serde_json::json!({"allowedOrigins": ["https://a.example"], "streamLimits": {"maxMessages": 0}}), "spec.streamLimits.maxMessages: must be -1 (no limit) or at least 1"),
            (serde_json::json!({"allowedOrigins": ["https://a.example"], "streamLimits": {"replicas": 7}}), "spec.streamLimits.replicas: must be between 1 and 5"),
            (serde_json::json!({"allowedOrigins": ["https://a.example"], "ingress": {"host": "*.example.com"}}), "spec.ingress.host: \"*.example.com\" is not a DNS name"),
            (serde_json::json!({"allowedOrigins": ["https://a.example"], "stripe": {"webhookSecretRef": {"name": "Stripe"}}}), "spec.stripe.webhookSecretRef.name: \"Stripe\" is not a Secret name"),
        ];
        for (spec, expected) in cases {
            let message = errors_of(spec.clone());
            assert!(message.starts_with(expected), "{spec}: {message}");
        }
    }

    #[test]
    fn reports_all_errors_at_once() {
        let message = errors_of(serde_json::json!({
            "allowedOrigins": ["ftp://x"],
            "ingest": {"replicas": 0},
            "streamLimits": {"replicas": 0}
        }));
        assert!(message.contains("spec.allowedOrigins[0]"), "{message}");
        assert!(message.contains("spec.ingest.replicas"), "{message}");
        assert!(message.contains("spec.streamLimits.replicas"), "{message}");
    }

    #[test]
    fn checks_the_name_and_tenant_id() {
        let mut p = project(minimal());
        p.metadata.name = Some("a".repeat(57));
        let message = validate(&p, "x", &Platform::local())
            .expect_err("long name")
            .to_string();
        assert!(message.starts_with("metadata.name:"), "{message}");
        let message = validate(&project(minimal()), "Bad-Id", &Platform::local())
            .expect_err("bad id")
            .to_string();
        assert!(message.starts_with("status.tenantId:"), "{message}");
    }

    #[test]
    fn a_low_limit_lowers_the_default_request() {
        let mut p = project(minimal());
        p.spec.ingest.workload.resources = ResourcesSpec {
            requests: None,
            limits: Some(ResourceAmounts {
                cpu: Some(Quantity::new("20m")),
                memory: Some(Quantity::new("32Mi")),
            }),
        };
        p.spec.stripe = Some(StripeSpec {
            webhook_secret_ref: SecretKeyRef {
                name: "stripe".to_owned(),
                key: "webhook-secret".to_owned(),
            },
        });
        let config = validate(&p, "shops_acme", &Platform::local()).expect("valid");
        let r = &config.ingest.workload.resources;
        assert_eq!(
            (r.requests_cpu.as_str(), r.limits_cpu.as_deref()),
            ("20m", Some("20m"))
        );
        assert_eq!(
            (r.requests_memory.as_str(), r.limits_memory.as_str()),
            ("32Mi", "32Mi")
        );
    }

    #[test]
    fn parses_durations_and_quantities() {
        let durations: &[(&str, Option<u64>)] = &[
            ("168h", Some(168 * 3600 * 1000)),
            ("1h30m", Some(5400 * 1000)),
            ("90s", Some(90_000)),
            ("250ms", Some(250)),
            ("2m", Some(120_000)),
            ("", None),
            ("7d", None),
            ("h", None),
            ("1.5h", None),
        ];
        for (text, expected) in durations {
            let got = parse_duration(text)
                .ok()
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(0));
            assert_eq!(got, *expected, "{text:?}");
        }
        let quantities: &[(&str, Option<f64>)] = &[
            ("1", Some(1.0)),
            ("250m", Some(0.25)),
            ("512Mi", Some(536_870_912.0)),
            ("1Gi", Some(1_073_741_824.0)),
            ("1G", Some(1e9)),
            ("1e3", Some(1000.0)),
            ("0.5", Some(0.5)),
            ("lots", None),
            ("1GiB", None),
            ("", None),
        ];
        for (text, expected) in quantities {
            assert_eq!(
                parse_quantity(&Quantity::new(*text)).ok(),
                *expected,
                "{text:?}"
            );
        }
        assert_eq!(format_duration(Duration::from_secs(60)), "60s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }
}
