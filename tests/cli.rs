//! The command line end to end: the real `switchboard` binary (`pub`, `sub`, `topics`,
//! `check-config`) against a real gateway on port 0.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use switchboard::Config;
use switchboard_e2e::{Endpoint, Gateway, TIMEOUT, publish_text, switchboard_bin, within};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdout, Command};

const TRANSPORTS: [&str; 3] = ["ws", "sse", "poll"];

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory for one test's files (cursor files, configuration files, certificates),
/// removed when the test is done, kept (and named) when it fails.
struct Scratch(PathBuf);

impl Scratch {
    fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        switchboard_e2e::process::leave_behind("the test's files", &self.0, String::new);
    }
}

fn scratch_dir() -> Scratch {
    let dir = std::env::temp_dir().join(format!(
        "switchboard-cli-{}-{}",
        std::process::id(),
        DIRS.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    Scratch(dir)
}

/// The binary with `args`, without any `SWITCHBOARD_*` setting the test run may have.
fn switchboard(args: &[&str]) -> Command {
    let mut command = Command::new(switchboard_bin!());
    command.args(args).kill_on_drop(true);
    for (name, _) in std::env::vars() {
        if name.starts_with("SWITCHBOARD_") {
            command.env_remove(name);
        }
    }
    command
}

/// How a command ended.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `command` to its end with `input` on stdin.
async fn run(mut command: Command, input: &str) -> Ran {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("the binary runs");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).await.expect("input");
    drop(stdin);
    let output = within("the command to finish", child.wait_with_output())
        .await
        .expect("the command's output");
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("utf-8 stderr"),
    }
}

/// `switchboard pub` with `args` (after the URL) and `input` on stdin; returns the ids printed.
async fn publish_with_cli(url: &str, args: &[&str], input: &str) -> Vec<String> {
    let mut command = switchboard(&["pub", "--url", url]);
    command.args(args);
    let ran = run(command, input).await;
    assert_eq!(ran.code, Some(0), "pub {args:?} failed: {ran:?}");
    ran.stdout.lines().map(str::to_owned).collect()
}

/// `switchboard sub` running in the background, its stdout read line by line and its stderr
/// collected.
struct Sub {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// The ids of every line read so far, in order.
    printed: Vec<String>,
    stderr: Arc<Mutex<String>>,
    cursor_file: PathBuf,
}

impl Sub {
    /// Starts `sub --url URL --cursor-file FILE ARGS…` and, when the file did not exist yet,
    /// waits for it to appear: `sub` writes it once its subscription is in place.
    async fn start(url: &str, cursor_file: &Path, args: &[&str]) -> Sub {
        let mut command = switchboard(&["sub", "--url", url, "--cursor-file"]);
        command.arg(cursor_file).args(args);
        Sub::spawn(command, cursor_file).await
    }

    /// Runs `command`, a `sub` with `--cursor-file cursor_file`, as [`start`](Self::start) does.
    async fn spawn(mut command: Command, cursor_file: &Path) -> Sub {
        let resuming = cursor_file.exists();
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("sub runs");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut errors = child.stderr.take().expect("stderr");
        let collected = stderr.clone();
        tokio::spawn(async move {
            let mut buffer = [0u8; 4096];
            while let Ok(read @ 1..) = errors.read(&mut buffer).await {
                let text = String::from_utf8_lossy(&buffer[..read]);
                collected.lock().expect("stderr").push_str(&text);
            }
        });
        let sub = Sub {
            child,
            lines,
            printed: Vec::new(),
            stderr,
            cursor_file: cursor_file.to_owned(),
        };
        if !resuming {
            sub.wait_for("the subscription (its cursor file)", |sub| {
                sub.cursor_file.exists()
            })
            .await;
        }
        sub
    }

