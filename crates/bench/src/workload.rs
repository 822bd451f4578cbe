//! One workload run against a fresh deployment (one server, or several nodes on one Redis):
//! connect subscribers, prove every subscription live with warm-up messages, publish at a
//! fixed rate (or as fast as the server answers), drain, and account for every message.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};

use crate::client::Transport;
use crate::client::{self, Ctx, Endpoint, Flavor, PubItem, PublishState, Sub};
use crate::procfs::{CpuStat, Usage};
use crate::redis::Counters;
use crate::server::Deployment;
use crate::stats::{Shared, Tracker};

/// What a workload measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    /// Publish at `rate` for `duration_s`: throughput, CPU per message, latency, correctness.
    Flow,
    /// Hold connections without traffic: server memory per connection.
    Idle,
    /// Raise the rate step by step until delivery no longer keeps up.
    Saturation,
    /// Publish as fast as the server answers (every publisher keeps its pipeline full) for
    /// `duration_s`: publishes per second one node sustains, and what each costs.
    Throughput,
}

/// A workload's shape.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Spec {
    /// Also the prefix of its topics' names and what `--only` selects.
    pub(crate) name: String,
    pub(crate) kind: Kind,
    pub(crate) transport: Transport,
    pub(crate) subscribers: u32,
    /// Subscribers are spread round-robin over this many topics.
    pub(crate) topics: u32,
    /// Messages per second over all topics (start rate for `Saturation`).
    pub(crate) rate: f64,
    /// Seconds of publishing (of each step for `Saturation`).
    pub(crate) duration_s: f64,
    /// How long to wait after the last publish for stragglers before counting them lost.
    pub(crate) drain_s: f64,
    /// `Saturation` only: most steps to try.
    pub(crate) max_steps: u32,
    /// Server nodes: 1 is one server; more share one Redis, node 0 takes every publish and the
    /// subscribers are spread over the others (see `server::Deployment`).
    pub(crate) nodes: u32,
    /// Switchboard only: the server keeps its history in a fresh `--data-dir` (every publish
    /// acknowledged once on disk).
    pub(crate) data_dir: bool,
    /// Most publisher connections (never more than topics). A server answers a connection's
    /// pipelined publishes one at a time, so with acks that wait for a disk commit this is
    /// how many publishes one commit can take together.
    pub(crate) publishers: u32,
    /// Messages per publish request: 1 is one `POST /events` per message; more are sent as
    /// one `POST /publish` batch (switchboard only).
    pub(crate) batch: u32,
    /// Requests each publisher connection keeps in flight (pipelined); 1 is how browsers,
    /// curl and common HTTP libraries publish: one request at a time per connection.
    pub(crate) window: u32,
    /// Switchboard only: publishers send `publish` frames on WebSocket connections (up to
    /// `window` unanswered) instead of HTTP requests.
    pub(crate) ws_publish: bool,
}

/// Generator settings common to all runs.
#[derive(Debug, Clone)]
pub(crate) struct Opts {
    /// Size of each published payload.
    pub(crate) payload_bytes: usize,
    /// Source addresses to spread connections over (see `client::Dialer`).
    pub(crate) source_addrs: u8,
    /// Connection set-ups at a time (see `client::Ctx::connect_sem`).
    pub(crate) connect_concurrency: usize,
}

/// One saturation step: the figures of a flow run at one rate (see `RunResult`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub(crate) struct Step {
    pub(crate) rate: f64,
    pub(crate) expected: u64,
    pub(crate) delivered: u64,
    pub(crate) delivered_per_s: f64,
    pub(crate) cpu_us_per_msg: f64,
    pub(crate) lat_p50_us: u64,
    pub(crate) lat_p99_us: u64,
    pub(crate) lat_max_us: u64,
    pub(crate) generator_cpu_util: f64,
    pub(crate) other_cpu_util: f64,
    /// Everything delivered within the drain time, nobody dropped, p99 within bounds.
    pub(crate) kept_up: bool,
}

