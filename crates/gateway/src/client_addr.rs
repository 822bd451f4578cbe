//! The client's address: the peer's, or, behind a trusted proxy, the one the proxy reports.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

use crate::config::Config;

/// The address of the client behind `peer`. `X-Forwarded-For` is read from the right, skipping
/// trusted proxies, so a client cannot spoof it by sending its own; `X-Real-IP` is the
/// fallback. Headers from untrusted peers are ignored.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, config: &Config) -> IpAddr {
    let peer = peer.ip().to_canonical();
    if !config.trusts(peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|part| part.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    if let Some(client) = forwarded.iter().rev().find(|ip| !config.trusts(**ip)) {
        return client.to_canonical();
    }
    let real_ip = headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok()?.trim().parse::<IpAddr>().ok());
    real_ip.or(forwarded.first().copied()).unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(trusted: &[&str]) -> Config {
        Config {
            trusted_proxies: trusted.iter().map(|t| t.parse().expect("net")).collect(),
            ..Config::default()
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, value.parse().expect("value"));
        }
        headers
    }

    #[test]
    fn untrusted_peers_cannot_claim_an_address() {
        let peer: SocketAddr = "203.0.113.9:5000".parse().expect("addr");
        let spoof = headers(&[("x-forwarded-for", "1.2.3.4"), ("x-real-ip", "1.2.3.4")]);
        assert_eq!(client_ip(peer, &spoof, &config(&[])), peer.ip());
        assert_eq!(client_ip(peer, &spoof, &config(&["127.0.0.1"])), peer.ip());
    }

    #[test]
    fn trusted_proxy_reports_the_client() {
        let proxy: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let config = config(&["127.0.0.0/8", "10.0.0.0/8"]);
        let chain = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.1.1")]);
        let ip: IpAddr = "198.51.100.7".parse().expect("ip");
        assert_eq!(
            client_ip(proxy, &chain, &config),
            ip,
            "the spoofed left-most entry is not believed"
        );
        let real = headers(&[("x-real-ip", "198.51.100.8")]);
        assert_eq!(
            client_ip(proxy, &real, &config),
            "198.51.100.8".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &config), proxy.ip());
    }
}