    /// Waits until `done(self)`, looking every few milliseconds.
    async fn wait_for(&self, what: &str, done: impl Fn(&Sub) -> bool) {
        let waited = tokio::time::timeout(TIMEOUT, async {
            while !done(self) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        if waited.is_err() {
            panic!(
                "timed out waiting for {what}; sub's stderr:\n{}",
                self.stderr()
            );
        }
    }

    async fn stderr_shows(&self, text: &str) {
        self.wait_for(&format!("{text:?} on stderr"), |sub| {
            sub.stderr().contains(text)
        })
        .await;
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    /// The next line printed, as JSON.
    async fn envelope(&mut self) -> Value {
        let line = match tokio::time::timeout(TIMEOUT, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            other => panic!(
                "no line from sub ({other:?}); its stderr:\n{}",
                self.stderr()
            ),
        };
        let envelope: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("sub printed something that is not JSON ({e}): {line}"));
        // Exactly the envelope: its four fields, in the protocol's order, and nothing else.
        let keys: Vec<&str> = envelope
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {line}"))
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["topic", "id", "data", "time"], "in {line}");
        self.printed.push(id_of(&envelope));
        envelope
    }

    /// Reads lines until (and with) the one of message `last`; returns the ids of every line
    /// read since the start.
    async fn printed_until(mut self, last: &str) -> Vec<String> {
        while self.printed.last().map(String::as_str) != Some(last) {
            self.envelope().await;
        }
        self.printed
    }

    /// SIGKILL; returns the ids of every line it printed, those it wrote just before dying
    /// included.
    async fn kill9(mut self) -> Vec<String> {
        self.child.start_kill().expect("kill sub");
        let _ = within("sub to die", self.child.wait()).await;
        while let Ok(Ok(Some(line))) = tokio::time::timeout(TIMEOUT, self.lines.next_line()).await {
            let envelope: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("a broken line at the kill ({e}): {line}"));
            self.printed.push(id_of(&envelope));
        }
        self.printed
    }
}

fn id_of(envelope: &Value) -> String {
    envelope["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {envelope}"))
        .to_owned()
}

/// Messages published with `pub` (from an argument, from stdin as text, from stdin as JSON)
/// reach `sub` on every transport, as the envelopes the protocol defines, in order.
#[tokio::test(flavor = "multi_thread")]
async fn pub_to_sub_on_every_transport() {
    let gw = Gateway::start_default().await;
    let base = gw.base();
    let dir = scratch_dir();
    for transport in TRANSPORTS {
        let cursor_file = dir.join(format!("{transport}.cursor"));
        let mut sub = Sub::start(
            &base,
            &cursor_file,
            &["--transport", transport, "chat", "news/eu"],
        )
        .await;
        let mut ids = publish_with_cli(&base, &["chat", "hello there"], "").await;
        ids.extend(publish_with_cli(&base, &["news/eu"], "one\ntwo\r\n\n").await);
        ids.extend(publish_with_cli(&base, &["chat", "--json"], "{\"n\":1}\n[true,null]\n").await);
        let expected = [
            ("chat", json!("hello there")),
            ("news/eu", json!("one")),
            ("news/eu", json!("two")),
            ("news/eu", json!("")),
            ("chat", json!({"n": 1})),
            ("chat", json!([true, null])),
        ];
        assert_eq!(ids.len(), expected.len(), "ids printed by pub: {ids:?}");
        let mut received = Vec::new();
        for _ in &expected {
            received.push(sub.envelope().await);
        }
        // In order within each topic (the protocol orders topics only one by one).
        for name in ["chat", "news/eu"] {
            let of_topic: Vec<&Value> = received.iter().filter(|e| e["topic"] == name).collect();
            let published: Vec<_> = expected
                .iter()
                .zip(&ids)
                .filter(|((topic, _), _)| *topic == name)
                .collect();
            assert_eq!(
                of_topic.len(),
                published.len(),
                "{transport} {name}: {received:?}"
            );
            for (envelope, ((topic, data), id)) in of_topic.into_iter().zip(published) {
                switchboard_e2e::assert_envelope(envelope, topic, id, data);
            }
        }
        // The cursor file covers both topics, up to the last message printed (it is written
        // just after the line).
        let mut last = vec![ids[3].clone(), ids[5].clone()];
        last.sort_unstable();
        sub.wait_for("the cursor file to cover both topics", |_| {
            let stored = std::fs::read_to_string(&cursor_file).unwrap_or_default();
            let mut positions: Vec<String> = stored.trim().split('.').map(str::to_owned).collect();
            positions.sort_unstable();
            positions == last
        })
        .await;
    }
}

