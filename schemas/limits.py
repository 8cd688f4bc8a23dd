"""Operator limits on what one request may ask for, applied on top of the schema.

The pydantic models in `schemas/requests.py` hold the hard bounds of the wire
contract; an operator tightens them per deployment (a laptop should not accept
a 512-candidate population) with `THUNDERHELM_LIMIT_*` settings. A request
that breaks a limit fails with a pydantic `ValidationError` naming each field,
so the service turns it into `run.rejected` with reasons exactly as it does
for a schema error. Record size and JSON nesting are checked before anything
is parsed into models, because those are what a hostile producer uses to make
a worker spend memory and time.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from thunderhelm.schemas.requests import RunRequest

ENV_PREFIX = "THUNDERHELM_LIMIT_"


@dataclass(frozen=True)
class Limits:
    """Upper bounds per request; the defaults equal the schema's own bounds."""

    max_record_bytes: int = 1_000_000  # key + value + headers of one input record
    max_depth: int = 32  # JSON nesting of the request data (the codec caps records at 32)
    max_string: int = 10_000  # longest string (key or value) anywhere in the data
    max_population: int = 512
    max_generations: int = 1000
    max_epochs: int = 200
    max_levels: int = 12  # hidden levels
    max_units: int = 16  # units per level
    max_neurons: int = 1024  # neurons per unit
    max_timeout_s: float = 7 * 24 * 3600.0
    max_evaluations: int = 1_000_000  # candidate trainings in one run

    def __post_init__(self) -> None:
        for f in fields(self):
            if not getattr(self, f.name) > 0:
                raise ValueError(f"limit {f.name} must be positive, got {getattr(self, f.name)!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """Read `THUNDERHELM_LIMIT_<NAME>` (e.g. `THUNDERHELM_LIMIT_MAX_POPULATION`).

        `THUNDERHELM_MAX_RECORD_BYTES`, the older name of the record-size
        setting, is still honoured when the new one is absent.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        legacy = env.get("THUNDERHELM_MAX_RECORD_BYTES")
        if legacy is not None:
            values["max_record_bytes"] = _parse(int, "THUNDERHELM_MAX_RECORD_BYTES", legacy)
        for f in fields(cls):
            name = ENV_PREFIX + f.name.upper()
            raw = env.get(name)
            if raw is not None:
                kind = float if f.type in ("float", float) else int
                values[f.name] = _parse(kind, name, raw)
        return cls(**values)


def _parse(kind: type[int] | type[float], name: str, raw: str) -> int | float:
    try:
        return kind(raw.strip())
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a valid {kind.__name__}") from None


def record_bytes(
    key: bytes | None,
    value: bytes | None,
    headers: Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None,
) -> int:
    """Size of a record as the limit counts it: key, value, header names and values.

    Takes the raw header list too, so repeated header names all count.
    """
    size = len(key or b"") + len(value or b"")
    pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
    for name, raw in pairs:
        size += len(name) + len(raw or b"")
    return size


def validate_request(data: Any, limits: Limits) -> RunRequest:
    """The schema, then the operator's limits; raises `ValidationError` with every reason."""
    shape = _shape_errors(data, limits)
    if shape:
        raise ValidationError.from_exception_data("RunRequest", shape)
    request = RunRequest.model_validate(data)
    errors: list[InitErrorDetails] = []

    def at_most(loc: tuple[str, ...], value: float | None, limit: float) -> None:
        if value is not None and value > limit:
            errors.append(
                {"type": "less_than_equal", "loc": loc, "input": value, "ctx": {"le": limit}}
            )

    ga, space = request.ga, request.search_space
    at_most(("ga", "population"), ga.population, limits.max_population)
    at_most(("ga", "generations"), ga.generations, limits.max_generations)
    at_most(("training", "epochs"), request.training.epochs, limits.max_epochs)
    at_most(("search_space", "max_levels"), space.max_levels, limits.max_levels)
    at_most(("search_space", "max_units"), space.max_units, limits.max_units)
    at_most(("search_space", "max_neurons"), space.max_neurons, limits.max_neurons)
    at_most(("budget", "timeout_s"), request.budget.timeout_s, limits.max_timeout_s)
    at_most(("budget", "max_evaluations"), request.budget.max_evaluations, limits.max_evaluations)
    if request.budget.max_evaluations is None and ga.population * ga.generations > (
        limits.max_evaluations
    ):
        errors.append(
            {
                "type": PydanticCustomError(
                    "limit_exceeded",
                    "population x generations = {asked} candidate trainings exceeds the "
                    "limit of {limit}; set budget.max_evaluations or ask for fewer",
                    {"asked": ga.population * ga.generations, "limit": limits.max_evaluations},
                ),
                "loc": ("ga",),
                "input": {"population": ga.population, "generations": ga.generations},
            }
        )
    if errors:
        raise ValidationError.from_exception_data("RunRequest", errors)
    return request


def _shape_errors(data: Any, limits: Limits) -> list[InitErrorDetails]:
    """Nesting depth and string lengths, walked iteratively (no recursion to exhaust)."""
    errors: list[InitErrorDetails] = []
    deepest_reported = False
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(data, ())]
    while stack and len(errors) < 20:
        item, loc = stack.pop()
        if len(loc) + 1 > limits.max_depth and not deepest_reported:
            deepest_reported = True
            errors.append(
                {
                    "type": PydanticCustomError(
                        "limit_exceeded",
                        "nested deeper than the limit of {limit} levels",
                        {"limit": limits.max_depth},
                    ),
                    "loc": loc,
                    "input": "...",
                }
            )
            continue
        if isinstance(item, str):
            if len(item) > limits.max_string:
                errors.append(_too_long(loc, item, limits))
        elif isinstance(item, dict):
            for k, v in item.items():
                if isinstance(k, str) and len(k) > limits.max_string:
                    errors.append(_too_long(loc, k, limits))
                    continue
                stack.append((v, (*loc, str(k)[:64])))
        elif isinstance(item, list):
            stack.extend((v, (*loc, i)) for i, v in enumerate(item))
    return errors


def _too_long(loc: tuple[str | int, ...], text: str, limits: Limits) -> InitErrorDetails:
    return {
        "type": "string_too_long",
        "loc": loc,
        "input": text[:32] + "...",
        "ctx": {"max_length": limits.max_string},
    }
