//! Starting and stopping the servers under test, each fresh for every workload so that memory
//! and CPU figures start from the same state, pinned to its own core with `taskset`: one
//! server, or (multi-node workloads) several nodes of it on one `redis-server` of the bench's
//! own, all pinned to that same core.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use crate::client::Flavor;
use crate::error::{Error, Result};
use crate::procfs::{self, Usage};
use crate::redis::{RedisServer, free_port};

/// How to start the servers.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    pub(crate) switchboard_bin: PathBuf,
    /// Arguments after `switchboard serve --listen 127.0.0.1:0`.
    pub(crate) switchboard_args: Vec<String>,
    /// nginx configuration template (`@PORT@`, `@PREFIX@` filled in per run).
    pub(crate) nchan_conf: PathBuf,
    /// The same for Nchan nodes on Redis (`@REDIS_PORT@` too).
    pub(crate) nchan_redis_conf: PathBuf,
    pub(crate) nginx_bin: String,
    /// The `redis-server` binary the multi-node workloads run on.
    pub(crate) redis_bin: String,
    /// Core the server is pinned to (`taskset -c`), if any.
    pub(crate) core: Option<u32>,
    /// Scratch directory for nginx prefixes and server logs.
    pub(crate) scratch: PathBuf,
    /// Command switchboard is started under (e.g. a profiler), if any.
    pub(crate) switchboard_wrap: Vec<String>,
    /// This program, which serves the floor (`switchboard-bench floor`).
    pub(crate) bench_bin: PathBuf,
}

/// A running server (one node of a [`Deployment`]).
#[derive(Debug)]
struct Server {
    /// Where it listens (switchboard picks a free port and prints it).
    addr: SocketAddr,
    /// Its main process: CPU and memory are read over this process's tree.
    pid: u32,
    child: Child,
    /// The server's log, named in start-up errors.
    log: PathBuf,
}

/// `program` under `taskset -c CORE` (when pinning) and `wrap`.
pub(crate) fn command(launch: &Launch, wrap: &[String], program: &str) -> Command {
    let mut argv: Vec<&str> = Vec::new();
    let core = launch.core.map(|c| c.to_string());
    if let Some(core) = &core {
        argv.extend(["taskset", "-c", core]);
    }
    argv.extend(wrap.iter().map(String::as_str));
    argv.push(program);
    let mut c = Command::new(argv[0]);
    c.args(&argv[1..]);
    c
}