/// Everything measured in one run; serialised as is into the results JSON, and read back from
/// it by the report (fields missing from older files take their defaults).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub(crate) struct RunResult {
    /// `switchboard` or `nchan`.
    pub(crate) server: String,
    pub(crate) workload: String,
    /// `flow`, `idle` or `saturation`.
    pub(crate) kind: String,
    /// `ws`, `sse`, `poll` or `poll-multipart`.
    pub(crate) transport: String,
    pub(crate) subscribers: u32,
    pub(crate) topics: u32,
    /// Server nodes (0 in files from before multi-node runs: one).
    pub(crate) nodes: u32,
    /// The rate asked for; `publish_rate` is what was handed out (throughput: publishes
    /// answered per second, from the first publish to the last answer).
    pub(crate) target_rate: f64,
    pub(crate) publish_rate: f64,
    /// Seconds from the first publish to the last delivery.
    pub(crate) window_s: f64,
    /// Subscribers set up, failed to set up, and lost during the run.
    pub(crate) connected: u64,
    pub(crate) connect_failed: u64,
    pub(crate) dropped: u64,
    /// Subscribers set up that never received a warm-up message.
    pub(crate) not_ready: u64,
    /// Measured messages published, and those whose publish failed.
    pub(crate) published: u64,
    pub(crate) publish_failed: u64,
    /// Deliveries owed (measured messages × their topic's subscribers) and made.
    pub(crate) expected: u64,
    pub(crate) delivered: u64,
    /// Owed deliveries never made, made twice, made after a later message.
    pub(crate) lost: u64,
    pub(crate) duplicated: u64,
    pub(crate) out_of_order: u64,
    /// Resets the server announced to subscribers.
    pub(crate) resets: u64,
    pub(crate) delivered_per_s: f64,
    /// Server CPU seconds over the window (user + system, then each).
    pub(crate) server_cpu_s: f64,
    pub(crate) server_user_s: f64,
    pub(crate) server_sys_s: f64,
    /// Server CPU µs per delivered message: the efficiency figure.
    pub(crate) cpu_us_per_msg: f64,
    /// Multi-node runs: each node's CPU seconds over the window, node 0 (the publishers')
    /// first. The server figures above are these plus Redis's.
    pub(crate) node_cpu_s: Vec<f64>,
    /// Multi-node runs: Redis's CPU seconds over the window, and per delivered message.
    pub(crate) redis_cpu_s: f64,
    pub(crate) redis_cpu_us_per_msg: f64,
    /// Multi-node runs: what Redis counted over the window (see `redis::Counters`): commands
    /// executed (those scripts call included), reads from client sockets, calls per command.
    pub(crate) redis_commands: u64,
    pub(crate) redis_reads: u64,
    pub(crate) redis_calls: BTreeMap<String, u64>,
    /// Publish→deliver latency percentiles.
    pub(crate) lat_p50_us: u64,
    pub(crate) lat_p99_us: u64,
    pub(crate) lat_max_us: u64,
    /// Server memory before the subscribers and after (idle: once they are all up).
    pub(crate) rss_before_kib: u64,
    pub(crate) rss_after_kib: u64,
    /// Idle workloads: the memory figure.
    pub(crate) rss_per_conn_bytes: f64,
    /// The generator's own CPU, in cores: near 1 it may be the bottleneck.
    pub(crate) generator_cpu_util: f64,
    /// CPU used by other processes on the machine during the window, in cores: anything
    /// above a few percent means the figures are disturbed.
    pub(crate) other_cpu_util: f64,
    /// irq + softirq time on the server's core, in cores: kernel network work (loopback TCP
    /// delivers packets in softirq) that no process is charged for. Reported, not included
    /// in `cpu_us_per_msg`.
    pub(crate) server_core_irq_util: f64,
    /// CPU stolen by the hypervisor (all cores): noise from outside the machine.
    pub(crate) steal_util: f64,
    /// Saturation: the highest rate kept up with (its step's figures are the run's).
    pub(crate) saturation_rate: Option<f64>,
    pub(crate) steps: Vec<Step>,
    /// With `--repeat`: the figure rounds were compared on (see `suite::figure`), for every
    /// round, of which this run is the median (or the one that failed).
    pub(crate) rounds: Vec<f64>,
    /// Error message → count.
    pub(crate) errors: BTreeMap<String, u64>,
    /// Why the run could not take place or be completed.
    pub(crate) failure: Option<String>,
}

