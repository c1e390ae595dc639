#!/bin/sh
# The `cropmon` service of docker-compose.yml: wait for the cluster, then run the job on it.
#
# Inputs: CROPMON_RASTER and CROPMON_FIELDS (paths as the containers see them, e.g. /data/real/predictions.tif);
# with neither set, a small digital twin is made once in /data/twin (CROPMON_TWIN_SCALE, default 0.0625) and analysed.
# Anything in CROPMON_RUN_ARGS is appended to `cropmon run` (e.g. "--profile /outputs/twin/profile.html").
# CROPMON_BUCKET (s3://bucket[/prefix], docker-compose.s3.yml): local inputs are uploaded to BUCKET/inputs/ first and
# the outputs go to BUCKET/outputs/<name> (CROPMON_OUT may name another place); /outputs is then not needed.
set -eu

scheduler=${CROPMON_SCHEDULER:-tcp://scheduler:8786}
min_workers=${CROPMON_MIN_WORKERS:-1}
twin_scale=${CROPMON_TWIN_SCALE:-0.0625}

die() { echo "cropmon-job: $*" >&2; exit 2; }

bucket=${CROPMON_BUCKET:-}
[ -n "$bucket" ] || [ -w /outputs ] || die "/outputs is not writable by uid $(id -u); fix: mkdir -p outputs and set CROPMON_UID=\$(id -u) CROPMON_GID=\$(id -g) (or chown the outputs directory to ${CROPMON_UID:-10001})"

if [ -z "${CROPMON_RASTER:-}" ] && [ -z "${CROPMON_FIELDS:-}" ]; then
    twin=/data/twin
    if [ -s "$twin/predictions.tif" ] && [ -s "$twin/fields.gpkg" ] && [ "$(cat "$twin/.scale" 2>/dev/null)" = "$twin_scale" ]; then
        echo "cropmon-job: reusing the digital twin in $twin (scale $twin_scale)"
    else
        [ -w /data ] || die "/data is not writable by uid $(id -u), and the digital twin is made there; fix as for /outputs, or set CROPMON_RASTER and CROPMON_FIELDS"
        echo "cropmon-job: making the digital twin in $twin (scale $twin_scale)"
        python -m cropmon twin --out "$twin" --scale "$twin_scale"
        echo "$twin_scale" > "$twin/.scale"
    fi
    CROPMON_RASTER=$twin/predictions.tif
    CROPMON_FIELDS=$twin/fields.gpkg
    out=${CROPMON_OUT:-/outputs/twin}
    name=twin
else
    if [ -z "${CROPMON_RASTER:-}" ] || [ -z "${CROPMON_FIELDS:-}" ]; then
        die "set both CROPMON_RASTER and CROPMON_FIELDS (or neither, for the digital twin)"
    fi
    out=${CROPMON_OUT:-/outputs/run}
    name=run
fi

if [ -n "$bucket" ]; then
    out=${CROPMON_OUT:-${bucket%/}/outputs/$name}
    # Inputs on this container's disk go to the bucket (the workers see nothing of it); s3:// ones stay as given.
    uploaded=$(CROPMON_JOB_INPUTS="$CROPMON_RASTER $CROPMON_FIELDS" CROPMON_JOB_TO="${bucket%/}/inputs/$name" python - <<'PY'
import os
import sys
from pathlib import Path

import pyarrow.fs as pafs

from cropmon.config import build_config
from cropmon.io import store

target = store.parse(os.environ["CROPMON_JOB_TO"])
if target is None or target.scheme != "s3":
    sys.exit(f"cropmon-job: CROPMON_BUCKET must be an s3:// URL, got {os.environ['CROPMON_JOB_TO']}")
paths = []
with build_config({}).gdal.applied():  # CROPMON_GDAL_* and AWS_*: what cropmon run itself will use
    pafs.S3FileSystem(**store.s3_options(os.environ), allow_bucket_creation=True).create_dir(target.bucket)
    for path in os.environ["CROPMON_JOB_INPUTS"].split():
        if store.is_object_store(path):
            paths.append(path)
            continue
        stem = Path(path).name.rsplit(".", 1)[0]
        for part in sorted(Path(path).parent.glob(f"{stem}.*")):  # a Shapefile's .shx, .dbf, .prj too
            store.upload(part, target.join(part.name))
            print(f"cropmon-job: uploaded {part} to {target.join(part.name)}", file=sys.stderr)
        paths.append(target.join(Path(path).name).url)
print(" ".join(paths))
PY
)
    CROPMON_RASTER=${uploaded%% *}
    CROPMON_FIELDS=${uploaded#* }
fi

echo "cropmon-job: waiting for $min_workers worker(s) at $scheduler"
CROPMON_JOB_SCHEDULER=$scheduler CROPMON_JOB_MIN_WORKERS=$min_workers python - <<'PY'
import os
import sys

from distributed import Client

address = os.environ["CROPMON_JOB_SCHEDULER"]
n = int(os.environ["CROPMON_JOB_MIN_WORKERS"])
timeout = float(os.environ.get("CROPMON_WAIT_TIMEOUT", "180"))
try:
    with Client(address, timeout=60, set_as_default=False) as client:
        client.wait_for_workers(n, timeout=timeout)
        print(f"cropmon-job: {len(client.scheduler_info(n_workers=-1)['workers'])} worker(s) ready", flush=True)
except (OSError, TimeoutError) as exc:
    sys.exit(f"cropmon-job: the cluster at {address} did not get {n} worker(s) in {timeout:.0f} s ({exc})")
PY

# Word splitting of CROPMON_RUN_ARGS is intended: it carries extra flags.
# shellcheck disable=SC2086
exec python -m cropmon run --raster "$CROPMON_RASTER" --fields "$CROPMON_FIELDS" --scheduler "$scheduler" \
    --out "$out" --progress off ${CROPMON_RUN_ARGS:-}
