use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use switchboard_hub::TopicName;

use super::*;

const SECRET: &str = "a secret of thirty-two bytes or more";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn hs256(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()).expect("a key"),
    )
    .expect("a token")
}

fn config(change: impl FnOnce(&mut Config)) -> Auth {
    let mut config = Config {
        jwt_secret: Some(SECRET.into()),
        jwt_leeway: Duration::ZERO,
        ..Config::default()
    };
    change(&mut config);
    Auth::from_config(&config).expect("valid settings")
}

fn topic(name: &str) -> TopicName {
    TopicName::new(name).expect("a topic")
}

fn bearer_headers(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("a header"),
    );
    headers
}

fn code(result: Result<impl std::fmt::Debug, AppError>) -> ErrorCode {
    result.expect_err("refused").code
}

fn ann() -> Value {
    json!({"sub": "ann", "exp": now() + 600,
           "switchboard": {"subscribe": ["chat", "room.*"], "publish": ["chat"]}})
}

#[test]
fn open_without_keys() {
    let auth = Auth::from_config(&Config::default()).expect("defaults");
    assert!(!auth.enabled());
    let grant = auth.grant(&HeaderMap::new(), None).expect("anyone");
    grant.check_subscribe(&[topic("x")]).expect("allowed");
    grant.check_publish(&topic("x")).expect("allowed");
}

#[test]
fn a_token_allows_what_its_claim_says() {
    let auth = config(|_| {});
    let grant = auth.grant_for_token(&hs256(&ann(), SECRET)).expect("valid");
    assert_eq!(grant.subject(), Some("ann"));
    grant
        .check_subscribe(&[topic("chat"), topic("room.a/b")])
        .expect("allowed");
    grant.check_publish(&topic("chat")).expect("allowed");
    assert_eq!(
        code(grant.check_publish(&topic("room.1"))),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(grant.check_subscribe(&[topic("chat"), topic("user.bob")])),
        ErrorCode::Forbidden
    );
    let refused = grant.check_subscribe(&[topic("user.bob")]).expect_err("no");
    assert!(
        refused.message.contains("`user.bob`"),
        "{}",
        refused.message
    );
}

#[test]
fn anonymous_clients_get_the_rules_and_token_holders_get_them_too() {
    let auth = config(|config| {
        config.anonymous = vec![AnonymousRule {
            topics: vec![TopicPattern::parse("public.*").expect("pattern")],
            allow: vec![Action::Subscribe],
        }];
    });
    let anonymous = auth.grant(&HeaderMap::new(), None).expect("anonymous");
    anonymous
        .check_subscribe(&[topic("public.news")])
        .expect("allowed");
    assert_eq!(
        code(anonymous.check_subscribe(&[topic("chat")])),
        ErrorCode::Unauthorized
    );
    assert_eq!(
        code(anonymous.check_publish(&topic("public.news"))),
        ErrorCode::Unauthorized
    );
    let grant = auth.grant_for_token(&hs256(&ann(), SECRET)).expect("valid");
    grant
        .check_subscribe(&[topic("public.news")])
        .expect("allowed");
}

#[test]
fn wrong_tokens_are_refused_and_never_read_as_anonymous() {
    let auth = config(|config| {
        config.jwt_audience = Some("switchboard".into());
        config.jwt_issuer = Some("https://app.example".into());
    });
    let mut good = ann();
    good["aud"] = json!("switchboard");
    good["iss"] = json!("https://app.example");
    auth.grant_for_token(&hs256(&good, SECRET)).expect("valid");

    let mut expired = good.clone();
    expired["exp"] = json!(now() - 10);
    let mut early = good.clone();
    early["nbf"] = json!(now() + 600);
    let mut audience = good.clone();
    audience["aud"] = json!("another");
    let mut issuer = good.clone();
    issuer["iss"] = json!("https://evil.example");
    let mut no_audience = good.clone();
    no_audience.as_object_mut().expect("object").remove("aud");
    let mut bad_claim = good.clone();
    bad_claim["switchboard"] = json!({"subscribe": ["ro*m"]});
    let none = format!(
        "{}.{}.",
        base64_url(r#"{"alg":"none","typ":"JWT"}"#),
        base64_url(&good.to_string())
    );
    let cases = [
        (hs256(&expired, SECRET), ErrorCode::TokenExpired),
        (hs256(&early, SECRET), ErrorCode::Unauthorized),
        (hs256(&audience, SECRET), ErrorCode::Unauthorized),
        (hs256(&issuer, SECRET), ErrorCode::Unauthorized),
        (hs256(&no_audience, SECRET), ErrorCode::Unauthorized),
        (hs256(&bad_claim, SECRET), ErrorCode::Unauthorized),
        (
            hs256(&good, "another secret of enough length!!"),
            ErrorCode::Unauthorized,
        ),
        (none, ErrorCode::Unauthorized),
        ("not.a.token".to_owned(), ErrorCode::Unauthorized),
    ];
    for (token, expected) in cases {
        assert_eq!(code(auth.grant_for_token(&token)), expected, "{token}");
        let headers = bearer_headers(&token);
        assert_eq!(
            code(auth.grant(&headers, None)),
            expected,
            "{token} in a header"
        );
    }
}

fn base64_url(text: &str) -> String {
    use std::fmt::Write;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            let _ = write!(
                out,
                "{}",
                ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char
            );
        }
    }
    out
}

