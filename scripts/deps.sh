#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian/Ubuntu machine:
# redis-server and redis-cli (Debian's build has TLS), and openssl; then the
# client libraries the tests drive (tests/libraries.rs), pinned and
# project-local, never global:
#   redis-py  (PyPI `redis`, tests/clients/requirements.txt) into tests/clients/python
#   ioredis and node-redis (npm, tests/clients/package-lock.json) into tests/clients/node_modules
# `scripts/deps.sh --docker` installs only Debian's Docker engine (docker.io)
# when dockerd is missing, for scripts/image-smoke.sh.
# Idempotent and quiet: does nothing when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
clients=tests/clients

# Installs Debian packages "$@", or says what is missing where there is no apt.
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing: $* — install them with your package manager (redis-server must be built with TLS)" >&2
    exit 1
  fi
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing $* from Debian's packages..." >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

if [ "${1:-}" = "--docker" ]; then
  command -v dockerd >/dev/null 2>&1 || apt_install docker.io
  exit 0
fi

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)

[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"

# Each install leaves a copy of the pin file it installed from; a matching
# copy means it is done. A changed pin reinstalls from scratch.
if ! cmp -s "$clients/requirements.txt" "$clients/python/.installed-requirements.txt" 2>/dev/null; then
  echo "installing redis-py into $clients/python..." >&2
  rm -rf "$clients/python"
  # --target bypasses any system or user site-packages (and PEP 668's
  # externally-managed refusal, which is about the system's own).
  # The variable (not --root-user-action) so an older pip ignores it.
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
    --no-input --target "$clients/python" -r "$clients/requirements.txt"
  cp "$clients/requirements.txt" "$clients/python/.installed-requirements.txt"
fi

if ! cmp -s "$clients/package-lock.json" "$clients/node_modules/.installed-package-lock.json" 2>/dev/null; then
  echo "installing ioredis and node-redis into $clients/node_modules..." >&2
  # npm ci installs exactly the committed lock file, or fails.
  (cd "$clients" && npm ci --silent --no-audit --no-fund)
  cp "$clients/package-lock.json" "$clients/node_modules/.installed-package-lock.json"
fi
