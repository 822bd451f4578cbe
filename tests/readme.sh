#!/usr/bin/env bash
# Runs the README's examples verbatim against `make run`, and checks what they print.
# Every command below must appear in README.md character for character.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "readme.sh: FAIL: $*" >&2; exit 1; }
in_readme() { grep -qF -- "$1" README.md || fail "not in README.md verbatim: $1"; }

if curl -s -o /dev/null --max-time 1 http://127.0.0.1:8080/healthz; then
  fail "something already listens on 127.0.0.1:8080; the README's examples need that port"
fi

work=$(mktemp -d)
in_readme "make run"
setsid make run >"$work/run.out" 2>"$work/run.err" &
gateway=$!
cleanup() { kill -TERM -- "-$gateway" 2>/dev/null || true; wait "$gateway" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 1 900); do
  grep -q "listening on" "$work/run.out" 2>/dev/null && break
  kill -0 "$gateway" 2>/dev/null || { cat "$work/run.err" >&2; fail "make run exited"; }
  sleep 1
done
grep -q "listening on http://127.0.0.1:8080" "$work/run.out" || fail "make run did not start on 127.0.0.1:8080"

# Runs one README command (checked to be verbatim) with a time limit, output to $work/out.
run() {
  local seconds=$1 command=$2
  in_readme "$command"
  timeout "$seconds" bash -c "$command" >"$work/out" 2>&1 || true
}
expect() { grep -qF -- "$1" "$work/out" || { cat "$work/out" >&2; fail "expected output to contain: $1"; }; }

# Follow over SSE while publishing from another "terminal".
sse="curl -N 'http://127.0.0.1:8080/events?topic=chat'"
in_readme "$sse"
timeout 6 bash -c "$sse" >"$work/sse" 2>/dev/null &
follower=$!
sleep 1
run 5 "curl -d hello 'http://127.0.0.1:8080/events?topic=chat'"
expect '"topic":"chat"'
run 5 "curl -H 'Content-Type: application/json' -d '{\"user\":\"ann\",\"text\":\"hi\"}' 'http://127.0.0.1:8080/poll?topic=chat'"
expect '"id":'
wait "$follower" || true
cp "$work/sse" "$work/out"
expect "event: message"
expect '"data":"hello"'
expect '"data":{"user":"ann","text":"hi"}'

# Resuming with an id from another run: told first, then everything retained.
run 3 "curl -N -H 'Last-Event-ID: 1j6ai8g6ff-hodxx5zpv7-1' 'http://127.0.0.1:8080/events?topic=chat'"
expect "event: reset"
expect '"reason":"history_lost"'
expect '"data":"hello"'

# Long-poll with a starting cursor.
poll="cursor=\$(curl -s 'http://127.0.0.1:8080/poll?topic=chat&timeout=0' | sed 's/.*\"cursor\":\"\\([^\"]*\\)\".*/\\1/')"
in_readme "$poll"
publish="curl -d 'while you were away' 'http://127.0.0.1:8080/poll?topic=chat'"
in_readme "$publish"
fetch="curl \"http://127.0.0.1:8080/poll?topic=chat&since=\$cursor&timeout=5\""
in_readme "$fetch"
timeout 10 bash -c "$poll; $publish >/dev/null; $fetch" >"$work/out" 2>/dev/null
expect '"data":"while you were away"'

run 5 "curl -i 'http://127.0.0.1:8080/events?topic=no%20spaces'"
expect "HTTP/1.1 400 Bad Request"
expect "x-request-id: "
expect '{"error":{"code":"bad_topic","message":"topic name has the character '"' '"', outside A-Z a-z 0-9 . _ - : @ /","request_id":"'

# Metrics, while the SSE follower above has come and gone and a WebSocket is open.
timeout 10 bash -c "sleep 10 | websocat 'ws://127.0.0.1:8080/ws?topic=chat'" >/dev/null 2>&1 &
watcher=$!
for _ in $(seq 1 50); do
  curl -s http://127.0.0.1:8080/metrics | grep -q 'switchboard_connections{transport="ws"} 1' && break
  sleep 0.1
