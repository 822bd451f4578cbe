//! Every transport publishes and every transport receives: the 3×3 matrix, each pair asserting
//! the full envelope.

use serde_json::json;
use switchboard_e2e::{Gateway, Subscriber, Transport, assert_envelope, now_ms};

async fn pair(publisher: Transport, receiver: Transport) {
    let gw = Gateway::start_default().await;
    let topic = format!("matrix/{publisher:?}-to-{receiver:?}");
    let mut subscriber = Subscriber::open(receiver, &gw.base(), &[&topic], None).await;

    let data = json!({"from": format!("{publisher:?}"), "text": "héllo ✓ \"quoted\"", "n": [1, 2.5, null, true]});
    let before = now_ms();
    let id = publisher.publish(&gw.base(), &topic, data.clone()).await;
    let after = now_ms();

    let envelope = subscriber.message().await;
    assert_envelope(&envelope, &topic, &id, &data);
    let time = envelope["time"].as_u64().expect("time");
    assert!(
        (before.saturating_sub(5)..=after + 5).contains(&time),
        "time {time} outside the publish call [{before}, {after}]"
    );
}

macro_rules! pairs {
    ($($name:ident: $publisher:ident -> $receiver:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread")]
        async fn $name() {
            pair(Transport::$publisher, Transport::$receiver).await;
        }
    )*};
}

pairs! {
    ws_to_ws: Ws -> Ws;
    ws_to_sse: Ws -> Sse;
    ws_to_poll: Ws -> Poll;
    post_events_to_ws: Sse -> Ws;
    post_events_to_sse: Sse -> Sse;
    post_events_to_poll: Sse -> Poll;
    post_poll_to_ws: Poll -> Ws;
    post_poll_to_sse: Poll -> Sse;
    post_poll_to_poll: Poll -> Poll;
}

/// One hub: subscribers on all three transports at once each get what all three publish,
/// with the same ids.
#[tokio::test(flavor = "multi_thread")]
async fn one_hub_behind_all_transports() {
    let gw = Gateway::start_default().await;
    let mut subscribers = Vec::new();
    for receiver in Transport::ALL {
        subscribers.push(Subscriber::open(receiver, &gw.base(), &["all"], None).await);
    }
    let mut published = Vec::new();
    for publisher in Transport::ALL {
        let data = json!(format!("{publisher:?}"));
        let id = publisher.publish(&gw.base(), "all", data.clone()).await;
        published.push((id, data));
    }
    for subscriber in &mut subscribers {
        for (id, data) in &published {
            assert_envelope(&subscriber.message().await, "all", id, data);
        }
    }
}
