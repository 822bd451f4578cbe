//! Every transport publishes and every transport receives: the 3×3 matrix, each pair asserting
//! the full envelope. `tests/nginx.rs` runs the same matrix through nginx.

use serde_json::json;
use switchboard_e2e::{
    Endpoint, Gateway, Subscriber, Transport, any_to_any_tests, assert_envelope,
};

// The nine pairs (`ws_to_ws`, `ws_to_sse`, … `post_poll_to_poll`): see `scenarios::any_to_any`.
any_to_any_tests!(Gateway::start_default().await);

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
