//! The live connections of every transport, for operators: who is connected, since when, to
//! what, how much waits in their queue, and a way to end one. One insert when a connection
//! opens (a held poll: when it starts waiting), one removal when it ends; nothing per message.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use dashmap::DashMap;
use parking_lot::Mutex;
use switchboard_hub::{InboxGauge, TopicName};
use tokio::sync::Notify;

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
    /// Unique in this process, given in order; with the transport, the connection's id
    /// (`ws-12`, `sse-13`), which is made only when asked for, since every idle connection
    /// keeps its entry.
    pub number: u64,
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
    /// Set to end the connection (`POST /admin/disconnect`).
    ended: AtomicBool,
    /// Wakes the connection's task once `ended` is set (a permit is kept if it is not waiting).
    wake: Notify,
}

impl Connection {
    /// `ws-12`, `sse-13`: what the admin API shows and takes.
    pub fn id(&self) -> String {
        format!("{}-{}", self.transport.as_str(), self.number)
    }

    /// Whether an operator ended the connection.
    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Completes once an operator has ended the connection (or wakes it spuriously, after
    /// which [`Connection::is_ended`] tells).
    pub async fn ending(&self) {
        self.wake.notified().await;
    }

    fn end(&self) {
        self.ended.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

/// The number in a connection id (`ws-12` → 12), if it is one of `transport`'s ids.
fn number_of(id: &str) -> Option<(Transport, u64)> {
    let (transport, number) = id.split_once('-')?;
    let transport = Transport::ALL
        .into_iter()
        .find(|t| t.as_str() == transport)?;
    Some((transport, number.parse().ok()?))
}

/// Every live connection, by id.
#[derive(Debug, Default)]
pub struct Connections {
    live: DashMap<u64, Arc<Connection>>,
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
            number,
            transport,
            address,
            subject: Mutex::new(subject),
            started: Instant::now(),
            topics: Mutex::new(Vec::new()),
            inbox,
            ended: AtomicBool::new(false),
            wake: Notify::new(),
        });
        self.live.insert(number, connection.clone());
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
                entry.value().end();
                ended += 1;
            }
        }
        ended
    }

    /// Ends the connection with `id`; returns whether there was one.
    pub fn disconnect(&self, id: &str) -> bool {
        let Some((transport, number)) = number_of(id) else {
            return false;
        };
        match self.live.get(&number) {
            Some(connection) if connection.transport == transport => {
                connection.end();
                true
            }
            _ => false,
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
        self.connections.live.remove(&self.connection.number);
        self.connections.open[self.connection.transport.index()].fetch_sub(1, Ordering::Relaxed);
    }
}