/// Polls `cond` every 5 ms until it holds or `limit` passes; returns whether it held.
async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A run in progress: its shared context, subscribers, publisher queues and tasks.
struct Running {
    ctx: Rc<Ctx>,
    subs: Vec<Rc<Sub>>,
    txs: Vec<mpsc::Sender<PubItem>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// How an interval publishes.
#[derive(Debug, Clone, Copy)]
enum Load {
    /// This many messages per second, evenly spread.
    Paced(f64),
    /// As fast as the server answers: every publisher's pipeline kept full.
    Flood,
}

impl Running {
    /// Starts `spec`'s subscribers against `d` (subscriber i on its subscriber node i % n),
    /// and its publishers: `spec.publishers` keep-alive connections to `d`'s publish node,
    /// topic i always on publisher i % n (so each topic's order is kept).
    fn start(spec: &Spec, d: &Deployment, opts: &Opts) -> Self {
        let topics: Vec<String> = (0..spec.topics.max(1))
            .map(|i| format!("bench.{}.{i}", spec.name))
            .collect();
        let n_topics = topics.len();
        let ctx = Rc::new(Ctx {
            flavor: d.flavor,
            publish_to: Endpoint::new(d.publish_addr(), opts.source_addrs),
            subscribe_to: d
                .subscriber_addrs()
                .into_iter()
                .map(|a| Endpoint::new(a, opts.source_addrs))
                .collect(),
            connect_sem: Semaphore::new(opts.connect_concurrency.max(1)),
            shared: Shared::new(),
            topics,
            payload_bytes: opts.payload_bytes,
            batch: spec.batch.max(1) as usize,
            window: spec.window.max(1) as usize,
            ws_publish: spec.ws_publish,
            publish: PublishState {
                assigned: RefCell::new(vec![0; n_topics]),
                failed: RefCell::new(vec![0; n_topics]),
                ..PublishState::default()
            },
        });
        let subs: Vec<Rc<Sub>> = (0..spec.subscribers)
            .map(|i| {
                Rc::new(Sub {
                    tracker: RefCell::new(Tracker::new(i % n_topics as u32)),
                    node: i as usize,
                })
            })
            .collect();
        let mut tasks = Vec::with_capacity(subs.len() + 8);
        for s in &subs {
            let task = client::subscriber(ctx.clone(), s.clone(), spec.transport);
            tasks.push(tokio::task::spawn_local(task));
        }
        let n_pub = n_topics.clamp(1, spec.publishers.max(1) as usize);
        let mut txs = Vec::with_capacity(n_pub);
        for _ in 0..n_pub {
            let (tx, rx) = mpsc::channel(4096);
            txs.push(tx);
            tasks.push(tokio::task::spawn_local(client::publisher(ctx.clone(), rx)));
        }
        Self {
            ctx,
            subs,
            txs,
            tasks,
        }
    }

    /// Waits for every subscriber to be set up (120 s at most), then proves the subscriptions
    /// live with warm-up messages (30 s at most); notes in `r` what did not work out.
    async fn set_up(&self, r: &mut RunResult) {
        let sh = &self.ctx.shared;
        let n = self.subs.len() as u64;
        let all_in = wait_until(Duration::from_secs(120), || {
            sh.connected.get() + sh.connect_failed.get() >= n
        })
        .await;
        r.connected = sh.connected.get();
        r.connect_failed = sh.connect_failed.get();
        if !all_in {
            r.failure = Some(format!(
                "only {} of {n} subscribers set up in 120 s",
                r.connected + r.connect_failed
            ));
        }
        if !self.warm_up(Duration::from_secs(30)).await {
            sh.error("warm-up: not every subscriber received a warm-up message in 30 s");
        }
        r.not_ready = sh.connected.get().saturating_sub(sh.ready.get());
    }

    /// One measured interval: publishes (`load`) for `duration`, waits for every publish to
    /// be answered and then up to `drain` for the deliveries they owe, and measures all of it.
    async fn interval(
        &self,
        d: &Deployment,
        load: Load,
        duration: Duration,
        drain: Duration,
        next_topic: &mut u32,
    ) -> Interval {
        let sh = &self.ctx.shared;
        sh.reset_histogram();
        let d0 = sh.delivered.get();
        let e0 = self.expected();
        let acked0 = self.ctx.publish.acked.get();
        let w = Window::start(d, sh).await;
        let handed = match load {
            Load::Paced(rate) => self.pace(rate, duration, next_topic).await,
            Load::Flood => self.flood(duration, next_topic).await,
        };
        self.finish_publishing().await;
        let publish_s = w.t0.elapsed().as_secs_f64();
        let expected = self.expected() - e0;
        wait_until(drain, || sh.delivered.get() - d0 >= expected).await;
        let m = w.end(d, sh).await;
        let end = sh.last_delivery.get().max(w.t0 + Duration::from_millis(1));
        Interval {
            handed,
            acked: self.ctx.publish.acked.get() - acked0,
            publish_s,
            expected,
            delivered: sh.delivered.get() - d0,
            window_s: end.duration_since(w.t0).as_secs_f64(),
            lat: pctl(sh),
            m,
        }
    }

    /// Deliveries owed to all subscribers for messages handed out so far (failed publishes
    /// excluded: those messages never existed).
    fn expected(&self) -> u64 {
        let assigned = self.ctx.publish.assigned.borrow();
        let failed = self.ctx.publish.failed.borrow();
        self.subs
            .iter()
            .map(|s| {
                let t = s.tracker.borrow().topic as usize;
                assigned[t].saturating_sub(failed[t])
            })
            .sum()
    }

