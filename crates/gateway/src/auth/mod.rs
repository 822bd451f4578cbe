//! Who may subscribe and publish (`docs/PROTOCOL.md`, "Access control").
//!
//! - `pattern`: topic patterns (`chat`, `room.*`, `*`).
//! - `token`: checking JSON Web Tokens and reading their `switchboard` claim.
//! - this file: the settings put together ([`Auth`]), what one client may do ([`Grant`]), and
//!   where a request carries its credentials.
//!
//! Architecture invariant: every transport asks the same two questions of a [`Grant`]
//! (`check_subscribe`, `check_publish`), and gets its grant from [`Auth::grant`] (a request)
//! or [`Auth::grant_for_token`] (a WebSocket `auth` frame); no handler reads credentials
//! itself.

pub mod pattern;
mod token;

use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, header};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use switchboard_hub::TopicName;
use tokio::time::Sleep;

pub use self::pattern::TopicPattern;
use self::pattern::any_matches;
pub use self::token::Permissions;
use self::token::TokenVerifier;
use crate::config::Config;
use crate::error::{AppError, ErrorCode};
use crate::request::QueryParams;

/// The query parameter that carries a token, where `allow_query_token` is on.
pub const QUERY_TOKEN: &str = "access_token";

/// One `[[anonymous]]` rule of the configuration file: what clients without credentials may do
/// with some topics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnonymousRule {
    pub topics: Vec<TopicPattern>,
    pub allow: Vec<Action>,
}

/// What a rule or a token may allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Subscribe,
    Publish,
}

/// Access control as configured.
pub struct Auth {
    /// Off when no key is configured: everyone may do everything, as before access control.
    enabled: bool,
    /// Checks JWTs, when a secret or public key is configured.
    tokens: Option<TokenVerifier>,
    /// Keys of backends that may publish to any topic (several, so that one can be rotated).
    publish_keys: Vec<String>,
    /// What clients without credentials may do; a token adds to it.
    anonymous: Arc<Permissions>,
    /// The cookie browsers carry their token in.
    cookie: String,
    /// Whether a token may come in the `access_token` query parameter.
    allow_query_token: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of every log and panic message.
        f.debug_struct("Auth")
            .field("enabled", &self.enabled)
            .field("tokens", &self.tokens)
            .field("publish_keys", &self.publish_keys.len())
            .field("anonymous", &self.anonymous)
            .finish()
    }
}

impl Auth {
    /// No access control: everyone may subscribe and publish to every topic.
    pub fn open() -> Auth {
        Auth {
            enabled: false,
            tokens: None,
            publish_keys: Vec::new(),
            anonymous: Arc::default(),
            cookie: String::new(),
            allow_query_token: false,
        }
    }

