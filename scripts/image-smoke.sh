#!/usr/bin/env bash
# The container image, really built and run, with no registry:
#   1. the release binary, built here as docker/Dockerfile's build stage does;
#   2. a base image FROM scratch with what distroless/cc provides
#      (docker/Dockerfile.local-base: glibc, loader, CA bundle, nonroot user);
#   3. docker/Dockerfile's own runtime stage on that base;
#   4. the image run with --network host, a read-only root filesystem and no
#      capabilities, in front of the local IAM emulator, and checked: /startup
#      200 from inside the container, a non-root uid, a read-only root, the
#      image's HEALTHCHECK, the ECS example's healthCheck command and the
#      Kubernetes examples' probe paths, and a client's command through it.
# Uses the Docker daemon `docker info` reaches; failing that, starts a private
# dockerd from Debian's docker.io (installed when missing). Where no daemon
# can run, says "image smoke: skipped (...)" and exits 0. On a daemon of the
# machine's own, the two images stay tagged (*:smoke); a private one goes.
# Ports: SMOKE_PORT (default 16379) for the proxy, SMOKE_UPSTREAM_PORT
# (default 16380) for the emulator; the admin port is the image's 9090.
set -euo pipefail
cd "$(dirname "$0")/.."

port=${SMOKE_PORT:-16379}
tls_port=${SMOKE_UPSTREAM_PORT:-16380}
admin=127.0.0.1:9090
max_mb=${SMOKE_MAX_IMAGE_MB:-30}
tag=elasticache-auth-proxy:smoke
base_tag=elasticache-auth-proxy-local-base:smoke
# Debian's docker.io has no buildx; the classic builder does FROM scratch + COPY.
export DOCKER_BUILDKIT=0

. scripts/lib.sh
. scripts/iam-cache.sh
container=""
dockerd_pid=""
# The container goes first; then a private dockerd, which leaves its
# network namespace mounted under $work, so lib.sh's cleanup can remove it.
stop_docker() {
  [ -z "$container" ] || docker rm -f "$container" >/dev/null 2>&1 || true
  [ -n "$dockerd_pid" ] || return 0
  kill "$dockerd_pid" 2>/dev/null || true
  wait "$dockerd_pid" 2>/dev/null || true
  awk -v w="$work/" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r |
    while read -r mount; do umount "$mount" 2>/dev/null || true; done
}
trap 'stop_docker; cleanup' EXIT INT TERM

skip() {
  echo "image smoke: skipped ($*)"
  exit 0
}
fail() {
  echo "image smoke: FAILED: $*" >&2
  [ -z "$container" ] || { echo "--- container log:" >&2; docker logs "$container" 2>&1 | tail -20 >&2; }
  exit 1
}

# ---- a Docker daemon ----
if ! docker info >/dev/null 2>&1; then
  scripts/deps.sh --docker || skip "no Docker daemon, and Debian's docker.io could not be installed"
  command -v docker >/dev/null 2>&1 || skip "no docker client"
  echo "starting a private dockerd..." >&2
  # No bridge and no iptables: the container uses the host's network.
  dockerd --data-root "$work/docker" --exec-root "$work/docker-exec" \
    --pidfile "$work/docker.pid" --host "unix://$work/docker.sock" \
    --iptables=false --bridge=none >"$work/dockerd.log" 2>&1 &
  dockerd_pid=$!
  export DOCKER_HOST="unix://$work/docker.sock"
  for _ in $(seq 120); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 ||
    skip "no Docker daemon: dockerd did not start here: $(grep -iE 'level=(fatal|error)' "$work/dockerd.log" | tail -1)"
fi
echo "docker daemon: $(docker version -f '{{.Server.Version}}' 2>/dev/null)" >&2

# Copies the libraries and the loader the executable $1 names, by the paths
# it names them, under the root $2.
copy_libs() {
  for lib in $(ldd "$1" | grep -oE '/[^ ]+'); do
    mkdir -p "$2$(dirname "$lib")"
    cp -L "$lib" "$2$lib"
  done
}
# The classic builder's deprecation notice is noise here; errors are shown.
build() { docker build -q "$@" >"$work/build.log" 2>&1 || fail "docker build $*: $(tail -5 "$work/build.log")"; }

