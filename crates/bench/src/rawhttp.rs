//! Minimal HTTP/1.1 and WebSocket client pieces for the subscribers and publishers.
//!
//! Streaming subscribers dominate the generator's work: 100k+ deliveries/s on one core. A
//! general-purpose client costs more per message than the servers being measured (tungstenite
//! zero-fills its read buffer on every read and allocates per frame), so SSE and WebSocket
//! subscribers read straight into one reusable buffer per connection and parse in place.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Error, Result};

/// Spare capacity kept free before each read (one read usually fetches several frames).
const READ_CHUNK: usize = 4096;

/// Reads more bytes into `buf` (appending, no zero-filling). `Ok(0)` means end of stream.
///
/// Every client reads through here, so each connection keeps one buffer that grows only when
/// a read would not fit: no allocation per message.
pub(crate) async fn fill<R: AsyncRead + Unpin>(
    s: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < READ_CHUNK {
        buf.reserve(READ_CHUNK);
    }
    s.read_buf(buf).await
}

/// Reads more of a response that is not complete yet: the end of the stream is an error here,
/// `eof` says where it came; a read error is reported as `op: kind`.
async fn fill_some(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    op: &'static str,
    eof: &'static str,
) -> Result<()> {
    match fill(s, buf).await {
        Ok(0) => Err(Error::protocol(eof)),
        Ok(_) => Ok(()),
        Err(e) => Err(Error::net(op, e)),
    }
}

/// The parts of a response head the clients need.
#[derive(Debug, Default)]
pub(crate) struct Head {
    pub(crate) status: u16,
    pub(crate) chunked: bool,
    pub(crate) content_length: Option<usize>,
    /// `Connection: close`: the body ends with the connection, which is not reusable.
    pub(crate) close: bool,
    /// Nchan's long-poll cursor headers.
    pub(crate) last_modified: Option<Vec<u8>>,
    pub(crate) etag: Option<Vec<u8>>,
}

/// Parses the response head at the start of `buf`: the head and its length once complete,
/// `None` while more bytes are needed.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(n) = resp.parse(buf)? else {
        return Ok(None);
    };
    let mut head = Head {
        status: resp.code.unwrap_or(0),
        ..Head::default()
    };
    for h in resp.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = h.value.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            head.content_length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok());
        } else if name.eq_ignore_ascii_case("connection") {
            head.close = h.value.eq_ignore_ascii_case(b"close");
        } else if name.eq_ignore_ascii_case("last-modified") {
            head.last_modified = Some(h.value.to_vec());
        } else if name.eq_ignore_ascii_case("etag") {
            head.etag = Some(h.value.to_vec());
        }
    }
    Ok(Some((head, n)))
}

/// Sends `req` and reads the response head; body bytes already read are left in `buf`.
pub(crate) async fn request(s: &mut TcpStream, req: &[u8], buf: &mut Vec<u8>) -> Result<Head> {
    s.write_all(req).await.map_err(|e| Error::net("write", e))?;
    loop {
        match parse_head(buf) {
            Ok(Some((head, n))) => {
                buf.drain(..n);
                return Ok(head);
            }
            Ok(None) => {}
            Err(e) => return Err(Error::protocol(format!("response head: {e}"))),
        }
        if buf.len() > 64 * 1024 {
            return Err(Error::protocol("response head over 64 KiB"));
        }
        fill_some(s, buf, "read head", "closed before response head").await?;
    }
}

