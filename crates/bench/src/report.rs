//! Turning runs into the side-by-side tables, the target verdicts and the SVG chart.
//!
//! The same functions render a fresh run (`suite`) and an old results file (`report`), so
//! what is published in bench/README.md can always be re-derived from the JSON.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::plan::single_node_basis;
use crate::redis::script_calls;
use crate::workload::{RunResult, Step};

/// The results file: everything needed to re-render the report later (`report` subcommand).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Results {
    /// When the suite started (UTC), as printed.
    pub(crate) generated: String,
    /// `switchboard`, `compare` or `smoke`: also the files' name.
    pub(crate) mode: String,
    /// `procfs::machine()`: numbers are never quoted without the machine.
    pub(crate) machine: serde_json::Value,
    /// Generator settings and the workloads' specs.
    pub(crate) settings: serde_json::Value,
    /// One `RunResult` per run, kept as JSON so files from older versions still load.
    pub(crate) runs: Vec<serde_json::Value>,
    /// Evaluated in `compare` mode only.
    pub(crate) targets: Vec<Target>,
}

/// One target of the issue, evaluated on this run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Target {
    pub(crate) name: String,
    /// The workload it is about (empty in files from before this field).
    #[serde(default)]
    pub(crate) workload: String,
    /// Switchboard's figure, and the one it is compared with: Nchan's (its best variant
    /// unless the target names one), or switchboard's own on one node; `None` when that run
    /// was not measured or failed.
    pub(crate) switchboard: Option<f64>,
    #[serde(alias = "nchan")]
    pub(crate) against: Option<f64>,
    /// switchboard / against.
    pub(crate) ratio: Option<f64>,
    /// The goal as stated in the report, e.g. `≤ 0.5× Nchan`.
    pub(crate) goal: String,
    /// `None` when there is nothing to compare.
    pub(crate) met: Option<bool>,
}

/// The runs of a results file as `RunResult`s (fields an older file lacks take defaults; a
/// run that cannot be read at all is left out rather than failing the report).
pub(crate) fn rows(runs: &[serde_json::Value]) -> Vec<RunResult> {
    runs.iter()
        .filter_map(|v| serde_json::from_value(v.clone()).ok())
        .collect()
}

/// A run as it is stored in the results file.
pub(crate) fn to_json(r: &RunResult) -> serde_json::Value {
    serde_json::to_value(r).unwrap_or_default()
}

fn find<'a>(rows: &'a [RunResult], server: &str, workload: &str) -> Vec<&'a RunResult> {
    rows.iter()
        .filter(|r| r.server == server && r.workload == workload)
        .collect()
}

/// Nchan's best figure for a workload (it may have run in several variants, e.g. long-poll
/// with and without multipart batching): comparisons are against Nchan at its best.
fn best<'a>(
    rows: &'a [RunResult],
    server: &str,
    workload: &str,
    key: fn(&RunResult) -> f64,
    lower: bool,
) -> Option<&'a RunResult> {
    find(rows, server, workload)
        .into_iter()
        .filter(|r| r.failure.is_none() && key(r) > 0.0)
        .min_by(|a, b| {
            let (x, y) = (key(a), key(b));
            let o = x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal);
            if lower { o } else { o.reverse() }
        })
}

/// The metrics the report compares.
fn cpu(r: &RunResult) -> f64 {
    r.cpu_us_per_msg
}

fn rate(r: &RunResult) -> f64 {
    r.delivered_per_s
}

fn mem(r: &RunResult) -> f64 {
    r.rss_per_conn_bytes
}

fn p99(r: &RunResult) -> f64 {
    r.lat_p99_us as f64
}

/// How switchboard's figure must compare with the other one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// At most `ratio` × the other (lower is better: CPU, memory, latency).
    AtMost,
    /// Strictly below `ratio` × the other.
    Below,
    /// At least `ratio` × the other (higher is better: throughput).
    AtLeast,
}

/// What switchboard's figure is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Basis {
    /// Nchan's on the same workload.
    Nchan,
    /// Switchboard's own on the single-node workload a multi-node one is compared with
    /// (`plan::single_node_basis`).
    OneNode,
    /// The floor's (`floor.rs`) on the same workload.
    Floor,
}

/// One target of the issue: switchboard's figure for a workload against Nchan's, or against
/// its own on one node.
struct Goal {
    name: &'static str,
    /// `workload/transport` picks one Nchan variant; a bare workload takes Nchan's best.
    workload: &'static str,
    key: fn(&RunResult) -> f64,
    op: Op,
    ratio: f64,
    basis: Basis,
    /// Switchboard must also have lost nothing in the workload.
    lossless: bool,
}

