//! Answers made in one turn of a connection's task leave in one write.
//!
//! hyper writes and flushes each response as soon as it is made. A client that pipelines its
//! requests gets several answered within one poll of its connection, and each answer would
//! cost a `sendto` of its own (on this path, most of a small publish's cost). While
//! [`Cork::serve`] polls hyper's connection, what hyper writes gathers in a buffer; it goes
//! out, in one write, as soon as hyper reads from the socket again or that poll returns. So
//! nothing waits in the buffer while the connection waits for anything else: a commit, a
//! long-poll's message, the client.
//!
//! The same socket serves the WebSocket a connection upgrades to; outside a poll of hyper's
//! connection nothing is held back, so the WebSocket writes as it did.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::socket::ClientSocket;

/// Bytes gathered before they are written anyway, so that a large answer streams through
/// instead of being held whole.
const GATHER_MAX: usize = 64 * 1024;

/// Splits an accepted socket into the I/O hyper owns and the handle its connection task keeps.
pub fn cork(socket: ClientSocket) -> (CorkedSocket, Cork) {
    let shared = Arc::new(Mutex::new(Shared {
        socket,
        gathered: Vec::new(),
        corked: false,
    }));
    (
        CorkedSocket {
            shared: shared.clone(),
        },
        Cork { shared },
    )
}

/// The client socket as hyper (and, after an upgrade, the WebSocket) sees it: its writes are
/// held back while the connection task has it corked.
#[derive(Debug)]
pub struct CorkedSocket {
    shared: Arc<Mutex<Shared>>,
}

/// The connection task's handle on its [`CorkedSocket`].
#[derive(Debug)]
pub struct Cork {
    shared: Arc<Mutex<Shared>>,
}

#[derive(Debug)]
struct Shared {
    socket: ClientSocket,
    /// Bytes written while corked and not yet on the socket, in order before anything
    /// written later.
    gathered: Vec<u8>,
    /// Set only while the connection task polls hyper's connection.
    corked: bool,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic while the lock was held left the buffer consistent: every method pushes or
    // drains whole slices.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Cork {
    /// Drives `connection` to its end, corked while it is polled; after every poll, writes
    /// what it gathered. An error writing that ends the connection too.
    pub async fn serve<C: Future>(&self, mut connection: Pin<&mut C>) -> io::Result<C::Output> {
        let mut finished = None;
        std::future::poll_fn(|cx| {
            if finished.is_none() {
                lock(&self.shared).corked = true;
                if let Poll::Ready(output) = connection.as_mut().poll(cx) {
                    finished = Some(output);
                }
            }
            // One lock uncorks and writes what was gathered.
            let mut shared = lock(&self.shared);
            shared.corked = false;
            ready!(shared.poll_write_gathered(cx))?;
            match finished.take() {
                Some(output) => Poll::Ready(Ok(output)),
                None => Poll::Pending,
            }
        })
        .await
    }
}

impl Shared {
    /// Writes out what was gathered; ready once nothing is left.
    fn poll_write_gathered(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.gathered.is_empty() {
            let written = match ready!(Pin::new(&mut self.socket).poll_write(cx, &self.gathered)) {
                Ok(0) => Err(io::ErrorKind::WriteZero.into()),
                written => written,
            };
            match written {
                Ok(written) => drop(self.gathered.drain(..written)),
                Err(e) => {
                    // They can never be delivered, and trying again would fail (and count a
                    // write timeout) once more.
                    self.gathered = Vec::new();
                    return Poll::Ready(Err(e));
                }
            }
        }
        // An idle connection keeps no buffer.
        self.gathered = Vec::new();
        Poll::Ready(Ok(()))
    }

