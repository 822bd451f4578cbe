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

# Runs `follow` (a streaming curl, for 4 s) in the background until it is subscribed, then the
# README command `publish`; `$work/out` ends up with what the follower printed.
follow_then_publish() {
  local follow=$1 publish=$2
  timeout 4 bash -c "$follow" >"$work/sse" 2>/dev/null &
  local follower=$!
  for _ in $(seq 1 50); do grep -q "event: subscribed" "$work/sse" && break; sleep 0.1; done
  run 5 "$publish"
  expect '"topic":"chat"'
  wait "$follower" || true
  cp "$work/sse" "$work/out"
}

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

# The admin API and the dashboard, while an SSE stream follows `chat`.
timeout 5 curl -s -d 'for the admin' 'http://127.0.0.1:8080/events?topic=chat' >/dev/null
sse_follow="curl -N 'http://127.0.0.1:8080/events?topic=chat'"
timeout 8 bash -c "$sse_follow" >"$work/sse" 2>/dev/null &
follower=$!
for _ in $(seq 1 50); do grep -q "event: subscribed" "$work/sse" && break; sleep 0.1; done
run 5 "curl 'http://127.0.0.1:8080/admin/topics?prefix=ch&limit=10'"
expect '{"topics":[{"topic":"chat","subscribers":{"ws":0,"sse":1,"poll":0},"retained":{"messages":'
run 5 "curl 'http://127.0.0.1:8080/admin/topics/chat'"
expect '"data":"for the admin"'
run 5 "curl 'http://127.0.0.1:8080/admin/connections?topic=chat'"
expect '"count":{"ws":0,"sse":1,"poll":0}'
run 5 "curl -X DELETE 'http://127.0.0.1:8080/admin/topics/chat'"
expect '{"deleted":"chat"}'
for _ in $(seq 1 50); do grep -q '"reason":"deleted"' "$work/sse" && break; sleep 0.1; done
grep -q '"reason":"deleted"' "$work/sse" || fail "the SSE follower got no deleted reset"
find_id="id=\$(curl -s 'http://127.0.0.1:8080/admin/connections?topic=chat' | sed 's/.*\"id\":\"\\([^\"]*\\)\".*/\\1/')"
in_readme "$find_id"
disconnect="curl -d \"{\\\"id\\\":\\\"\$id\\\"}\" 'http://127.0.0.1:8080/admin/disconnect'"
in_readme "$disconnect"
timeout 5 bash -c "$find_id; $disconnect" >"$work/out" 2>/dev/null || true
expect '{"disconnected":1}'
wait "$follower" || true
grep -q ": disconnected by an operator" "$work/sse" || fail "the SSE follower was not disconnected"
timeout 5 curl -s 'http://127.0.0.1:8080/dashboard' >"$work/out" || true
expect "/admin/stream"
# The command line: follow with a cursor file, publish from an argument and from stdin, resume.
rm -f chat.cursor chat.cursor.tmp
sub="target/release/switchboard sub chat --cursor-file chat.cursor"
in_readme "$sub"
timeout 6 bash -c "$sub" >"$work/sub" 2>"$work/sub.err" &
subscriber=$!
# The cursor file appears once the subscription is in place.
for _ in $(seq 1 50); do [ -s chat.cursor ] && break; sleep 0.1; done
[ -s chat.cursor ] || { cat "$work/sub.err" >&2; fail "switchboard sub did not subscribe"; }
run 5 "target/release/switchboard pub chat 'hello from the command line'"
grep -Eq '^[0-9a-z]+-[0-9a-z]+-[0-9]+$' "$work/out" || { cat "$work/out" >&2; fail "pub printed no id"; }
run 5 "printf '{\"user\":\"ann\",\"text\":\"hi\"}\\n{\"user\":\"bob\",\"text\":\"hello\"}\\n' | target/release/switchboard pub chat --json"
[ "$(grep -c -- - "$work/out")" -eq 2 ] || { cat "$work/out" >&2; fail "pub --json printed no two ids"; }
for _ in $(seq 1 50); do [ "$(wc -l <"$work/sub")" -ge 3 ] && break; sleep 0.1; done
kill -TERM "$subscriber" 2>/dev/null || true; wait "$subscriber" 2>/dev/null || true
cp "$work/sub" "$work/out"
expect '{"topic":"chat","id":"'
expect '"data":"hello from the command line","time":'
expect '"data":{"user":"bob","text":"hello"}'
# Published while it was stopped: the next run prints that, and only that.
curl -s -o /dev/null -d 'while sub was away' 'http://127.0.0.1:8080/events?topic=chat'
run 3 "$sub"
expect '"data":"while sub was away"'
if grep -qF 'hello from the command line' "$work/out"; then fail "sub printed a message twice"; fi
rm -f chat.cursor chat.cursor.tmp
run 4 "target/release/switchboard sub chat --transport sse | jq --unbuffered -r .data.text" &
jq_follower=$!
sleep 1
curl -s -o /dev/null -H 'Content-Type: application/json' -d '{"text":"through jq"}' 'http://127.0.0.1:8080/events?topic=chat'
wait "$jq_follower" || true
expect "through jq"
run 5 "target/release/switchboard check-config --heartbeat-interval 20s"
grep -Eq '^heartbeat_interval +"20s" +flag$' "$work/out" || { cat "$work/out" >&2; fail "check-config did not show the flag"; }
expect "the configuration is valid"
curl -s -o /dev/null -d 'for topics' 'http://127.0.0.1:8080/events?topic=chat'
run 5 "target/release/switchboard topics --prefix chat"
expect "TOPIC"
expect "chat"
run 3 "target/release/switchboard top"
expect "switchboard top: http://127.0.0.1:8080"

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
follow_then_publish "$follow" "curl -d 'from node one' 'http://127.0.0.1:8081/events?topic=chat'"
expect '"data":"from node one"'
stop_nodes

