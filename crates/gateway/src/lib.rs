//! Switchboard: a real-time gateway. One topic hub, reachable over WebSocket (`/ws`),
//! Server-Sent Events (`/events`) and long-poll (`/poll`); see `docs/PROTOCOL.md`.
//!
//! # Layout
//!
//! - [`config`]: settings from flags, environment and a TOML file.
//! - [`server`]: `run(listener, config, shutdown)`: serving and the graceful drain.
//! - `broker`: the in-memory hub, or Redis when the configuration names one.
//! - `stream_connection`: SSE streams on fresh connections, written without hyper's buffers.
//! - `app`: the routes, origin check, CORS, logging, JSON errors for 404/405.
//! - `subscription`: the plumbing all three transports share: joining topics from a
//!   cursor, the connection's inbox, delivered positions.
//! - `ws`, `sse`, `poll`: one file per transport; `publish`: HTTP publishing; `batch`:
//!   many messages in one request (`POST /publish`).
//! - `wire`: every byte format the gateway writes (WebSocket frames, SSE events, poll
//!   replies, error bodies, each transport's encoding of a message), in one place.
//! - `caller`: who sent a request (address behind proxies, and its grant), an extractor.
//! - `request`: query parameters (topics, cursor, timeout); `error`: every rejection.
//! - `origin`: the allowlist of origins; `host`: the allowlist of `Host` names (DNS
//!   rebinding); `client_addr`: trusted proxies.
//! - `auth`: who may subscribe and publish (tokens, publish keys, anonymous rules);
//!   `rate`: rate limits of publishes and subscribe requests.
//! - `state`: what handlers share, including the connection and socket limits; `responses`:
//!   the response heads several handlers share (uncached JSON, an event stream).
//! - `socket`: an accepted client socket: its place in `max_sockets`, and the write
//!   deadline that lets go of a client that stops reading.
//! - `static_files`: the demo and browser client, embedded; `shutdown`: OS signals.
//! - [`logging`]: the log output, which drops and counts lines rather than block or fail, as
//!   text or JSON; `request_id`: every request's id, in its logs and its response.
//! - `connections`: the live connections of every transport, for operators; `activity`:
//!   counters of publishes, deliveries, resets and endings; [`admin`]: the admin routes
//!   (`/metrics`, the admin API, the dashboard) and who may reach them; `metrics`: what the
//!   gateway counts, in the Prometheus text format.
//! - [`cli`]: the client commands (`pub`, `sub`, `topics`, `top`, `check-config`).

mod activity;
pub mod admin;
mod app;
pub mod auth;
mod batch;
mod broker;
mod caller;
pub mod cli;
mod client_addr;
pub mod config;
mod connections;
mod cork;
mod error;
mod heartbeat;
mod host;
pub mod logging;
mod metrics;
mod origin;
mod poll;
#[cfg(test)]
mod protocol_doc;
mod publish;
mod rate;
mod request;
mod request_id;
mod responses;
pub mod server;
pub mod shutdown;
mod socket;
mod sse;
mod state;
mod static_files;
mod stream_connection;
mod subscription;
mod wire;
mod ws;

pub use config::Config;
pub use host::HostPattern;
