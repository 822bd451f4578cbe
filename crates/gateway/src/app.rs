//! The HTTP surface: routes, the Host and origin checks, CORS, request logging and JSON errors.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{from_fn_with_state, map_response, map_response_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::time::Duration;

use tower_http::classify::ServerErrorsFailureClass;
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::client_addr::client_ip;
use crate::config::Config;
use crate::error::{AppError, ErrorCode};
use crate::host::{self, HostPolicy};
use crate::request_id::{self, RequestId};
use crate::state::AppState;
use crate::{admin, batch, origin, poll, publish, sse, static_files, ws};

/// The gateway's routes, apart from how they are served.
pub fn app(state: AppState) -> Router {
    let config = state.config.clone();
    let http_transports = Router::new()
        .route("/events", get(sse::subscribe).post(publish::publish))
        .route("/poll", get(poll::poll).post(publish::publish))
        .route("/publish", post(batch::publish_batch))
        .layer(origin::cors(&config.allowed_origins));
    let transports = Router::new()
        .route("/ws", get(ws::upgrade))
        .merge(http_transports)
        .route_layer(from_fn_with_state(state.clone(), origin::check));
    let hosts = HostPolicy::new(&config.allowed_hosts, config.listen);
    if hosts == HostPolicy::Any && config.allowed_hosts.is_empty() {
        tracing::warn!(
            "listening on {} and serving requests for any Host; on a public deployment, set \
             allowed_hosts to the names clients use, which refuses DNS rebinding",
            config.listen
        );
    }
    let mut routes = Router::new()
        .merge(transports)
        .with_state(state.clone())
        .merge(static_files::router(config.static_dir.as_deref()));
    // Without an address of their own, the admin routes are served here.
    if config.admin_listen.is_none() {
        routes = routes.merge(admin::router(state.clone()));
    }
    let routes = routes
        .layer(from_fn_with_state(Arc::new(hosts), host::check))
        // Added after the Host check's layer, so not under it: load balancers and orchestrators
        // probe by address, and they tell a rebinding page nothing but counters.
        .route("/healthz", get(health).with_state(state.clone()))
        .route("/readyz", get(ready).with_state(state.clone()));
    served(routes, state)
}

/// The admin routes alone, for the `admin_listen` address.
pub fn admin_app(state: AppState, admin_listen: SocketAddr) -> Router {
    let hosts = HostPolicy::new(&state.config.allowed_hosts, admin_listen);
    let routes = admin::router(state.clone())
        .fallback(|| async { static_files::not_found() })
        .layer(from_fn_with_state(Arc::new(hosts), host::check));
    served(routes, state)
}

/// What every listener's routes share: JSON 405s, the count of rejections, request spans and
/// request ids.
fn served(routes: Router, state: AppState) -> Router {
    let mut routes = routes.layer(map_response(json_method_not_allowed));
    if state.metrics.is_some() {
        routes = routes.layer(map_response_with_state(state.clone(), count_rejection));
    }
    let config = state.config.clone();
    routes
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(move |request: &Request| request_span(request, &config))
                // Answers that are server faults are logged, with their request id, by
                // `request_id::assign`; a 503 is not one.
                .on_failure(|failure: ServerErrorsFailureClass, _: Duration, _: &Span| {
                    if let ServerErrorsFailureClass::Error(error) = failure {
                        tracing::error!("response failed: {error}");
                    }
                }),
        )
        .layer(from_fn_with_state(state.config.clone(), request_id::assign))
}

/// Counts the requests refused with an error code (the code that `AppError` leaves in the
/// response).
async fn count_rejection(State(state): State<AppState>, response: Response) -> Response {
    if let Some(code) = response.extensions().get::<ErrorCode>() {
        state.count_rejection(*code);
    }
    response
}

/// The span around a request, with the client's address. Streams are few and long, so theirs
/// is at info level; polls and publishes are many and short, so theirs is at debug level and
/// costs nothing unless debug logging is on.
fn request_span(request: &Request, config: &Config) -> tracing::Span {
    let path = request.uri().path();
    let method = request.method();
    // Field values are only computed for a span that is enabled.
    let client = || {
        let peer = request.extensions().get::<ConnectInfo<SocketAddr>>()?.0;
        Some(tracing::field::display(client_ip(
            peer,
            request.headers(),
            config,
        )))
    };
    let request_id = || {
        request
            .extensions()
            .get::<RequestId>()
            .map(RequestId::as_str)
    };
    if method == Method::GET && matches!(path, "/ws" | "/events") {
        tracing::info_span!("request", %method, path = %path, client = client(), request_id = request_id())
    } else {
        tracing::debug_span!("request", %method, path = %path, client = client(), request_id = request_id())
    }
}

/// `GET /healthz`: the process is alive, with its counters and its broker's state.
async fn health(State(state): State<AppState>) -> Response {
    if state.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "shutting_down"})),
        )
            .into_response();
    }
    let broker = state.broker.status();
    let mut health = serde_json::json!({
        "status": "ok",
        "broker": broker.kind,
        "ready": broker.unready.is_none(),
        "connections": state.open_connections(),
        "sockets": state.open_sockets(),
        "queued_bytes": state.queue_limits.queued_bytes(),
        "write_timeouts": state.write_deadlines.timed_out(),
        "log_dropped": crate::logging::dropped_lines(),
        "rate_limited_addresses": state.rates.tracked_addresses(),
    });
    if let (Some(health), serde_json::Value::Object(details)) =
        (health.as_object_mut(), broker.details)
    {
        health.extend(details);
    }
    Json(health).into_response()
}

/// `GET /readyz`: whether this node can serve now (its broker is reachable, and it is not
/// shutting down), for load balancers and orchestrators to take it out while it cannot.
async fn ready(State(state): State<AppState>) -> Response {
    let unready = if state.shutdown.is_cancelled() {
        Some("the gateway is shutting down".to_owned())
    } else {
        state.broker.status().unready
    };
    match unready {
        None => Json(serde_json::json!({"status": "ready"})).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "unready", "reason": reason})),
        )
            .into_response(),
    }
}

/// The router answers a wrong method with an empty 405; give it the JSON error body, keeping
/// the `Allow` header.
async fn json_method_not_allowed(response: Response) -> Response {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED
        || response.headers().contains_key(header::CONTENT_TYPE)
    {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let mut json = AppError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed for this path",
    )
    .into_response();
    if let Some(allow) = allow {
        json.headers_mut().insert(header::ALLOW, allow);
    }
    json
}
