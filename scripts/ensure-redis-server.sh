#!/usr/bin/env bash
# Make sure a redis-server binary is on PATH: tests start their own servers on free loopback
# ports, so nothing needs to be running. Installs Debian's package when it is missing.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
echo "redis-server not found on PATH: installing Debian's redis-server package (tests need the binary)"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "error: not root and no sudo; install redis-server (apt-get install redis-server)" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null
command -v redis-server >/dev/null 2>&1 || { echo "error: redis-server still missing" >&2; exit 1; }
echo "installed: $(redis-server --version)"
