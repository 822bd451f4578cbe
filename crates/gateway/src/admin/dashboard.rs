//! The dashboard: one page (`dashboard.html`, embedded) fed by a stream of stats snapshots,
//! once a second, over the gateway's own SSE wire code (`GET /admin/stream`), and the same
//! snapshot as JSON (`GET /admin/stats`) for the page's fallback and for scripts.

use std::convert::Infallible;
use std::sync::LazyLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{Html, Response};
use axum::routing::get;
use bytes::{Bytes, BytesMut};

use crate::activity::Activity;
use crate::connections::Transport;
use crate::error::AppError;
use crate::responses::uncached_json;
use crate::state::AppState;
use crate::wire::admin::{self, ByTransport, Stats, Topic};
use crate::wire::sse;

/// The page, built into the binary: no CDN, no build step.
const PAGE: &str = include_str!("dashboard.html");

/// How often the stream sends a snapshot.
const INTERVAL: Duration = Duration::from_secs(1);

/// Busiest topics in a snapshot.
const BUSIEST: usize = 10;

/// Topics looked at to find the busiest ones.
const TOPICS_SCANNED: usize = 1000;

/// When the process started, for the uptime.
static STARTED: LazyLock<Instant> = LazyLock::new(Instant::now);

/// `/dashboard`, `/admin/stream` and `/admin/stats`.
pub fn routes() -> Router<AppState> {
    LazyLock::force(&STARTED);
    Router::new()
        .route("/dashboard", get(page))
        .route("/admin/stream", get(stream))
        .route("/admin/stats", get(stats))
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// The snapshot now.
async fn snapshot(state: &AppState) -> Result<Stats, AppError> {
    let (mut topics, _) = state.broker.topics("", TOPICS_SCANNED).await?;
    let busy =
        |t: &switchboard_hub::TopicStats| (t.rate_per_second, t.subscribers.iter().sum::<usize>());
    topics.sort_by(|a, b| {
        busy(b)
            .partial_cmp(&busy(a))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    topics.truncate(BUSIEST);
    let activity = &state.activity;
    let deliveries = Transport::ALL.map(|t| Activity::load(&activity.deliveries[t.index()]));
    Ok(Stats {
        time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        uptime_seconds: (STARTED.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        broker: state.broker.status().kind,
        connections: ByTransport::from_indexed(&state.live_connections.counts()),
        published: Activity::load(&activity.published),
        deliveries: ByTransport::from_indexed(&deliveries),
        resets: Activity::load(&activity.resets),
        slow_consumers: Activity::load(&activity.slow_consumers),
        disconnected: Activity::load(&activity.disconnected),
        queued_bytes: state.queue_limits.queued_bytes(),
        topics: topics.iter().map(Topic::new).collect(),
    })
}

/// `GET /admin/stats`: one snapshot as JSON.
async fn stats(State(state): State<AppState>) -> Result<Response, AppError> {
    Ok(uncached_json(admin::json(&snapshot(&state).await?)))
}

/// `GET /admin/stream`: `event: stats` with a snapshot every second, until the client goes or
/// the gateway shuts down. A snapshot the broker cannot give is skipped.
async fn stream(State(state): State<AppState>) -> Response {
    let shutdown = state.shutdown.clone();
    let retry = state.config.sse_retry;
    let body = async_stream::stream! {
        let mut opening = BytesMut::new();
        sse::put_retry(&mut opening, retry);
        yield Ok::<Bytes, Infallible>(opening.freeze());
        let mut ticks = tokio::time::interval(INTERVAL);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let mut event = BytesMut::new();
            match snapshot(&state).await {
                Ok(stats) => sse::put_event(&mut event, "stats", None, &admin::json(&stats)),
                Err(error) => event.extend_from_slice(sse::comment(&error.message).as_bytes()),
            }
            yield Ok(event.freeze());
        }
    };
    crate::responses::event_stream(Body::from_stream(body))
}