/// The issue's targets, in report order.
const GOALS: [Goal; 17] = [
    Goal::new(
        "WS fan-out 1k: CPU µs per delivered msg",
        "ws-fanout-1k",
        cpu,
        0.5,
    ),
    Goal::new(
        "WS fan-out 5k: CPU µs per delivered msg",
        "ws-fanout-5k",
        cpu,
        0.33,
    ),
    Goal::new(
        "SSE fan-out 1k: CPU µs per delivered msg",
        "sse-fanout-1k",
        cpu,
        0.5,
    ),
    Goal::new(
        "SSE fan-out 5k: CPU µs per delivered msg",
        "sse-fanout-5k",
        cpu,
        0.5,
    ),
    Goal::new(
        "Long-poll 1k: delivered msgs/s (Nchan: one message per reply, its default)",
        "longpoll-1k/poll",
        rate,
        10.0,
    )
    .at_least_without_loss(),
    Goal::new(
        "Long-poll 1k: delivered msgs/s (Nchan: multipart/mixed batching on)",
        "longpoll-1k/poll-multipart",
        rate,
        10.0,
    )
    .at_least_without_loss(),
    Goal::new(
        "Idle WS: server RSS bytes per connection",
        "idle-ws-10k",
        mem,
        0.5,
    ),
    Goal::new(
        "Idle SSE: server RSS bytes per connection",
        "idle-sse-10k",
        mem,
        0.5,
    ),
    Goal::new(
        "p99 µs at half Nchan's saturation (WS 1k)",
        "latency-ws-1k",
        p99,
        1.0,
    ),
    Goal::new(
        "Cross-node WS fan-out 1k (3 nodes + Redis): CPU µs per delivered msg",
        "nodes-ws-fanout-1k",
        cpu,
        1.5,
    )
    .against_one_node(),
    Goal::new(
        "Cross-node WS fan-out 1k: CPU µs per delivered msg, vs Nchan on Redis",
        "nodes-ws-fanout-1k",
        cpu,
        1.0,
    )
    .below(),
    Goal::new(
        "Cross-node SSE fan-out 1k (3 nodes + Redis): CPU µs per delivered msg",
        "nodes-sse-fanout-1k",
        cpu,
        1.5,
    )
    .against_one_node(),
    Goal::new(
        "Cross-node SSE fan-out 1k: CPU µs per delivered msg, vs Nchan on Redis",
        "nodes-sse-fanout-1k",
        cpu,
        1.0,
    )
    .below(),
    Goal::new("Rooms 10k: CPU µs per delivered msg", "rooms-10k", cpu, 0.7),
    Goal::new(
        "Rooms 10k: CPU µs per delivered msg, vs the floor",
        "rooms-10k",
        cpu,
        1.5,
    )
    .against_floor(),
    Goal::new(
        "WS fan-out 1k: CPU µs per delivered msg, vs the floor",
        "ws-fanout-1k",
        cpu,
        1.3,
    )
    .against_floor(),
    Goal::new(
        "SSE fan-out 1k: CPU µs per delivered msg, vs the floor",
        "sse-fanout-1k",
        cpu,
        1.3,
    )
    .against_floor(),
];

impl Goal {
    /// Switchboard's `key` for `workload` at most `ratio` × Nchan's (CPU, memory, latency).
    const fn new(
        name: &'static str,
        workload: &'static str,
        key: fn(&RunResult) -> f64,
        ratio: f64,
    ) -> Self {
        Self {
            name,
            workload,
            key,
            op: Op::AtMost,
            ratio,
            basis: Basis::Nchan,
            lossless: false,
        }
    }

    /// At least `ratio` × Nchan's instead (throughput), and switchboard must lose nothing.
    const fn at_least_without_loss(self) -> Self {
        Self {
            op: Op::AtLeast,
            lossless: true,
            ..self
        }
    }

    /// Strictly below `ratio` × the other figure.
    const fn below(self) -> Self {
        Self {
            op: Op::Below,
            ..self
        }
    }

    /// Against switchboard's own figure on the single-node workload instead of Nchan's.
    const fn against_one_node(self) -> Self {
        Self {
            basis: Basis::OneNode,
            ..self
        }
    }

    /// Against the floor's figure on the same workload instead of Nchan's.
    const fn against_floor(self) -> Self {
        Self {
            basis: Basis::Floor,
            ..self
        }
    }

    /// Lower figures are better.
    fn lower(&self) -> bool {
        self.op != Op::AtLeast
    }

    /// The goal as the report states it, e.g. `≤ 0.5× Nchan`.
    fn text(&self) -> String {
        let op = match self.op {
            Op::AtMost => "≤",
            Op::Below => "<",
            Op::AtLeast => "≥",
        };
        let against = match self.basis {
            Basis::Nchan => "Nchan".to_owned(),
            Basis::Floor => "floor".to_owned(),
            Basis::OneNode => format!(
                "one node ({})",
                single_node_basis(self.workload).unwrap_or("?")
            ),
        };
        let loss = if self.lossless { ", zero loss" } else { "" };
        format!("{op} {}× {against}{loss}", self.ratio)
    }

    /// The figure switchboard's is compared with.
    fn against(&self, rows: &[RunResult], workload: &str, variant: &str) -> Option<f64> {
        let (key, lower) = (self.key, self.lower());
        match self.basis {
            Basis::OneNode => single_node_basis(workload)
                .and_then(|w| best(rows, "switchboard", w, key, lower))
                .map(key),
            Basis::Floor => best(rows, "floor", workload, key, lower).map(key),
            Basis::Nchan if variant.is_empty() => {
                best(rows, "nchan", workload, key, lower).map(key)
            }
            Basis::Nchan => find(rows, "nchan", workload)
                .into_iter()
                .find(|r| r.transport == variant && r.failure.is_none())
                .map(key),
        }
    }

    fn evaluate(&self, rows: &[RunResult]) -> Target {
        let (workload, variant) = self.workload.split_once('/').unwrap_or((self.workload, ""));
        let sb = best(rows, "switchboard", workload, self.key, self.lower()).map(self.key);
        let against = self.against(rows, workload, variant);
        let ratio = match (sb, against) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let mut met = ratio.map(|r| match self.op {
            Op::AtMost => r <= self.ratio,
            Op::Below => r < self.ratio,
            Op::AtLeast => r >= self.ratio,
        });
        if self.lossless {
            let lossless = find(rows, "switchboard", workload)
                .iter()
                .all(|r| r.lost == 0 && r.delivered > 0);
            met = met.map(|m| m && lossless).or(Some(lossless).filter(|l| !l));
        }
        Target {
            name: self.name.into(),
            workload: workload.into(),
            switchboard: sb,
            against,
            ratio,
            goal: self.text(),
            met,
        }
    }
}

/// Evaluates the issue's targets.
pub(crate) fn targets(rows: &[RunResult]) -> Vec<Target> {
    GOALS.iter().map(|g| g.evaluate(rows)).collect()
}

