//! The live connections of every transport, for operators: who is connected, since when, to
//! what, how much waits in their queue, and a way to end one. One insert when a connection
//! opens (a held poll: when it starts waiting), one removal when it ends; nothing per message.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use dashmap::DashMap;
use parking_lot::Mutex;
use switchboard_hub::{InboxGauge, TopicName};
use tokio_util::sync::CancellationToken;

/// The three ways a client follows topics; also the kind of its inbox, by which the hub counts
/// a topic's subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Ws = 0,
    Sse = 1,
    Poll = 2,
}

impl Transport {
    pub const ALL: [Transport; 3] = [Transport::Ws, Transport::Sse, Transport::Poll];

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
            Transport::Poll => "poll",
        }
    }

    /// The label of its connections' inboxes.
    pub fn inbox_kind(self) -> u8 {
        self as u8
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// One live connection.
#[derive(Debug)]
pub struct Connection {
    /// Unique in this process, given in order: `ws-12`, `sse-13`.
    pub id: String,
    pub transport: Transport,
    /// The client's address (behind trusted proxies, the one they report).
    pub address: IpAddr,
    /// The `sub` of its token, if it has one; a WebSocket's changes with an `auth` frame.
    pub subject: Mutex<Option<String>>,
    pub started: Instant,
    /// The topics it follows now, updated when it joins or leaves one.
    pub topics: Mutex<Vec<TopicName>>,
    /// Its inbox's length, read when asked.
    pub inbox: InboxGauge,
    /// Cancelled to end the connection (`POST /admin/disconnect`).
    pub disconnect: CancellationToken,
}

/// Every live connection, by id.
#[derive(Debug, Default)]
pub struct Connections {
    live: DashMap<String, Arc<Connection>>,
    /// Open connections by [`Transport::index`], kept as they open and close so that counting
    /// them is three loads.
    open: [AtomicUsize; 3],
    /// The last id number given.
    next_id: AtomicU64,
}

impl Connections {
    /// Registers a connection; it stays listed until the returned guard is dropped.
    pub fn register(
        self: &Arc<Self>,
        transport: Transport,
        address: IpAddr,
        subject: Option<String>,
        inbox: InboxGauge,
    ) -> Registration {
        let number = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let connection = Arc::new(Connection {
            id: format!("{}-{number}", transport.as_str()),
            transport,
            address,
            subject: Mutex::new(subject),
            started: Instant::now(),
            topics: Mutex::new(Vec::new()),
            inbox,
            disconnect: CancellationToken::new(),
        });
        self.live.insert(connection.id.clone(), connection.clone());
        self.open[transport.index()].fetch_add(1, Ordering::Relaxed);
        Registration {
            connections: self.clone(),
            connection,
        }
    }

    /// Every live connection, in no particular order.
    pub fn all(&self) -> Vec<Arc<Connection>> {
        self.live
            .iter()
            .map(|entry| entry.value().clone())
            .collect()
    }

    /// How many connections of each transport are open, by [`Transport::index`].
    pub fn counts(&self) -> [usize; 3] {
        self.open.each_ref().map(|n| n.load(Ordering::Relaxed))
    }

    /// Ends every connection whose token names `subject`; returns how many there were.
    pub fn disconnect_subject(&self, subject: &str) -> usize {
        let mut ended = 0;
        for entry in self.live.iter() {
            if entry.value().subject.lock().as_deref() == Some(subject) {
                entry.value().disconnect.cancel();
                ended += 1;
            }
        }
        ended
    }

    /// Ends the connection with `id`; returns whether there was one.
    pub fn disconnect(&self, id: &str) -> bool {
        match self.live.get(id) {
            Some(connection) => {
                connection.disconnect.cancel();
                true
            }
            None => false,
        }
    }
}

/// A connection's place in [`Connections`], given up when dropped.
#[derive(Debug)]
pub struct Registration {
    connections: Arc<Connections>,
    pub connection: Arc<Connection>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.connections.live.remove(&self.connection.id);
        self.connections.open[self.connection.transport.index()].fetch_sub(1, Ordering::Relaxed);
    }
}
