# One image for the cropmon client, the Dask scheduler and the Dask workers: the same Python, the same pinned
# dask/distributed/numpy/GDAL wheels everywhere, so pickled tasks and results mean the same thing on every side.
#
#   docker build -t cropmon:0.1.0 .
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm -t cropmon:0.1.0 .
#
# The base image is an ARG so that a site mirror, a digest pin (python:3.11-slim@sha256:...) or CI's local
# stand-in can be used without editing this file. Never :latest.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ARG CROPMON_UID=10001
ARG CROPMON_GID=10001

# Metadata first: these instructions are free here, and would each add a layer after the large dependency layer.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/cropmon \
    PATH=/opt/cropmon/bin:$PATH \
    MPLCONFIGDIR=/tmp/matplotlib \
    MPLBACKEND=Agg
# 8786: scheduler protocol, 8787: scheduler dashboard. Publishing is the deployment's choice (see docker-compose.yml).
EXPOSE 8786 8787
# dumb-init (from the lock file) is PID 1: it reaps zombies and forwards SIGTERM/SIGINT to its child only
# (--single-child), so on `docker stop` the nanny closes its worker process itself, cleanly.
ENTRYPOINT ["dumb-init", "--single-child", "--"]
CMD ["python", "-m", "cropmon", "--help"]

# A non-root user, and the data/output mount points owned by it (named volumes inherit this ownership).
RUN groupadd --system --gid "${CROPMON_GID}" cropmon \
    && useradd --system --no-log-init -l --uid "${CROPMON_UID}" --gid cropmon \
       --home-dir /home/cropmon --create-home --shell /usr/sbin/nologin cropmon \
    && mkdir -p /data /outputs \
    && chown cropmon:cropmon /data /outputs
WORKDIR /home/cropmon

# Dependencies before the source, from the lock file only: this layer is rebuilt when the pins change, not when the
# code does. All are binary wheels (rasterio/pyogrio/pyproj/shapely bundle GDAL, PROJ and GEOS): no compiler, no apt.
COPY ci/requirements-lock.txt /tmp/requirements-lock.txt
RUN python -m venv "${VIRTUAL_ENV}" \
    && pip install --no-cache-dir --only-binary=:all: -r /tmp/requirements-lock.txt \
    && rm /tmp/requirements-lock.txt

# Then the package (the build context is only pyproject.toml, README*, cropmon/ and docker/: see .dockerignore),
# without touching the dependencies; `pip check` fails the build if pyproject.toml asks for something the lock file
# does not pin (regenerate it with ci/make-lock.py). docker/cropmon-job.sh is the `cropmon` service's job script.
COPY . /src/
RUN pip install --no-cache-dir --no-deps --no-build-isolation /src \
    && pip check \
    && python -c "import cropmon" \
    && install -m 0755 /src/docker/cropmon-job.sh /usr/local/bin/cropmon-job \
    && rm -rf /src

USER ${CROPMON_UID}:${CROPMON_GID}
