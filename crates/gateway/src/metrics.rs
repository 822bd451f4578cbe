//! The gateway's metrics, served at `GET /metrics` in the Prometheus text format
//! (docs/ADMIN.md lists every series).
//!
//! What only the gateway sees (connections, deliveries, publishes, resets, rejections and the
//! two latencies) is counted where it happens, on counters made once at start-up: recording
//! is an atomic add, with no lock, lookup or allocation. What the broker and other parts
//! already count (topics, retention, evictions, slow consumers, Redis) is read at scrape time
//! and copied into the registry then, never counted twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::core::{AtomicU64, GenericCounter};
use prometheus::{Encoder, Histogram, HistogramOpts, IntGauge, Opts, Registry};
use switchboard_hub::{BrokerStatus, ResetReason};

use crate::error::ErrorCode;

/// A counter of whole events.
pub type Counter = GenericCounter<AtomicU64>;

/// The transport a connection, delivery or publish used (the `transport` label).
pub use crate::connections::Transport;

/// Why a connection ended (the `reason` label of `switchboard_connections_closed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client left, or a poll was answered.
    Normal,
    /// Its queue overflowed: it did not read fast enough.
    SlowConsumer,
    /// The gateway is shutting down.
    Shutdown,
    /// The broker failed, the connection broke, or the client broke the protocol.
    Error,
    /// Its access was refused or withdrawn (for access control).
    Auth,
}

impl CloseReason {
    const ALL: [CloseReason; 5] = [
        CloseReason::Normal,
        CloseReason::SlowConsumer,
        CloseReason::Shutdown,
        CloseReason::Error,
        CloseReason::Auth,
    ];

    fn as_str(self) -> &'static str {
        match self {
            CloseReason::Normal => "normal",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Error => "error",
            CloseReason::Auth => "auth",
        }
    }
}

/// The broker behind the gateway, for the series that only it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// The in-memory hub.
    Memory,
    /// The hub with a data directory (`data_dir`).
    Disk,
    /// Redis, one server or a cluster: publishes are round trips.
    Redis,
}

impl BrokerKind {
    pub fn of(status: &BrokerStatus) -> BrokerKind {
        match status.kind {
            "memory" => BrokerKind::Memory,
            "disk" => BrokerKind::Disk,
            _ => BrokerKind::Redis,
        }
    }
}

/// Every reset reason, in the order of the `resets` counters.
const RESET_REASONS: [ResetReason; 2] = [ResetReason::Retention, ResetReason::HistoryLost];

/// Buckets of the publish latency and the broker round trip, in seconds: from 50 µs (a
/// publish in memory) to 2.5 s (a Redis command's timeout is 2 s).
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    2.5,
];

/// Buckets of how long polls are held, in seconds: answered at once up to the longest
/// `poll_max_timeout` anyone sensible sets.
const POLL_HOLD_BUCKETS: [f64; 11] = [0.001, 0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0];

/// The gateway's metrics. Shared through an `Arc`; `None` in the state when metrics are off.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Opened connections, by transport.
    opened: [Counter; 3],
    /// Closed connections, by transport and reason.
    closed: [[Counter; 5]; 3],
    /// Connections open now, by transport: opened less closed, set at scrape time.
    open: [IntGauge; 3],
    /// Messages accepted for publishing, by the publisher's transport.
    published: [Counter; 3],
    /// Messages handed to subscribers, by transport.
    delivered: [Counter; 3],
    /// Positions that could not be honoured, by reason.
    resets: [Counter; 2],
    /// Requests and frames refused, by error code (in `ErrorCode::ALL` order).
    rejected: Vec<Counter>,
    /// From a publish's acceptance until the message is in every local subscriber's queue.
    publish_seconds: Histogram,
    /// How long held polls waited.
    poll_hold_seconds: Histogram,
    /// Redis only: a publish's round trip to Redis.
    broker_round_trip_seconds: Option<Histogram>,
    /// What other parts count, copied in at scrape time.
    scraped: Scraped,
    /// One scrape at a time, so that copying counters in cannot interleave.
    scraping: parking_lot::Mutex<()>,
}

/// Series whose values are read from the broker and the gateway's other counters when
/// scraped.
#[derive(Debug)]
struct Scraped {
    topics: IntGauge,
    retained_messages: IntGauge,
    retained_bytes: IntGauge,
    /// By cause: count, age, budget.
    evicted: [Counter; 3],
    /// By cause: queue_full, write_timeout.
    slow_consumers: [Counter; 2],
    broker_up: IntGauge,
    broker_publish_failures: Counter,
    broker_recovered: Counter,
    broker_resyncs: Counter,
    log_dropped: Counter,
    /// With a data directory only.
    store: Option<StoreSeries>,
}

