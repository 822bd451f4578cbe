//! Access control on every transport, directly and through the shipped nginx config: tokens in
//! each place a client may put them, anonymous rules, refused tokens of every kind, expiry
//! mid-stream and resuming with a fresh token, in-band refresh, publish keys, the query token
//! (and that it never reaches the logs), and rate limits.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard::Config;
use switchboard::auth::{Action, AnonymousRule, TopicPattern};
use switchboard_e2e::auth::{
    Credentials, Refusal, SECRET, Subscribed, connect_ws, now_s, publish, publish_on, sign,
    subscribe, token,
};
use switchboard_e2e::ws::Closed;
use switchboard_e2e::{Endpoint, Gateway, Nginx, NodeProcess, Transport, within};

/// The backends' publish keys: an old one being rotated out and its successor.
const KEYS: [&str; 2] = ["old-publish-key", "new-publish-key"];

/// A gateway with access control: HS256 tokens for audience `switchboard`, no leeway (so that
/// expiry is exact), the two publish keys, and anonymous subscribing to `public.*`.
fn secured(change: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config {
        jwt_secret: Some(SECRET.into()),
        jwt_audience: Some("switchboard".into()),
        jwt_leeway: Duration::ZERO,
        publish_key: KEYS.map(String::from).to_vec(),
        anonymous: vec![AnonymousRule {
            topics: vec![TopicPattern::parse("public.*").expect("a pattern")],
            allow: vec![Action::Subscribe],
        }],
        trusted_proxies: vec!["127.0.0.1".parse().expect("a proxy")],
        ..Config::default()
    };
    change(&mut config);
    config
}

/// Ann's token: subscribe to `chat` and `room.*`, publish to `chat`, for `lifetime` seconds.
fn ann(lifetime: u64) -> String {
    sign(
        &json!({"sub": "ann", "aud": "switchboard", "exp": now_s() + lifetime,
                "switchboard": {"subscribe": ["chat", "room.*"], "publish": ["chat"]}}),
        SECRET,
    )
}

fn key() -> Credentials {
    Credentials::Header(KEYS[1].into())
}

/// Every place a client can put a token on `transport`, with `token` there.
fn placements(transport: Transport, token: &str) -> Vec<Credentials> {
    let mut all = vec![
        Credentials::Header(token.into()),
        Credentials::Cookie(token.into()),
    ];
    if transport == Transport::Ws {
        all.push(Credentials::InBand(token.into()));
    }
    all
}

#[track_caller]
fn assert_refused(result: Result<impl std::fmt::Debug, Refusal>, transport: Transport, code: &str) {
    let refusal = result.expect_err("refused");
    let status = match code {
        "unauthorized" | "token_expired" => 401,
        "forbidden" => 403,
        "rate_limited" => 429,
        other => panic!("no status known for {other}"),
    };
    let expected = (transport != Transport::Ws || refusal.status.is_some()).then_some(status);
    assert_eq!(
        (refusal.status, refusal.code.as_str()),
        (expected, code),
        "{transport:?}: {refusal:?}"
    );
}

/// Subscribed with a token in each place on each transport, the subscriber gets what is
/// published to the topic; topics the token does not cover are refused with `forbidden`
/// naming the topic, for subscribing and publishing alike.
async fn tokens_allow_what_their_claims_say(endpoint: &dyn Endpoint) {
    for transport in Transport::ALL {
        for credentials in placements(transport, &ann(600)) {
            let label = format!("{transport:?} {credentials:?}");
            let mut subscriber = subscribe(endpoint, transport, "room.1", None, &credentials)
                .await
                .unwrap_or_else(|e| panic!("{label}: {e:?}"));
            let id = publish(endpoint, transport, "room.1", json!(label), &key())
                .await
                .expect("the key publishes anywhere");
            let got = subscriber.message().await;
            assert_eq!((&got["id"], &got["data"]), (&json!(id), &json!(label)));

            publish(endpoint, transport, "chat", json!("hello"), &credentials)
                .await
                .unwrap_or_else(|e| panic!("{label}: publish to chat: {e:?}"));
            let refused = subscribe(endpoint, transport, "user.bob", None, &credentials).await;
            let refusal = refused.as_ref().expect_err("user.bob is not Ann's");
            assert!(
                refusal.answer.to_string().contains("user.bob"),
                "{label}: {refusal:?}"
            );
            assert_refused(refused, transport, "forbidden");
            assert_refused(
                publish(endpoint, transport, "room.1", json!(1), &credentials).await,
                transport,
                "forbidden",
            );
        }
    }
}

