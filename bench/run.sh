#!/usr/bin/env bash
# Benchmark switchboard (and, with --compare, Nchan) with crates/bench (switchboard-bench).
#
#   bench/run.sh              switchboard only, release build     → bench/results/switchboard.*
#   bench/run.sh --compare    switchboard and Nchan, same run     → bench/results/compare.*
#   bench/run.sh --smoke      tiny run in seconds (make test); fails on any switchboard error
#
# Any further arguments go to `switchboard-bench suite` (e.g. --only ws-fanout-1k,idle-ws-10k,
# --duration 20, --switchboard-arg=--send-queue --switchboard-arg=4096; `--only nodes
# --results-name nodes`: the multi-node workloads on Redis, into bench/results/nodes.*).
set -euo pipefail

cd "$(dirname "$0")/.."
mode=default
args=()
for a in "$@"; do
    case "$a" in
        --compare) mode=compare ;;
        --smoke) mode=smoke ;;
        -h | --help)
            sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) args+=("$a") ;;
    esac
done

# 10,000 connections per workload: one fd each in the generator and in the server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 10500 ] && [ "$mode" != smoke ]; then
    echo "bench: open-file limit $(ulimit -n) is too low for 10,000 connections (raise the hard limit)" >&2
    exit 2
fi

CARGO=${CARGO:-cargo}
if [ "$mode" = smoke ]; then
    # The debug build that `make test` already has: no slow release build for a smoke run.
    $CARGO build -q -p switchboard -p switchboard-bench
    profile=debug
    out=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-bench-smoke.XXXXXX")
    trap 'rm -rf "$out"' EXIT
    set -- --smoke
else
    $CARGO build -q --release -p switchboard -p switchboard-bench
    profile=release
    out=bench/results
    set --
    [ "$mode" = compare ] && set -- --compare
fi
target_dir=$($CARGO metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
target_dir=${target_dir:-target}

# Installs Debian packages. A package may start a system-wide service (nginx, Redis); the
# bench runs its own, separately, on free ports.
apt_install() {
    echo "bench: installing $* (Debian packages)"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# Whether the run includes multi-node workloads (`nodes-…`, or the group `--only nodes`),
# which start a redis-server of their own: every run does unless `--only` leaves them out.
needs_redis() {
    local only="" i
    for ((i = 0; i < ${#args[@]}; i++)); do
        case "${args[i]}" in
            --only) only=${args[i + 1]:-} ;;
            --only=*) only=${args[i]#--only=} ;;
        esac
    done
    [ -z "$only" ] || [[ ",$only," == *,nodes,* ]] || [[ ",$only," == *,nodes-* ]]
}

if [ "$mode" = compare ]; then
    nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
    if [ ! -x "$nginx_bin" ] || [ ! -f /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
        apt_install nginx libnginx-mod-nchan
        nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
    fi
    set -- "$@" --nginx "$nginx_bin"
fi
if needs_redis; then
    command -v redis-server >/dev/null || apt_install redis-server
    set -- "$@" --redis-server "$(command -v redis-server)"
fi

# Server on core 0 (the bench pins it; every node and Redis of a multi-node workload too),
# generator on core 1, when there are two cores.
pin=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    pin=(taskset -c 1)
else
    set -- "$@" --no-pin
    echo "bench: fewer than 2 cores (or no taskset): server and generator share CPUs" >&2
fi

status=0
"${pin[@]}" "$target_dir/$profile/switchboard-bench" suite \
    --switchboard-bin "$target_dir/$profile/switchboard" \
    --nchan-conf bench/nchan.conf \
    --nchan-redis-conf bench/nchan-redis.conf \
    --out "$out" "$@" "${args[@]}" || status=$?
exit "$status"