/// Switchboard must deliver every message exactly once, in order, wherever it was not
/// deliberately overloaded (saturation steps past the knee may drop slow consumers by design).
pub(crate) fn correctness_failures(rows: &[RunResult]) -> Vec<String> {
    rows.iter()
        .filter(|r| r.server == "switchboard" && r.kind != "saturation")
        .filter_map(|r| {
            let mut why = Vec::new();
            if let Some(f) = &r.failure {
                why.push(f.clone());
            }
            if r.connect_failed > 0 {
                why.push(format!(
                    "{} subscribers failed to connect",
                    r.connect_failed
                ));
            }
            if r.kind == "flow" || r.kind == "throughput" {
                if r.delivered == 0 {
                    why.push("nothing delivered".into());
                }
                if r.lost + r.duplicated + r.out_of_order > 0 {
                    why.push(format!(
                        "lost {} duplicated {} out of order {}",
                        r.lost, r.duplicated, r.out_of_order
                    ));
                }
                if r.dropped > 0 {
                    why.push(format!("{} subscribers dropped", r.dropped));
                }
            }
            (!why.is_empty()).then(|| format!("{}: {}", r.workload, why.join("; ")))
        })
        .collect()
}

fn ms(us: u64) -> String {
    let v = us as f64 / 1000.0;
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn num(v: f64) -> String {
    if v >= 100_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 10_000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn label(r: &RunResult) -> String {
    match r.transport.as_str() {
        "poll-multipart" => format!("{} (multipart)", r.server),
        _ => r.server.clone(),
    }
}

/// Markdown: one line per server per workload, then memory, several nodes, saturation, cost
/// against load and targets.
pub(crate) fn markdown(res: &Results) -> String {
    let rows = rows(&res.runs);
    let m = &res.machine;
    let mut s = String::new();
    let pinned = if rows.iter().any(|r| r.nodes > 1) {
        "Server pinned to core 0 (several nodes: every node and Redis)"
    } else {
        "Server pinned to core 0"
    };
    let rounds = match res.settings["repeat"].as_u64() {
        Some(n) if n > 1 => {
            format!(" Each figure is the median of {n} rounds (their range in parentheses).")
        }
        _ => String::new(),
    };
    let _ = writeln!(
        s,
        "Machine: {} cores, {}, kernel {}, {} GiB. {pinned}, generator to core 1. {}.{rounds}\n",
        m["cores"],
        m["model"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
        m["mem_gib"],
        res.generated
    );
    flow_table(&mut s, &rows);
    idle_table(&mut s, &rows);
    nodes_table(&mut s, &rows);
    publish_table(&mut s, &rows);
    redis_calls_table(&mut s, &rows);
    let sat: Vec<&RunResult> = rows.iter().filter(|r| r.kind == "saturation").collect();
    saturation_table(&mut s, &sat);
    load_table(&mut s, &sat);
    targets_table(&mut s, &res.targets, &rows);
    s
}

/// A table's header row and separator line.
fn header(s: &mut String, columns: &[&str]) {
    let _ = writeln!(s, "| {} |", columns.join(" | "));
    let _ = writeln!(s, "|{}", "---|".repeat(columns.len()));
}

/// `0.50×` for a switchboard row: its figure over Nchan's best for the same workload.
fn vs_nchan(rows: &[RunResult], r: &RunResult, key: fn(&RunResult) -> f64) -> String {
    let nchan = best(rows, "nchan", &r.workload, key, true).map(key);
    match (r.server.as_str(), nchan) {
        ("switchboard", Some(n)) if n > 0.0 => format!("{:.2}×", key(r) / n),
        _ => String::new(),
    }
}

/// `1.20×` for a switchboard or Nchan row: its figure over the floor's for the same workload.
fn vs_floor(rows: &[RunResult], r: &RunResult, key: fn(&RunResult) -> f64) -> String {
    let floor = best(rows, "floor", &r.workload, key, true).map(key);
    match (r.server.as_str(), floor) {
        ("floor", _) | (_, None) => String::new(),
        (_, Some(f)) if f > 0.0 && key(r) > 0.0 => format!("{:.2}×", key(r) / f),
        _ => String::new(),
    }
}

/// Flow workloads on one node, in the order they ran, one line per server (and Nchan variant).
fn flow_table(s: &mut String, rows: &[RunResult]) {
    header(
        s,
        &[
            "workload",
            "server",
            "subs / topics",
            "publish msg/s",
            "delivered msg/s",
            "server CPU µs/msg",
            "vs Nchan",
            "vs floor",
            "p50 / p99 / max ms",
            "lost / dup / ooo",
            "gen CPU",
        ],
    );
    let mut workloads: Vec<&str> = Vec::new();
    for r in rows {
        if !workloads.contains(&r.workload.as_str()) {
            workloads.push(&r.workload);
        }
    }
    for w in workloads {
        let one_node = |r: &&RunResult| r.workload == w && r.kind == "flow" && r.nodes <= 1;
        for r in rows.iter().filter(one_node) {
            let fail = failure(r);
            let _ = writeln!(
                s,
                "| {} | {} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {:.0}%{} |",
                w,
                label(r),
                r.subscribers,
                r.topics,
                num(r.publish_rate),
                num(r.delivered_per_s),
                spread(us2(r.cpu_us_per_msg), r, us2),
                vs_nchan(rows, r, cpu),
                vs_floor(rows, r, cpu),
                latency(r),
                correctness(r),
                r.generator_cpu_util * 100.0,
                fail
            );
        }
    }
}

/// ` ⚠ why` for a run that failed, else nothing.
fn failure(r: &RunResult) -> String {
    r.failure
        .as_deref()
        .map(|f| format!(" ⚠ {f}"))
        .unwrap_or_default()
}

/// `p50 / p99 / max` latency in ms.
fn latency(r: &RunResult) -> String {
    format!(
        "{} / {} / {}",
        ms(r.lat_p50_us),
        ms(r.lat_p99_us),
        ms(r.lat_max_us)
    )
}

/// `lost / dup / ooo`.
fn correctness(r: &RunResult) -> String {
    format!("{} / {} / {}", r.lost, r.duplicated, r.out_of_order)
}

/// `shown` (a run's figure), then the range of its rounds' figures when it is the median of
/// several (`--repeat`), each written with `fmt`.
fn spread(shown: String, r: &RunResult, fmt: fn(f64) -> String) -> String {
    if r.rounds.len() < 2 {
        return shown;
    }
    let lo = r.rounds.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = r.rounds.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{shown} ({}–{})", fmt(lo), fmt(hi))
}

/// A CPU figure in µs, two decimals.
fn us2(v: f64) -> String {
    format!("{v:.2}")
}

/// `x` per successful publish with two decimals, or `–`.
fn per_publish(r: &RunResult, x: f64) -> String {
    r.per_publish(x).map_or("–".into(), |v| format!("{v:.2}"))
}

/// The distinct workloads of `runs`, in the order they ran.
fn workloads_of<'a>(runs: &[&'a RunResult]) -> Vec<&'a str> {
    let mut names: Vec<&str> = Vec::new();
    for r in runs {
        if !names.contains(&r.workload.as_str()) {
            names.push(&r.workload);
        }
    }
    names
}

