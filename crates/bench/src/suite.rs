//! The `suite` subcommand: every planned workload against freshly started servers, a summary
//! line per run, then the tables on stdout and the results files (JSON, Markdown, SVG).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::SuiteArgs;
use crate::client::Flavor;
use crate::error::{Error, Result};
use crate::plan::plan;
use crate::procfs;
use crate::redis::script_calls;
use crate::report::{self, Results};
use crate::server::{Deployment, Launch};
use crate::workload::{self, MAX_OTHER_CPU, Opts, RunResult, Spec};

/// Runs the suite; `Ok(false)` when switchboard failed a correctness check (see
/// `report::correctness_failures`), so `bench/run.sh --smoke` fails the build.
pub(crate) async fn suite(a: SuiteArgs) -> Result<bool> {
    let (stamp_human, stamp) = utc_now();
    let machine = procfs::machine();
    println!(
        "machine: {} cores, {}, kernel {}, {} GiB RAM; generator sees {} core(s); {}",
        machine["cores"],
        machine["model"].as_str().unwrap_or("?"),
        machine["kernel"].as_str().unwrap_or("?"),
        machine["mem_gib"],
        machine["cores_available_to_generator"],
        stamp_human
    );
    let workloads = plan(&a);
    check_open_files(&workloads)?;
    create_dir(&a.out)?;
    let scratch = std::env::temp_dir().join(format!("switchboard-bench-{}", std::process::id()));
    create_dir(&scratch)?;
    let launch = launch(&a, scratch.clone());
    let results = run_all(&a, &workloads, &launch).await;
    let runs: Vec<serde_json::Value> = results.iter().map(report::to_json).collect();
    let rows = report::rows(&runs);
    let mode = mode(&a);
    let res = Results {
        generated: stamp_human,
        mode: mode.into(),
        machine,
        settings: serde_json::json!({
            "payload_bytes": a.payload_bytes,
            "server_core": launch.core,
            "repeat": a.repeat.max(1),
            "switchboard_args": launch.switchboard_args,
            "workloads": workloads,
        }),
        targets: if a.compare {
            report::targets(&rows)
        } else {
            Vec::new()
        },
        runs,
    };
    let md = report::markdown(&res);
    println!("\n{md}");
    let name = a.results_name.as_deref().unwrap_or(mode);
    write_results(&a.out, name, &stamp, &res, &md)?;
    println!("results: {}/{name}.{{json,md,svg}}", a.out.display());
    let _ = std::fs::remove_dir_all(&scratch);
    let failures = report::correctness_failures(&rows);
    for f in &failures {
        println!("FAIL switchboard {f}");
    }
    Ok(failures.is_empty())
}

/// The results files' name: `smoke`, `compare` or `switchboard`.
fn mode(a: &SuiteArgs) -> &'static str {
    if a.smoke {
        "smoke"
    } else if a.compare {
        "compare"
    } else {
        "switchboard"
    }
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))
}

/// Fails early when the largest workload's connections would not fit the open-file limit.
fn check_open_files(workloads: &[Spec]) -> Result<()> {
    let biggest = workloads.iter().map(|w| w.subscribers).max().unwrap_or(0);
    match open_files_limit() {
        Some(lim) if lim < u64::from(biggest) + 200 => Err(Error::Setup(format!(
            "open-file limit {lim} is below the {biggest} connections needed: raise it (`ulimit -n $(ulimit -Hn)`)"
        ))),
        _ => Ok(()),
    }
}

