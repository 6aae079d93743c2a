//! Faults on demand, without touching the machine's shared services: a TCP proxy that can be
//! cut and restored (between a binary and ClickHouse or PostgreSQL), and a test's own
//! `nats-server` and `redis-server` on their own ports and directories, to stop and start.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    sync::watch,
};

use crate::free_port;

/// A TCP proxy on 127.0.0.1 in front of `target`. While cut, every connection through it is
/// closed and new ones are closed as soon as they are accepted: the client sees the server go
/// away, the way a crashed or unreachable database looks.
pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    /// Bumped on every cut: connections opened before it end.
    generation: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0u64);
        let task = tokio::spawn(accept(listener, target, up.clone(), generation.clone()));
        Proxy {
            port,
            up,
            generation,
            task,
        }
    }

    /// Closes every open connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.generation.send_modify(|g| *g += 1);
    }
}

async fn accept(
    listener: TcpListener,
    target: SocketAddr,
    up: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        if !up.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let mut cut = generation.subscribe();
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(target).await else {
                return;
            };
            tokio::select! {
                _ = copy_bidirectional(&mut client, &mut server) => {}
                _ = cut.changed() => {}
            }
        });
    }
}

/// A child process that is killed when dropped.
struct Owned(Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn log_file(name: &str, port: u16) -> std::fs::File {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-logs");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::File::create(dir.join(format!("{name}-{port}.log"))).unwrap()
}

async fn wait_for_port(port: u16, what: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} on port {port} did not start within {timeout:?}; see target/e2e-logs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The test's own `nats-server` with JetStream, on its own port and store directory (which
/// survives [`NatsServer::kill`], as a restarted server's disk does).
pub struct NatsServer {
    pub port: u16,
    store: PathBuf,
    child: Option<Owned>,
}

impl NatsServer {
    pub async fn start() -> NatsServer {
        let port = free_port();
        let store =
            std::env::temp_dir().join(format!("zori-e2e-nats-{port}-{}", std::process::id()));
        let mut server = NatsServer {
            port,
            store,
            child: None,
        };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no goodbye to the clients, no clean shutdown of the store.
    pub fn kill(&mut self) {
        self.child = None;
    }

    /// Starts the server (again) on the same port and store.
    pub async fn restart(&mut self) {
        self.child = None;
        let log = log_file("nats-server", self.port);
        let child = Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("nats-server is installed (scripts/services.sh)");
        self.child = Some(Owned(child));
        wait_for_port(self.port, "nats-server", Duration::from_secs(10)).await;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.child = None;
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// The test's own `redis-server` on its own port, without persistence.
pub struct RedisServer {
    pub port: u16,
    child: Option<Owned>,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            child: None,
        };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        self.child = None;
    }

    pub async fn restart(&mut self) {
        self.child = None;
        let log = log_file("redis-server", self.port);
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("redis-server is installed (scripts/services.sh)");
        self.child = Some(Owned(child));
        wait_for_port(self.port, "redis-server", Duration::from_secs(10)).await;
    }
}

/// The test's own `nats-server` in operator mode (decentralised JWT auth) with a full account
/// resolver that allows deletes, as a platform team runs NATS for `--nats-auth accounts`: a
/// fresh operator with one signing key, a system account and a system user limited to the
/// claims requests, and a random account key. The fields are what the Zori operator is given.
pub struct NatsOperatorServer {
    pub port: u16,
    /// Seed of the operator signing key (`--nats-signing-key`).
    pub signing_key: String,
    /// `.creds` of the system user (`--nats-system-creds`).
    pub system_creds: String,
    /// `--nats-account-key`.
    pub account_key: String,
    dir: PathBuf,
    child: Option<Owned>,
}

impl NatsOperatorServer {
    pub async fn start() -> NatsOperatorServer {
        Self::start_with(true).await
    }

    /// With `allow_delete: false`, the resolver refuses to delete accounts.
    pub async fn start_with(allow_delete: bool) -> NatsOperatorServer {
        use zori_operator::nats_auth::{self, KeyPair, KeyPairType, Permission, UserPermissions};
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "zori-e2e-nats-operator-{port}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(dir.join("jwt")).unwrap();
        let now = nats_auth::unix_now();
        let operator = KeyPair::new(KeyPairType::Operator);
        let signing = KeyPair::new(KeyPairType::Operator);
        let system = KeyPair::new(KeyPairType::Account);
        let operator_jwt = nats_auth::operator_jwt(
            &operator,
            "zori-test",
            &[signing.public_key()],
            &system.public_key(),
            now,
        )
        .unwrap();
        let system_jwt =
            nats_auth::system_account_jwt(&signing, &system.public_key(), now).unwrap();
        let system_user = KeyPair::new(KeyPairType::User);
        let system_user_jwt = nats_auth::user_jwt(
            &system,
            &system_user.public_key(),
            "zori-operator",
            &UserPermissions {
                publish: Permission {
                    allow: vec![
                        "$SYS.REQ.CLAIMS.UPDATE".to_owned(),
                        "$SYS.REQ.CLAIMS.DELETE".to_owned(),
                    ],
                    deny: Vec::new(),
                },
                subscribe: Permission {
                    allow: vec!["_INBOX.>".to_owned()],
                    deny: Vec::new(),
                },
            },
            Some(now),
            None,
        )
        .unwrap();
        let config = format!(
            "listen: 127.0.0.1:{port}\n\
             jetstream: {{ store_dir: {store:?} }}\n\
             operator: {operator_jwt}\n\
             system_account: {sys}\n\
             resolver: {{ type: full, dir: {jwt:?}, allow_delete: {allow_delete}, interval: \"2m\" }}\n\
             resolver_preload: {{ {sys}: {system_jwt} }}\n",
            store = dir.join("js").display().to_string(),
            jwt = dir.join("jwt").display().to_string(),
            sys = system.public_key(),
        );
        let config_path = dir.join("nats.conf");
        std::fs::write(&config_path, config).unwrap();
        let log = log_file("nats-server-operator", port);
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&config_path)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("nats-server is installed (scripts/services.sh)");
        let child = Owned(child);
        wait_for_port(port, "nats-server (operator mode)", Duration::from_secs(10)).await;
        NatsOperatorServer {
            port,
            signing_key: signing.seed().unwrap(),
            system_creds: nats_auth::creds(&system_user_jwt, &system_user.seed().unwrap()),
            account_key: format!("{:x}{:x}", rand_u128(), rand_u128()),
            dir,
            child: Some(child),
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

fn rand_u128() -> u128 {
    use rand::Rng;
    rand::rng().random()
}

impl Drop for NatsOperatorServer {
    fn drop(&mut self) {
        self.child = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
