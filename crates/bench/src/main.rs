//! `switchboard-bench`: drives switchboard (and, with `--compare`, Nchan) with real WebSocket,
//! SSE and long-poll subscribers and HTTP publishers, and reports delivered messages/s, server
//! CPU per delivered message, publish→deliver latency, lost/duplicated/out-of-order deliveries
//! and server memory per idle connection. `bench/run.sh` is the usual way in.
//!
//! The whole generator is one single-threaded tokio runtime: `bench/run.sh` pins it to one
//! core and each server to another (every node and Redis of a multi-node workload to that
//! same one), so the two never compete for a CPU and the generator's own CPU use is reported
//! to show it was not the bottleneck.
//!
//! This file is the command line. The rest, in the order a run uses it: `plan` (the
//! workloads), `suite` (runs them and writes the results), `server` (starts each server
//! fresh), `workload` (one run: connect, warm up, publish, drain, measure), `client` (the
//! subscribers and publishers) over `rawhttp` (HTTP/1.1 and WebSocket framing) and `payload`
//! (the message and how it is found again), `stats` (per-run counters and latency),
//! `procfs` (CPU and memory from `/proc`), `redis` (the multi-node workloads' `redis-server`
//! and its counters), `report` (tables, targets, chart) and `error`.

mod client;
mod error;
mod floor;
mod payload;
mod plan;
mod procfs;
mod rawhttp;
mod redis;
mod report;
mod server;
mod stats;
mod suite;
mod workload;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use error::{Error, Result};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Load generator and benchmark for switchboard (vs Nchan)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the workloads, each against a freshly started server, and write the results.
    Suite(Box<SuiteArgs>),
    /// Re-render the table and chart from a results JSON file.
    Report {
        /// Results file written by `suite`.
        json: PathBuf,
    },
    /// The floor: a minimal fan-out server the suite measures beside the others (see
    /// `floor.rs`); prints `floor listening on http://ADDR`.
    Floor {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
    },
}

#[derive(Debug, clap::Args)]
struct SuiteArgs {
    /// Also run every workload against Nchan (nginx + libnginx-mod-nchan).
    #[arg(long)]
    compare: bool,
    /// Tiny run (seconds) that exercises every code path; fails on any switchboard error.
    #[arg(long)]
    smoke: bool,
    /// The switchboard binary.
    #[arg(long)]
    switchboard_bin: PathBuf,
    /// Extra argument for `switchboard serve` (repeatable).
    #[arg(long = "switchboard-arg", allow_hyphen_values = true)]
    switchboard_args: Vec<String>,
    /// Run switchboard under this command (split on spaces), e.g. a profiler:
    /// `--switchboard-wrap "valgrind --tool=massif"`. Figures are then not comparable.
    #[arg(long, default_value = "")]
    switchboard_wrap: String,
    /// Nchan configuration template (see the file's header).
    #[arg(long, default_value = "bench/nchan.conf")]
    nchan_conf: PathBuf,
    /// Nchan configuration template for nodes on Redis (multi-node workloads).
    #[arg(long, default_value = "bench/nchan-redis.conf")]
    nchan_redis_conf: PathBuf,
    /// The nginx binary.
    #[arg(long, default_value = "nginx")]
    nginx: String,
    /// The redis-server binary (multi-node workloads start one of their own per run).
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
    /// Directory for results (JSON, Markdown table, SVG chart).
    #[arg(long)]
    out: PathBuf,
    /// Name of the results files (default: `smoke`, `compare` or `switchboard`), so that a
    /// partial run (`--only`) can be kept beside the full one.
    #[arg(long)]
    results_name: Option<String>,
    /// Only these workloads (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Seconds of publishing per flow workload.
    #[arg(long)]
    duration: Option<f64>,
    /// Core the servers are pinned to; the generator should be pinned elsewhere by the caller.
    #[arg(long, default_value_t = 0)]
    server_core: u32,
    /// Do not pin servers (e.g. on a one-core machine).
    #[arg(long)]
    no_pin: bool,
    /// Size of each published payload in bytes.
    #[arg(long, default_value_t = 128)]
    payload_bytes: usize,
    /// Runs of a workload disturbed by other processes' CPU use are repeated up to this
    /// many times in all (the least disturbed one is kept).
    #[arg(long, default_value_t = 3)]
    attempts: u32,
    /// Rounds of every workload on every server, interleaved; the median round is reported,
    /// with every round's figure (a round that failed a correctness check is kept instead).
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Do not measure the floor (the minimal fan-out server of `floor.rs`).
    #[arg(long)]
    no_floor: bool,
    /// Seconds to wait before each run for other processes to calm down (they use more than
    /// 10 % of a core); 0 measures at once, on a busy machine.
    #[arg(long, default_value_t = 120.0)]
    quiet_wait: f64,
    /// Measure Nchan only (to validate the instrument while switchboard is unavailable).
    #[arg(long, hide = true)]
    nchan_only: bool,
    /// Publish rate for `latency-ws-1k` (default: half of Nchan's saturation rate with
    /// `--compare`, else half of switchboard's).
    #[arg(long)]
    latency_rate: Option<f64>,
}

/// `report`: re-renders the table (to stdout) and the chart (next to the JSON file) from a
/// results file, re-evaluating the targets so a change to them applies to old runs too.
fn report_cmd(json: &Path) -> Result<()> {
    let text = std::fs::read_to_string(json).map_err(|e| Error::io(json.display(), e))?;
    let mut res: report::Results =
        serde_json::from_str(&text).map_err(|e| Error::json(json.display(), e))?;
    if res.mode == "compare" {
        res.targets = report::targets(&report::rows(&res.runs));
    }
    print!("{}", report::markdown(&res));
    let svg = json.with_extension("svg");
    std::fs::write(&svg, report::svg(&res)).map_err(|e| Error::io(svg.display(), e))?;
    println!("chart: {}", svg.display());
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchboard-bench: {}", Error::io("runtime", e));
            std::process::exit(2);
        }
    };
    let result = match cli.cmd {
        Cmd::Suite(a) => tokio::task::LocalSet::new().block_on(&rt, suite::suite(*a)),
        Cmd::Report { json } => report_cmd(&json).map(|()| true),
        Cmd::Floor { listen } => tokio::task::LocalSet::new()
            .block_on(&rt, floor::serve(listen))
            .map(|()| true),
    };
    let code = match result {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("switchboard-bench: {e}");
            2
        }
    };
    std::process::exit(code);
}
