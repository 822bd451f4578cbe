//! WebSocket clients that break the framing rules of RFC 6455: each is closed with the code
//! the RFC asks for (1007 for text that is not UTF-8, 1002 for a protocol violation) rather
//! than cut off, and the gateway goes on serving everyone else.

use switchboard_e2e::http::assert_serving;
use switchboard_e2e::raw_ws::{RawFrame, RawWs};
use switchboard_e2e::ws::Closed;
use switchboard_e2e::{Endpoint, Gateway, WsClient};

/// Sends `frame` on a fresh `/ws` connection (after a ping that proves the session is
/// running) and asserts that the gateway closes it with `code`.
async fn closes_with(frame: RawFrame, code: u16) {
    let gw = Gateway::start_default().await;
    let mut ws = RawWs::connect(gw.addr(), "/ws").await;
    ws.send(&RawFrame::text(br#"{"type":"ping","ref":1}"#))
        .await;
    let pong = ws.next().await.expect("a pong frame");
    assert_eq!(pong.payload, br#"{"type":"pong","ref":1}"#, "{pong:?}");

    ws.send(&frame).await;
    assert_eq!(
        ws.read_to_close().await,
        Closed::Code(code),
        "after {frame:?}"
    );

    assert_serving(&gw.base()).await;
    WsClient::connect(&gw.ws_url("/ws"))
        .await
        .assert_alive()
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn text_that_is_not_utf8_closes_with_1007() {
    closes_with(RawFrame::text(&[0xff, 0xfe]), 1007).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn text_split_inside_a_character_that_never_ends_closes_with_1007() {
    // "é" is 0xc3 0xa9: a message that stops after 0xc3 is not UTF-8.
    let mut first = RawFrame::text(b"{\"data\":\"\xc3");
    first.fin = false;
    let gw = Gateway::start_default().await;
    let mut ws = RawWs::connect(gw.addr(), "/ws").await;
    ws.send(&first).await;
    ws.send(&RawFrame::new(0x0, b"\"}")).await;
    assert_eq!(ws.read_to_close().await, Closed::Code(1007));
    assert_serving(&gw.base()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn close_reason_that_is_not_utf8_closes_with_1007() {
    closes_with(RawFrame::new(0x8, &[0x03, 0xe8, 0xff]), 1007).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unmasked_frame_closes_with_1002() {
    let mut frame = RawFrame::text(br#"{"type":"ping"}"#);
    frame.mask = None;
    closes_with(frame, 1002).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reserved_bit_closes_with_1002() {
    let mut frame = RawFrame::text(br#"{"type":"ping"}"#);
    frame.rsv1 = true;
    closes_with(frame, 1002).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reserved_data_opcode_closes_with_1002() {
    closes_with(RawFrame::new(0x3, b"?"), 1002).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reserved_control_opcode_closes_with_1002() {
    closes_with(RawFrame::new(0xb, b""), 1002).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn continuation_without_a_start_closes_with_1002() {
    closes_with(RawFrame::new(0x0, b"x"), 1002).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fragmented_ping_closes_with_1002() {
    let mut frame = RawFrame::new(0x9, b"x");
    frame.fin = false;
    closes_with(frame, 1002).await;
}
