#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian/Ubuntu machine:
# redis-server and redis-cli (Debian's build has TLS), openssl, and promtool
# (Debian's `prometheus` package, for tests/monitoring.rs); then the
# client libraries the tests drive (tests/libraries.rs), pinned and
# project-local, never global:
#   redis-py  (PyPI `redis`, tests/clients/requirements.txt) into tests/clients/python
#   ioredis and node-redis (npm, tests/clients/package-lock.json) into tests/clients/node_modules
# `scripts/deps.sh --docker` installs only Debian's Docker engine (docker.io)
# when dockerd is missing, for scripts/image-smoke.sh.
# `scripts/deps.sh --bench` installs only what benches/compare.sh runs:
# redis-server, redis-tools, openssl, and the two proxies it compares
# against, haproxy and stunnel4 (all Debian's packages).
# Idempotent and quiet: does nothing when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
clients=tests/clients

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_updated=""
# apt_install WHY [apt-get options] PACKAGE...: installs from Debian's
# packages (apt-get update first, once); without apt-get it names what is
# missing and WHY it is needed, and fails.
apt_install() {
  local why=$1
  shift
  local arg packages=()
  for arg in "$@"; do
    [[ $arg == -* ]] || packages+=("$arg")
  done
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing: ${packages[*]} — install with your package manager ($why)" >&2
    exit 1
  fi
  echo "installing ${packages[*]} from Debian's packages..." >&2
  if [ -z "$apt_updated" ]; then
    $sudo apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

if [ "${1:-}" = "--docker" ]; then
  # scripts/image-smoke.sh: the Docker engine, from Debian's docker.io.
  command -v dockerd >/dev/null 2>&1 || apt_install "the image smoke runs containers" docker.io
  exit 0
fi

if [ "${1:-}" = "--bench" ]; then
  need=()
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  command -v redis-benchmark >/dev/null 2>&1 || need+=(redis-tools)
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
  command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
  command -v stunnel4 >/dev/null 2>&1 || need+=(stunnel4)
  if [ ${#need[@]} -gt 0 ]; then
    apt_install "benches/compare.sh measures them side by side" --no-install-recommends "${need[@]}"
  fi
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
if [ ${#need[@]} -gt 0 ]; then
  apt_install "redis-server must be built with TLS" "${need[@]}"
fi

# promtool checks monitoring/alerts.yaml (tests/monitoring.rs). Debian ships
# it only inside the `prometheus` server package: about 20 MB to download,
# without the node exporter it recommends. Its server is not wanted here, so
# it is stopped and disabled if the install started it (it would take the
# port 9090 that the proxy's admin endpoints default to).
if ! command -v promtool >/dev/null 2>&1; then
  apt_install "promtool, from Prometheus" --no-install-recommends prometheus
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi

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