fn open_files_limit() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = s.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// How to start the servers, from the arguments. Switchboard's connection limit is raised
/// above the largest workload; `--switchboard-arg`s come after, so they can override it.
fn launch(a: &SuiteArgs, scratch: PathBuf) -> Launch {
    let absolute = |p: &PathBuf| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
    let mut switchboard_args = vec!["--max-connections".to_string(), "30000".to_string()];
    switchboard_args.extend(a.switchboard_args.iter().cloned());
    Launch {
        switchboard_bin: a.switchboard_bin.clone(),
        switchboard_args,
        nchan_conf: absolute(&a.nchan_conf),
        nchan_redis_conf: absolute(&a.nchan_redis_conf),
        nginx_bin: a.nginx.clone(),
        redis_bin: a.redis_server.clone(),
        core: (!a.no_pin).then_some(a.server_core),
        scratch,
        bench_bin: std::env::current_exe().unwrap_or_else(|_| "switchboard-bench".into()),
        switchboard_wrap: a
            .switchboard_wrap
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    }
}

/// Runs every workload on every server measured (and each of its variants of the transport),
/// `--repeat` times, printing a summary line per run. Rounds are interleaved (switchboard,
/// Nchan, switchboard, …) so that a slow drift of the machine affects both alike; each keeps
/// its [`representative`] run.
async fn run_all(a: &SuiteArgs, workloads: &[Spec], launch: &Launch) -> Vec<RunResult> {
    let opts = Opts {
        payload_bytes: a.payload_bytes,
        source_addrs: 8,
        connect_concurrency: 256,
    };
    let mut servers: Vec<Flavor> = if a.nchan_only {
        vec![Flavor::Nchan]
    } else if a.compare {
        vec![Flavor::Switchboard, Flavor::Nchan]
    } else {
        vec![Flavor::Switchboard]
    };
    if !a.no_floor {
        servers.push(Flavor::Floor);
    }
    let mut results: Vec<RunResult> = Vec::new();
    for w in workloads {
        let mut w = w.clone();
        if w.name == "latency-ws-1k" {
            let Some(rate) = latency_rate(a, &results) else {
                println!(
                    "[latency-ws-1k] skipped: no saturation rate measured (run saturation-ws-1k or pass --latency-rate)"
                );
                continue;
            };
            w.rate = rate;
        }
        let runs: Vec<(Flavor, Spec)> = servers
            .iter()
            // Nchan has no data directory to compare with.
            .filter(|&&flavor| !(w.data_dir && flavor == Flavor::Nchan))
            .flat_map(|&flavor| {
                let w = &w;
                flavor.variants(w).into_iter().map(move |transport| {
                    let w = Spec {
                        transport,
                        ..w.clone()
                    };
                    (flavor, w)
                })
            })
            .collect();
        let repeat = a.repeat.max(1);
        let mut rounds: Vec<Vec<RunResult>> = vec![Vec::new(); runs.len()];
        for round in 1..=repeat {
            for ((flavor, w), done) in runs.iter().zip(&mut rounds) {
                if let Some(r) = measure(a, w, *flavor, launch, &opts).await {
                    let of = if repeat > 1 {
                        format!(" (round {round}/{repeat})")
                    } else {
                        String::new()
                    };
                    println!("{}{of}", summary(&r));
                    done.push(r);
                }
            }
        }
        results.extend(rounds.into_iter().filter_map(representative));
    }
    results
}

/// The figure rounds of a workload are compared on: CPU per message (flow), publishes/s
/// (throughput), memory per connection (idle), the rate kept up with (saturation).
fn figure(r: &RunResult) -> f64 {
    match r.kind.as_str() {
        "throughput" => r.publish_rate,
        "idle" => r.rss_per_conn_bytes,
        "saturation" => r.saturation_rate.unwrap_or(0.0),
        _ => r.cpu_us_per_msg,
    }
}

/// The run that stands for several rounds of one workload on one server: the first that
/// failed or lost, duplicated, reordered or dropped anything (so that no median hides it),
/// else the median by [`figure`] (the lower middle one of an even number). It keeps every
/// round's figure in `rounds`.
fn representative(mut runs: Vec<RunResult>) -> Option<RunResult> {
    let rounds: Vec<f64> = runs.iter().map(figure).collect();
    let faulty = |r: &RunResult| {
        r.failure.is_some()
            || r.lost + r.duplicated + r.out_of_order + r.dropped + r.connect_failed > 0
    };
    let mut kept = match runs.iter().position(faulty) {
        Some(i) => runs.swap_remove(i),
        None => {
            runs.sort_by(|a, b| figure(a).total_cmp(&figure(b)));
            let middle = runs.len().checked_sub(1)? / 2;
            runs.swap_remove(middle)
        }
    };
    if rounds.len() > 1 {
        kept.rounds = rounds;
    }
    Some(kept)
}

