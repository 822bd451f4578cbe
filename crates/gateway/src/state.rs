//! What every handler shares.

use std::ops::Deref;
use std::sync::Arc;

use switchboard_hub::{Broker, QueueLimits};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::activity::Activity;
use crate::auth::Auth;
use crate::config::Config;
use crate::connections::{Connections, Transport};
use crate::error::{AppError, ErrorCode};
use crate::metrics::{BrokerKind, ConnectionMetric, Metrics};
use crate::rate::RateLimits;
use crate::socket::WriteDeadlines;
use crate::subscription::Subscription;

/// Shared by every handler and connection: one pointer, so that cloning it for a request is one
/// atomic increment and an open connection holds eight bytes of it.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] points to. `Clone` only so that [`AppState::with_auth`] can copy it when
/// the state is already shared; the copy shares every limit and counter with the original.
#[derive(Debug, Clone)]
pub struct Shared {
    /// Where messages are published and subscribed; transports see only the trait.
    pub broker: Arc<dyn Broker>,
    pub config: Arc<Config>,
    /// Cancelled when the gateway starts shutting down: streams end, polls answer.
    pub shutdown: CancellationToken,
    /// One permit per open stream (WebSocket, SSE, held poll): the `max_connections` limit.
    connections: Arc<Semaphore>,
    /// Every connection's task and every WebSocket session (which runs on its own after the
    /// upgrade): shutdown waits for all of them here.
    pub tasks: TaskTracker,
    /// One permit per open client socket, of any kind: the `max_sockets` limit.
    pub sockets: Arc<Semaphore>,
    /// The write deadline every socket shares, with its count of clients dropped by it.
    pub write_deadlines: Arc<WriteDeadlines>,
    /// The bounds of every connection's inbox, and of all of them together.
    pub queue_limits: Arc<QueueLimits>,
    /// Who may subscribe and publish.
    pub auth: Arc<Auth>,
    /// Publishes and subscribe requests allowed per client address.
    pub rates: Arc<RateLimits>,
    /// Every live connection, for the admin API.
    pub live_connections: Arc<Connections>,
    /// Counters of publishes, deliveries, resets and endings, for the admin API and metrics.
    pub activity: Arc<Activity>,
    /// What the gateway counts for `/metrics`; `None` when metrics are off.
    pub metrics: Option<Arc<Metrics>>,
}

impl AppState {
    pub fn new(broker: Arc<dyn Broker>, config: Config, shutdown: CancellationToken) -> AppState {
        let broker_kind = BrokerKind::of(&broker.status());
        AppState(Arc::new(Shared {
            metrics: config.metrics.then(|| Arc::new(Metrics::new(broker_kind))),
            broker,
            connections: Arc::new(Semaphore::new(config.max_connections)),
            sockets: Arc::new(Semaphore::new(config.max_sockets)),
            write_deadlines: Arc::new(WriteDeadlines::new(config.write_timeout, shutdown.clone())),
            queue_limits: QueueLimits::new(
                config.send_queue,
                config.send_queue_bytes,
                config.send_queue_total_bytes,
            ),
            auth: Arc::new(Auth::open()),
            rates: Arc::new(RateLimits::from_config(&config)),
            config: Arc::new(config),
            shutdown,
            tasks: TaskTracker::new(),
            live_connections: Arc::default(),
            activity: Arc::default(),
        }))
    }

    /// The same state with access control as `auth` says (open until this is called).
    pub fn with_auth(mut self, auth: Auth) -> AppState {
        Arc::make_mut(&mut self.0).auth = Arc::new(auth);
        self
    }

    /// A slot for one more open stream, released when the permit is dropped.
    pub fn open_connection(&self) -> Result<OwnedSemaphorePermit, AppError> {
        if self.shutdown.is_cancelled() {
            return Err(AppError::new(
                ErrorCode::ShuttingDown,
                "the gateway is shutting down",
            ));
        }
        self.connections.clone().try_acquire_owned().map_err(|_| {
            AppError::new(
                ErrorCode::TooManyConnections,
                format!(
                    "the gateway holds its limit of {} connections; retry later",
                    self.config.max_connections
                ),
            )
        })
    }

    /// Open streams right now.
    pub fn open_connections(&self) -> usize {
        self.config.max_connections - self.connections.available_permits()
    }

    /// Open client sockets right now, of any kind.
    pub fn open_sockets(&self) -> usize {
        self.config.max_sockets - self.sockets.available_permits()
    }

    /// A subscription for a connection (or poll) over `transport`.
    pub fn subscription(&self, transport: Transport) -> Subscription {
        Subscription::new(
            self.broker.clone(),
            self.queue_limits.clone(),
            self.config.max_topics_per_connection,
            transport,
            self.activity.clone(),
        )
        .counted(self.metrics.as_ref(), transport)
    }

    /// Counts a connection opened over `transport`, and closed when what it returns is
    /// dropped; nothing when metrics are off.
    pub fn connection_metric(&self, transport: Transport) -> Option<ConnectionMetric> {
        Some(self.metrics.as_ref()?.connection(transport))
    }

    /// Counts a refused request or frame.
    pub fn count_rejection(&self, code: ErrorCode) {
        if let Some(metrics) = &self.metrics {
            metrics.rejected(code);
        }
    }
}
