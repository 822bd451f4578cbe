//! Rate limits: publishes per client address and per WebSocket, subscribe requests per client
//! address (`publish_rate`, `connect_rate`). Over a limit the client is told when to retry
//! (`429 rate_limited` with `Retry-After`, or a WebSocket `error` frame); nothing is dropped.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::Config;
use crate::error::{AppError, ErrorCode};

/// How often the per-address limiters forget addresses whose allowance is full again, which
/// is what bounds their memory: only addresses seen within about one burst's refill are kept.
pub const FORGET_INTERVAL: Duration = Duration::from_secs(10);

/// A rate as written in the settings: `20/s`, `600/m`, `3600/h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: NonZeroU32,
    pub per: Duration,
}

impl Rate {
    /// The quota of this rate with `burst` allowed at once (default: one period's count).
    fn quota(self, burst: Option<u32>) -> Quota {
        let interval = self.per / self.count.get();
        let burst = burst.and_then(NonZeroU32::new).unwrap_or(self.count);
        Quota::with_period(interval.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(self.count))
            .allow_burst(burst)
    }
}

impl std::str::FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Rate, String> {
        let bad = || format!("rate {text:?}: write a count per s, m or h, like 20/s or 600/m");
        let (count, unit) = text.trim().split_once('/').ok_or_else(bad)?;
        let count: NonZeroU32 = count.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        Ok(Rate { count, per })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            3600 => "h",
            60 => "m",
            _ => "s",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The configured limits, shared by every connection.
#[derive(Debug, Default)]
pub struct RateLimits {
    /// Publishes per client address, on every transport.
    publish_by_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// The quota of each WebSocket's own publish limiter.
    publish_per_connection: Option<Quota>,
    /// Subscribe requests per client address.
    connect_by_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

/// One WebSocket's own publish limiter.
pub type ConnectionLimiter = DefaultDirectRateLimiter;

impl RateLimits {
    pub fn from_config(config: &Config) -> RateLimits {
        let publish = config
            .publish_rate
            .map(|rate| rate.quota(config.publish_burst));
        let connect = config
            .connect_rate
            .map(|rate| rate.quota(config.connect_burst));
        RateLimits {
            publish_by_address: publish.map(governor::RateLimiter::keyed),
            publish_per_connection: publish,
            connect_by_address: connect.map(governor::RateLimiter::keyed),
        }
    }

    /// A limiter for one WebSocket's publishes, when publishes are limited.
    pub fn connection_limiter(&self) -> Option<ConnectionLimiter> {
        self.publish_per_connection
            .map(governor::RateLimiter::direct)
    }

    /// One publish from `address` (and on `connection`, for a WebSocket), or `rate_limited`.
    pub fn check_publish(
        &self,
        address: IpAddr,
        connection: Option<&ConnectionLimiter>,
    ) -> Result<(), AppError> {
        if let Some(limiter) = connection {
            limiter.check().map_err(|wait| {
                limited(
                    "publishing",
                    wait.wait_time_from(DefaultClock::default().now()),
                )
            })?;
        }
        check_keyed(self.publish_by_address.as_ref(), address, "publishing")
    }

    /// One subscribe request from `address`, or `rate_limited`.
    pub fn check_connect(&self, address: IpAddr) -> Result<(), AppError> {
        check_keyed(self.connect_by_address.as_ref(), address, "connecting")
    }

    /// Forgets addresses whose allowance is full again; run every [`FORGET_INTERVAL`].
    pub fn forget_idle(&self) {
        for limiter in [&self.publish_by_address, &self.connect_by_address]
            .into_iter()
            .flatten()
        {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Client addresses being tracked now, for `/healthz`.
    pub fn tracked_addresses(&self) -> usize {
        [&self.publish_by_address, &self.connect_by_address]
            .into_iter()
            .flatten()
            .map(|limiter| limiter.len())
            .sum()
    }
}

fn check_keyed(
    limiter: Option<&DefaultKeyedRateLimiter<IpAddr>>,
    address: IpAddr,
    doing: &str,
) -> Result<(), AppError> {
    let Some(limiter) = limiter else {
        return Ok(());
    };
    limiter
        .check_key(&address)
        .map_err(|wait| limited(doing, wait.wait_time_from(DefaultClock::default().now())))
}

/// `rate_limited`, with when to retry.
fn limited(doing: &str, wait: Duration) -> AppError {
    AppError::new(
        ErrorCode::RateLimited,
        format!("{doing} too fast; retry in {:.3} s", wait.as_secs_f64()),
    )
    .retry_after(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_and_print_as_written() {
        for text in ["20/s", "600/m", "1/h"] {
            let rate: Rate = text.parse().expect("a rate");
            assert_eq!(rate.to_string(), text);
        }
        for bad in ["20", "0/s", "20/d", "x/s", "-1/s", ""] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?} was accepted");
        }
    }

    fn limits(publish: &str, burst: Option<u32>) -> RateLimits {
        let config = Config {
            publish_rate: Some(publish.parse().expect("rate")),
            publish_burst: burst,
            connect_rate: Some("1/h".parse().expect("rate")),
            ..Config::default()
        };
        RateLimits::from_config(&config)
    }

    #[test]
    fn a_burst_then_refusals_that_say_when_to_retry_and_neighbours_unaffected() {
        let limits = limits("1/h", Some(3));
        let ann: IpAddr = "192.0.2.1".parse().expect("ip");
        let bob: IpAddr = "192.0.2.2".parse().expect("ip");
        for _ in 0..3 {
            limits.check_publish(ann, None).expect("within the burst");
        }
        let refused = limits.check_publish(ann, None).expect_err("over the burst");
        assert_eq!(refused.code, ErrorCode::RateLimited);
        let wait = refused.retry_after.expect("a wait");
        assert!(wait > Duration::from_secs(3000), "{wait:?}");
        limits
            .check_publish(bob, None)
            .expect("another address has its own allowance");
        limits
            .check_connect(ann)
            .expect("connecting is counted apart");
        assert!(limits.check_connect(ann).is_err());
    }

    #[test]
    fn a_websocket_is_limited_on_its_own_too() {
        let limits = limits("1/h", Some(2));
        let connection = limits.connection_limiter().expect("limited");
        let ann: IpAddr = "192.0.2.1".parse().expect("ip");
        let bob: IpAddr = "192.0.2.2".parse().expect("ip");
        limits.check_publish(ann, Some(&connection)).expect("first");
        limits
            .check_publish(bob, Some(&connection))
            .expect("second");
        // The connection is out of allowance though `carol` has all of hers.
        let carol: IpAddr = "192.0.2.3".parse().expect("ip");
        assert!(limits.check_publish(carol, Some(&connection)).is_err());
        assert!(RateLimits::default().connection_limiter().is_none());
    }
}
