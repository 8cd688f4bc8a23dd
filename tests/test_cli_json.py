"""The `--json` shape of every command that prints data, as docs/cli.md documents them.

The local commands (`run`, `predict`, `export`) run without Kafka; the rest
talk to the real broker with fresh topics, and the last test follows a real
run through a real worker: `submit --wait`, `watch`, `runs`, `replay`,
`trace`, and what a terminal gets (a table, a tree, live progress).
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.kafka_helpers import WorkerProcess, fresh_env
from tests.test_cli_errors import cli
from tests.test_e2e_kafka import small_request
from thunderhelm.streams.cli.base import CliState
from thunderhelm.streams.cli.main import main
from thunderhelm.streams.clients.client import read_topic
from thunderhelm.streams.config.settings import Settings

RESULT_KEYS = {"run_id", "status", "best", "generations", "evaluations", "duration_s", "artifact"}
RUN_ROW_KEYS = {
    "run_id", "status", "generation", "generations", "evaluations", "best_fitness", "artifact",
}  # fmt: skip


class Terminal(io.StringIO):
    """An output stream that says it is a terminal, so the CLI draws for a person."""

    def isatty(self) -> bool:
        return True


def only_json(stdout: str) -> Any:
    """stdout must be exactly one JSON document."""
    return json.loads(stdout)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], dict[str, Any]]:
    state = tmp_path_factory.mktemp("state")
    env = {
        "THUNDERHELM_STATE_DIR": str(state),
        # Its own log folder: a log left in the checkout by an earlier run of the
        # suite would make this run print that old result (its artifact long gone).
        "THUNDERHELM_LOCAL_LOG_DIR": str(state / "local-runs"),
        "OTEL_TRACES_EXPORTER": "none",
    }
    code, out, err = cli(
        "run", "--run-id", "json-local", "--population", "3", "--generations", "2",
        "--epochs", "1", "--samples", "300", "--pool-size", "2", "--json", env=env,
    )  # fmt: skip
    assert code == 0, err
    assert len(out.splitlines()) == 1  # progress and the table went to stderr
    return env, only_json(out)


def test_run_json_is_the_result_data(local_run: tuple[dict[str, str], dict[str, Any]]) -> None:
    _, result = local_run
    assert set(result) >= RESULT_KEYS
    assert result["run_id"] == "json-local" and result["status"] == "succeeded"
    assert {"val_accuracy", "val_loss", "params"} <= set(result["best"]["metrics"])


def test_predict_and_export_json(
    local_run: tuple[dict[str, str], dict[str, Any]], tmp_path: Path
) -> None:
    env, result = local_run
    rows = tmp_path / "rows.csv"
    rows.write_text("0.1,0.2\n-0.5,0.7\n0.9,-0.3\n")
    code, out, err = cli("predict", result["artifact"], "--input", str(rows), "--json", env=env)
    assert code == 0, err
    shown = only_json(out)
    assert set(shown) == {"rows", "labels", "predictions", "probabilities"}
    assert shown["rows"] == 3 and len(shown["probabilities"]) == 3
    assert set(shown["predictions"]) <= set(shown["labels"])
    onnx = tmp_path / "model.onnx"
    code, out, err = cli("export", result["artifact"], "--onnx", str(onnx), "--json", env=env)
    assert code == 0, err
    assert only_json(out) == {"onnx": str(onnx)} and onnx.stat().st_size > 0


def test_predict_with_rows_that_do_not_fit_is_exit_5(
    local_run: tuple[dict[str, str], dict[str, Any]], tmp_path: Path
) -> None:
    env, result = local_run
    rows = tmp_path / "narrow.csv"
    rows.write_text("0.1\n0.2\n")
    code, _, err = cli("predict", result["artifact"], "--input", str(rows), env=env)
    assert code == 5 and "features" in err and "Traceback" not in err


@pytest.mark.kafka
def test_commands_json_against_fresh_topics_without_a_worker(tmp_path: Path) -> None:
    from thunderhelm.streams.worker.kafka.topics import ensure_topics

    env = fresh_env(tmp_path, OTEL_TRACES_EXPORTER="none")
    settings = Settings.from_env(env)
    asyncio.run(ensure_topics(settings))
    run_id = f"json-{uuid.uuid4().hex[:6]}"
    code, out, err = cli("submit", "--run-id", run_id, "--generations", "1", "--json", env=env)
    assert code == 0, err
    submitted = only_json(out)
    assert submitted == {"run_id": run_id, "trace_id": submitted["trace_id"], "result": None}
    code, out, err = cli("cancel", run_id, "--reason", "changed my mind", "--json", env=env)
    assert code == 0, err
    assert set(only_json(out)) == {"run_id", "reason", "trace_id"}
    keys = [k for k, _ in asyncio.run(read_topic(settings, settings.run_requests))]
    assert keys == [run_id.encode()] * 2  # both commands are on run-requests

    code, out, _ = cli("runs", "--json", env=env)
    assert (code, out) == (0, "")  # JSON lines: no runs, no lines
    code, out, _ = cli("dlq", "list", "--json", env=env)
    assert (code, out) == (0, "")
    code, out, _ = cli("replay", "--json", env=env)
    assert code == 0
    assert only_json(out) == {
        "runs_in_log": 0,
        "runs_in_table": 0,
        "undecodable_records": 0,
        "differences": {},
        "invariant_violations": {},
        "agree": True,
    }
    code, out, _ = cli("dlq", "redrive", "--all", "--dry-run", "--json", env=env)
    assert code == 0 and only_json(out) == {"dry_run": True, "records": []}


@pytest.mark.kafka
@pytest.mark.slow
def test_a_run_followed_through_a_real_worker(tmp_path: Path) -> None:
    env = fresh_env(tmp_path)
    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    try:
        run_id = f"json-e2e-{uuid.uuid4().hex[:6]}"
        request = tmp_path / "request.json"
        request.write_text(json.dumps(small_request(run_id)))
        code, out, err = cli(
            "submit", "--file", str(request), "--wait", "--follow-timeout", "240", "--json",
            env=env, timeout=300,
        )  # fmt: skip
        assert code == 0, err
        submitted = only_json(out)
        assert set(submitted) == {"run_id", "trace_id", "result"}
        assert set(submitted["result"]) >= RESULT_KEYS
        assert submitted["result"]["status"] == "succeeded"

        code, out, err = cli("watch", run_id, "--json", "--follow-timeout", "60", env=env)
        assert code == 0, err
        assert only_json(out) == submitted["result"]

        # The same request again: the same best network, said so.
        again = f"{run_id}-again"
        code, out, err = cli(
            "rerun", run_id, "--run-id", again, "--wait", "--follow-timeout", "240", "--json",
            env=env, timeout=300,
        )  # fmt: skip
        assert code == 0, err
        rerun = only_json(out)
        assert rerun["run_id"] == again and rerun["rerun_of"] == run_id
        assert rerun["matched"] is True and rerun["result"]["status"] == "succeeded"
        assert rerun["result"]["best"] == submitted["result"]["best"]
        code, _, err = cli("rerun", "nobody-ran-this", "--json", env=env)
        assert code == 5 and "no accepted run 'nobody-ran-this'" in err

        code, out, err = cli("watch", run_id, "--follow-timeout", "60", env=env)
        assert code == 0 and "generation 2: best" in out and "succeeded" in out

        code, out, err = cli("runs", "--json", env=env)
        rows = [json.loads(line) for line in out.splitlines()]
        assert sorted(r["run_id"] for r in rows) == sorted([run_id, again])
        (row,) = [r for r in rows if r["run_id"] == run_id]
        assert set(row) == RUN_ROW_KEYS
        assert row["run_id"] == run_id and row["status"] == "succeeded"
        assert row["generation"] == row["generations"] == 2

        code, out, err = cli("replay", "--json", env=env)
        report = only_json(out)
        assert report["runs_in_log"] == 2 and report["invariant_violations"] == {}
        assert code == (0 if report["agree"] else 1)

        code, out, err = cli("trace", run_id, "--wait", "30", "--json", env=env)
        assert code == 0, err
        assert only_json(out)["traceID"] == submitted["trace_id"]

        # A terminal gets a table (and a tree), not the plain lines.
        screen = Terminal()
        settings = Settings.from_env(env)
        began = time.monotonic()
        assert main(["runs"], state=CliState(settings, screen)) == 0
        drawn = re.sub(r"\x1b\[[0-9;]*m", "", screen.getvalue())
        assert "┃ run " in drawn and run_id in drawn and "succeeded" in drawn, drawn
        screen = Terminal()
        assert main(["trace", run_id, "--wait", "30"], state=CliState(settings, screen)) == 0
        assert f"trace {submitted['trace_id']}" in screen.getvalue()
        assert "└── " in screen.getvalue() or "├── " in screen.getvalue()
        screen = Terminal()
        assert main(["watch", run_id], state=CliState(settings, screen)) == 0
        drawn = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", screen.getvalue())
        assert "2/2 generations" in drawn and "generation 2: best" in drawn
        assert "status             succeeded" in drawn
        assert time.monotonic() - began < 90
    finally:
        worker.stop()
