//! A gateway running in-process on an ephemeral port.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchboard::Config;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{Endpoint, TIMEOUT};

/// A gateway serving on `127.0.0.1:<ephemeral>`. Dropping it triggers shutdown too.
#[derive(Debug)]
pub struct Gateway {
    addr: SocketAddr,
    shutdown_grace: Duration,
    trigger: oneshot::Sender<()>,
    run: JoinHandle<io::Result<()>>,
}

/// The gateway's own address: clients talk to it directly.
impl Endpoint for Gateway {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Gateway {
    /// Binds `127.0.0.1:0` and runs `switchboard::server::run` with `config` on it.
    /// The listener is bound before this returns, so clients can connect at once.
    pub async fn start(config: Config) -> Gateway {
        Gateway::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// [`start`](Self::start) on `addr`: a node restarted where its clients (or a proxy) expect
    /// it. Panics if `addr` is taken.
    pub async fn start_on(addr: SocketAddr, mut config: Config) -> Gateway {
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let addr = listener.local_addr().expect("listener address");
        config.listen = addr;
        let shutdown_grace = config.shutdown_grace;
        let (trigger, triggered) = oneshot::channel::<()>();
        let shutdown = async move {
            // A dropped trigger (the test is over) shuts down as well.
            let _ = triggered.await;
        };
        let run = tokio::spawn(switchboard::server::run(listener, config, shutdown));
        Gateway {
            addr,
            shutdown_grace,
            trigger,
            run,
        }
    }

    /// A gateway with the default configuration.
    pub async fn start_default() -> Gateway {
        Gateway::start(Config::default()).await
    }

    /// Triggers shutdown and waits for `run` to return (at most the grace period plus
    /// [`TIMEOUT`]); panics if it fails or takes longer. Returns how long it took.
    pub async fn shutdown(self) -> Duration {
        let started = Instant::now();
        let _ = self.trigger.send(());
        let limit = self.shutdown_grace + TIMEOUT;
        match tokio::time::timeout(limit, self.run).await {
            Ok(Ok(Ok(()))) => started.elapsed(),
            Ok(Ok(Err(e))) => panic!("server::run returned an error: {e}"),
            Ok(Err(e)) => panic!("server::run panicked or was cancelled: {e}"),
            Err(_) => panic!("server::run did not return within {limit:?} of shutdown"),
        }
    }
}
