//! Turning runs into the side-by-side tables, the target verdicts and the SVG chart.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::workload::RunResult;

/// The results file: everything needed to re-render the report later (`report` subcommand).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Results {
    pub(crate) generated: String,
    pub(crate) mode: String,
    pub(crate) machine: serde_json::Value,
    pub(crate) settings: serde_json::Value,
    pub(crate) runs: Vec<serde_json::Value>,
    pub(crate) targets: Vec<Target>,
}

/// One target of the issue, evaluated on this run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Target {
    pub(crate) name: String,
    pub(crate) switchboard: Option<f64>,
    pub(crate) nchan: Option<f64>,
    /// switchboard / nchan.
    pub(crate) ratio: Option<f64>,
    pub(crate) goal: String,
    pub(crate) met: Option<bool>,
}

pub(crate) fn rows(runs: &[serde_json::Value]) -> Vec<RunResult> {
    runs.iter()
        .filter_map(|v| serde_json::from_value(v.clone()).ok())
        .collect()
}

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

/// Evaluates the issue's targets.
pub(crate) fn targets(rows: &[RunResult]) -> Vec<Target> {
    let mut out = Vec::new();
    let mut ratio_target = |name: &str,
                            workload: &str,
                            key: fn(&RunResult) -> f64,
                            lower: bool,
                            max_ratio: f64,
                            goal: &str| {
        // "workload/transport" picks one Nchan variant; a bare workload takes its best.
        let (workload, variant) = workload.split_once('/').unwrap_or((workload, ""));
        let sb = best(rows, "switchboard", workload, key, lower).map(key);
        let nc = if variant.is_empty() {
            best(rows, "nchan", workload, key, lower).map(key)
        } else {
            find(rows, "nchan", workload)
                .into_iter()
                .find(|r| r.transport == variant && r.failure.is_none())
                .map(key)
        };
        let ratio = match (sb, nc) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let met = ratio.map(|r| {
            if lower {
                r <= max_ratio
            } else {
                r >= max_ratio
            }
        });
        out.push(Target {
            name: name.into(),
            switchboard: sb,
            nchan: nc,
            ratio,
            goal: goal.into(),
            met,
        });
    };
    let cpu = |r: &RunResult| r.cpu_us_per_msg;
    let rate = |r: &RunResult| r.delivered_per_s;
    let mem = |r: &RunResult| r.rss_per_conn_bytes;
    let p99 = |r: &RunResult| r.lat_p99_us as f64;
    ratio_target(
        "WS fan-out 1k: CPU µs per delivered msg",
        "ws-fanout-1k",
        cpu,
        true,
        0.5,
        "≤ 0.5× Nchan",
    );
    ratio_target(
        "WS fan-out 5k: CPU µs per delivered msg",
        "ws-fanout-5k",
        cpu,
        true,
        0.33,
        "≤ 0.33× Nchan",
    );
    ratio_target(
        "SSE fan-out 1k: CPU µs per delivered msg",
        "sse-fanout-1k",
        cpu,
        true,
        0.5,
        "≤ 0.5× Nchan",
    );
    ratio_target(
        "SSE fan-out 5k: CPU µs per delivered msg",
        "sse-fanout-5k",
        cpu,
        true,
        0.5,
        "≤ 0.5× Nchan",
    );
    ratio_target(
        "Long-poll 1k: delivered msgs/s (Nchan: one message per reply, its default)",
        "longpoll-1k/poll",
        rate,
        false,
        10.0,
        "≥ 10× Nchan, zero loss",
    );
    ratio_target(
        "Long-poll 1k: delivered msgs/s (Nchan: multipart/mixed batching on)",
        "longpoll-1k/poll-multipart",
        rate,
        false,
        10.0,
        "≥ 10× Nchan, zero loss",
    );
    ratio_target(
        "Idle WS: server RSS bytes per connection",
        "idle-ws-10k",
        mem,
        true,
        0.5,
        "≤ 0.5× Nchan",
    );
    ratio_target(
        "Idle SSE: server RSS bytes per connection",
        "idle-sse-10k",
        mem,
        true,
        0.5,
        "≤ 0.5× Nchan",
    );
    ratio_target(
        "p99 µs at half Nchan's saturation (WS 1k)",
        "latency-ws-1k",
        p99,
        true,
        1.0,
        "≤ 1× Nchan",
    );
    // Long-poll also requires zero loss from switchboard.
    let lossless = find(rows, "switchboard", "longpoll-1k")
        .iter()
        .all(|r| r.lost == 0 && r.delivered > 0);
    for t in out.iter_mut().filter(|t| t.name.starts_with("Long-poll")) {
        t.met = t
            .met
            .map(|m| m && lossless)
            .or(Some(lossless).filter(|l| !l));
    }
    out
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
            if r.kind == "flow" {
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

/// Markdown: one line per server per workload, then memory, saturation and targets.
pub(crate) fn markdown(res: &Results) -> String {
    let rows = rows(&res.runs);
    let m = &res.machine;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Machine: {} cores, {}, kernel {}, {} GiB. Server pinned to core 0, generator to core 1. {}.\n",
        m["cores"],
        m["model"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
        m["mem_gib"],
        res.generated
    );
    let mut workloads: Vec<&str> = Vec::new();
    for r in &rows {
        if !workloads.contains(&r.workload.as_str()) {
            workloads.push(&r.workload);
        }
    }
    let _ = writeln!(
        s,
        "| workload | server | subs / topics | publish msg/s | delivered msg/s | server CPU µs/msg | vs Nchan | p50 / p99 / max ms | lost / dup / ooo | gen CPU |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    for w in &workloads {
        let group: Vec<&RunResult> = rows
            .iter()
            .filter(|r| r.workload == *w && r.kind == "flow")
            .collect();
        let nchan_cpu =
            best(&rows, "nchan", w, |r| r.cpu_us_per_msg, true).map(|r| r.cpu_us_per_msg);
        for r in group {
            let vs = match (r.server.as_str(), nchan_cpu) {
                ("switchboard", Some(n)) if n > 0.0 => format!("{:.2}×", r.cpu_us_per_msg / n),
                _ => String::new(),
            };
            let fail = r
                .failure
                .as_deref()
                .map(|f| format!(" ⚠ {f}"))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "| {} | {} | {} / {} | {} | {} | {:.2} | {} | {} / {} / {} | {} / {} / {} | {:.0}%{} |",
                w,
                label(r),
                r.subscribers,
                r.topics,
                num(r.publish_rate),
                num(r.delivered_per_s),
                r.cpu_us_per_msg,
                vs,
                ms(r.lat_p50_us),
                ms(r.lat_p99_us),
                ms(r.lat_max_us),
                r.lost,
                r.duplicated,
                r.out_of_order,
                r.generator_cpu_util * 100.0,
                fail
            );
        }
    }
    let idle: Vec<&RunResult> = rows.iter().filter(|r| r.kind == "idle").collect();
    if !idle.is_empty() {
        let _ = writeln!(
            s,
            "\n| idle connections | server | connections | server RSS per connection | vs Nchan |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|");
        for r in idle {
            let n = best(&rows, "nchan", &r.workload, |r| r.rss_per_conn_bytes, true)
                .map(|r| r.rss_per_conn_bytes);
            let vs = match (r.server.as_str(), n) {
                ("switchboard", Some(n)) if n > 0.0 => format!("{:.2}×", r.rss_per_conn_bytes / n),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.1} KiB | {} |",
                r.workload,
                r.server,
                r.connected,
                r.rss_per_conn_bytes / 1024.0,
                vs
            );
        }
    }
    let sat: Vec<&RunResult> = rows.iter().filter(|r| r.kind == "saturation").collect();
    if !sat.is_empty() {
        let _ = writeln!(
            s,
            "\n| saturation | server | highest publish msg/s kept up | delivered msg/s there | p99 ms there | gen CPU |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|");
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
    // CPU per message and p99 against load, from the saturation steps (least disturbed
    // attempt per rate): how each server's cost per message changes as writes coalesce.
    let sat_runs: Vec<&RunResult> = rows.iter().filter(|r| r.kind == "saturation").collect();
    let mut rates: Vec<f64> = sat_runs
        .iter()
        .flat_map(|r| r.steps.iter().map(|st| st.rate))
        .collect();
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    rates.dedup();
    if !rates.is_empty() {
        let servers: Vec<&str> = ["switchboard", "nchan"]
            .into_iter()
            .filter(|sv| sat_runs.iter().any(|r| r.server == *sv))
            .collect();
        let _ = write!(s, "\n| publish msg/s (1,000 WS subs) |");
        for sv in &servers {
            let _ = write!(s, " {sv} CPU µs/msg | {sv} p99 ms |");
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "|---|{}", "---|---|".repeat(servers.len()));
        for rate in rates {
            let _ = write!(s, "| {} |", num(rate));
            for sv in &servers {
                let step = sat_runs
                    .iter()
                    .filter(|r| r.server == *sv)
                    .flat_map(|r| r.steps.iter())
                    .filter(|st| st.rate == rate)
                    .min_by(|a, b| {
                        a.other_cpu_util
                            .partial_cmp(&b.other_cpu_util)
                            .unwrap_or(std::cmp::Ordering::Equal)
                    });
                match step {
                    Some(st) => {
                        let flag = match (st.kept_up, st.generator_cpu_util > 0.9) {
                            (false, _) => " (fell behind)",
                            (true, true) => " (generator > 90%)",
                            _ => "",
                        };
                        let _ = write!(
                            s,
                            " {:.2} | {}{flag} |",
                            st.cpu_us_per_msg,
                            ms(st.lat_p99_us)
                        );
                    }
                    None => {
                        let _ = write!(s, " – | – |");
                    }
                }
            }
            let _ = writeln!(s);
        }
    }
    if !res.targets.is_empty() {
        let _ = writeln!(s, "\n| target | switchboard | Nchan | ratio | goal | met |");
        let _ = writeln!(s, "|---|---|---|---|---|---|");
        for t in &res.targets {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                t.name,
                t.switchboard.map_or("–".into(), num),
                t.nchan.map_or("–".into(), num),
                t.ratio.map_or("–".into(), |r| format!("{r:.2}×")),
                t.goal,
                match t.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "–",
                }
            );
        }
    }
    s
}

