//! The allowlist of `Host` names, against DNS rebinding: a page on a name its author controls
//! (`http://rebind.evil.example`) that is then made to resolve to the gateway's address passes
//! the same-origin check, since its `Origin` and `Host` agree. Only the name the browser was
//! told to reach gives it away, so requests for names the gateway does not serve are refused.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::error::{AppError, ErrorCode};

/// One entry of `allowed_hosts`: `*`, or a host name or IP address, without a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `*`: every host.
    Any,
    /// This host, on any port.
    Host(Host),
}

/// A host as a `Host` header names it, normalised for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// Lowercase, without a trailing dot.
    Name(String),
    Ip(IpAddr),
}

impl Host {
    /// `localhost`, a name under `.localhost` (which browsers resolve to loopback themselves,
    /// RFC 6761) or a loopback address.
    fn is_loopback(&self) -> bool {
        match self {
            Host::Name(name) => name == "localhost" || name.ends_with(".localhost"),
            Host::Ip(ip) => ip.to_canonical().is_loopback(),
        }
    }

    /// A host without a port: a name, an IPv4 address, or an IPv6 address with or without
    /// brackets.
    fn parse(text: &str) -> Option<Host> {
        if let Some(inner) = text.strip_prefix('[') {
            let ip = inner.strip_suffix(']')?.parse::<Ipv6Addr>().ok()?;
            return Some(Host::Ip(IpAddr::V6(ip)));
        }
        // `name.` is the same name as `name`, written fully qualified.
        let text = text.strip_suffix('.').unwrap_or(text);
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Some(Host::Ip(ip));
        }
        let name = text.to_ascii_lowercase();
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        valid.then_some(Host::Name(name))
    }

    /// The host of a `Host` header value, `host[:port]`.
    fn from_header(value: &str) -> Option<Host> {
        let host = if value.starts_with('[') {
            let end = value.find(']')? + 1;
            let port = &value[end..];
            if !port.is_empty() && !is_port(port.strip_prefix(':')?) {
                return None;
            }
            &value[..end]
        } else {
            match value.split_once(':') {
                Some((host, port)) if is_port(port) => host,
                Some(_) => return None,
                None => value,
            }
        };
        Host::parse(host)
    }
}

/// The digits of a port; empty is allowed (RFC 3986: `port = *DIGIT`).
fn is_port(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_digit())
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => ip.fmt(f),
        }
    }
}

impl std::str::FromStr for HostPattern {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "*" {
            return Ok(HostPattern::Any);
        }
        Host::parse(text).map(HostPattern::Host).ok_or_else(|| {
            format!("{text:?} is not a host name or IP address (without scheme or port), nor `*`")
        })
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Any => f.write_str("*"),
            HostPattern::Host(host) => host.fmt(f),
        }
    }
}

impl Serialize for HostPattern {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HostPattern {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Which `Host` headers the gateway answers, decided once from the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPolicy {
    /// Every host: `*` is listed, or nothing is and the gateway listens on a public address.
    Any,
    /// Loopback names only: nothing is listed and the gateway listens on a loopback address.
    Loopback,
    /// Exactly the listed hosts.
    Listed(Vec<Host>),
}

impl HostPolicy {
    /// The policy for `allowed_hosts` on a gateway listening on `listen`.
    pub fn new(allowed: &[HostPattern], listen: SocketAddr) -> HostPolicy {
        let mut listed = Vec::with_capacity(allowed.len());
        for pattern in allowed {
            match pattern {
                HostPattern::Any => return HostPolicy::Any,
                HostPattern::Host(host) => listed.push(host.clone()),
            }
        }
        if !listed.is_empty() {
            HostPolicy::Listed(listed)
        } else if listen.ip().to_canonical().is_loopback() {
            HostPolicy::Loopback
        } else {
            HostPolicy::Any
        }
    }

