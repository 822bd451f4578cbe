//! Where log lines go: a bounded queue in front of a thread of its own that writes them out.
//!
//! Logging must never stop the gateway. Written straight to stderr from the runtime's threads,
//! a log line blocks a worker for as long as stderr is full (a pipe nobody reads: every worker
//! ends up stuck and nothing is served, not even SIGTERM), and a failed write (a closed pipe, a
//! full disk) makes `tracing-subscriber` report the failure with `eprintln!`, which panics: in
//! the task that waits for SIGTERM, that panic means the gateway never shuts down. Here a line
//! is only ever queued; a line that does not fit, or that the writer thread fails to write, is
//! dropped and counted ([`dropped_lines`], shown by `GET /healthz`).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How log lines are written.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event, with its spans' fields.
    Text,
    /// One JSON object per event, with the fields of the span it happened in (`span`).
    Json,
}

/// Sends the process's log events to `sink` in `format`, filtered by `RUST_LOG` (`info` when
/// unset).
pub fn init(format: LogFormat, sink: LogSink) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // The request span's fields (its `request_id` above all) come with every line logged
        // in it; the list of all enclosing spans would only repeat them.
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// Log lines dropped by the process's log sink.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Log lines dropped so far because the log output was full or failing.
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// The log output, as `tracing-subscriber` writes to it. Cheap to clone; all clones feed one
/// queue and one writer thread.
#[derive(Debug, Clone)]
pub struct LogSink {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a line is queued.
    queued: Condvar,
    /// Signalled when the writer has nothing left to write.
    idle: Condvar,
    /// Most bytes queued at once.
    capacity: usize,
    dropped: &'static AtomicU64,
}

#[derive(Debug, Default)]
struct Queue {
    lines: VecDeque<Vec<u8>>,
    bytes: usize,
    /// Whether the writer is writing a line it took from the queue.
    writing: bool,
}

impl LogSink {
    /// Starts a thread that writes queued lines to `output`, holding at most `capacity`
    /// bytes of lines not yet written.
    pub fn start(output: impl Write + Send + 'static, capacity: usize) -> io::Result<LogSink> {
        LogSink::with_counter(output, capacity, &DROPPED)
    }

    fn with_counter(
        output: impl Write + Send + 'static,
        capacity: usize,
        dropped: &'static AtomicU64,
    ) -> io::Result<LogSink> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            queued: Condvar::new(),
            idle: Condvar::new(),
            capacity,
            dropped,
        });
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || writer.write_out(output))?;
        Ok(LogSink { shared })
    }

    /// Queues `line`, or drops and counts it if the queue is full. Never blocks on the output.
    pub fn push(&self, line: &[u8]) {
        let mut queue = self.shared.lock();
        if queue.bytes + line.len() > self.shared.capacity {
            drop(queue);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        queue.bytes += line.len();
        queue.lines.push_back(line.to_vec());
        drop(queue);
        self.shared.queued.notify_one();
    }

    /// Waits up to `limit` for every queued line to be written; whether they were. For the
    /// end of the process, so that its last lines are not lost, nor its exit held up by an
    /// output that does not move.
    pub fn flush(&self, limit: Duration) -> bool {
        let queue = self.shared.lock();
        let (_queue, waited) = self
            .shared
            .idle
            .wait_timeout_while(queue, limit, |queue| {
                queue.writing || !queue.lines.is_empty()
            })
            .unwrap_or_else(PoisonError::into_inner);
        !waited.timed_out()
    }
}

impl Shared {
    /// A panic while the lock was held leaves the queue consistent: go on with it.
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writer thread: writes lines as they come, for as long as the process runs.
    fn write_out(&self, mut output: impl Write) {
        let mut queue = self.lock();
        loop {
            let Some(line) = queue.lines.pop_front() else {
                queue.writing = false;
                self.idle.notify_all();
                queue = self
                    .queued
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            };
            queue.bytes -= line.len();
            queue.writing = true;
            drop(queue);
            if output
                .write_all(&line)
                .and_then(|()| output.flush())
                .is_err()
            {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            queue = self.lock();
        }
    }
}

/// What `tracing-subscriber` writes one event to: each event is one `write_all` of a whole
/// line, so each write is queued as a line.
#[derive(Debug)]
pub struct LineWriter<'a>(&'a LogSink);

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.0.push(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(self)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// An output that fails every write, like a closed pipe.
    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// An output that takes nothing until it is let go, like a full pipe nobody reads; reports
    /// what it writes.
    struct Stuck {
        go: mpsc::Receiver<()>,
        written: mpsc::Sender<Vec<u8>>,
    }

    impl Write for Stuck {
        fn write(&mut self, line: &[u8]) -> io::Result<usize> {
            let _ = self.go.recv();
            let _ = self.written.send(line.to_vec());
            Ok(line.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn failed_writes_are_dropped_and_counted() {
        static DROPPED: AtomicU64 = AtomicU64::new(0);
        let sink = LogSink::with_counter(Closed, 1024, &DROPPED).expect("thread");
        for _ in 0..3 {
            sink.make_writer()
                .write_all(b"line\n")
                .expect("never fails");
        }
        assert!(
            sink.flush(Duration::from_secs(5)),
            "the writer is not stuck"
        );
        assert_eq!(DROPPED.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_stuck_output_blocks_no_writer_and_lines_past_the_capacity_are_dropped() {
        static DROPPED: AtomicU64 = AtomicU64::new(0);
        let (go, gate) = mpsc::channel();
        let (written, lines) = mpsc::channel();
        let output = Stuck { go: gate, written };
        let sink = LogSink::with_counter(output, 10, &DROPPED).expect("thread");
        // The first line is taken by the writer, which is stuck on it; two more fill the
        // queue; the fourth does not fit.
        sink.push(b"one\n");
        sink.push(b"two\n");
        sink.push(b"six\n");
        sink.push(b"ten\n");
        assert!(
            !sink.flush(Duration::from_millis(10)),
            "nothing can be written"
        );
        let dropped = DROPPED.load(Ordering::Relaxed);
        assert!((1..=2).contains(&dropped), "dropped {dropped}");

        for _ in 0..4 {
            let _ = go.send(());
        }
        assert!(
            sink.flush(Duration::from_secs(5)),
            "all written once let go"
        );
        let written: Vec<Vec<u8>> = lines.try_iter().collect();
        assert_eq!(written.len() as u64 + dropped, 4, "{written:?}");
        assert_eq!(written[0], b"one\n");
    }
}
