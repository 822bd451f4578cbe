//! Several gateway nodes at once, as a deployment behind a load balancer runs them: in-process
//! gateways ([`Nodes`]) that share one Redis or one Redis Cluster (together, a [`Deployment`]), or
//! the `switchboard` binary as a process of its own ([`NodeProcess`]) for tests that must
//! `kill -9` a node.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use switchboard::Config;

use crate::process::{Supervised, still_running};
use crate::redis::{RedisCluster, RedisOptions, RedisServer};
use crate::{Endpoint, Gateway};

/// One in-process node: its settings and port outlive a stop, so that it can come back.
#[derive(Debug)]
struct Node {
    config: Config,
    addr: SocketAddr,
    gateway: Option<Gateway>,
}

/// In-process gateways, each on a port of its own; stopping one leaves the others serving.
/// Dropping them shuts them all down.
#[derive(Debug)]
pub struct Nodes {
    nodes: Vec<Node>,
}

impl Nodes {
    /// Starts `count` gateways, each with `Config::default()` changed by `configure` (called once
    /// per node, in order): that is where the nodes are given their Redis.
    pub async fn start(count: usize, mut configure: impl FnMut(&mut Config)) -> Nodes {
        let mut nodes = Vec::with_capacity(count);
        for _ in 0..count {
            let mut config = Config::default();
            configure(&mut config);
            let gateway = Gateway::start(config.clone()).await;
            nodes.push(Node {
                config,
                addr: gateway.addr(),
                gateway: Some(gateway),
            });
        }
        Nodes { nodes }
    }

    /// `count` nodes sharing `redis` (`--redis`), otherwise with the default settings.
    pub async fn on_redis(redis: &RedisServer, count: usize) -> Nodes {
        let url = redis.url();
        Nodes::start(count, |config| config.redis = Some(url.clone())).await
    }

    /// `count` nodes sharing `cluster` (`--redis-cluster` with every node as a seed), otherwise
    /// with the default settings.
    pub async fn on_cluster(cluster: &RedisCluster, count: usize) -> Nodes {
        let urls = cluster.urls();
        Nodes::start(count, |config| config.redis_cluster = urls.clone()).await
    }

    /// How many nodes there are, running or stopped.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `index`, for its URLs (it is an [`Endpoint`]). Panics if it is stopped.
    pub fn node(&self, index: usize) -> &Gateway {
        self.nodes[index]
            .gateway
            .as_ref()
            .unwrap_or_else(|| panic!("node {index} is stopped"))
    }

    /// Node `index`'s address, whether it is running or not.
    pub fn addr(&self, index: usize) -> SocketAddr {
        self.nodes[index].addr
    }

    /// Every node's address, running or not (what a proxy in front of them is given).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|node| node.addr).collect()
    }

    /// The settings node `index` runs with.
    pub fn config(&self, index: usize) -> &Config {
        &self.nodes[index].config
    }

    pub fn is_running(&self, index: usize) -> bool {
        self.nodes[index].gateway.is_some()
    }

    /// The running nodes.
    pub fn running(&self) -> impl Iterator<Item = &Gateway> {
        self.nodes.iter().filter_map(|node| node.gateway.as_ref())
    }

    /// Shuts node `index` down as SIGTERM would (its clients are told, its streams end) and
    /// waits until it has; see [`Gateway::shutdown`]. The others go on. Returns how long it took.
    pub async fn stop(&mut self, index: usize) -> Duration {
        let gateway = self.nodes[index]
            .gateway
            .take()
            .unwrap_or_else(|| panic!("node {index} is already stopped"));
        gateway.shutdown().await
    }

    /// Starts stopped node `index` again, with the same settings on the same port.
    pub async fn restart(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        assert!(node.gateway.is_none(), "node {index} is running");
        node.gateway = Some(Gateway::start_on(node.addr, node.config.clone()).await);
    }
}

/// Gateway nodes and the Redis (a [`RedisServer`] or a [`RedisCluster`]) they share, started
/// together and dropped together, the nodes first.
#[derive(Debug)]
pub struct Deployment<R> {
    pub nodes: Nodes,
    pub redis: R,
}

impl Deployment<RedisServer> {
    /// `count` nodes with the default settings on a Redis without persistence.
    pub async fn on_redis(count: usize) -> Deployment<RedisServer> {
        Deployment::on_redis_with(RedisOptions::new(), count, |_| {}).await
    }

    /// `count` nodes on a Redis started with `options`, each node's settings changed by
    /// `configure` (after its Redis is set).
    pub async fn on_redis_with(
        options: RedisOptions,
        count: usize,
        mut configure: impl FnMut(&mut Config),
    ) -> Deployment<RedisServer> {
        let redis = RedisServer::start(options).await;
        let url = redis.url();
        let nodes = Nodes::start(count, |config| {
            config.redis = Some(url.clone());
            configure(config);
        })
        .await;
        Deployment { nodes, redis }
    }
}

impl Deployment<RedisCluster> {
    /// `count` nodes with the default settings on a Redis Cluster of 3 masters without
    /// persistence.
    pub async fn on_cluster(count: usize) -> Deployment<RedisCluster> {
        let redis = RedisCluster::start(3).await;
        let nodes = Nodes::on_cluster(&redis, count).await;
        Deployment { nodes, redis }
    }
}

impl<R> Deployment<R> {
    /// Node `index`. Panics if it is stopped.
    pub fn node(&self, index: usize) -> &Gateway {
        self.nodes.node(index)
    }

