//! Command line of `zori-operator`: `run` (flags with `ZORI_…` environment fallbacks, checked
//! at start into [`RunSettings`]) and `crd`.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};

use nkeys::KeyPairType;

use crate::{
    config::{ClickHouseUsers, Platform, PostgresTarget},
    nats_auth::{key_from_seed, parse_creds, AccountKeys},
};

#[derive(Debug, Parser)]
#[command(
    name = "zori-operator",
    version,
    about = "Kubernetes operator for Zori: reconciles each ZoriProject into its JetStream stream, \
             PostgreSQL schema and role, ClickHouse database, Secret and workloads.",
    after_help = "Examples:\n  zori-operator crd | kubectl apply -f -\n  \
                  ZORI_POSTGRES_ADMIN_URL=postgres://postgres@db:5432/zori zori-operator run"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the controller (leader-elected) with /metrics, /healthz and /readyz.
    Run(Box<RunArgs>),
    /// Prints the ZoriProject CustomResourceDefinition as YAML.
    Crd,
}

/// Flags of `zori-operator run`. Admin credentials stay with the operator; tenants get their
/// own role and the tenant URLs below.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// NATS server the operator manages streams on (admin connection).
    #[arg(
        long,
        env = "ZORI_NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true
    )]
    pub nats_url: String,

    /// NATS URL given to the tenants' binaries [default: --nats-url].
    #[arg(long, env = "ZORI_NATS_TENANT_URL", hide_env_values = true)]
    pub nats_tenant_url: Option<String>,

    /// `shared` (every tenant gets the tenant NATS URL: not isolated) or `accounts` (NATS in
    /// operator mode: each tenant gets a NATS account of its own, with a JetStream quota, and
    /// a user that may use only its own stream; needs the three flags below).
    #[arg(
        long,
        env = "ZORI_NATS_AUTH",
        default_value = "shared",
        value_name = "shared|accounts"
    )]
    pub nats_auth: String,

    /// With `--nats-auth accounts`: seed (`SO…`) of a signing key listed in the NATS
    /// operator JWT; account JWTs are signed with it.
    #[arg(long, env = "ZORI_NATS_SIGNING_KEY", hide_env_values = true)]
    pub nats_signing_key: Option<String>,

    /// With `--nats-auth accounts`: credentials (`.creds` contents, or a path to the file) of
    /// a system account user allowed to publish `$SYS.REQ.CLAIMS.UPDATE` and
    /// `$SYS.REQ.CLAIMS.DELETE`; the operator pushes account JWTs with it.
    #[arg(long, env = "ZORI_NATS_SYSTEM_CREDS", hide_env_values = true)]
    pub nats_system_creds: Option<String>,

    /// With `--nats-auth accounts`: a random secret of at least 32 characters from which each
    /// tenant's account key is derived. Keep it for the life of the install: another value
    /// gives every tenant a new, empty account.
    #[arg(long, env = "ZORI_NATS_ACCOUNT_KEY", hide_env_values = true)]
    pub nats_account_key: Option<String>,

    /// PostgreSQL admin URL (a role that may create roles and schemas, superuser to check
    /// passwords); its database holds the tenant schemas. [required]
    #[arg(long, env = "ZORI_POSTGRES_ADMIN_URL", hide_env_values = true)]
    pub postgres_admin_url: Option<String>,

    /// Host (and optional :port) the tenants connect to PostgreSQL at [default: the admin
    /// URL's host and port].
    #[arg(long, env = "ZORI_POSTGRES_TENANT_HOST", value_name = "HOST[:PORT]")]
    pub postgres_tenant_host: Option<String>,

    /// ClickHouse HTTP URL the operator creates databases through.
    #[arg(
        long,
        env = "ZORI_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123"
    )]
    pub clickhouse_url: String,

    /// ClickHouse HTTP URL given to the tenants [default: --clickhouse-url].
    #[arg(long, env = "ZORI_CLICKHOUSE_TENANT_URL")]
    pub clickhouse_tenant_url: Option<String>,

    /// ClickHouse admin user [default: the server's default user].
    #[arg(long, env = "ZORI_CLICKHOUSE_ADMIN_USER")]
    pub clickhouse_admin_user: Option<String>,

    /// ClickHouse admin password.
    #[arg(long, env = "ZORI_CLICKHOUSE_ADMIN_PASSWORD", hide_env_values = true)]
    pub clickhouse_admin_password: Option<String>,

    /// `auto` (per-tenant SQL users when the server supports them, from 20.4), `per-tenant`,
    /// or `shared` (every tenant uses --clickhouse-tenant-user).
    #[arg(
        long,
        env = "ZORI_CLICKHOUSE_USERS",
        default_value = "auto",
        value_name = "auto|per-tenant|shared"
    )]
    pub clickhouse_users: String,

    /// ClickHouse cluster (a name in the servers' `remote_servers`) the tenant databases live
    /// on: DDL runs `ON CLUSTER`, tables are `Replicated*` behind `Distributed` ones. Empty:
    /// one server.
    #[arg(long, env = "ZORI_CLICKHOUSE_CLUSTER", value_name = "CLUSTER")]
    pub clickhouse_cluster: Option<String>,

    /// With shared users: the users.xml user the tenants connect as [default: the server's
    /// default user].
    #[arg(long, env = "ZORI_CLICKHOUSE_TENANT_USER")]
    pub clickhouse_tenant_user: Option<String>,

    /// With shared users: that user's password (copied into each tenant Secret).
    #[arg(long, env = "ZORI_CLICKHOUSE_TENANT_PASSWORD", hide_env_values = true)]
    pub clickhouse_tenant_password: Option<String>,

    /// Redis URL given to the tenants' ingest (rate limits).
    #[arg(
        long,
        env = "ZORI_REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: String,

    /// Redis URL of a user allowed the `ACL` command: when set, each tenant gets its own ACL
    /// user limited to its key prefix, and its Secret holds that user's URL instead of
    /// --redis-url's credentials (host, port and database still come from --redis-url).
    #[arg(long, env = "ZORI_REDIS_ADMIN_URL", hide_env_values = true)]
    pub redis_admin_url: Option<String>,

    /// Comma-separated namespaces to watch; empty watches all.
    #[arg(long, env = "ZORI_NAMESPACES", default_value = "")]
    pub namespaces: String,

    /// Repository of the default images (`<repository>/zori-ingest:<tag>`).
    #[arg(
        long,
        env = "ZORI_DEFAULT_IMAGE_REPOSITORY",
        default_value = "ghcr.io/zori-k8s"
    )]
    pub default_image_repository: String,

    /// Tag of the default images [default: the operator's version].
    #[arg(long, env = "ZORI_DEFAULT_IMAGE_TAG")]
    pub default_image_tag: Option<String>,

    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "ZORI_METRICS_LISTEN", default_value = "0.0.0.0:8080")]
    pub metrics_listen: String,

    /// Namespace of the leader-election Lease [default: $POD_NAMESPACE, else `default`].
    #[arg(long, env = "ZORI_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// Name of the leader-election Lease.
    #[arg(long, env = "ZORI_LEASE_NAME", default_value = "zori-operator")]
    pub lease_name: String,

    /// Identity in the Lease [default: $POD_NAME, else the host name].
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// DNS domain of the cluster (for the in-cluster endpoints in status).
    #[arg(long, env = "ZORI_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,

    /// Refuse tenants that cannot be isolated (a backend would share a credential between
    /// tenants): they get `Isolated=False` and `Ready=False` (IsolationRequired), and no
    /// Secret, backends or workloads.
    #[arg(long, env = "ZORI_REQUIRE_ISOLATION", default_value_t = false)]
    pub require_isolation: bool,
}

