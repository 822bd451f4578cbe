//! The client commands of the `switchboard` binary: `pub`, `sub`, `topics`, `top` and
//! `check-config`. They speak the public protocol (docs/PROTOCOL.md) to any gateway, read what
//! the gateway writes with the types in [`frames`], and keep cursors with the hub's own
//! `Cursor` and `Position`.
//!
//! Data goes to stdout, progress and errors to stderr. Exit codes ([`ExitCode`]): 0 done,
//! 1 refused by the gateway or failed, 2 bad usage or configuration, 3 cannot connect,
//! 4 refused for want of credentials (401, 403).
//!
//! - [`http`]: `--url`, connections and HTTP requests, error bodies; `tls`: `https://`.
//! - [`frames`]: what the gateway sends, as the client reads it (frames, SSE events, replies).
//! - [`publish`]: `pub`; [`subscribe`] and [`cursor_file`]: `sub`;
//!   [`topics`]: `topics` and `top`; [`check`]: `check-config`.

pub mod check;
pub mod cursor_file;
pub mod frames;
pub mod http;
pub mod publish;
pub mod subscribe;
mod tls;
pub mod topics;

use std::fmt;

use clap::Args;

/// Where the gateway is and who the client is; shared by `pub` and `sub`.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The gateway's base URL (`http://` or `https://`, with a path prefix if a proxy adds one).
    #[arg(long, env = "SWITCHBOARD_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,

    /// Sent as `Authorization: Bearer TOKEN` on every request and WebSocket handshake.
    #[arg(long, env = "SWITCHBOARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// The documented exit codes (README, "Command line").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Done, or stopped by Ctrl-C, SIGTERM or a closed stdout.
    Ok = 0,
    /// The gateway refused a request (other than for credentials), or something failed.
    Failed = 1,
    /// Bad arguments, a bad cursor, or a bad configuration.
    Usage = 2,
    /// The gateway cannot be reached.
    CannotConnect = 3,
    /// The gateway answered 401 or 403: a missing or bad token or key, or a forbidden origin
    /// or host.
    NotAllowed = 4,
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

/// Why a command stopped before it was done.
#[derive(Debug)]
pub enum CliError {
    /// Bad arguments or configuration: the message says which.
    Usage(String),
    /// No connection to the gateway could be made, or it broke.
    CannotConnect(String),
    /// The gateway answered with one of the protocol's errors.
    Refused {
        /// The HTTP status (0 for a WebSocket `error` frame).
        status: u16,
        /// The stable error code (`bad_topic`, `unauthorized`, …).
        code: String,
        /// The gateway's explanation.
        message: String,
    },
    /// Anything else: an answer that is not the protocol's, a file that cannot be written.
    Failed(String),
    /// Stdout was closed (`sub … | head`): a normal end, nothing to report.
    OutputClosed,
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Usage(_) => ExitCode::Usage,
            CliError::CannotConnect(_) => ExitCode::CannotConnect,
            CliError::Refused {
                status: 401 | 403, ..
            } => ExitCode::NotAllowed,
            CliError::Refused { .. } | CliError::Failed(_) => ExitCode::Failed,
            CliError::OutputClosed => ExitCode::Ok,
        }
    }

    /// Whether trying again later may succeed: the gateway could not be reached, or it said it
    /// was busy, shutting down or without its broker (a 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            CliError::CannotConnect(_) => true,
            CliError::Refused { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// A stdout write error: a closed pipe ends the command quietly, anything else fails it.
    pub fn from_output(error: std::io::Error) -> CliError {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            CliError::OutputClosed
        } else {
            CliError::Failed(format!("cannot write to stdout: {error}"))
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(message) | CliError::Failed(message) => f.write_str(message),
            CliError::CannotConnect(message) => write!(f, "cannot connect: {message}"),
            CliError::Refused {
                status,
                code,
                message,
            } => {
                let hint = match status {
                    401 => " (give a token with --token or SWITCHBOARD_TOKEN)",
                    403 if code == "forbidden" => " (the token does not allow this)",
                    _ => "",
                };
                if *status == 0 {
                    write!(f, "the gateway refused: {code}: {message}{hint}")
                } else {
                    write!(f, "the gateway refused: {status} {code}: {message}{hint}")
                }
            }
            CliError::OutputClosed => f.write_str("stdout was closed"),
        }
    }
}

impl std::error::Error for CliError {}

/// Prints `error` on stderr (unless there is nothing to say) and returns its exit code.
pub fn report(error: &CliError) -> std::process::ExitCode {
    if !matches!(error, CliError::OutputClosed) {
        eprintln!("switchboard: {error}");
    }
    error.exit_code().into()
}

/// Runs `command` on a single-threaded runtime (a client needs no more), stopping it on SIGINT
/// or SIGTERM, and turns its result into the exit code.
pub fn run<F>(command: F) -> std::process::ExitCode
where
    F: Future<Output = Result<(), CliError>>,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return report(&CliError::Failed(format!("cannot start the runtime: {e}"))),
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = command => outcome,
            () = crate::shutdown::signal() => Ok(()),
        }
    });
    // Not waiting for a read of stdin that may never end.
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::Ok.into(),
        Err(error) => report(&error),
    }
}