#[test]
fn without_exp_a_token_does_not_expire_and_with_it_the_leeway_counts() {
    let auth = config(|config| config.jwt_leeway = Duration::from_secs(30));
    let forever = auth
        .grant_for_token(&hs256(&json!({"switchboard": {}}), SECRET))
        .expect("valid");
    assert_eq!(forever.remaining(), None);
    // Expired ten seconds ago, but within the leeway.
    let mut late = ann();
    late["exp"] = json!(now() - 10);
    let grant = auth
        .grant_for_token(&hs256(&late, SECRET))
        .expect("within the leeway");
    let remaining = grant.remaining().expect("expires");
    assert!(remaining > Duration::from_secs(15) && remaining <= Duration::from_secs(20));
}

#[test]
fn where_credentials_come_from() {
    let auth = config(|config| config.publish_key = vec!["old-key".into(), "new-key".into()]);
    let token = hs256(&ann(), SECRET);
    let mut cookie = HeaderMap::new();
    cookie.insert(
        header::COOKIE,
        format!("theme=dark; switchboard_token={token}; x=y")
            .parse()
            .expect("a header"),
    );
    let grant = auth.grant(&cookie, None).expect("cookie");
    assert_eq!(grant.subject(), Some("ann"));

    // A header wins over the cookie.
    let mut both = cookie.clone();
    both.insert(
        header::AUTHORIZATION,
        "Bearer new-key".parse().expect("header"),
    );
    assert!(auth.grant(&both, None).expect("key").is_publish_key());
    let key = auth.grant_for_token("old-key").expect("a key");
    key.check_publish(&topic("anything"))
        .expect("publish anywhere");
    assert_eq!(
        code(key.check_subscribe(&[topic("chat")])),
        ErrorCode::Forbidden
    );

    // The query only where allowed.
    let query = format!("topic=chat&access_token={token}");
    assert_eq!(
        code(auth.grant(&HeaderMap::new(), Some(&query))),
        ErrorCode::Unauthorized
    );
    let allowing = config(|config| config.allow_query_token = true);
    let grant = allowing
        .grant(&HeaderMap::new(), Some(&query))
        .expect("query token");
    assert_eq!(grant.subject(), Some("ann"));

    for malformed in ["Basic abc", "Bearer", "Bearer   ", "token"] {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, malformed.parse().expect("header"));
        assert_eq!(
            code(auth.grant(&headers, None)),
            ErrorCode::Unauthorized,
            "{malformed}"
        );
    }
}

#[test]
fn keys_come_from_pem_files_and_pick_their_algorithm() {
    let dir = std::env::temp_dir().join(format!("switchboard-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    for (name, alg, args) in [
        (
            "rsa",
            Algorithm::RS256,
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"][..],
        ),
        (
            "ec",
            Algorithm::ES256,
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"][..],
        ),
    ] {
        let private = dir.join(format!("{name}.pem"));
        let public = dir.join(format!("{name}.pub.pem"));
        let run = |args: &[&str]| {
            let status = std::process::Command::new("openssl")
                .args(args)
                .stderr(std::process::Stdio::null())
                .status()
                .expect("openssl runs");
            assert!(status.success(), "openssl {args:?}");
        };
        let mut generate = vec!["genpkey"];
        generate.extend_from_slice(args);
        generate.extend_from_slice(&["-out", private.to_str().expect("utf-8")]);
        run(&generate);
        run(&[
            "pkey",
            "-in",
            private.to_str().expect("utf-8"),
            "-pubout",
            "-out",
            public.to_str().expect("utf-8"),
        ]);
        let pem = std::fs::read(&private).expect("private key");
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
            _ => EncodingKey::from_ec_pem(&pem),
        }
        .expect("an encoding key");
        let token = jsonwebtoken::encode(&Header::new(alg), &ann(), &key).expect("a token");
        let auth = Auth::from_config(&Config {
            jwt_public_key: Some(public.clone()),
            ..Config::default()
        })
        .expect("valid settings");
        let grant = auth.grant_for_token(&token).expect("verified");
        assert_eq!(grant.subject(), Some("ann"), "{name}");
        // HS256 tokens are refused: no secret is configured, and the public key is no secret.
        let public_pem = std::fs::read_to_string(&public).expect("public key");
        assert_eq!(
            code(auth.grant_for_token(&hs256(&ann(), &public_pem))),
            ErrorCode::Unauthorized
        );
    }
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a key").expect("write");
    let refused = Auth::from_config(&Config {
        jwt_public_key: Some(garbage),
        ..Config::default()
    });
    assert!(refused.is_err());
}
