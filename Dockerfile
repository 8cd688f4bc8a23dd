# The thunderhelm worker image used by docker-compose.yml.
# Stage 1 compiles the Cython training kernel and collects every wheel;
# stage 2 installs them without a compiler.
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
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links=/wheels thunderhelm && rm -rf /wheels \
    && useradd --create-home --uid 10001 thunderhelm
USER thunderhelm
WORKDIR /home/thunderhelm
CMD ["thunderhelm", "worker"]