/// Without credentials, a client may subscribe to `public.*` and nothing else, and may not
/// publish; an in-band refusal leaves the WebSocket usable for what it may do.
async fn anonymous_clients_get_the_rules(endpoint: &dyn Endpoint) {
    for transport in Transport::ALL {
        let mut subscriber =
            subscribe(endpoint, transport, "public.news", None, &Credentials::None)
                .await
                .unwrap_or_else(|e| panic!("{transport:?}: {e:?}"));
        let id = publish(endpoint, transport, "public.news", json!("news"), &key())
            .await
            .expect("published");
        assert_eq!(subscriber.message().await["id"], json!(id));
        assert_refused(
            subscribe(endpoint, transport, "chat", None, &Credentials::None).await,
            transport,
            "unauthorized",
        );
        assert_refused(
            publish(
                endpoint,
                transport,
                "public.news",
                json!(1),
                &Credentials::None,
            )
            .await,
            transport,
            "unauthorized",
        );
    }
    let mut ws = connect_ws(endpoint, "/ws", &Credentials::None)
        .await
        .expect("opens");
    ws.send(json!({"type": "subscribe", "topics": ["chat"], "ref": 7}))
        .await;
    let error = ws.next_of("error").await;
    assert_eq!(
        (&error["code"], &error["ref"]),
        (&json!("unauthorized"), &json!(7))
    );
    ws.subscribe(&["public.x"], None).await;
    ws.assert_alive().await;
}

