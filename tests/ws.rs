//! `/ws`: in-band subscribe and unsubscribe, acks and refs, pings and heartbeat timeouts.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard::Config;
use switchboard_e2e::raw_ws::RawWs;
use switchboard_e2e::ws::Closed;
use switchboard_e2e::{Endpoint, Gateway, WsClient, assert_envelope, publish, within};

async fn publish_to(gw: &Gateway, topic: &str, data: Value) -> String {
    publish(&gw.http_url(&format!("/events?topic={topic}")), &data).await
}

#[tokio::test(flavor = "multi_thread")]
async fn url_topics_are_answered_by_subscribed_without_ref() {
    let gw = Gateway::start_default().await;
    let mut ws = WsClient::connect(&gw.ws_url("/ws?topic=a&topic=b")).await;
    let subscribed = ws.next().await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    assert!(
        subscribed.get("ref").is_none_or(Value::is_null),
        "{subscribed}"
    );
    assert_eq!(subscribed["topics"], json!(["a", "b"]), "{subscribed}");
    for topic in ["a", "b"] {
        assert!(subscribed["positions"][topic].is_string(), "{subscribed}");
    }
    let id = publish_to(&gw, "b", json!("hi")).await;
    let message = ws.next().await;
    assert_eq!(message["type"], "message");
    assert_envelope(&message, "b", &id, &json!("hi"));
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribe_and_unsubscribe_in_band() {
    let gw = Gateway::start_default().await;
    let mut ws = WsClient::connect(&gw.ws_url("/ws")).await;
    let subscribed = ws.subscribe(&["a", "b"], None).await;
    assert_eq!(subscribed["topics"], json!(["a", "b"]), "{subscribed}");

    let id = publish_to(&gw, "a", json!(1)).await;
    assert_envelope(&ws.next().await, "a", &id, &json!(1));

    ws.send(json!({"type": "unsubscribe", "topics": ["a"], "ref": "r3"}))
        .await;
    let unsubscribed = ws.next().await;
    assert_eq!(
        (
            &unsubscribed["type"],
            &unsubscribed["ref"],
            &unsubscribed["topics"]
        ),
        (&json!("unsubscribed"), &json!("r3"), &json!(["a"])),
        "{unsubscribed}"
    );
    publish_to(&gw, "a", json!("not for me")).await;
    let id = publish_to(&gw, "b", json!(2)).await;
    assert_envelope(&ws.next().await, "b", &id, &json!(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribing_twice_delivers_once() {
    let gw = Gateway::start_default().await;
    let mut ws = WsClient::connect(&gw.ws_url("/ws?topic=d")).await;
    let first = ws.next().await;
    assert_eq!(first["type"], "subscribed");
    let one = publish_to(&gw, "d", json!(1)).await;
    assert_envelope(&ws.next().await, "d", &one, &json!(1));

    let again = ws.subscribe(&["d"], None).await;
    assert_eq!(again["topics"], json!(["d"]), "{again}");
    assert_eq!(
        again["positions"]["d"],
        json!(one),
        "current position: {again}"
    );
    let two = publish_to(&gw, "d", json!(2)).await;
    let three = publish_to(&gw, "d", json!(3)).await;
    assert_envelope(&ws.next().await, "d", &two, &json!(2));
    assert_envelope(&ws.next().await, "d", &three, &json!(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_acks_echo_ref() {
    let gw = Gateway::start_default().await;
    let mut ws = WsClient::connect(&gw.ws_url("/ws")).await;
    for reference in [json!("r1"), json!(7)] {
        ws.send(json!({"type": "publish", "topic": "p", "data": {"x": 1}, "ref": reference}))
            .await;
        let ack = ws.next().await;
        assert_eq!(
            (&ack["type"], &ack["ref"], &ack["topic"]),
            (&json!("ack"), &reference, &json!("p")),
            "{ack}"
        );
        assert!(ack["id"].is_string(), "{ack}");
    }
    // Without ref the ack is sent all the same.
    ws.send(json!({"type": "publish", "topic": "p", "data": null}))
        .await;
    let ack = ws.next().await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert!(ack["id"].is_string(), "{ack}");

    ws.send(json!({"type": "ping", "ref": "r4"})).await;
    assert_eq!(ws.next().await, json!({"type": "pong", "ref": "r4"}));
}

/// A client that publishes and closes at once gets its answers, then the close reply RFC 6455
/// asks for, rather than a dropped connection; the reply echoes the client's code, or 1002 for
/// one the RFC does not allow.
#[tokio::test(flavor = "multi_thread")]
async fn a_close_is_answered_after_the_publishes_sent_before_it() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let gw = Gateway::start_default().await;
    // Opens a WebSocket, sends `frames` and then a close with `code`, and returns what the
    // server sent back, up to its close reply.
    let close_after = async |frames: Vec<Value>, code: CloseCode| {
        let (mut stream, _) = WsClient::connect(&gw.ws_url("/ws")).await.into_parts();
        for frame in frames {
            let text = Message::text(frame.to_string());
            stream.feed(text).await.expect("fed");
        }
        let close = Message::Close(Some(CloseFrame {
            code,
            reason: "".into(),
        }));
        stream.send(close).await.expect("sent");
        let mut answered = Vec::new();
        loop {
            match within("the server's answers", stream.next()).await {
                Some(Ok(Message::Text(text))) => {
                    answered.push(serde_json::from_str::<Value>(text.as_str()).expect("JSON"));
                }
                Some(Ok(Message::Close(reply))) => {
                    return (answered, reply.expect("the reply has a code").code);
                }
                other => panic!("expected answers, then a close reply; got {other:?}"),
            }
        }
    };

    let publishes = (0..3)
        .map(|n| json!({"type": "publish", "topic": "p", "data": n, "ref": n}))
        .collect();
    let (answered, code) = close_after(publishes, CloseCode::Normal).await;
    let acks: Vec<(&Value, &Value)> = answered.iter().map(|a| (&a["type"], &a["ref"])).collect();
    let ack = json!("ack");
    assert_eq!(
        acks,
        [(&ack, &json!(0)), (&ack, &json!(1)), (&ack, &json!(2))]
    );
    assert_eq!(code, CloseCode::Normal);

    // A code that may not be sent on the wire (1005) is answered with 1002.
    let (answered, code) = close_after(Vec::new(), CloseCode::Status).await;
    assert_eq!((answered.len(), code), (0, CloseCode::Protocol));
}

#[tokio::test(flavor = "multi_thread")]
async fn server_pings_and_drops_a_silent_client_with_4000() {
    let config = Config {
        heartbeat_interval: Duration::from_millis(200),
        ..Config::default()
    };
    let gw = Gateway::start(config).await;

    // A client that reads the server's frames but sends nothing, not even a pong.
    let mut silent = RawWs::connect(gw.addr(), "/ws").await;
    // A client that reads, and so answers every ping with a pong.
    let mut lively = WsClient::connect(&gw.ws_url("/ws")).await;

    let closed = tokio::select! {
        closed = silent.read_to_close() => closed,
        () = async { loop { lively.expect_ping().await } } => unreachable!("it loops"),
    };
    assert_eq!(closed, Closed::Code(4000));
    // Connected about as long as the silent one was, the lively one is still served three
    // pings later: well past two intervals.
    for _ in 0..3 {
        lively.expect_ping().await;
    }
    lively.assert_alive().await;
}
