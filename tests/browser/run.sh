#!/usr/bin/env bash
# The one entry point for the browser client's tests (called by `make test`):
# installs what is missing, builds the gateway, and runs the unit and browser suites.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$here"

# 1. Chromium from Debian (Playwright's own browser download does not work here).
if [ ! -x /usr/bin/chromium ]; then
  echo "run.sh: installing chromium" >&2
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y chromium
fi

# And nginx and redis-server from Debian, for the multi-node test (browser/nodes.test.js): the
# project's installer keeps their packages from starting them as services.
if [ ! -x "${NGINX:-/usr/sbin/nginx}" ] || ! command -v "${REDIS_SERVER:-redis-server}" >/dev/null; then
  echo "run.sh: installing nginx and redis-server" >&2
  "$repo/scripts/install-test-deps.sh"
fi

# 2. The pinned npm packages, reinstalled when package-lock.json changed since the last install.
lock_hash="$(sha256sum package-lock.json | cut -d' ' -f1)"
stamp="node_modules/.switchboard-lock-sha256"
if [ ! -d node_modules ] || [ "$(cat "$stamp" 2>/dev/null || true)" != "$lock_hash" ]; then
  echo "run.sh: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_hash" > "$stamp"
fi

# 3. The gateway (debug build; the tests start it with --static-dir static).
(cd "$repo" && cargo build -p switchboard)
target="${CARGO_TARGET_DIR:-$repo/target}"
case "$target" in /*) ;; *) target="$repo/$target" ;; esac
export SWITCHBOARD_BIN="$target/debug/switchboard"

# 4. The tests: unit suite (fake transports and timers), then the browser suite, one file at a time.
exec node --test --test-concurrency=1 unit/ browser/
