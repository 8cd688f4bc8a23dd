# The thunderhelm worker image used by docker-compose.yml.
# Stage 1 compiles the Cython training kernel and collects every wheel;
# stage 2 installs them without a compiler and runs as an unprivileged user
# whose state (artifacts, file datasets) lives in /var/lib/thunderhelm.
FROM python:3.13-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN pip wheel --wheel-dir /wheels .

FROM python:3.13-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    THUNDERHELM_STATE_DIR=/var/lib/thunderhelm \
    THUNDERHELM_WEB_HOST=0.0.0.0 \
    THUNDERHELM_WEB_PORT=6066
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links=/wheels thunderhelm && rm -rf /wheels \
    && useradd --create-home --uid 10001 thunderhelm \
    && install -d -o thunderhelm -g thunderhelm /var/lib/thunderhelm
USER thunderhelm
WORKDIR /home/thunderhelm
VOLUME ["/var/lib/thunderhelm"]
EXPOSE 6066
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('THUNDERHELM_WEB_PORT', '6066') + '/readyz', timeout=4)"]
CMD ["thunderhelm", "worker"]
