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
    ServicesError,
    ServicesSettings,
    ServiceState,
    accepts_connections,
    find_own_pid,
    is_alive,
    log_tail,
    require_free_ports,
    require_go,
    service_env,
    spawn_detached,
    terminate,
    wait_ports_free,
    wait_until_ready,
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
    return settings.jaeger_dir / "jaeger.log"


def pid_file(settings: ServicesSettings) -> Path:
    return settings.jaeger_dir / "jaeger.pid"


def _markers(settings: ServicesSettings) -> tuple[str, ...]:
    return (f"--config={config_file(settings)}",)


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


def _ready(settings: ServicesSettings) -> bool:
    return (
        accepts_connections(settings.host, settings.jaeger_otlp_http_port)
        and accepts_connections(settings.host, settings.jaeger_otlp_grpc_port)
        and query_answers(settings)
    )


def _state(settings: ServicesSettings, pid: int | None, message: str) -> ServiceState:
    return ServiceState(
        name=NAME,
        running=pid is not None,
        pid=pid,
        address=f"query {settings.jaeger_query_url}, OTLP http {settings.otlp_http_endpoint} "
        f"grpc {settings.host}:{settings.jaeger_otlp_grpc_port}",
        log_file=log_file(settings),
        message=message,
    )


def status(settings: ServicesSettings) -> ServiceState:
    pid = find_own_pid(pid_file(settings), _markers(settings))
    if pid is not None and not query_answers(settings):
        return _state(settings, pid, "process up, query API not (yet) answering")
    return _state(settings, pid, "")


def _wait_ready(settings: ServicesSettings, pid: int) -> None:
    wait_until_ready(
        "Jaeger",
        pid,
        lambda: _ready(settings),
        address=settings.jaeger_query_url,
        log=log_file(settings),
        timeout_s=settings.start_timeout_s,
        poll_s=0.3,
    )


def start(settings: ServicesSettings) -> ServiceState:
    """Start Jaeger unless it already runs; return once the query API and OTLP answer."""
    pid = find_own_pid(pid_file(settings), _markers(settings))
    if pid is not None:
        _wait_ready(settings, pid)
        return _state(settings, pid, "already running")
    require_free_ports("Jaeger", settings.host, settings.jaeger_ports())
    exe = ensure_binary(settings)
    settings.jaeger_dir.mkdir(parents=True, exist_ok=True)
    config_file(settings).write_text(render_config(settings))
    argv = [str(exe), f"--config={config_file(settings)}"]
    pid = spawn_detached(argv, log_file(settings), service_env())
    pid_file(settings).write_text(f"{pid}\n")
    _wait_ready(settings, pid)
    return _state(settings, pid, "started")


def stop(settings: ServicesSettings) -> ServiceState:
    """Stop our Jaeger (never another process), then wait until its ports are free."""
    pid = find_own_pid(pid_file(settings), _markers(settings))
    if pid is None:
        return _state(settings, None, "was not running")
    terminate(pid, settings.stop_timeout_s)
    pid_file(settings).unlink(missing_ok=True)
    if is_alive(pid):
        raise ServicesError(f"Jaeger (pid {pid}) did not exit after SIGKILL")
    if not wait_ports_free(settings.host, settings.jaeger_ports(), 15):
        raise ServicesError(f"Jaeger stopped but its ports {settings.jaeger_ports()} stay in use")
    return _state(settings, None, f"stopped (was pid {pid})")
