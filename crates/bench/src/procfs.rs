//! Server CPU time and memory, read from `/proc` as the kernel accounts them.
//!
//! A server is a process tree (nginx: master + worker), so every figure is summed over the
//! process and its descendants, found through `/proc/PID/task/TID/children`.

use std::fs;
use std::sync::OnceLock;

/// Kernel clock ticks per second (`getconf CLK_TCK`), the unit of utime/stime.
fn clk_tck() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|&t| t > 0.0)
            .unwrap_or(100.0)
    })
}

/// `pid` and all its descendants.
pub(crate) fn tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        if let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) {
            for task in tasks.flatten() {
                let path = task.path().join("children");
                if let Ok(s) = fs::read_to_string(path) {
                    out.extend(s.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
                }
            }
        }
        i += 1;
    }
    out
}

/// User and system CPU seconds of one process (all its threads), from `/proc/PID/stat`.
pub(crate) fn cpu_of(pid: &str) -> Option<(f64, f64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime / clk_tck(), stime / clk_tck()))
}

/// Resident set size in KiB, from `/proc/PID/status` `VmRSS`.
pub(crate) fn rss_kib_of(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// CPU and memory of a whole server process tree at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    /// CPU seconds in user space and in the kernel, since each process started.
    pub(crate) user_s: f64,
    pub(crate) sys_s: f64,
    /// Resident memory, summed over the tree.
    pub(crate) rss_kib: u64,
}

impl Usage {
    /// The server's figures: `pid` and all its descendants (nginx's workers).
    pub(crate) fn of_tree(pid: u32) -> Self {
        let mut u = Self::default();
        for p in tree(pid) {
            if let Some((user, sys)) = cpu_of(&p.to_string()) {
                u.user_s += user;
                u.sys_s += sys;
            }
            u.rss_kib += rss_kib_of(p).unwrap_or(0);
        }
        u
    }

    /// This generator's own CPU, to tell when the instrument itself is the bottleneck.
    pub(crate) fn of_self() -> Self {
        let (user_s, sys_s) = cpu_of("self").unwrap_or_default();
        Self {
            user_s,
            sys_s,
            rss_kib: 0,
        }
    }

    /// Both processes' figures together.
    pub(crate) fn plus(self, o: Self) -> Self {
        Self {
            user_s: self.user_s + o.user_s,
            sys_s: self.sys_s + o.sys_s,
            rss_kib: self.rss_kib + o.rss_kib,
        }
    }

    /// User plus system CPU seconds.
    pub(crate) fn cpu_s(&self) -> f64 {
        self.user_s + self.sys_s
    }
}

/// Machine-wide CPU accounting from `/proc/stat`, in seconds: process time (user, nice,
/// system), interrupt time (irq, softirq) and time stolen by the hypervisor.
///
/// Subtracting the server's and the generator's own CPU from `procs` over a run gives what
/// other processes used meanwhile: on a shared machine (a compiler running next door) that is
/// the difference between a measurement and noise, so every run reports it. Softirq time is
/// kept apart: loopback TCP does much of its receive work there, and the kernel charges it
/// to no process.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CpuStat {
    /// user + nice + system.
    pub(crate) procs: f64,
    /// irq + softirq.
    pub(crate) irq: f64,
    pub(crate) steal: f64,
}

impl CpuStat {
    /// Whole machine (`cpu`) and, if given, one core (`cpuN`).
    pub(crate) fn read(core: Option<u32>) -> (Self, Self) {
        let s = fs::read_to_string("/proc/stat").unwrap_or_default();
        let parse = |prefix: &str| -> Self {
            let Some(line) = s.lines().find(|l| l.starts_with(prefix)) else {
                return Self::default();
            };
            let v: Vec<f64> = line
                .split_whitespace()
                .skip(1)
                .map(|x| x.parse::<f64>().unwrap_or(0.0) / clk_tck())
                .collect();
            let at = |i: usize| v.get(i).copied().unwrap_or(0.0);
            // user nice system idle iowait irq softirq steal (guest is inside user).
            Self {
                procs: at(0) + at(1) + at(2),
                irq: at(5) + at(6),
                steal: at(7),
            }
        };
        let core = core.map_or_else(Self::default, |c| parse(&format!("cpu{c} ")));
        (parse("cpu "), core)
    }

    /// The CPU time spent between two readings (`o` the earlier one).
    pub(crate) fn minus(self, o: Self) -> Self {
        Self {
            procs: self.procs - o.procs,
            irq: self.irq - o.irq,
            steal: self.steal - o.steal,
        }
    }
}

/// CPU count, model and kernel, printed with every result so numbers are never quoted bare.
pub(crate) fn machine() -> serde_json::Value {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let online = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mem_kib: u64 = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    serde_json::json!({
        "cores": online,
        "cores_available_to_generator": cores,
        "model": model,
        "kernel": kernel,
        "mem_gib": (mem_kib as f64 / 1048576.0 * 10.0).round() / 10.0,
    })
}