/// Multi-node fan-outs, each after the single-node workload it is compared with: CPU per
/// delivered message over every node and Redis, Redis's own share, and the ratios.
fn nodes_table(s: &mut String, rows: &[RunResult]) {
    let multi: Vec<&RunResult> = rows
        .iter()
        .filter(|r| r.nodes > 1 && r.kind == "flow")
        .collect();
    if multi.is_empty() {
        return;
    }
    s.push('\n');
    header(
        s,
        &[
            "several nodes on Redis",
            "server",
            "nodes",
            "subs / topics",
            "delivered msg/s",
            "server CPU µs/msg",
            "of which Redis",
            "vs one node",
            "vs Nchan",
            "p50 / p99 / max ms",
            "lost / dup / ooo",
            "Redis commands / publish",
            "gen CPU",
        ],
    );
    for w in workloads_of(&multi) {
        let basis = single_node_basis(w);
        let single = rows
            .iter()
            // The floor runs no multi-node workload: nothing to compare its row with here.
            .filter(|r| {
                r.kind == "flow" && r.server != "floor" && Some(r.workload.as_str()) == basis
            });
        for r in single.chain(multi.iter().copied().filter(|r| r.workload == w)) {
            let multi_node = r.nodes > 1;
            let vs_one = basis
                .filter(|_| multi_node)
                .and_then(|b| best(rows, &r.server, b, cpu, true))
                .filter(|one| one.cpu_us_per_msg > 0.0)
                .map_or(String::new(), |one| {
                    format!("{:.2}×", r.cpu_us_per_msg / one.cpu_us_per_msg)
                });
            let (redis_cpu, commands) = if multi_node {
                (
                    format!("{:.2}", r.redis_cpu_us_per_msg),
                    per_publish(r, r.redis_commands as f64),
                )
            } else {
                (String::new(), String::new())
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} / {} | {} | {} | {redis_cpu} | {vs_one} | {} | {} | {} | {commands} | {:.0}%{} |",
                r.workload,
                label(r),
                r.nodes.max(1),
                r.subscribers,
                r.topics,
                num(r.delivered_per_s),
                spread(us2(r.cpu_us_per_msg), r, us2),
                vs_nchan(rows, r, cpu),
                latency(r),
                correctness(r),
                r.generator_cpu_util * 100.0,
                failure(r)
            );
        }
    }
}

/// Publishing as fast as one node answers: publishes/s, CPU per publish on the publishing
/// node, on Redis and over everything, and Redis's work per publish.
fn publish_table(s: &mut String, rows: &[RunResult]) {
    let runs: Vec<&RunResult> = rows.iter().filter(|r| r.kind == "throughput").collect();
    if runs.is_empty() {
        return;
    }
    s.push('\n');
    header(
        s,
        &[
            "publish throughput",
            "server",
            "nodes",
            "subs / topics",
            "publishes/s (node 0)",
            "delivered msg/s",
            "CPU µs / publish: node 0 / Redis / all",
            "Redis / publish: scripts / commands / socket reads",
            "p50 / p99 / max ms",
            "lost / dup / ooo",
            "gen CPU",
        ],
    );
    for r in runs {
        let us = |cpu_s: f64| per_publish(r, cpu_s * 1e6);
        let node0 = r.node_cpu_s.first().copied().unwrap_or(r.server_cpu_s);
        let (redis_cpu, redis_work) = if r.nodes > 1 {
            let work = [
                script_calls(&r.redis_calls),
                r.redis_commands,
                r.redis_reads,
            ]
            .map(|n| per_publish(r, n as f64))
            .join(" / ");
            (us(r.redis_cpu_s), work)
        } else {
            ("–".into(), "–".into())
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} / {} | {} | {} | {} / {redis_cpu} / {} | {redis_work} | {} | {} | {:.0}%{} |",
            r.workload,
            r.server,
            r.nodes.max(1),
            r.subscribers,
            r.topics,
            spread(num(r.publish_rate), r, num),
            num(r.delivered_per_s),
            us(node0),
            us(r.server_cpu_s),
            latency(r),
            correctness(r),
            r.generator_cpu_util * 100.0,
            failure(r)
        );
    }
}

/// Redis's calls per publish by command, for every multi-node run (the commands scripts call
/// included; those under 0.01 per publish left out).
fn redis_calls_table(s: &mut String, rows: &[RunResult]) {
    let runs: Vec<&RunResult> = rows
        .iter()
        .filter(|r| r.nodes > 1 && !r.redis_calls.is_empty() && r.publishes_ok() > 0)
        .collect();
    if runs.is_empty() {
        return;
    }
    s.push('\n');
    header(
        s,
        &[
            "Redis calls per publish",
            "server",
            "by command (scripts' calls included)",
        ],
    );
    for r in runs {
        let mut calls: Vec<(&String, &u64)> = r.redis_calls.iter().collect();
        calls.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let list: Vec<String> = calls
            .into_iter()
            .filter_map(|(name, &n)| {
                let per = r.per_publish(n as f64)?;
                (per >= 0.005).then(|| format!("{name} {per:.2}"))
            })
            .collect();
        let _ = writeln!(s, "| {} | {} | {} |", r.workload, r.server, list.join(", "));
    }
}

