//! The `redis-server` the multi-node workloads share: started fresh for each run on a free
//! loopback port, without persistence, pinned with the servers; and what it counts (`INFO`),
//! read over a plain RESP connection before and after a measurement.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Child;

use crate::error::{Error, Result};
use crate::procfs::Usage;
use crate::server::{Launch, command, signal};

/// A running `redis-server` of the bench's own.
#[derive(Debug)]
pub(crate) struct RedisServer {
    /// `127.0.0.1:PORT`.
    pub(crate) addr: SocketAddr,
    pid: u32,
    child: Child,
    /// Its directory (Redis's `dir`, and `redis.log`), under the run's scratch directory.
    dir: PathBuf,
}

/// What Redis counted up to one moment (`INFO stats` and `INFO commandstats`), or between two.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    /// `total_commands_processed`: every command executed, those a script calls included.
    pub(crate) commands: u64,
    /// `total_reads_processed`: reads from client sockets. Pipelined commands share a read, so
    /// this counts round trips as Redis saw them.
    pub(crate) reads: u64,
    /// Calls per command (`cmdstat_evalsha:calls=N` → `evalsha`: N), scripts' calls included.
    pub(crate) calls: BTreeMap<String, u64>,
}

/// The commands that run a script: one command from a client for all the calls in it.
const SCRIPT_COMMANDS: [&str; 6] = [
    "eval",
    "evalsha",
    "eval_ro",
    "evalsha_ro",
    "fcall",
    "fcall_ro",
];

/// Calls of commands that run a script (`EVALSHA`, …) among `calls` (per command).
pub(crate) fn script_calls(calls: &BTreeMap<String, u64>) -> u64 {
    SCRIPT_COMMANDS.iter().filter_map(|c| calls.get(*c)).sum()
}

impl Counters {
    /// Parses the text of `INFO stats commandstats`.
    pub(crate) fn parse(info: &str) -> Self {
        let mut c = Self::default();
        for line in info.lines() {
            let line = line.trim_end();
            if let Some(v) = line.strip_prefix("total_commands_processed:") {
                c.commands = v.parse().unwrap_or(0);
            } else if let Some(v) = line.strip_prefix("total_reads_processed:") {
                c.reads = v.parse().unwrap_or(0);
            } else if let Some(rest) = line.strip_prefix("cmdstat_") {
                let Some((name, stats)) = rest.split_once(':') else {
                    continue;
                };
                let calls = stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                c.calls.insert(name.to_owned(), calls);
            }
        }
        c
    }

    /// What happened between `before` and `self`, without the `INFO` that read `before` (the
    /// one that read `self` does not count itself yet).
    pub(crate) fn since(&self, before: &Self) -> Self {
        let mut calls = BTreeMap::new();
        for (name, &n) in &self.calls {
            let mut d = n.saturating_sub(before.calls.get(name).copied().unwrap_or(0));
            if name == "info" {
                d = d.saturating_sub(1);
            }
            if d > 0 {
                calls.insert(name.clone(), d);
            }
        }
        Self {
            commands: self.commands.saturating_sub(before.commands + 1),
            reads: self.reads.saturating_sub(before.reads + 1),
            calls,
        }
    }
}

/// A free loopback port, as the kernel hands one out (for servers that cannot report theirs).
pub(crate) fn free_port(what: &str) -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::io(format!("free port for {what}"), e))
}