/// The rate of `latency-ws-1k`: `--latency-rate`, else half the saturation rate measured so
/// far (Nchan's with `--compare`, else switchboard's), else 50 msg/s in a smoke run.
fn latency_rate(a: &SuiteArgs, results: &[RunResult]) -> Option<f64> {
    let basis = if a.compare {
        Flavor::Nchan
    } else {
        Flavor::Switchboard
    };
    let saturation = results
        .iter()
        .find(|r| r.server == basis.name() && r.kind == "saturation")
        .and_then(|r| r.saturation_rate);
    a.latency_rate
        .or(saturation.map(|r| (r / 2.0).round()))
        .or(a.smoke.then_some(50.0))
}

/// Runs `w` on `flavor`. Another process burning CPU (a build next door) skews every figure:
/// wait for a quiet machine (bounded), and rerun a disturbed run, keeping the least disturbed
/// attempt. The load is reported with every run either way.
async fn measure(
    a: &SuiteArgs,
    w: &Spec,
    flavor: Flavor,
    launch: &Launch,
    opts: &Opts,
) -> Option<RunResult> {
    let tag = format!("{}-{}-{:?}", w.name, flavor.name(), w.transport).to_lowercase();
    let attempts = if a.smoke { 1 } else { a.attempts.max(1) };
    let mut best: Option<RunResult> = None;
    for attempt in 1..=attempts {
        wait_for_quiet(a, w).await;
        let r = run_once(w, flavor, launch, opts, &tag).await;
        let disturbed = r.other_cpu_util > MAX_OTHER_CPU;
        if disturbed && attempt < attempts {
            println!(
                "[{}] {}: other processes used {:.0}% of a core during the run; again ({attempt}/{attempts})",
                w.name,
                flavor.name(),
                r.other_cpu_util * 100.0
            );
        }
        if best
            .as_ref()
            .is_none_or(|b| r.other_cpu_util < b.other_cpu_util)
        {
            best = Some(r);
        }
        if !disturbed {
            break;
        }
    }
    best
}

/// Waits up to 2 minutes (not at all in a smoke run) for other processes to calm down.
async fn wait_for_quiet(a: &SuiteArgs, w: &Spec) {
    let wait = Duration::from_secs_f64(if a.smoke { 0.0 } else { a.quiet_wait.max(0.0) });
    let other = workload::wait_for_quiet(MAX_OTHER_CPU, wait).await;
    if other > MAX_OTHER_CPU && !a.smoke && a.quiet_wait > 0.0 {
        println!(
            "[{}] warning: other processes use {:.0}% of a core; measuring anyway",
            w.name,
            other * 100.0
        );
    }
}

/// One run of `w` against freshly started `flavor` servers (and Redis, for several nodes).
async fn run_once(w: &Spec, flavor: Flavor, launch: &Launch, opts: &Opts, tag: &str) -> RunResult {
    match Deployment::start(flavor, launch, tag, w.nodes, w.data_dir).await {
        Ok(d) => {
            let r = workload::run(w, &d, opts).await;
            d.stop().await;
            r
        }
        Err(e) => RunResult::failed(w, flavor, e.to_string()),
    }
}

