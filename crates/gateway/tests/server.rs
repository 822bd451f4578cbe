//! `server::run` as a library user drives it.

use std::time::Duration;

use tokio::net::TcpListener;

/// A shutdown signal that fails (here, a panicking future) stops the gateway rather than
/// leaving one that can never be stopped.
#[tokio::test]
async fn a_panicking_shutdown_signal_stops_the_gateway() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let config = switchboard::Config {
        shutdown_grace: Duration::from_secs(600),
        ..switchboard::Config::default()
    };
    let run = switchboard::server::run(listener, config, async {
        panic!("the signal handler failed");
    });
    let stopped = tokio::time::timeout(Duration::from_secs(10), run).await;
    assert!(
        matches!(stopped, Ok(Ok(()))),
        "the gateway did not stop: {stopped:?}"
    );
}
