"""The dashboard's own knobs, from the environment (the worker's Settings hold the rest)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from thunderhelm.streams.worker.settings_source import MappingEnvSource, settings_error


class DashboardSettings(BaseSettings):
    """`THUNDERHELM_DASHBOARD_HOST`, `THUNDERHELM_DASHBOARD_PORT`, `THUNDERHELM_JAEGER_UI_LINK`."""

    model_config = SettingsConfigDict(
        env_prefix="THUNDERHELM_DASHBOARD_",
        frozen=True,
        extra="ignore",
        validate_by_name=True,
        validate_by_alias=True,
    )

    host: str = "127.0.0.1"
    port: int = Field(6070, ge=0, le=65_535)
    # Jaeger's own UI, only where it is really served (the Docker image);
    # the Go-built local Jaeger has the API but no UI, so no link by default.
    jaeger_ui_link: str | None = Field(None, validation_alias="THUNDERHELM_JAEGER_UI_LINK")

    @field_validator("jaeger_ui_link")
    @classmethod
    def _no_trailing_slash(cls, url: str | None) -> str | None:
        return url.rstrip("/") or None if url else None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, MappingEnvSource(cls, os.environ))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DashboardSettings:
        """Raises `SettingsError` naming each bad variable."""
        env = dict(os.environ if environ is None else environ)
        try:
            sources = (MappingEnvSource(cls, env),)
            return cls(_build_sources=(sources, {}))  # type: ignore[call-arg]  # see Settings
        except ValidationError as exc:
            raise settings_error(exc, cls, env) from None
