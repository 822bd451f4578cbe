//! Long-lived SSE streams on connections of their own, written without hyper.
//!
//! hyper keeps an 8 KiB read buffer and an 8 KiB header buffer for as long as a connection is
//! open, and its server builder cannot shrink them; for an idle SSE stream that is most of its
//! memory. So when a fresh connection's first request is a complete HTTP/1.1 `GET /events`,
//! the head is parsed here (with `httparse`), run through the same router as every other
//! request (origin check, CORS, logging, errors are unchanged), and the response is written
//! directly: head, then chunked body, then the connection closes. Anything else, including a
//! head that has not fully arrived in the first packet and one that hyper would refuse or
//! whose body it would have to frame, is left untouched for hyper, so that it is answered
//! exactly as on any other connection.

use std::io::IoSlice;
use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::response::Parts;
use axum::http::{HeaderName, HeaderValue, Method, Request, Uri, Version, header};
use http_body_util::BodyExt;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tower::ServiceExt;

use crate::socket::ClientSocket;

/// The request line this module serves.
const CLAIMED_PREFIX: &[u8] = b"GET /events";

/// The most headers a claimed request may have; more go to hyper, which rejects them.
const MAX_HEADERS: usize = 64;

/// Bytes read at a time to notice that the client has gone (it sends nothing on a stream).
const PROBE_BYTES: usize = 64;

/// A request this module serves, converted while it was only peeked at.
#[derive(Debug)]
pub(crate) struct Claimed {
    request: Request<Body>,
    /// The bytes its head takes on the socket, still to be consumed.
    head_length: usize,
}

/// The connection's first request, if it is a complete HTTP/1.1 `GET /events` head that
/// converts to the request hyper would build from it. Nothing is consumed either way, so that
/// anything else (a partial head, a target `http` refuses, a body to frame) reaches hyper
/// untouched and is answered exactly as on any other connection.
pub(crate) async fn claim(stream: &TcpStream, max_head: usize) -> Option<Claimed> {
    let mut prefix = [0u8; CLAIMED_PREFIX.len()];
    let n = stream.peek(&mut prefix).await.ok()?;
    if prefix[..n] != CLAIMED_PREFIX[..] {
        return None;
    }
    let mut head = vec![0u8; max_head];
    let n = stream.peek(&mut head).await.ok()?;
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_length = match parsed.parse(&head[..n]) {
        Ok(httparse::Status::Complete(length)) if parsed.version == Some(1) => length,
        _ => return None,
    };
    let request = convert(&parsed)?;
    Some(Claimed {
        request,
        head_length,
    })
}

/// The bodiless GET that `parsed` describes, or `None` where hyper would do more than build
/// it: refuse a target or header (`400`), or frame a body (`Content-Length`,
/// `Transfer-Encoding`), which it also refuses when malformed.
fn convert(parsed: &httparse::Request<'_, '_>) -> Option<Request<Body>> {
    let uri = Uri::try_from(parsed.path?).ok()?;
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .version(Version::HTTP_11)
        .body(Body::empty())
        .ok()?;
    for header in parsed.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            return None;
        }
        let value = HeaderValue::from_bytes(header.value).ok()?;
        request.headers_mut().append(name, value);
    }
    Some(request)
}

/// Serves the claimed request up to its response's head; what is left, writing the body and
/// closing the connection, is returned for a task of its own (see `server.rs`), so that a
/// stream holds only what it needs while it is open.
pub(crate) async fn serve(
    mut socket: ClientSocket,
    claimed: Claimed,
    peer: SocketAddr,
    router: Router,
) -> Option<impl Future<Output = ()> + Send + 'static> {
    let Claimed {
        mut request,
        head_length,
    } = claimed;
    // The head was only peeked at; it is in the socket's buffer, so this does not wait.
    let mut head = vec![0u8; head_length];
    if let Err(e) = socket.read_exact(&mut head).await {
        tracing::debug!(%peer, "connection ended before its request was read: {e}");
        return None;
    }
    drop(head);
    request.extensions_mut().insert(ConnectInfo(peer));
    let response = match router.oneshot(request).await {
        Ok(response) => response,
        Err(infallible) => match infallible {},
    };
    // The head's headers are not kept for the stream's life: for an idle stream they were a
    // sixth of its memory.
    let (parts, body) = response.into_parts();
    let sized = parts.headers.contains_key(header::CONTENT_LENGTH);
    if let Err(e) = write_head(&mut socket, &parts, sized).await {
        tracing::debug!(%peer, "stream ended: {e}");
        return None;
    }
    drop(parts);
    Some(async move {
        if let Err(e) = write_body(&mut socket, body, sized).await {
            tracing::debug!(%peer, "stream ended: {e}");
        }
    })
}

/// Writes the response's head: with `sized` unset, its body is chunked; then the connection
/// closes.
async fn write_head(socket: &mut ClientSocket, parts: &Parts, sized: bool) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        parts.status.as_str(),
        parts.status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in &parts.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if !sized {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    write_all(socket, &mut [IoSlice::new(&head)]).await
}

/// Writes the body: a streamed one chunked, a sized one as it is. Ends early, dropping the body
/// (and with it the subscription), when the client goes.
async fn write_body(socket: &mut ClientSocket, mut body: Body, sized: bool) -> std::io::Result<()> {
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            () = client_gone(socket.stream()) => return Ok(()),
        };
        let Some(Ok(frame)) = frame else { break };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        if sized {
            write_all(socket, &mut [IoSlice::new(&data)]).await?;
        } else {
            let size = format!("{:x}\r\n", data.len());
            let mut parts = [
                IoSlice::new(size.as_bytes()),
                IoSlice::new(&data),
                IoSlice::new(b"\r\n"),
            ];
            write_all(socket, &mut parts).await?;
        }
    }
    if !sized {
        write_all(socket, &mut [IoSlice::new(b"0\r\n\r\n")]).await?;
    }
    Ok(())
}

/// Completes when the client closes its side (or the connection fails); bytes it sends on a
/// stream are read and ignored.
async fn client_gone(stream: &TcpStream) {
    let mut probe = [0u8; PROBE_BYTES];
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        match stream.try_read(&mut probe) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Writes every slice, in as few system calls as the socket allows (and within its write
/// deadline).
async fn write_all(
    socket: &mut ClientSocket,
    mut slices: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    while !slices.is_empty() {
        match socket.write_vectored(slices).await? {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            n => IoSlice::advance_slices(&mut slices, n),
        }
    }
    Ok(())
}