# Securing: a token to follow, a key to publish, and nothing without either.
secured="target/release/switchboard serve --listen 127.0.0.1:8084 --jwt-secret 'use-32-or-more-random-bytes-here' --publish-key 'backend-key' &"
issue="TOKEN=\$(SWITCHBOARD_JWT_SECRET='use-32-or-more-random-bytes-here' python3 examples/issue_token.py ann chat --publish chat)"
follow="curl -N -H \"Authorization: Bearer \$TOKEN\" 'http://127.0.0.1:8084/events?topic=chat'"
for command in "$secured" "$issue" "$follow"; do in_readme "$command"; done
if (exec 3<>"/dev/tcp/127.0.0.1/8084") 2>/dev/null; then fail "port 8084 is taken; the README's example needs it"; fi
setsid bash -c "$secured wait" >"$work/secured.out" 2>&1 &
secured_node=$!
stop_secured() { kill -TERM -- "-$secured_node" 2>/dev/null || true; wait "$secured_node" 2>/dev/null || true; }
trap 'stop_secured; cleanup' EXIT
for _ in $(seq 1 100); do
  curl -s -o /dev/null --max-time 1 "http://127.0.0.1:8084/readyz" && break
  sleep 0.1
done
follow_then_publish "$issue; $follow" "curl -H 'Authorization: Bearer backend-key' -d 'from the backend' 'http://127.0.0.1:8084/events?topic=chat'"
expect '"data":"from the backend"'
run 5 "curl -s 'http://127.0.0.1:8084/events?topic=chat'"
expect '"code":"unauthorized"'
stop_secured
# One node with a data directory, killed with kill -9 and started again: the client resumes with
# no reset.
start="target/release/switchboard serve --listen 127.0.0.1:8093 --data-dir ./switchboard-data &"
first="id=\$(curl -s -d 'first' 'http://127.0.0.1:8093/events?topic=news' | sed 's/.*\"id\":\"\\([^\"]*\\)\".*/\\1/')"
second="curl -d 'second' 'http://127.0.0.1:8093/events?topic=news'"
kill9='kill -9 $!'
resume="curl -N -H \"Last-Event-ID: \$id\" 'http://127.0.0.1:8093/events?topic=news'"
for command in "$start" "$first" "$second" "$kill9" "$resume"; do in_readme "$command"; done
[ ! -e switchboard-data ] || fail "./switchboard-data exists; the README's example would use it"
if (exec 3<>/dev/tcp/127.0.0.1/8093) 2>/dev/null; then fail "port 8093 is taken; the README's example needs it"; fi
ready='for _ in $(seq 1 100); do curl -s -o /dev/null --max-time 1 http://127.0.0.1:8093/healthz && break; sleep 0.1; done'
timeout 30 setsid bash -c "$start $ready; $first; $second >/dev/null; $kill9; wait; $start $ready; timeout 3 $resume; kill \$!" >"$work/out" 2>&1 || true
rm -rf switchboard-data
expect '"data":"second"'
if grep -q "event: reset" "$work/out"; then cat "$work/out" >&2; fail "a reset after the restart"; fi
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