# Can this daemon run a container at all? /bin/true on scratch tells, apart
# from anything about the proxy's image.
copy_libs /bin/true "$work/preflight"
cp /bin/true "$work/preflight/"
printf 'FROM scratch\nCOPY . /\n' > "$work/preflight/Dockerfile"
build -t elasticache-auth-proxy-preflight:smoke "$work/preflight"
if ! out=$(docker run --rm --network host --read-only elasticache-auth-proxy-preflight:smoke /true 2>&1); then
  skip "this Docker daemon cannot run containers here: $out"
fi

scripts/deps.sh
if (exec 3<>"/dev/tcp/${admin%:*}/${admin##*:}") 2>/dev/null; then
  fail "$admin is taken; the image's health check and the examples use that port"
fi

# ---- the binary, as docker/Dockerfile's build stage makes it (and strips
# below) ----
echo "building the proxy (release)..." >&2
cargo build --release --locked --quiet --bins
bin=target/release/elasticache-auth-proxy

# ---- the base: FROM scratch with what distroless/cc-debian12 provides ----
ctx="$work/base"
mkdir -p "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/tmp" "$ctx/home/nonroot"
chmod 1777 "$ctx/rootfs/tmp"
# The binary itself comes in the runtime stage.
copy_libs "$bin" "$ctx/rootfs"
cp -L /etc/ssl/certs/ca-certificates.crt "$ctx/rootfs/etc/ssl/certs/"
cat > "$ctx/rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat > "$ctx/rootfs/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
EOF
printf 'passwd: files\ngroup: files\nhosts: files dns\n' > "$ctx/rootfs/etc/nsswitch.conf"
build -f docker/Dockerfile.local-base -t "$base_tag" "$ctx"

# ---- docker/Dockerfile's runtime stage, on that base ----
# Verbatim from its last FROM on, but for the base and where the binary
# comes from, so its USER, HEALTHCHECK and ENTRYPOINT are what is tested.
app="$work/app"
mkdir -p "$app"
cp "$bin" "$app/"
strip --strip-debug "$app/elasticache-auth-proxy"
awk '/^FROM /{stage=""} {stage=stage $0 "\n"} END{printf "%s", stage}' docker/Dockerfile |
  sed -E "1s|^FROM [^ ]+|FROM $base_tag|; s|^COPY --from=build /src/target/release/([^ ]+) |COPY \\1 |" \
    > "$app/Dockerfile"
grep -q "^FROM $base_tag" "$app/Dockerfile" && ! grep -q -- '--from=' "$app/Dockerfile" ||
  fail "docker/Dockerfile's runtime stage has a new shape; update this script: $(cat "$app/Dockerfile")"
build -t "$tag" "$app"
size=$(docker image inspect -f '{{.Size}}' "$tag")
size_mb=$(awk -v b="$size" 'BEGIN{printf "%.1f", b/1000000}')
echo "image built: $tag, $size_mb MB" >&2

# ---- run it against the local IAM emulator ----
start_iam_cache "$tls_port"
# The test CA where the image keeps its roots: the proxy must find the
# system bundle at distroless's path with no --tls-ca-file.
cat /etc/ssl/certs/ca-certificates.crt "$work/ca.pem" > "$work/bundle.pem"
chmod 644 "$work/bundle.pem"
# The keys go by name (-e NAME), never on a command line.
export AWS_ACCESS_KEY_ID="$demo_key_id" AWS_SECRET_ACCESS_KEY="$demo_secret"
# The securityContext of docker/kubernetes-sidecar.yaml; the image's own USER.
container=$(docker run -d --name "elasticache-auth-proxy-smoke-$$" --network host \
  --read-only --cap-drop ALL --security-opt no-new-privileges \
  --health-interval 1s \
  -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY -e AWS_EC2_METADATA_DISABLED=true \
  -v "$work/bundle.pem:/etc/ssl/certs/ca-certificates.crt:ro" \
  "$tag" --listen "127.0.0.1:$port" --upstream "localhost:$tls_port" \
  --iam-user app-iam --cache-name demo-cache --region us-east-1 --log-format json)

# Runs the image's binary inside the container: the only way in with no shell.
in_container() { docker exec "$container" /usr/local/bin/elasticache-auth-proxy "$@"; }

startup=""
for _ in $(seq 100); do
  if startup=$(in_container healthcheck --url "http://$admin/startup" 2>&1); then break; fi
  [ "$(docker inspect -f '{{.State.Running}}' "$container")" = true ] || fail "the container exited"
  sleep 0.2