/// Writes `{name}.json`, `.md` and `.svg` into `out`. Every run's JSON is also kept under
/// `history/` with its time stamp, so the optimisation log can cite older runs.
fn write_results(out: &Path, name: &str, stamp: &str, res: &Results, md: &str) -> Result<()> {
    let json = serde_json::to_string_pretty(res).map_err(|e| Error::json("results", e))?;
    let write = |name: String, body: &str| -> Result<()> {
        let p = out.join(name);
        std::fs::write(&p, body).map_err(|e| Error::io(p.display(), e))
    };
    write(format!("{name}.json"), &json)?;
    create_dir(&out.join("history"))?;
    write(format!("history/{name}-{stamp}.json"), &json)?;
    write(format!("{name}.md"), md)?;
    write(format!("{name}.svg"), &report::svg(res))?;
    Ok(())
}

/// The time now in UTC, for people (`2026-11-22 04:34:50 UTC`) and for file names
/// (`20261122-043450`).
fn utc_now() -> (String, String) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    utc(secs)
}

/// [`utc_now`] for `secs` since the epoch, without a date crate (civil-from-days, H. Hinnant).
fn utc(secs: i64) -> (String, String) {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (rem / 3600, rem / 60 % 60, rem % 60);
    (
        format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02} UTC"),
        format!("{year:04}{month:02}{day:02}-{h:02}{m:02}{s:02}"),
    )
}

/// The line printed after each run: its main figures, or why it failed.
fn summary(r: &RunResult) -> String {
    let head = format!("[{}] {} {}", r.workload, r.server, r.transport);
    if let Some(f) = &r.failure {
        return format!("{head}: FAILED: {f}");
    }
    let errs = if r.errors.is_empty() {
        String::new()
    } else {
        format!(" errors: {:?}", r.errors)
    };
    match r.kind.as_str() {
        "idle" => format!(
            "{head}: {} connections, RSS {} → {} KiB, {:.0} B/connection{errs}",
            r.connected, r.rss_before_kib, r.rss_after_kib, r.rss_per_conn_bytes
        ),
        "saturation" => format!(
            "{head}: kept up to {} msg/s published ({:.0} delivered/s); steps {}{errs}",
            r.saturation_rate
                .map_or("none".into(), |x| format!("{x:.0}")),
            r.delivered_per_s,
            steps_summary(r)
        ),
        _ => format!("{head}: {}{}{errs}", flow_summary(r), nodes_summary(r)),
    }
}

/// On several nodes: Redis's CPU per delivered message, its script calls and commands (those
/// scripts run included) per publish, and each node's CPU seconds.
fn nodes_summary(r: &RunResult) -> String {
    if r.nodes <= 1 {
        return String::new();
    }
    let nodes: Vec<String> = r.node_cpu_s.iter().map(|s| format!("{s:.2}")).collect();
    let per_publish = |n: u64| r.per_publish(n as f64).unwrap_or(0.0);
    format!(
        "; {} nodes, Redis {:.3} µs CPU/msg ({:.2}s), per publish {:.2} Redis scripts and {:.2} commands, node CPU s [{}]",
        r.nodes,
        r.redis_cpu_us_per_msg,
        r.redis_cpu_s,
        per_publish(script_calls(&r.redis_calls)),
        per_publish(r.redis_commands),
        nodes.join(" ")
    )
}