/// `sub --cursor-file` killed with SIGKILL while messages keep coming, then started again,
/// prints every message published, in order; the cursor file is never ahead of what was
/// printed, and what is printed twice is only what was written after the file's last update.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_sub_resumes_from_its_cursor_file_on_every_transport() {
    let gw = Gateway::start_default().await;
    let base = gw.base();
    let dir = scratch_dir();
    for transport in TRANSPORTS {
        let topic = format!("resume-{transport}");
        let cursor_file = dir.join(format!("{transport}.cursor"));
        let url = gw.http_url(&format!("/events?topic={topic}"));
        let first = Sub::start(&base, &cursor_file, &["--transport", transport, &topic]).await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let publisher = tokio::spawn(async move {
            let mut stopped = stopped;
            let mut ids = Vec::new();
            for n in 0.. {
                if stopped.try_recv().is_ok() {
                    break;
                }
                ids.push(publish_text(&url, &format!("m{n}")).await);
                // A steady stream rather than a burst, so that the kill lands mid-stream.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            ids
        });
        let mut first = first;
        for _ in 0..40 {
            first.envelope().await;
        }
        let printed_first = first.kill9().await;
        let stored = std::fs::read_to_string(&cursor_file)
            .expect("the cursor file")
            .trim()
            .to_owned();
        let mut second = Sub::start(&base, &cursor_file, &["--transport", transport, &topic]).await;
        for _ in 0..20 {
            second.envelope().await;
        }
        let _ = stop.send(());
        let published = publisher.await.expect("the publisher");
        let last = published.last().expect("messages were published");
        let printed_second = second.printed_until(last).await;

        // Never ahead: the cursor file names a message the first run printed.
        let recorded = printed_first
            .iter()
            .position(|id| *id == stored)
            .unwrap_or_else(|| {
                panic!("{transport}: the cursor file {stored} is not a printed message")
            });
        // What the first run printed after its last update of the file is printed again,
        // first; nothing else is.
        let again = &printed_first[recorded + 1..];
        assert_eq!(
            &printed_second[..again.len()],
            again,
            "{transport}: the second run starts after the cursor file"
        );
        let mut once: Vec<String> = printed_first[..=recorded].to_vec();
        once.extend_from_slice(&printed_second);
        assert_eq!(
            once, published,
            "{transport}: every message published, in order, exactly once"
        );
        assert!(
            again.len() <= 1 || transport != "ws",
            "{transport}: a WebSocket run records every message as it prints it: {again:?}"
        );
    }
}

/// `sub` follows the gateway through a restart on every transport: it reconnects by itself,
/// says so, reports the `history_lost` reset (the in-memory hub starts afresh), and prints
/// what is published afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn sub_reconnects_when_the_gateway_restarts_and_reports_the_reset() {
    let config = Config {
        shutdown_grace: Duration::from_millis(200),
        ..Config::default()
    };
    let gw = Gateway::start(config.clone()).await;
    let addr = gw.addr();
    let base = gw.base();
    let dir = scratch_dir();
    let mut subs = Vec::new();
    for transport in TRANSPORTS {
        let cursor_file = dir.join(format!("{transport}.cursor"));
        subs.push(Sub::start(&base, &cursor_file, &["--transport", transport, "chat"]).await);
    }
    let before = publish_with_cli(&base, &["chat", "before"], "").await;
    for sub in &mut subs {
        assert_eq!(id_of(&sub.envelope().await), before[0]);
    }
    gw.shutdown().await;
    for sub in &subs {
        sub.stderr_shows("reconnecting in").await;
    }
    let gw = Gateway::start_on(addr, config).await;
    for sub in &subs {
        sub.stderr_shows("reset on chat (history_lost)").await;
        sub.stderr_shows("switchboard: reconnected over").await;
    }
    let after = publish_with_cli(&gw.base(), &["chat", "after"], "").await;
    for sub in &mut subs {
        let envelope = sub.envelope().await;
        switchboard_e2e::assert_envelope(&envelope, "chat", &after[0], &json!("after"));
    }
}

