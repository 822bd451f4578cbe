//! Real Redis servers for the multi-node tests: a single instance, or a Redis Cluster of
//! masters, each a `redis-server` on a free loopback port in a temporary directory of its own.
//!
//! `redis-server` and `redis-cli` come from Debian's `redis-server` package (installed by
//! `scripts/install-test-deps.sh`); `$REDIS_SERVER` and `$REDIS_CLI` point at others (Valkey's,
//! say). Redis 7 or newer is required: the cluster needs `cluster-port`, the gateway sharded
//! pub/sub. Tests never use port 6379, where a system Redis may be running.
//!
//! Every server is killed when dropped (and when the test process dies, see
//! [`process`](crate::process)); a failing test prints the server's log.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::process::{Supervised, free_port, output_within, still_running};

/// How long a server gets to start answering (loading an append-only file included), and a
/// cluster to agree that it is up. Generous: the test machines are small and shared.
pub const START_LIMIT: Duration = Duration::from_secs(20);

/// How long one `redis-cli` command may take.
const CLI_LIMIT: Duration = Duration::from_secs(10);

/// What Redis logs once it listens and has loaded its data (7.0 ends the line there, 7.2 adds
/// the kinds of listener).
const READY_LINE: &str = "Ready to accept connections";

/// The `redis-server` binary: `$REDIS_SERVER`, else the one on `PATH`.
pub fn redis_server_bin() -> OsString {
    std::env::var_os("REDIS_SERVER").unwrap_or_else(|| "redis-server".into())
}

/// The `redis-cli` binary: `$REDIS_CLI`, else the one on `PATH`.
pub fn redis_cli_bin() -> OsString {
    std::env::var_os("REDIS_CLI").unwrap_or_else(|| "redis-cli".into())
}

/// Panics with what to install unless `redis-server` is there and is version 7 or newer, so that
/// a machine without it fails these tests instead of skipping them.
fn check_redis_version() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| {
        let bin = redis_server_bin();
        let output = Command::new(&bin).arg("--version").output().map_err(|e| {
            format!(
                "cannot run {bin:?} ({e}): install Debian's `redis-server` package \
                 (scripts/install-test-deps.sh) or set REDIS_SERVER to the binary"
            )
        })?;
        // "Redis server v=7.0.15 sha=…" (Valkey: "Valkey server v=8.0.1 …").
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let major = text
            .split_whitespace()
            .find_map(|word| word.strip_prefix("v="))
            .and_then(|version| version.split('.').next())
            .and_then(|major| major.parse::<u32>().ok());
        match major {
            Some(major) if major >= 7 => Ok(()),
            _ => Err(format!(
                "{bin:?} --version says {text:?}: the tests need Redis 7 or newer"
            )),
        }
    });
    if let Err(e) = checked {
        panic!("{e}");
    }
}

/// How to run a [`RedisServer`]: on top of what it always gets (`--bind 127.0.0.1`,
/// `--protected-mode no`, `--save ''`, `--daemonize no`, its own port, directory and log file).
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    appendonly: bool,
    cluster: bool,
    args: Vec<String>,
}

impl RedisOptions {
    /// No persistence at all: a restart loses everything.
    pub fn new() -> RedisOptions {
        RedisOptions::default()
    }

    /// `--appendonly yes`: [`RedisServer::restart`] brings back what was written (up to the last
    /// fsync; add `.config("appendfsync", "always")` for every write).
    pub fn appendonly(mut self, on: bool) -> RedisOptions {
        self.appendonly = on;
        self
    }

    /// `--NAME VALUE`, after the harness's own settings (so it wins over them). A value with
    /// spaces is one argument: `.config("client-output-buffer-limit", "pubsub 1mb 1mb 0")`.
    pub fn config(mut self, name: &str, value: &str) -> RedisOptions {
        self.args.push(format!("--{name}"));
        self.args.push(value.to_owned());
        self
    }

    /// A cluster node (`cluster-enabled yes`, with its bus on a free port of its own).
    fn cluster_node(mut self) -> RedisOptions {
        self.cluster = true;
        self
    }
}

static STARTED: AtomicUsize = AtomicUsize::new(0);

/// A `redis-server` on `127.0.0.1:<free port>`, killed when dropped.
///
/// Its directory holds `data/` (Redis's `dir`: the append-only files, a cluster node's
/// `nodes.conf`) and `redis.log`, which every start appends to.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    /// A cluster node's bus port, fixed for its life like `port`.
    bus_port: Option<u16>,
    dir: PathBuf,
    options: RedisOptions,
    process: Option<Supervised>,
}