/// Sends `req` and reads the whole response: the head is returned, the body goes to `out`,
/// and whatever follows the response stays in `buf`.
pub(crate) async fn exchange(
    s: &mut TcpStream,
    req: &[u8],
    buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<Head> {
    let head = request(s, req, buf).await?;
    body(s, buf, &head, out).await?;
    Ok(head)
}

/// Reads a whole response body (Content-Length, chunked, or until close) into `out`;
/// `buf` holds bytes already read after the head and keeps whatever follows the body.
async fn body(s: &mut TcpStream, buf: &mut Vec<u8>, head: &Head, out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    if head.chunked {
        let mut d = Dechunker::default();
        loop {
            let used = d.feed(buf, out)?;
            buf.drain(..used);
            if d.done {
                return Ok(());
            }
            fill_some(s, buf, "read body", "closed inside a chunked body").await?;
        }
    }
    if let Some(len) = head.content_length {
        while buf.len() < len {
            fill_some(s, buf, "read body", "closed inside a body").await?;
        }
        out.extend_from_slice(&buf[..len]);
        buf.drain(..len);
        return Ok(());
    }
    // Neither: the body runs to the end of the connection.
    while fill(s, buf).await.map_err(|e| Error::net("read body", e))? > 0 {}
    out.append(buf);
    Ok(())
}

/// Incremental `Transfer-Encoding: chunked` decoder.
#[derive(Debug, Default)]
pub(crate) struct Dechunker {
    /// Bytes left in the current chunk's data.
    left: usize,
    /// Bytes of the CRLF after a chunk's data still to skip.
    crlf: usize,
    /// After the last (zero-size) chunk: skipping trailer lines up to the empty line.
    trailer: bool,
    /// Partial size or trailer line.
    line: Vec<u8>,
    /// The whole body has been decoded (what follows belongs to the next response).
    pub(crate) done: bool,
}

impl Dechunker {
    /// Decodes from `input`, appending chunk data to `out`; returns the bytes consumed, which
    /// is all of `input` unless the body ended inside it.
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize> {
        let mut at = 0;
        while at < input.len() && !self.done {
            let rest = &input[at..];
            if self.left > 0 {
                let n = self.left.min(rest.len());
                out.extend_from_slice(&rest[..n]);
                self.left -= n;
                at += n;
                if self.left == 0 {
                    self.crlf = 2;
                }
            } else if self.crlf > 0 {
                let n = self.crlf.min(rest.len());
                self.crlf -= n;
                at += n;
            } else {
                let Some(nl) = memchr::memchr(b'\n', rest) else {
                    self.line.extend_from_slice(rest);
                    if self.line.len() > 1024 {
                        return Err(Error::protocol("chunk size line too long"));
                    }
                    return Ok(input.len());
                };
                self.line.extend_from_slice(&rest[..nl]);
                at += nl + 1;
                let line = std::str::from_utf8(&self.line)
                    .map_err(|_| Error::protocol("bad chunk size"))?;
                let line = line.trim_end_matches('\r');
                if self.trailer {
                    self.done = line.is_empty();
                } else {
                    let hex = line.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(hex, 16)
                        .map_err(|_| Error::protocol(format!("bad chunk size {hex:?}")))?;
                    if size == 0 {
                        self.trailer = true;
                    } else {
                        self.left = size;
                    }
                }
                self.line.clear();
            }
        }
        Ok(at)
    }
}

/// A WebSocket frame found in a buffer.
#[derive(Debug)]
pub(crate) struct Frame {
    /// The last frame of its message.
    pub(crate) fin: bool,
    /// RFC 6455 opcode: 0 continuation, 1 text, 2 binary, 8 close, 9 ping, 10 pong.
    pub(crate) opcode: u8,
    /// Payload position within the buffer; `end` is also where the next frame starts.
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// Parses one server→client frame at the start of `b`, if complete.
pub(crate) fn parse_frame(b: &[u8]) -> Result<Option<Frame>> {
    if b.len() < 2 {
        return Ok(None);
    }
    let fin = b[0] & 0x80 != 0;
    let opcode = b[0] & 0x0f;
    if b[1] & 0x80 != 0 {
        return Err(Error::protocol("masked frame from server"));
    }
    let (len, at) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
        127 if b.len() >= 10 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&b[2..10]);
            (
                usize::try_from(u64::from_be_bytes(n))
                    .map_err(|_| Error::protocol("frame too large"))?,
                10,
            )
        }
        126 | 127 => return Ok(None),
        n => (usize::from(n), 2),
    };
    if len > 16 << 20 {
        return Err(Error::protocol("frame over 16 MiB"));
    }
    if b.len() < at + len {
        return Ok(None);
    }
    Ok(Some(Frame {
        fin,
        opcode,
        start: at,
        end: at + len,
    }))
}

/// A masked client frame of at most 64 KiB (RFC 6455 requires clients to mask; an all-zero
/// key is valid and leaves the payload as is).
pub(crate) fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(usize::from(u16::MAX))];
    let mut f = Vec::with_capacity(payload.len() + 8);
    f.push(0x80 | opcode);
    match u8::try_from(payload.len()) {
        Ok(short) if short <= 125 => f.push(0x80 | short),
        _ => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunk_split_anywhere() {
        let wire = b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\nNEXT";
        for split in 0..wire.len() {
            let mut d = Dechunker::default();
            let mut out = Vec::new();
            let a = d.feed(&wire[..split], &mut out).unwrap_or(usize::MAX);
            assert_eq!(a, split.min(wire.len() - 4));
            let b = d.feed(&wire[a..], &mut out).unwrap_or(usize::MAX);
            assert_eq!(out, b"helloabcdefghijklmnopqrstuvwxyz");
            assert!(d.done);
            assert_eq!(&wire[a + b..], b"NEXT");
        }
    }

    #[test]
    fn frames() {
        let mut b = vec![0x81, 3, b'a', b'b', b'c', 0x89, 0];
        let f = parse_frame(&b).ok().flatten();
        assert!(matches!(
            f,
            Some(Frame {
                fin: true,
                opcode: 1,
                start: 2,
                end: 5
            })
        ));
        let g = parse_frame(&b[5..]).ok().flatten();
        assert!(matches!(
            g,
            Some(Frame {
                opcode: 9,
                start: 2,
                end: 2,
                ..
            })
        ));
        b.truncate(4);
        assert!(matches!(parse_frame(&b), Ok(None)));
        let long = [&[0x81u8, 126, 1, 0][..], &[b'x'; 256][..]].concat();
        assert!(matches!(
            parse_frame(&long),
            Ok(Some(Frame { end: 260, .. }))
        ));
    }
}
