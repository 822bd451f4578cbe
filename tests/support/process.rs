//! Child processes a test starts (Redis servers, gateway binaries) that must never outlive it.
//!
//! Drop kills them, which covers a test that returns or panics. A test process that is itself
//! killed (`kill -9`, a CI timeout) runs no Drop, so each child also gets a watchdog: a tiny
//! `sh` reading a pipe that only the test process holds. When the test process dies, for
//! whatever reason, the pipe reaches end-of-file and the watchdog kills the child.

use std::io;
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running child process, killed with SIGKILL when dropped or when the test process dies.
#[derive(Debug)]
pub struct Supervised {
    what: String,
    child: Child,
    /// `None` once the child has been reaped, so that the watchdog can never kill a process
    /// that reuses its id.
    watchdog: Option<Child>,
}

impl Supervised {
    /// Spawns `command` (`what` names it in messages) with its watchdog.
    pub fn spawn(what: &str, command: &mut Command) -> io::Result<Supervised> {
        let mut child = command.spawn()?;
        let watchdog = Command::new("sh")
            .args(["-c", r#"read _; kill -KILL "$1" 2>/dev/null"#, "watchdog"])
            .arg(child.id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match watchdog {
            Ok(watchdog) => Ok(Supervised {
                what: what.to_owned(),
                child,
                watchdog: Some(watchdog),
            }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(io::Error::new(
                    e.kind(),
                    format!("cannot run its watchdog (sh): {e}"),
                ))
            }
        }
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child itself, e.g. to take its stdout.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The exit status if the child has exited (and then reaps it), `None` if it still runs.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let status = self
            .child
            .try_wait()
            .unwrap_or_else(|e| panic!("cannot check on {}: {e}", self.what))?;
        self.stop_watchdog();
        Some(status)
    }

    /// Sends `signal` (a name like `TERM`) with `kill(1)`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.id().to_string())
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill -{signal} on {}: {e}", self.what));
        assert!(status.success(), "kill -{signal} {} failed", self.what);
    }

    /// SIGKILL, and waits for the exit (which SIGKILL makes immediate).
    pub fn kill9(mut self) -> ExitStatus {
        self.stop_watchdog();
        let _ = self.child.kill();
        self.child
            .wait()
            .unwrap_or_else(|e| panic!("cannot wait for {}: {e}", self.what))
    }

    /// Waits up to `limit` for the child to exit on its own (after a signal, say); `None` if it
    /// is still running then (it is left running).
    pub async fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if started.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Kills and reaps the watchdog before the child is reaped: afterwards the child's process
    /// id may be reused, and the watchdog must not be around to kill it.
    fn stop_watchdog(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

/// Whether the process in `slot` is running; one that has exited is reaped and the slot
/// emptied. For servers a test may kill and start again.
pub fn still_running(slot: &mut Option<Supervised>) -> bool {
    let running = slot
        .as_mut()
        .is_some_and(|process| process.try_wait().is_none());
    if !running {
        *slot = None;
    }
    running
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop_watchdog();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a test's server leaves behind when it is done: its log printed if the test is failing
/// (what it needs to be understood), otherwise its directory removed.
pub fn leave_behind(what: &str, dir: &std::path::Path, log: impl FnOnce() -> String) {
    if std::thread::panicking() {
        eprintln!("--- {what} log ({}):\n{}---", dir.display(), log());
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A loopback port nothing listens on right now (found by binding port 0 and releasing it, so
/// someone else may take it before the caller does: callers retry on a clash). Never 6379, where
/// a Redis installed as a system service may be listening or may start.
pub fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        if port != 6379 {
            return port;
        }
    }
}

/// Runs `command` to completion, killing it and panicking if it takes longer than `limit`.
pub async fn output_within(
    what: &str,
    command: &mut tokio::process::Command,
    limit: Duration,
) -> std::process::Output {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match tokio::time::timeout(limit, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => panic!("cannot run {what}: {e}"),
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}
