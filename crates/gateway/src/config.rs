//! Settings: flags, environment and an optional TOML file, with documented defaults.
//!
//! Precedence, highest first: a flag, its `SWITCHBOARD_*` environment variable, the TOML file
//! given with `--config`, the default. Every setting is one field of [`Config`], named the same
//! in all four places (`--poll-timeout`, `SWITCHBOARD_POLL_TIMEOUT`, `poll_timeout = "25s"`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, FromArgMatches};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use switchboard_hub::HubConfig;

use crate::admin::AdminKey;
use crate::auth::AnonymousRule;
use crate::host::HostPattern;
use crate::logging::LogFormat;
pub use crate::rate::Rate;

/// Everything `switchboard serve` can be told. Durations are written like `15s`, `500ms`, `1h`.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// TOML file with any of these settings (flags and environment override it).
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Serve the demo and client from this directory instead of the files built into the binary.
    #[arg(long, env = "SWITCHBOARD_STATIC_DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub static_dir: Option<PathBuf>,

    /// Interval of SSE heartbeat comments and WebSocket pings; keep it below every proxy's idle
    /// timeout (nginx: proxy_read_timeout, 60s by default).
    #[arg(long, env = "SWITCHBOARD_HEARTBEAT_INTERVAL", default_value = "15s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,

    /// How long a poll without `timeout` is held.
    #[arg(long, env = "SWITCHBOARD_POLL_TIMEOUT", default_value = "25s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub poll_timeout: Duration,

    /// The longest `timeout` a poll may ask for; keep it below proxies' read timeouts.
    #[arg(long, env = "SWITCHBOARD_POLL_MAX_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub poll_max_timeout: Duration,

    /// Most messages in one poll reply.
    #[arg(long, env = "SWITCHBOARD_POLL_BATCH", default_value_t = 1000)]
    pub poll_batch: usize,

    /// Most bytes of messages in one poll reply (at least one message is always sent).
    #[arg(long, env = "SWITCHBOARD_POLL_BATCH_BYTES", default_value_t = 1024 * 1024)]
    pub poll_batch_bytes: usize,

    /// Messages queued for one connection before it is dropped as a slow consumer.
    #[arg(long, env = "SWITCHBOARD_SEND_QUEUE", default_value_t = 1024)]
    pub send_queue: usize,

    /// Bytes of messages queued for one connection before it is dropped as a slow consumer.
    #[arg(long, env = "SWITCHBOARD_SEND_QUEUE_BYTES", default_value_t = 1024 * 1024)]
    pub send_queue_bytes: usize,

    /// Bytes of messages queued for all connections together; over it, a connection that
    /// already has messages waiting is dropped as a slow consumer when the next one arrives.
    #[arg(long, env = "SWITCHBOARD_SEND_QUEUE_TOTAL_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub send_queue_total_bytes: usize,

    /// How long a write to a client may make no progress before the client is dropped as a
    /// slow consumer.
    #[arg(long, env = "SWITCHBOARD_WRITE_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,

    /// How long a WebSocket or SSE connection waits, once a message is ready for it, for more to
    /// write with it: fewer, larger writes (less CPU per delivery) for that much latency.
    #[arg(long, env = "SWITCHBOARD_WRITE_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub write_delay: Duration,

    /// Most messages in one write to a WebSocket or SSE connection.
    #[arg(long, env = "SWITCHBOARD_WRITE_MAX_MESSAGES", default_value_t = 1024)]
    pub write_max_messages: usize,

    /// How long a client has to send a request body once its headers have arrived.
    #[arg(long, env = "SWITCHBOARD_BODY_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,

    /// Largest published message (HTTP body or WebSocket `data`), in bytes.
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGE_BYTES", default_value_t = 65536)]
    pub max_message_bytes: usize,

    /// Largest body of a batch publish (`POST /publish`), in bytes.
    #[arg(long, env = "SWITCHBOARD_MAX_BATCH_BYTES", default_value_t = 1024 * 1024)]
    pub max_batch_bytes: usize,

    /// Most open streams (WebSocket, SSE and held polls together).
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS", default_value_t = 10000)]
    pub max_connections: usize,

    /// Most open client sockets of any kind (streams, requests in progress, idle keep-alive
    /// connections); lowered at start-up to what the open-files limit allows.
    #[arg(long, env = "SWITCHBOARD_MAX_SOCKETS", default_value_t = 12000)]
    pub max_sockets: usize,

    /// Most topics on one connection or request.
    #[arg(
        long,
        env = "SWITCHBOARD_MAX_TOPICS_PER_CONNECTION",
        default_value_t = 64
    )]
    pub max_topics_per_connection: usize,

    /// Messages retained per topic, for resuming.
    #[arg(long, env = "SWITCHBOARD_RETENTION_MESSAGES", default_value_t = 1000)]
    pub retention_messages: usize,

    /// How long a message is retained (0s: no age limit).
    #[arg(long, env = "SWITCHBOARD_RETENTION_AGE", default_value = "1h", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub retention_age: Duration,

    /// Memory budget for all retained messages, in bytes, with the WebSocket and SSE encodings
    /// made of them for subscribers; the oldest go first.
    #[arg(long, env = "SWITCHBOARD_RETENTION_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub retention_bytes: usize,

    /// How long an unused topic keeps its position, so pollers between requests keep their place.
    #[arg(long, env = "SWITCHBOARD_IDLE_TOPIC_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub idle_topic_ttl: Duration,

    /// How often the in-memory hub drops messages past `retention_age`, enforces
    /// `retention_bytes` and forgets idle topics (a publish over the budget also starts it).
    #[arg(long, env = "SWITCHBOARD_MAINTENANCE_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub maintenance_interval: Duration,

    /// Origins (like `https://app.example.com`) whose pages may connect; `*` allows all.
    /// Empty: same-origin pages and non-browser clients only.
    #[arg(long, env = "SWITCHBOARD_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Proxies (addresses or CIDR ranges) whose X-Forwarded-For / X-Real-IP are believed.
    #[arg(long, env = "SWITCHBOARD_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<ProxyNet>,

    /// Reconnection delay advised to SSE clients (the `retry:` field).
    #[arg(long, env = "SWITCHBOARD_SSE_RETRY", default_value = "2s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub sse_retry: Duration,

    /// Run on this Redis (or Valkey) instead of the in-memory hub, so that several nodes share
    /// topics, positions and history: `redis://[user:password@]host:port[/db]`, or
    /// `rediss://` for TLS.
    #[arg(long, env = "SWITCHBOARD_REDIS", conflicts_with = "redis_cluster")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,

    /// Run on a Redis Cluster, reached through these seed nodes (comma-separated
    /// `redis://host:port` URLs); needs Redis 7 or newer for sharded pub/sub.
    #[arg(long, env = "SWITCHBOARD_REDIS_CLUSTER", value_delimiter = ',')]
    pub redis_cluster: Vec<String>,

    /// Prefix of every Redis key and channel, so that several deployments can share one Redis.
    #[arg(long, env = "SWITCHBOARD_REDIS_PREFIX", default_value = "sb")]
    pub redis_prefix: String,

    /// On SIGTERM/SIGINT, how long connections get to end before the gateway exits anyway.
    #[arg(long, env = "SWITCHBOARD_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,

    /// How long a client has, from connecting, to send its first request head, and a
    /// kept-alive connection to send its next one; a connection that does not is closed.
    #[arg(long, env = "SWITCHBOARD_HEADER_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,

    /// Host names (or IP addresses) clients may reach the gateway by, as in the `Host` header,
    /// on any port; `*` allows all. Empty: loopback names only (`localhost`, `127.0.0.1`, …)
    /// when listening on a loopback address, any host otherwise. Refuses DNS rebinding.
    #[arg(long, env = "SWITCHBOARD_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<HostPattern>,

    // Access control (docs/PROTOCOL.md, "Access control"). With none of `jwt_secret`,
    // `jwt_public_key` and `publish_key` set, it is off: everyone may do everything.
    /// Secret of HS256 tokens.
    #[arg(long, env = "SWITCHBOARD_JWT_SECRET", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_secret: Option<String>,

    /// PEM file with the public key of RS256 (RSA) or ES256 (EC P-256) tokens.
    #[arg(long, env = "SWITCHBOARD_JWT_PUBLIC_KEY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_public_key: Option<PathBuf>,

    /// When set, tokens must name this audience (`aud`).
    #[arg(long, env = "SWITCHBOARD_JWT_AUDIENCE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_audience: Option<String>,

    /// When set, tokens must come from this issuer (`iss`).
    #[arg(long, env = "SWITCHBOARD_JWT_ISSUER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_issuer: Option<String>,

    /// Allowance for clocks that disagree, on tokens' `exp` and `nbf`.
    #[arg(long, env = "SWITCHBOARD_JWT_LEEWAY", default_value = "5s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub jwt_leeway: Duration,

    /// Cookie that carries a browser's token (EventSource cannot set headers).
    #[arg(
        long,
        env = "SWITCHBOARD_JWT_COOKIE",
        default_value = "switchboard_token"
    )]
    pub jwt_cookie: String,

    /// Accept a token in the `access_token` query parameter (EventSource across sites, where
    /// no cookie reaches); it never appears in logs.
    #[arg(long, env = "SWITCHBOARD_ALLOW_QUERY_TOKEN", default_value_t = false)]
    pub allow_query_token: bool,

    /// Key with which a backend may publish to any topic (`Authorization: Bearer KEY`);
    /// repeat it (or separate with commas) to rotate keys.
    #[arg(
        long,
        env = "SWITCHBOARD_PUBLISH_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub publish_key: Vec<String>,

    /// What clients without credentials may do (`[[anonymous]]` tables in the file only).
    #[arg(skip)]
    pub anonymous: Vec<AnonymousRule>,

    /// Publishes allowed per client address and per WebSocket (`20/s`, `600/m`); none by
    /// default. Backends with a publish key are not limited.
    #[arg(long, env = "SWITCHBOARD_PUBLISH_RATE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_rate: Option<Rate>,

    /// Publishes allowed at once, in a burst (default: the rate's count, 20 for `20/s`).
    #[arg(long, env = "SWITCHBOARD_PUBLISH_BURST")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_burst: Option<u32>,

    /// Subscribe requests (WebSocket handshakes, SSE streams, polls) allowed per client
    /// address (`10/s`); none by default.
    #[arg(long, env = "SWITCHBOARD_CONNECT_RATE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_rate: Option<Rate>,

    /// Subscribe requests allowed at once, in a burst (default: the rate's count).
    #[arg(long, env = "SWITCHBOARD_CONNECT_BURST")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_burst: Option<u32>,

    /// Keep retained history, epochs and sequences in this directory (created if missing), so
    /// that they survive a restart or a crash; without it, history is in memory only. Not with
    /// Redis, which keeps the history itself.
    #[arg(long, env = "SWITCHBOARD_DATA_DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,

    /// With `data_dir`: how publishes share commits. Either way a publish is acknowledged only
    /// once its commit is fsynced, so it survives a crash of the process and, on a disk that
    /// honours fsync, a power loss.
    #[arg(long, env = "SWITCHBOARD_FSYNC", default_value = "batch", value_enum)]
    pub fsync: Fsync,

    /// With `data_dir`: bytes the data directory may take; the oldest messages of all topics
    /// go first.
    #[arg(long, env = "SWITCHBOARD_RETENTION_DISK", default_value_t = 1024 * 1024 * 1024)]
    pub retention_disk: usize,

    // Operating the gateway: metrics, where the admin routes listen, the log format.
    /// Count what the gateway does and serve it at `/metrics`; `false` turns both off (to
    /// measure what metrics cost).
    #[arg(long, env = "SWITCHBOARD_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics: bool,

    /// Serve the admin routes (`/metrics`) only on this address, such as an internal
    /// interface, instead of on `listen`.
    #[arg(long, env = "SWITCHBOARD_ADMIN_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<SocketAddr>,

    /// Key the admin routes require as `Authorization: Bearer KEY`. Without one they are open
    /// only to loopback clients on a loopback address.
    #[arg(long, env = "SWITCHBOARD_ADMIN_KEY", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_key: Option<AdminKey>,

    /// Log lines as `text` for people or `json` (one object per line) for log shippers.
    #[arg(
        long,
        env = "SWITCHBOARD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

