//! The `switchboard` binary as a user runs it: the startup line, a live SSE stream, a clean
//! exit on SIGTERM that ends the stream, settings refused at start-up, and a log pipe that is
//! closed or never read, which must stop neither serving nor shutdown.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Waits up to `limit` for `child` to exit and returns what it wrote; kills it and panics if
/// it is still running then.
fn wait_for_exit(child: Child, limit: Duration, what: &str) -> Output {
    let pid = child.id().to_string();
    let (done, exited) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    match exited.recv_timeout(limit) {
        Ok(output) => output.expect("wait for the binary"),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("{what}: the binary was still running after {limit:?}");
        }
    }
}

fn read_until(stream: &mut TcpStream, needle: &str, deadline: Instant) -> String {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {needle:?}; got {:?}",
            String::from_utf8_lossy(&seen)
        );
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buffer[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("read failed: {e}"),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[test]
fn serves_and_exits_cleanly_on_sigterm() {
    let deadline = Instant::now() + Duration::from_secs(10);
    let gateway = Running::start(&["--shutdown-grace", "5s"], "warn", Stdio::inherit());
    let mut sse = gateway.open_sse(deadline);

    gateway.sigterm();
    // The chunked stream ends with its terminating chunk: a clean end, not a reset.
    let rest = read_until(&mut sse, "0\r\n\r\n", deadline);
    assert!(rest.ends_with("0\r\n\r\n"), "{rest:?}");
    let exit = gateway.exit_within(Duration::from_secs(10), "exit on SIGTERM");
    assert!(exit.status.success(), "exited with {}", exit.status);
    assert!(Instant::now() < deadline);
}

#[test]
fn out_of_range_settings_are_refused_at_start_up() {
    let cases = [
        (
            ["--heartbeat-interval", "100000000000s"],
            None,
            "heartbeat_interval must be between 1ms and 1h, got 100000000000s",
        ),
        (
            ["--shutdown-grace", "1s"],
            Some(("SWITCHBOARD_POLL_MAX_TIMEOUT", "1000000h")),
            "poll_max_timeout must be between 0s and 1h, got 1000000h",
        ),
    ];
    for (args, env, message) in cases {
        let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some((name, value)) = env {
            command.env(name, value);
        }
        let child = command.spawn().expect("the binary starts");
        let output = wait_for_exit(child, Duration::from_secs(10), message);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "it listened: {:?}", output.stdout);
    }
}

/// A running `switchboard serve`, killed if a test ends without it having exited.
struct Running {
    child: Option<Child>,
    addr: String,
}

impl Running {
    /// Starts the binary on port 0 with `args`, logging at `level` to `stderr`, and reads the
    /// address from its startup line.
    fn start(args: &[&str], level: &str, stderr: Stdio) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", level)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("the binary starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("startup line");
        let addr = line
            .trim()
            .strip_prefix("switchboard listening on http://")
            .unwrap_or_else(|| panic!("unexpected startup line {line:?}"))
            .to_string();
        Running {
            child: Some(child),
            addr,
        }
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("still running")
    }

    fn sigterm(&self) {
        let pid = self.child.as_ref().expect("still running").id();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the exit; see [`wait_for_exit`].
    fn exit_within(mut self, limit: Duration, what: &str) -> Output {
        let child = self.child.take().expect("still running");
        wait_for_exit(child, limit, what)
    }

    /// Opens `GET /events` on a fresh connection and reads up to its `subscribed` event.
    fn open_sse(&self, deadline: Instant) -> TcpStream {
        let mut sse = TcpStream::connect(&self.addr).expect("connect");
        sse.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let request = format!(
            "GET /events?topic=log HTTP/1.1\r\nHost: {}\r\n\r\n",
            self.addr
        );
        sse.write_all(request.as_bytes()).expect("request");
        let head = read_until(&mut sse, "event: subscribed", deadline);
        assert!(head.starts_with("HTTP/1.1 200"), "SSE stream: {head:?}");
        assert!(head.contains("event: subscribed"), "SSE stream: {head:?}");
        sse
    }

    /// `GET /healthz`'s count of log lines dropped.
    fn log_dropped(&self, deadline: Instant) -> u64 {
        let mut http = TcpStream::connect(&self.addr).expect("connect");
        http.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let request = format!(
            "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        http.write_all(request.as_bytes()).expect("request");
        let reply = read_until(&mut http, "}}", deadline);
        let body = reply
            .split_once("\r\n\r\n")
            .map(|(_, body)| body)
            .unwrap_or_else(|| panic!("no body in {reply:?}"));
        let health: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
        health["log_dropped"]
            .as_u64()
            .unwrap_or_else(|| panic!("no log_dropped in {health}"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Far longer than a clean exit takes, far shorter than the grace period the tests set: only a
/// hang fails.
const EXIT_LIMIT: Duration = Duration::from_secs(5);

#[test]
fn a_closed_log_pipe_stops_neither_serving_nor_shutdown() {
    let mut gateway = Running::start(&["--shutdown-grace", "60s"], "info", Stdio::piped());
    drop(gateway.child().stderr.take());
    let deadline = Instant::now() + Duration::from_secs(20);

    // Opening a stream logs a line at info, which cannot be written.
    let sse = gateway.open_sse(deadline);
    drop(sse);
    assert!(gateway.log_dropped(deadline) >= 1);
    drop(gateway.open_sse(deadline));

    gateway.sigterm();
    let output = gateway.exit_within(EXIT_LIMIT, "SIGTERM with a closed log pipe");
    assert!(output.status.success(), "exited with {}", output.status);
}

#[test]
fn a_log_pipe_nobody_reads_stops_neither_serving_nor_shutdown() {
    let mut gateway = Running::start(&["--shutdown-grace", "60s"], "info", Stdio::piped());
    // Kept open, never read: once the pipe is full, every write to it would block.
    let _unread = gateway.child().stderr.take();
    let deadline = Instant::now() + Duration::from_secs(60);

    // Each stream logs a line; open them until the gateway says it has dropped some, which
    // it does only once the pipe and its own queue are full.
    let mut opened = 0;
    loop {
        drop(gateway.open_sse(deadline));
        opened += 1;
        if opened % 200 == 0 && gateway.log_dropped(deadline) > 0 {
            break;
        }
        assert!(opened < 100_000, "nothing dropped after {opened} streams");
    }
    drop(gateway.open_sse(deadline));

    gateway.sigterm();
    let output = gateway.exit_within(EXIT_LIMIT, "SIGTERM with a full log pipe");
    assert!(output.status.success(), "exited with {}", output.status);
}
