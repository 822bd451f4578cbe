//! The generator's one error type: what failed, and what was being done when it did.
//!
//! Client errors end up as keys of a run's error counts (`Shared::error`) and so in the results
//! JSON and the report; their text must stay stable from run to run. That is why socket errors
//! show only their kind (`ws read: connection reset`), never the OS wording with its numbers.

use std::fmt;
use std::io;

/// A `Result` whose error is the generator's [`Error`].
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a step of the generator failed.
#[derive(Debug)]
pub(crate) enum Error {
    /// A client socket operation (`op`: `ws read`, `write`, `poll reconnect`, …) failed. Shown
    /// as `op: kind`, so the same failure always counts under the same key.
    Net { op: String, source: io::Error },
    /// A file, process or pipe operation of the harness failed; `what` names the path or
    /// program. Shown in full (`what: message`): it is read by a person, once.
    Io { what: String, source: io::Error },
    /// A results file could not be written or read back; `what` names the file.
    Json {
        what: String,
        source: serde_json::Error,
    },
    /// The server under test answered something a client cannot use: an unexpected status,
    /// bad framing, a stream closed too early.
    Protocol(String),
    /// A server under test did not start or did not become ready.
    Start(String),
    /// The run cannot be set up as asked (e.g. the open-file limit is too low).
    Setup(String),
    /// `source` happened while doing `what` (shown as `what: source`).
    Context {
        what: &'static str,
        source: Box<Error>,
    },
}

impl Error {
    /// A socket operation `op` failed (shown as `op: kind`).
    pub(crate) fn net(op: impl Into<String>, source: io::Error) -> Self {
        Self::Net {
            op: op.into(),
            source,
        }
    }

    /// A file or process operation on `what` failed (shown in full).
    pub(crate) fn io(what: impl fmt::Display, source: io::Error) -> Self {
        Self::Io {
            what: what.to_string(),
            source,
        }
    }

    /// Results `what` could not be (de)serialised.
    pub(crate) fn json(what: impl fmt::Display, source: serde_json::Error) -> Self {
        Self::Json {
            what: what.to_string(),
            source,
        }
    }

    /// The server's answer cannot be used: `why`.
    pub(crate) fn protocol(why: impl Into<String>) -> Self {
        Self::Protocol(why.into())
    }

    /// A server did not start: `why`.
    pub(crate) fn start(why: impl Into<String>) -> Self {
        Self::Start(why.into())
    }

    /// Says what was being done when `self` happened.
    pub(crate) fn context(self, what: &'static str) -> Self {
        Self::Context {
            what,
            source: Box::new(self),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Net { op, source } => write!(f, "{op}: {}", source.kind()),
            Self::Io { what, source } => write!(f, "{what}: {source}"),
            Self::Json { what, source } => write!(f, "{what}: {source}"),
            Self::Protocol(why) | Self::Start(why) | Self::Setup(why) => f.write_str(why),
            Self::Context { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Net { source, .. } | Self::Io { source, .. } => Some(source),
            Self::Json { source, .. } => Some(source),
            Self::Context { source, .. } => Some(source.as_ref()),
            Self::Protocol(_) | Self::Start(_) | Self::Setup(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_errors_show_only_their_kind() {
        let e = Error::net("ws read", io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(e.to_string(), "ws read: connection reset");
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn context_prefixes_the_cause() {
        let e = Error::protocol("closed inside a body").context("poll");
        assert_eq!(e.to_string(), "poll: closed inside a body");
        let io = Error::io("out/x.json", io::Error::other("disk full"));
        assert_eq!(io.to_string(), "out/x.json: disk full");
    }
}