    /// Access control as `config` describes it; reads the public key file, if any.
    pub fn from_config(config: &Config) -> Result<Auth, String> {
        let public_pem = match &config.jwt_public_key {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| format!("cannot read jwt_public_key {}: {e}", path.display()))?,
            ),
            None => None,
        };
        let tokens = TokenVerifier::new(
            config.jwt_secret.as_deref(),
            public_pem.as_deref(),
            config.jwt_audience.clone(),
            config.jwt_issuer.clone(),
            config.jwt_leeway,
        )?;
        if config.publish_key.iter().any(String::is_empty) {
            return Err("publish_key must not be empty".into());
        }
        let mut anonymous = Permissions::default();
        for rule in &config.anonymous {
            for action in &rule.allow {
                let patterns = match action {
                    Action::Subscribe => &mut anonymous.subscribe,
                    Action::Publish => &mut anonymous.publish,
                };
                patterns.extend(rule.topics.iter().cloned());
            }
        }
        Ok(Auth {
            enabled: tokens.is_some() || !config.publish_key.is_empty(),
            tokens,
            publish_keys: config.publish_key.clone(),
            anonymous: Arc::new(anonymous),
            cookie: config.jwt_cookie.clone(),
            allow_query_token: config.allow_query_token,
        })
    }

    /// Whether access is controlled at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// What the client that sent a request with these `headers` and `query` may do: a token
    /// from `Authorization: Bearer`, else the cookie, else (where allowed) the query; with
    /// none, what the anonymous rules allow. Credentials that are given but wrong are refused,
    /// never read as anonymous.
    pub fn grant(&self, headers: &HeaderMap, query: Option<&str>) -> Result<Grant, AppError> {
        if !self.enabled {
            return Ok(Grant::everyone());
        }
        // Read only with access control on: an open gateway's publishes pay nothing for it.
        let params = QueryParams::parse(query);
        let query_token = params.last(QUERY_TOKEN).filter(|t| !t.is_empty());
        if query_token.is_some() && !self.allow_query_token {
            return Err(AppError::new(
                ErrorCode::Unauthorized,
                "tokens in the query string are not accepted here; send an Authorization \
                 header or the cookie",
            ));
        }
        let token = bearer(headers)?
            .or_else(|| cookie(headers, &self.cookie))
            .or(query_token);
        match token {
            Some(token) => self.grant_for_token(token),
            None => Ok(self.anonymous()),
        }
    }

    /// What `token` (a JWT or a publish key) allows.
    pub fn grant_for_token(&self, token: &str) -> Result<Grant, AppError> {
        if !self.enabled {
            return Ok(Grant::everyone());
        }
        if self.is_publish_key(token) {
            return Ok(Grant::new(Holder::PublishKey, self.anonymous.clone(), None));
        }
        let Some(tokens) = &self.tokens else {
            return Err(AppError::new(
                ErrorCode::Unauthorized,
                "not a publish key, and this gateway accepts no tokens",
            ));
        };
        let verified = tokens.verify(token)?;
        let expires = verified
            .expires
            .map(|exp| exp.saturating_add(tokens.leeway().as_secs()));
        let holder = Holder::Token {
            subject: verified.subject,
            permissions: verified.permissions,
        };
        Ok(Grant::new(holder, self.anonymous.clone(), expires))
    }

    fn anonymous(&self) -> Grant {
        Grant::new(Holder::Anonymous, self.anonymous.clone(), None)
    }

    /// Compared in constant time, so that a key cannot be guessed byte by byte.
    fn is_publish_key(&self, token: &str) -> bool {
        self.publish_keys.iter().fold(false, |found, key| {
            found | bool::from(key.as_bytes().ct_eq(token.as_bytes()))
        })
    }
}

/// The token of an `Authorization: Bearer …` header, if there is one.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, AppError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || {
        AppError::new(
            ErrorCode::Unauthorized,
            "the Authorization header must be `Bearer <token>`",
        )
    };
    let text = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = text.split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(malformed());
    }
    Ok(Some(token.trim()))
}

/// The value of cookie `name`, if the request carries it.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|value| !value.is_empty())
}

/// Whose credentials a grant comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// Access control is off.
    Everyone,
    /// No credentials: the anonymous rules.
    Anonymous,
    /// A JWT, with what its `switchboard` claim allows.
    Token {
        subject: Option<String>,
        permissions: Permissions,
    },
    /// A backend's publish key: publish anywhere.
    PublishKey,
}

/// What one client may do, and until when.
#[derive(Debug, Clone)]
pub struct Grant(Arc<GrantInner>);

#[derive(Debug)]
struct GrantInner {
    holder: Holder,
    /// Allowed to everyone without credentials, and so to every holder.
    anonymous: Arc<Permissions>,
    /// When the grant ends (the token's `exp` plus the leeway), in seconds since the Unix
    /// epoch.
    expires: Option<u64>,
}

impl Grant {
    fn new(holder: Holder, anonymous: Arc<Permissions>, expires: Option<u64>) -> Grant {
        Grant(Arc::new(GrantInner {
            holder,
            anonymous,
            expires,
        }))
    }

