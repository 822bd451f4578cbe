//! A real `curl -N` reading `/events` sees a message published after it connected.

use std::process::Stdio;

use serde_json::json;
use switchboard_e2e::{Endpoint, Gateway, assert_envelope, publish, within};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    within("a line from curl", lines.next_line())
        .await
        .expect("reading curl's output")
        .expect("curl exited early")
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_sees_published_message() {
    let gw = Gateway::start_default().await;
    let mut curl = match Command::new("curl")
        .args(["-sSN", &gw.http_url("/events?topic=curl")])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("curl is not installed: this test needs it (`make test` installs it)")
        }
        Err(e) => panic!("starting curl: {e}"),
    };
    let mut lines = BufReader::new(curl.stdout.take().expect("stdout")).lines();
    // Connected and subscribed: the subscribed event has been printed in full.
    while next_line(&mut lines).await != "event: subscribed" {}
    while !next_line(&mut lines).await.is_empty() {}

    let data = json!({"via": "curl"});
    let id = publish(&gw.http_url("/events?topic=curl"), &data).await;
    while next_line(&mut lines).await != "event: message" {}
    let envelope = loop {
        let line = next_line(&mut lines).await;
        if let Some(json) = line.strip_prefix("data: ") {
            break serde_json::from_str(json).expect("data line is JSON");
        }
        assert!(!line.is_empty(), "message event without data");
    };
    assert_envelope(&envelope, "curl", &id, &data);
    curl.kill().await.expect("kill curl");
}