    /// Every running node, as the endpoints clients connect to.
    pub fn endpoints(&self) -> Vec<&dyn Endpoint> {
        self.nodes
            .running()
            .map(|node| node as &dyn Endpoint)
            .collect()
    }
}

/// The path of the `switchboard` binary built for these tests. Use it in a test file (not in
/// this library): cargo tells only a package's own tests where its binaries are.
///
/// It is `crates/gateway/src/main.rs` built as `switchboard-node`, a binary of this package (see
/// tests/Cargo.toml), so that cargo builds it, up to date, before these tests.
#[macro_export]
macro_rules! switchboard_bin {
    () => {
        env!("CARGO_BIN_EXE_switchboard-node")
    };
}

/// How long a node process gets to print its startup line.
const PROCESS_START_LIMIT: Duration = Duration::from_secs(20);

/// What the binary prints on stdout once it listens.
const LISTENING: &str = "switchboard listening on http://";

static PROCESSES: AtomicUsize = AtomicUsize::new(0);

/// `switchboard serve` as a process of its own on a free loopback port, killed when dropped (or
/// when the test process dies). Its stderr (the log) goes to a file, printed if the test fails.
#[derive(Debug)]
pub struct NodeProcess {
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Port 0 until the first start has said which port it got.
    addr: SocketAddr,
    dir: PathBuf,
    process: Option<Supervised>,
}

impl NodeProcess {
    /// Runs `BIN serve --listen 127.0.0.1:0 ARGS…` (`bin` is [`switchboard_bin!()`]) and waits for
    /// its startup line, which names the port. `RUST_LOG` is inherited, `info` if unset.
    pub async fn start(bin: impl AsRef<Path>, args: &[&str]) -> NodeProcess {
        NodeProcess::start_with_env(bin, args, &[]).await
    }

    /// [`start`](Self::start) with extra environment variables (`SWITCHBOARD_*`, `RUST_LOG`).
    pub async fn start_with_env(
        bin: impl AsRef<Path>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> NodeProcess {
        let dir = std::env::temp_dir().join(format!(
            "switchboard-node-{}-{}",
            std::process::id(),
            PROCESSES.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let mut node = NodeProcess {
            bin: bin.as_ref().to_owned(),
            args: args.iter().map(|&arg| arg.to_owned()).collect(),
            env: env
                .iter()
                .map(|&(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
            process: None,
        };
        node.run().await;
        node
    }

    /// Kills the node with SIGKILL (no shutdown at all: its connections just break) and waits
    /// until it has exited. Does nothing if it is not running.
    pub fn kill9(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill9();
        }
    }

    /// Sends SIGTERM: the node shuts down gracefully; see [`exit_within`](Self::exit_within).
    pub fn sigterm(&self) {
        self.process
            .as_ref()
            .expect("the node is running")
            .signal("TERM");
    }

    /// Waits up to `limit` for the node to exit and returns how it did; panics if it is still
    /// running then.
    pub async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        let process = self.process.as_mut().expect("the node is running");
        let status = process
            .exit_within(limit)
            .await
            .unwrap_or_else(|| panic!("the node was still running after {limit:?}"));
        self.process = None;
        status
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        still_running(&mut self.process)
    }

    /// Kills the node if it is running (SIGKILL) and starts it again with the same arguments on
    /// the same port. Panics if the port was taken in the meantime.
    pub async fn restart(&mut self) {
        self.kill9();
        self.run().await;
    }

    /// What the node has logged so far (its stderr, over all its starts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// Starts the process on `self.addr` and reads the port from its startup line.
    async fn run(&mut self) {
        let stdout_path = self.dir.join("stdout.log");
        // Created afresh: the startup line to wait for is the one of this start.
        let stdout = std::fs::File::create(&stdout_path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", stdout_path.display()));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("stderr.log"))
            .unwrap_or_else(|e| panic!("cannot create the log in {}: {e}", self.dir.display()));
        let mut command = Command::new(&self.bin);
        command
            .arg("serve")
            .arg("--listen")
            .arg(self.addr.to_string())
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let process = Supervised::spawn("switchboard", &mut command)
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));
        self.process = Some(process);

        // Rust's stdout is line-buffered, even to a file: the line is there once it is printed.
        let started = Instant::now();
        loop {
            let printed = std::fs::read_to_string(&stdout_path).unwrap_or_default();
            // A whole line only: it may be read while being written.
            let startup_line = printed
                .split_inclusive('\n')
                .find(|line| line.starts_with(LISTENING) && line.ends_with('\n'));
            if let Some(line) = startup_line {
                self.addr = line[LISTENING.len()..]
                    .trim()
                    .parse()
                    .unwrap_or_else(|e| panic!("startup line {line:?}: {e}"));
                return;
            }
            let process = self.process.as_mut().expect("the node was started");
            if let Some(status) = process.try_wait() {
                self.process = None;
                panic!(
                    "{} exited ({status}) before listening:\n{}",
                    self.bin.display(),
                    self.log()
                );
            }
            assert!(
                started.elapsed() < PROCESS_START_LIMIT,
                "{} printed no startup line within {PROCESS_START_LIMIT:?}:\n{}",
                self.bin.display(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The node's own address: clients talk to it directly.
impl Endpoint for NodeProcess {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill9();
        let what = format!("switchboard node {}", self.addr);
        crate::process::leave_behind(&what, &self.dir, || self.log());
    }
}