/// Reads switchboard's stdout until it says where it listens (20 s at most), then keeps
/// draining it so a chatty server never blocks on a full pipe.
async fn listening_address(stdout: ChildStdout, log: &Path) -> Result<SocketAddr> {
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = loop {
        let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
            .await
            .map_err(|_| {
                let log = log.display();
                Error::start(format!("switchboard not ready in 20 s (log: {log})"))
            })?
            .map_err(|e| Error::io("switchboard stdout", e))?
            .ok_or_else(|| {
                let log = log.display();
                Error::start(format!("switchboard exited before ready (log: {log})"))
            })?;
        if let Some(rest) = line.split("listening on http://").nth(1) {
            let a = rest.split_whitespace().next().unwrap_or_default();
            break a
                .parse::<SocketAddr>()
                .map_err(|e| Error::start(format!("bad address {a:?}: {e}")))?;
        }
    };
    let mut out = lines.into_inner();
    tokio::task::spawn_local(async move {
        let mut buf = vec![0u8; 4096];
        while matches!(out.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    Ok(addr)
}

/// Writes nginx's configuration for one run into `prefix`, from the template with a free port
/// (nginx cannot report the one it got, so the kernel is asked first) and, on Redis, Redis's
/// port; returns its path and the port.
fn nginx_conf(launch: &Launch, prefix: &Path, redis: Option<SocketAddr>) -> Result<(PathBuf, u16)> {
    let port = free_port("nginx")?;
    let template_path = match redis {
        Some(_) => &launch.nchan_redis_conf,
        None => &launch.nchan_conf,
    };
    let template = std::fs::read_to_string(template_path)
        .map_err(|e| Error::io(template_path.display(), e))?;
    let redis_port = redis.map_or(String::new(), |a| a.port().to_string());
    let conf = template
        .replace("@PORT@", &port.to_string())
        .replace("@REDIS_PORT@", &redis_port)
        .replace("@PREFIX@", &prefix.to_string_lossy());
    let conf_path = prefix.join("nchan.conf");
    std::fs::write(&conf_path, conf).map_err(|e| Error::io(conf_path.display(), e))?;
    Ok((conf_path, port))
}

impl Server {
    /// Starts a fresh `flavor` server (on `redis`, if given) and waits until it serves; `tag`
    /// names its log (and nginx's prefix directory) after the run.
    async fn start(
        flavor: Flavor,
        launch: &Launch,
        tag: &str,
        redis: Option<&RedisServer>,
        data_dir: bool,
    ) -> Result<Self> {
        match flavor {
            Flavor::Switchboard => Self::start_switchboard(launch, tag, redis, data_dir).await,
            Flavor::Nchan => Self::start_nchan(launch, tag, redis.map(|r| r.addr)).await,
            Flavor::Floor => Self::start_floor(launch, tag).await,
        }
    }

    /// The floor: `switchboard-bench floor` (this program), pinned like the others.
    async fn start_floor(launch: &Launch, tag: &str) -> Result<Self> {
        let log = launch.scratch.join(format!("floor-{tag}.log"));
        let stderr = std::fs::File::create(&log).map_err(|e| Error::io(log.display(), e))?;
        let bin = launch.bench_bin.to_string_lossy().into_owned();
        let mut child = command(launch, &[], &bin)
            .args(["floor", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::io(format!("spawn {bin}"), e))?;
        let pid = child
            .id()
            .ok_or_else(|| Error::start("floor exited at once"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::start("no stdout"))?;
        let addr = listening_address(stdout, &log).await?;
        Ok(Self {
            addr,
            pid,
            child,
            log,
        })
    }

    async fn start_switchboard(
        launch: &Launch,
        tag: &str,
        redis: Option<&RedisServer>,
        data_dir: bool,
    ) -> Result<Self> {
        let log = launch.scratch.join(format!("switchboard-{tag}.log"));
        let stderr = std::fs::File::create(&log).map_err(|e| Error::io(log.display(), e))?;
        let bin = launch.switchboard_bin.to_string_lossy().into_owned();
        let mut cmd = command(launch, &launch.switchboard_wrap, &bin);
        cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        if let Some(redis) = redis {
            cmd.args(["--redis", &redis.url()]);
        }
        if data_dir {
            // A fresh directory: the server creates it.
            let dir = launch.scratch.join(format!("data-{tag}"));
            let _ = std::fs::remove_dir_all(&dir);
            cmd.arg("--data-dir").arg(&dir);
        }
        cmd.args(&launch.switchboard_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("spawn {bin}"), e))?;
        let pid = child
            .id()
            .ok_or_else(|| Error::start("switchboard exited at once"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::start("no stdout"))?;
        let addr = listening_address(stdout, &log).await?;
        let server = Self {
            addr,
            pid,
            child,
            log,
        };
        if redis.is_some() {
            // Listening comes before Redis is reached: wait until the node is ready.
            wait_for(addr, "/readyz", "switchboard", &server.log).await?;
        }
        Ok(server)
    }

    async fn start_nchan(launch: &Launch, tag: &str, redis: Option<SocketAddr>) -> Result<Self> {
        let prefix = launch.scratch.join(format!("nginx-{tag}"));
        std::fs::create_dir_all(&prefix).map_err(|e| Error::io(prefix.display(), e))?;
        let (conf_path, port) = nginx_conf(launch, &prefix, redis)?;
        let prefix_s = prefix.to_string_lossy().into_owned();
        let log = prefix.join("error.log");
        let mut cmd = command(launch, &[], &launch.nginx_bin);
        cmd.arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(format!("{prefix_s}/"))
            .arg("-e")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("spawn {}", launch.nginx_bin), e))?;
        let pid = child
            .id()
            .ok_or_else(|| Error::start("nginx exited at once"))?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut server = Self {
            addr,
            pid,
            child,
            log,
        };
        match server.nginx_ready().await {
            Ok(()) => Ok(server),
            Err(e) => {
                server.stop().await;
                Err(e)
            }
        }
    }

    /// Waits (20 s at most) until nginx answers `/healthz` and has its worker; the error
    /// carries nginx's log.
    async fn nginx_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if answers(self.addr, "/healthz").await && procfs::tree(self.pid).len() >= 2 {
                return Ok(());
            }
            if Instant::now() > deadline || self.child.try_wait().ok().flatten().is_some() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                return Err(Error::start(format!("nginx not ready: {}", log.trim())));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server's CPU time and memory now.
    fn usage(&self) -> Usage {
        Usage::of_tree(self.pid)
    }

    /// Stops the server: SIGTERM, then SIGKILL for the whole tree after a short grace.
    async fn stop(mut self) {
        let pids = procfs::tree(self.pid);
        signal("TERM", &[self.pid]).await;
        let waited = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        if waited.is_err() {
            signal("KILL", &pids).await;
            let _ = self.child.wait().await;
        }
        // nginx workers exit with their master; make sure nothing is left holding ports.
        let leftovers: Vec<u32> = pids
            .into_iter()
            .filter(|p| Path::new(&format!("/proc/{p}")).exists())
            .collect();
        if !leftovers.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            signal("KILL", &leftovers).await;
        }
    }
}

/// What one workload runs against: one server, or several nodes of it on one Redis.
///
/// Node 0 takes every publish. Subscribers are spread round-robin over the other nodes (over
/// node 0 when it is alone), so that on several nodes every delivery crosses Redis.
#[derive(Debug)]
pub(crate) struct Deployment {
    pub(crate) flavor: Flavor,
    /// Never empty.
    nodes: Vec<Server>,
    /// The nodes' Redis, when there are several.
    redis: Option<RedisServer>,
    /// Core every process of it is pinned to, if any.
    pub(crate) core: Option<u32>,
}

impl Deployment {
    /// Starts `nodes` fresh `flavor` servers (on a fresh Redis when more than one; with
    /// `data_dir`, one server on a fresh data directory) and waits until they all serve; `tag`
    /// names their logs.
    pub(crate) async fn start(
        flavor: Flavor,
        launch: &Launch,
        tag: &str,
        nodes: u32,
        data_dir: bool,
    ) -> Result<Self> {
        let mut d = Self {
            flavor,
            nodes: Vec::new(),
            redis: None,
            core: launch.core,
        };
        if nodes <= 1 {
            d.nodes
                .push(Server::start(flavor, launch, tag, None, data_dir).await?);
            return Ok(d);
        }
        d.redis = Some(RedisServer::start(launch, tag).await?);
        for i in 0..nodes {
            let node_tag = format!("{tag}-node{i}");
            match Server::start(flavor, launch, &node_tag, d.redis.as_ref(), false).await {
                Ok(node) => d.nodes.push(node),
                Err(e) => {
                    d.stop().await;
                    return Err(e);
                }
            }
        }
        Ok(d)
    }

    /// Where publishers connect: node 0.
    pub(crate) fn publish_addr(&self) -> SocketAddr {
        self.nodes[0].addr
    }

    /// Where subscribers connect, round-robin: every node but node 0, or node 0 alone.
    pub(crate) fn subscriber_addrs(&self) -> Vec<SocketAddr> {
        let others = if self.nodes.len() > 1 {
            &self.nodes[1..]
        } else {
            &self.nodes[..]
        };
        others.iter().map(|n| n.addr).collect()
    }

    /// CPU time and memory of every node and of Redis, together.
    pub(crate) fn usage(&self) -> Usage {
        let redis = self.redis_usage().unwrap_or_default();
        self.node_usage()
            .into_iter()
            .fold(redis, |all, node| all.plus(node))
    }

    /// Each node's CPU time and memory, node 0 (the publishers') first.
    pub(crate) fn node_usage(&self) -> Vec<Usage> {
        self.nodes.iter().map(Server::usage).collect()
    }

    /// Redis's CPU time, when the nodes share one.
    pub(crate) fn redis_usage(&self) -> Option<Usage> {
        self.redis.as_ref().map(RedisServer::usage)
    }

    /// The Redis the nodes share, if any.
    pub(crate) fn redis(&self) -> Option<&RedisServer> {
        self.redis.as_ref()
    }

    /// Stops every node, then Redis.
    pub(crate) async fn stop(self) {
        for node in self.nodes {
            node.stop().await;
        }
        if let Some(redis) = self.redis {
            redis.stop().await;
        }
    }
}

/// Sends `sig` (`TERM`, `KILL`) to `pids`.
pub(crate) async fn signal(sig: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids.iter().map(u32::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}

/// Waits (20 s at most) until `GET path` on `addr` answers 200; the error names `log`.
async fn wait_for(addr: SocketAddr, path: &str, what: &str, log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !answers(addr, path).await {
        if Instant::now() > deadline {
            let log = log.display();
            return Err(Error::start(format!(
                "{what} {path} not 200 in 20 s (log: {log})"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// `GET path` answered with 200.
async fn answers(addr: SocketAddr, path: &str) -> bool {
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await
    else {
        return false;
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await,
        Ok(Ok(n)) if buf[..n].starts_with(b"HTTP/1.1 200")
    )
}