/// When a publish is on disk with a data directory; acknowledged only then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// One commit and fsync per publish.
    Always,
    /// One commit and fsync for the publishes that arrive while the previous one is written
    /// and, once a commit carries two or more, for those within 2 ms of its start.
    Batch,
}

/// A trusted proxy: one address (`10.0.0.7`) or a CIDR range (`10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyNet(pub IpNet);

impl std::str::FromStr for ProxyNet {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse::<IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
            .map(ProxyNet)
            .map_err(|_| format!("{text:?} is neither an IP address nor a CIDR range"))
    }
}

impl std::fmt::Display for ProxyNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for ProxyNet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ProxyNet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingSource {
    Flag,
    Environment,
    File,
    Default,
}

impl SettingSource {
    pub fn as_str(self) -> &'static str {
        match self {
            SettingSource::Flag => "flag",
            SettingSource::Environment => "environment",
            SettingSource::File => "file",
            SettingSource::Default => "default",
        }
    }
}

/// A setting that could not be used.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Settings that only the file can give, having no flag.
const FILE_ONLY: [&str; 1] = ["anonymous"];

/// Parses just the `Config` arguments, so `Default` shares the flags' defaults.
#[derive(Debug, clap::Parser)]
struct DefaultsOnly {
    #[command(flatten)]
    config: Config,
}

