"""pydantic-settings plumbing shared by the worker's and the dashboard's settings.

pydantic-settings reads `os.environ`; our callers (and tests) also hand in an
environment of their own (`Settings.from_env(env)`), so the environment is a
source built from a mapping. A bad value must end a start-up with one line
that names the variable, its value and what it should be, so pydantic's
errors are rewritten here into a `SettingsError` of that shape. `EnvSettings`
is the base both settings classes build on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import UnionType
from typing import Any, Self, Union, get_args, get_origin

import annotated_types
from pydantic import AliasChoices, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)


class SettingsError(ValueError):
    """An environment variable holds a value the process cannot use."""


class MappingEnvSource(EnvSettingsSource):
    """Environment variables read from a given mapping, values stripped of blanks."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = {k: v.strip() for k, v in environ.items()}
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # Empty values count as unset (as compose files often leave them).
        env = (
            self._environ
            if self.case_sensitive
            else {k.lower(): v for k, v in self._environ.items()}
        )
        return {k: v for k, v in env.items() if v != ""}


class ComputedDefaults(PydanticBaseSettingsSource):
    """Defaults that depend on the environment (paths under the user's state folder)."""

    def __init__(self, settings_cls: type[BaseSettings], values: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._values = values

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


def env_names(settings_cls: type[BaseSettings], field_name: str) -> list[str]:
    """The variables a field is read from, in the order they are tried."""
    field = settings_cls.model_fields[field_name]
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    if isinstance(alias, str):
        return [alias]
    prefix = str(settings_cls.model_config.get("env_prefix", ""))
    return [f"{prefix}{field_name}".upper()]


def _field_of(settings_cls: type[BaseSettings], key: str) -> str | None:
    if key in settings_cls.model_fields:
        return key
    for name in settings_cls.model_fields:
        if key in env_names(settings_cls, name):
            return name
    return None


def _bounds(field: FieldInfo) -> str:
    marks = (
        (annotated_types.Ge, "ge", ">="),
        (annotated_types.Gt, "gt", ">"),
        (annotated_types.Le, "le", "<="),
        (annotated_types.Lt, "lt", "<"),
    )
    found: dict[str, Any] = {}
    for item in field.metadata:
        for kind, attribute, sign in marks:
            if isinstance(item, kind):
                found[sign] = getattr(item, attribute)
    if ">=" in found and "<=" in found:
        return f" from {found['>=']} to {found['<=']}"
    return " and".join(f" {sign} {value}" for sign, value in found.items())


def _expectation(field: FieldInfo, error: Mapping[str, Any]) -> str:
    kind = field.annotation
    # `int | None` (a variable that may stay unset) is described as its `int`.
    present = [arg for arg in get_args(kind) if arg is not type(None)]
    if get_origin(kind) in (Union, UnionType) and len(present) == 1:
        kind = present[0]
    if kind is int:
        return f"an integer{_bounds(field)}"
    if kind is float:
        return f"a finite number{_bounds(field)}"
    if kind is bool:
        return "true or false"
    if error["type"] == "literal_error":
        return f"one of {error.get('ctx', {}).get('expected', '')}"
    return str(error["msg"])[:1].lower() + str(error["msg"])[1:]


def settings_error(
    exc: ValidationError, settings_cls: type[BaseSettings], environ: Mapping[str, str]
) -> SettingsError:
    """`NAME: must be an integer >= 1, got 'x'` for each bad variable, joined by '; '."""
    reasons: list[str] = []
    for error in exc.errors():
        key = str(error["loc"][0]) if error["loc"] else ""
        name = _field_of(settings_cls, key)
        if name is None:
            reasons.append(f"{key}: {error['msg']}")
            continue
        variables = env_names(settings_cls, name)
        variable = next((v for v in variables if v in environ), variables[0])
        raw = environ.get(variable, error.get("input"))
        field = settings_cls.model_fields[name]
        reasons.append(f"{variable}: must be {_expectation(field, error)}, got {raw!r}")
    return SettingsError("; ".join(reasons))


class EnvSettings(BaseSettings):
    """Frozen settings read from keyword arguments and an environment, nothing else.

    A subclass sets its `env_prefix` in `model_config` (the rest of the
    configuration is inherited) and, where some defaults depend on other
    variables, adds sources by overriding `_sources`.
    """

    model_config = SettingsConfigDict(
        frozen=True,
        extra="ignore",
        validate_by_name=True,
        validate_by_alias=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Keyword arguments first, then the process environment (and what
        # `_sources` adds); no .env or secret files.
        return (init_settings, *cls._sources(os.environ))

    @classmethod
    def _sources(cls, env: Mapping[str, str]) -> tuple[PydanticBaseSettingsSource, ...]:
        """Where values come from after keyword arguments, given the environment `env`."""
        return (MappingEnvSource(cls, env),)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """The settings `environ` (default: the process environment) describes.

        Raises `SettingsError` naming each bad variable, its value and what it must be.
        """
        env = dict(os.environ if environ is None else environ)
        try:
            # _build_sources: pydantic-settings' own argument (seen by pydantic's mypy plugin).
            return cls(_build_sources=(cls._sources(env), {}))
        except ValidationError as exc:
            raise settings_error(exc, cls, env) from None
