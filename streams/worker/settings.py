"""Worker and client settings, read once from environment variables.

Every knob has a default that works on a developer machine where
`thunderhelm services start` runs Kafka and Jaeger on loopback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from thunderhelm.schemas.limits import Limits

REPO_ROOT = Path(__file__).resolve().parents[2]


def default_text_dir() -> Path:
    """Where the Shakespeare plays are when `THUNDERHELM_TEXT_DIR` does not say.

    The data lives beside the checkout in `shared/data/shakespeare` (never
    copied into the repo); look for that folder next to the repo or any
    folder above it, then at the workplace's usual place.
    """
    for folder in (REPO_ROOT, *REPO_ROOT.parents):
        candidate = folder / "shared" / "data" / "shakespeare"
        if candidate.is_dir():
            return candidate
    usual = Path("/work/shared/data/shakespeare")
    return usual if usual.is_dir() else REPO_ROOT / "data" / "shakespeare"


def default_state_dir(env: Mapping[str, str]) -> Path:
    """Where the worker writes (artifacts) and reads file datasets, unless told.

    `THUNDERHELM_STATE_DIR`, else the XDG state folder of the user
    (`$XDG_STATE_HOME/thunderhelm`, `~/.local/state/thunderhelm`): a folder
    the user owns, never the install location (site-packages, which an
    unprivileged user, such as the image's, cannot write).
    """
    if env.get("THUNDERHELM_STATE_DIR"):
        return Path(env["THUNDERHELM_STATE_DIR"])
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]) / "thunderhelm"
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    return home / ".local" / "state" / "thunderhelm"


class SettingsError(ValueError):
    """An environment variable holds a value the worker cannot use."""


class _Numbers(BaseModel):
    """The numeric settings as the environment spells them, with their bounds."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    partitions: int = Field(4, ge=1, le=10_000, alias="THUNDERHELM_PARTITIONS")
    replication: int = Field(1, ge=1, le=32, alias="THUNDERHELM_REPLICATION")
    pool_size: int = Field(0, ge=0, le=4096, alias="THUNDERHELM_POOL_SIZE")
    web_port: int = Field(6066, ge=0, le=65_535, alias="THUNDERHELM_WEB_PORT")
    session_timeout_s: float = Field(
        10.0, gt=0, le=3600, allow_inf_nan=False, alias="THUNDERHELM_SESSION_TIMEOUT_S"
    )


def _numbers(env: Mapping[str, str]) -> _Numbers:
    """Parse and bound the numeric settings; the error names each bad variable."""
    try:
        return _Numbers.model_validate(env)
    except ValidationError as exc:
        reasons = [
            f"{err['loc'][0]}={env.get(str(err['loc'][0]))!r}: {err['msg']}" for err in exc.errors()
        ]
        raise SettingsError("; ".join(reasons)) from None


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = "thunderhelm."
    partitions: int = 4
    replication: int = 1
    app_id: str = "thunderhelm-worker"
    otlp_endpoint: str = "http://127.0.0.1:4318"
    jaeger_ui: str = "http://127.0.0.1:16686"
    service_name: str = "thunderhelm-worker"
    tracing: bool = True
    data_root: Path = field(default_factory=lambda: default_state_dir(os.environ) / "data")
    text_dir: Path = REPO_ROOT / "data" / "shakespeare"
    artifact_dir: Path = field(default_factory=lambda: default_state_dir(os.environ) / "artifacts")
    pool_size: int = 0  # 0: one interpreter per core
    web_port: int = 6066
    # The address the web server binds; 0.0.0.0 in a container, so that a
    # published port reaches it.
    web_host: str = "127.0.0.1"
    # Operator limits on requests (THUNDERHELM_LIMIT_*), see schemas/limits.py.
    limits: Limits = field(default_factory=Limits)
    # How fast the group notices a dead worker and hands its runs to another.
    session_timeout_s: float = 10.0

    @property
    def run_requests(self) -> str:
        return f"{self.topic_prefix}run-requests"

    @property
    def run_events(self) -> str:
        return f"{self.topic_prefix}run-events"

    @property
    def run_results(self) -> str:
        return f"{self.topic_prefix}run-results"

    @property
    def dead_letters(self) -> str:
        return f"{self.topic_prefix}dead-letters"

    @property
    def run_commands(self) -> str:
        """Internal: run-requests records the intake admitted, for the Faust agent."""
        return f"{self.topic_prefix}run-commands"

    @property
    def intake_group(self) -> str:
        """The intake's consumer group on run-requests (Faust's group is `app_id`)."""
        return f"{self.app_id}-intake"

    @property
    def topics(self) -> tuple[str, ...]:
        return (
            self.run_requests,
            self.run_events,
            self.run_results,
            self.dead_letters,
            self.run_commands,
        )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        numbers = _numbers({k: v.strip() for k, v in env.items() if k.startswith("THUNDERHELM_")})
        state = default_state_dir(env)
        exporter = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
        endpoint = env.get(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            env.get("OTEL_EXPORTER_OTLP_ENDPOINT", cls.otlp_endpoint),
        )
        return cls(
            bootstrap_servers=env.get("THUNDERHELM_BOOTSTRAP_SERVERS", cls.bootstrap_servers),
            topic_prefix=env.get("THUNDERHELM_TOPIC_PREFIX", cls.topic_prefix),
            partitions=numbers.partitions,
            replication=numbers.replication,
            app_id=env.get("THUNDERHELM_APP_ID", cls.app_id),
            otlp_endpoint=endpoint.rstrip("/"),
            jaeger_ui=env.get("THUNDERHELM_JAEGER_UI", cls.jaeger_ui).rstrip("/"),
            service_name=env.get("OTEL_SERVICE_NAME", cls.service_name),
            tracing=exporter != "none" and env.get("OTEL_SDK_DISABLED", "") != "true",
            data_root=Path(env.get("THUNDERHELM_DATA_ROOT") or state / "data"),
            text_dir=Path(env.get("THUNDERHELM_TEXT_DIR", str(default_text_dir()))),
            artifact_dir=Path(env.get("THUNDERHELM_ARTIFACT_DIR") or state / "artifacts"),
            pool_size=numbers.pool_size,
            web_port=numbers.web_port,
            web_host=env.get("THUNDERHELM_WEB_HOST", cls.web_host),
            limits=Limits.from_env(env),
            session_timeout_s=numbers.session_timeout_s,
        )
