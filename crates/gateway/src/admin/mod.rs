//! The admin routes, and who may reach them (this file): the admin API (`api`), the live
//! connections it lists (`crate::connections`), the dashboard with its stats stream
//! (`dashboard`) and `/metrics` are all served on `admin_listen` when it is set (and then
//! only there), on the main listener otherwise (see docs/ADMIN.md).
//!
//! Access: with `admin_key`, a request must carry `Authorization: Bearer KEY`; without one,
//! the routes are open only when the admin address is a loopback address, and then only to
//! loopback clients (a client behind a trusted proxy is the one the proxy reports), so that a
//! proxy on the same machine does not open them to the world.

pub mod api;
pub mod dashboard;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::client_addr::client_ip;
use crate::config::Config;
use crate::error::{AppError, ErrorCode};
use crate::metrics::ScrapeInputs;
use crate::state::AppState;

/// The admin routes, behind the access check.
pub fn router(state: AppState) -> Router {
    let gate = Arc::new(Gate {
        access: Access::new(&state.config),
        config: state.config.clone(),
    });
    Router::new()
        .route("/metrics", get(metrics))
        // The admin API (`/admin/…`) and the dashboard (`/dashboard`) share the listener and
        // the access check.
        .merge(api::routes())
        .merge(dashboard::routes())
        .route_layer(from_fn_with_state(gate, check))
        .with_state(state)
}

/// The key of `admin_key`. Never shown: its `Debug` is redacted, so that no log line or
/// printed configuration carries it.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct AdminKey(String);

/// Checked like the flag, so that a file cannot set an empty key.
impl<'de> Deserialize<'de> for AdminKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl AdminKey {
    /// Whether `offered` is the key, in time that does not depend on where they differ.
    fn matches(&self, offered: &str) -> bool {
        self.0.as_bytes().ct_eq(offered.as_bytes()).into()
    }
}

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminKey(redacted)")
    }
}

impl std::str::FromStr for AdminKey {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the admin key must be printable ASCII without spaces".into());
        }
        Ok(AdminKey(text.to_owned()))
    }
}

/// The access check's state.
#[derive(Debug)]
struct Gate {
    access: Access,
    /// For the client's address behind trusted proxies.
    config: Arc<Config>,
}

/// Who may use the admin routes.
#[derive(Debug)]
pub enum Access {
    /// Requests carrying this key as a bearer token.
    Key(AdminKey),
    /// No key, on a loopback address: loopback clients.
    LoopbackClients,
    /// No key, on an address others can reach: nobody.
    Refused(SocketAddr),
}

impl Access {
    pub fn new(config: &Config) -> Access {
        let address = config.admin_listen.unwrap_or(config.listen);
        match &config.admin_key {
            Some(key) => Access::Key(key.clone()),
            None if address.ip().to_canonical().is_loopback() => Access::LoopbackClients,
            None => Access::Refused(address),
        }
    }

    /// Logs, at start-up, where the admin routes are and who may use them.
    pub fn log(&self, config: &Config) {
        let place = match config.admin_listen {
            Some(address) => format!("on http://{address} only"),
            None => "on the main listener".to_owned(),
        };
        match self {
            Access::Key(_) => {
                tracing::info!("admin routes (/metrics) {place}, for requests with the admin key")
            }
            Access::LoopbackClients => tracing::info!(
                "admin routes (/metrics) {place}, open without a key to loopback clients only"
            ),
            Access::Refused(address) => tracing::warn!(
                "admin routes (/metrics) {place} are refused (403): {address} is not a loopback \
                 address and no admin_key is set; set admin_key, or admin_listen to a loopback \
                 address"
            ),
        }
    }
}

/// Lets a request through to the admin routes, or refuses it: `401 unauthorized` without the
/// key, `403 forbidden` when no key is set and the client may not come in without one.
async fn check(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    let refusal = match &gate.access {
        Access::Key(key) => {
            let offered = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "));
            match offered {
                Some(offered) if key.matches(offered.trim()) => None,
                _ => {
                    let mut response = AppError::new(
                        ErrorCode::Unauthorized,
                        "the admin routes need Authorization: Bearer <admin key>",
                    )
                    .into_response();
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                    return response;
                }
            }
        }
        Access::LoopbackClients => {
            let client = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|peer| client_ip(peer.0, request.headers(), &gate.config));
            match client {
                Some(client) if client.to_canonical().is_loopback() => None,
                _ => Some(
                    "without admin_key the admin routes are open to loopback clients only; \
                     set admin_key",
                ),
            }
        }
        Access::Refused(_) => Some(
            "without admin_key the admin routes are open only on a loopback address; set \
             admin_key, or admin_listen to a loopback address",
        ),
    };
    match refusal {
        None => next.run(request).await,
        Some(message) => AppError::new(ErrorCode::Forbidden, message).into_response(),
    }
}

/// `GET /metrics`: the Prometheus text format.
async fn metrics(State(state): State<AppState>) -> Response {
    let Some(metrics) = &state.metrics else {
        return AppError::new(ErrorCode::NotFound, "metrics are off (metrics = false)")
            .into_response();
    };
    let text = metrics.scrape(&ScrapeInputs {
        broker: state.broker.status(),
        write_timeouts: state.write_deadlines.timed_out(),
        log_dropped: crate::logging::dropped_lines(),
    });
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_and_never_shown() {
        let key: AdminKey = "k3y".parse().expect("a key");
        assert!(key.matches("k3y"));
        assert!(!key.matches("k3"));
        assert!(!key.matches("k3y "));
        assert!(!key.matches(""));
        assert_eq!(format!("{key:?}"), "AdminKey(redacted)");
        for bad in ["", "two words", "tab\there"] {
            assert!(bad.parse::<AdminKey>().is_err(), "{bad:?}");
        }
        let from_file: Result<AdminKey, _> = serde_json::from_str("\"\"");
        assert!(from_file.is_err());
    }

    #[test]
    fn access_follows_the_key_and_the_admin_address() {
        let loopback = Config::default();
        assert!(matches!(Access::new(&loopback), Access::LoopbackClients));
        let public = Config {
            listen: "0.0.0.0:8080".parse().expect("address"),
            ..Config::default()
        };
        assert!(matches!(Access::new(&public), Access::Refused(_)));
        let internal_admin = Config {
            admin_listen: Some("127.0.0.1:9090".parse().expect("address")),
            ..public.clone()
        };
        assert!(matches!(
            Access::new(&internal_admin),
            Access::LoopbackClients
        ));
        let keyed = Config {
            admin_key: Some("k".parse().expect("a key")),
            ..public
        };
        assert!(matches!(Access::new(&keyed), Access::Key(_)));
    }
}
