//! A WebSocket client that writes hand-made frames, for what a real client library refuses to
//! send: unmasked frames, reserved bits and opcodes, text that is not UTF-8.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::within;
use crate::ws::Closed;

/// One frame, byte for byte as it goes on the wire.
#[derive(Debug, Clone)]
pub struct RawFrame {
    pub fin: bool,
    /// RSV1; no extension is negotiated, so a set bit is a protocol violation.
    pub rsv1: bool,
    /// 0x1 text, 0x2 binary, 0x8 close, 0x9 ping; 0x3–0x7 and 0xB–0xF are reserved.
    pub opcode: u8,
    /// Clients must mask every frame (RFC 6455, 5.3); `None` sends it unmasked.
    pub mask: Option<[u8; 4]>,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// A final, masked frame with no reserved bit set.
    pub fn new(opcode: u8, payload: &[u8]) -> RawFrame {
        RawFrame {
            fin: true,
            rsv1: false,
            opcode,
            mask: Some([0x37, 0xfa, 0x21, 0x3d]),
            payload: payload.to_vec(),
        }
    }

    /// A final, masked text frame; `payload` need not be UTF-8.
    pub fn text(payload: &[u8]) -> RawFrame {
        RawFrame::new(0x1, payload)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut bytes =
            vec![u8::from(self.fin) << 7 | u8::from(self.rsv1) << 6 | (self.opcode & 0x0f)];
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let length = self.payload.len();
        match u16::try_from(length) {
            Ok(short) if short < 126 => bytes.push(mask_bit | short as u8),
            Ok(medium) => {
                bytes.push(mask_bit | 126);
                bytes.extend_from_slice(&medium.to_be_bytes());
            }
            Err(_) => {
                bytes.push(mask_bit | 127);
                bytes.extend_from_slice(&(length as u64).to_be_bytes());
            }
        }
        match self.mask {
            Some(mask) => {
                bytes.extend_from_slice(&mask);
                let masked = self.payload.iter().zip(mask.iter().cycle());
                bytes.extend(masked.map(|(byte, key)| byte ^ key));
            }
            None => bytes.extend_from_slice(&self.payload),
        }
        bytes
    }
}

/// A frame from the server (servers never mask).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// An upgraded `/ws` connection over a bare TCP socket.
#[derive(Debug)]
pub struct RawWs {
    stream: TcpStream,
    /// Bytes read past the handshake or the last frame.
    buffer: Vec<u8>,
}

impl RawWs {
    /// Connects to `addr` and upgrades `path_and_query`; panics unless the answer is `101`.
    pub async fn connect(addr: SocketAddr, path_and_query: &str) -> RawWs {
        let mut stream = within("TCP connect", TcpStream::connect(addr))
            .await
            .expect("TCP connect");
        let request = format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        within("handshake write", stream.write_all(request.as_bytes()))
            .await
            .expect("handshake write");
        let mut ws = RawWs {
            stream,
            buffer: Vec::new(),
        };
        let head = within("handshake reply", async {
            loop {
                if let Some(end) = ws.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head: Vec<u8> = ws.buffer.drain(..end + 4).collect();
                    return String::from_utf8_lossy(&head).into_owned();
                }
                assert!(ws.fill().await, "connection closed during the handshake");
            }
        })
        .await;
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "upgrade of {path_and_query} refused: {head}"
        );
        ws
    }

    /// Writes `frame` as is.
    pub async fn send(&mut self, frame: &RawFrame) {
        within("frame write", self.stream.write_all(&frame.encode()))
            .await
            .expect("frame write");
    }

    /// The next frame from the server, or `None` when the connection ends.
    pub async fn next(&mut self) -> Option<ServerFrame> {
        within("a frame from the server", async {
            loop {
                if let Some(frame) = self.take_frame() {
                    return Some(frame);
                }
                if !self.fill().await {
                    return None;
                }
            }
        })
        .await
    }

    /// Reads until a close frame or the end of the connection, skipping other frames; answers
    /// the close, as a polite client does.
    pub async fn read_to_close(&mut self) -> Closed {
        loop {
            match self.next().await {
                None => return Closed::Dropped,
                Some(frame) if frame.opcode == 0x8 => {
                    let mut reply = RawFrame::new(0x8, &frame.payload);
                    reply.payload.truncate(2);
                    // The server may already have gone; that is its right after a close.
                    let _ = self.stream.write_all(&reply.encode()).await;
                    // A close frame without a status is code 1005 (RFC 6455, 7.1.5).
                    return Closed::Code(match frame.payload[..] {
                        [high, low, ..] => u16::from_be_bytes([high, low]),
                        _ => 1005,
                    });
                }
                Some(_) => {}
            }
        }
    }

    /// Reads more bytes into the buffer; `false` at the end of the connection (or a reset).
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Takes one whole frame off the front of the buffer, if there is one.
    fn take_frame(&mut self) -> Option<ServerFrame> {
        let [first, second, ..] = self.buffer[..] else {
            return None;
        };
        let (length, header) = match second & 0x7f {
            126 => {
                let bytes = self.buffer.get(2..4)?;
                (usize::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4)
            }
            127 => {
                let bytes: [u8; 8] = self.buffer.get(2..10)?.try_into().ok()?;
                (usize::try_from(u64::from_be_bytes(bytes)).ok()?, 10)
            }
            short => (usize::from(short), 2),
        };
        if self.buffer.len() < header + length {
            return None;
        }
        let frame: Vec<u8> = self.buffer.drain(..header + length).collect();
        Some(ServerFrame {
            opcode: first & 0x0f,
            payload: frame[header..].to_vec(),
        })
    }
}