impl RedisServer {
    /// Starts `redis-server` (no snapshots, no append-only file) on a free port, pinned like
    /// the servers, and waits until it answers `PING`; `tag` names its directory.
    pub(crate) async fn start(launch: &Launch, tag: &str) -> Result<Self> {
        let dir = launch.scratch.join(format!("redis-{tag}"));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display(), e))?;
        let port = free_port("redis")?;
        let log = dir.join("redis.log");
        let mut cmd = command(launch, &[], &launch.redis_bin);
        cmd.args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--protected-mode", "no"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("spawn {}", launch.redis_bin), e))?;
        let pid = child
            .id()
            .ok_or_else(|| Error::start("redis-server exited at once"))?;
        let mut redis = Self {
            addr: ([127, 0, 0, 1], port).into(),
            pid,
            child,
            dir,
        };
        match redis.ready().await {
            Ok(()) => Ok(redis),
            Err(e) => {
                redis.stop().await;
                Err(e)
            }
        }
    }

    /// Waits (20 s at most) until Redis answers `PING`; the error carries its log.
    async fn ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.query(&["PING"]).await.is_ok_and(|r| r == "PONG") {
                return Ok(());
            }
            if Instant::now() > deadline || self.child.try_wait().ok().flatten().is_some() {
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                return Err(Error::start(format!(
                    "redis-server not ready: {}",
                    log.trim()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `redis://127.0.0.1:PORT`, for the nodes.
    pub(crate) fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Redis's CPU time (all its threads) now.
    pub(crate) fn usage(&self) -> Usage {
        Usage::of_tree(self.pid)
    }

    /// What Redis has counted so far.
    pub(crate) async fn counters(&self) -> Result<Counters> {
        let info = self.query(&["INFO", "stats", "commandstats"]).await?;
        Ok(Counters::parse(&info))
    }

    /// Sends one command on a fresh connection and returns its reply: a simple or bulk
    /// string (all this module asks for).
    async fn query(&self, args: &[&str]) -> Result<String> {
        let limit = Duration::from_secs(5);
        let io = |e| Error::net("redis", e);
        let mut s = tokio::time::timeout(limit, TcpStream::connect(self.addr))
            .await
            .map_err(|_| Error::start("redis: connect timed out"))?
            .map_err(io)?;
        s.write_all(&resp_command(args)).await.map_err(io)?;
        let mut buf = Vec::with_capacity(16 * 1024);
        loop {
            if let Some(reply) = resp_reply(&buf)? {
                return Ok(reply);
            }
            let n = tokio::time::timeout(limit, s.read_buf(&mut buf))
                .await
                .map_err(|_| Error::protocol("redis: no reply in 5 s"))?
                .map_err(io)?;
            if n == 0 {
                return Err(Error::protocol("redis: closed before replying"));
            }
        }
    }

    /// Stops Redis: SIGTERM, SIGKILL after 5 s; its directory goes with it.
    pub(crate) async fn stop(mut self) {
        signal("TERM", &[self.pid]).await;
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            signal("KILL", &[self.pid]).await;
            let _ = self.child.wait().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `args` as a RESP array of bulk strings.
fn resp_command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

/// The reply at the start of `buf` once complete: `+simple` or `$len bulk`; `-error` is an
/// error.
fn resp_reply(buf: &[u8]) -> Result<Option<String>> {
    let Some(eol) = memchr::memmem::find(buf, b"\r\n") else {
        return Ok(None);
    };
    let line = String::from_utf8_lossy(&buf[1..eol]);
    match buf.first() {
        Some(b'+') => Ok(Some(line.into_owned())),
        Some(b'-') => Err(Error::protocol(format!("redis: {line}"))),
        Some(b'$') => {
            let len: usize = line
                .parse()
                .map_err(|_| Error::protocol(format!("redis: bad bulk length {line:?}")))?;
            let body = eol + 2;
            if buf.len() < body + len + 2 {
                return Ok(None);
            }
            Ok(Some(
                String::from_utf8_lossy(&buf[body..body + len]).into_owned(),
            ))
        }
        _ => Err(Error::protocol(format!("redis: unexpected reply {line:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_from_info() {
        let before = Counters::parse(
            "# Stats\r\ntotal_commands_processed:10\r\ntotal_reads_processed:7\r\n\
             # Commandstats\r\ncmdstat_info:calls=2,usec=41,usec_per_call=20.50\r\n\
             cmdstat_evalsha:calls=3,usec=9,usec_per_call=3.00,rejected_calls=0\r\n",
        );
        assert_eq!((before.commands, before.reads), (10, 7));
        assert_eq!(before.calls.get("evalsha"), Some(&3));
        let after = Counters::parse(
            "total_commands_processed:31\r\ntotal_reads_processed:18\r\n\
             cmdstat_info:calls=3,usec=1\r\ncmdstat_evalsha:calls=13,usec=1\r\n\
             cmdstat_publish:calls=10,usec=1\r\ncmdstat_script|load:calls=1,usec=1\r\n",
        );
        let d = after.since(&before);
        // The INFO that read `before` is the bench's, not the servers'.
        assert_eq!((d.commands, d.reads), (20, 10));
        assert_eq!(d.calls.get("info"), None);
        assert_eq!(d.calls.get("publish"), Some(&10));
        assert_eq!(d.calls.get("script|load"), Some(&1));
        assert_eq!(script_calls(&d.calls), 10);
    }

    #[test]
    fn resp_framing() {
        assert_eq!(resp_command(&["PING"]), b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            resp_reply(b"+PONG\r\n").ok().flatten().as_deref(),
            Some("PONG")
        );
        assert_eq!(resp_reply(b"$5\r\nab").ok().flatten(), None);
        assert_eq!(
            resp_reply(b"$5\r\nab\r\nc\r\n").ok().flatten().as_deref(),
            Some("ab\r\nc")
        );
        assert!(resp_reply(b"-ERR no\r\n").is_err());
        assert_eq!(resp_reply(b"+PO").ok().flatten(), None);
    }
}
