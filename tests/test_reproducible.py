"""The same request gives the same run whatever the pool size.

Every random choice of the GA and every training seed derive from the run
seed and the candidate's coordinates, never from which interpreter trained
it or when it finished. This runs one request through `thunderhelm run`'s
code path with one interpreter and with two, and compares the results.
"""

import json
from pathlib import Path
from typing import Any

import pytest

from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.execution.local_run import run_local

REQUEST: dict[str, Any] = {
    "run_id": "reproducible",
    "dataset": {"name": "spirals", "samples": 400, "classes": 3, "seed": 3},
    "ga": {"population": 5, "generations": 3, "tournament_size": 2, "elite": 1, "seed": 11},
    "training": {"epochs": 3, "batch_size": 32},
    "search_space": {"max_levels": 2, "max_units": 3, "max_neurons": 16},
}


def _run(pool_size: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    settings = Settings(
        data_root=tmp_path,
        artifact_dir=tmp_path / f"pool-{pool_size}" / "artifacts",
        pool_size=pool_size,
    )
    logs = tmp_path / f"pool-{pool_size}" / "logs"  # a log per run: the second must not resume
    assert run_local(settings, REQUEST, pool_size, as_json=True, logs=logs) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def test_pool_size_one_and_two_give_the_same_best(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = _run(1, tmp_path, capsys)
    two = _run(2, tmp_path, capsys)
    assert one["status"] == two["status"] == "succeeded"
    assert one["best"] is not None and two["best"] is not None
    assert one["best"]["genome"] == two["best"]["genome"]
    assert one["best"]["fitness"] == two["best"]["fitness"]
    assert one["best"]["metrics"] == two["best"]["metrics"]
    assert one["evaluations"] == two["evaluations"]