/// Tokens that are expired, wrongly signed, for another audience, `alg: none`, or malformed
/// are refused on every transport, in every place, and never taken for anonymous.
async fn bad_tokens_are_refused(endpoint: &dyn Endpoint) {
    let claims = |exp: u64, aud: &str| {
        json!({"sub": "mallory", "aud": aud, "exp": exp,
               "switchboard": {"subscribe": ["*"], "publish": ["*"]}})
    };
    let good = claims(now_s() + 600, "switchboard");
    let none = format!(
        "{}.{}.",
        url_safe(r#"{"alg":"none","typ":"JWT"}"#),
        url_safe(&good.to_string())
    );
    let cases = [
        (
            sign(&claims(now_s() - 5, "switchboard"), SECRET),
            "token_expired",
        ),
        (
            sign(&good, "another secret, thirty-two bytes long"),
            "unauthorized",
        ),
        (
            sign(&claims(now_s() + 600, "elsewhere"), SECRET),
            "unauthorized",
        ),
        (none, "unauthorized"),
        ("garbage".to_owned(), "unauthorized"),
    ];
    for (bad, code) in cases {
        for transport in Transport::ALL {
            for credentials in placements(transport, &bad) {
                assert_refused(
                    subscribe(endpoint, transport, "public.news", None, &credentials).await,
                    transport,
                    code,
                );
                assert_refused(
                    publish(endpoint, transport, "chat", json!(1), &credentials).await,
                    transport,
                    code,
                );
            }
        }
    }
}

/// The base64url text of `text`, unpadded, as a JWT's parts are written.
fn url_safe(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A stream whose token runs out is told and ended (WebSocket: `token_expired`, then close
/// 4001; SSE: `event: error`, then the end; a poll: refused with `token_expired`); resuming
/// with a fresh token and the last id gets exactly what was published meanwhile.
async fn expiry_then_resume_loses_nothing(endpoint: &dyn Endpoint) {
    for transport in Transport::ALL {
        let topic = format!("room.expiry-{transport:?}");
        let short = Credentials::Header(ann(2));
        let mut subscriber = subscribe(endpoint, transport, &topic, None, &short)
            .await
            .expect("subscribed");
        let before = publish(endpoint, transport, &topic, json!("before"), &key())
            .await
            .expect("published");
        assert_eq!(subscriber.message().await["id"], json!(before));

        // The end of the token, as each transport tells it.
        match &mut subscriber {
            Subscribed::Ws(ws) => {
                let (frames, closed) = within_expiry(ws.read_to_close()).await;
                let error = frames.last().expect("an error frame before the close");
                assert_eq!(error["code"], "token_expired", "{frames:?}");
                assert_eq!(closed, Closed::Code(4001), "{frames:?}");
            }
            Subscribed::Sse(sse) => {
                let items = within_expiry(sse.read_to_end()).await;
                let last = format!("{:?}", items.last().expect("an event"));
                assert!(
                    last.contains("token_expired") && last.contains("error"),
                    "{items:?}"
                );
            }
            Subscribed::Poll { .. } => {
                let refusal = within_expiry(async {
                    loop {
                        if let Err(refusal) = subscriber.poll().await {
                            return refusal;
                        }
                    }
                })
                .await;
                assert_eq!(refusal.code, "token_expired", "{refusal:?}");
            }
        }
        let missed = publish(endpoint, transport, &topic, json!("while away"), &key())
            .await
            .expect("published");
        let fresh = Credentials::Header(ann(600));
        let mut resumed = match subscriber {
            Subscribed::Poll { .. } => {
                subscriber.set_credentials(fresh);
                subscriber
            }
            _ => subscribe(endpoint, transport, &topic, Some(&before), &fresh)
                .await
                .expect("resumed"),
        };
        let got = resumed.message().await;
        assert_eq!(
            (&got["id"], &got["data"]),
            (&json!(missed), &json!("while away"))
        );
        let after = publish(endpoint, transport, &topic, json!("after"), &key())
            .await
            .expect("published");
        assert_eq!(
            resumed.message().await["id"],
            json!(after),
            "nothing in between"
        );
    }
}

/// Waits for what a token's end brings, a little longer than a token lasts.
async fn within_expiry<F: std::future::Future>(fut: F) -> F::Output {
    switchboard_e2e::within_for(Duration::from_secs(10), "the token to run out", fut).await
}

/// A WebSocket that sends a fresh token before its first one runs out stays open and keeps
/// receiving; a neighbour with the same first token that does not is closed with 4001.
async fn websocket_refreshes_in_band(endpoint: &dyn Endpoint) {
    let first = ann(2);
    let mut refreshed = connect_ws(endpoint, "/ws", &Credentials::InBand(first.clone()))
        .await
        .expect("authenticated");
    refreshed.subscribe(&["chat"], None).await;
    let mut neighbour = connect_ws(endpoint, "/ws", &Credentials::InBand(first))
        .await
        .expect("authenticated");
    neighbour.subscribe(&["chat"], None).await;

    // A token for `room.*` only: `chat`, which it does not cover, is left.
    let narrower = sign(
        &json!({"sub": "ann", "aud": "switchboard", "exp": now_s() + 600,
                "switchboard": {"subscribe": ["room.*"]}}),
        SECRET,
    );
    refreshed
        .send(json!({"type": "auth", "token": narrower, "ref": "refresh"}))
        .await;
    let left = refreshed.next_of("unsubscribed").await;
    assert_eq!(left["topics"], json!(["chat"]), "{left}");
    let ack = refreshed.next_of("ack").await;
    assert_eq!(ack["ref"], "refresh", "{ack}");
    assert!(
        ack["expires"].as_u64().expect("expires") >= now_s() + 590,
        "{ack}"
    );
    refreshed.subscribe(&["room.7"], None).await;

    let (_, closed) = within_expiry(neighbour.read_to_close()).await;
    assert_eq!(closed, Closed::Code(4001));
    let id = publish(
        endpoint,
        Transport::Poll,
        "room.7",
        json!("still here"),
        &key(),
    )
    .await
    .expect("published");
    assert_eq!(refreshed.message().await["id"], json!(id));
    refreshed.assert_alive().await;

    // A refused refresh changes nothing.
    refreshed
        .send(json!({"type": "auth", "token": "garbage", "ref": "bad"}))
        .await;
    let error = refreshed.next_of("error").await;
    assert_eq!(
        (&error["code"], &error["ref"]),
        (&json!("unauthorized"), &json!("bad"))
    );
    refreshed.subscribe(&["room.8"], None).await;
}

/// Both publish keys publish to any topic on every transport (in a header, or an `auth`
/// frame); a key allows no subscribing beyond the anonymous rules; a wrong key is refused.
async fn publish_keys_publish_anywhere(endpoint: &dyn Endpoint) {
    for transport in Transport::ALL {
        for key in KEYS {
            for credentials in [
                Credentials::Header(key.into()),
                Credentials::InBand(key.into()),
            ] {
                publish(
                    endpoint,
                    transport,
                    "any.topic/at:all",
                    json!(1),
                    &credentials,
                )
                .await
                .unwrap_or_else(|e| panic!("{transport:?} {credentials:?}: {e:?}"));
            }
        }
        assert_refused(
            subscribe(
                endpoint,
                transport,
                "chat",
                None,
                &Credentials::Header(KEYS[0].into()),
            )
            .await,
            transport,
            "forbidden",
        );
        assert_refused(
            publish(
                endpoint,
                transport,
                "chat",
                json!(1),
                &Credentials::Header("not-a-key".into()),
            )
            .await,
            transport,
            "unauthorized",
        );
    }
}

#[tokio::test]
async fn tokens_on_every_transport() {
    let gateway = Gateway::start(secured(|_| {})).await;
    tokens_allow_what_their_claims_say(&gateway).await;
}

#[tokio::test]
async fn anonymous_rules_on_every_transport() {
    let gateway = Gateway::start(secured(|_| {})).await;
    anonymous_clients_get_the_rules(&gateway).await;
}

#[tokio::test]
async fn bad_tokens_on_every_transport() {
    let gateway = Gateway::start(secured(|_| {})).await;
    bad_tokens_are_refused(&gateway).await;
}

#[tokio::test]
async fn expiry_mid_stream_on_every_transport() {
    let gateway = Gateway::start(secured(|_| {})).await;
    expiry_then_resume_loses_nothing(&gateway).await;
}

#[tokio::test]
async fn in_band_refresh() {
    let gateway = Gateway::start(secured(|_| {})).await;
    websocket_refreshes_in_band(&gateway).await;
}

#[tokio::test]
async fn publish_keys() {
    let gateway = Gateway::start(secured(|_| {})).await;
    publish_keys_publish_anywhere(&gateway).await;
}

/// Through the shipped nginx config: headers, cookies, statuses, `Retry-After` and WebSocket
/// frames all pass, and expiry ends streams there too.
#[tokio::test]
async fn through_nginx() {
    let gateway = Gateway::start(secured(|_| {})).await;
    let nginx = Nginx::start(gateway.addr()).await;
    tokens_allow_what_their_claims_say(&nginx).await;
    anonymous_clients_get_the_rules(&nginx).await;
    bad_tokens_are_refused(&nginx).await;
    publish_keys_publish_anywhere(&nginx).await;
    websocket_refreshes_in_band(&nginx).await;
    expiry_then_resume_loses_nothing(&nginx).await;

    // A query token (refused here: allow_query_token is off) stays out of nginx's access log.
    let token = ann(600);
    let refused = subscribe(
        &nginx,
        Transport::Sse,
        "chat",
        None,
        &Credentials::Query(token.clone()),
    )
    .await;
    assert_refused(refused, Transport::Sse, "unauthorized");
    let log = nginx.access_log();
    assert!(log.contains("GET /events HTTP/1.1\" 401"), "{log}");
    assert!(
        !log.contains(&token) && !log.contains("access_token"),
        "{log}"
    );

    let limited = Gateway::start(rate_limited()).await;
    let nginx = Nginx::start(limited.addr()).await;
    rate_limits_spare_the_neighbours(&nginx).await;
}

/// With access control off (the default), everything is allowed as before.
#[tokio::test]
async fn off_by_default() {
    let gateway = Gateway::start_default().await;
    for transport in Transport::ALL {
        let mut subscriber = subscribe(&gateway, transport, "chat", None, &Credentials::None)
            .await
            .expect("open");
        let id = publish(&gateway, transport, "chat", json!(1), &Credentials::None)
            .await
            .expect("open");
        assert_eq!(subscriber.message().await["id"], json!(id));
    }
}

/// Over `publish_rate`, a publish is answered `429 rate_limited` with `Retry-After` (on a
/// WebSocket: an `error` frame with `retry_after`, and the connection goes on); another client
/// address is not affected; a WebSocket is also limited on its own. Over `connect_rate`,
/// subscribing is refused the same way.
async fn rate_limits_spare_the_neighbours(endpoint: &dyn Endpoint) {
    let open = Credentials::Header(token("pub", &["*"], &["*"], 600));
    // Each transport from an address of its own (the tests' clients are behind a trusted
    // proxy: the gateway's trusted_proxies has 127.0.0.1).
    for (index, transport) in Transport::ALL.into_iter().enumerate() {
        let address = format!("198.51.100.{}", 10 + index);
        let neighbour = format!("198.51.100.{}", 20 + index);
        let from = |address: &str| -> Vec<(&'static str, String)> {
            vec![("x-forwarded-for", address.to_owned())]
        };
        if transport == Transport::Ws {
            let mut ws = with_headers_ws(endpoint, &open, &from(&address)).await;
            ws.subscribe(&["limited"], None).await;
            let mut delivered = Vec::new();
            for n in 0..2 {
                let id = publish_on(&mut ws, "limited", json!(n))
                    .await
                    .expect("within the burst");
                delivered.push(id);
            }
            let refusal = publish_on(&mut ws, "limited", json!(2))
                .await
                .expect_err("over");
            assert_eq!(refusal.code, "rate_limited", "{refusal:?}");
            assert!(refusal.answer["retry_after"].as_u64().expect("retry_after") > 0);
            // Still open, and still delivering.
            ws.assert_alive().await;
            let id = publish(endpoint, Transport::Poll, "limited", json!("k"), &key())
                .await
                .expect("the key is not limited");
            delivered.push(id);
            for id in delivered {
                assert_eq!(ws.message().await["id"], json!(id));
            }
            // The same address on another connection is limited too.
            let mut other = with_headers_ws(endpoint, &open, &from(&address)).await;
            let refusal = publish_on(&mut other, "limited", json!(3))
                .await
                .expect_err("over");
            assert_eq!(refusal.code, "rate_limited");
        } else {
            for n in 0..2 {
                http_publish(endpoint, transport, &open, &from(&address), n)
                    .await
                    .expect("within the burst");
            }
            let refusal = http_publish(endpoint, transport, &open, &from(&address), 2)
                .await
                .expect_err("over the burst");
            assert_eq!(
                (refusal.status, refusal.code.as_str()),
                (Some(429), "rate_limited")
            );
            let retry: u64 = refusal
                .retry_after
                .as_deref()
                .expect("Retry-After")
                .parse()
                .expect("seconds");
            assert!(retry > 0, "{refusal:?}");
        }
        http_publish(endpoint, Transport::Poll, &open, &from(&neighbour), 0)
            .await
            .expect("a neighbour is not affected");
    }

    // Subscribing: two streams from one address, then a refusal; a neighbour subscribes.
    let address = vec![("x-forwarded-for", "198.51.100.50".to_owned())];
    for _ in 0..2 {
        let response = sse_request(endpoint, &address).await;
        assert_eq!(response.status(), 200);
    }
    let refused = sse_request(endpoint, &address).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let neighbour = vec![("x-forwarded-for", "198.51.100.51".to_owned())];
    assert_eq!(sse_request(endpoint, &neighbour).await.status(), 200);
}

async fn with_headers_ws(
    endpoint: &dyn Endpoint,
    credentials: &Credentials,
    extra: &[(&'static str, String)],
) -> switchboard_e2e::WsClient {
    let Credentials::Header(token) = credentials else {
        panic!("a header token");
    };
    let mut headers = vec![("authorization", format!("Bearer {token}"))];
    headers.extend(extra.iter().cloned());
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    switchboard_e2e::WsClient::connect_with(&endpoint.ws_url("/ws"), &headers).await
}

async fn http_publish(
    endpoint: &dyn Endpoint,
    transport: Transport,
    credentials: &Credentials,
    extra: &[(&'static str, String)],
    n: u64,
) -> Result<String, Refusal> {
    let Credentials::Header(token) = credentials else {
        panic!("a header token");
    };
    let path = if transport == Transport::Sse {
        "events"
    } else {
        "poll"
    };
    let url = endpoint.http_url(&format!("/{path}?topic=limited"));
    let mut request = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token)
        .json(&json!(n));
    for (name, value) in extra {
        request = request.header(*name, value);
    }
    let response = within("publish", request.send()).await.expect("answered");
    if response.status() != 200 {
        return Err(Refusal::from_response(response).await);
    }
    let body: Value = response.json().await.expect("JSON");
    Ok(body["id"].as_str().expect("an id").to_owned())
}

async fn sse_request(
    endpoint: &dyn Endpoint,
    extra: &[(&'static str, String)],
) -> reqwest::Response {
    let url = endpoint.http_url("/events?topic=public.rates");
    let mut request = reqwest::Client::new().get(&url);
    for (name, value) in extra {
        request = request.header(*name, value);
    }
    within("SSE headers", request.send())
        .await
        .expect("answered")
}

/// Two publishes and two subscribe requests per address, then none for an hour.
fn rate_limited() -> Config {
    secured(|config| {
        config.publish_rate = Some("1/h".parse().expect("a rate"));
        config.publish_burst = Some(2);
        config.connect_rate = Some("1/h".parse().expect("a rate"));
        config.connect_burst = Some(2);
    })
}

#[tokio::test]
async fn rate_limits() {
    let gateway = Gateway::start(rate_limited()).await;
    rate_limits_spare_the_neighbours(&gateway).await;
}

/// The query token is refused unless `allow_query_token` is on; with it on, it works on every
/// transport, and the real binary, logging at debug level, never writes it.
#[tokio::test]
async fn query_tokens_only_when_allowed_and_never_logged() {
    let gateway = Gateway::start(secured(|_| {})).await;
    let query = Credentials::Query(ann(600));
    for transport in Transport::ALL {
        assert_refused(
            subscribe(&gateway, transport, "chat", None, &query).await,
            transport,
            "unauthorized",
        );
    }

    let secret_token = ann(600);
    let mut node = NodeProcess::start_with_env(
        switchboard_e2e::switchboard_bin!(),
        &[
            "--jwt-secret",
            SECRET,
            "--jwt-audience",
            "switchboard",
            "--allow-query-token",
        ],
        &[("RUST_LOG", "debug")],
    )
    .await;
    let query = Credentials::Query(secret_token.clone());
    for transport in Transport::ALL {
        let mut subscriber = subscribe(&node, transport, "chat", None, &query)
            .await
            .unwrap_or_else(|e| panic!("{transport:?}: {e:?}"));
        let id = publish(&node, transport, "chat", json!(1), &query)
            .await
            .expect("published");
        assert_eq!(subscriber.message().await["id"], json!(id));
    }
    node.sigterm();
    node.exit_within(Duration::from_secs(15)).await;
    let log = node.log();
    assert!(
        log.contains("sse stream opened"),
        "debug logging is on: {log}"
    );
    assert!(!log.contains(&secret_token), "the token reached the log");
    let leaks: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("access_token="))
        .collect();
    assert!(
        leaks.is_empty(),
        "the parameter reached the log: {leaks:#?}"
    );
}

/// The real binary with `--jwt-public-key`: ES256 and RS256 tokens signed with keys made by
/// `openssl` are accepted on every transport, and HS256 ones are not.
#[tokio::test]
async fn public_keys_from_pem_files() {
    let dir = std::env::temp_dir().join(format!("switchboard-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    for (name, algorithm, options) in [
        (
            "ec",
            jsonwebtoken::Algorithm::ES256,
            ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        ),
        (
            "rsa",
            jsonwebtoken::Algorithm::RS256,
            ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        ),
    ] {
        let private = dir.join(format!("{name}.pem"));
        let public = dir.join(format!("{name}.pub.pem"));
        let (private_path, public_path) = (
            private.to_str().expect("utf-8"),
            public.to_str().expect("utf-8"),
        );
        openssl(&[&["genpkey"][..], &options[..], &["-out", private_path]].concat());
        openssl(&["pkey", "-in", private_path, "-pubout", "-out", public_path]);
        let pem = std::fs::read(&private).expect("the private key");
        let key = match algorithm {
            jsonwebtoken::Algorithm::ES256 => jsonwebtoken::EncodingKey::from_ec_pem(&pem),
            _ => jsonwebtoken::EncodingKey::from_rsa_pem(&pem),
        }
        .expect("a signing key");
        let claims = json!({"sub": "ann", "exp": now_s() + 600,
                            "switchboard": {"subscribe": ["chat"], "publish": ["chat"]}});
        let signed = jsonwebtoken::encode(&jsonwebtoken::Header::new(algorithm), &claims, &key)
            .expect("a token");
        let node = NodeProcess::start(
            switchboard_e2e::switchboard_bin!(),
            &["--jwt-public-key", public_path],
        )
        .await;
        let credentials = Credentials::Header(signed);
        for transport in Transport::ALL {
            let mut subscriber = subscribe(&node, transport, "chat", None, &credentials)
                .await
                .unwrap_or_else(|e| panic!("{name} {transport:?}: {e:?}"));
            let id = publish(&node, transport, "chat", json!(name), &credentials)
                .await
                .expect("published");
            assert_eq!(subscriber.message().await["id"], json!(id));
        }
        let hs256 = Credentials::Header(sign(&claims, SECRET));
        assert_refused(
            subscribe(&node, Transport::Sse, "chat", None, &hs256).await,
            Transport::Sse,
            "unauthorized",
        );
    }
}

fn openssl(args: &[&str]) {
    let status = std::process::Command::new("openssl")
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl {args:?} failed");
}

/// `GET /admin/connections` names each connection's token subject, and `POST /admin/disconnect`
/// with `{"sub":…}` ends every connection of that subject (a WebSocket with 4002, an SSE
/// stream), on every transport, and no one else's; a WebSocket's subject follows its `auth`.
#[tokio::test]
async fn operators_disconnect_a_subject() {
    let gateway = Gateway::start(secured(|_| {})).await;
    let bob = sign(
        &json!({"sub": "bob", "aud": "switchboard", "exp": now_s() + 600,
                "switchboard": {"subscribe": ["chat"]}}),
        SECRET,
    );
    let mut ann_ws = subscribe(
        &gateway,
        Transport::Ws,
        "chat",
        None,
        &Credentials::Header(ann(600)),
    )
    .await
    .expect("subscribed");
    let mut ann_sse = subscribe(
        &gateway,
        Transport::Sse,
        "chat",
        None,
        &Credentials::Cookie(ann(600)),
    )
    .await
    .expect("subscribed");
    // Bob's WebSocket opened without a token and authenticated in-band.
    let mut bob_ws = subscribe(
        &gateway,
        Transport::Ws,
        "chat",
        None,
        &Credentials::InBand(bob),
    )
    .await
    .expect("subscribed");

    let client = reqwest::Client::new();
    let listed: Value = client
        .get(gateway.http_url("/admin/connections"))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("JSON");
    let mut subjects: Vec<&str> = listed["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .filter_map(|c| c["sub"].as_str())
        .collect();
    subjects.sort_unstable();
    assert_eq!(subjects, ["ann", "ann", "bob"], "{listed}");

    let answer: Value = client
        .post(gateway.http_url("/admin/disconnect"))
        .json(&json!({"sub": "ann"}))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("JSON");
    assert_eq!(answer, json!({"disconnected": 2}));
    let Subscribed::Ws(ws) = &mut ann_ws else {
        panic!("a WebSocket");
    };
    let (_, closed) = ws.read_to_close().await;
    assert_eq!(closed, Closed::Code(4002));
    let Subscribed::Sse(sse) = &mut ann_sse else {
        panic!("a stream");
    };
    sse.read_to_end().await;
    let id = publish(
        &gateway,
        Transport::Poll,
        "chat",
        json!("bob stays"),
        &key(),
    )
    .await
    .expect("published");
    assert_eq!(bob_ws.message().await["id"], json!(id));
}