/// One panel of the chart: a metric, one row per workload, a bar per server.
struct Panel {
    title: &'static str,
    rows: Vec<(String, Option<f64>, Option<f64>)>,
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
                (
                    (*w).to_string(),
                    best(rows, "switchboard", w, key, lower).map(key),
                    best(rows, "nchan", w, key, lower).map(key),
                )
            })
            .filter(|(_, a, b)| a.is_some() || b.is_some())
            .collect(),
        fmt,
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Hand-written SVG (no plotting dependency): horizontal bars, each panel on its own scale.
pub(crate) fn svg(res: &Results) -> String {
    let rows = rows(&res.runs);
    let flow = [
        "ws-fanout-1k",
        "ws-fanout-5k",
        "sse-fanout-1k",
        "sse-fanout-5k",
        "rooms-10k",
        "longpoll-1k",
        "latency-ws-1k",
    ];
    let panels = [
        panel(
            &rows,
            "Server CPU per delivered message, µs (lower is better)",
            &flow,
            |r| r.cpu_us_per_msg,
            true,
            |v| format!("{v:.2} µs"),
        ),
        panel(
            &rows,
            "Delivered messages per second (higher is better)",
            &["longpoll-1k", "saturation-ws-1k"],
            |r| r.delivered_per_s,
            false,
            |v| format!("{} /s", num(v)),
        ),
        panel(
            &rows,
            "Server memory per idle connection, KiB (lower is better)",
            &["idle-ws-10k", "idle-sse-10k"],
            |r| r.rss_per_conn_bytes,
            true,
            |v| format!("{:.1} KiB", v / 1024.0),
        ),
        panel(
            &rows,
            "p99 publish→deliver latency, ms (lower is better)",
            &[
                "latency-ws-1k",
                "ws-fanout-1k",
                "sse-fanout-1k",
                "rooms-10k",
            ],
            |r| r.lat_p99_us as f64,
            true,
            |v| format!("{} ms", ms(v as u64)),
        ),
    ];
    let (w, left, bar_h, gap) = (900.0, 150.0, 14.0, 10.0);
    let plot_w = w - left - 120.0;
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
            .flat_map(|(_, a, b)| [a.unwrap_or(0.0), b.unwrap_or(0.0)])
            .fold(0.0_f64, f64::max)
            .max(1e-9);
        for (name, a, b) in &p.rows {
            let _ = writeln!(
                body,
                r#"<text x="{}" y="{}" class="l">{}</text>"#,
                left - 8.0,
                y + bar_h + 4.0,
                esc(name)
            );
            for (i, (v, class)) in [(a, "sb"), (b, "nc")].into_iter().enumerate() {
                let by = y + i as f64 * (bar_h + 2.0);
                if let Some(v) = v {
                    let bw = (v / max * plot_w).max(1.0);
                    let _ = writeln!(
                        body,
                        r#"<rect x="{left}" y="{by}" width="{bw:.1}" height="{bar_h}" class="{class}"/>"#
                    );
                    let _ = writeln!(
                        body,
                        r#"<text x="{:.1}" y="{:.1}" class="v">{}</text>"#,
                        left + bw + 4.0,
                        by + bar_h - 3.0,
                        esc(&(p.fmt)(*v))
                    );
                }
            }
            y += 2.0 * bar_h + 2.0 + gap;
        }
        y += 20.0;
    }
    let m = &res.machine;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{y}" viewBox="0 0 {w} {y}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        "<style>.h{{font-weight:bold;font-size:13px}}.l{{text-anchor:end}}.v{{fill:#333}}.sb{{fill:#2b6cb0}}.nc{{fill:#dd8452}}</style>"
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="#fff"/>"##);
    let _ = writeln!(
        s,
        r#"<text x="10" y="20" class="h">switchboard vs Nchan — {} cores, {}, kernel {} — {}</text>"#,
        m["cores"],
        esc(m["model"].as_str().unwrap_or("?")),
        esc(m["kernel"].as_str().unwrap_or("?")),
        esc(&res.generated)
    );
    let _ = writeln!(
        s,
        r#"<rect x="10" y="32" width="12" height="12" class="sb"/><text x="28" y="42">switchboard</text><rect x="120" y="32" width="12" height="12" class="nc"/><text x="138" y="42">Nchan (best variant)</text>"#
    );
    s.push_str(&body);
    s.push_str("</svg>\n");
    s
}
