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
    io::{copy_bidirectional, AsyncReadExt, AsyncWriteExt},
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
        Self::start_with_latency(target, Duration::ZERO).await
    }

    /// A proxy that holds everything the server sends for `latency` before passing it on (what
    /// the client sends goes through at once): a server that is far away. A request the
    /// server has acted on stays unanswered that long, so a client killed meanwhile never
    /// learns that it succeeded.
    pub async fn start_with_latency(target: SocketAddr, latency: Duration) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0u64);
        let task = tokio::spawn(accept(
            listener,
            target,
            up.clone(),
            generation.clone(),
            latency,
        ));
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
    latency: Duration,
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
            if latency.is_zero() {
                tokio::select! {
                    _ = copy_bidirectional(&mut client, &mut server) => {}
                    _ = cut.changed() => {}
                }
            } else {
                tokio::select! {
                    () = delayed_pipe(client, server, latency) => {}
                    _ = cut.changed() => {}
                }
            }
        });
    }
}

/// Client to server at once; server to client each chunk `latency` after it arrived. Ends
/// when either side closes (what was still held back is dropped).
async fn delayed_pipe(client: TcpStream, server: TcpStream, latency: Duration) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let (held, mut due) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let upstream = tokio::io::copy(&mut client_read, &mut server_write);
    let read_down = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(n) = server_read.read(&mut buffer).await {
            if n == 0
                || held
                    .send((tokio::time::Instant::now() + latency, buffer[..n].to_vec()))
                    .is_err()
            {
                break;
            }
        }
    };
    let write_down = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if client_write.write_all(&chunk).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = upstream => {}
        _ = async { tokio::join!(read_down, write_down) } => {}
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

fn log_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-logs");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn log_file(name: &str, port: u16) -> std::fs::File {
    std::fs::File::create(log_dir().join(format!("{name}-{port}.log"))).unwrap()
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