done
case $startup in *": 200 "*) ;; *) fail "/startup from the container: $startup" ;; esac

pid=$(docker inspect -f '{{.State.Pid}}' "$container")
uid=$(awk '/^Uid:/{print $2}' "/proc/$pid/status")
[ "$uid" = 65532 ] || fail "the proxy runs as uid $uid, not nonroot (65532)"
caps=$(awk '/^CapBnd:/{print $2}' "/proc/$pid/status")
[ "$caps" = 0000000000000000 ] || fail "the proxy's capability bounding set is $caps, not empty"
grep -qE '^NoNewPrivs:\s+1$' "/proc/$pid/status" || fail "the proxy may gain privileges"
root_opts=$(awk '$5 == "/" {print $6}' "/proc/$pid/mountinfo" | tail -1)
case $root_opts in ro,* | ro) ;; *) fail "the root filesystem is mounted $root_opts" ;; esac
# Amazon's roots sign ElastiCache's certificates; distroless carries them.
subjects=$(openssl storeutl -noout -text -certs "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt" 2>/dev/null)
case $subjects in *"Subject: C=US, O=Amazon, CN=Amazon Root CA 1"*) ;;
  *) fail "the image's CA bundle lacks Amazon Root CA 1" ;; esac

whoami=$(redis-cli -p "$port" ACL WHOAMI)
[ "$whoami" = app-iam ] || fail "ACL WHOAMI through the container: $whoami"

# The image's HEALTHCHECK, run by Docker (every 1 s here).
health=""
for _ in $(seq 100); do
  health=$(docker inspect -f '{{.State.Health.Status}}' "$container")
  [ "$health" = healthy ] && break
  sleep 0.2
done
[ "$health" = healthy ] || fail "Docker's health status: $health"

# The ECS example's healthCheck command, run as ECS runs it: in the container.
mapfile -t ecs < <(python3 -c '
import json, sys
task = json.load(open("docker/ecs-task-definition.json"))
proxy = next(c for c in task["containerDefinitions"] if c["name"] == "elasticache-auth-proxy")
print("\n".join(proxy["healthCheck"]["command"]))')
[ "${ecs[0]:-}" = CMD ] || fail "the ECS healthCheck is not an exec-form CMD (no shell in the image): ${ecs[*]}"
ecs_out=$(docker exec "$container" "${ecs[@]:1}" 2>&1) || fail "the ECS healthCheck failed: $ecs_out"

# The Kubernetes examples' probes: each path answers 200 from the container,
# on the port the `admin` containerPort and --admin-listen name.
probes=()
for yaml in docker/kubernetes*.yaml; do
  grep -qE "containerPort: ${admin##*:} \}" "$yaml" && grep -q -- "--admin-listen=0.0.0.0:${admin##*:}" "$yaml" ||
    fail "$yaml: the admin port is not ${admin##*:}"
  paths=$(sed -nE 's/.*httpGet: \{ path: ([^,]+), port: admin \}.*/\1/p' "$yaml")
  [ "$(echo "$paths" | wc -l)" -ge 3 ] || fail "$yaml: expected startup, readiness and liveness probes, got: $paths"
  for path in $paths; do
    out=$(in_container healthcheck --url "http://$admin$path" 2>&1) || fail "$yaml probe $path: $out"
    probes+=("$path")
  done
done

logs=$(docker logs "$container" 2>&1)
case $logs in *"$demo_secret"*) fail "the container's log holds the AWS secret key" ;; esac

echo
echo "image smoke: ok"
echo "  image built: $tag (docker/Dockerfile's runtime stage on $base_tag)"
echo "  size:        $size_mb MB (aim: under $max_mb MB)"
echo "  uid:         $uid (nonroot), root filesystem $root_opts, no capabilities, no new privileges"
echo "  /startup:    ${startup#healthcheck: } (from the container)"
echo "  HEALTHCHECK: $health"
echo "  ECS:         ${ecs[*]:1} -> exit 0"
echo "  Kubernetes:  $(printf '%s\n' "${probes[@]}" | sort -u | tr '\n' ' ')-> 200 on port ${admin##*:}"
echo "  client:      redis-cli ACL WHOAMI -> $whoami"
awk -v b="$size" -v m="$max_mb" 'BEGIN{exit !(b <= m * 1000000)}' ||
  fail "the image is $size_mb MB, over $max_mb MB"