/// The data directory's series, read from the hub's counters.
#[derive(Debug)]
struct StoreSeries {
    commits: Counter,
    stored_bytes: IntGauge,
}

/// What the scrape needs from the rest of the gateway.
#[derive(Debug)]
pub struct ScrapeInputs {
    pub broker: BrokerStatus,
    pub write_timeouts: u64,
    pub log_dropped: u64,
}

impl Metrics {
    /// Registers every series: Redis adds the broker round-trip histogram, a data directory
    /// the store's series.
    pub fn new(broker: BrokerKind) -> Metrics {
        let registry = Registry::new();
        let by_transport = |name: &str, help: &str| {
            Transport::ALL.map(|t| counter(&registry, name, help, &[("transport", t.as_str())]))
        };
        let opened = by_transport(
            "switchboard_connections_opened_total",
            "Connections opened (WebSocket sessions, SSE streams, held polls).",
        );
        let closed = Transport::ALL.map(|t| {
            CloseReason::ALL.map(|r| {
                counter(
                    &registry,
                    "switchboard_connections_closed_total",
                    "Connections closed, by why they ended.",
                    &[("transport", t.as_str()), ("reason", r.as_str())],
                )
            })
        });
        let open = Transport::ALL.map(|t| {
            gauge(
                &registry,
                "switchboard_connections",
                "Connections open now.",
                &[("transport", t.as_str())],
            )
        });
        let published = by_transport(
            "switchboard_messages_published_total",
            "Messages published, by the transport of the publisher (HTTP POST /events is sse, POST /poll is poll).",
        );
        let delivered = by_transport(
            "switchboard_deliveries_total",
            "Messages delivered to subscribers, one per message and subscriber.",
        );
        let resets = RESET_REASONS.map(|r| {
            counter(
                &registry,
                "switchboard_resets_total",
                "Positions that could not be honoured, told to clients as resets.",
                &[("reason", r.as_str())],
            )
        });
        let rejected = ErrorCode::ALL
            .iter()
            .map(|code| {
                counter(
                    &registry,
                    "switchboard_rejected_total",
                    "Requests and WebSocket frames refused, by error code.",
                    &[("code", code.as_str())],
                )
            })
            .collect();
        let publish_seconds = histogram(
            &registry,
            "switchboard_publish_duration_seconds",
            "From a publish's acceptance until the message is queued for every local subscriber (on Redis: until Redis has stored and published it).",
            &LATENCY_BUCKETS,
        );
        let poll_hold_seconds = histogram(
            &registry,
            "switchboard_poll_hold_seconds",
            "How long held polls waited before they were answered.",
            &POLL_HOLD_BUCKETS,
        );
        let broker_round_trip_seconds = (broker == BrokerKind::Redis).then(|| {
            histogram(
                &registry,
                "switchboard_broker_round_trip_seconds",
                "Round trip of a publish to Redis (the publish script).",
                &LATENCY_BUCKETS,
            )
        });
        let scraped = Scraped {
            topics: gauge(
                &registry,
                "switchboard_topics",
                "Topics now (on Redis: topics with subscribers on this node).",
                &[],
            ),
            retained_messages: gauge(
                &registry,
                "switchboard_retained_messages",
                "Messages retained for resuming (in-memory hub).",
                &[],
            ),
            retained_bytes: gauge(
                &registry,
                "switchboard_retained_bytes",
                "Bytes of messages retained for resuming (in-memory hub).",
                &[],
            ),
            evicted: ["count", "age", "budget"].map(|cause| {
                counter(
                    &registry,
                    "switchboard_evictions_total",
                    "Retained messages dropped, by the limit that dropped them (in-memory hub).",
                    &[("cause", cause)],
                )
            }),
            slow_consumers: ["queue_full", "write_timeout"].map(|cause| {
                counter(
                    &registry,
                    "switchboard_slow_consumer_disconnects_total",
                    "Clients dropped for not reading fast enough: their queue overflowed, or a write made no progress for write_timeout.",
                    &[("cause", cause)],
                )
            }),
            broker_up: gauge(
                &registry,
                "switchboard_broker_up",
                "1 while the broker is reachable and this node is ready, 0 otherwise.",
                &[],
            ),
            broker_publish_failures: counter(
                &registry,
                "switchboard_broker_publish_failures_total",
                "Publishes the broker did not take (Redis).",
                &[],
            ),
            broker_recovered: counter(
                &registry,
                "switchboard_broker_recovered_messages_total",
                "Messages fetched from Redis streams because the channel skipped them.",
                &[],
            ),
            broker_resyncs: counter(
                &registry,
                "switchboard_broker_resyncs_total",
                "Times this node re-read every live topic from Redis (after a reconnect, or falling behind).",
                &[],
            ),
            log_dropped: counter(
                &registry,
                "switchboard_log_dropped_lines_total",
                "Log lines dropped because the log output was full or failing.",
                &[],
            ),
            store: (broker == BrokerKind::Disk).then(|| StoreSeries {
                commits: counter(
                    &registry,
                    "switchboard_store_commits_total",
                    "Commits to the data directory, each made durable before its publishes are answered.",
                    &[],
                ),
                stored_bytes: gauge(
                    &registry,
                    "switchboard_store_retained_bytes",
                    "Bytes of the retained messages as counted against retention_disk.",
                    &[],
                ),
            }),
        };
        Metrics {
            registry,
            opened,
            closed,
            open,
            published,
            delivered,
            resets,
            rejected,
            publish_seconds,
            poll_hold_seconds,
            broker_round_trip_seconds,
            scraped,
            scraping: parking_lot::Mutex::new(()),
        }
    }

