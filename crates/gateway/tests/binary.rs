//! The `switchboard` binary as a user runs it: the startup line, a live SSE stream, and a clean
//! exit on SIGTERM that ends the stream.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--listen", "127.0.0.1:0", "--shutdown-grace", "5s"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
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

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sse = TcpStream::connect(&addr).expect("connect");
    sse.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    write!(
        sse,
        "GET /events?topic=bin HTTP/1.1\r\nHost: {addr}\r\n\r\n"
    )
    .expect("request");
    let head = read_until(&mut sse, "event: subscribed", deadline);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    // The chunked stream ends with its terminating chunk: a clean end, not a reset.
    let rest = read_until(&mut sse, "0\r\n\r\n", deadline);
    assert!(rest.ends_with("0\r\n\r\n"), "{rest:?}");
    let exit = child.wait().expect("exit status");
    assert!(exit.success(), "exited with {exit}");
    assert!(Instant::now() < deadline);
}
