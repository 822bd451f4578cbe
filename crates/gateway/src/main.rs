//! The `switchboard` command.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use switchboard::Config;
use tokio::net::TcpListener;

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
}

fn main() -> std::process::ExitCode {
    let matches = Cli::command().get_matches();
    let Cli {
        command: Command::Serve(_),
    } = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let Some(("serve", serve_matches)) = matches.subcommand() else {
        unreachable!("serve is the only subcommand");
    };
    let config = match Config::load(serve_matches) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("switchboard: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("switchboard: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> std::io::Result<()> {
    let listener = TcpListener::bind(config.listen).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.listen))
    })?;
    // One line on stdout, for people and for scripts that started it on port 0.
    println!("switchboard listening on http://{}", listener.local_addr()?);
    switchboard::server::run(listener, config, switchboard::shutdown::signal()).await
}
