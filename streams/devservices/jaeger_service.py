"""A local Jaeger v2 (OTLP receiver + query API, in-memory storage) built with Go.

There is no Docker engine on dev and CI machines, so the Jaeger binary is
built once from the wrapper module in ``tools/jaeger`` (its go.mod pins the
version) into the cache dir, and run with a generated config that binds every
port to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from thunderhelm.streams.devservices.local_service import (
    LocalService,
    ServicesSettings,
    ServiceState,
)
from thunderhelm.streams.devservices.processes import (
    ServicesError,
    accepts_connections,
    log_tail,
    require_go,
    service_env,
)

NAME = "jaeger"
PACKAGE = "github.com/jaegertracing/jaeger/cmd/jaeger"


def _go_mod(settings: ServicesSettings) -> str:
    path = settings.tools_dir / "jaeger" / "go.mod"
    try:
        return path.read_text()
    except OSError as exc:
        raise ServicesError(f"cannot read {path}: run from a thunderhelm source checkout") from exc


def jaeger_version(settings: ServicesSettings) -> str:
    """The Jaeger module version pinned in ``tools/jaeger/go.mod``."""
    found = re.search(r"github\.com/jaegertracing/jaeger (v[\w.\-+]+)", _go_mod(settings))
    if found is None:
        raise ServicesError("tools/jaeger/go.mod does not require github.com/jaegertracing/jaeger")
    return found.group(1).lstrip("v")


def go_minimum(settings: ServicesSettings) -> str:
    found = re.search(r"^go (\d+\.\d+(?:\.\d+)?)", _go_mod(settings), re.MULTILINE)
    return found.group(1) if found else "1.24"


def binary(settings: ServicesSettings) -> Path:
    return settings.cache_dir / "bin" / f"jaeger-{jaeger_version(settings)}"


def config_file(settings: ServicesSettings) -> Path:
    return settings.jaeger_dir / "config.yaml"


def log_file(settings: ServicesSettings) -> Path:
    return Jaeger(settings).log_file()


def pid_file(settings: ServicesSettings) -> Path:
    return Jaeger(settings).pid_file()


def render_config(settings: ServicesSettings) -> str:
    h = settings.host
    return f"""\
# Written by `thunderhelm services start` on every start; edits are overwritten.
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    logs:
      level: info
    metrics:
      level: basic
      readers:
        - pull:
            exporter:
              prometheus:
                host: "{h}"
                port: {settings.jaeger_metrics_port}
extensions:
  jaeger_storage:
    backends:
      mem:
        memory:
          max_traces: {settings.jaeger_max_traces}
  jaeger_query:
    storage:
      traces: mem
    enable_tracing: false
    http:
      endpoint: "{h}:{settings.jaeger_query_port}"
    grpc:
      endpoint: "{h}:{settings.jaeger_query_grpc_port}"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: "{h}:{settings.jaeger_otlp_grpc_port}"
      http:
        endpoint: "{h}:{settings.jaeger_otlp_http_port}"
processors:
  batch: {{}}
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
"""


def _goflags(go: str) -> str:
    """GOFLAGS for the build: the user's own (``go env``) plus ``-mod=mod``."""
    done = subprocess.run([go, "env", "GOFLAGS"], capture_output=True, text=True, check=False)
    flags = done.stdout.split()
    if not any(f.startswith("-mod=") for f in flags):
        flags.append("-mod=mod")
    return " ".join(flags)


def ensure_binary(settings: ServicesSettings) -> Path:
    """Build the Jaeger binary into the cache once (skipped when present)."""
    target = binary(settings)
    if target.exists():
        return target
    go = require_go(go_minimum(settings))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.partial-{uuid.uuid4().hex[:8]}")
    build_log = settings.jaeger_dir / "build.log"
    build_log.parent.mkdir(parents=True, exist_ok=True)
    env = service_env()
    env["GOFLAGS"] = _goflags(go)
    argv = [go, "build", "-ldflags=-s -w", "-o", str(tmp), PACKAGE]
    print(
        f"jaeger: building Jaeger {jaeger_version(settings)} with Go into {target} "
        f"(once; several minutes on a cold Go cache; log {build_log}) ...",
        flush=True,
    )
    with open(build_log, "w") as fh:
        try:
            done = subprocess.run(
                argv,
                cwd=settings.tools_dir / "jaeger",
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                timeout=settings.build_timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            tmp.unlink(missing_ok=True)
            raise ServicesError(f"building Jaeger timed out; see {build_log}") from exc
    if done.returncode != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        raise ServicesError(
            f"`{' '.join(argv)}` failed (exit {done.returncode}); last lines of {build_log}:\n"
            f"{log_tail(build_log)}"
        )
    tmp.rename(target)
    return target


def query_answers(settings: ServicesSettings, timeout_s: float = 2.0) -> bool:
    url = f"{settings.jaeger_query_url}/api/services"
    with (
        contextlib.suppress(OSError, urllib.error.URLError),
        urllib.request.urlopen(url, timeout=timeout_s) as resp,
    ):
        return int(resp.status) == 200
    return False


class Jaeger(LocalService):
    name = NAME
    title = "Jaeger"
    poll_s = 0.3
    not_up = "process up, query API not (yet) answering"

    @property
    def home(self) -> Path:
        return self.settings.jaeger_dir

    def markers(self) -> tuple[str, ...]:
        return (f"--config={config_file(self.settings)}",)

    def ports(self) -> tuple[int, ...]:
        return self.settings.jaeger_ports()

    def address(self) -> str:
        s = self.settings
        return (
            f"query {s.jaeger_query_url}, OTLP http {s.otlp_http_endpoint} "
            f"grpc {s.host}:{s.jaeger_otlp_grpc_port}"
        )

    @property
    def ready_address(self) -> str:
        return self.settings.jaeger_query_url

    def up(self) -> bool:
        return query_answers(self.settings)

    def ready(self) -> bool:
        s = self.settings
        return (
            accepts_connections(s.host, s.jaeger_otlp_http_port)
            and accepts_connections(s.host, s.jaeger_otlp_grpc_port)
            and query_answers(s)
        )

    def prepare(self) -> tuple[list[str], str]:
        exe = ensure_binary(self.settings)
        self.home.mkdir(parents=True, exist_ok=True)
        config_file(self.settings).write_text(render_config(self.settings))
        return [str(exe), f"--config={config_file(self.settings)}"], ""


def status(settings: ServicesSettings) -> ServiceState:
    return Jaeger(settings).status()


def start(settings: ServicesSettings) -> ServiceState:
    """Start Jaeger unless it already runs; return once the query API and OTLP answer."""
    return Jaeger(settings).start()


def stop(settings: ServicesSettings) -> ServiceState:
    """Stop our Jaeger (never another process), then wait until its ports are free."""
    return Jaeger(settings).stop()