/// How ClickHouse users are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClickHouseUserMode {
    Auto,
    PerTenant,
    Shared,
}

/// What the operator needs to run NATS accounts (`--nats-auth accounts`); never printed.
#[derive(Clone)]
pub struct NatsOperatorAuth {
    /// Seed of the operator signing key account JWTs are signed with.
    pub signing_key: String,
    /// `.creds` contents of the system account user.
    pub system_creds: String,
}

impl std::fmt::Debug for NatsOperatorAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NatsOperatorAuth(<redacted>)")
    }
}

/// The checked settings of `run`.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub nats_url: String,
    /// `Some` with `--nats-auth accounts`.
    pub nats_auth: Option<NatsOperatorAuth>,
    pub postgres_admin_url: String,
    pub clickhouse_url: String,
    pub clickhouse_admin_user: Option<String>,
    pub clickhouse_admin_password: Option<String>,
    pub clickhouse_user_mode: ClickHouseUserMode,
    /// Admin connection for per-tenant Redis ACL users.
    pub redis_admin_url: Option<String>,
    /// The platform, with `clickhouse_users` as chosen by the mode (`Auto` starts as shared and
    /// is settled by asking the server).
    pub platform: Platform,
    pub namespaces: Vec<String>,
    pub metrics_listen: SocketAddr,
    pub lease_namespace: String,
    pub lease_name: String,
    pub identity: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    #[error("missing --{flag} ({env}): {hint}")]
    Missing {
        flag: &'static str,
        env: &'static str,
        hint: &'static str,
    },
    #[error("invalid --{flag} ({env}): {message}")]
    Invalid {
        flag: &'static str,
        env: &'static str,
        message: String,
    },
}