impl Default for Config {
    /// The documented defaults (the environment is not read).
    fn default() -> Self {
        use clap::CommandFactory;
        let command = DefaultsOnly::command().mut_args(|arg| arg.env(None::<&str>));
        let matches = command.get_matches_from(["switchboard"]);
        match Config::from_arg_matches(&matches) {
            Ok(config) => config,
            Err(e) => unreachable!("the defaults parse: {e}"),
        }
    }
}

impl Config {
    /// Builds the configuration from parsed arguments, filling what they left at their
    /// defaults from the `--config` file, if any.
    pub fn load(matches: &ArgMatches) -> Result<Config, ConfigError> {
        Config::load_explained(matches).map(|(config, _)| config)
    }

    /// [`load`](Self::load), and where each setting's value came from, in the order of the
    /// flags (`switchboard check-config` prints them).
    pub fn load_explained(
        matches: &ArgMatches,
    ) -> Result<(Config, Vec<(String, SettingSource)>), ConfigError> {
        let mut from_file = std::collections::HashSet::new();
        let config = Config::load_from(matches, &mut from_file)?;
        let command = Config::augment_args(clap::Command::new("switchboard"));
        let sources = command
            .get_arguments()
            .map(|arg| {
                let name = arg.get_id().as_str();
                let source = match matches.value_source(name) {
                    Some(ValueSource::CommandLine) => SettingSource::Flag,
                    Some(ValueSource::EnvVariable) => SettingSource::Environment,
                    _ if from_file.contains(name) => SettingSource::File,
                    _ => SettingSource::Default,
                };
                (name.to_owned(), source)
            })
            .collect();
        Ok((config, sources))
    }

