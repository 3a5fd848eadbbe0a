# The embed-worker container image, made from the wheel that `make dist` builds.
#
#   make dist                                                            # dist/embed_worker-VERSION-*.whl
#   docker build -t embed-worker:0.4.0 .                                 # gte-small baked in
#   docker build -t embed-worker:0.4.0 --build-arg BAKE_MODEL=false .    # no model inside; see below
#
# The build context is dist/ and nothing else (.dockerignore): the image holds exactly the wheel
# that was released or tested, never the source tree. Stage `build` installs that wheel and
# every dependency into a virtual environment at /opt/embed-worker (all of them ship binary
# wheels for CPython 3.11 on x86_64, so nothing is compiled), then removes pip and setuptools
# from it. Stage `runtime` copies that environment and nothing else, so the final image has no
# compiler, no pip or pip cache, no wheels and no source checkout, and runs unprivileged. Plain
# COPY --from: the classic builder builds it too.
#
# Offline builds: put the dependencies' wheels in dist/ beside ours (`pip download -d dist
# dist/embed_worker-*.whl`) and pass --build-arg PIP_NO_INDEX=1.
#
# Without a baked model the worker needs one at run time: mount a model directory and set
# EMBED_MODEL_PATH to its parent (`-v /srv/models:/models:ro -e EMBED_MODEL_PATH=/models`), or let
# it download into EMBED_CACHE_DIR (a volume, so that it survives the container).
#
# PYTHON_IMAGE must provide `python3` with the venv module (python:3.11-slim-bookworm does; so
# does Debian bookworm with python3-venv installed).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# 1: dependencies from dist/ only (an offline build); 0: from the package index too.
ARG PIP_NO_INDEX=0
# The wheel carries the schema and the migrations (worker/_sql, worker/_migrations), so the
# image migrates without a checkout.
COPY dist/ /tmp/dist/
RUN set -- /tmp/dist/embed_worker-*-py3-none-any.whl \
    && if [ "$#" -ne 1 ] || [ ! -f "$1" ]; then \
        echo "dist/ must hold exactly one embed_worker wheel: run \`make dist\` first" >&2; exit 1; \
    fi \
    && python3 -m venv /opt/embed-worker \
    && /opt/embed-worker/bin/pip install --find-links /tmp/dist "$1" \
    && /opt/embed-worker/bin/pip uninstall -y pip setuptools \
    && /opt/embed-worker/bin/embed-worker --version


FROM ${PYTHON_IMAGE} AS runtime
# BAKE_MODEL=false skips the download (offline builds, or models mounted at run time).
ARG BAKE_MODEL=true
ARG MODEL=gte-small
# fp32 is the default (numerically compatible with Supabase's gte-small); int8 is the faster
# variant (EMBED_MODEL_VARIANT=int8). Baking both costs ~35 MB more than fp32 alone.
ARG MODEL_VARIANTS="fp32 int8"
ARG UID=10001

LABEL org.opencontainers.image.title="embed-worker" \
      org.opencontainers.image.description="Postgres-native embedding worker: pgmq queue, pgvector storage, gte-small on the CPU" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/embed-worker/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    EMBED_CACHE_DIR=/var/cache/embed-worker \
    HF_HOME=/var/cache/embed-worker/huggingface \
    EMBED_HTTP_HOST=0.0.0.0 \
    EMBED_HTTP_PORT=8080

RUN useradd --system --uid "${UID}" --user-group --create-home --home-dir /home/embed-worker \
        --shell /usr/sbin/nologin embed-worker \
    && install -d -o embed-worker -g embed-worker -m 0755 /var/cache/embed-worker

COPY --from=build /opt/embed-worker /opt/embed-worker
RUN embed-worker --version

USER embed-worker
WORKDIR /home/embed-worker

# As the runtime user, so that the cache belongs to it. A failed download fails the build rather
# than producing an image that cannot embed.
RUN if [ "${BAKE_MODEL}" = "true" ]; then \
        for variant in ${MODEL_VARIANTS}; do \
            embed-worker --variant "${variant}" model download "${MODEL}" || exit 1; \
        done; \
    fi

EXPOSE 8080
# Liveness only (the process and its pipeline threads): readiness (/readyz) also needs the
# database, and an orchestrator should not kill a worker that is waiting for one. Slim images
# have no curl, hence python; urlopen raises on any non-2xx answer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('EMBED_HTTP_PORT', '8080'), timeout=4)"]
# SIGTERM: stop reading, finish the batch in flight, hand back the rest, exit 0 within
# EMBED_GRACE_SECONDS (25 s by default): give the container longer than that to stop
# (`docker stop -t 45`, compose `stop_grace_period: 45s`).
STOPSIGNAL SIGTERM
ENTRYPOINT ["embed-worker"]
CMD ["run"]
