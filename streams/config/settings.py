"""Worker and client settings, read once from environment variables (pydantic-settings).

Every knob has a default that works on a developer machine where
`thunderhelm services start` runs Kafka and Jaeger on loopback; a bad value
stops start-up with a `SettingsError` that names the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import PydanticBaseSettingsSource, SettingsConfigDict

from thunderhelm.schemas.limits import Limits
from thunderhelm.streams.config.settings_source import (
    ComputedDefaults,
    EnvSettings,
    MappingEnvSource,
    SettingsError,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

__all__ = ["REPO_ROOT", "Settings", "SettingsError", "default_state_dir", "default_text_dir"]


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


def _computed(env: Mapping[str, str]) -> dict[str, Any]:
    """Defaults that depend on other variables; the environment's own values win."""
    state = default_state_dir(env)
    exporter = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    try:
        limits = Limits.from_env(env)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    return {
        "data_root": state / "data",
        "artifact_dir": state / "artifacts",
        "faust_dir": state / "faust",
        "text_dir": default_text_dir(),
        "tracing": exporter != "none" and env.get("OTEL_SDK_DISABLED", "").strip() != "true",
        "limits": limits,
    }


class Settings(EnvSettings):
    """Every worker and client knob; `THUNDERHELM_<NAME>` sets attribute `<name>`.

    The OpenTelemetry ones use the SDK's own variables (`OTEL_SERVICE_NAME`,
    `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`, `OTEL_TRACES_EXPORTER`,
    `OTEL_SDK_DISABLED`). Empty variables count as unset.
    """

    model_config = SettingsConfigDict(env_prefix="THUNDERHELM_")

    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = "thunderhelm."
    partitions: int = Field(4, ge=1, le=10_000)
    replication: int = Field(1, ge=1, le=32)
    app_id: str = "thunderhelm-worker"
    otlp_endpoint: str = Field(
        "http://127.0.0.1:4318",
        validation_alias=AliasChoices(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"
        ),
    )
    jaeger_ui: str = "http://127.0.0.1:16686"
    service_name: str = Field("thunderhelm-worker", validation_alias="OTEL_SERVICE_NAME")
    tracing: bool = True
    data_root: Path = Field(default_factory=lambda: default_state_dir(os.environ) / "data")
    text_dir: Path = Field(default_factory=default_text_dir)
    artifact_dir: Path = Field(default_factory=lambda: default_state_dir(os.environ) / "artifacts")
    # Faust's own folder (it keeps table metadata there even with the memory
    # store); one subfolder per app id. Never the current directory.
    faust_dir: Path = Field(default_factory=lambda: default_state_dir(os.environ) / "faust")
    pool_size: int = Field(0, ge=0, le=4096)  # 0: one interpreter per core
    # How the pool's threads yield to the event loop (and the rest of the
    # host): `idle` trains only on CPU time nothing else wants (SCHED_IDLE,
    # falling back to `low`), `low` at nice +10, `normal` as the worker.
    pool_priority: Literal["idle", "low", "normal"] = "idle"
    web_port: int = Field(6066, ge=0, le=65_535)
    # The address the web server binds; 0.0.0.0 in a container, so that a
    # published port reaches it.
    web_host: str = "127.0.0.1"
    # Operator limits on requests (THUNDERHELM_LIMIT_*), see schemas/limits.py.
    limits: Limits = Field(default_factory=Limits)
    # How fast the group notices a dead worker and hands its runs to another.
    session_timeout_s: float = Field(10.0, gt=0, le=3600, allow_inf_nan=False)
    # Prometheus metrics at /metrics on the web port (docs/operations.md).
    metrics: bool = True
    # Put each generation's candidates on candidate-tasks so every worker's
    # pool trains them; off: the run's owner trains them all itself.
    fanout: bool = True
    # A user's request that waited longer than this before its agent took it
    # makes the candidate trainer hold one interpreter back for a while
    # (streams/worker/commands/control_pressure.py); 0: always train on every interpreter.
    control_lag_ms: int = Field(15, ge=0, le=60_000)
    # `json`: one JSON object per log line, with trace_id and span_id.
    log_format: Literal["text", "json"] = "text"

    @field_validator("otlp_endpoint", "jaeger_ui")
    @classmethod
    def _no_trailing_slash(cls, url: str) -> str:
        return url.rstrip("/")

    @classmethod
    def _sources(cls, env: Mapping[str, str]) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment, then the defaults computed from it.
        return (MappingEnvSource(cls, env), ComputedDefaults(cls, _computed(env)))

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
    def candidate_tasks(self) -> str:
        """Internal: candidates to train, taken by any worker with a free interpreter."""
        return f"{self.topic_prefix}candidate-tasks"

    @property
    def trainer_group(self) -> str:
        """The consumer group on candidate-tasks: every worker is one member."""
        return f"{self.app_id}-candidates"

    @property
    def command_group(self) -> str:
        """The command reader's group on run-commands: it commits only, never joins."""
        return f"{self.app_id}-commands"

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
            self.candidate_tasks,
        )
