//! Every byte format the gateway writes, in one place: WebSocket frames, SSE events, poll
//! replies and error bodies. Handlers build values of these types; they never write JSON or
//! event-stream syntax themselves, so field order and framing are fixed here, by the types,
//! and tested against docs/PROTOCOL.md's examples.
//!
//! - [`objects`]: the JSON objects that appear on several transports (the reset object, a
//!   topic's positions, the error body).
//! - [`frames`]: WebSocket server frames.
//! - [`sse`]: the one SSE event writer, and the events of a stream.
//! - [`poll`]: the poll reply.
//! - [`batch`]: the reply to a batch publish.
//! - [`admin`]: the admin API's replies and the dashboard's stats snapshot.
//! - [`encodings`]: each transport's encoding of a message, made once and shared.

pub mod admin;
pub mod batch;
pub mod encodings;
pub mod frames;
pub mod objects;
pub mod poll;
pub mod sse;