/// A bad topic, cursor or URL is a usage error (2); a gateway that cannot be reached is 3; a
/// refusal is 1, with the gateway's code and message on stderr; nothing goes to stdout.
#[tokio::test(flavor = "multi_thread")]
async fn exit_codes() {
    let config = Config {
        max_topics_per_connection: 1,
        ..Config::default()
    };
    let gw = Gateway::start(config).await;
    let base = gw.base();
    let nowhere = format!("http://127.0.0.1:{}", switchboard_e2e::process::free_port());
    let cases: Vec<(Vec<&str>, &str, i32, &str)> = vec![
        (vec!["pub"], "", 2, "TOPIC"),
        (
            vec!["pub", "--url", &base, "no spaces", "x"],
            "",
            2,
            "topic \"no spaces\"",
        ),
        (
            vec!["pub", "--url", "127.0.0.1:8080", "t", "x"],
            "",
            2,
            "http:// or https://",
        ),
        (
            vec!["sub", "--url", &base, "--since", "nonsense", "t"],
            "",
            2,
            "--since: cursor has a malformed position",
        ),
        (
            vec!["sub", "--url", &base, "--transport", "carrier-pigeon", "t"],
            "",
            2,
            "carrier-pigeon",
        ),
        (
            vec!["pub", "--url", &nowhere, "t", "x"],
            "",
            3,
            "cannot connect",
        ),
        (vec!["topics", "--url", &nowhere], "", 3, "cannot connect"),
        (
            vec!["pub", "--url", &base, "--json", "t"],
            "{}\nnot json\n",
            1,
            "400 bad_json: line 2:",
        ),
        (
            vec!["sub", "--url", &base, "--transport", "ws", "a", "b"],
            "",
            1,
            "400 too_many_topics",
        ),
        (
            vec!["sub", "--url", &base, "--transport", "sse", "a", "b"],
            "",
            1,
            "400 too_many_topics",
        ),
        (
            vec!["sub", "--url", &base, "--transport", "poll", "a", "b"],
            "",
            1,
            "400 too_many_topics",
        ),
    ];
    for (args, input, code, says) in cases {
        let ran = run(switchboard(&args), input).await;
        assert_eq!(ran.code, Some(code), "{args:?}: {ran:?}");
        assert!(
            ran.stderr.contains(says),
            "{args:?} should say {says:?}: {ran:?}"
        );
        if args[0] == "pub" && code == 1 {
            // The first line was published, and its id printed, before the second failed.
            assert_eq!(ran.stdout.lines().count(), 1, "{ran:?}");
        } else {
            assert_eq!(ran.stdout, "", "{args:?}");
        }
    }
}

/// Answers every request with `status` and `body` (JSON), and keeps each request's head.
async fn fake_server(status: &'static str, body: String) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let heads = Arc::new(Mutex::new(Vec::new()));
    let kept = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && socket.read(&mut byte).await.unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            kept.lock()
                .expect("heads")
                .push(String::from_utf8_lossy(&head).into_owned());
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        }
    });
    (addr, heads)
}

/// Answers every request with `status` and the protocol's error `code`.
async fn refusing_server(
    status: &'static str,
    code: &'static str,
) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    fake_server(
        status,
        format!(r#"{{"error":{{"code":"{code}","message":"token expired"}}}}"#),
    )
    .await
}

/// `topics` and `top` ask the admin API for its topic list (with the admin key) and print it
/// as a table; `top` busiest first, on a cleared screen, until `q`.
#[tokio::test(flavor = "multi_thread")]
async fn topics_and_top_print_the_admin_list() {
    let list = r#"{"topics":[
        {"topic":"chat","subscribers":{"ws":2,"sse":1,"poll":0},"retained":{"messages":12,"bytes":3456},"first":"a-b-1","last":"a-b-12","rate_per_second":0.4},
        {"topic":"chat/busy","subscribers":{"ws":1,"sse":0,"poll":0},"retained":{"messages":1000,"bytes":2097152},"first":"c-d-9001","last":"c-d-10000","rate_per_second":250.5}
    ],"more":false}"#;
    let (addr, heads) = fake_server("200 OK", list.to_owned()).await;
    let url = format!("http://{addr}");
    let mut command = switchboard(&["topics", "--url", &url, "--prefix", "chat", "--limit", "5"]);
    command.env("SWITCHBOARD_ADMIN_KEY", "k3y");
    let ran = run(command, "").await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert_eq!(
        ran.stdout,
        "\
TOPIC      WS  SSE  POLL  RETAINED    BYTES  MSG/S  LAST
chat        2    1     0        12  3.4 KiB    0.4  a-b-12
chat/busy   1    0     0      1000  2.0 MiB  250.5  c-d-10000
"
    );
    let head = heads.lock().expect("heads")[0].clone();
    assert!(
        head.starts_with("GET /admin/topics?prefix=chat&limit=5 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\nauthorization: bearer k3y\r\n"),
        "{head}"
    );

    let ran = run(
        switchboard(&["top", "--url", &url, "--interval", "10ms"]),
        "q",
    )
    .await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let screen = ran
        .stdout
        .rsplit("\x1b[H\x1b[2J")
        .next()
        .unwrap_or_default();
    let rows: Vec<&str> = screen.lines().skip(3).collect();
    assert!(rows[0].starts_with("chat/busy "), "busiest first: {screen}");
    assert!(rows[1].starts_with("chat "), "{screen}");
}