    /// The body of [`load`](Self::load); adds the settings the file gave to `from_file`.
    fn load_from(
        matches: &ArgMatches,
        from_file: &mut std::collections::HashSet<String>,
    ) -> Result<Config, ConfigError> {
        let config = Config::from_arg_matches(matches).map_err(|e| ConfigError(e.to_string()))?;
        let Some(path) = config.config.clone() else {
            return config.validated();
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        let file: toml::Table = text
            .parse()
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        let mut merged =
            toml::Table::try_from(&config).map_err(|e| ConfigError(format!("internal: {e}")))?;
        for (key, value) in file {
            let command = Config::augment_args(clap::Command::new("switchboard"));
            let known = (command
                .get_arguments()
                .any(|arg| arg.get_id() == key.as_str())
                && key != "config")
                || FILE_ONLY.contains(&key.as_str());
            if !known {
                return Err(ConfigError(format!(
                    "{}: unknown setting `{key}`",
                    path.display()
                )));
            }
            // File-only settings have no argument to ask about (clap panics on an unknown id).
            if FILE_ONLY.contains(&key.as_str())
                || matches.value_source(&key) == Some(ValueSource::DefaultValue)
                || matches.value_source(&key).is_none()
            {
                from_file.insert(key.clone());
                merged.insert(key, value);
            }
        }
        let mut loaded: Config = merged
            .try_into()
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        loaded.config = Some(path);
        loaded.validated()
    }

    /// Refuses values outside each setting's range (README lists them): too small makes no
    /// sense, and too large overflows timers and allocations at run time.
    fn validated(self) -> Result<Config, ConfigError> {
        const MS: Duration = Duration::from_millis(1);
        const HOUR: Duration = Duration::from_secs(3600);
        const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
        const ZERO: Duration = Duration::ZERO;
        // One line per setting: name, value, smallest and largest allowed.
        #[rustfmt::skip]
        let durations = [
            ("heartbeat_interval", self.heartbeat_interval, MS, HOUR),
            ("header_timeout", self.header_timeout, MS, HOUR),
            ("write_timeout", self.write_timeout, MS, HOUR),
            ("body_timeout", self.body_timeout, MS, HOUR),
            ("poll_timeout", self.poll_timeout, ZERO, HOUR),
            ("poll_max_timeout", self.poll_max_timeout, ZERO, HOUR),
            ("retention_age", self.retention_age, ZERO, YEAR),
            ("idle_topic_ttl", self.idle_topic_ttl, ZERO, YEAR),
            ("maintenance_interval", self.maintenance_interval, MS, HOUR),
            ("sse_retry", self.sse_retry, ZERO, HOUR),
            ("shutdown_grace", self.shutdown_grace, ZERO, HOUR),
            ("jwt_leeway", self.jwt_leeway, ZERO, HOUR),
            ("write_delay", self.write_delay, ZERO, Duration::from_secs(1)),
        ];
        for (name, value, min, max) in durations {
            if !(min..=max).contains(&value) {
                return Err(out_of_range(name, value, min, max, show_duration));
            }
        }
        #[rustfmt::skip]
        let sizes = [
            ("poll_batch", self.poll_batch, 1, 100_000),
            ("send_queue", self.send_queue, 1, 1_000_000),
            ("send_queue_bytes", self.send_queue_bytes, 1, 1 << 30),
            ("send_queue_total_bytes", self.send_queue_total_bytes, 1, 1 << 40),
            ("poll_batch_bytes", self.poll_batch_bytes, 1, 1 << 30),
            ("max_sockets", self.max_sockets, 1, 1_000_000),
            ("max_message_bytes", self.max_message_bytes, 1, 16 << 20),
            ("max_batch_bytes", self.max_batch_bytes, 1, 64 << 20),
            ("write_max_messages", self.write_max_messages, 1, 1_000_000),
            ("max_connections", self.max_connections, 0, 1_000_000),
            ("max_topics_per_connection", self.max_topics_per_connection, 1, 10_000),
            ("retention_messages", self.retention_messages, 0, 10_000_000),
            ("retention_bytes", self.retention_bytes, 0, 1 << 40),
            ("retention_disk", self.retention_disk, 0, 1 << 50),
        ];
        for (name, value, min, max) in sizes {
            let value = value as u64;
            if !(min..=max).contains(&value) {
                return Err(out_of_range(name, value, min, max, u64::to_string));
            }
        }
        if self.redis.is_some() && !self.redis_cluster.is_empty() {
            return Err(ConfigError(
                "give either redis or redis_cluster, not both".into(),
            ));
        }
        for (name, burst) in [
            ("publish_burst", self.publish_burst),
            ("connect_burst", self.connect_burst),
        ] {
            if burst == Some(0) {
                return Err(ConfigError(format!("{name} must be at least 1")));
            }
        }
        crate::auth::Auth::from_config(&self).map_err(ConfigError)?;

        if self.data_dir.is_some() && (self.redis.is_some() || !self.redis_cluster.is_empty()) {
            return Err(ConfigError(
                "data_dir cannot be used with redis or redis_cluster: with Redis, Redis keeps \
                 the history (use Redis's own persistence to keep it across restarts)"
                    .into(),
            ));
        }
        if self.poll_timeout > self.poll_max_timeout {
            return Err(ConfigError(
                "poll_timeout must not exceed poll_max_timeout".into(),
            ));
        }
        Ok(self)
    }

    /// Whether `peer` is one of the trusted proxies.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.trusted_proxies.iter().any(|net| net.0.contains(&peer))
    }

