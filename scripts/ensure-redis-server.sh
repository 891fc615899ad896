#!/usr/bin/env bash
# Make sure redis-server, redis-sentinel and redis-cli are on PATH: tests start their own servers,
# clusters and sentinels on free loopback ports, so nothing needs to be running. Installs Debian's
# packages for whatever is missing (redis-cli comes with redis-tools, which redis-server pulls in).
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || missing+=(redis-sentinel)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
echo "installing Debian packages the tests need: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "error: not root and no sudo; install them (apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# The packages start system services where an init system runs; the tests never use them.
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
for binary in redis-server redis-sentinel redis-cli; do
  command -v "$binary" >/dev/null 2>&1 || { echo "error: $binary still missing" >&2; exit 1; }
done
echo "installed: $(redis-server --version)"
