//! Resuming from a cursor on every transport, and carrying a cursor from one transport to
//! another: exactly the missed messages, in order, no duplicates. `tests/nginx.rs` runs the
//! shared scenarios (`switchboard_e2e::scenarios`) through nginx.

use serde_json::{Value, json};
use switchboard_e2e::Transport::{Poll, Sse, Ws};
use switchboard_e2e::scenarios::{
    carry_cursor, expect_exactly, publish_range, publish_to, resume_on,
};
use switchboard_e2e::{
    Endpoint, Gateway, SseClient, Subscriber, Transport, WsClient, assert_envelope, poll,
    scenario_tests,
};

/// A client that has received nothing resumes from its starting position (the `subscribed`
/// frame's positions, the `subscribed` event's id, the `timeout=0` poll's cursor), on two
/// topics at once.
async fn resume_from_start_on(gw: &Gateway, transport: Transport) {
    publish_range(gw, "a", 0..2).await; // history before the subscription: not delivered
    let subscriber = Subscriber::open(transport, &gw.base(), &["a", "b"], None).await;
    let cursor = subscriber.cursor();
    drop(subscriber);

    let missed_a = publish_range(gw, "a", 10..12).await;
    let missed_b = publish_range(gw, "b", 20..22).await;
    let mut subscriber = Subscriber::open(transport, &gw.base(), &["a", "b"], Some(&cursor)).await;
    let mut got = subscriber.messages(4).await;
    got.sort_by_key(|m| m["data"].as_i64());
    for (envelope, (id, data)) in got.iter().zip(missed_a.iter().chain(&missed_b)) {
        let topic = if data.as_i64() < Some(20) { "a" } else { "b" };
        assert_envelope(envelope, topic, id, data);
    }
    expect_exactly(gw, &mut subscriber, "b", &[]).await;
}