/// Server memory per idle connection.
fn idle_table(s: &mut String, rows: &[RunResult]) {
    let idle: Vec<&RunResult> = rows.iter().filter(|r| r.kind == "idle").collect();
    if idle.is_empty() {
        return;
    }
    s.push('\n');
    header(
        s,
        &[
            "idle connections",
            "server",
            "connections",
            "server RSS per connection",
            "vs Nchan",
            "vs floor",
        ],
    );
    for r in idle {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1} KiB | {} | {} |",
            r.workload,
            r.server,
            r.connected,
            r.rss_per_conn_bytes / 1024.0,
            vs_nchan(rows, r, mem),
            vs_floor(rows, r, mem)
        );
    }
}

/// The highest rate each server kept up with.
fn saturation_table(s: &mut String, sat: &[&RunResult]) {
    if sat.is_empty() {
        return;
    }
    s.push('\n');
    header(
        s,
        &[
            "saturation",
            "server",
            "highest publish msg/s kept up",
            "delivered msg/s there",
            "p99 ms there",
            "gen CPU",
        ],
    );
    for r in sat {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.0}% |",
            r.workload,
            r.server,
            r.saturation_rate.map_or("none".into(), num),
            num(r.delivered_per_s),
            ms(r.lat_p99_us),
            r.generator_cpu_util * 100.0
        );
    }
}

/// CPU per message and p99 against load, from the saturation steps (least disturbed attempt
/// per rate): how each server's cost per message changes as writes coalesce.
fn load_table(s: &mut String, sat: &[&RunResult]) {
    let mut rates: Vec<f64> = sat
        .iter()
        .flat_map(|r| r.steps.iter().map(|st| st.rate))
        .collect();
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    rates.dedup();
    if rates.is_empty() {
        return;
    }
    let servers: Vec<&str> = ["switchboard", "nchan"]
        .into_iter()
        .filter(|sv| sat.iter().any(|r| r.server == *sv))
        .collect();
    let mut columns = vec!["publish msg/s (1,000 WS subs)".to_string()];
    for sv in &servers {
        columns.push(format!("{sv} CPU µs/msg"));
        columns.push(format!("{sv} p99 ms"));
    }
    s.push('\n');
    header(s, &columns.iter().map(String::as_str).collect::<Vec<_>>());
    for rate in rates {
        let _ = write!(s, "| {} |", num(rate));
        for sv in &servers {
            match least_disturbed_step(sat, sv, rate) {
                Some(st) => {
                    let flag = match (st.kept_up, st.generator_cpu_util > 0.9) {
                        (false, _) => " (fell behind)",
                        (true, true) => " (generator > 90%)",
                        _ => "",
                    };
                    let p99 = ms(st.lat_p99_us);
                    let _ = write!(s, " {:.2} | {p99}{flag} |", st.cpu_us_per_msg);
                }
                None => s.push_str(" – | – |"),
            }
        }
        s.push('\n');
    }
}

/// `server`'s saturation step at `rate` that other processes disturbed least.
fn least_disturbed_step<'a>(sat: &[&'a RunResult], server: &str, rate: f64) -> Option<&'a Step> {
    sat.iter()
        .filter(|r| r.server == server)
        .flat_map(|r| r.steps.iter())
        .filter(|st| st.rate == rate)
        .min_by(|a, b| {
            a.other_cpu_util
                .partial_cmp(&b.other_cpu_util)
                .unwrap_or(std::cmp::Ordering::Equal)
        })
}

/// The issue's targets and whether each was met; those about a workload that did not run (a
/// partial run, `--only`) are left out.
fn targets_table(s: &mut String, targets: &[Target], rows: &[RunResult]) {
    let measured: Vec<&Target> = targets
        .iter()
        .filter(|t| t.workload.is_empty() || rows.iter().any(|r| r.workload == t.workload))
        .collect();
    if measured.is_empty() {
        return;
    }
    s.push('\n');
    header(
        s,
        &[
            "target",
            "switchboard",
            "compared with",
            "ratio",
            "goal",
            "met",
        ],
    );
    for t in measured {
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {met} |",
            t.name,
            t.switchboard.map_or("–".into(), num),
            t.against.map_or("–".into(), num),
            t.ratio.map_or("–".into(), |r| format!("{r:.2}×")),
            t.goal,
        );
    }
}

/// The servers of the chart, in bar order, with their SVG class.
const CHART_SERVERS: [(&str, &str); 3] = [("switchboard", "sb"), ("nchan", "nc"), ("floor", "fl")];

/// One panel of the chart: a metric, one row per workload, a bar per server
/// ([`CHART_SERVERS`], `None` where that server did not run it).
struct Panel {
    title: &'static str,
    rows: Vec<(String, [Option<f64>; 3])>,
    fmt: fn(f64) -> String,
}

