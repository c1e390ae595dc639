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

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/cropmon \
    PATH=/opt/cropmon/bin:$PATH \
    MPLCONFIGDIR=/tmp/matplotlib \
    MPLBACKEND=Agg

# A non-root user, and the data/output mount points owned by it (named volumes inherit this ownership).
RUN groupadd --system --gid "${CROPMON_GID}" cropmon \
    && useradd --system --no-log-init -l --uid "${CROPMON_UID}" --gid cropmon \
       --home-dir /home/cropmon --create-home --shell /usr/sbin/nologin cropmon \
    && mkdir -p /data /outputs \
    && chown cropmon:cropmon /data /outputs

# Dependencies first, from the lock file only: this layer is rebuilt when the pins change, not when the code does.
# All of them are binary wheels (rasterio/pyogrio/pyproj/shapely bundle GDAL, PROJ and GEOS): no compiler, no apt.
COPY ci/requirements-lock.txt /tmp/requirements-lock.txt
RUN python -m venv "${VIRTUAL_ENV}" \
    && pip install --no-cache-dir --only-binary=:all: -r /tmp/requirements-lock.txt \
    && rm /tmp/requirements-lock.txt

# Then the package itself, without touching the dependencies; `pip check` fails the build if pyproject.toml
# asks for something the lock file does not pin (regenerate it with ci/make-lock.py).
WORKDIR /src
COPY pyproject.toml README* ./
COPY cropmon ./cropmon
# The `cropmon` service's job script (docker-compose.yml): twin if no inputs, wait for workers, run.
COPY docker/cropmon-job.sh /usr/local/bin/cropmon-job
RUN chmod 0755 /usr/local/bin/cropmon-job \
    && pip install --no-cache-dir --no-deps --no-build-isolation . \
    && pip check \
    && python -c "import cropmon" \
    && rm -rf /src/build /src/*.egg-info

USER ${CROPMON_UID}:${CROPMON_GID}
WORKDIR /home/cropmon

# 8786: scheduler protocol, 8787: scheduler dashboard. Publishing is the deployment's choice (see docker-compose.yml).
EXPOSE 8786 8787

# dumb-init is PID 1: it forwards SIGTERM/SIGINT to dask/cropmon (so `docker stop` shuts workers down cleanly and
# hands their data back) and reaps zombie processes left by the nanny's children.
ENTRYPOINT ["dumb-init", "--"]
CMD ["python", "-m", "cropmon", "--help"]