/// `--token` (or `SWITCHBOARD_TOKEN`) goes as `Authorization: Bearer` on every request and on
/// the WebSocket handshake; a 401 or 403 is exit code 4, with the gateway's error on stderr.
#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_sent_and_refusals_of_them_are_exit_code_4() {
    for (status, code) in [
        ("401 Unauthorized", "unauthorized"),
        ("403 Forbidden", "forbidden"),
    ] {
        let (addr, heads) = refusing_server(status, code).await;
        let url = format!("http://{addr}");
        let mut runs = vec![
            switchboard(&["pub", "--url", &url, "--token", "s3cret", "t", "x"]),
            switchboard(&["topics", "--url", &url, "--admin-key", "s3cret"]),
        ];
        for transport in TRANSPORTS {
            let mut command = switchboard(&["sub", "--url", &url, "--transport", transport, "t"]);
            command.env("SWITCHBOARD_TOKEN", "s3cret");
            runs.push(command);
        }
        let count = runs.len();
        for command in runs {
            let ran = run(command, "").await;
            assert_eq!(ran.code, Some(4), "{ran:?}");
            let status_code = &status[..3];
            assert!(
                ran.stderr
                    .contains(&format!("{status_code} {code}: token expired")),
                "{ran:?}"
            );
        }
        let heads = heads.lock().expect("heads").clone();
        assert_eq!(heads.len(), count, "{heads:?}");
        for head in &heads {
            assert!(
                head.to_ascii_lowercase()
                    .contains("\r\nauthorization: bearer s3cret\r\n"),
                "no token in {head}"
            );
        }
        assert!(
            heads
                .iter()
                .any(|head| head.to_ascii_lowercase().contains("upgrade: websocket"))
        );
    }
}

/// `check-config` prints every setting with its value and where it came from (flag,
/// environment, file, default), and refuses a bad file with exit code 2 and the reason.
#[tokio::test(flavor = "multi_thread")]
async fn check_config_shows_each_setting_and_its_source_and_refuses_bad_files() {
    let dir = scratch_dir();
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "heartbeat_interval = \"20s\"\nretention_messages = 5000\nredis = \"redis://app:pw@10.0.0.1:6379\"\n",
    )
    .expect("write");
    let mut command = switchboard(&["check-config", "--retention-messages", "7", "--config"]);
    command.arg(&good).env("SWITCHBOARD_POLL_BATCH", "50");
    let ran = run(command, "").await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let row = |name: &str| -> Vec<String> {
        let line = ran
            .stdout
            .lines()
            .find(|line| line.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in {}", ran.stdout));
        line.split_whitespace().map(str::to_owned).collect()
    };
    assert_eq!(
        row("heartbeat_interval"),
        ["heartbeat_interval", "\"20s\"", "file"]
    );
    assert_eq!(
        row("retention_messages"),
        ["retention_messages", "7", "flag"]
    );
    assert_eq!(row("poll_batch"), ["poll_batch", "50", "environment"]);
    assert_eq!(row("listen"), ["listen", "\"127.0.0.1:8080\"", "default"]);
    assert_eq!(
        row("redis"),
        ["redis", "\"redis://app:(hidden)@10.0.0.1:6379\"", "file"]
    );
    assert_eq!(row("config")[2], "flag");
    assert!(
        !ran.stdout.contains("pw@"),
        "a password was printed: {}",
        ran.stdout
    );
    // Every line after the header is a setting, a value and one of the four sources.
    for line in ran.stdout.lines().skip(1) {
        let source = line.split_whitespace().last().unwrap_or_default();
        assert!(
            ["flag", "environment", "file", "default"].contains(&source),
            "{line}"
        );
    }
    assert!(ran.stdout.lines().count() > 30, "{}", ran.stdout);

    let bad_files = [
        ("no_such_setting = 1\n", "unknown setting `no_such_setting`"),
        ("heartbeat_interval = \"soon\"\n", "heartbeat_interval"),
        (
            "poll_batch = 0\n",
            "poll_batch must be between 1 and 100000, got 0",
        ),
        ("retention_messages = \"many\"\n", "retention_messages"),
        ("not toml at all", "bad.toml"),
    ];
    for (text, says) in bad_files {
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, text).expect("write");
        let mut command = switchboard(&["check-config", "--config"]);
        command.arg(&bad);
        let ran = run(command, "").await;
        assert_eq!(ran.code, Some(2), "{text}: {ran:?}");
        assert!(
            ran.stderr.contains(says),
            "{text} should say {says:?}: {ran:?}"
        );
        assert_eq!(ran.stdout, "", "{text}");
    }
    let mut command = switchboard(&["check-config", "--config"]);
    command.arg(dir.join("missing.toml"));
    let ran = run(command, "").await;
    assert_eq!(ran.code, Some(2), "{ran:?}");
    assert!(ran.stderr.contains("cannot read"), "{ran:?}");
}

