"""Operator limits: read from the environment, applied on top of the schema, with reasons."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from thunderhelm.schemas.codec import describe_validation_error
from thunderhelm.schemas.limits import Limits, record_bytes, validate_request
from thunderhelm.schemas.requests import RunRequest
from thunderhelm.streams.config.settings import Settings


def request(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "run_id": "lim-1",
        "dataset": {"name": "spirals", "samples": 300, "classes": 3, "seed": 7},
        "ga": {"population": 8, "generations": 4, "tournament_size": 3, "elite": 1},
        "training": {"epochs": 3, "batch_size": 64},
        "search_space": {"max_levels": 3, "max_units": 3, "max_neurons": 64},
        "budget": {"timeout_s": 600},
    }
    base.update(over)
    return base


def reasons(data: Any, limits: Limits) -> list[str]:
    with pytest.raises(ValidationError) as info:
        validate_request(data, limits)
    return describe_validation_error(info.value)


def test_defaults_equal_the_schema_and_accept_a_normal_request() -> None:
    got = validate_request(request(), Limits())
    assert isinstance(got, RunRequest) and got.ga.population == 8


def test_from_env_reads_every_limit_and_the_legacy_record_size() -> None:
    env = {
        "THUNDERHELM_LIMIT_MAX_POPULATION": "16",
        "THUNDERHELM_LIMIT_MAX_GENERATIONS": "5",
        "THUNDERHELM_LIMIT_MAX_EPOCHS": "2",
        "THUNDERHELM_LIMIT_MAX_LEVELS": "2",
        "THUNDERHELM_LIMIT_MAX_UNITS": "2",
        "THUNDERHELM_LIMIT_MAX_NEURONS": "32",
        "THUNDERHELM_LIMIT_MAX_TIMEOUT_S": "90.5",
        "THUNDERHELM_LIMIT_MAX_EVALUATIONS": "40",
        "THUNDERHELM_LIMIT_MAX_DEPTH": "8",
        "THUNDERHELM_LIMIT_MAX_STRING": "100",
        "THUNDERHELM_MAX_RECORD_BYTES": "5000",
    }
    limits = Limits.from_env(env)
    assert limits == Limits(
        max_record_bytes=5000,
        max_depth=8,
        max_string=100,
        max_population=16,
        max_generations=5,
        max_epochs=2,
        max_levels=2,
        max_units=2,
        max_neurons=32,
        max_timeout_s=90.5,
        max_evaluations=40,
    )
    # the new name wins over the legacy one
    both = {"THUNDERHELM_MAX_RECORD_BYTES": "5000", "THUNDERHELM_LIMIT_MAX_RECORD_BYTES": "7"}
    assert Limits.from_env(both).max_record_bytes == 7
    assert Settings.from_env(env).limits == limits


@pytest.mark.parametrize(
    ("name", "raw"), [("MAX_POPULATION", "many"), ("MAX_EPOCHS", "0"), ("MAX_DEPTH", "-3")]
)
def test_bad_settings_fail_loudly(name: str, raw: str) -> None:
    with pytest.raises(ValueError, match=name.lower() if raw != "many" else name):
        Limits.from_env({f"THUNDERHELM_LIMIT_{name}": raw})


@pytest.mark.parametrize(
    ("limits", "data", "where"),
    [
        (Limits(max_population=4), request(), "ga.population"),
        (Limits(max_generations=2), request(), "ga.generations"),
        (Limits(max_epochs=1), request(), "training.epochs"),
        (Limits(max_levels=1), request(), "search_space.max_levels"),
        (Limits(max_units=2), request(), "search_space.max_units"),
        (Limits(max_neurons=8), request(), "search_space.max_neurons"),
        (Limits(max_timeout_s=60), request(), "budget.timeout_s"),
        (
            Limits(max_evaluations=10),
            request(budget={"timeout_s": 60, "max_evaluations": 11}),
            "budget.max_evaluations",
        ),
        (Limits(max_evaluations=31), request(), "ga: population x generations = 32"),
    ],
)
def test_each_limit_names_its_field(limits: Limits, data: Any, where: str) -> None:
    assert any(r.startswith(where) for r in reasons(data, limits)), reasons(data, limits)


def test_all_broken_limits_are_reported_together() -> None:
    got = reasons(request(), Limits(max_population=2, max_epochs=1))
    assert len(got) == 2
    assert "ga.population: Input should be less than or equal to 2" in got


def test_an_explicit_evaluation_budget_replaces_population_x_generations() -> None:
    data = request(budget={"timeout_s": 60, "max_evaluations": 10})
    assert validate_request(data, Limits(max_evaluations=10)).budget.max_evaluations == 10


def test_deep_nesting_and_long_strings_are_refused_before_the_schema() -> None:
    deep: Any = "x"
    for _ in range(10):
        deep = {"a": deep}
    got = reasons(request(extra=deep), Limits(max_depth=6))
    assert any("nested deeper than the limit of 6" in r for r in got), got
    long = reasons(request(run_id="r" * 101), Limits(max_string=100))
    assert long == ["run_id: String should have at most 100 characters"]
    long_key = reasons(request(**{"k" * 200: 1}), Limits(max_string=100))
    assert "String should have at most 100 characters" in long_key[0]


def test_the_schema_still_applies_under_the_limits() -> None:
    got = reasons(request(ga={"population": "8"}), Limits())
    assert got == ["ga.population: Input should be a valid integer"]
    assert reasons(request(dataset={"name": "csv", "path": "../../etc/passwd"}), Limits())


def test_record_bytes_counts_key_value_and_every_header() -> None:
    assert record_bytes(b"k", b"vv", [("h", b"123"), ("h", b"123")]) == 1 + 2 + 4 + 4
    assert record_bytes(None, None, {"h": b"1"}) == 2
    assert record_bytes(None, None, None) == 0
