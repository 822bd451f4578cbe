//! Which broker a node runs on: the in-memory hub, or Redis (a single instance or a
//! cluster) when the configuration names one.

use std::sync::Arc;
use std::time::Duration;

use switchboard_hub::{Broker, Hub};
use switchboard_redis::{RedisBroker, RedisSettings, Servers};
use tokio::task::JoinHandle;

use crate::config::Config;

/// How long start-up waits for Redis before serving anyway (not ready until it is reached).
const CONNECT_WAIT: Duration = Duration::from_secs(5);

/// A started broker, and its background work.
#[derive(Debug)]
pub struct Running {
    pub broker: Arc<dyn Broker>,
    /// The in-memory hub's maintenance, stopped with the node.
    maintenance: Option<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(maintenance) = self.maintenance.take() {
            maintenance.abort();
        }
    }
}

/// Starts the broker the configuration asks for.
pub async fn start(config: &Config) -> std::io::Result<Running> {
    let servers = match (&config.redis, config.redis_cluster.is_empty()) {
        (Some(url), _) => Servers::Single(url.clone()),
        (None, false) => Servers::Cluster(config.redis_cluster.clone()),
        (None, true) => {
            let hub = Arc::new(Hub::new(config.hub_config()));
            let maintained = hub.clone();
            let interval = config.maintenance_interval;
            let maintenance = tokio::spawn(async move { maintained.maintain(interval).await });
            return Ok(Running {
                broker: hub,
                maintenance: Some(maintenance),
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
    })
}