impl RedisServer {
    /// Starts a server and waits until it answers `PING`. Retries on another port if the one it
    /// picked was taken in the meantime.
    pub async fn start(options: RedisOptions) -> RedisServer {
        check_redis_version();
        let mut last_error = String::new();
        for _ in 0..5 {
            let dir = std::env::temp_dir().join(format!(
                "switchboard-redis-{}-{}",
                std::process::id(),
                STARTED.fetch_add(1, Ordering::Relaxed)
            ));
            // A directory left by an earlier test process that had the same id.
            let _ = std::fs::remove_dir_all(&dir);
            create_dir(&dir.join("data"));
            let mut server = RedisServer {
                port: free_port(),
                bus_port: options.cluster.then(free_port),
                dir,
                options: options.clone(),
                process: None,
            };
            match server.run().await {
                Ok(()) => return server,
                Err(e) if e.contains("Address already in use") => last_error = e,
                Err(e) => panic!("redis-server did not start: {e}"),
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the process is running (it may have been killed, or have died).
    pub fn is_running(&mut self) -> bool {
        still_running(&mut self.process)
    }

    /// Kills the server with SIGKILL (no chance to write anything more) and waits until it has
    /// exited; its port then refuses connections. Does nothing if it is not running.
    pub fn kill9(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill9();
        }
    }

    /// Kills the server if it is running (SIGKILL) and starts it again on the same port with the
    /// same directory, so that what its append-only file holds comes back; waits until it
    /// answers. Panics if the port was taken in the meantime.
    pub async fn restart(&mut self) {
        self.kill9();
        if let Err(e) = self.run().await {
            panic!("redis-server did not restart on port {}: {e}", self.port);
        }
    }

    /// As [`restart`](Self::restart), but with its data directory emptied first: a Redis that
    /// lost everything (or never persisted anything). A cluster node comes back as a new node
    /// outside the cluster.
    pub async fn restart_empty(&mut self) {
        self.kill9();
        let data = self.dir.join("data");
        std::fs::remove_dir_all(&data)
            .unwrap_or_else(|e| panic!("cannot empty {}: {e}", data.display()));
        create_dir(&data);
        if let Err(e) = self.run().await {
            panic!("redis-server did not restart on port {}: {e}", self.port);
        }
    }

    /// Runs `redis-cli -p PORT ARGS…` and returns what it printed, without the final newline.
    /// Replies come as `redis-cli` prints them when not on a terminal: `OK`, a bare value, an
    /// empty string for nil, one line per element of an array, `ERR …` for an error (which does
    /// not make it fail). Panics if `redis-cli` fails (cannot connect, say) or takes too long.
    pub async fn cli(&self, args: &[&str]) -> String {
        match self.try_cli(args).await {
            Ok(output) => output,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`cli`](Self::cli), with a failure of `redis-cli` (the server is down, say) as an error.
    pub async fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        cli(self.port, &[], args).await
    }

    /// The server's log so far (all of its starts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Its directory (data and log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    /// Starts the process and waits until it is ready, or says why it is not.
    async fn run(&mut self) -> Result<(), String> {
        // Only what this start logs counts: the log file is appended to.
        let log_start = std::fs::metadata(self.log_path()).map_or(0, |m| m.len());
        let mut command = Command::new(redis_server_bin());
        command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--protected-mode", "no"])
            .args(["--daemonize", "no", "--save", ""])
            .args([
                "--appendonly",
                if self.options.appendonly { "yes" } else { "no" },
            ])
            .arg("--dir")
            .arg(self.dir.join("data"))
            .arg("--logfile")
            .arg(self.log_path());
        if let Some(bus_port) = self.bus_port {
            command
                .args(["--cluster-enabled", "yes"])
                // Relative to `dir`.
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-port", &bus_port.to_string()])
                // Down nodes are noticed in seconds rather than the default 15.
                .args(["--cluster-node-timeout", "5000"]);
        }
        command
            .args(&self.options.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let process = Supervised::spawn("redis-server", &mut command)
            .map_err(|e| format!("cannot run {:?}: {e}", redis_server_bin()))?;
        self.process = Some(process);
        self.wait_ready(log_start).await
    }

    /// Waits until this start has logged that it is ready and the port answers `PING`.
    async fn wait_ready(&mut self, log_start: u64) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let process = self.process.as_mut().expect("redis-server was started");
            if let Some(status) = process.try_wait() {
                self.process = None;
                return Err(format!(
                    "redis-server on port {} exited ({status}):\n{}",
                    self.port,
                    self.log_since(log_start)
                ));
            }
            // The log line first: another test's server that took the port would answer PING
            // too, but it writes its own log.
            if self.log_since(log_start).contains(READY_LINE) && ping(self.addr()).await {
                return Ok(());
            }
            if started.elapsed() > START_LIMIT {
                return Err(format!(
                    "redis-server on port {} not ready after {START_LIMIT:?}:\n{}",
                    self.port,
                    self.log_since(log_start)
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_since(&self, start: u64) -> String {
        let log = std::fs::read(self.log_path()).unwrap_or_default();
        let start = usize::try_from(start).map_or(log.len(), |start| start.min(log.len()));
        String::from_utf8_lossy(&log[start..]).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
        let what = format!("redis-server on port {}", self.port);
        crate::process::leave_behind(&what, &self.dir, || self.log());
    }
}

/// A Redis Cluster of masters only (no replicas), each a [`RedisServer`].
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` cluster nodes (at least 3, as Redis requires), joins them with
    /// `redis-cli --cluster create` (the slots split evenly between them) and waits until every
    /// node says `cluster_state:ok` and knows every other.
    pub async fn start(masters: usize) -> RedisCluster {
        RedisCluster::start_with(masters, RedisOptions::new()).await
    }

    /// [`start`](Self::start) with `options` for every node.
    pub async fn start_with(masters: usize, options: RedisOptions) -> RedisCluster {
        assert!(masters >= 3, "a Redis Cluster needs at least 3 masters");
        let mut nodes = Vec::with_capacity(masters);
        for _ in 0..masters {
            nodes.push(RedisServer::start(options.clone().cluster_node()).await);
        }
        let cluster = RedisCluster { nodes };
        let mut create = tokio::process::Command::new(redis_cli_bin());
        create.args(["--cluster", "create"]);
        for node in &cluster.nodes {
            create.arg(node.addr().to_string());
        }
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let output = output_within("redis-cli --cluster create", &mut create, START_LIMIT).await;
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        cluster.wait_ok().await;
        cluster
    }

    /// Waits until every running node says `cluster_state:ok`, has all slots served and knows
    /// all the other nodes.
    pub async fn wait_ok(&self) {
        let started = Instant::now();
        let known = format!("cluster_known_nodes:{}", self.nodes.len());
        let mut last = String::new();
        loop {
            let mut all_ok = true;
            for node in &self.nodes {
                let info = node.try_cli(&["CLUSTER", "INFO"]).await.unwrap_or_default();
                let ok = ["cluster_state:ok", "cluster_slots_ok:16384", &known]
                    .iter()
                    .all(|line| info.lines().any(|l| l.trim() == *line));
                if !ok {
                    all_ok = false;
                    last = format!("port {}:\n{info}", node.port());
                    break;
                }
            }
            if all_ok {
                return;
            }
            assert!(
                started.elapsed() < START_LIMIT,
                "cluster not ok after {START_LIMIT:?}; CLUSTER INFO on {last}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The nodes' URLs (`redis://127.0.0.1:PORT`), to give the gateway as seeds.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Node `index`, e.g. to kill or restart it.
    pub fn node_mut(&mut self, index: usize) -> &mut RedisServer {
        &mut self.nodes[index]
    }

    /// `redis-cli -c -p PORT ARGS…` against the first node not killed: `-c` follows `MOVED`
    /// redirections, so a key may live on any node. See [`RedisServer::cli`] for the output.
    pub async fn cli(&self, args: &[&str]) -> String {
        let port = self
            .nodes
            .iter()
            .find_map(|node| node.process.is_some().then_some(node.port))
            .expect("a cluster node that was not killed");
        cli(port, &["-c"], args)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// `redis-cli FLAGS… -p PORT ARGS…`, its output without the final newline.
async fn cli(port: u16, flags: &[&str], args: &[&str]) -> Result<String, String> {
    let mut command = tokio::process::Command::new(redis_cli_bin());
    command
        .args(flags)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args);
    let what = format!("redis-cli -p {port} {}", args.join(" "));
    let output = output_within(&what, &mut command, CLI_LIMIT).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.success() {
        Ok(stdout.strip_suffix('\n').unwrap_or(&stdout).to_owned())
    } else {
        Err(format!(
            "{what} failed ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Whether `addr` answers an inline `PING` with `+PONG` within a second.
async fn ping(addr: SocketAddr) -> bool {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await.ok()?;
        Some(&reply == b"+PONG\r\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), exchange).await,
        Ok(Some(true))
    )
}

fn create_dir(path: &Path) {
    std::fs::create_dir_all(path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
}