fn panel(
    rows: &[RunResult],
    title: &'static str,
    workloads: &[&str],
    key: fn(&RunResult) -> f64,
    lower: bool,
    fmt: fn(f64) -> String,
) -> Panel {
    Panel {
        title,
        rows: workloads
            .iter()
            .map(|w| {
                let of = |server| best(rows, server, w, key, lower).map(key);
                (
                    (*w).to_string(),
                    CHART_SERVERS.map(|(server, _)| of(server)),
                )
            })
            .filter(|(_, bars)| bars.iter().any(Option::is_some))
            .collect(),
        fmt,
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Chart geometry, in pixels: width, left margin (labels), bar height, gap between rows.
const SVG_W: f64 = 900.0;
const SVG_LEFT: f64 = 150.0;
const BAR_H: f64 = 14.0;
const BAR_GAP: f64 = 10.0;

/// Hand-written SVG (no plotting dependency): horizontal bars, each panel on its own scale.
pub(crate) fn svg(res: &Results) -> String {
    let rows = rows(&res.runs);
    let (body, height) = draw_panels(&panels(&rows));
    let m = &res.machine;
    let w = SVG_W;
    let y = height;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{y}" viewBox="0 0 {w} {y}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        "<style>.h{{font-weight:bold;font-size:13px}}.l{{text-anchor:end}}.v{{fill:#333}}.sb{{fill:#2b6cb0}}.nc{{fill:#dd8452}}.fl{{fill:#8c8c8c}}</style>"
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="#fff"/>"##);
    let _ = writeln!(
        s,
        r#"<text x="10" y="20" class="h">switchboard vs Nchan and the floor — {} cores, {}, kernel {} — {}</text>"#,
        m["cores"],
        esc(m["model"].as_str().unwrap_or("?")),
        esc(m["kernel"].as_str().unwrap_or("?")),
        esc(&res.generated)
    );
    let _ = writeln!(
        s,
        r#"<rect x="10" y="32" width="12" height="12" class="sb"/><text x="28" y="42">switchboard</text><rect x="120" y="32" width="12" height="12" class="nc"/><text x="138" y="42">Nchan (best variant)</text><rect x="290" y="32" width="12" height="12" class="fl"/><text x="308" y="42">floor (minimal fan-out server)</text>"#
    );
    s.push_str(&body);
    s.push_str("</svg>\n");
    s
}

/// The chart's panels: CPU per message, throughput, memory per connection, p99 latency.
fn panels(rows: &[RunResult]) -> [Panel; 4] {
    let flow = [
        "ws-fanout-1k",
        "ws-fanout-5k",
        "sse-fanout-1k",
        "sse-fanout-5k",
        "rooms-10k",
        "longpoll-1k",
        "latency-ws-1k",
        "nodes-ws-fanout-1k",
        "nodes-sse-fanout-1k",
    ];
    [
        panel(
            rows,
            "Server CPU per delivered message, µs (lower is better)",
            &flow,
            cpu,
            true,
            |v| format!("{v:.2} µs"),
        ),
        panel(
            rows,
            "Delivered messages per second (higher is better)",
            &["longpoll-1k", "saturation-ws-1k", "nodes-publish"],
            rate,
            false,
            |v| format!("{} /s", num(v)),
        ),
        panel(
            rows,
            "Server memory per idle connection, KiB (lower is better)",
            &["idle-ws-10k", "idle-sse-10k"],
            mem,
            true,
            |v| format!("{:.1} KiB", v / 1024.0),
        ),
        panel(
            rows,
            "p99 publish→deliver latency, ms (lower is better)",
            &[
                "latency-ws-1k",
                "ws-fanout-1k",
                "sse-fanout-1k",
                "rooms-10k",
                "nodes-ws-fanout-1k",
            ],
            p99,
            true,
            |v| format!("{} ms", ms(v as u64)),
        ),
    ]
}

/// Draws the panels that have data, top to bottom; returns the SVG elements and the height
/// they reach.
fn draw_panels(panels: &[Panel]) -> (String, f64) {
    let mut y = 60.0;
    let mut body = String::new();
    for p in panels.iter().filter(|p| !p.rows.is_empty()) {
        let _ = writeln!(
            body,
            r#"<text x="10" y="{y}" class="h">{}</text>"#,
            esc(p.title)
        );
        y += 10.0;
        let max = p
            .rows
            .iter()
            .flat_map(|(_, bars)| bars.map(|v| v.unwrap_or(0.0)))
            .fold(0.0_f64, f64::max)
            .max(1e-9);
        // Only the servers that ran some workload of the panel get a bar slot.
        let shown: Vec<usize> = (0..CHART_SERVERS.len())
            .filter(|&i| p.rows.iter().any(|(_, b)| b[i].is_some()))
            .collect();
        let slots = shown.len() as f64;
        for (name, bars) in &p.rows {
            // The label sits level with the middle of the row's bars.
            let _ = writeln!(
                body,
                r#"<text x="{}" y="{}" class="l">{}</text>"#,
                SVG_LEFT - 8.0,
                y + slots * (BAR_H + 2.0) / 2.0 + 3.0,
                esc(name)
            );
            for (slot, &i) in shown.iter().enumerate() {
                if let Some(v) = bars[i] {
                    let by = y + slot as f64 * (BAR_H + 2.0);
                    draw_bar(&mut body, by, v / max, CHART_SERVERS[i].1, &(p.fmt)(v));
                }
            }
            y += slots * (BAR_H + 2.0) - 2.0 + BAR_GAP;
        }
        y += 20.0;
    }
    (body, y)
}

/// One bar at height `by`, `share` of the plot's width, with its value written after it.
fn draw_bar(body: &mut String, by: f64, share: f64, class: &str, value: &str) {
    let (left, bar_h) = (SVG_LEFT, BAR_H);
    let plot_w = SVG_W - SVG_LEFT - 120.0;
    let bw = (share * plot_w).max(1.0);
    let _ = writeln!(
        body,
        r#"<rect x="{left}" y="{by}" width="{bw:.1}" height="{bar_h}" class="{class}"/>"#
    );
    let _ = writeln!(
        body,
        r#"<text x="{:.1}" y="{:.1}" class="v">{}</text>"#,
        left + bw + 4.0,
        by + bar_h - 3.0,
        esc(value)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(server: &str, workload: &str, kind: &str) -> RunResult {
        RunResult {
            server: server.into(),
            workload: workload.into(),
            kind: kind.into(),
            transport: "ws".into(),
            subscribers: 1000,
            topics: 1,
            ..RunResult::default()
        }
    }

    fn flow(server: &str, workload: &str, cpu_us: f64) -> RunResult {
        RunResult {
            publish_rate: 50.0,
            delivered_per_s: 49_950.0,
            cpu_us_per_msg: cpu_us,
            lat_p50_us: 5_420,
            lat_p99_us: 13_400,
            lat_max_us: 121_700,
            generator_cpu_util: 0.444,
            delivered: 1,
            ..run(server, workload, "flow")
        }
    }

    fn results(rows: &[RunResult], targets: Vec<Target>) -> Results {
        Results {
            generated: "2026-11-22 04:34:50 UTC".into(),
            mode: "compare".into(),
            machine: serde_json::json!({"cores": 2, "model": "CPU", "kernel": "6.1", "mem_gib": 23.5}),
            settings: serde_json::Value::Null,
            runs: rows.iter().map(to_json).collect(),
            targets,
        }
    }

    #[test]
    fn number_formats() {
        let got: Vec<String> = [123_456.0, 45_800.0, 999.6, 50.0, 9.984]
            .into_iter()
            .map(num)
            .collect();
        assert_eq!(got, ["123k", "45.8k", "1000", "50.0", "9.98"]);
        assert_eq!(
            [ms(212_000), ms(15_940), ms(5_420)],
            ["212", "15.9", "5.42"]
        );
    }

    #[test]
    fn markdown_tables() {
        let mut idle_sb = run("switchboard", "idle-ws-10k", "idle");
        idle_sb.rss_per_conn_bytes = 5200.0;
        idle_sb.connected = 10_000;
        let mut idle_nc = idle_sb.clone();
        idle_nc.server = "nchan".into();
        idle_nc.rss_per_conn_bytes = 10_400.0;
        let mut idle_floor = idle_sb.clone();
        idle_floor.server = "floor".into();
        idle_floor.rss_per_conn_bytes = 2_600.0;
        let step = |rate: f64, kept_up: bool| Step {
            rate,
            kept_up,
            cpu_us_per_msg: 10.0,
            lat_p99_us: 14_100,
            ..Step::default()
        };
        let mut sat_sb = run("switchboard", "saturation-ws-1k", "saturation");
        sat_sb.steps = vec![step(20.0, true), step(25.0, false)];
        sat_sb.saturation_rate = Some(20.0);
        let mut sat_nc = run("nchan", "saturation-ws-1k", "saturation");
        sat_nc.steps = vec![step(20.0, false)];
        let rows = [
            flow("switchboard", "ws-fanout-1k", 9.98),
            flow("nchan", "ws-fanout-1k", 4.99),
            flow("floor", "ws-fanout-1k", 3.992),
            idle_sb,
            idle_nc,
            idle_floor,
            sat_sb,
            sat_nc,
        ];
        let md = markdown(&results(&rows, targets(&rows)));
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(
            lines[0],
            "Machine: 2 cores, CPU, kernel 6.1, 23.5 GiB. Server pinned to core 0, generator to core 1. 2026-11-22 04:34:50 UTC."
        );
        assert_eq!(lines[3], "|---|---|---|---|---|---|---|---|---|---|---|");
        assert_eq!(
            lines[4],
            "| ws-fanout-1k | switchboard | 1000 / 1 | 50.0 | 50.0k | 9.98 | 2.00× | 2.50× | 5.42 / 13.4 / 122 | 0 / 0 / 0 | 44% |"
        );
        assert!(lines.contains(&"| ws-fanout-1k | nchan | 1000 / 1 | 50.0 | 50.0k | 4.99 |  | 1.25× | 5.42 / 13.4 / 122 | 0 / 0 / 0 | 44% |"));
        assert!(lines.contains(&"| ws-fanout-1k | floor | 1000 / 1 | 50.0 | 50.0k | 3.99 |  |  | 5.42 / 13.4 / 122 | 0 / 0 / 0 | 44% |"));
        assert!(lines.contains(&"| idle-ws-10k | switchboard | 10000 | 5.1 KiB | 0.50× | 2.00× |"));
        assert!(lines.contains(
            &"| WS fan-out 1k: CPU µs per delivered msg, vs the floor | 9.98 | 3.99 | 2.50× | ≤ 1.3× floor | **no** |"
        ));
        assert!(lines.contains(&"| saturation-ws-1k | nchan | none | 0.00 | 0.00 | 0% |"));
        assert!(lines.contains(
            &"| publish msg/s (1,000 WS subs) | switchboard CPU µs/msg | switchboard p99 ms | nchan CPU µs/msg | nchan p99 ms |"
        ));
        assert!(lines.contains(&"| 20.0 | 10.00 | 14.1 | 10.00 | 14.1 (fell behind) |"));
        assert!(lines.contains(&"| 25.0 | 10.00 | 14.1 (fell behind) | – | – |"));
        assert!(lines.contains(
            &"| WS fan-out 1k: CPU µs per delivered msg | 9.98 | 4.99 | 2.00× | ≤ 0.5× Nchan | **no** |"
        ));
        assert!(lines.contains(&"| Idle WS: server RSS bytes per connection | 5200 | 10.4k | 0.50× | ≤ 0.5× Nchan | yes |"));
        // Targets the run has no figure for (workloads not run) are left out.
        assert!(!md.contains("WS fan-out 5k"));
        assert!(md.ends_with("| 9.98 | 3.99 | 2.50× | ≤ 1.3× floor | **no** |\n"));
        assert!(!md.contains("several nodes"));
    }

    fn on_nodes(server: &str, workload: &str, cpu_us: f64) -> RunResult {
        let calls = [
            ("evalsha", 500),
            ("pexpire", 1000),
            ("publish", 500),
            ("ping", 1),
        ];
        RunResult {
            nodes: 3,
            published: 500,
            redis_cpu_us_per_msg: cpu_us / 10.0,
            redis_commands: 5000,
            redis_reads: 350,
            redis_calls: calls.map(|(c, n)| (c.to_owned(), n)).into(),
            ..flow(server, workload, cpu_us)
        }
    }

    #[test]
    fn multi_node_tables_and_targets() {
        let publish = RunResult {
            kind: "throughput".into(),
            rounds: vec![5000.0, 4500.0, 5600.0],
            topics: 100,
            subscribers: 100,
            published: 10_000,
            publish_rate: 5000.0,
            delivered_per_s: 5000.0,
            node_cpu_s: vec![1.0, 0.2, 0.2],
            redis_cpu_s: 0.5,
            server_cpu_s: 1.9,
            redis_commands: 100_000,
            redis_reads: 7000,
            redis_calls: [("evalsha", 10_000), ("publish", 10_000)]
                .map(|(c, n)| (c.to_owned(), n))
                .into(),
            ..on_nodes("switchboard", "nodes-publish", 0.0)
        };
        let rows = [
            flow("switchboard", "ws-fanout-1k", 10.0),
            flow("nchan", "ws-fanout-1k", 10.0),
            RunResult {
                rounds: vec![13.0, 12.5, 14.25],
                ..on_nodes("switchboard", "nodes-ws-fanout-1k", 13.0)
            },
            on_nodes("nchan", "nodes-ws-fanout-1k", 26.0),
            publish,
        ];
        let mut res = results(&rows, targets(&rows));
        res.settings = serde_json::json!({"repeat": 3});
        let md = markdown(&res);
        let lines: Vec<&str> = md.lines().collect();
        assert!(
            lines[0]
                .ends_with("Each figure is the median of 3 rounds (their range in parentheses).")
        );
        assert!(lines[0].contains(
            "Server pinned to core 0 (several nodes: every node and Redis), generator to core 1."
        ));
        // Multi-node runs have their own table, after the single-node run they compare with.
        assert!(
            !lines
                .iter()
                .any(|l| l.starts_with("| nodes-ws-fanout-1k | switchboard | 1000"))
        );
        let at = |l: &str| lines.iter().position(|x| *x == l);
        let single = at(
            "| ws-fanout-1k | switchboard | 1 | 1000 / 1 | 50.0k | 10.00 |  |  | 1.00× | 5.42 / 13.4 / 122 | 0 / 0 / 0 |  | 44% |",
        );
        let multi = at(
            "| nodes-ws-fanout-1k | switchboard | 3 | 1000 / 1 | 50.0k | 13.00 (12.50–14.25) | 1.30 | 1.30× | 0.50× | 5.42 / 13.4 / 122 | 0 / 0 / 0 | 10.00 | 44% |",
        );
        assert!(single.is_some() && single < multi);
        assert!(lines.contains(&"| nodes-ws-fanout-1k | nchan | 3 | 1000 / 1 | 50.0k | 26.00 | 2.60 | 2.60× |  | 5.42 / 13.4 / 122 | 0 / 0 / 0 | 10.00 | 44% |"));
        assert!(lines.contains(&"| nodes-publish | switchboard | 3 | 100 / 100 | 5000 (4500–5600) | 5000 | 100.00 / 50.00 / 190.00 | 1.00 / 10.00 / 0.70 | 5.42 / 13.4 / 122 | 0 / 0 / 0 | 44% |"));
        assert!(lines.contains(
            &"| nodes-ws-fanout-1k | switchboard | pexpire 2.00, evalsha 1.00, publish 1.00 |"
        ));
        assert!(lines.contains(&"| Cross-node WS fan-out 1k (3 nodes + Redis): CPU µs per delivered msg | 13.0 | 10.0 | 1.30× | ≤ 1.5× one node (ws-fanout-1k) | yes |"));
        assert!(lines.contains(&"| Cross-node WS fan-out 1k: CPU µs per delivered msg, vs Nchan on Redis | 13.0 | 26.0 | 0.50× | < 1× Nchan | yes |"));
        assert!(!md.contains("Cross-node SSE"));
        // "Below" is strict.
        let tie = [
            on_nodes("switchboard", "nodes-ws-fanout-1k", 13.0),
            on_nodes("nchan", "nodes-ws-fanout-1k", 13.0),
        ];
        let t = targets(&tie);
        assert_eq!(
            (t[9].met, t[10].ratio, t[10].met),
            (None, Some(1.0), Some(false))
        );
    }

    #[test]
    fn targets_pick_variants_and_require_no_loss() {
        let poll = |server: &str, transport: &str, rate: f64, lost: u64| RunResult {
            transport: transport.into(),
            delivered_per_s: rate,
            delivered: 10,
            lost,
            ..run(server, "longpoll-1k", "flow")
        };
        let rows = [
            poll("switchboard", "poll", 1_000_000.0, 0),
            poll("nchan", "poll", 50_000.0, 0),
            poll("nchan", "poll-multipart", 700_000.0, 0),
        ];
        let t = targets(&rows);
        assert_eq!(t.len(), GOALS.len());
        let (default, multipart) = (&t[4], &t[5]);
        assert_eq!((default.against, default.met), (Some(50_000.0), Some(true)));
        assert_eq!(default.goal, "≥ 10× Nchan, zero loss");
        assert_eq!(
            (multipart.against, multipart.met),
            (Some(700_000.0), Some(false))
        );
        // A loss fails the target even where the ratio is met, and even with no Nchan run.
        let lossy = [poll("switchboard", "poll", 1_000_000.0, 3), rows[1].clone()];
        let t = targets(&lossy);
        assert_eq!(
            (t[4].met, t[5].met, t[5].against),
            (Some(false), Some(false), None)
        );
        assert_eq!(t[0].met, None);
    }

    #[test]
    fn svg_draws_only_panels_with_data() {
        let rows = [
            flow("switchboard", "ws-fanout-1k", 10.0),
            flow("nchan", "ws-fanout-1k", 5.0),
            flow("floor", "ws-fanout-1k", 2.5),
        ];
        let svg = svg(&results(&rows, Vec::new()));
        assert!(
            svg.starts_with(r#"<svg xmlns="http://www.w3.org/2000/svg" width="900" height="232""#)
        );
        assert!(svg.contains(r#"<rect x="150" y="70" width="630.0" height="14" class="sb"/>"#));
        assert!(svg.contains(r#"<rect x="150" y="86" width="315.0" height="14" class="nc"/>"#));
        assert!(svg.contains(r#"<rect x="150" y="102" width="157.5" height="14" class="fl"/>"#));
        assert!(svg.contains(">5.00 µs</text>"));
        assert!(!svg.contains("idle connection"));
        assert!(svg.ends_with("</svg>\n"));
    }
}