    fn lost(&self) -> u64 {
        let assigned = self.ctx.publish.assigned.borrow();
        let failed = self.ctx.publish.failed.borrow();
        self.subs
            .iter()
            .map(|s| {
                let t = s.tracker.borrow();
                let i = t.topic as usize;
                t.missing(assigned[i]).saturating_sub(failed[i])
            })
            .sum()
    }

    fn enqueue(&self, topic: u32, seq: u64) -> bool {
        let i = topic as usize % self.txs.len();
        if self.txs[i].try_send((topic, seq)).is_ok() {
            let p = &self.ctx.publish;
            p.inflight.set(p.inflight.get() + 1);
            true
        } else {
            false
        }
    }

    /// Publishes warm-up messages (sequence 0) to every topic until each connected subscriber
    /// has received one. After that every subscription is provably live, so every measured
    /// message is owed to every subscriber: nothing is lost to a subscribe racing a publish.
    async fn warm_up(&self, limit: Duration) -> bool {
        let s = &self.ctx.shared;
        let deadline = Instant::now() + limit;
        let topics = self.ctx.topics.len() as u32;
        while Instant::now() < deadline {
            for t in 0..topics {
                while !self.enqueue(t, 0) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            let p = &self.ctx.publish;
            wait_until(Duration::from_secs(10), || p.inflight.get() == 0).await;
            let all = || s.ready.get() >= s.connected.get().saturating_sub(s.dropped.get());
            if wait_until(Duration::from_millis(300), all).await {
                return true;
            }
        }
        false
    }

    /// Hands out `rate × duration` messages evenly over time, round-robin over topics.
    /// Returns the number handed out (fewer if the publishers' queues were full).
    async fn pace(&self, rate: f64, duration: Duration, next_topic: &mut u32) -> u64 {
        let topics = self.ctx.topics.len() as u32;
        let start = Instant::now();
        let mut handed = 0u64;
        let mut skipped = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let el = start.elapsed().min(duration);
            let due = (el.as_secs_f64() * rate) as u64;
            while handed + skipped < due {
                let t = *next_topic;
                *next_topic = (t + 1) % topics;
                let seq = self.ctx.publish.assigned.borrow()[t as usize] + 1;
                if self.enqueue(t, seq) {
                    self.ctx.publish.assigned.borrow_mut()[t as usize] = seq;
                    handed += 1;
                } else {
                    skipped += 1;
                }
            }
            if el >= duration {
                break;
            }
        }
        if skipped > 0 {
            self.ctx
                .shared
                .error(format!("publisher queue full: {skipped} publishes skipped"));
        }
        handed
    }

