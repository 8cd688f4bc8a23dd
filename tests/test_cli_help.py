"""Every `thunderhelm` command answers `--help` with its options, and parses as documented.

Runs in-process through typer's CliRunner: no broker, no worker. `bench`
is checked for both option orders, in the `thunderhelm` front door (which
starts `python -m bench` in the checkout) and in `bench` itself.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import bench.cli as bench_cli
from bench.common import Options
from thunderhelm.streams.cli import ops_commands
from thunderhelm.streams.cli.main import app

RUNNER = CliRunner()
REQUEST = ["--file", "--run-id", "--dataset", "--population", "--generations", "--budget-s"]

# Every command and subcommand, with options its help must list.
COMMANDS: dict[str, list[str]] = {
    "services start": ["--kafka-only", "--jaeger-only", "--fresh", "--json"],
    "services stop": ["--kafka-only", "--jaeger-only", "--json"],
    "services status": ["--kafka-only", "--jaeger-only", "--json"],
    "worker": ["--no-supervise"],
    "dashboard": ["--host", "--port"],
    "submit": [*REQUEST, "--wait", "--follow-timeout", "--json"],
    "watch": ["RUN_ID", "--follow-timeout", "--json"],
    "cancel": ["RUN_ID", "--reason", "--json"],
    "rerun": ["RUN_ID", "--run-id", "--wait", "--follow-timeout", "--json"],
    "run": [*REQUEST, "--pool-size", "--json"],
    "trace": ["RUN_ID", "--trace-id", "--jaeger", "--wait", "--json", "--color"],
    "runs": ["--status", "--json"],
    "replay": ["--json"],
    "dlq list": ["--stage", "--error", "--topic", "--since", "--until", "--limit", "--json"],
    "dlq show": ["PARTITION:OFFSET", "--preview", "--json"],
    "dlq redrive": ["PARTITION:OFFSET", "--error", "--all", "--dry-run", "--json"],
    "predict": ["ARTIFACT", "--input", "--text", "--generate", "--temperature", "--json"],
    "export": ["ARTIFACT", "--onnx", "--json"],
    "bench": ["NAME", "--quick", "--out", "--pool-size", "--json"],
}


def plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_answers_help_with_its_options(command: str) -> None:
    done = RUNNER.invoke(app, [*command.split(), "--help"], env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    shown = plain(done.output)
    missing = [opt for opt in COMMANDS[command] if opt not in shown]
    assert missing == [], shown


def test_every_command_is_in_the_table() -> None:
    listed = plain(RUNNER.invoke(app, ["--help"], env={"COLUMNS": "200"}).output)
    top = {c.split()[0] for c in COMMANDS}
    assert all(re.search(rf"\b{name}\b", listed) for name in top)
    groups = {"services": ["start", "stop", "status"], "dlq": ["list", "show", "redrive"]}
    for group, subs in groups.items():
        shown = plain(RUNNER.invoke(app, [group, "--help"], env={"COLUMNS": "200"}).output)
        assert all(re.search(rf"\b{sub}\b", shown) for sub in subs)


def test_the_old_timeout_flag_is_gone_from_submit_run_and_watch() -> None:
    for command in ("submit", "run", "watch"):
        done = RUNNER.invoke(app, [command, "x" if command == "watch" else "", "--timeout", "9"])
        assert done.exit_code == 2 and "No such option" in plain(done.output)


@pytest.mark.parametrize(
    "argv", [["bench", "--quick", "pool"], ["bench", "pool", "--quick"]], ids=["before", "after"]
)
def test_thunderhelm_bench_takes_options_before_or_after_the_name(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    started: list[list[str]] = []

    def call(command: list[str], **kwargs: Any) -> int:
        started.append(command)
        return 0

    monkeypatch.setattr(subprocess, "call", call)
    done = RUNNER.invoke(app, [*argv, "--out", str(tmp_path)])
    assert done.exit_code == 0, done.output
    assert ops_commands.subprocess.call is call
    (command,) = started
    assert command[1:] == ["-m", "bench", "pool", "--quick", "--out", str(tmp_path.resolve())]


def test_thunderhelm_bench_refuses_an_unknown_benchmark() -> None:
    done = RUNNER.invoke(app, ["bench", "--quick", "nope"])
    assert done.exit_code == 2 and "no benchmark 'nope'" in done.output


@pytest.mark.parametrize(
    "argv", [["--quick", "pool"], ["pool", "--quick"]], ids=["before", "after"]
)
def test_python_m_bench_takes_options_before_or_after_the_name(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[Options] = []

    def fake(opts: Options) -> dict[str, Any]:
        seen.append(opts)
        return {"bars": [{"bar": "fake", "measured": 1, "met": True}]}

    monkeypatch.setitem(bench_cli.BENCHMARKS, "pool", fake)
    assert bench_cli.main([*argv, "--out", str(tmp_path)]) == 0
    assert [o.quick for o in seen] == [True]
    assert (tmp_path / "results" / "pool.json").is_file()


def test_python_m_bench_json_is_one_object_per_benchmark(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    monkeypatch.setitem(bench_cli.BENCHMARKS, "pool", lambda opts: {"bars": []})
    assert bench_cli.main(["pool", "--quick", "--json", "--out", str(tmp_path)]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    record = json.loads(line)
    assert set(record) == {"benchmark", "seconds", "result", "bars"}
    assert record["benchmark"] == "pool" and Path(record["result"]).is_file()