fn invalid(flag: &'static str, env: &'static str, message: impl Into<String>) -> CliError {
    CliError::Invalid {
        flag,
        env,
        message: message.into(),
    }
}

fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_ref()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn check_url(
    value: &str,
    schemes: &[&str],
    flag: &'static str,
    env: &'static str,
) -> Result<url::Url, CliError> {
    let url = url::Url::parse(value.trim())
        .map_err(|e| invalid(flag, env, format!("not a URL ({e})")))?;
    if !schemes.contains(&url.scheme()) {
        return Err(invalid(
            flag,
            env,
            format!("the scheme must be one of {}", schemes.join(", ")),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(flag, env, "the URL has no host"));
    }
    Ok(url)
}

/// A NATS URL, or a comma-separated seed list of the nodes of a NATS cluster.
fn check_nats_seeds(value: &str, flag: &'static str, env: &'static str) -> Result<(), CliError> {
    let seeds = zori_service::jetstream::seed_list(value);
    if seeds.is_empty() {
        return Err(invalid(flag, env, "not a URL (empty)"));
    }
    for seed in seeds {
        check_url(seed, &["nats", "tls", "ws", "wss"], flag, env)?;
    }
    Ok(())
}

impl RunArgs {
    /// The NATS accounts settings (`--nats-auth accounts`), checked; `(None, None)` for
    /// `shared`.
    fn nats_accounts(
        &self,
        tenant_url: &str,
    ) -> Result<(Option<NatsOperatorAuth>, Option<AccountKeys>), CliError> {
        const FLAG: &str = "nats-auth";
        const ENV: &str = "ZORI_NATS_AUTH";
        match self.nats_auth.trim() {
            "shared" => return Ok((None, None)),
            "accounts" => {}
            other => {
                return Err(invalid(
                    FLAG,
                    ENV,
                    format!("{other:?} is not one of shared, accounts"),
                ))
            }
        }
        let hint = "--nats-auth accounts needs the operator signing key seed, a system \
                    account user's credentials and the account key";
        let signing_key = non_empty(&self.nats_signing_key).ok_or(CliError::Missing {
            flag: "nats-signing-key",
            env: "ZORI_NATS_SIGNING_KEY",
            hint,
        })?;
        key_from_seed(&signing_key, KeyPairType::Operator, "operator signing key")
            .map_err(|e| invalid("nats-signing-key", "ZORI_NATS_SIGNING_KEY", e.to_string()))?;
        let creds = non_empty(&self.nats_system_creds).ok_or(CliError::Missing {
            flag: "nats-system-creds",
            env: "ZORI_NATS_SYSTEM_CREDS",
            hint,
        })?;
        let system_creds = if creds.contains("-----BEGIN") {
            creds
        } else {
            std::fs::read_to_string(&creds).map_err(|e| {
                invalid(
                    "nats-system-creds",
                    "ZORI_NATS_SYSTEM_CREDS",
                    format!("neither credentials nor a readable file ({e})"),
                )
            })?
        };
        parse_creds(&system_creds)
            .and_then(|(_, seed)| key_from_seed(&seed, KeyPairType::User, "system user seed"))
            .map_err(|e| invalid("nats-system-creds", "ZORI_NATS_SYSTEM_CREDS", e.to_string()))?;
        let account_key = non_empty(&self.nats_account_key).ok_or(CliError::Missing {
            flag: "nats-account-key",
            env: "ZORI_NATS_ACCOUNT_KEY",
            hint,
        })?;
        let keys = AccountKeys::new(&account_key)
            .map_err(|e| invalid("nats-account-key", "ZORI_NATS_ACCOUNT_KEY", e.to_string()))?;
        let url = url::Url::parse(tenant_url).ok();
        if url.is_some_and(|u| !u.username().is_empty() || u.password().is_some()) {
            return Err(invalid(
                "nats-tenant-url",
                "ZORI_NATS_TENANT_URL",
                "with --nats-auth accounts tenants authenticate with their own credentials: \
                 give the URL without any",
            ));
        }
        Ok((
            Some(NatsOperatorAuth {
                signing_key,
                system_creds,
            }),
            Some(keys),
        ))
    }

    /// Checks every flag; the first bad one is reported in one line.
    pub fn validate(&self) -> Result<RunSettings, CliError> {
        check_nats_seeds(&self.nats_url, "nats-url", "ZORI_NATS_URL")?;
        let nats_tenant_url =
            non_empty(&self.nats_tenant_url).unwrap_or_else(|| self.nats_url.trim().to_owned());
        check_nats_seeds(&nats_tenant_url, "nats-tenant-url", "ZORI_NATS_TENANT_URL")?;

        let (nats_auth, nats_accounts) = self.nats_accounts(&nats_tenant_url)?;

        let admin = non_empty(&self.postgres_admin_url).ok_or(CliError::Missing {
            flag: "postgres-admin-url",
            env: "ZORI_POSTGRES_ADMIN_URL",
            hint: "set the URL of a PostgreSQL role that may create roles and schemas",
        })?;
        let admin_url = check_url(
            &admin,
            &["postgres", "postgresql"],
            "postgres-admin-url",
            "ZORI_POSTGRES_ADMIN_URL",
        )?;
        let database = admin_url.path().trim_start_matches('/').to_owned();
        let database = if database.is_empty() {
            "postgres".to_owned()
        } else {
            database
        };
        let (host, port) = match non_empty(&self.postgres_tenant_host) {
            Some(h) => {
                let (host, port) = match h.rsplit_once(':') {
                    Some((host, port)) if !host.contains(']') || host.ends_with(']') => (
                        host.to_owned(),
                        port.parse::<u16>().map_err(|_| {
                            invalid(
                                "postgres-tenant-host",
                                "ZORI_POSTGRES_TENANT_HOST",
                                format!("{h:?} has a bad port"),
                            )
                        })?,
                    ),
                    _ => (h.clone(), 5432),
                };
                if host.is_empty() || host.contains('/') || host.contains('@') {
                    return Err(invalid(
                        "postgres-tenant-host",
                        "ZORI_POSTGRES_TENANT_HOST",
                        format!("{h:?} is not a host or host:port"),
                    ));
                }
                (host, port)
            }
            None => (
                admin_url.host_str().unwrap_or("127.0.0.1").to_owned(),
                admin_url.port().unwrap_or(5432),
            ),
        };

        let clickhouse_url = check_url(
            &self.clickhouse_url,
            &["http", "https"],
            "clickhouse-url",
            "ZORI_CLICKHOUSE_URL",
        )?;
        let tenant_ch = non_empty(&self.clickhouse_tenant_url)
            .unwrap_or_else(|| self.clickhouse_url.trim().to_owned());
        let tenant_ch_url = check_url(
            &tenant_ch,
            &["http", "https"],
            "clickhouse-tenant-url",
            "ZORI_CLICKHOUSE_TENANT_URL",
        )?;
        for (url, flag, env) in [
            (&clickhouse_url, "clickhouse-url", "ZORI_CLICKHOUSE_URL"),
            (
                &tenant_ch_url,
                "clickhouse-tenant-url",
                "ZORI_CLICKHOUSE_TENANT_URL",
            ),
        ] {
            if !url.username().is_empty() || url.password().is_some() {
                return Err(invalid(
                    flag,
                    env,
                    "put credentials in the user and password flags, not in the URL",
                ));
            }
        }
        let clickhouse_user_mode = match self.clickhouse_users.trim() {
            "auto" => ClickHouseUserMode::Auto,
            "per-tenant" => ClickHouseUserMode::PerTenant,
            "shared" => ClickHouseUserMode::Shared,
            other => {
                return Err(invalid(
                    "clickhouse-users",
                    "ZORI_CLICKHOUSE_USERS",
                    format!("{other:?} is not one of auto, per-tenant, shared"),
                ))
            }
        };
        check_url(
            &self.redis_url,
            &["redis", "rediss"],
            "redis-url",
            "ZORI_REDIS_URL",
        )?;
        let redis_admin_url = non_empty(&self.redis_admin_url);
        if let Some(url) = &redis_admin_url {
            check_url(
                url,
                &["redis", "rediss"],
                "redis-admin-url",
                "ZORI_REDIS_ADMIN_URL",
            )?;
        }

        let namespaces: Vec<String> = self
            .namespaces
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(bad) = namespaces.iter().find(|n| {
            n.len() > 63
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        }) {
            return Err(invalid(
                "namespaces",
                "ZORI_NAMESPACES",
                format!("{bad:?} is not a namespace name"),
            ));
        }
        let metrics_listen = self
            .metrics_listen
            .trim()
            .parse::<SocketAddr>()
            .map_err(|_| {
                invalid(
                    "metrics-listen",
                    "ZORI_METRICS_LISTEN",
                    format!("{:?} is not an address and port", self.metrics_listen),
                )
            })?;
        if self.lease_name.trim().is_empty() {
            return Err(invalid(
                "lease-name",
                "ZORI_LEASE_NAME",
                "must not be empty",
            ));
        }
        let lease_namespace = non_empty(&self.leader_election_namespace)
            .or_else(|| {
                std::env::var("POD_NAMESPACE")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| "default".to_owned());
        let identity = non_empty(&self.pod_name)
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| format!("zori-operator-{}", std::process::id()));

        let shared = ClickHouseUsers::Shared {
            user: non_empty(&self.clickhouse_tenant_user),
            password: non_empty(&self.clickhouse_tenant_password),
        };
        let clickhouse_topology = zori_service::clickhouse::Topology::new(
            self.clickhouse_cluster.as_deref(),
        )
        .map_err(|e| {
            invalid(
                "clickhouse-cluster",
                "ZORI_CLICKHOUSE_CLUSTER",
                e.to_string(),
            )
        })?;
        let platform = Platform {
            clickhouse_topology,
            image_repository: self
                .default_image_repository
                .trim()
                .trim_end_matches('/')
                .to_owned(),
            image_tag: non_empty(&self.default_image_tag)
                .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned()),
            nats_url: nats_tenant_url,
            redis_url: self.redis_url.trim().to_owned(),
            postgres: PostgresTarget {
                host,
                port,
                database,
                params: admin_url.query().map(str::to_owned),
            },
            clickhouse_url: tenant_ch.trim_end_matches('/').to_owned(),
            clickhouse_users: match clickhouse_user_mode {
                ClickHouseUserMode::PerTenant => ClickHouseUsers::PerTenant,
                ClickHouseUserMode::Shared | ClickHouseUserMode::Auto => shared,
            },
            cluster_domain: self.cluster_domain.trim().to_owned(),
            clickhouse_probe_error: None,
            require_isolation: self.require_isolation,
            redis_per_tenant: redis_admin_url.is_some(),
            nats_tenant_is_admin: non_empty(&self.nats_tenant_url)
                .is_none_or(|url| url == self.nats_url.trim()),
            nats_accounts,
        };
        Ok(RunSettings {
            nats_url: self.nats_url.trim().to_owned(),
            nats_auth,
            postgres_admin_url: admin,
            clickhouse_url: self.clickhouse_url.trim().trim_end_matches('/').to_owned(),
            clickhouse_admin_user: non_empty(&self.clickhouse_admin_user),
            clickhouse_admin_password: non_empty(&self.clickhouse_admin_password),
            clickhouse_user_mode,
            redis_admin_url,
            platform,
            namespaces,
            metrics_listen,
            lease_namespace,
            lease_name: self.lease_name.trim().to_owned(),
            identity,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<RunSettings, CliError> {
        let mut argv = vec![
            "zori-operator",
            "run",
            "--postgres-admin-url",
            "postgres://admin:pw@db:6543/zori?sslmode=require",
        ];
        argv.extend_from_slice(extra);
        let Command::Run(run) = Cli::try_parse_from(argv).expect("parses").command else {
            panic!("not run");
        };
        run.validate()
    }

    #[test]
    fn derives_the_tenant_connection_from_the_admin_url() {
        let s = args(&["--namespaces", "shops, blogs"]).expect("valid");
        assert_eq!(s.platform.postgres.host, "db");
        assert_eq!(s.platform.postgres.port, 6543);
        assert_eq!(s.platform.postgres.database, "zori");
        assert_eq!(
            s.platform.postgres.params.as_deref(),
            Some("sslmode=require")
        );
        assert_eq!(s.namespaces, vec!["shops", "blogs"]);
        assert_eq!(s.clickhouse_user_mode, ClickHouseUserMode::Auto);
        let s = args(&["--postgres-tenant-host", "pgbouncer:6432"]).expect("valid");
        assert_eq!(
            (s.platform.postgres.host.as_str(), s.platform.postgres.port),
            ("pgbouncer", 6432)
        );
    }

    #[test]
    fn takes_a_seed_list_of_nats_servers() {
        let seeds = "nats://nats-0:4222,nats://nats-1:4222,nats://nats-2:4222";
        let s = args(&["--nats-url", seeds]).expect("a seed list is valid");
        assert_eq!(s.nats_url, seeds);
        assert_eq!(s.platform.nats_url, seeds, "the tenants get the same list");
    }

    #[test]
    fn rejects_bad_flags_in_one_line() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--nats-url", "http://x"],
                "invalid --nats-url (ZORI_NATS_URL)",
            ),
            (
                &["--nats-url", "nats://a:4222,http://b:4222"],
                "invalid --nats-url (ZORI_NATS_URL): the scheme must be one of",
            ),
            (
                &["--clickhouse-url", "http://u:p@ch:8123"],
                "invalid --clickhouse-url (ZORI_CLICKHOUSE_URL): put credentials",
            ),
            (
                &["--clickhouse-users", "some"],
                "invalid --clickhouse-users (ZORI_CLICKHOUSE_USERS)",
            ),
            (
                &["--namespaces", "Bad_NS"],
                "invalid --namespaces (ZORI_NAMESPACES)",
            ),
            (
                &["--metrics-listen", "8080"],
                "invalid --metrics-listen (ZORI_METRICS_LISTEN)",
            ),
            (
                &["--postgres-tenant-host", "db:x"],
                "invalid --postgres-tenant-host (ZORI_POSTGRES_TENANT_HOST)",
            ),
            (
                &["--redis-url", "mysql://x"],
                "invalid --redis-url (ZORI_REDIS_URL)",
            ),
        ];
        for (extra, expected) in cases {
            let message = args(extra).expect_err("invalid").to_string();
            assert!(message.starts_with(expected), "{extra:?}: {message}");
            assert!(!message.contains('\n'));
        }
        let Command::Run(run) = Cli::try_parse_from(["zori-operator", "run"])
            .expect("parses")
            .command
        else {
            panic!("not run");
        };
        let mut run = run;
        run.postgres_admin_url = None;
        assert!(run
            .validate()
            .expect_err("missing")
            .to_string()
            .starts_with("missing --postgres-admin-url"));
    }

    #[test]
    fn isolation_flags() {
        let s = args(&[]).expect("valid");
        assert!(!s.platform.require_isolation);
        assert!(!s.platform.redis_per_tenant);
        assert!(s.redis_admin_url.is_none());
        assert!(s.platform.nats_tenant_is_admin);
        let s = args(&["--nats-tenant-url", "nats://tenants@nats:4222"]).expect("valid");
        assert!(!s.platform.nats_tenant_is_admin);
        let s = args(&[
            "--require-isolation",
            "--redis-admin-url",
            "redis://admin:pw@redis:6379",
        ])
        .expect("valid");
        assert!(s.platform.require_isolation);
        assert!(s.platform.redis_per_tenant);
        assert_eq!(
            s.platform.redis_url, "redis://127.0.0.1:6379",
            "tenants keep the tenant-facing host"
        );
        let message = args(&["--redis-admin-url", "http://x"])
            .expect_err("invalid")
            .to_string();
        assert!(
            message.starts_with("invalid --redis-admin-url (ZORI_REDIS_ADMIN_URL)"),
            "{message}"
        );
    }

    #[test]
    fn nats_accounts_need_a_signing_key_system_creds_and_an_account_key() {
        use crate::nats_auth::{self, KeyPair};
        let signing = KeyPair::new(KeyPairType::Operator).seed().expect("seed");
        let account = KeyPair::new(KeyPairType::Account);
        let user = KeyPair::new(KeyPairType::User);
        let jwt = nats_auth::user_jwt(
            &account,
            &user.public_key(),
            "sys",
            &nats_auth::UserPermissions::default(),
            Some(1),
            None,
        )
        .expect("jwt");
        let creds = nats_auth::creds(&jwt, &user.seed().expect("seed"));
        let key = "k".repeat(40);
        // A value starting with `-` goes in the `--flag=value` form.
        let system_creds = format!("--nats-system-creds={creds}");
        let s = args(&[
            "--nats-auth",
            "accounts",
            "--nats-signing-key",
            &signing,
            &system_creds,
            "--nats-account-key",
            &key,
        ])
        .expect("valid");
        assert!(s.platform.nats_accounts.is_some());
        assert_eq!(
            s.nats_auth.as_ref().map(|a| a.signing_key.as_str()),
            Some(signing.as_str())
        );
        assert!(
            !format!("{s:?}").contains(&signing),
            "the seed is never printed"
        );
        assert!(crate::isolation::shared_backends(&s.platform)
            .iter()
            .all(|b| !b.starts_with("NATS")));
        assert!(args(&[]).expect("valid").platform.nats_accounts.is_none());

        let account_seed = account.seed().expect("seed");
        let cases: &[(&[&str], &str)] = &[
            (&["--nats-auth", "accounts"], "missing --nats-signing-key"),
            (&["--nats-auth", "jwt"], "invalid --nats-auth (ZORI_NATS_AUTH)"),
            (
                &["--nats-auth", "accounts", "--nats-signing-key", &account_seed],
                "invalid --nats-signing-key (ZORI_NATS_SIGNING_KEY): invalid operator signing key: expected an operator seed",
            ),
            (
                &["--nats-auth", "accounts", "--nats-signing-key", &signing],
                "missing --nats-system-creds",
            ),
            (
                &["--nats-auth", "accounts", "--nats-signing-key", &signing, "--nats-system-creds", "/nonexistent/sys.creds"],
                "invalid --nats-system-creds (ZORI_NATS_SYSTEM_CREDS): neither credentials nor a readable file",
            ),
            (
                &["--nats-auth", "accounts", "--nats-signing-key", &signing, &system_creds],
                "missing --nats-account-key",
            ),
            (
                &["--nats-auth", "accounts", "--nats-signing-key", &signing, &system_creds, "--nats-account-key", "short"],
                "invalid --nats-account-key (ZORI_NATS_ACCOUNT_KEY)",
            ),
            (
                &["--nats-auth", "accounts", "--nats-signing-key", &signing, &system_creds, "--nats-account-key", &key, "--nats-tenant-url", "nats://u:p@nats:4222"],
                "invalid --nats-tenant-url (ZORI_NATS_TENANT_URL): with --nats-auth accounts",
            ),
        ];
        for (extra, expected) in cases {
            let message = args(extra).expect_err("invalid").to_string();
            assert!(message.starts_with(expected), "{extra:?}: {message}");
            assert!(!message.contains(&signing) && !message.contains(&account_seed));
        }
    }
}
