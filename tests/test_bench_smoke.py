"""Every benchmark's code path, end to end, at smoke size.

`thunderhelm bench NAME --quick` runs each benchmark with tiny settings into a
temporary folder: these tests prove the benchmarks run and write the fields
other checks read, and that the summary keeps every benchmark's section. They
assert nothing about speed or accuracy; the real figures come from a full
`thunderhelm bench all`.
"""

import json
import math
from pathlib import Path

import pytest

from bench.cli import BENCHMARKS, main
from bench.report import rebuild_summary, write_result

FIELDS = {
    "pool": (
        "speedup_subinterp",
        "speedup_threads",
        "speedup_processes",
        "dispatch_us",
        "rss_mb_per_interp",
    ),
    "kernel": ("ratio_vs_numpy",),
    "data": (
        "csv_ratio_vs_pyarrow",
        "parquet_ratio_vs_pyarrow",
        "csv_ratio_vs_pandas_sklearn",
        "parquet_ratio_vs_pandas_sklearn",
        "peak_rss_ratio",
        "rss_per_interpreter_growth_mb",
        "friedman_r2",
        "hgb_r2",
    ),
    "quality": (
        "evaluations",
        "shakespeare_default_test_mean",
        "cancer_default_test_mean",
        "cancer_tpe_hyperband_ensemble_test_mean",
        "friedman_default_test_mean",
        "friedman_tpe_hyperband_test_mean",
        "shakespeare_ga_test_mean",
        "shakespeare_random_test_mean",
        "shakespeare_tpe_hyperband_test_mean",
        "spirals6_ga_test_mean",
        "spirals6_random_test_mean",
        "spirals6_random_sh_test_mean",
    ),
    "warm_start": ("cold_test_mean", "warm_test_mean", "warm_minus_cold_test_mean"),
}


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_quick_benchmark_writes_its_fields(name: str, tmp_path: Path) -> None:
    assert main([name, "--quick", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "results" / f"{name}.json").read_text())
    assert record["benchmark"] == name and record["quick"] is True
    for field in FIELDS[name]:
        value = record[field]
        assert isinstance(value, int | float) and math.isfinite(value), (field, value)
    assert record["bars"] and all({"bar", "measured", "met"} <= set(b) for b in record["bars"])
    assert record["environment"]["cpus"] >= 1
    summary = (tmp_path / "RESULTS.md").read_text()
    assert f"## {name}" in summary and "quick mode" in summary


def test_pool_quick_runs_agree_across_executors(tmp_path: Path) -> None:
    assert main(["pool", "--quick", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "results" / "pool.json").read_text())
    assert record["identical_results"] is True
    assert set(record["timings_s"]) == {"sequential", "subinterpreters", "threads", "processes"}


def test_every_benchmark_is_reachable_from_the_cli() -> None:
    assert set(FIELDS) <= set(BENCHMARKS)


def test_summary_keeps_every_benchmark_and_renders_plain_results(tmp_path: Path) -> None:
    write_result("alpha", {"summary": "alpha's own words", "bars": []}, tmp_path)
    write_result("beta", {"figure": 1.23456, "count": 3, "nested": {"skipped": True}}, tmp_path)
    write_result("alpha", {"summary": "alpha again"}, tmp_path)  # rewrites only alpha
    text = rebuild_summary(tmp_path).read_text()
    assert "## alpha" in text and "alpha again" in text and "alpha's own words" not in text
    assert "## beta" in text and "| figure | 1.2346 |" in text and "| count | 3 |" in text
    assert "skipped" not in text
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["alpha.json", "beta.json"]
