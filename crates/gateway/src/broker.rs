//! Which broker a node runs on: the in-memory hub (with a data directory, the hub with its
//! durable store), or Redis (a single instance or a cluster) when the configuration names one.

use std::sync::Arc;
use std::time::Duration;

use switchboard_hub::{Broker, Hub, SystemClock};
use switchboard_redis::{RedisBroker, RedisSettings, Servers};
use switchboard_store::Durable;
use tokio::task::JoinHandle;

use crate::config::{Config, Fsync};

/// How long start-up waits for Redis before serving anyway (not ready until it is reached).
const CONNECT_WAIT: Duration = Duration::from_secs(5);

/// A started broker, and its background work.
#[derive(Debug)]
pub struct Running {
    pub broker: Arc<dyn Broker>,
    /// The in-memory hub's maintenance, stopped with the node.
    maintenance: Option<JoinHandle<()>>,
    /// The hub's durable store, closed (what is pending written, the directory unlocked)
    /// with the node.
    durable: Option<Durable>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(maintenance) = self.maintenance.take() {
            maintenance.abort();
        }
        if let Some(mut durable) = self.durable.take() {
            durable.close();
        }
    }
}

/// Starts the broker the configuration asks for.
pub async fn start(config: &Config) -> std::io::Result<Running> {
    let servers = match (&config.redis, config.redis_cluster.is_empty()) {
        (Some(url), _) => Servers::Single(url.clone()),
        (None, false) => Servers::Cluster(config.redis_cluster.clone()),
        (None, true) => {
            let durable = match &config.data_dir {
                Some(path) => Some(open_durable(path.clone(), config).await?),
                None => None,
            };
            let hub = match &durable {
                Some(durable) => durable.hub.clone(),
                None => Arc::new(Hub::new(config.hub_config())),
            };
            let maintained = hub.clone();
            let interval = config.maintenance_interval;
            let maintenance = tokio::spawn(async move { maintained.maintain(interval).await });
            return Ok(Running {
                broker: hub,
                maintenance: Some(maintenance),
                durable,
            });
        }
    };
    let settings = RedisSettings {
        servers,
        prefix: config.redis_prefix.clone(),
        retention_messages: config.retention_messages,
        retention_age: config.retention_age,
        idle_topic_ttl: config.idle_topic_ttl,
    };
    let redis = RedisBroker::start(settings)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    if redis.wait_connected(CONNECT_WAIT).await {
        tracing::info!("connected to Redis");
    } else {
        tracing::warn!("Redis cannot be reached yet; serving, but not ready until it is");
    }
    Ok(Running {
        broker: Arc::new(redis),
        maintenance: None,
        durable: None,
    })
}

/// Opens the data directory (reading it back takes a while for a large history, off the
/// runtime's threads).
async fn open_durable(path: std::path::PathBuf, config: &Config) -> std::io::Result<Durable> {
    let hub_config = config.hub_config();
    let fsync = match config.fsync {
        Fsync::Always => switchboard_store::Fsync::Always,
        Fsync::Batch => switchboard_store::Fsync::Batch,
    };
    let opened = tokio::task::spawn_blocking(move || {
        Durable::open(&path, hub_config, Arc::new(SystemClock), fsync)
    })
    .await
    .map_err(std::io::Error::other)?;
    opened.map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.0))
}
