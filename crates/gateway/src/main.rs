//! The `switchboard` command.

use std::time::Duration;

use std::io::Write;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use switchboard::logging::LogSink;
use switchboard::{Config, cli};
use tokio::net::TcpListener;

/// jemalloc rather than glibc's malloc: its per-thread caches keep up with requests that live
/// across a commit and are freed in bursts, where glibc's (seven blocks a size) fall back to
/// its slow paths; and it holds less per idle connection (bench/README.md, *Allocator*).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Log lines waiting to be written, in bytes, before new ones are dropped: room for bursts
/// while the output is slow.
const LOG_QUEUE_BYTES: usize = 256 * 1024;

/// How long the last log lines get to be written when the gateway exits.
const LOG_FLUSH_LIMIT: Duration = Duration::from_secs(1);

/// A real-time gateway: one topic hub over WebSocket, Server-Sent Events and long-poll.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the gateway (and the demo page at /).
    Serve(Config),
    /// Publish a message, or one per line of stdin, and print each id.
    Pub(cli::publish::PublishArgs),
    /// Follow topics: one JSON envelope per line, reconnecting and resuming by itself.
    Sub(cli::subscribe::SubscribeArgs),
    /// List topics from the admin API.
    Topics(cli::topics::TopicsArgs),
    /// The busiest topics, refreshed every second.
    Top(cli::topics::TopArgs),
    /// Check a configuration and print every setting, its value and where it came from.
    CheckConfig(Config),
}

fn main() -> std::process::ExitCode {
    let matches = Cli::command().get_matches();
    let Cli { command } = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let Some((_, command_matches)) = matches.subcommand() else {
        unreachable!("clap requires a subcommand");
    };
    match command {
        Command::Serve(_) => serve_command(command_matches),
        Command::Pub(args) => cli::run(cli::publish::run(args)),
        Command::Sub(args) => cli::run(cli::subscribe::run(args)),
        Command::Topics(args) => cli::run(cli::topics::topics(args)),
        Command::Top(args) => cli::run(cli::topics::top(args)),
        Command::CheckConfig(_) => match cli::check::run(command_matches) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(error) => cli::report(&error),
        },
    }
}

/// `switchboard serve`.
fn serve_command(serve_matches: &clap::ArgMatches) -> std::process::ExitCode {
    let config = match Config::load(serve_matches) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("switchboard: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // Logs go through a queue to a thread of their own, so that a stderr that is full or
    // closed cannot stall or crash the gateway (see `switchboard::logging`).
    let log = match LogSink::start(std::io::stderr(), LOG_QUEUE_BYTES) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("switchboard: cannot start the log writer: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    switchboard::logging::init(config.log_format, log.clone());
    let exit = match tokio::runtime::Runtime::new() {
        Ok(runtime) => match runtime.block_on(serve(config)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                log.push(format!("switchboard: {e}\n").as_bytes());
                std::process::ExitCode::FAILURE
            }
        },
        Err(e) => {
            log.push(format!("switchboard: cannot start the runtime: {e}\n").as_bytes());
            std::process::ExitCode::FAILURE
        }
    };
    log.flush(LOG_FLUSH_LIMIT);
    exit
}

async fn serve(config: Config) -> std::io::Result<()> {
    let listener = TcpListener::bind(config.listen).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.listen))
    })?;
    let admin = match config.admin_listen {
        Some(address) => Some(switchboard::server::bind_admin(address).await?),
        None => None,
    };
    // One line on stdout, for people and for scripts that started it on port 0.
    // Written, not printed: a closed stdout must not stop the gateway.
    let _ = writeln!(
        std::io::stdout(),
        "switchboard listening on http://{}",
        listener.local_addr()?
    );
    if let Some(admin) = &admin {
        let _ = writeln!(
            std::io::stdout(),
            "switchboard admin listening on http://{}",
            admin.local_addr()?
        );
    }
    switchboard::server::run_with_admin(listener, admin, config, switchboard::shutdown::signal())
        .await
}
