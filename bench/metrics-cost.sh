#!/usr/bin/env bash
# What metrics cost: the fan-out workloads run with metrics on and off (`--metrics false`),
# alternating round by round so that a drift of the machine affects both alike, and the
# median server CPU per delivered message of each side compared.
#
#   bench/metrics-cost.sh                    3 rounds of ws-fanout-1k and sse-fanout-1k
#   ROUNDS=5 bench/metrics-cost.sh --duration 20
#
# Further arguments go to bench/run.sh. Writes bench/results/metrics-cost.md.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${ROUNDS:-3}
only=${ONLY:-ws-fanout-1k,sse-fanout-1k}
names=()
for round in $(seq 1 "$rounds"); do
    bench/run.sh --only "$only" --results-name "metrics-on-$round" "$@"
    bench/run.sh --only "$only" --results-name "metrics-off-$round" \
        --switchboard-arg=--metrics --switchboard-arg=false "$@"
    names+=("metrics-on-$round" "metrics-off-$round")
done

python3 - "$rounds" <<'PY' | tee bench/results/metrics-cost.md
import json, statistics, sys

rounds = int(sys.argv[1])
cpu = {}  # (workload, side) -> [µs per delivery, one per round]
for side in ("on", "off"):
    for round in range(1, rounds + 1):
        with open(f"bench/results/metrics-{side}-{round}.json") as f:
            for run in json.load(f)["runs"]:
                cpu.setdefault((run["workload"], side), []).append(run["cpu_us_per_msg"])
print(f"Server CPU per delivered message (µs), median of {rounds} alternating rounds:\n")
print("| workload | metrics on | metrics off | cost of metrics |")
print("|---|---|---|---|")
for workload in sorted({w for w, _ in cpu}):
    on, off = statistics.median(cpu[workload, "on"]), statistics.median(cpu[workload, "off"])
    spread = lambda xs: f"{min(xs):.2f}–{max(xs):.2f}"
    print(
        f"| {workload} | {on:.2f} ({spread(cpu[workload, 'on'])}) "
        f"| {off:.2f} ({spread(cpu[workload, 'off'])}) | {100 * (on / off - 1):+.1f} % |"
    )
PY
for name in "${names[@]}"; do rm -f "bench/results/$name".{json,md,svg}; done