    /// Hands out messages round-robin over topics for `duration`, as fast as the publishers
    /// take them: each keeps its pipeline full, with as much again queued behind it. Returns
    /// the number handed out.
    async fn flood(&self, duration: Duration, next_topic: &mut u32) -> u64 {
        let topics = self.ctx.topics.len() as u32;
        let most = (self.txs.len() * self.ctx.window * 2 * self.ctx.batch) as u64;
        let p = &self.ctx.publish;
        let start = Instant::now();
        let mut handed = 0u64;
        while start.elapsed() < duration {
            while p.inflight.get() < most {
                let t = *next_topic;
                let seq = p.assigned.borrow()[t as usize] + 1;
                if !self.enqueue(t, seq) {
                    break;
                }
                p.assigned.borrow_mut()[t as usize] = seq;
                *next_topic = (t + 1) % topics;
                handed += 1;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        handed
    }

    async fn finish_publishing(&self) {
        let p = &self.ctx.publish;
        if !wait_until(Duration::from_secs(30), || p.inflight.get() == 0).await {
            self.ctx
                .shared
                .error("publishes still in flight after 30 s");
        }
    }

    fn stop(self) {
        self.ctx.shared.stopping.set(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// p50, p99 and max latency (µs) recorded since the histogram was last reset.
fn pctl(shared: &Shared) -> (u64, u64, u64) {
    let h = shared.hist.borrow();
    if h.is_empty() {
        return (0, 0, 0);
    }
    (h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max())
}

/// What one publishing interval measured (see [`Running::interval`]).
struct Interval {
    /// Messages handed to the publishers.
    handed: u64,
    /// Publishes the server acknowledged.
    acked: u64,
    /// From the first publish until every publish was answered.
    publish_s: f64,
    /// Deliveries owed for them.
    expected: u64,
    delivered: u64,
    /// From the first publish to the last delivery (at least 1 ms).
    window_s: f64,
    /// p50, p99, max latency in µs.
    lat: (u64, u64, u64),
    m: Measured,
}

impl Interval {
    fn delivered_per_s(&self) -> f64 {
        self.delivered as f64 / self.window_s
    }

    /// Server CPU per delivered message, in µs (0 when nothing was delivered).
    fn cpu_us_per_msg(&self) -> f64 {
        self.per_delivery(self.m.server_user_s + self.m.server_sys_s)
    }

    /// `cpu_s` seconds of CPU per delivered message, in µs (0 when nothing was delivered).
    fn per_delivery(&self, cpu_s: f64) -> f64 {
        if self.delivered > 0 {
            cpu_s * 1e6 / self.delivered as f64
        } else {
            0.0
        }
    }
}

impl RunResult {
    /// A result for `spec` on `flavor`, before anything is measured.
    fn of(spec: &Spec, flavor: Flavor) -> Self {
        Self {
            server: flavor.name().into(),
            workload: spec.name.clone(),
            kind: spec.kind.name(),
            transport: serde_json::to_value(spec.transport)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            subscribers: spec.subscribers,
            topics: spec.topics,
            nodes: spec.nodes,
            target_rate: spec.rate,
            ..Self::default()
        }
    }

    /// A run of `spec` on `flavor` that could not take place (the server did not start).
    pub(crate) fn failed(spec: &Spec, flavor: Flavor, why: String) -> Self {
        Self {
            server: flavor.name().into(),
            workload: spec.name.clone(),
            kind: spec.kind.name(),
            nodes: spec.nodes,
            failure: Some(why),
            ..Self::default()
        }
    }

    /// Copies the run's counters (drops, resets, correctness, failed publishes, errors).
    fn count(&mut self, ctx: &Ctx) {
        let sh = &ctx.shared;
        self.dropped = sh.dropped.get();
        self.resets = sh.resets.get();
        self.duplicated = sh.duplicated.get();
        self.out_of_order = sh.out_of_order.get();
        self.publish_failed = ctx.publish.failed.borrow().iter().sum();
        self.errors = sh.errors.borrow().clone();
    }

    /// Takes the figures of the highest step that kept up as the run's own.
    fn adopt_saturation_step(&mut self) {
        let Some(best) = self
            .steps
            .iter()
            .rfind(|s| s.kept_up && Some(s.rate) == self.saturation_rate)
        else {
            return;
        };
        self.delivered_per_s = best.delivered_per_s;
        self.cpu_us_per_msg = best.cpu_us_per_msg;
        self.lat_p50_us = best.lat_p50_us;
        self.lat_p99_us = best.lat_p99_us;
        self.lat_max_us = best.lat_max_us;
        self.generator_cpu_util = best.generator_cpu_util;
        self.other_cpu_util = best.other_cpu_util;
        self.publish_rate = best.rate;
    }
}

impl Kind {
    /// The name in results files and reports (`flow`, `idle`, `saturation`).
    pub(crate) fn name(self) -> String {
        format!("{self:?}").to_lowercase()
    }
}

/// Runs `spec` against `d` (fresh) and measures it.
pub(crate) async fn run(spec: &Spec, d: &Deployment, opts: &Opts) -> RunResult {
    let mut r = RunResult::of(spec, d.flavor);
    let before = d.usage();
    r.rss_before_kib = before.rss_kib;
    let run = Running::start(spec, d, opts);
    run.set_up(&mut r).await;
    match spec.kind {
        Kind::Idle => idle(d, before, &mut r).await,
        Kind::Flow => flow(spec, d, &run, &mut r).await,
        Kind::Saturation => saturation(spec, d, &run, &mut r).await,
        Kind::Throughput => throughput(spec, d, &run, &mut r).await,
    }
    r.count(&run.ctx);
    run.stop();
    // Give aborted tasks a moment to close their sockets before the server goes away.
    tokio::time::sleep(Duration::from_millis(100)).await;
    r
}

/// Server memory per connection, once the connections are up and subscribed.
async fn idle(d: &Deployment, before: Usage, r: &mut RunResult) {
    // Let allocations settle (the server may finish set-up work after replying).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = d.usage();
    r.rss_after_kib = after.rss_kib;
    if r.connected > 0 {
        r.rss_per_conn_bytes =
            (after.rss_kib as f64 - before.rss_kib as f64) * 1024.0 / r.connected as f64;
    }
}

/// Publishing at the spec's rate: throughput, CPU per message, latency and correctness.
async fn flow(spec: &Spec, d: &Deployment, run: &Running, r: &mut RunResult) {
    let duration = Duration::from_secs_f64(spec.duration_s);
    let drain = Duration::from_secs_f64(spec.drain_s);
    let i = run
        .interval(d, Load::Paced(spec.rate), duration, drain, &mut 0)
        .await;
    r.record(&i, run);
    r.publish_rate = i.handed as f64 / spec.duration_s;
}

/// Publishing as fast as the server answers: publishes per second, and what each costs
/// (on several nodes: on the publishing node, on Redis, and to deliver it elsewhere).
async fn throughput(spec: &Spec, d: &Deployment, run: &Running, r: &mut RunResult) {
    let duration = Duration::from_secs_f64(spec.duration_s);
    let drain = Duration::from_secs_f64(spec.drain_s);
    let i = run.interval(d, Load::Flood, duration, drain, &mut 0).await;
    r.record(&i, run);
    r.publish_rate = i.acked as f64 / i.publish_s.max(1e-3);
}

impl RunResult {
    /// Takes a flow or throughput interval's figures as the run's.
    fn record(&mut self, i: &Interval, run: &Running) {
        self.other_cpu_util = i.m.other_util;
        self.server_core_irq_util = i.m.server_core_irq_util;
        self.steal_util = i.m.steal_util;
        self.published = i.handed;
        self.window_s = i.window_s;
        self.expected = i.expected;
        self.delivered = i.delivered;
        self.lost = run.lost();
        self.delivered_per_s = i.delivered_per_s();
        self.server_user_s = i.m.server_user_s;
        self.server_sys_s = i.m.server_sys_s;
        self.server_cpu_s = i.m.server_user_s + i.m.server_sys_s;
        self.rss_after_kib = i.m.rss_kib;
        self.cpu_us_per_msg = i.cpu_us_per_msg();
        (self.lat_p50_us, self.lat_p99_us, self.lat_max_us) = i.lat;
        self.generator_cpu_util = i.m.generator_util;
        if self.nodes > 1 {
            self.node_cpu_s.clone_from(&i.m.node_cpu_s);
            self.redis_cpu_s = i.m.redis_cpu_s;
            self.redis_cpu_us_per_msg = i.per_delivery(i.m.redis_cpu_s);
        }
        if let Some(c) = &i.m.redis {
            self.redis_commands = c.commands;
            self.redis_reads = c.reads;
            self.redis_calls.clone_from(&c.calls);
        }
    }

    /// Publishes that were measured and succeeded.
    pub(crate) fn publishes_ok(&self) -> u64 {
        self.published.saturating_sub(self.publish_failed)
    }

    /// `x` per successful publish (`None` when nothing was published).
    pub(crate) fn per_publish(&self, x: f64) -> Option<f64> {
        let n = self.publishes_ok();
        (n > 0).then(|| x / n as f64)
    }
}

/// CPU accounting over one measurement window.
struct Window {
    t0: Instant,
    server: Usage,
    nodes: Vec<Usage>,
    redis: Option<Usage>,
    redis_counters: Option<Counters>,
    generator: Usage,
    machine: CpuStat,
    server_core: CpuStat,
}

/// What a window measured.
#[derive(Default)]
struct Measured {
    /// Every node and Redis together.
    server_user_s: f64,
    server_sys_s: f64,
    /// Each node's CPU seconds, and Redis's (multi-node runs).
    node_cpu_s: Vec<f64>,
    redis_cpu_s: f64,
    /// What Redis counted over the window (multi-node runs).
    redis: Option<Counters>,
    rss_kib: u64,
    /// Cores' worth of CPU, over the window's wall time.
    generator_util: f64,
    other_util: f64,
    server_core_irq_util: f64,
    steal_util: f64,
}

/// What Redis has counted so far, if the deployment has one (a failure is counted in `sh`).
async fn redis_counters(d: &Deployment, sh: &Shared) -> Option<Counters> {
    match d.redis()?.counters().await {
        Ok(c) => Some(c),
        Err(e) => {
            sh.error(format!("redis INFO: {e}"));
            None
        }
    }
}

impl Window {
    async fn start(d: &Deployment, sh: &Shared) -> Self {
        let redis_counters = redis_counters(d, sh).await;
        let (machine, server_core) = CpuStat::read(d.core);
        Self {
            t0: Instant::now(),
            server: d.usage(),
            nodes: d.node_usage(),
            redis: d.redis_usage(),
            redis_counters,
            generator: Usage::of_self(),
            machine,
            server_core,
        }
    }

    async fn end(&self, d: &Deployment, sh: &Shared) -> Measured {
        let (machine, server_core) = CpuStat::read(d.core);
        let srv = d.usage();
        let nodes = d.node_usage();
        let redis = d.redis_usage();
        let generator = Usage::of_self();
        let counters = redis_counters(d, sh).await;
        let wall = self.t0.elapsed().as_secs_f64().max(1e-3);
        let machine = machine.minus(self.machine);
        let server_core = server_core.minus(self.server_core);
        let server_cpu = srv.cpu_s() - self.server.cpu_s();
        let generator_cpu = generator.cpu_s() - self.generator.cpu_s();
        let cpu_since = |now: &Usage, then: &Usage| now.cpu_s() - then.cpu_s();
        Measured {
            server_user_s: srv.user_s - self.server.user_s,
            server_sys_s: srv.sys_s - self.server.sys_s,
            node_cpu_s: nodes
                .iter()
                .zip(&self.nodes)
                .map(|(now, then)| cpu_since(now, then))
                .collect(),
            redis_cpu_s: match (&redis, &self.redis) {
                (Some(now), Some(then)) => cpu_since(now, then),
                _ => 0.0,
            },
            redis: match (counters, &self.redis_counters) {
                (Some(now), Some(then)) => Some(now.since(then)),
                _ => None,
            },
            rss_kib: srv.rss_kib,
            generator_util: generator_cpu / wall,
            other_util: ((machine.procs - server_cpu - generator_cpu) / wall).max(0.0),
            server_core_irq_util: server_core.irq / wall,
            steal_util: machine.steal / wall,
        }
    }
}

/// Other processes' CPU use (in cores) above which a run or step counts as disturbed.
pub(crate) const MAX_OTHER_CPU: f64 = 0.1;

/// Waits (up to `limit`) until processes other than this one use less than `max_cores` of
/// CPU, measured over half-second samples; returns the last sample.
pub(crate) async fn wait_for_quiet(max_cores: f64, limit: Duration) -> f64 {
    let deadline = Instant::now() + limit;
    loop {
        let (b0, g0, t0) = (CpuStat::read(None).0, Usage::of_self(), Instant::now());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (b1, g1) = (CpuStat::read(None).0, Usage::of_self());
        let wall = t0.elapsed().as_secs_f64();
        let other = (b1.minus(b0).procs - (g1.cpu_s() - g0.cpu_s())) / wall;
        if other <= max_cores || Instant::now() >= deadline {
            return other.max(0.0);
        }
    }
}

/// Keeps up = every message delivered within the drain time, no subscriber dropped, and p99
/// latency under this bound (past saturation the backlog, and so latency, grows every second).
const KEEP_UP_P99_US: u64 = 250_000;

/// Raises the rate ×1.25 per step until delivery no longer keeps up; a step disturbed by other
/// processes is repeated (3 times at most over the run).
async fn saturation(spec: &Spec, d: &Deployment, run: &Running, r: &mut RunResult) {
    let sh = &run.ctx.shared;
    let mut rate = spec.rate;
    let mut next_topic = 0;
    let mut retries = 0;
    let mut steps = 0;
    while steps < spec.max_steps.max(1) {
        let dropped0 = sh.dropped.get();
        let step = saturation_step(spec, d, run, rate, &mut next_topic).await;
        let kept_up = step.kept_up;
        let disturbed = step.other_cpu_util > MAX_OTHER_CPU;
        r.steps.push(step);
        if disturbed && retries < 3 && sh.dropped.get() == dropped0 {
            // Another process took CPU during the step: this step says nothing. Wait for a
            // quiet machine (which also lets any backlog drain) and repeat it.
            retries += 1;
            wait_for_quiet(MAX_OTHER_CPU, Duration::from_secs(60)).await;
            continue;
        }
        steps += 1;
        if !kept_up {
            break;
        }
        r.saturation_rate = Some(rate);
        rate = (rate * 1.25).round();
    }
    r.lost = run.lost();
    r.published = run.ctx.publish.assigned.borrow().iter().sum();
    r.expected = run.expected();
    r.delivered = sh.delivered.get();
    r.adopt_saturation_step();
    if r.steps.iter().any(|s| s.generator_cpu_util > 0.9) {
        sh.error("generator CPU above 90% in a step: saturation may be the generator's");
    }
}

/// One saturation step at `rate`, and whether delivery kept up with it.
async fn saturation_step(
    spec: &Spec,
    d: &Deployment,
    run: &Running,
    rate: f64,
    next_topic: &mut u32,
) -> Step {
    let sh = &run.ctx.shared;
    let dropped0 = sh.dropped.get();
    let duration = Duration::from_secs_f64(spec.duration_s);
    let drain = Duration::from_secs_f64(spec.drain_s);
    let i = run
        .interval(d, Load::Paced(rate), duration, drain, next_topic)
        .await;
    let (p50, p99, max) = i.lat;
    Step {
        rate,
        expected: i.expected,
        delivered: i.delivered,
        delivered_per_s: i.delivered_per_s(),
        cpu_us_per_msg: i.cpu_us_per_msg(),
        lat_p50_us: p50,
        lat_p99_us: p99,
        lat_max_us: max,
        generator_cpu_util: i.m.generator_util,
        other_cpu_util: i.m.other_util,
        kept_up: i.delivered >= i.expected && sh.dropped.get() == dropped0 && p99 <= KEEP_UP_P99_US,
    }
}

impl Flavor {
    /// Transports this server is measured with for a workload. The floor runs the WebSocket
    /// and SSE workloads on one node, the saturation steps aside (its steps are long, and a
    /// floor is a cost per delivery, not a rate): no long-poll, no Redis, no batches.
    pub(crate) fn variants(self, w: &Spec) -> Vec<Transport> {
        let t = w.transport;
        if (w.batch > 1 || w.ws_publish) && self != Flavor::Switchboard {
            return Vec::new(); // only switchboard takes batches and WebSocket publishes
        }
        if self == Flavor::Floor {
            let streams = matches!(t, Transport::Ws | Transport::Sse);
            let floor_kind = matches!(w.kind, Kind::Flow | Kind::Idle);
            return if streams && floor_kind && w.nodes <= 1 {
                vec![t]
            } else {
                Vec::new()
            };
        }
        match (self, t) {
            (Flavor::Nchan, Transport::Poll) => vec![Transport::Poll, Transport::PollMultipart],
            (Flavor::Switchboard, Transport::PollMultipart) => vec![],
            _ => vec![t],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_rates() {
        let mut i = Interval {
            handed: 10,
            acked: 10,
            publish_s: 1.0,
            expected: 1000,
            delivered: 1000,
            window_s: 2.0,
            lat: (1, 2, 3),
            m: Measured {
                server_user_s: 0.015,
                server_sys_s: 0.005,
                ..Measured::default()
            },
        };
        assert_eq!(i.delivered_per_s(), 500.0);
        assert!((i.cpu_us_per_msg() - 20.0).abs() < 1e-9);
        i.delivered = 0;
        assert_eq!(i.cpu_us_per_msg(), 0.0);
    }

    #[test]
    fn saturation_adopts_the_last_step_at_the_rate_kept_up() {
        let step = |rate: f64, kept_up: bool, lat_p99_us: u64| Step {
            rate,
            kept_up,
            lat_p99_us,
            delivered_per_s: rate * 10.0,
            ..Step::default()
        };
        let mut r = RunResult {
            // 25 msg/s was disturbed and repeated: the repeat counts.
            steps: vec![
                step(20.0, true, 1),
                step(25.0, true, 2),
                step(25.0, true, 3),
                step(31.0, false, 4),
            ],
            saturation_rate: Some(25.0),
            ..RunResult::default()
        };
        r.adopt_saturation_step();
        assert_eq!(
            (r.publish_rate, r.lat_p99_us, r.delivered_per_s),
            (25.0, 3, 250.0)
        );
        let mut none = RunResult {
            steps: vec![step(20.0, false, 9)],
            ..RunResult::default()
        };
        none.adopt_saturation_step();
        assert_eq!((none.publish_rate, none.lat_p99_us), (0.0, 0));
    }

    #[test]
    fn result_names_kind_and_transport() {
        let spec = Spec {
            name: "longpoll-1k".into(),
            kind: Kind::Flow,
            transport: Transport::PollMultipart,
            subscribers: 3,
            topics: 1,
            rate: 5.0,
            duration_s: 1.0,
            drain_s: 1.0,
            max_steps: 1,
            nodes: 1,
            data_dir: false,
            publishers: 8,
            batch: 1,
            window: client::PUBLISH_WINDOW as u32,
            ws_publish: false,
        };
        let r = RunResult::of(&spec, Flavor::Nchan);
        assert_eq!((r.server.as_str(), r.kind.as_str()), ("nchan", "flow"));
        assert_eq!((r.transport.as_str(), r.subscribers), ("poll-multipart", 3));
        let f = RunResult::failed(&spec, Flavor::Switchboard, "no".into());
        assert_eq!(
            (f.transport.as_str(), f.failure.as_deref()),
            ("", Some("no"))
        );
    }
}
