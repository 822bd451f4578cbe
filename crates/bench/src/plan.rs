//! The workloads of a suite run: their sizes and rates, full or smoke, and `--only`.
//!
//! Multi-node workloads are named `nodes-…`; the single-node workload each one is compared
//! with is the same name without `nodes-` (see [`single_node_basis`]).

use crate::SuiteArgs;
use crate::client::{PUBLISH_WINDOW, Transport};
use crate::workload::{Kind, Spec};

/// A workload with the common defaults (5 s drain, one step).
fn spec(
    name: &str,
    kind: Kind,
    transport: Transport,
    subs: u32,
    topics: u32,
    rate: f64,
    duration_s: f64,
) -> Spec {
    Spec {
        name: name.into(),
        kind,
        transport,
        subscribers: subs,
        topics,
        rate,
        duration_s,
        drain_s: 5.0,
        max_steps: 1,
        nodes: 1,
        data_dir: false,
        publishers: 8,
        batch: 1,
        window: PUBLISH_WINDOW as u32,
        ws_publish: false,
    }
}

/// Publisher connections of `publish`, `disk-publish` and `disk-latency-ws`.
const PUBLISHERS: u32 = 64;

/// Publishes per second of `disk-latency-ws`: half of what `disk-publish` sustains on the
/// reference machine (21.0k/s, bench/README.md), as the latency target asks.
const DISK_LATENCY_RATE: f64 = 10_500.0;

/// Publishes per second of `disk-latency-publish-ws`: half of what `disk-publish-ws` sustains
/// on the reference machine (104k/s).
const DISK_WS_LATENCY_RATE: f64 = 52_000.0;

/// WebSocket `publish` frames each publisher keeps unanswered in `publish-ws` and
/// `disk-publish-ws`: as many as the server starts ahead of their answers (its
/// `ws::publishes::MAX_IN_FLIGHT`).
const WS_PUBLISHES_IN_FLIGHT: u32 = 64;

/// Messages per `POST /publish` request in `publish-batch`.
const BATCH: u32 = 100;

/// Nodes of every multi-node workload: the publishers' node and two nodes of subscribers.
const NODES: u32 = 3;

/// `--only nodes`: every multi-node workload, and the single-node ones they are compared with.
const NODES_GROUP: &str = "nodes";

/// The single-node workload that multi-node workload `name` is compared with (`nodes-X` →
/// `X`), if `name` is a multi-node one.
pub(crate) fn single_node_basis(name: &str) -> Option<&str> {
    name.strip_prefix("nodes-")
}

/// Whether `--only` asks for workload `name` (by name, or through the `nodes` group).
fn selected(only: &[String], name: &str, all: &[Spec]) -> bool {
    let in_nodes_group = || {
        single_node_basis(name).is_some()
            || all.iter().any(|w| single_node_basis(&w.name) == Some(name))
    };
    only.iter()
        .any(|o| o == name || (o == NODES_GROUP && in_nodes_group()))
}

/// The workloads. Fan-out rates are chosen so that each delivers 50k messages/s: about half
/// of what either server (and the generator) sustains on one core of the reference machine,
/// so CPU per message compares efficiency under load, not who collapses first (the
/// saturation workload measures that separately).
pub(crate) fn plan(a: &SuiteArgs) -> Vec<Spec> {
    let mut v = workloads(a.smoke, a.duration);
    v.iter_mut()
        .filter(|w| w.transport == Transport::Poll)
        .for_each(|w| w.drain_s = 10.0);
    if !a.only.is_empty() {
        let all = v.clone();
        v.retain(|w| selected(&a.only, &w.name, &all));
    }
    v
}

