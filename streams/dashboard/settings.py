"""The dashboard's own knobs, from the environment (the worker's Settings hold the rest)."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from thunderhelm.streams.config.settings_source import EnvSettings


class DashboardSettings(EnvSettings):
    """`THUNDERHELM_DASHBOARD_HOST`, `THUNDERHELM_DASHBOARD_PORT`, `THUNDERHELM_JAEGER_UI_LINK`."""

    model_config = SettingsConfigDict(env_prefix="THUNDERHELM_DASHBOARD_")

    host: str = "127.0.0.1"
    port: int = Field(6070, ge=0, le=65_535)
    # Jaeger's own UI, only where it is really served (the Docker image);
    # the Go-built local Jaeger has the API but no UI, so no link by default.
    jaeger_ui_link: str | None = Field(None, validation_alias="THUNDERHELM_JAEGER_UI_LINK")

    @field_validator("jaeger_ui_link")
    @classmethod
    def _no_trailing_slash(cls, url: str | None) -> str | None:
        return url.rstrip("/") or None if url else None
