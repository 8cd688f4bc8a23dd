"""Settings, status types and the `LocalService` base shared by the local services.

Dev and CI machines have no Docker engine, so ``thunderhelm services`` runs a
real Kafka broker and a real Jaeger as detached processes on 127.0.0.1. This
module holds what both need: where files live, which ports they use, and
(`LocalService`) how a service is found, started, waited for and stopped;
each service says only how to prepare its command line and probe itself.
The process plumbing is in processes.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from thunderhelm.streams.config.settings_source import MappingEnvSource, settings_error
from thunderhelm.streams.devservices import processes
from thunderhelm.streams.devservices.processes import ServicesError

REPO_DIR = Path(__file__).resolve().parents[2]


def _default_cache_dir() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "thunderhelm"


class _ServicesEnv(BaseSettings):
    """The variables `ServicesSettings.from_env` reads, parsed and checked by pydantic-settings.

    Only these fields come from the environment; the rest of `ServicesSettings`
    (host, folders of the checkout, stop and build timeouts) are set in code.
    """

    model_config = SettingsConfigDict(
        env_prefix="THUNDERHELM_", extra="ignore", validate_by_name=True, validate_by_alias=True
    )

    cache_dir: Path | None = None
    state_dir: Path | None = None
    kafka_heap_max: str | None = Field(None, validation_alias="THUNDERHELM_KAFKA_HEAP")
    kafka_auto_create_topics: bool | None = None
    start_timeout_s: float | None = Field(
        None, gt=0, allow_inf_nan=False, validation_alias="THUNDERHELM_SERVICES_START_TIMEOUT"
    )
    kafka_port: int | None = Field(None, ge=1, le=65_535)
    kafka_controller_port: int | None = Field(None, ge=1, le=65_535)
    jaeger_otlp_grpc_port: int | None = Field(None, ge=1, le=65_535)
    jaeger_otlp_http_port: int | None = Field(None, ge=1, le=65_535)
    jaeger_query_port: int | None = Field(None, ge=1, le=65_535)
    jaeger_query_grpc_port: int | None = Field(None, ge=1, le=65_535)
    jaeger_metrics_port: int | None = Field(None, ge=1, le=65_535)


@dataclass(frozen=True)
class ServicesSettings:
    """Where the local services keep their files and which loopback ports they bind.

    Every port is a setting so that a second, independent instance (its own
    ``state_dir``, other ports) can run beside the main one, e.g. in tests.
    """

    cache_dir: Path = field(default_factory=_default_cache_dir)
    state_dir: Path = REPO_DIR / "var" / "services"
    tools_dir: Path = REPO_DIR / "tools"
    host: str = "127.0.0.1"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    kafka_heap_max: str = "512m"
    kafka_auto_create_topics: bool = False
    jaeger_otlp_grpc_port: int = 4317
    jaeger_otlp_http_port: int = 4318
    jaeger_query_port: int = 16686
    jaeger_query_grpc_port: int = 16685
    jaeger_metrics_port: int = 8888
    jaeger_max_traces: int = 50_000
    start_timeout_s: float = 180.0
    stop_timeout_s: float = 30.0
    build_timeout_s: float = 3600.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServicesSettings:
        """Build settings from ``THUNDERHELM_*`` environment variables (unset means default)."""
        environ = dict(os.environ if env is None else env)
        try:
            sources = (MappingEnvSource(_ServicesEnv, environ),)
            parsed = _ServicesEnv(_build_sources=(sources, {}))  # as Settings.from_env does
        except ValidationError as exc:
            raise ServicesError(str(settings_error(exc, _ServicesEnv, environ))) from None
        changes = {k: v for k, v in parsed.model_dump(exclude_none=True).items()}
        for name in ("cache_dir", "state_dir"):
            if name in changes:
                changes[name] = changes[name].expanduser()
        return replace(cls(), **changes)

    @property
    def kafka_dir(self) -> Path:
        return self.state_dir / "kafka"

    @property
    def jaeger_dir(self) -> Path:
        return self.state_dir / "jaeger"

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    @property
    def jaeger_query_url(self) -> str:
        return f"http://{self.host}:{self.jaeger_query_port}"

    @property
    def otlp_http_endpoint(self) -> str:
        return f"http://{self.host}:{self.jaeger_otlp_http_port}"

    def kafka_ports(self) -> tuple[int, ...]:
        return (self.kafka_port, self.kafka_controller_port)

    def jaeger_ports(self) -> tuple[int, ...]:
        return (
            self.jaeger_otlp_grpc_port,
            self.jaeger_otlp_http_port,
            self.jaeger_query_port,
            self.jaeger_query_grpc_port,
            self.jaeger_metrics_port,
        )

    def as_dict(self) -> dict[str, object]:
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class ServiceState:
    """One service as ``status``/``start``/``stop`` found or left it."""

    name: str
    running: bool
    pid: int | None
    address: str
    log_file: Path
    message: str

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "running": self.running,
            "pid": self.pid,
            "address": self.address,
            "log_file": str(self.log_file),
            "message": self.message,
        }


@dataclass(frozen=True)
class ServicesStatus:
    """The state of every service an operation looked at."""

    services: tuple[ServiceState, ...]

    def get(self, name: str) -> ServiceState | None:
        return next((s for s in self.services if s.name == name), None)

    @property
    def kafka(self) -> ServiceState | None:
        return self.get("kafka")

    @property
    def jaeger(self) -> ServiceState | None:
        return self.get("jaeger")

    @property
    def all_running(self) -> bool:
        return bool(self.services) and all(s.running for s in self.services)

    @property
    def none_running(self) -> bool:
        return not any(s.running for s in self.services)

    def render(self) -> str:
        lines = []
        for s in self.services:
            state = f"running (pid {s.pid})" if s.running else "not running"
            lines.append(f"{s.name:<7} {state:<22} {s.address}")
            lines.append(f"        log: {s.log_file}")
            if s.message:
                lines.append(f"        {s.message}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, object]:
        return {s.name: s.as_dict() for s in self.services}


# --------------------------------------------------------------------------- locking


@contextlib.contextmanager
def state_lock(settings: ServicesSettings) -> Iterator[None]:
    """Serialise start/stop of one state dir across processes (e.g. parallel test workers)."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.state_dir / "services.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- a service