/// Every workload, at full size or (`smoke`) tiny; `duration` overrides the seconds of
/// publishing of flow workloads.
fn workloads(smoke: bool, duration: Option<f64>) -> Vec<Spec> {
    use Kind::*;
    use Transport::*;
    let d = duration.unwrap_or(if smoke { 1.5 } else { 10.0 });
    // (full, smoke) sizes and rates.
    let z = |full: u32, small: u32| if smoke { small } else { full };
    let r = |full: f64, small: f64| if smoke { small } else { full };
    let (idle_subs, idle_topics) = (z(10_000, 200), z(100, 10));
    let sat = spec(
        "saturation-ws-1k",
        Saturation,
        Ws,
        z(1000, 20),
        1,
        20.0,
        r(3.0, 1.0),
    );
    let mut v = vec![
        spec("ws-fanout-1k", Flow, Ws, z(1000, 20), 1, 50.0, d),
        spec("ws-fanout-5k", Flow, Ws, z(5000, 50), 1, 10.0, d),
        spec("sse-fanout-1k", Flow, Sse, z(1000, 20), 1, 50.0, d),
        spec("sse-fanout-5k", Flow, Sse, z(5000, 50), 1, 10.0, d),
        // 50k deliveries/s as 50 subscribers × 1,000 msg/s: several messages per subscriber
        // within a few ms, what a write delay can batch (at 50 msg/s it cannot).
        spec("ws-burst-50", Flow, Ws, z(50, 5), 1, r(1000.0, 100.0), d),
        spec(
            "rooms-10k",
            Flow,
            Ws,
            z(10_000, 100),
            z(1000, 10),
            r(2000.0, 100.0),
            d,
        ),
        spec(
            "longpoll-1k",
            Flow,
            Poll,
            z(1000, 20),
            1,
            r(1000.0, 100.0),
            d,
        ),
        spec("idle-ws-10k", Idle, Ws, idle_subs, idle_topics, 0.0, 0.0),
        spec("idle-sse-10k", Idle, Sse, idle_subs, idle_topics, 0.0, 0.0),
        Spec {
            max_steps: z(16, 2),
            drain_s: 2.0,
            ..sat
        },
        // The rate is filled in once saturation is known.
        spec("latency-ws-1k", Flow, Ws, z(1000, 20), 1, 0.0, d),
    ];
    // Publishes as fast as one node answers them, over many topics with one subscriber each,
    // from many publisher connections (as many clients publish), in memory and with a data
    // directory (each publish acknowledged once on disk: one commit takes what all the
    // connections sent meanwhile); and the latency from publish to delivery with a data
    // directory at a fixed rate, well below what it sustains.
    let (subs, topics) = (z(100, 10), z(100, 10));
    let many_publishers = |w: Spec| Spec {
        publishers: PUBLISHERS,
        ..w
    };
    let on_disk = |w: Spec| Spec {
        data_dir: true,
        ..many_publishers(w)
    };
    v.push(many_publishers(spec(
        "publish", Throughput, Ws, subs, topics, 0.0, d,
    )));
    v.push(on_disk(spec(
        "disk-publish",
        Throughput,
        Ws,
        subs,
        topics,
        0.0,
        d,
    )));
    v.push(on_disk(spec(
        "disk-latency-ws",
        Flow,
        Ws,
        subs,
        topics,
        r(DISK_LATENCY_RATE, 100.0),
        d,
    )));
    // Several nodes on one Redis: the fan-outs above, published on node 0 and delivered on
    // the two others; and publishes as fast as node 0 answers them, over many topics with one
    // subscriber each (on the other nodes), so that each is delivered too. A smoke run leaves
    // out the SSE fan-out: its SSE path is the single-node one.
    let on_nodes = |w: Spec| Spec { nodes: NODES, ..w };
    v.push(on_nodes(spec(
        "nodes-ws-fanout-1k",
        Flow,
        Ws,
        z(1000, 20),
        1,
        50.0,
        d,
    )));
    if !smoke {
        v.push(on_nodes(spec(
            "nodes-sse-fanout-1k",
            Flow,
            Sse,
            1000,
            1,
            50.0,
            d,
        )));
    }
    // Publishing as fast as one node answers, 100 topics with one WS subscriber each: one
    // request per message, then batches of 100 on the same topics and subscribers.
    let (subs, topics) = (z(100, 10), z(100, 10));
    v.push(spec("publish-single", Throughput, Ws, subs, topics, 0.0, d));
    v.push(Spec {
        batch: BATCH,
        ..spec("publish-batch", Throughput, Ws, subs, topics, 0.0, d)
    });
    v.push(on_nodes(spec(
        "nodes-publish",
        Throughput,
        Ws,
        subs,
        topics,
        0.0,
        d,
    )));
    // The batches of `publish-batch` with a data directory: what a commit costs when it is not
    // held to the publishes a few connections have in flight.
    v.push(Spec {
        batch: BATCH,
        data_dir: true,
        ..spec("disk-publish-batch", Throughput, Ws, subs, topics, 0.0, d)
    });
    // Publishers as browsers, curl and common HTTP libraries are: one request at a time on each
    // of 100 connections (one per topic), in memory and on disk. Pipelined publishers (above)
    // get their replies back to back in one write from memory, never from disk, where each
    // request of a connection waits for its commit before the next is read.
    let one_at_a_time = |w: Spec| Spec {
        publishers: topics,
        window: 1,
        ..w
    };
    v.push(one_at_a_time(spec(
        "publish-unpipelined",
        Throughput,
        Ws,
        subs,
        topics,
        0.0,
        d,
    )));
    v.push(one_at_a_time(Spec {
        data_dir: true,
        ..spec(
            "disk-publish-unpipelined",
            Throughput,
            Ws,
            subs,
            topics,
            0.0,
            d,
        )
    }));
    // Publishers on WebSocket, as the browser client publishes: 64 connections, each with as
    // many `publish` frames unanswered as the server starts ahead of their answers, in memory
    // and on disk (where a connection's publishes in flight share commits).
    let on_websocket = |w: Spec| Spec {
        publishers: PUBLISHERS,
        window: WS_PUBLISHES_IN_FLIGHT,
        ws_publish: true,
        ..w
    };
    v.push(on_websocket(spec(
        "publish-ws",
        Throughput,
        Ws,
        subs,
        topics,
        0.0,
        d,
    )));
    v.push(on_websocket(Spec {
        data_dir: true,
        ..spec("disk-publish-ws", Throughput, Ws, subs, topics, 0.0, d)
    }));
    // The latency target for WebSocket publishers: at half their rate on disk.
    v.push(on_websocket(Spec {
        data_dir: true,
        ..spec(
            "disk-latency-publish-ws",
            Flow,
            Ws,
            subs,
            topics,
            r(DISK_WS_LATENCY_RATE, 100.0),
            d,
        )
    }));
    v
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn plan_of(args: &[&str]) -> Vec<Spec> {
        let argv = [
            &[
                "switchboard-bench",
                "suite",
                "--switchboard-bin",
                "sb",
                "--out",
                "o",
            ],
            args,
        ]
        .concat();
        match crate::Cli::try_parse_from(argv).map(|c| c.cmd) {
            Ok(crate::Cmd::Suite(a)) => plan(&a),
            _ => Vec::new(),
        }
    }

    fn shape(w: &Spec) -> (&str, u32, u32, f64, f64, f64, u32) {
        let t = (
            w.subscribers,
            w.topics,
            w.rate,
            w.duration_s,
            w.drain_s,
            w.max_steps,
        );
        (w.name.as_str(), t.0, t.1, t.2, t.3, t.4, t.5)
    }

    fn names(v: &[Spec]) -> String {
        v.iter()
            .map(|w| w.name.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn full_plan() {
        let v = plan_of(&[]);
        assert_eq!(
            names(&v),
            "ws-fanout-1k ws-fanout-5k sse-fanout-1k sse-fanout-5k ws-burst-50 rooms-10k longpoll-1k \
             idle-ws-10k idle-sse-10k saturation-ws-1k latency-ws-1k \
             publish disk-publish disk-latency-ws \
             nodes-ws-fanout-1k nodes-sse-fanout-1k publish-single publish-batch nodes-publish \
             disk-publish-batch publish-unpipelined disk-publish-unpipelined publish-ws \
             disk-publish-ws disk-latency-publish-ws"
        );
        let want = [
            ("rooms-10k", 10_000, 1000, 2000.0, 10.0, 5.0, 1),
            ("longpoll-1k", 1000, 1, 1000.0, 10.0, 10.0, 1),
            ("idle-sse-10k", 10_000, 100, 0.0, 0.0, 5.0, 1),
            ("saturation-ws-1k", 1000, 1, 20.0, 3.0, 2.0, 16),
        ];
        for (i, want) in [5, 6, 8, 9].into_iter().zip(want) {
            assert_eq!(shape(&v[i]), want);
        }
        assert_eq!(v[9].kind, Kind::Saturation);
        assert_eq!(
            shape(&v[15]),
            ("nodes-sse-fanout-1k", 1000, 1, 50.0, 10.0, 5.0, 1)
        );
        assert_eq!(
            shape(&v[18]),
            ("nodes-publish", 100, 100, 0.0, 10.0, 5.0, 1)
        );
        assert_eq!((v[18].kind, v[18].nodes), (Kind::Throughput, 3));
        assert_eq!(
            shape(&v[17]),
            ("publish-batch", 100, 100, 0.0, 10.0, 5.0, 1)
        );
        assert_eq!((v[16].batch, v[17].batch, v[17].nodes), (1, 100, 1));
        assert_eq!(shape(&v[4]), ("ws-burst-50", 50, 1, 1000.0, 10.0, 5.0, 1));
        assert!(v[..14].iter().all(|w| w.nodes == 1));
        let on_disk: Vec<_> = v.iter().filter(|w| w.data_dir).map(|w| &w.name).collect();
        assert_eq!(
            on_disk,
            [
                "disk-publish",
                "disk-latency-ws",
                "disk-publish-batch",
                "disk-publish-unpipelined",
                "disk-publish-ws",
                "disk-latency-publish-ws"
            ]
        );
        let on_websocket: Vec<_> = v.iter().filter(|w| w.ws_publish).collect();
        assert_eq!(on_websocket.len(), 3);
        assert!(
            on_websocket
                .iter()
                .all(|w| (w.publishers, w.window) == (PUBLISHERS, WS_PUBLISHES_IN_FLIGHT))
        );
    }

    #[test]
    fn nodes_group() {
        let v = plan_of(&["--only", "nodes", "--compare"]);
        assert_eq!(
            names(&v),
            "ws-fanout-1k sse-fanout-1k publish nodes-ws-fanout-1k nodes-sse-fanout-1k \
             nodes-publish"
        );
        let v = plan_of(&["--smoke", "--only", "nodes,rooms-10k"]);
        assert_eq!(
            names(&v),
            "ws-fanout-1k rooms-10k publish nodes-ws-fanout-1k nodes-publish"
        );
        assert_eq!(shape(&v[4]), ("nodes-publish", 10, 10, 0.0, 1.5, 5.0, 1));
        assert_eq!(
            single_node_basis("nodes-ws-fanout-1k"),
            Some("ws-fanout-1k")
        );
        assert_eq!(single_node_basis("ws-fanout-1k"), None);
    }

    #[test]
    fn smoke_plan_and_only() {
        let v = plan_of(&["--smoke", "--only", "longpoll-1k,saturation-ws-1k"]);
        assert_eq!(v.len(), 2);
        assert_eq!(shape(&v[0]), ("longpoll-1k", 20, 1, 100.0, 1.5, 10.0, 1));
        assert_eq!(shape(&v[1]), ("saturation-ws-1k", 20, 1, 20.0, 1.0, 2.0, 2));
        let v = plan_of(&["--duration", "20", "--only", "ws-fanout-5k"]);
        assert_eq!(shape(&v[0]), ("ws-fanout-5k", 5000, 1, 10.0, 20.0, 5.0, 1));
    }
}