/// Each saturation step as `RATE:ok` or `RATE:x`, marked where the generator was the limit.
fn steps_summary(r: &RunResult) -> String {
    r.steps
        .iter()
        .map(|s| {
            let kept = if s.kept_up { "ok" } else { "x" };
            let gen_bound = if s.generator_cpu_util > 0.9 {
                "(gen-bound)"
            } else {
                ""
            };
            format!("{:.0}:{kept}{gen_bound}", s.rate)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn flow_summary(r: &RunResult) -> String {
    format!(
        "{} subs, {:.0} msg/s published, {:.0} delivered/s, {:.3} µs CPU/msg ({:.2}s user {:.2}s sys), p50/p99/max {:.2}/{:.2}/{:.2} ms, lost {} dup {} ooo {} resets {} dropped {}, gen CPU {:.0}%, others {:.0}%, server-core irq {:.0}%, steal {:.0}%",
        r.connected,
        r.publish_rate,
        r.delivered_per_s,
        r.cpu_us_per_msg,
        r.server_user_s,
        r.server_sys_s,
        r.lat_p50_us as f64 / 1e3,
        r.lat_p99_us as f64 / 1e3,
        r.lat_max_us as f64 / 1e3,
        r.lost,
        r.duplicated,
        r.out_of_order,
        r.resets,
        r.dropped,
        r.generator_cpu_util * 100.0,
        r.other_cpu_util * 100.0,
        r.server_core_irq_util * 100.0,
        r.steal_util * 100.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Step;

    #[test]
    fn utc_dates() {
        let day = |secs| utc(secs);
        assert_eq!(
            day(0),
            ("1970-01-01 00:00:00 UTC".into(), "19700101-000000".into())
        );
        assert_eq!(day(1_795_322_090).0, "2026-11-22 04:34:50 UTC");
        assert_eq!(day(1_709_208_000).1, "20240229-120000");
        assert_eq!(day(951_868_800).0, "2000-03-01 00:00:00 UTC");
    }

    #[test]
    fn rounds_keep_the_median_unless_one_is_faulty() {
        let run = |cpu_us_per_msg: f64, lost: u64| RunResult {
            kind: "flow".into(),
            cpu_us_per_msg,
            lost,
            ..RunResult::default()
        };
        let kept = representative(vec![run(9.0, 0), run(7.0, 0), run(8.0, 0)]);
        let kept = kept.unwrap_or_default();
        assert_eq!(
            (kept.cpu_us_per_msg, kept.rounds),
            (8.0, vec![9.0, 7.0, 8.0])
        );
        let kept = representative(vec![run(9.0, 0), run(7.0, 0)]).unwrap_or_default();
        assert_eq!(kept.cpu_us_per_msg, 7.0);
        let kept = representative(vec![run(9.0, 0), run(7.0, 3), run(8.0, 0)]);
        assert_eq!(kept.map(|k| k.lost), Some(3));
        let one = representative(vec![run(9.0, 0)]).unwrap_or_default();
        assert!(one.rounds.is_empty());
        assert!(representative(Vec::new()).is_none());
    }

    #[test]
    fn summaries() {
        let base = RunResult {
            workload: "w".into(),
            server: "switchboard".into(),
            transport: "ws".into(),
            ..RunResult::default()
        };
        let failed = RunResult {
            failure: Some("nginx not ready".into()),
            ..base.clone()
        };
        assert_eq!(
            summary(&failed),
            "[w] switchboard ws: FAILED: nginx not ready"
        );
        let mut sat = RunResult {
            kind: "saturation".into(),
            saturation_rate: Some(25.0),
            delivered_per_s: 499.4,
            ..base.clone()
        };
        let step = |rate, kept_up, generator_cpu_util| Step {
            rate,
            kept_up,
            generator_cpu_util,
            ..Step::default()
        };
        sat.steps = vec![step(20.0, true, 0.1), step(25.0, false, 0.95)];
        sat.errors.insert("publisher connection lost".into(), 1);
        assert_eq!(
            summary(&sat),
            r#"[w] switchboard ws: kept up to 25 msg/s published (499 delivered/s); steps 20:ok 25:x(gen-bound) errors: {"publisher connection lost": 1}"#
        );
        let idle = RunResult {
            kind: "idle".into(),
            connected: 200,
            rss_before_kib: 14048,
            rss_after_kib: 17352,
            rss_per_conn_bytes: 16916.48,
            ..base.clone()
        };
        assert_eq!(
            summary(&idle),
            "[w] switchboard ws: 200 connections, RSS 14048 → 17352 KiB, 16916 B/connection"
        );
        let flow = RunResult {
            kind: "flow".into(),
            lat_p99_us: 8100,
            ..base
        };
        assert!(summary(&flow).starts_with("[w] switchboard ws: 0 subs, 0 msg/s published"));
        assert!(summary(&flow).contains("p50/p99/max 0.00/8.10/0.00 ms"));
    }
}