    /// Counts an opened connection; dropping what it returns counts it closed.
    pub fn connection(self: &Arc<Metrics>, transport: Transport) -> ConnectionMetric {
        self.opened[transport as usize].inc();
        ConnectionMetric {
            metrics: self.clone(),
            transport,
            reason: CloseReason::Normal,
            opened: Instant::now(),
        }
    }

    /// Counts a publish answered after `took`; on Redis (the only broker with a round-trip
    /// histogram) that is also the publish's round trip.
    pub fn published(&self, transport: Transport, took: Duration) {
        self.published[transport as usize].inc();
        let seconds = took.as_secs_f64();
        self.publish_seconds.observe(seconds);
        if let Some(round_trip) = &self.broker_round_trip_seconds {
            round_trip.observe(seconds);
        }
    }

    /// The counter of deliveries over `transport`, for a connection to keep.
    pub fn deliveries(&self, transport: Transport) -> Counter {
        self.delivered[transport as usize].clone()
    }

    pub fn reset(&self, reason: ResetReason) {
        let index = RESET_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or_default();
        self.resets[index].inc();
    }

    pub fn rejected(&self, code: ErrorCode) {
        self.rejected[code.index()].inc();
    }

    /// The text of a scrape: the registry, after copying in what others count.
    pub fn scrape(&self, inputs: &ScrapeInputs) -> String {
        let _one_at_a_time = self.scraping.lock();
        for (t, open) in self.open.iter().enumerate() {
            // Closed first: a connection that closes in between is then not counted open.
            let closed: u64 = self.closed[t].iter().map(Counter::get).sum();
            let opened = self.opened[t].get();
            open.set(i64::try_from(opened.saturating_sub(closed)).unwrap_or(i64::MAX));
        }
        self.copy_broker(&inputs.broker);
        let scraped = &self.scraped;
        catch_up(&scraped.slow_consumers[1], inputs.write_timeouts);
        catch_up(&scraped.log_dropped, inputs.log_dropped);
        let mut text = Vec::new();
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut text) {
            tracing::error!("cannot encode the metrics: {e}");
        }
        String::from_utf8(text).unwrap_or_default()
    }

    /// Copies the broker's own counters (`BrokerStatus::details`, as `/healthz` shows them).
    fn copy_broker(&self, broker: &BrokerStatus) {
        let scraped = &self.scraped;
        let number = |path: &[&str]| {
            path.iter()
                .try_fold(&broker.details, |value, key| value.get(key))
                .and_then(serde_json::Value::as_u64)
        };
        let set = |gauge: &IntGauge, value: Option<u64>| {
            gauge.set(value.map_or(0, |v| i64::try_from(v).unwrap_or(i64::MAX)));
        };
        set(
            &scraped.topics,
            number(&["topics"]).or(number(&["live_topics"])),
        );
        set(&scraped.retained_messages, number(&["retained_messages"]));
        set(&scraped.retained_bytes, number(&["retained_bytes"]));
        for (counter, cause) in scraped.evicted.iter().zip(["count", "age", "budget"]) {
            catch_up(counter, number(&["evicted", cause]).unwrap_or(0));
        }
        catch_up(
            &scraped.slow_consumers[0],
            number(&["slow_consumers"]).unwrap_or(0),
        );
        scraped.broker_up.set(i64::from(broker.unready.is_none()));
        catch_up(
            &scraped.broker_publish_failures,
            number(&["publish_failures"]).unwrap_or(0),
        );
        catch_up(
            &scraped.broker_recovered,
            number(&["recovered"]).unwrap_or(0),
        );
        catch_up(&scraped.broker_resyncs, number(&["resyncs"]).unwrap_or(0));
        if let Some(store) = &scraped.store {
            catch_up(&store.commits, number(&["commits"]).unwrap_or(0));
            set(&store.stored_bytes, number(&["stored_bytes"]));
        }
    }
}