done
run 5 "curl -s http://127.0.0.1:8080/metrics | grep switchboard_connections"
expect 'switchboard_connections{transport="ws"} 1'
expect 'switchboard_connections_closed_total{reason="normal",transport="sse"}'
kill "$watcher" 2>/dev/null || true

# websocat: typing a frame, then the one-shot form.
typed='{"type":"publish","topic":"chat","data":{"text":"hi from websocat"},"ref":"1"}'
in_readme "$typed"
interactive="websocat 'ws://127.0.0.1:8080/ws?topic=chat'"
in_readme "$interactive"
(echo "$typed"; sleep 1) | timeout 5 bash -c "$interactive" >"$work/out" 2>&1 || true
expect '"type":"subscribed"'
expect '"type":"ack","ref":"1"'
expect '"data":{"text":"hi from websocat"}'
run 5 "echo '{\"type\":\"publish\",\"topic\":\"chat\",\"data\":\"one-shot\",\"ref\":\"r1\"}' | websocat -n1 'ws://127.0.0.1:8080/ws'"
expect '{"type":"ack","ref":"r1","topic":"chat","id":"'

# Several nodes on one Redis: published on the first, followed on the second.
redis="redis-server --port 6380 --save '' &"
node1="target/release/switchboard serve --listen 127.0.0.1:8081 --redis redis://127.0.0.1:6380 &"
node2="target/release/switchboard serve --listen 127.0.0.1:8082 --redis redis://127.0.0.1:6380 &"
for command in "$redis" "$node1" "$node2"; do in_readme "$command"; done
for port in 6380 8081 8082; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then fail "port $port is taken; the README's example needs it"; fi
done
setsid bash -c "$redis $node1 $node2 wait" >"$work/nodes.out" 2>&1 &
nodes=$!
stop_nodes() { kill -TERM -- "-$nodes" 2>/dev/null || true; wait "$nodes" 2>/dev/null || true; }
trap 'stop_nodes; cleanup' EXIT
for port in 8081 8082; do
  for _ in $(seq 1 100); do
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/readyz" && break
    sleep 0.1
  done
  curl -sf -o /dev/null "http://127.0.0.1:$port/readyz" || { cat "$work/nodes.out" >&2; fail "node on $port is not ready"; }
done
follow="curl -N 'http://127.0.0.1:8082/events?topic=chat'"
in_readme "$follow"
timeout 4 bash -c "$follow" >"$work/sse" 2>/dev/null &
follower=$!
for _ in $(seq 1 50); do grep -q "event: subscribed" "$work/sse" && break; sleep 0.1; done
run 5 "curl -d 'from node one' 'http://127.0.0.1:8081/events?topic=chat'"
expect '"topic":"chat"'
wait "$follower" || true
cp "$work/sse" "$work/out"
expect '"data":"from node one"'
stop_nodes

# A node with its admin routes on an address of their own, behind a key.
admin_node="target/release/switchboard serve --listen 127.0.0.1:8083 --admin-listen 127.0.0.1:9090 --admin-key change-me &"
in_readme "$admin_node"
for port in 8083 9090; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then fail "port $port is taken; the README's example needs it"; fi
done
setsid bash -c "$admin_node wait" >"$work/admin.out" 2>&1 &
admin=$!
stop_admin() { kill -TERM -- "-$admin" 2>/dev/null || true; wait "$admin" 2>/dev/null || true; }
trap 'stop_admin; stop_nodes; cleanup' EXIT
for _ in $(seq 1 100); do grep -q "admin listening on" "$work/admin.out" && break; sleep 0.1; done
run 5 "curl -s -H 'Authorization: Bearer change-me' http://127.0.0.1:9090/metrics | grep switchboard_broker_up"
expect "switchboard_broker_up 1"
curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9090/metrics >"$work/out"
expect "401"
curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8083/metrics >"$work/out"
expect "404"
stop_admin

echo "readme.sh: every README example works verbatim"
