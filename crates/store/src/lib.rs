//! Durable history for one node (`--data-dir`): what the hub retains, written to an embedded
//! database so that a restart, clean or not, loses no acknowledged message.
//!
//! The hub stays the place of sequencing, fan-out and the retained history in memory; the
//! store writes the changes the hub journals (appends, trims, forgotten topics) and gives them
//! back to it at start-up.
//!
//! - [`encoding`]: the bytes of the log's records and entries (property-tested);
//! - `engine.rs`: the database (redb) and the log in it: committing, cleaning, reading back;
//! - `records.rs`: a commit's records as they fill, and how much of each is live;
//! - `replay.rs`: the log's entries applied in order at start-up, and the result checked;
//! - `directory.rs`: the directory checks and its lock file.

pub mod encoding;

mod directory;
mod engine;
mod records;
mod replay;

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use switchboard_hub::{Change, Clock, Hub, HubConfig};

pub use directory::Directory;

use engine::Engine;

/// When a publish is acknowledged: always after its commit; how commits are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Every publish is a commit and an fsync of its own.
    Always,
    /// The publishes that arrive while a commit is under way (and, once a commit carries two
    /// or more, within `GROUP_COMMIT_WINDOW` of its start) share the next commit and its fsync
    /// (group commit).
    Batch,
}

/// What the database adds to any history, whatever its size: the file's first regions and
/// the tables' roots (measured at 1.5 MiB), and the allocator state it writes when it closes
/// (the file measured 3.5 MiB after a clean stop).
const DATABASE_BASE_BYTES: usize = 4 << 20;

/// How much larger than the messages it holds the database grows: the log may hold as many
/// dead bytes as live ones (plus 64 KiB) before it is cleaned, freed pages are reused only
/// once the commit after the one that freed them is durable, and the file grows by regions
/// (measured at 3.2–3.3 times past its base in long runs of trims with 20 and 40 MiB
/// directories, the run of `tests.rs` made larger).
const DATABASE_GROWTH: usize = 4;

/// The budget of retained messages (counted by `Message::stored_size`) that keeps the whole
/// data directory within `directory_bytes`.
pub fn stored_budget(directory_bytes: usize) -> usize {
    directory_bytes.saturating_sub(DATABASE_BASE_BYTES) / DATABASE_GROWTH
}

/// Why the store cannot start or write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

/// A hub started from a data directory, and the thread that writes its changes there.
#[derive(Debug)]
pub struct Durable {
    pub hub: Arc<Hub>,
    writer: Option<JoinHandle<()>>,
}

impl Durable {
    /// Opens (or creates) the data directory at `path`, starts a hub from what it holds, and
    /// the writer of its changes.
    pub fn open(
        path: &Path,
        config: HubConfig,
        clock: Arc<dyn Clock>,
        fsync: Fsync,
    ) -> Result<Durable, StoreError> {
        let directory = Directory::open(path)?;
        let (engine, restored) = Engine::open(&directory)?;
        tracing::info!(
            path = %path.display(),
            topics = restored.topics.len(),
            messages = restored.topics.iter().map(|t| t.messages.len()).sum::<usize>(),
            "data directory opened"
        );
        let hub = Arc::new(Hub::durable(config, clock, restored));
        let delivery = Delivery::start(&hub);
        let writing = hub.clone();
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write(&writing, engine, fsync, directory, delivery))
            .map_err(|e| StoreError(format!("cannot start the store's writer: {e}")))?;
        Ok(Durable {
            hub,
            writer: Some(writer),
        })
    }

    /// Writes what is pending and stops the writer; the directory is unlocked once it has.
    pub fn close(&mut self) {
        self.hub.close_journal();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Drop for Durable {
    fn drop(&mut self) {
        self.close();
    }
}

/// Where committed changes go back to the hub: to a task on the runtime that opened the store,
/// so that delivering them and answering their publishers wakes the runtime once a commit
/// rather than once a publisher and subscriber; without a runtime, straight to the hub.
enum Delivery {
    Runtime(tokio::sync::mpsc::UnboundedSender<Vec<Change>>),
    Direct,
}

impl Delivery {
    fn start(hub: &Arc<Hub>) -> Delivery {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Delivery::Direct;
        };
        // Unbounded, yet it holds only commits whose publishers still wait for their answers.
        let (sender, mut committed) = tokio::sync::mpsc::unbounded_channel();
        let hub = hub.clone();
        runtime.spawn(async move {
            while let Some(changes) = committed.recv().await {
                hub.committed(changes);
            }
        });
        Delivery::Runtime(sender)
    }

    fn committed(&self, hub: &Hub, changes: Vec<Change>) {
        match self {
            Delivery::Runtime(sender) => {
                if let Err(unsent) = sender.send(changes) {
                    // The runtime is gone: no one is left to wait, but the hub stays right.
                    hub.committed(unsent.0);
                }
            }
            Delivery::Direct => hub.committed(changes),
        }
    }
}

/// With `--fsync batch`, once a commit carried two publishes or more, the next one starts no
/// sooner than this after it, so that more publishes share its fsync: this VM's fsync costs
/// about 100 µs of CPU whatever it carries, and a commit about 200 µs in all (bench/README.md,
/// *Group commit*). 2 ms against 1 ms: fewer commits at a steady rate (5–6 publishes a commit
/// at 7,500 HTTP publishes a second never reached the old threshold of 8), about a fifth less
/// CPU a publish and better p99; 4 ms saved more CPU but capped connections that wait for each
/// answer at one publish per window.
const GROUP_COMMIT_WINDOW: Duration = Duration::from_millis(2);

/// The writer's loop: takes what the hub journalled, commits it, hands it back. The directory
/// stays locked while it runs.
fn write(hub: &Hub, mut engine: Engine, fsync: Fsync, _directory: Directory, delivery: Delivery) {
    let mut gather_until = None;
    while let Some(changes) = hub.take_changes(gather_until) {
        gather_until = next_gathering(&changes, fsync, Instant::now());
        for commit in commits(changes, fsync) {
            if let Some(why) = hub.store_failure() {
                hub.failed(commit, &why);
                continue;
            }
            match engine.commit(&commit) {
                Ok(()) => delivery.committed(hub, commit),
                Err(e) => {
                    let why = format!("cannot write to the data directory: {e}");
                    tracing::error!("{why}; every publish is refused until a restart");
                    hub.failed(commit, &why);
                }
            }
        }
    }
}

/// Until when the commit after one of `changes`, started at `started`, waits for more
/// publishes to share it: with `batch`, once publishes overlap (this commit carries two or
/// more), `GROUP_COMMIT_WINDOW` after its start. A lone publish, or one after a quiet spell,
/// is committed at once.
fn next_gathering(changes: &[Change], fsync: Fsync, started: Instant) -> Option<Instant> {
    let publishes = changes
        .iter()
        .filter(|change| matches!(change, Change::Append(_)))
        .take(2)
        .count();
    (fsync == Fsync::Batch && publishes >= 2).then(|| started + GROUP_COMMIT_WINDOW)
}

/// Splits `changes` into commits: all of them in one with `batch`; with `always`, one commit
/// per publish (what precedes it goes along).
fn commits(changes: Vec<Change>, fsync: Fsync) -> Vec<Vec<Change>> {
    if fsync == Fsync::Batch {
        return vec![changes];
    }
    let mut commits = Vec::new();
    let mut current = Vec::new();
    for change in changes {
        let ends_commit = matches!(change, Change::Append(_));
        current.push(change);
        if ends_commit {
            commits.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        commits.push(current);
    }
    commits
}

#[cfg(test)]
mod tests;
