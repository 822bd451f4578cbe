//! One accepted client socket: its place in `max_sockets`, and the write deadline that lets
//! go of a client that stops reading.
//!
//! Every byte the gateway writes to a client goes through [`ClientSocket`] (hyper's
//! connections, upgraded WebSockets, and the SSE streams written without hyper), so one rule
//! holds everywhere: a write that makes no progress for `write_timeout` fails with
//! `TimedOut`, and once the gateway is shutting down a write that cannot proceed at once fails
//! at once. No task ever waits on a client's full socket buffer for longer than that.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// What every socket's write deadline shares: one per gateway.
#[derive(Debug)]
pub struct WriteDeadlines {
    /// How long a write may make no progress before the client is let go.
    timeout: Duration,
    /// Once cancelled, a write that would block fails at once.
    shutdown: CancellationToken,
    /// Sockets let go because a write made no progress for `timeout`.
    timed_out: AtomicU64,
}

impl WriteDeadlines {
    pub fn new(timeout: Duration, shutdown: CancellationToken) -> WriteDeadlines {
        WriteDeadlines {
            timeout,
            shutdown,
            timed_out: AtomicU64::new(0),
        }
    }

    /// Clients dropped because they stopped taking bytes.
    pub fn timed_out(&self) -> u64 {
        self.timed_out.load(Ordering::Relaxed)
    }
}

/// The write deadline of one socket. It allocates nothing until a write blocks, so an idle
/// connection pays two pointers for it.
#[derive(Debug)]
pub struct WriteStall {
    deadlines: Arc<WriteDeadlines>,
    /// Set while a write is blocked: when it started to block, and the shutdown to watch.
    blocked: Option<Box<Blocked>>,
}

#[derive(Debug)]
struct Blocked {
    deadline: Pin<Box<Sleep>>,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl WriteStall {
    pub fn new(deadlines: Arc<WriteDeadlines>) -> WriteStall {
        WriteStall {
            deadlines,
            blocked: None,
        }
    }

    /// The socket took bytes (or was never blocked): the deadline starts again.
    pub fn progressed(&mut self) {
        self.blocked = None;
    }

    /// Called when a write would block: pending while the client still has time, the error
    /// that ends the connection once it has not.
    pub fn poll_blocked(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let deadlines = &self.deadlines;
        if deadlines.shutdown.is_cancelled() {
            return Poll::Ready(shutting_down());
        }
        let blocked = self.blocked.get_or_insert_with(|| {
            Box::new(Blocked {
                deadline: Box::pin(tokio::time::sleep(deadlines.timeout)),
                shutdown: Box::pin(deadlines.shutdown.clone().cancelled_owned()),
            })
        });
        if blocked.shutdown.as_mut().poll(cx).is_ready() {
            return Poll::Ready(shutting_down());
        }
        if blocked.deadline.as_mut().poll(cx).is_ready() {
            deadlines.timed_out.fetch_add(1, Ordering::Relaxed);
            return Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client took no bytes for {:?}: dropped as a slow consumer",
                    deadlines.timeout
                ),
            ));
        }
        Poll::Pending
    }

    /// Applies the deadline to one poll of a write.
    fn guard<T>(
        &mut self,
        cx: &mut Context<'_>,
        write: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match write {
            Poll::Ready(result) => {
                self.progressed();
                Poll::Ready(result)
            }
            Poll::Pending => self.poll_blocked(cx).map(Err),
        }
    }
}

fn shutting_down() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the gateway is shutting down and the client is not reading",
    )
}

/// An accepted TCP connection, as every part of the gateway that serves it sees it.
#[derive(Debug)]
pub struct ClientSocket {
    stream: TcpStream,
    stall: WriteStall,
    /// Holds this socket's place in `max_sockets` for as long as it is open, whoever owns it
    /// (hyper, an upgraded WebSocket, an SSE stream).
    _permit: OwnedSemaphorePermit,
}

impl ClientSocket {
    pub fn new(
        stream: TcpStream,
        deadlines: Arc<WriteDeadlines>,
        permit: OwnedSemaphorePermit,
    ) -> ClientSocket {
        ClientSocket {
            stream,
            stall: WriteStall::new(deadlines),
            _permit: permit,
        }
    }

    /// The TCP stream, for peeking and for noticing that the client has gone.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

impl AsyncRead for ClientSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let write = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.stall.guard(cx, write)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let write = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.stall.guard(cx, write)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flush = Pin::new(&mut this.stream).poll_flush(cx);
        this.stall.guard(cx, flush)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let shutdown = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.stall.guard(cx, shutdown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A connected pair whose client end never reads, with small buffers so they fill fast.
    async fn stuck_pair(deadlines: Arc<WriteDeadlines>) -> (ClientSocket, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let client = tokio::net::TcpSocket::new_v4().expect("socket");
        client.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let client = client
            .connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .expect("permit");
        (ClientSocket::new(server, deadlines, permit), client)
    }

    /// Writes until the socket refuses to take more.
    async fn write_until_stuck(socket: &mut ClientSocket) -> io::Error {
        let chunk = vec![b'x'; 64 * 1024];
        loop {
            if let Err(e) = socket.write_all(&chunk).await {
                return e;
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_makes_no_progress_fails_after_the_timeout() {
        let deadlines = Arc::new(WriteDeadlines::new(
            Duration::from_secs(15),
            CancellationToken::new(),
        ));
        let (mut socket, _client) = stuck_pair(deadlines.clone()).await;
        let started = tokio::time::Instant::now();
        let error = write_until_stuck(&mut socket).await;
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        // Paused time: exactly the timeout passed, however long the writes took for real.
        assert_eq!(started.elapsed(), Duration::from_secs(15));
        assert_eq!(deadlines.timed_out(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_fails_a_blocked_write_at_once() {
        let shutdown = CancellationToken::new();
        let deadlines = Arc::new(WriteDeadlines::new(
            Duration::from_secs(3600),
            shutdown.clone(),
        ));
        let (mut socket, _client) = stuck_pair(deadlines.clone()).await;
        let writer = tokio::spawn(async move { write_until_stuck(&mut socket).await });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!writer.is_finished(), "the write waits for the client");
        shutdown.cancel();
        let error = writer.await.expect("writer");
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(deadlines.timed_out(), 0);
    }
}