    /// Everything, for ever: access control is off. One grant shared by every request, so
    /// that an open gateway allocates nothing for it.
    pub fn everyone() -> Grant {
        static EVERYONE: LazyLock<Grant> =
            LazyLock::new(|| Grant::new(Holder::Everyone, Arc::default(), None));
        EVERYONE.clone()
    }

    /// The token's subject, if the grant comes from a token that names one.
    pub fn subject(&self) -> Option<&str> {
        match &self.0.holder {
            Holder::Token { subject, .. } => subject.as_deref(),
            _ => None,
        }
    }

    /// Whether rate limits pass this client by: a backend with a publish key.
    pub fn is_publish_key(&self) -> bool {
        self.0.holder == Holder::PublishKey
    }

    fn allows(&self, action: Action, topic: &str) -> bool {
        let pick = |permissions: &Permissions| match action {
            Action::Subscribe => any_matches(&permissions.subscribe, topic),
            Action::Publish => any_matches(&permissions.publish, topic),
        };
        match &self.0.holder {
            Holder::Everyone => true,
            Holder::PublishKey if action == Action::Publish => true,
            Holder::Token { permissions, .. } if pick(permissions) => true,
            _ => pick(&self.0.anonymous),
        }
    }

    pub fn may_subscribe(&self, topic: &str) -> bool {
        self.allows(Action::Subscribe, topic)
    }

    /// `Ok` if every one of `topics` may be subscribed to; otherwise the error for the first
    /// that may not.
    pub fn check_subscribe(&self, topics: &[TopicName]) -> Result<(), AppError> {
        match topics
            .iter()
            .find(|topic| !self.may_subscribe(topic.as_str()))
        {
            None => self.check_current(),
            Some(topic) => Err(self.refusal("subscribe to", topic)),
        }
    }

    pub fn check_publish(&self, topic: &TopicName) -> Result<(), AppError> {
        if self.allows(Action::Publish, topic.as_str()) {
            self.check_current()
        } else {
            Err(self.refusal("publish to", topic))
        }
    }

    /// `token_expired` once the grant has run out.
    fn check_current(&self) -> Result<(), AppError> {
        match self.remaining() {
            Some(Duration::ZERO) => Err(expired()),
            _ => Ok(()),
        }
    }

    /// How long the grant still lasts (zero once it has run out), or `None` if it does not
    /// expire.
    pub fn remaining(&self) -> Option<Duration> {
        let expires = UNIX_EPOCH + Duration::from_secs(self.0.expires?);
        Some(
            expires
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO),
        )
    }

    /// When the grant runs out, in seconds since the Unix epoch.
    pub fn expires(&self) -> Option<u64> {
        self.0.expires
    }

    /// `unauthorized` for a client with no credentials (it needs some), `forbidden` for one
    /// whose credentials do not cover `topic`.
    fn refusal(&self, doing: &str, topic: &TopicName) -> AppError {
        match self.0.holder {
            Holder::Anonymous => AppError::new(
                ErrorCode::Unauthorized,
                format!("a token is needed to {doing} `{topic}`"),
            ),
            _ => AppError::new(
                ErrorCode::Forbidden,
                format!("these credentials do not allow you to {doing} `{topic}`"),
            ),
        }
    }
}

/// The timer of a grant that runs out in `remaining`; boxed, so that the many connections
/// whose grant does not expire carry no timer in their state (a `Sleep` is over 100 bytes).
pub fn expiry_timer(remaining: Option<Duration>) -> Option<Pin<Box<Sleep>>> {
    remaining.map(|remaining| Box::pin(tokio::time::sleep(remaining)))
}

/// Completes when `timer` does; never without one.
pub async fn until(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(timer) => timer.as_mut().await,
        None => std::future::pending().await,
    }
}

/// The error of a token that has run out.
pub fn expired() -> AppError {
    AppError::new(
        ErrorCode::TokenExpired,
        "the token has expired; reconnect or authenticate with a fresh one",
    )
}

#[cfg(test)]
mod tests;
