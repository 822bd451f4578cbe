//! The published message and how subscribers find it again in whatever framing the server
//! wraps around it.
//!
//! Payload: `{"bs":SEQ,"bt":MICROS,"pad":"xxxx"}` — per-topic sequence, send time on the
//! generator's monotonic clock, and padding to a fixed size. Switchboard delivers it as the
//! `data` of its envelope, Nchan delivers it verbatim; either way the bytes `"bs":` appear once
//! per message, so one substring scan works for WebSocket frames, SSE streams, JSON poll replies
//! and multipart bodies alike, without a JSON parse per message. The keys are in alphabetical
//! order, so a server that re-serialises through a sorted map still emits them in this order.

use std::sync::LazyLock;

use memchr::memmem::Finder;

static SEQ_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"bs\":"));
const TIME_KEY: &[u8] = b",\"bt\":";

/// Builds a payload of about `size` bytes (never less than the header needs).
pub(crate) fn build(seq: u64, sent_us: u64, size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size.max(48));
    v.extend_from_slice(b"{\"bs\":");
    push_u64(&mut v, seq);
    v.extend_from_slice(TIME_KEY);
    push_u64(&mut v, sent_us);
    v.extend_from_slice(b",\"pad\":\"");
    let pad = size.saturating_sub(v.len() + 2);
    v.resize(v.len() + pad, b'x');
    v.extend_from_slice(b"\"}");
    v
}

fn push_u64(v: &mut Vec<u8>, n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    v.extend_from_slice(&buf[i..]);
}

/// Calls `f(seq, sent_us)` for every payload found in `buf`; returns how many were found.
pub(crate) fn scan(buf: &[u8], mut f: impl FnMut(u64, u64)) -> usize {
    let mut n = 0;
    for pos in SEQ_KEY.find_iter(buf) {
        let rest = &buf[pos + 5..];
        let Some((seq, used)) = parse_u64(rest) else {
            continue;
        };
        let rest = &rest[used..];
        let Some(rest) = rest.strip_prefix(TIME_KEY) else {
            continue;
        };
        let Some((sent, _)) = parse_u64(rest) else {
            continue;
        };
        f(seq, sent);
        n += 1;
    }
    n
}

fn parse_u64(b: &[u8]) -> Option<(u64, usize)> {
    let mut n: u64 = 0;
    let mut i = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        n = n.checked_mul(10)?.checked_add(u64::from(b[i] - b'0'))?;
        i += 1;
    }
    (i > 0).then_some((n, i))
}

/// Extracts the string value of `"key":"..."` (no escapes expected: cursors are URL-safe).
pub(crate) fn json_str<'a>(buf: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let pat = format!("\"{key}\":\"");
    let start = memchr::memmem::find(buf, pat.as_bytes())? + pat.len();
    let len = memchr::memchr(b'"', &buf[start..])?;
    Some(&buf[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_envelope_and_raw() {
        let p = build(42, 1_234_567, 128);
        assert_eq!(p.len(), 128);
        let text = String::from_utf8(p.clone()).unwrap_or_default();
        let env = format!(
            "{{\"type\":\"message\",\"topic\":\"t\",\"id\":\"a-b-42\",\"data\":{text},\"time\":1}}\n\
             event: message\ndata: {text}\n"
        );
        let mut got = Vec::new();
        assert_eq!(scan(env.as_bytes(), |s, t| got.push((s, t))), 2);
        assert_eq!(got, vec![(42, 1_234_567), (42, 1_234_567)]);
        assert_eq!(scan(&p, |_, _| {}), 1);
    }

    #[test]
    fn small_size_still_valid_json() {
        let p = build(0, 0, 1);
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap_or_default();
        assert_eq!(v["bs"], 0);
    }

    #[test]
    fn cursor_extraction() {
        let body = br#"{"messages":[],"cursor":"abc-1.def-2","positions":{}}"#;
        assert_eq!(json_str(body, "cursor"), Some(&b"abc-1.def-2"[..]));
        assert_eq!(json_str(body, "nope"), None);
    }
}