    /// Whether a request with this `Host` header (or none) is served. Browsers always send
    /// one, so a request without it is refused unless every host is allowed.
    pub fn allows(&self, host: Option<&HeaderValue>) -> bool {
        let host = || {
            host.and_then(|value| value.to_str().ok())
                .and_then(Host::from_header)
        };
        match self {
            HostPolicy::Any => true,
            HostPolicy::Loopback => host().is_some_and(|host| host.is_loopback()),
            HostPolicy::Listed(listed) => host().is_some_and(|host| listed.contains(&host)),
        }
    }
}

/// Middleware: refuses requests for hosts that are not allowed with `403 host_not_allowed`.
pub async fn check(
    State(policy): State<Arc<HostPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request.headers().get(header::HOST);
    if policy.allows(host) {
        return next.run(request).await;
    }
    let message = match host {
        Some(host) => format!(
            "host {:?} is not allowed; add it to allowed_hosts",
            host.to_str().unwrap_or("(not text)")
        ),
        None => "a Host header is required".to_owned(),
    };
    AppError::new(ErrorCode::HostNotAllowed, message).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOPBACK: &str = "127.0.0.1:8080";
    const PUBLIC: &str = "0.0.0.0:8080";

    fn policy(allowed: &[&str], listen: &str) -> HostPolicy {
        let allowed: Vec<HostPattern> = allowed
            .iter()
            .map(|text| text.parse().expect("a valid pattern"))
            .collect();
        HostPolicy::new(&allowed, listen.parse().expect("an address"))
    }

    fn allows(policy: &HostPolicy, host: &str) -> bool {
        policy.allows(Some(&HeaderValue::from_str(host).expect("a header value")))
    }

    #[test]
    fn default_on_loopback_accepts_loopback_names_on_any_port() {
        for listen in [LOOPBACK, "[::1]:8080", "127.0.0.2:80"] {
            let loopback = policy(&[], listen);
            assert_eq!(loopback, HostPolicy::Loopback, "{listen}");
            for host in [
                "localhost",
                "localhost:8080",
                "LocalHost.:1",
                "127.0.0.1.:8080",
                "app.localhost:3000",
                "127.0.0.1",
                "127.0.0.1:8080",
                "127.1.2.3:9",
                "[::1]",
                "[::1]:8080",
                "[::ffff:127.0.0.1]:8080",
            ] {
                assert!(allows(&loopback, host), "{listen} refused {host}");
            }
            for host in [
                "rebind.evil.example",
                "rebind.evil.example:8080",
                "localhost.evil.example",
                "evil-localhost",
                "10.0.0.1:8080",
                "[::2]:8080",
                "127.0.0.1:80:80",
                "127.0.0.1:http",
                "[::1",
                "::1",
                "",
            ] {
                assert!(!allows(&loopback, host), "{listen} accepted {host:?}");
            }
            assert!(!loopback.allows(None), "{listen} accepted no Host");
        }
    }

    #[test]
    fn default_elsewhere_and_star_accept_any_host() {
        for any in [
            policy(&[], PUBLIC),
            policy(&[], "[::]:80"),
            policy(&["*"], LOOPBACK),
        ] {
            assert_eq!(any, HostPolicy::Any);
            assert!(allows(&any, "rebind.evil.example:8080"));
            assert!(allows(&any, "not a host"));
            assert!(any.allows(None));
        }
        assert_eq!(policy(&["chat.example", "*"], LOOPBACK), HostPolicy::Any);
    }

    #[test]
    fn listed_hosts_match_by_name_or_address_on_any_port() {
        let listed = policy(&["Chat.Example.com", "10.0.0.5", "[2001:db8::1]"], LOOPBACK);
        for host in [
            "chat.example.com",
            "CHAT.example.COM:8443",
            "chat.example.com.",
            "10.0.0.5:8080",
            "[2001:db8:0::1]:80",
        ] {
            assert!(allows(&listed, host), "refused {host}");
        }
        // A list replaces the loopback default instead of adding to it.
        for host in [
            "localhost:8080",
            "127.0.0.1:8080",
            "www.chat.example.com",
            "chat.example.com.evil.example",
            "rebind.evil.example",
        ] {
            assert!(!allows(&listed, host), "accepted {host}");
        }
        assert!(!listed.allows(None));
    }

    #[test]
    fn patterns_parse_and_print_back() {
        for (text, printed) in [
            ("*", "*"),
            ("Chat.Example.com.", "chat.example.com"),
            ("127.0.0.1", "127.0.0.1"),
            ("::1", "[::1]"),
            ("[::1]", "[::1]"),
        ] {
            let pattern: HostPattern = text.parse().expect("valid");
            assert_eq!(pattern.to_string(), printed, "{text}");
        }
        for bad in [
            "",
            "https://chat.example.com",
            "chat.example.com:443",
            "chat.example.com/",
            "*.example.com",
            "[::1",
        ] {
            assert!(bad.parse::<HostPattern>().is_err(), "{bad:?} parsed");
        }
    }
}