    /// Makes room for `len` more gathered bytes: ready once they fit under [`GATHER_MAX`].
    fn poll_room_for(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<()>> {
        if self.gathered.len() + len > GATHER_MAX {
            ready!(self.poll_write_gathered(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for CorkedSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut shared = lock(&self.shared);
        // What is answered goes out before the gateway reads (and perhaps waits for) more,
        // so a client waiting for an answer sends its next request sooner. A full socket does
        // not stop the read; the end of the poll writes them then.
        if let Poll::Ready(Err(e)) = shared.poll_write_gathered(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut shared.socket).poll_read(cx, buf)
    }
}

impl AsyncWrite for CorkedSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut shared = lock(&self.shared);
        if shared.corked && buf.len() < GATHER_MAX {
            ready!(shared.poll_room_for(cx, buf.len()))?;
            shared.gathered.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        ready!(shared.poll_write_gathered(cx))?;
        Pin::new(&mut shared.socket).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut shared = lock(&self.shared);
        let len: usize = bufs.iter().map(|buf| buf.len()).sum();
        if shared.corked && len < GATHER_MAX {
            ready!(shared.poll_room_for(cx, len))?;
            for buf in bufs {
                shared.gathered.extend_from_slice(buf);
            }
            return Poll::Ready(Ok(len));
        }
        ready!(shared.poll_write_gathered(cx))?;
        Pin::new(&mut shared.socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut shared = lock(&self.shared);
        if shared.corked {
            // The connection task writes it all when its poll ends.
            return Poll::Ready(Ok(()));
        }
        ready!(shared.poll_write_gathered(cx))?;
        Pin::new(&mut shared.socket).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut shared = lock(&self.shared);
        ready!(shared.poll_write_gathered(cx))?;
        Pin::new(&mut shared.socket).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::WriteDeadlines;
    use std::io::Read;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    use tokio::sync::oneshot;
    use tokio_util::sync::CancellationToken;

    /// A corked server end and the client end of one loopback connection. The client end is
    /// a non-blocking std socket, so that every read asks the kernel what has arrived.
    async fn pair() -> (CorkedSocket, Cork, std::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        client.set_nonblocking(true).expect("non-blocking");
        let (server, _) = listener.accept().await.expect("accept");
        let deadlines = Arc::new(WriteDeadlines::new(
            Duration::from_secs(60),
            CancellationToken::new(),
        ));
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .expect("permit");
        let (corked, cork) = cork(ClientSocket::new(server, deadlines, permit));
        (corked, cork, client)
    }

    /// Bytes that have reached the client, up to `max`, without waiting.
    fn arrived(mut client: &std::net::TcpStream, max: usize) -> Vec<u8> {
        let mut bytes = vec![0; max];
        match client.read(&mut bytes) {
            Ok(n) => bytes.truncate(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => bytes.clear(),
            Err(e) => panic!("read: {e}"),
        }
        bytes
    }

    /// Reads `len` bytes, or up to the end of the stream if `len` is `None`, letting the
    /// other futures of the test run while nothing has arrived. Fails after 5 s.
    async fn read(mut client: &std::net::TcpStream, len: Option<usize>) -> Vec<u8> {
        let reading = async {
            let mut bytes = Vec::new();
            while len.is_none_or(|len| bytes.len() < len) {
                let mut chunk = vec![0; len.map_or(1 << 16, |len| len - bytes.len())];
                match client.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        tokio::task::yield_now().await;
                    }
                    Err(e) => panic!("read: {e}"),
                }
            }
            bytes
        };
        tokio::time::timeout(Duration::from_secs(5), reading)
            .await
            .expect("the bytes arrived within 5 s")
    }

    #[tokio::test]
    async fn writes_within_a_poll_leave_together_when_it_ends() {
        let (mut corked, cork, client) = pair().await;
        let (wake, woken) = oneshot::channel::<()>();
        let connection = async {
            corked.write_all(b"one ").await?;
            corked.flush().await?;
            corked.write_all(b"two").await?;
            corked.flush().await?;
            // Loopback hands written bytes over at once: none were written yet.
            assert!(arrived(&client, 16).is_empty(), "held within the poll");
            // Waiting for something else ends the poll, and the answers go out.
            let _ = woken.await;
            corked.write_all(b" three").await?;
            corked.shutdown().await
        };
        let reader = async {
            let first = read(&client, Some(7)).await;
            assert_eq!(first, b"one two", "written while the connection waits");
            wake.send(()).expect("still waiting");
            let rest = read(&client, None).await;
            assert_eq!(rest, b" three", "written before the shutdown");
        };
        let connection = std::pin::pin!(connection);
        let (served, ()) = tokio::join!(cork.serve(connection), reader);
        served.expect("written").expect("served");
    }

    #[tokio::test]
    async fn a_large_answer_streams_through_instead_of_being_held_whole() {
        let (mut corked, cork, client) = pair().await;
        let answer = vec![b'x'; GATHER_MAX + GATHER_MAX / 2];
        let connection = async {
            for chunk in answer.chunks(4096) {
                corked.write_all(chunk).await?;
            }
            // Still within the first poll, past the gathering bound.
            let sent = arrived(&client, answer.len()).len();
            assert!(sent >= GATHER_MAX / 2, "{sent} bytes had left the gateway");
            io::Result::Ok(sent)
        };
        let arrived = cork
            .serve(std::pin::pin!(connection))
            .await
            .expect("written")
            .expect("served");
        let rest = read(&client, Some(answer.len() - arrived)).await;
        assert!(rest.iter().all(|&byte| byte == b'x'));
    }

    #[tokio::test]
    async fn outside_a_poll_of_the_connection_nothing_is_held() {
        // As after an upgrade: the WebSocket writes on the socket with no connection polled.
        let (mut corked, _cork, client) = pair().await;
        corked.write_all(b"frame").await.expect("write");
        assert_eq!(arrived(&client, 16), b"frame");
    }
}