/// Runs `openssl` with `args` in `dir`.
async fn openssl(dir: &Path, args: &[&str]) {
    let mut command = Command::new("openssl");
    command.args(args).current_dir(dir);
    let output = switchboard_e2e::process::output_within("openssl", &mut command, TIMEOUT).await;
    assert!(output.status.success(), "openssl {args:?}: {output:?}");
}

/// A TLS front for `upstream` on a loopback port, with a certificate for `localhost` from a
/// certificate authority of its own (`dir/ca.pem`, for `SSL_CERT_FILE`).
async fn tls_front(dir: &Path, upstream: SocketAddr) -> SocketAddr {
    use tokio_rustls::rustls::ServerConfig;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=switchboard test CA",
        ],
    )
    .await;
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=localhost",
        ],
    )
    .await;
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .expect("write");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "1",
            "-extfile",
            "leaf.ext",
        ],
    )
    .await;
    let certs = CertificateDer::pem_file_iter(dir.join("leaf.pem"))
        .expect("leaf.pem")
        .collect::<Result<Vec<_>, _>>()
        .expect("certificates");
    let key = PrivateKeyDer::from_pem_file(dir.join("leaf.key")).expect("leaf.key");
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("the certificate");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

/// `--url https://…` speaks TLS, checks the certificate against the system's roots
/// (`SSL_CERT_FILE` here), and works for publishing and for `wss://`.
#[tokio::test(flavor = "multi_thread")]
async fn https_urls_use_tls() {
    let gw = Gateway::start_default().await;
    let dir = scratch_dir();
    let front = tls_front(&dir, gw.addr()).await;
    let url = format!("https://localhost:{}", front.port());
    let ca = dir.join("ca.pem");
    for transport in TRANSPORTS {
        let topic = format!("tls-{transport}");
        let cursor_file = dir.join(format!("{transport}.cursor"));
        let mut command = switchboard(&["sub", "--url", &url, "--cursor-file"]);
        command
            .arg(&cursor_file)
            .args(["--transport", transport, &topic])
            .env("SSL_CERT_FILE", &ca);
        let mut sub = Sub::spawn(command, &cursor_file).await;
        let mut publish = switchboard(&["pub", "--url", &url, &topic, "over TLS"]);
        publish.env("SSL_CERT_FILE", &ca);
        let ran = run(publish, "").await;
        assert_eq!(ran.code, Some(0), "{ran:?}");
        let envelope = sub.envelope().await;
        switchboard_e2e::assert_envelope(&envelope, &topic, ran.stdout.trim(), &json!("over TLS"));
    }
    // Without the authority's certificate, the gateway's is not trusted.
    let ran = run(switchboard(&["pub", "--url", &url, "t", "x"]), "").await;
    assert_eq!(ran.code, Some(3), "{ran:?}");
    assert!(ran.stderr.contains("certificate"), "{ran:?}");
}

/// `topics` against a real gateway's admin API: the topic, its subscriber and its retained
/// message, in the table.
#[tokio::test(flavor = "multi_thread")]
async fn topics_on_a_real_gateway() {
    let gateway = Gateway::start_default().await;
    let base = gateway.base();
    let _follower =
        switchboard_e2e::SseClient::connect(&gateway.http_url("/events?topic=room.7")).await;
    switchboard_e2e::publish(
        &gateway.http_url("/events?topic=room.7"),
        &serde_json::json!(1),
    )
    .await;
    let ran = run(
        switchboard(&["topics", "--url", &base, "--prefix", "room."]),
        "",
    )
    .await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let row = ran
        .stdout
        .lines()
        .find(|line| line.starts_with("room.7"))
        .unwrap_or_else(|| panic!("no room.7 row: {ran:?}"));
    let columns: Vec<&str> = row.split_whitespace().collect();
    // TOPIC WS SSE POLL RETAINED …
    assert_eq!(&columns[..5], ["room.7", "0", "1", "0", "1"], "{row}");
}