/// Waits until ZooKeeper on `port` serves requests, not only accepts connections: its `srvr`
/// command names its mode only then. ClickHouse 18.16 started against a ZooKeeper that is not
/// serving yet can crash (a segmentation fault in `zkutil::ZooKeeper::createImpl`, 27 ms after
/// "Ready for connections", seen in target/e2e-logs).
async fn wait_for_zookeeper(port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await {
            let mut answer = String::new();
            if stream.write_all(b"srvr").await.is_ok()
                && stream.read_to_string(&mut answer).await.is_ok()
            {
                if answer.contains("Mode:") {
                    return;
                }
                last = answer;
            }
        }
        assert!(
            Instant::now() < deadline,
            "zookeeper on port {port} is not serving after {timeout:?}: {last:?}; see target/e2e-logs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
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

/// One node of a [`NatsCluster`].
struct ClusterNode {
    name: String,
    port: u16,
    child: Option<Owned>,
}

/// Three `nats-server` processes with JetStream forming one cluster on loopback (own client
/// and route ports, own store directories), as a three-node NATS deployment does.
pub struct NatsCluster {
    nodes: Vec<ClusterNode>,
    dir: PathBuf,
}

impl NatsCluster {
    /// Starts the three nodes and waits until JetStream has a meta leader (a stream with
    /// three replicas can be created).
    pub async fn start() -> NatsCluster {
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let dir = std::env::temp_dir().join(format!(
            "zori-e2e-nats-cluster-{}-{}",
            ports[0].0,
            std::process::id()
        ));
        let routes = ports
            .iter()
            .map(|(_, route)| format!("nats-route://127.0.0.1:{route}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for (i, (port, route)) in ports.iter().enumerate() {
            let name = format!("zori-n{i}");
            let log = log_file(&format!("nats-cluster-{name}"), *port);
            let child = Command::new("nats-server")
                .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
                .args(["-n", &name, "--cluster_name", "zori-e2e"])
                .args(["--cluster", &format!("nats://127.0.0.1:{route}")])
                .args(["--routes", &routes])
                .arg("-sd")
                .arg(dir.join(&name))
                .stdout(Stdio::from(log.try_clone().unwrap()))
                .stderr(Stdio::from(log))
                .spawn()
                .expect("nats-server is installed (scripts/services.sh)");
            nodes.push(ClusterNode {
                name,
                port: *port,
                child: Some(Owned(child)),
            });
        }
        let cluster = NatsCluster { nodes, dir };
        for node in &cluster.nodes {
            wait_for_port(node.port, "nats-server", Duration::from_secs(10)).await;
        }
        cluster.wait_for_jetstream(Duration::from_secs(60)).await;
        cluster
    }

    /// The seed list of all three nodes, as the binaries take it.
    pub fn seed_list(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node names, in order (`zori-n0` …).
    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// SIGKILLs the node called `name`; its store stays.
    pub fn kill(&mut self, name: &str) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"));
        node.child = None;
    }

    async fn wait_for_jetstream(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let client = async_nats::connect(self.seed_list().split(',').collect::<Vec<_>>())
            .await
            .expect("connect to the cluster");
        let js = async_nats::jetstream::new(client);
        let probe = format!("ZORI_PROBE_{}", self.nodes[0].port);
        loop {
            let created = js
                .create_stream(async_nats::jetstream::stream::Config {
                    name: probe.clone(),
                    subjects: vec![format!("zori-probe.{}", self.nodes[0].port)],
                    num_replicas: 3,
                    ..Default::default()
                })
                .await;
            match created {
                Ok(_) => {
                    let _ = js.delete_stream(&probe).await;
                    return;
                }
                Err(error) => assert!(
                    Instant::now() < deadline,
                    "the NATS cluster has no JetStream meta leader after {timeout:?}: {error}; \
                     see target/e2e-logs"
                ),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.child = None;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A one-node ClickHouse cluster owned by a test: its own ZooKeeper (Debian's `zookeeper`
/// package, run with `java`) and its own `clickhouse-server`, on free ports and in a temporary
/// directory, with `remote_servers` naming the cluster [`ClickHouseCluster::NAME`] (one shard,
/// one replica: itself), the `{shard}` / `{replica}` macros and a distributed DDL queue: what
/// `ON CLUSTER` DDL and `Replicated*` engines need.
pub struct ClickHouseCluster {
    pub http_port: u16,
    dir: PathBuf,
    server: Option<Owned>,
    zookeeper: Option<Owned>,
}

impl ClickHouseCluster {
    pub const NAME: &'static str = "zori_test";

    pub async fn start() -> ClickHouseCluster {
        let (zk_port, http_port, tcp_port, interserver_port) =
            (free_port(), free_port(), free_port(), free_port());
        let dir = std::env::temp_dir().join(format!(
            "zori-e2e-ch-cluster-{http_port}-{}",
            std::process::id()
        ));
        for sub in ["zk", "data", "tmp", "logs", "user_files"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let path = |sub: &str| dir.join(sub).display().to_string();
        std::fs::write(
            dir.join("zoo.cfg"),
            format!(
                "tickTime=2000\ndataDir={}\nclientPort={zk_port}\nclientPortAddress=127.0.0.1\n\
                 admin.enableServer=false\n",
                path("zk")
            ),
        )
        .unwrap();
        let log = log_file("zookeeper", zk_port);
        let zookeeper = Command::new("java")
            .args(["-Xmx256m", "-cp", "/usr/share/java/*:/etc/zookeeper/conf"])
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(dir.join("zoo.cfg"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("java and zookeeper are installed (scripts/services.sh)");
        let zookeeper = Owned(zookeeper);
        wait_for_zookeeper(zk_port, Duration::from_secs(60)).await;

        std::fs::write(
            dir.join("users.xml"),
            "<?xml version=\"1.0\"?><yandex><profiles><default></default></profiles>\
             <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip>\
             </networks><profile>default</profile><quota>default</quota></default></users>\
             <quotas><default></default></quotas></yandex>",
        )
        .unwrap();
        std::fs::write(
            dir.join("config.xml"),
            format!(
                "<?xml version=\"1.0\"?><yandex>\
                 <logger><level>information</level><log>{logs}/clickhouse-cluster-{http_port}-server.log</log>\
                 <errorlog>{logs}/clickhouse-cluster-{http_port}-error.log</errorlog></logger>\
                 <http_port>{http_port}</http_port><tcp_port>{tcp_port}</tcp_port>\
                 <interserver_http_port>{interserver_port}</interserver_http_port>\
                 <interserver_http_host>127.0.0.1</interserver_http_host>\
                 <listen_host>127.0.0.1</listen_host>\
                 <path>{data}/</path><tmp_path>{tmp}/</tmp_path>\
                 <user_files_path>{user_files}/</user_files_path>\
                 <users_config>{users}</users_config>\
                 <default_profile>default</default_profile><default_database>default</default_database>\
                 <mark_cache_size>268435456</mark_cache_size>\
                 <remote_servers><{name}><shard><internal_replication>true</internal_replication>\
                 <replica><host>127.0.0.1</host><port>{tcp_port}</port></replica></shard></{name}>\
                 </remote_servers>\
                 <zookeeper><node><host>127.0.0.1</host><port>{zk_port}</port></node></zookeeper>\
                 <macros><shard>01</shard><replica>r1</replica></macros>\
                 <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>\
                 </yandex>",
                // Outside the temporary directory, so they outlive a failed test.
                logs = log_dir().display(),
                data = path("data"),
                tmp = path("tmp"),
                user_files = path("user_files"),
                users = dir.join("users.xml").display(),
                name = Self::NAME,
            ),
        )
        .unwrap();
        let mut cluster = ClickHouseCluster {
            server: Some(Self::spawn_server(&dir, http_port)),
            http_port,
            dir,
            zookeeper: Some(zookeeper),
        };
        cluster.wait_until_ready(Duration::from_secs(60)).await;
        cluster
    }

    fn spawn_server(dir: &std::path::Path, http_port: u16) -> Owned {
        let log = log_file("clickhouse-cluster", http_port);
        let server = Command::new("clickhouse-server")
            .arg(format!(
                "--config-file={}",
                dir.join("config.xml").display()
            ))
            .current_dir(dir)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("clickhouse-server is installed (scripts/services.sh)");
        Owned(server)
    }

    /// Waits until the server runs `ON CLUSTER` DDL (its ZooKeeper session and distributed DDL
    /// worker are up): an open port alone is not such a server yet.
    /// ClickHouse 18.16 sometimes crashes right after start (a segmentation fault in
    /// `zkutil::ZooKeeper::createImpl` in its DDL worker, seen in target/e2e-logs): the server is
    /// then started again.
    async fn wait_until_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let ddl = format!(
            "CREATE DATABASE IF NOT EXISTS zori_ready ON CLUSTER {}",
            Self::NAME
        );
        while let Err(last) = self.try_query(&ddl).await {
            let exited = self
                .server
                .as_mut()
                .is_some_and(|s| matches!(s.0.try_wait(), Ok(Some(_))));
            if exited {
                self.server = Some(Self::spawn_server(&self.dir, self.http_port));
            }
            assert!(
                Instant::now() < deadline,
                "clickhouse-server on port {} is not ready after {timeout:?}: {last}; \
                 see target/e2e-logs",
                self.http_port
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Runs `sql` on the server; panics unless it answers 200.
    pub async fn query(&self, sql: &str) -> String {
        self.try_query(sql)
            .await
            .unwrap_or_else(|error| panic!("{sql} → {error}"))
    }

    /// Runs `sql` on the server: its answer, or why there is none (no connection, or the
    /// status and body of an answer other than 200).
    async fn try_query(&self, sql: &str) -> Result<String, String> {
        let response = reqwest::Client::new()
            .post(self.url())
            .body(sql.to_owned())
            .send()
            .await
            .map_err(|e| format!("the test's clickhouse-server does not answer: {e}"))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!("{status}: {body}"))
        }
    }
}

impl Drop for ClickHouseCluster {
    fn drop(&mut self) {
        self.server = None;
        self.zookeeper = None;
        let _ = std::fs::remove_dir_all(&self.dir);
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
    use rand::RngExt;
    rand::rng().random()
}

impl Drop for NatsOperatorServer {
    fn drop(&mut self) {
        self.child = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