scenario_tests! { Gateway::start_default().await;
    ws_resumes_with_since: resume_on(Ws);
    sse_resumes_with_since: resume_on(Sse);
    poll_resumes_with_since: resume_on(Poll);

    ws_resumes_from_starting_positions: resume_from_start_on(Ws);
    sse_resumes_from_subscribed_event_id: resume_from_start_on(Sse);
    poll_resumes_from_timeout_zero_cursor: resume_from_start_on(Poll);

    /// SSE → poll → WebSocket → SSE, each leg resuming on its own transport and the next leg
    /// from its cursor.
    cursor_carries_across_transports: carry_cursor(&[(Sse, Sse), (Poll, Poll), (Ws, Ws), (Sse, Sse)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn ws_subscribe_frame_resumes_with_since() {
    let gw = Gateway::start_default().await;
    let (first, _) = publish_to(&gw, "w", json!(1)).await;
    let missed = publish_range(&gw, "w", 2..5).await;
    let mut ws = WsClient::connect(&gw.ws_url("/ws")).await;
    let subscribed = ws.subscribe(&["w"], Some(&first)).await;
    assert_eq!(subscribed["topics"], json!(["w"]), "{subscribed}");
    // Order on a subscribe: subscribed, then the missed messages, then live ones.
    for (id, data) in &missed {
        let frame = ws.next().await;
        assert_eq!(frame["type"], "message", "{frame}");
        assert_envelope(&frame, "w", id, data);
    }
    let (id, data) = publish_to(&gw, "w", json!("live")).await;
    assert_envelope(&ws.next().await, "w", &id, &data);
}

/// `Last-Event-ID` header, `?since=` and `?lastEventId=` each resume an SSE stream.
#[tokio::test(flavor = "multi_thread")]
async fn sse_resumes_from_each_cursor_source() {
    let gw = Gateway::start_default().await;
    let (first, _) = publish_to(&gw, "s", json!(0)).await;
    let mut missed = publish_range(&gw, "s", 1..4).await;
    let client = reqwest::Client::new();
    let requests = [
        (
            "Last-Event-ID header",
            client
                .get(gw.http_url("/events?topic=s"))
                .header("last-event-id", &first),
        ),
        (
            "since parameter",
            client.get(gw.http_url(&format!("/events?topic=s&since={first}"))),
        ),
        (
            "lastEventId parameter",
            client.get(gw.http_url(&format!("/events?topic=s&lastEventId={first}"))),
        ),
    ];
    for (source, request) in requests {
        let mut sse = SseClient::open(request).await;
        sse.expect_event("subscribed").await;
        for (id, data) in &missed {
            let event = sse.expect_event("message").await;
            assert_envelope(&event.json(), "s", id, data);
            assert_eq!(
                event.id(),
                id,
                "{source}: a single-topic event id is the message id"
            );
        }
        // Nothing else was pending: the next event is a message published now.
        let live = publish_to(&gw, "s", json!(source)).await;
        assert_envelope(&sse.message().await, "s", &live.0, &live.1);
        missed.push(live);
    }
}

/// `Last-Event-ID` wins over `since`, which wins over `lastEventId`.
#[tokio::test(flavor = "multi_thread")]
async fn sse_cursor_sources_precedence() {
    let gw = Gateway::start_default().await;
    let published = publish_range(&gw, "p", 0..3).await;
    let [(id0, _), (id1, _), (id2, data2)] = &published[..] else {
        unreachable!()
    };
    let client = reqwest::Client::new();
    let cases = [
        (
            "header over both parameters",
            client
                .get(gw.http_url(&format!("/events?topic=p&since={id0}&lastEventId={id0}")))
                .header("last-event-id", id1),
        ),
        (
            "since over lastEventId",
            client.get(gw.http_url(&format!("/events?topic=p&lastEventId={id0}&since={id1}"))),
        ),
    ];
    for (case, request) in cases {
        let mut sse = SseClient::open(request).await;
        sse.expect_event("subscribed").await;
        let first = sse.message().await;
        assert_eq!(first["id"], json!(id2), "{case}: first message {first}");
        assert_envelope(&first, "p", id2, data2);
    }
}

/// On a multi-topic stream the SSE `id:` is a cursor for every topic of the stream, and a
/// cursor made of several positions works on every transport.
#[tokio::test(flavor = "multi_thread")]
async fn multi_topic_cursor_resumes_every_topic() {
    let gw = Gateway::start_default().await;
    let mut sse = SseClient::connect(&gw.http_url("/events?topic=a&topic=b")).await;
    sse.expect_event("subscribed").await;
    let before = [
        publish_to(&gw, "a", json!("a1")).await,
        publish_to(&gw, "b", json!("b1")).await,
        publish_to(&gw, "a", json!("a2")).await,
    ];
    for (id, data) in &before {
        let topic = &data.as_str().expect("string")[..1];
        assert_envelope(&sse.message().await, topic, id, data);
    }
    let cursor = sse.last_event_id().to_owned();
    drop(sse);

    let missed = [
        publish_to(&gw, "b", json!("b2")).await,
        publish_to(&gw, "a", json!("a3")).await,
    ];
    let check = |mut got: Vec<Value>, transport: &str| {
        got.sort_by(|x, y| x["topic"].as_str().cmp(&y["topic"].as_str()));
        assert_eq!(got.len(), 2, "{transport}: {got:?}");
        assert_envelope(&got[0], "a", &missed[1].0, &missed[1].1);
        assert_envelope(&got[1], "b", &missed[0].0, &missed[0].1);
    };
    for transport in Transport::ALL {
        let mut subscriber =
            Subscriber::open(transport, &gw.base(), &["a", "b"], Some(&cursor)).await;
        check(subscriber.messages(2).await, &format!("{transport:?}"));
    }
    let reply =
        poll(&gw.http_url(&format!("/poll?topic=a&topic=b&since={cursor}&timeout=0"))).await;
    assert_eq!(reply.messages.len(), 2, "poll: {reply:?}");
    assert!(!reply.more, "{reply:?}");
    assert_eq!(
        reply.positions.keys().collect::<Vec<_>>(),
        ["a", "b"],
        "positions cover every topic: {reply:?}"
    );
}

/// Positions for topics outside the request are ignored; a requested topic without a position
/// starts from now; of two positions for one topic, the last wins.
#[tokio::test(flavor = "multi_thread")]
async fn cursor_position_rules() {
    let gw = Gateway::start_default().await;
    let a = publish_range(&gw, "a", 0..3).await;
    let b = publish_range(&gw, "b", 0..3).await;
    let url = |query: &str| gw.http_url(&format!("/poll?{query}&timeout=0"));

    // A cursor holding a and b, used for a alone.
    let both = format!("{}.{}", a[0].0, b[0].0);
    let reply = poll(&url(&format!("topic=a&since={both}"))).await;
    let ids: Vec<_> = reply.messages.iter().map(|m| m["id"].clone()).collect();
    assert_eq!(
        ids,
        [json!(a[1].0), json!(a[2].0)],
        "only topic a: {reply:?}"
    );

    // A cursor holding a only, used for a and c: c starts now.
    let reply = poll(&url(&format!("topic=a&topic=c&since={}", a[1].0))).await;
    assert_eq!(reply.messages.len(), 1, "{reply:?}");
    assert_envelope(&reply.messages[0], "a", &a[2].0, &a[2].1);
    let c1 = publish_to(&gw, "c", json!("c1")).await;
    let reply = poll(&url(&format!("topic=a&topic=c&since={}", reply.cursor))).await;
    assert_eq!(reply.messages.len(), 1, "{reply:?}");
    assert_envelope(&reply.messages[0], "c", &c1.0, &c1.1);

    // Two positions for one topic: the last one wins.
    let reply = poll(&url(&format!("topic=a&since={}.{}", a[0].0, a[1].0))).await;
    assert_eq!(reply.messages.len(), 1, "from a[1]: {reply:?}");
    let reply = poll(&url(&format!("topic=a&since={}.{}", a[1].0, a[0].0))).await;
    assert_eq!(reply.messages.len(), 2, "from a[0]: {reply:?}");
}