/// Brings `counter` up to `total`, a count kept elsewhere that only grows.
fn catch_up(counter: &Counter, total: u64) {
    let behind = total.saturating_sub(counter.get());
    if behind > 0 {
        counter.inc_by(behind);
    }
}

/// An open connection, counted closed (with its reason) when dropped.
#[derive(Debug)]
pub struct ConnectionMetric {
    metrics: Arc<Metrics>,
    transport: Transport,
    /// Why it ends; `normal` unless told otherwise.
    reason: CloseReason,
    /// For the poll hold time.
    opened: Instant,
}

impl ConnectionMetric {
    /// Records why the connection is ending.
    pub fn ends(&mut self, reason: CloseReason) {
        self.reason = reason;
    }
}

/// Records why a connection counted in `metric` (`None` when metrics are off) is ending.
pub fn ending(metric: &mut Option<ConnectionMetric>, reason: CloseReason) {
    if let Some(metric) = metric {
        metric.ends(reason);
    }
}

impl Drop for ConnectionMetric {
    fn drop(&mut self) {
        let metrics = &self.metrics;
        metrics.closed[self.transport as usize][self.reason as usize].inc();
        if self.transport == Transport::Poll {
            metrics
                .poll_hold_seconds
                .observe(self.opened.elapsed().as_secs_f64());
        }
    }
}

// Registration only fails for a name or label set registered twice, or an invalid name: all
// of them fixed in this file, and checked by every test that starts a gateway.

fn counter(registry: &Registry, name: &str, help: &str, labels: &[(&str, &str)]) -> Counter {
    let opts = Opts::new(name, help).const_labels(
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    let counter = Counter::with_opts(opts).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(counter.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    counter
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[(&str, &str)]) -> IntGauge {
    let opts = Opts::new(name, help).const_labels(
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    let gauge = IntGauge::with_opts(opts).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(gauge.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    gauge
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    let histogram = Histogram::with_opts(opts).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(histogram.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    histogram
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory_status(details: serde_json::Value) -> ScrapeInputs {
        ScrapeInputs {
            broker: BrokerStatus {
                kind: "memory",
                unready: None,
                details,
            },
            write_timeouts: 2,
            log_dropped: 0,
        }
    }

    #[test]
    fn counts_and_scraped_values_show_in_the_text() {
        let metrics = Arc::new(Metrics::new(BrokerKind::Memory));
        {
            let mut ws = metrics.connection(Transport::Ws);
            ws.ends(CloseReason::SlowConsumer);
        }
        let _sse = metrics.connection(Transport::Sse);
        metrics.deliveries(Transport::Sse).inc_by(3);
        metrics.rejected(ErrorCode::BadTopic);
        metrics.reset(ResetReason::HistoryLost);
        let details = serde_json::json!({
            "topics": 4, "retained_bytes": 100, "retained_messages": 5, "slow_consumers": 1,
            "evicted": {"count": 7, "age": 0, "budget": 1},
        });
        let text = metrics.scrape(&memory_status(details));
        for line in [
            r#"switchboard_connections_closed_total{reason="slow_consumer",transport="ws"} 1"#,
            r#"switchboard_connections{transport="ws"} 0"#,
            r#"switchboard_connections{transport="sse"} 1"#,
            r#"switchboard_deliveries_total{transport="sse"} 3"#,
            r#"switchboard_rejected_total{code="bad_topic"} 1"#,
            r#"switchboard_resets_total{reason="history_lost"} 1"#,
            "switchboard_topics 4",
            "switchboard_retained_messages 5",
            r#"switchboard_evictions_total{cause="count"} 7"#,
            r#"switchboard_slow_consumer_disconnects_total{cause="queue_full"} 1"#,
            r#"switchboard_slow_consumer_disconnects_total{cause="write_timeout"} 2"#,
            "switchboard_broker_up 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(!text.contains("switchboard_broker_round_trip_seconds"));
        assert!(!text.contains("switchboard_store_"));
        // Scraping again does not count the copied totals twice.
        let again = metrics.scrape(&memory_status(serde_json::json!({"evicted": {"count": 7}})));
        assert!(again.contains("switchboard_evictions_total{cause=\"count\"} 7\n"));
    }
}
