//! Minimal HTTP/1.1 and WebSocket client pieces for the streaming subscribers.
//!
//! Streaming subscribers dominate the generator's work: 100k+ deliveries/s on one core. A
//! general-purpose client costs more per message than the servers being measured (tungstenite
//! zero-fills its read buffer on every read and allocates per frame), so SSE and WebSocket
//! subscribers read straight into one reusable buffer per connection and parse in place.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Spare capacity kept free before each read (one read usually fetches several frames).
const READ_CHUNK: usize = 4096;

/// Reads more bytes into `buf` (appending, no zero-filling). `Ok(0)` means end of stream.
pub(crate) async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < READ_CHUNK {
        buf.reserve(READ_CHUNK);
    }
    s.read_buf(buf).await
}

/// The parts of a response head the subscribers need.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) status: u16,
    pub(crate) chunked: bool,
}

/// Sends `req` and reads the response head; body bytes already read are left in `buf`.
pub(crate) async fn request(
    s: &mut TcpStream,
    req: &[u8],
    buf: &mut Vec<u8>,
) -> Result<Head, String> {
    s.write_all(req)
        .await
        .map_err(|e| format!("write: {}", e.kind()))?;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => {
                let chunked = resp.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("transfer-encoding")
                        && h.value.eq_ignore_ascii_case(b"chunked")
                });
                let head = Head {
                    status: resp.code.unwrap_or(0),
                    chunked,
                };
                buf.drain(..n);
                return Ok(head);
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(format!("response head: {e}")),
        }
        if buf.len() > 64 * 1024 {
            return Err("response head over 64 KiB".into());
        }
        match fill(s, buf).await {
            Ok(0) => return Err("closed before response head".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("read head: {}", e.kind())),
        }
    }
}

/// Incremental `Transfer-Encoding: chunked` decoder.
#[derive(Debug, Default)]
pub(crate) struct Dechunker {
    /// Bytes left in the current chunk's data.
    left: usize,
    /// Bytes of the CRLF after a chunk's data still to skip.
    crlf: usize,
    /// Partial chunk-size line.
    line: Vec<u8>,
    pub(crate) done: bool,
}

impl Dechunker {
    /// Decodes `input`, appending chunk data to `out`.
    pub(crate) fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        while !input.is_empty() && !self.done {
            if self.left > 0 {
                let n = self.left.min(input.len());
                out.extend_from_slice(&input[..n]);
                self.left -= n;
                input = &input[n..];
                if self.left == 0 {
                    self.crlf = 2;
                }
            } else if self.crlf > 0 {
                let n = self.crlf.min(input.len());
                self.crlf -= n;
                input = &input[n..];
            } else {
                let Some(nl) = memchr::memchr(b'\n', input) else {
                    self.line.extend_from_slice(input);
                    if self.line.len() > 1024 {
                        return Err("chunk size line too long".into());
                    }
                    return Ok(());
                };
                self.line.extend_from_slice(&input[..nl]);
                input = &input[nl + 1..];
                let line = std::str::from_utf8(&self.line).map_err(|_| "bad chunk size")?;
                let hex = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(hex, 16)
                    .map_err(|_| format!("bad chunk size {hex:?}"))?;
                self.line.clear();
                if size == 0 {
                    self.done = true;
                } else {
                    self.left = size;
                }
            }
        }
        Ok(())
    }
}

/// A WebSocket frame found in a buffer.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) fin: bool,
    pub(crate) opcode: u8,
    /// Payload position within the buffer.
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// Parses one server→client frame at the start of `b`, if complete.
pub(crate) fn parse_frame(b: &[u8]) -> Result<Option<Frame>, String> {
    if b.len() < 2 {
        return Ok(None);
    }
    let fin = b[0] & 0x80 != 0;
    let opcode = b[0] & 0x0f;
    if b[1] & 0x80 != 0 {
        return Err("masked frame from server".into());
    }
    let (len, at) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
        127 if b.len() >= 10 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&b[2..10]);
            (
                usize::try_from(u64::from_be_bytes(n)).map_err(|_| "frame too large")?,
                10,
            )
        }
        126 | 127 => return Ok(None),
        n => (usize::from(n), 2),
    };
    if len > 16 << 20 {
        return Err("frame over 16 MiB".into());
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

/// A masked client frame (RFC 6455 requires clients to mask; an all-zero key is valid and
/// leaves the payload as is).
pub(crate) fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 8);
    f.push(0x80 | opcode);
    f.push(0x80 | payload.len().min(125) as u8);
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(&payload[..payload.len().min(125)]);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunk_split_anywhere() {
        let wire = b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n";
        for split in 0..wire.len() {
            let mut d = Dechunker::default();
            let mut out = Vec::new();
            assert!(d.feed(&wire[..split], &mut out).is_ok());
            assert!(d.feed(&wire[split..], &mut out).is_ok());
            assert_eq!(out, b"helloabcdefghijklmnopqrstuvwxyz");
            assert!(d.done);
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