class LocalService(ABC):
    """One local service: its files, its process and how it is started and stopped.

    A subclass names its files and ports, builds its command line
    (`prepare`), and says how it is probed: `up` for `status`, `ready` for
    the wait after a start.
    """

    name: str  # "kafka": its files are <home>/<name>.pid and <name>.log
    title: str  # "Kafka", in messages
    poll_s: float = 0.5
    not_up: str = "process up, not (yet) answering"

    def __init__(self, settings: ServicesSettings) -> None:
        self.settings = settings

    @property
    @abstractmethod
    def home(self) -> Path: ...

    @abstractmethod
    def markers(self) -> tuple[str, ...]:
        """Command-line parts that tell our process from any other with the pid."""

    @abstractmethod
    def ports(self) -> tuple[int, ...]: ...

    @abstractmethod
    def address(self) -> str:
        """Where the service answers, for the user."""

    @abstractmethod
    def up(self) -> bool:
        """A quick probe for `status`."""

    @abstractmethod
    def ready(self) -> bool:
        """The probe a start waits for."""

    @abstractmethod
    def prepare(self) -> tuple[list[str], str]:
        """Fetch or build what the service needs and write its config: (argv, note)."""

    @property
    def ready_address(self) -> str:
        return self.address()

    def pid_file(self) -> Path:
        return self.home / f"{self.name}.pid"

    def log_file(self) -> Path:
        return self.home / f"{self.name}.log"

    def state(self, pid: int | None, message: str) -> ServiceState:
        return ServiceState(
            name=self.name,
            running=pid is not None,
            pid=pid,
            address=self.address(),
            log_file=self.log_file(),
            message=message,
        )

    def pid(self) -> int | None:
        return processes.find_own_pid(self.pid_file(), self.markers())

    def status(self) -> ServiceState:
        pid = self.pid()
        if pid is not None and not self.up():
            return self.state(pid, self.not_up)
        return self.state(pid, "")

    def wait_ready(self, pid: int) -> None:
        processes.wait_until_ready(
            self.title,
            pid,
            self.ready,
            address=self.ready_address,
            log=self.log_file(),
            timeout_s=self.settings.start_timeout_s,
            poll_s=self.poll_s,
        )

    def start(self) -> ServiceState:
        """Start the service unless it already runs; return once it answers."""
        pid = self.pid()
        if pid is not None:
            self.wait_ready(pid)
            return self.state(pid, "already running")
        processes.require_free_ports(self.title, self.settings.host, self.ports())
        argv, note = self.prepare()
        pid = processes.spawn_detached(argv, self.log_file(), processes.service_env())
        self.pid_file().write_text(f"{pid}\n")
        self.wait_ready(pid)
        return self.state(pid, "; ".join(x for x in ("started", note) if x))

    def stop(self) -> ServiceState:
        """Stop our process (never another one), then wait until its ports are free."""
        pid = self.pid()
        if pid is None:
            return self.state(None, "was not running")
        processes.terminate(pid, self.settings.stop_timeout_s)
        self.pid_file().unlink(missing_ok=True)
        if processes.is_alive(pid):
            raise ServicesError(f"{self.title} (pid {pid}) did not exit after SIGKILL")
        ports = self.ports()
        if not processes.wait_ports_free(self.settings.host, ports, 15):
            raise ServicesError(f"{self.title} stopped but its ports {ports} stay in use")
        return self.state(None, f"stopped (was pid {pid})")