    /// The hub's part of the settings.
    pub fn hub_config(&self) -> HubConfig {
        HubConfig {
            retention_messages: self.retention_messages,
            retention_age: self.retention_age,
            retention_bytes: self.retention_bytes,
            idle_topic_ttl: self.idle_topic_ttl,
            // What the messages may take, so that the whole directory stays within it.
            retention_disk: switchboard_store::stored_budget(self.retention_disk),
        }
    }
}

/// `name must be between MIN and MAX, got VALUE`.
fn out_of_range<T: Copy>(
    name: &str,
    value: T,
    min: T,
    max: T,
    show: fn(&T) -> String,
) -> ConfigError {
    ConfigError(format!(
        "{name} must be between {} and {}, got {}",
        show(&min),
        show(&max),
        show(&value)
    ))
}

/// A duration in the largest unit that holds it exactly (`1h`, `365d`, `1500ms`), as the
/// settings are written.
fn show_duration(duration: &Duration) -> String {
    let nanos = duration.as_nanos();
    let units: [(&str, u128); 6] = [
        ("d", 86_400_000_000_000),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
    ];
    match units
        .iter()
        .find(|(_, size)| nanos.is_multiple_of(*size) && nanos > 0)
    {
        Some((unit, size)) => format!("{}{unit}", nanos / size),
        None if nanos == 0 => "0s".into(),
        None => format!("{nanos}ns"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn load(args: &[&str]) -> Result<Config, ConfigError> {
        let command = DefaultsOnly::command().mut_args(|arg| arg.env(None::<&str>));
        let matches = command
            .try_get_matches_from(std::iter::once("switchboard").chain(args.iter().copied()))
            .map_err(|e| ConfigError(e.to_string()))?;
        Config::load(&matches)
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = Config::default();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert!(config.metrics);
        assert_eq!(config.admin_listen, None);
        assert_eq!(config.admin_key, None);
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.heartbeat_interval, Duration::from_secs(15));
        assert_eq!(config.poll_timeout, Duration::from_secs(25));
        assert_eq!(config.header_timeout, Duration::from_secs(30));
        assert_eq!(config.retention_messages, 1000);
        assert_eq!(config.maintenance_interval, Duration::from_secs(1));
        assert_eq!(config.max_message_bytes, 65536);
        assert!(config.allowed_origins.is_empty());
        assert!(config.allowed_hosts.is_empty());
        assert_eq!(config.data_dir, None);
        assert_eq!(config.fsync, Fsync::Batch);
        assert_eq!(config.retention_disk, 1 << 30);
    }

    #[test]
    fn a_data_dir_is_refused_with_redis() {
        for redis in [
            ["--redis", "redis://127.0.0.1:6379"],
            ["--redis-cluster", "redis://127.0.0.1:7000"],
        ] {
            let refused = load(&["--data-dir", "/tmp/sb", redis[0], redis[1]]);
            assert!(
                refused.is_err_and(|e| e.0.starts_with("data_dir cannot be used with redis")),
                "{redis:?}"
            );
        }
        let durable = load(&["--data-dir", "/tmp/sb", "--fsync", "always"]).expect("valid");
        assert_eq!(durable.fsync, Fsync::Always);
        assert!(load(&["--fsync", "sometimes"]).is_err());
    }

    #[test]
    fn anonymous_rules_load_from_the_file() {
        let dir = std::env::temp_dir().join(format!("switchboard-anon-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("anonymous.toml");
        std::fs::write(
            &path,
            "[[anonymous]]\ntopics = [\"public.*\"]\nallow = [\"subscribe\"]\n",
        )
        .expect("write config");
        let config = load(&["--config", path.to_str().expect("utf-8 path")]).expect("loads");
        assert_eq!(config.anonymous.len(), 1);
        assert_eq!(
            config.anonymous[0].allow,
            vec![crate::auth::Action::Subscribe]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn file_fills_defaults_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("switchboard-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("switchboard.toml");
        std::fs::write(
            &path,
            "poll_timeout = \"5s\"\nretention_messages = 7\nallowed_origins = [\"https://a.example\"]\n\
             allowed_hosts = [\"chat.example.com\"]\n",
        )
        .expect("write config");
        let path = path.to_str().expect("utf-8 path");
        let config = load(&["--config", path, "--retention-messages", "9"]).expect("loads");
        assert_eq!(config.poll_timeout, Duration::from_secs(5));
        assert_eq!(config.retention_messages, 9);
        assert_eq!(
            config.allowed_origins,
            vec!["https://a.example".to_string()]
        );
        assert_eq!(
            config.allowed_hosts,
            vec!["chat.example.com".parse().expect("a host")]
        );

        std::fs::write(dir.join("bad.toml"), "no_such_setting = 1\n").expect("write");
        let bad = load(&["--config", dir.join("bad.toml").to_str().expect("utf-8")]);
        assert!(bad.is_err_and(|e| e.0.contains("unknown setting `no_such_setting`")));
    }

    #[test]
    fn sources_say_where_each_value_came_from() {
        let dir = std::env::temp_dir().join(format!("switchboard-sources-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("switchboard.toml");
        std::fs::write(&path, "poll_timeout = \"5s\"\nretention_messages = 7\n").expect("write");
        let command = DefaultsOnly::command().mut_args(|arg| arg.env(None::<&str>));
        let path = path.to_str().expect("utf-8 path");
        let matches = command
            .try_get_matches_from(["switchboard", "--config", path, "--retention-messages", "9"])
            .expect("valid arguments");
        let (config, sources) = Config::load_explained(&matches).expect("loads");
        assert_eq!(config.retention_messages, 9);
        let source = |name: &str| {
            sources
                .iter()
                .find(|(setting, _)| setting == name)
                .map(|(_, source)| *source)
        };
        assert_eq!(source("poll_timeout"), Some(SettingSource::File));
        assert_eq!(source("retention_messages"), Some(SettingSource::Flag));
        assert_eq!(source("config"), Some(SettingSource::Flag));
        assert_eq!(source("listen"), Some(SettingSource::Default));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn out_of_range_values_are_refused_with_the_setting_its_value_and_the_range() {
        let cases = [
            (
                "--heartbeat-interval",
                "100000000000s",
                "heartbeat_interval must be between 1ms and 1h, got 100000000000s",
            ),
            (
                "--heartbeat-interval",
                "0s",
                "heartbeat_interval must be between 1ms and 1h, got 0s",
            ),
            (
                "--poll-timeout",
                "61m",
                "poll_timeout must be between 0s and 1h, got 61m",
            ),
            (
                "--poll-max-timeout",
                "100000000000s",
                "poll_max_timeout must be between 0s and 1h, got 100000000000s",
            ),
            (
                "--retention-age",
                "366d",
                "retention_age must be between 0s and 365d, got 366d",
            ),
            (
                "--idle-topic-ttl",
                "8761h",
                "idle_topic_ttl must be between 0s and 365d, got 8761h",
            ),
            (
                "--maintenance-interval",
                "0s",
                "maintenance_interval must be between 1ms and 1h, got 0s",
            ),
            (
                "--maintenance-interval",
                "61m",
                "maintenance_interval must be between 1ms and 1h, got 61m",
            ),
            (
                "--sse-retry",
                "3601s",
                "sse_retry must be between 0s and 1h, got 3601s",
            ),
            (
                "--shutdown-grace",
                "1h 1ms",
                "shutdown_grace must be between 0s and 1h, got 3600001ms",
            ),
            (
                "--max-message-bytes",
                "16777217",
                "max_message_bytes must be between 1 and 16777216, got 16777217",
            ),
            (
                "--max-message-bytes",
                "0",
                "max_message_bytes must be between 1 and 16777216, got 0",
            ),
            (
                "--send-queue",
                "1000001",
                "send_queue must be between 1 and 1000000, got 1000001",
            ),
            (
                "--poll-batch",
                "100001",
                "poll_batch must be between 1 and 100000, got 100001",
            ),
            (
                "--max-topics-per-connection",
                "10001",
                "max_topics_per_connection must be between 1 and 10000, got 10001",
            ),
            (
                "--max-connections",
                "18446744073709551615",
                "max_connections must be between 0 and 1000000, got 18446744073709551615",
            ),
            (
                "--retention-messages",
                "10000001",
                "retention_messages must be between 0 and 10000000, got 10000001",
            ),
            (
                "--retention-bytes",
                "1099511627777",
                "retention_bytes must be between 0 and 1099511627776, got 1099511627777",
            ),
        ];
        for (flag, value, message) in cases {
            match load(&[flag, value]) {
                Ok(_) => panic!("{flag} {value} was accepted"),
                Err(e) => assert_eq!(e.0, message, "{flag} {value}"),
            }
        }
    }

    #[test]
    fn the_edges_of_every_range_are_accepted() {
        let lowest = [
            "--heartbeat-interval=1ms",
            "--poll-timeout=0s",
            "--poll-max-timeout=0s",
            "--retention-age=0s",
            "--idle-topic-ttl=0s",
            "--maintenance-interval=1ms",
            "--sse-retry=0s",
            "--shutdown-grace=0s",
            "--max-message-bytes=1",
            "--send-queue=1",
            "--poll-batch=1",
            "--max-topics-per-connection=1",
            "--max-connections=0",
            "--retention-messages=0",
            "--retention-bytes=0",
            "--retention-disk=0",
        ];
        let highest = [
            "--heartbeat-interval=1h",
            "--poll-timeout=1h",
            "--poll-max-timeout=1h",
            "--retention-age=365d",
            "--idle-topic-ttl=365d",
            "--maintenance-interval=1h",
            "--sse-retry=1h",
            "--shutdown-grace=1h",
            "--max-message-bytes=16777216",
            "--send-queue=1000000",
            "--poll-batch=100000",
            "--max-topics-per-connection=10000",
            "--max-connections=1000000",
            "--retention-messages=10000000",
            "--retention-bytes=1099511627776",
            "--retention-disk=1125899906842624",
        ];
        for args in [&lowest[..], &highest[..]] {
            if let Err(e) = load(args) {
                panic!("{args:?} refused: {e}");
            }
        }
    }

    #[test]
    fn a_file_is_held_to_the_same_ranges() {
        let dir = std::env::temp_dir().join(format!("switchboard-ranges-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("switchboard.toml");
        std::fs::write(&path, "heartbeat_interval = \"2h\"\n").expect("write config");
        let loaded = load(&["--config", path.to_str().expect("utf-8 path")]);
        assert!(
            loaded.is_err_and(|e| e.0 == "heartbeat_interval must be between 1ms and 1h, got 2h"),
        );
    }

    #[test]
    fn nonsense_is_refused() {
        assert!(load(&["--send-queue", "0"]).is_err());
        assert!(load(&["--poll-timeout", "40s"]).is_err());
        assert!(load(&["--heartbeat-interval", "soon"]).is_err());
        assert!(load(&["--header-timeout", "0s"]).is_err());
        let proxies = load(&["--trusted-proxies", "10.0.0.0/8,127.0.0.1"]).expect("valid list");
        assert!(proxies.trusts("127.0.0.1".parse().expect("ip")));
        assert!(proxies.trusts("10.1.2.3".parse().expect("ip")));
        assert!(!proxies.trusts("192.168.1.1".parse().expect("ip")));
        assert!(load(&["--trusted-proxies", "10.0.0.0/99"]).is_err());
        let hosts = load(&["--allowed-hosts", "chat.example.com,10.0.0.5"]).expect("valid list");
        assert_eq!(hosts.allowed_hosts.len(), 2);
        assert!(load(&["--allowed-hosts", "https://chat.example.com"]).is_err());
    }

    #[test]
    fn operating_settings_parse() {
        let config = load(&[
            "--metrics",
            "false",
            "--log-format",
            "json",
            "--admin-listen",
            "127.0.0.1:9090",
            "--admin-key",
            "k3y",
        ])
        .expect("valid");
        assert!(!config.metrics);
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.admin_listen, "127.0.0.1:9090".parse().ok());
        assert_eq!(config.admin_key, "k3y".parse().ok());
        assert!(load(&["--log-format", "yaml"]).is_err());
        assert!(load(&["--admin-key", ""]).is_err());
    }
}
