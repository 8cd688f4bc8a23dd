"""`thunderhelm run` without Kafka: the saga drives it against a local event log.

No broker: the log is a JSON-lines file. These check that a run's log folds
to the state it ended in, that budgets end it as the saga decides, that a run
killed mid-way resumes from its log to the same result as one never stopped,
that Ctrl-C cancels it (exit 130), that a run id never escapes as a path, and
that the log lands in `var/local-runs/` under the current folder unless
`THUNDERHELM_LOCAL_LOG_DIR` says otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from thunderhelm.schemas import events as ev
from thunderhelm.schemas.results import validated_result
from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.domain import saga
from thunderhelm.streams.execution.local_log import LocalLog, LocalLogError, log_path
from thunderhelm.streams.execution.local_run import (
    INTERRUPT_REASON,
    LOG_DIR_VARIABLE,
    LocalRun,
    log_dir,
    run_local,
)

SMALL: dict[str, Any] = {
    "run_id": "local-small",
    "dataset": {"name": "spirals", "samples": 400, "classes": 3, "seed": 3},
    "ga": {"population": 5, "generations": 3, "tournament_size": 2, "elite": 1, "seed": 11},
    "training": {"epochs": 3, "batch_size": 32},
    "search_space": {"max_levels": 2, "max_units": 3, "max_neurons": 16},
}
# Big enough that a generation takes a noticeable while, so a signal lands mid-run.
SLOW: dict[str, Any] = {
    "run_id": "local-slow",
    "dataset": {"name": "spirals", "samples": 12000, "classes": 3, "seed": 5},
    "ga": {"population": 6, "generations": 5, "tournament_size": 2, "elite": 1, "seed": 7},
    "training": {"epochs": 20, "batch_size": 32},
    "search_space": {"max_levels": 2, "max_units": 3, "max_neurons": 32},
}
CHILD = """
import json, sys
from pathlib import Path
from thunderhelm.streams.execution.local_run import run_local
from thunderhelm.streams.config.settings import Settings
root = Path(sys.argv[1])
settings = Settings(data_root=root, artifact_dir=root / "artifacts")
sys.exit(run_local(settings, json.loads(sys.argv[2]), 2, as_json=True))
"""


def settings_in(root: Path) -> Settings:
    return Settings(data_root=root, artifact_dir=root / "artifacts", pool_size=2)


def logs_in(root: Path) -> Path:
    """Where a run started in the folder `root` keeps its log by default."""
    return root / "var" / "local-runs"


def run_here(root: Path, request: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> Any:
    code = run_local(settings_in(root), request, 2, as_json=True, logs=logs_in(root))
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return code, result


def events_in(path: Path) -> list[dict[str, Any]]:
    """The log's complete lines: a child still running may be midway through writing one."""
    raw = path.read_bytes()
    return [json.loads(line) for line in raw[: raw.rfind(b"\n") + 1].splitlines()]


def types_in(path: Path) -> list[str]:
    return [event["type"] for event in events_in(path)]


def lifecycle_in(path: Path) -> list[str]:
    """The log's event types without the candidates' outcomes."""
    return [t for t in types_in(path) if t != ev.CANDIDATE_COMPLETED]


def candidates_in(path: Path) -> list[tuple[int, int]]:
    """(generation, index) of every candidate-completed on the log, in log order."""
    events = events_in(path)
    return [
        (e["data"]["generation"], e["data"]["index"])
        for e in events
        if e["type"] == ev.CANDIDATE_COMPLETED
    ]


def start_child(root: Path, request: dict[str, Any]) -> subprocess.Popen[bytes]:
    """`thunderhelm run` in another process, started in `root` (its log: the default there)."""
    root.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != LOG_DIR_VARIABLE}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), json.dumps(request)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=root,
        env=env,
    )


def wait_for_generation(
    path: Path, child: subprocess.Popen[bytes], timeout_s: float = 120.0
) -> None:
    """Block until the log holds a generation-completed line (the child still running)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and ev.GENERATION_COMPLETED in types_in(path):
            return
        assert child.poll() is None, child.stderr.read() if child.stderr else ""
        time.sleep(0.01)
    raise AssertionError("no generation completed in time")


def wait_for_candidate_after_a_generation(
    path: Path, child: subprocess.Popen[bytes], timeout_s: float = 120.0
) -> None:
    """Block until a candidate of a later generation has its outcome on the log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(generation >= 1 for generation, _ in candidates_in(path)):
            return
        assert child.poll() is None, child.stderr.read() if child.stderr else ""
        time.sleep(0.01)
    raise AssertionError("no candidate of a later generation in time")


def same_outcome(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["status"] == b["status"] == "succeeded"
    assert a["best"]["genome"] == b["best"]["genome"]
    assert a["best"]["fitness"] == b["best"]["fitness"]
    assert a["best"]["metrics"] == b["best"]["metrics"]
    assert (a["generations"], a["evaluations"]) == (b["generations"], b["evaluations"])


def test_a_run_finishes_and_its_log_folds_to_the_same_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, result = run_here(tmp_path, SMALL, capsys)
    assert code == 0 and result["status"] == "succeeded"
    path = log_path(logs_in(tmp_path), SMALL["run_id"])
    assert lifecycle_in(path) == [
        ev.RUN_ACCEPTED,
        ev.RUN_STARTED,
        *[ev.GENERATION_COMPLETED] * 3,
        ev.RUN_SUCCEEDED,
    ]
    # One outcome per trained candidate, each before its generation's event.
    trained = candidates_in(path)
    assert len(trained) == len(set(trained)) == result["evaluations"]
    events = events_in(path)
    for position, event in enumerate(events):
        if event["type"] == ev.CANDIDATE_COMPLETED:
            before = [e["type"] for e in events[:position]]
            assert before.count(ev.GENERATION_COMPLETED) == event["data"]["generation"]
    total = len(events)
    assert [int(event["sequence"]) for event in events] == list(range(1, total + 1))
    state, count = LocalLog(path).fold()
    assert state is not None and count == total
    assert state.status == "succeeded" and state.generation == 3
    assert state.result is not None and validated_result(state.result) == result
    assert state.evaluations == result["evaluations"]
    assert Path(result["artifact"]).exists()
    # Started again: the result from the log, no training, nothing appended.
    again_code, again = run_here(tmp_path, SMALL, capsys)
    assert (again_code, again) == (0, result)
    assert len(types_in(path)) == total


def test_max_evaluations_ends_the_run_at_the_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request = {**SMALL, "budget": {"max_evaluations": 3}}
    code, result = run_here(tmp_path, request, capsys)
    # The saga checks the budget between generations: one generation of 5,
    # then it stops and delivers the best it found.
    assert code == 0 and result["status"] == "succeeded", result
    assert result["stopped_by"] == "max_evaluations" and result["error"] is None
    assert (result["generations"], result["evaluations"]) == (1, 5)
    assert Path(result["artifact"]).is_file() and result["model"]["test"]["accuracy"] > 0
    path = log_path(logs_in(tmp_path), SMALL["run_id"])
    assert types_in(path)[-2:] == [ev.GENERATION_COMPLETED, ev.RUN_SUCCEEDED]


def test_a_timeout_with_nothing_found_fails_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request = {**SLOW, "budget": {"timeout_s": 0.5}}
    code, result = run_here(tmp_path, request, capsys)
    assert code == 1 and result["status"] == "failed"
    assert result["error"]["class"] == "TimeoutError"
    assert result["generations"] == 0 and result["artifact"] is None


def test_a_run_stopped_by_its_time_budget_delivers_the_best_it_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Far more generations than fit in the budget: the clock ends the run.
    request = {**SMALL, "ga": {**SMALL["ga"], "generations": 1000}, "budget": {"timeout_s": 6}}
    code, result = run_here(tmp_path, request, capsys)
    assert code == 0 and result["status"] == "succeeded", result
    assert result["stopped_by"] == "timeout_s"
    assert 0 < result["generations"] < 1000
    assert Path(result["artifact"]).is_file()
    assert result["best"]["metrics"]["test_accuracy"] is not None


def test_a_killed_run_resumes_from_its_log_to_the_same_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole_code, whole = run_here(tmp_path / "whole", SLOW, capsys)
    assert whole_code == 0

    root = tmp_path / "killed"
    path = log_path(logs_in(root), SLOW["run_id"])
    child = start_child(root, SLOW)
    try:
        wait_for_generation(path, child)
        wait_for_candidate_after_a_generation(path, child)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    state, _ = LocalLog(path).fold()
    assert state is not None and not state.terminal  # killed mid-way, not at the end
    assert 1 <= state.generation < SLOW["ga"]["generations"]

    code, resumed = run_here(root, SLOW, capsys)
    assert code == 0
    same_outcome(resumed, whole)
    generations = [
        event["data"]["generation"]
        for event in events_in(path)
        if event["type"] == ev.GENERATION_COMPLETED
    ]
    assert generations == list(range(SLOW["ga"]["generations"]))  # none trained twice
    # Killed mid-generation: only candidates without an outcome were trained
    # again, so each candidate has one outcome and they add up to the evaluations.
    trained = candidates_in(path)
    assert len(trained) == len(set(trained)) == resumed["evaluations"] == whole["evaluations"]
    assert types_in(path).count(ev.RUN_STARTED) == 1


def test_a_torn_last_line_is_dropped_and_the_run_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, whole = run_here(tmp_path / "whole", SMALL, capsys)
    assert code == 0
    path = log_path(logs_in(tmp_path / "whole"), SMALL["run_id"])
    lines = path.read_bytes().splitlines(keepends=True)
    torn = tmp_path / "torn"
    torn_path = log_path(logs_in(torn), SMALL["run_id"])
    torn_path.parent.mkdir(parents=True)
    # Up to the first generation's event, then half of the next line.
    cut = types_in(path).index(ev.GENERATION_COMPLETED) + 1
    torn_path.write_bytes(b"".join(lines[:cut]) + lines[cut][: len(lines[cut]) // 2])
    code, resumed = run_here(torn, SMALL, capsys)
    assert code == 0
    same_outcome(resumed, whole)
    assert len(lifecycle_in(torn_path)) == 6
    assert len(candidates_in(torn_path)) == whole["evaluations"]


def test_ctrl_c_cancels_the_run_with_exit_code_130(tmp_path: Path) -> None:
    path = log_path(logs_in(tmp_path), SLOW["run_id"])
    child = start_child(tmp_path, SLOW)
    try:
        wait_for_generation(path, child)
        completed = types_in(path).count(ev.GENERATION_COMPLETED)
        child.send_signal(signal.SIGINT)
        out, _ = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["status"] == "cancelled"
    assert result["error"] == {"class": "Cancelled", "message": INTERRUPT_REASON}
    # The cancel token stopped the generation in flight: it left no event.
    assert result["generations"] == completed < SLOW["ga"]["generations"]
    kinds = types_in(path)
    assert kinds.count(ev.GENERATION_COMPLETED) == completed
    assert kinds[-2:] == [ev.CANCEL_RECORDED, ev.RUN_CANCELLED]
    state, _ = LocalLog(path).fold()
    assert state is not None and state.status == "cancelled"
    assert state.cancel_reason == INTERRUPT_REASON


# One short generation, then a final model whose retrainings (ten full trainings
# of 150 epochs on 12,000 rows, the search's own were cut at its rungs) take
# several times as long: a Ctrl-C after the generation lands in them.
SLOW_FINISH: dict[str, Any] = {
    "run_id": "local-slow-finish",
    "dataset": {"name": "spirals", "samples": 12000, "classes": 3, "seed": 5},
    "ga": {"population": 4, "generations": 1, "tournament_size": 2, "elite": 1, "seed": 7},
    "training": {"epochs": 150, "batch_size": 32},
    "search_space": {"max_levels": 2, "max_units": 3, "max_neurons": 32},
}


def test_ctrl_c_while_the_final_model_retrains_cancels_the_run(tmp_path: Path) -> None:
    path = log_path(logs_in(tmp_path), SLOW_FINISH["run_id"])
    child = start_child(tmp_path, SLOW_FINISH)
    try:
        wait_for_generation(path, child)  # the only one: the finish runs next
        child.send_signal(signal.SIGINT)
        out, _ = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert (child.returncode, result["status"]) == (130, "cancelled")
    assert result["artifact"] is None
    assert types_in(path)[-3:] == [ev.GENERATION_COMPLETED, ev.CANCEL_RECORDED, ev.RUN_CANCELLED]


@pytest.mark.parametrize("run_id", ["../escape", "a/b", "..", ".hidden", "", "a\\b", "x\x00y"])
def test_a_bad_run_id_never_becomes_a_path(
    tmp_path: Path, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = tmp_path / "logs"
    with pytest.raises(LocalLogError):
        log_path(logs, run_id)
    # Through the command, with the default log dir: the request schema
    # refuses it before any file is named.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(LOG_DIR_VARIABLE, raising=False)
    code = run_local(settings_in(tmp_path), {**SMALL, "run_id": run_id}, 2, as_json=True)
    assert code == 2
    assert not logs.exists() and not logs_in(tmp_path).exists()
    assert sorted(os.listdir(tmp_path)) == []


def test_the_log_is_under_var_in_the_current_folder_unless_the_setting_moves_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    here, state = tmp_path / "here", tmp_path / "state"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.delenv(LOG_DIR_VARIABLE, raising=False)
    assert log_dir() == logs_in(here)
    assert run_local(settings_in(state), SMALL, 2, as_json=True) == 0
    assert types_in(logs_in(here) / "local-small.jsonl")[-1] == ev.RUN_SUCCEEDED
    assert not (state / "local-runs").exists() and not logs_in(state).exists()
    # The setting, relative to the current folder or absolute.
    assert log_dir({LOG_DIR_VARIABLE: "logs"}) == here / "logs"
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.setenv(LOG_DIR_VARIABLE, str(elsewhere))
    assert run_local(settings_in(state), {**SMALL, "run_id": "moved"}, 2, as_json=True) == 0
    assert types_in(elsewhere / "moved.jsonl")[-1] == ev.RUN_SUCCEEDED
    assert sorted(p.name for p in logs_in(here).iterdir()) == ["local-small.jsonl"]
    capsys.readouterr()


def test_a_run_id_names_only_a_file_in_the_log_dir(tmp_path: Path) -> None:
    assert log_path(tmp_path, "run-1.a_b") == tmp_path / "run-1.a_b.jsonl"


def test_the_same_run_id_with_another_request_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run_here(tmp_path, SMALL, capsys)
    assert code == 0
    other = {**SMALL, "ga": {**SMALL["ga"], "seed": 12}}
    assert run_local(settings_in(tmp_path), other, 2, as_json=True, logs=logs_in(tmp_path)) == 2
    assert "another request" in capsys.readouterr().err


def test_a_corrupt_line_is_a_clear_error_and_the_log_is_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run_here(tmp_path, SMALL, capsys)
    assert code == 0
    path = log_path(logs_in(tmp_path), SMALL["run_id"])
    lines = path.read_bytes().splitlines(keepends=True)
    broken = b"".join([lines[0], b'{"specversion": "1.0", "not": "an event"}\n', *lines[1:]])
    path.write_bytes(broken)
    assert run_local(settings_in(tmp_path), SMALL, 2, as_json=True, logs=logs_in(tmp_path)) == 2
    assert f"{path}:2" in capsys.readouterr().err
    assert path.read_bytes() == broken


def test_a_second_run_with_the_same_id_at_once_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = LocalLog(log_path(logs_in(tmp_path), SMALL["run_id"]))
    with log.held():
        assert run_local(settings_in(tmp_path), SMALL, 2, as_json=True, logs=log.path.parent) == 2
        assert "in use by another run" in capsys.readouterr().err
    assert log.path.read_bytes() == b""  # the refused run wrote nothing
    code, result = run_here(tmp_path, SMALL, capsys)  # free again: it runs
    assert (code, result["status"]) == (0, "succeeded")


def test_the_run_command_writes_its_log_where_log_dir_says(tmp_path: Path) -> None:
    request = tmp_path / "request.json"
    request.write_text(json.dumps({**SMALL, "run_id": "cli-log-dir"}))
    env = {**os.environ, "THUNDERHELM_DATA_ROOT": str(tmp_path)}
    env["THUNDERHELM_ARTIFACT_DIR"] = str(tmp_path / "artifacts")
    env.pop(LOG_DIR_VARIABLE, None)
    args = ["run", "--file", str(request), "--pool-size", "2", "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "thunderhelm.streams.cli", *args, "--log-dir", "chosen"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert types_in(tmp_path / "chosen" / "cli-log-dir.jsonl")[-1] == ev.RUN_SUCCEEDED
    assert not logs_in(tmp_path).exists()


@pytest.mark.parametrize(
    ("environ", "expected"), [({}, "normal"), ({"pool_priority": "idle"}, "idle")]
)
def test_a_local_run_trains_at_normal_priority_unless_told_otherwise(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    environ: dict[str, str],
    expected: str,
) -> None:
    """Nothing in a local run needs the CPU before training: SCHED_IDLE only starves it."""
    from thunderhelm.streams.execution import local_run

    used: list[str] = []

    class Recording(local_run.RunExecutor):
        def __init__(self, settings: Settings) -> None:
            used.append(settings.pool_priority)
            super().__init__(settings)

    monkeypatch.setattr(local_run, "RunExecutor", Recording)
    settings = Settings(
        data_root=tmp_path, artifact_dir=tmp_path / "artifacts", pool_size=2, **environ
    )
    request = {**SMALL, "run_id": f"priority-{expected}", "ga": {**SMALL["ga"], "generations": 1}}
    assert run_local(settings, request, 2, as_json=True, logs=tmp_path / "logs") == 0
    capsys.readouterr()
    assert used == [expected]


def test_an_unwritable_artifact_folder_fails_the_run_with_its_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the artifact folder should be")
    settings = Settings(data_root=tmp_path, artifact_dir=blocker / "artifacts", pool_size=2)
    request = {**SMALL, "run_id": "unwritable", "ga": {**SMALL["ga"], "generations": 1}}
    code = run_local(settings, request, 2, as_json=True, logs=logs_in(tmp_path))
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1 and result["status"] == "failed" and result["artifact"] is None
    assert result["error"]["class"] == "ArtifactWriteError"
    assert "cannot write the model artifact to" in result["error"]["message"]
    # Nothing else is lost: the search is in the log, then the one ending.
    types = types_in(log_path(logs_in(tmp_path), "unwritable"))
    assert types[-2:] == [ev.GENERATION_COMPLETED, ev.RUN_FAILED]
    assert result["best"]["fitness"] is not None  # what the search found is in the result


def test_a_dataset_that_cannot_be_used_fails_the_run_with_its_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As on a worker: a clear reason, the run failed on its log, no traceback."""
    (tmp_path / "one-class.csv").write_text("a,b,y\n" + "0.1,0.2,same\n" * 40)
    dataset = {"name": "table", "path": "one-class.csv", "target": "y"}
    request = {**SMALL, "run_id": "one-class", "dataset": dataset}
    code = run_local(settings_in(tmp_path), request, 2, as_json=True, logs=logs_in(tmp_path))
    out, err = capsys.readouterr()
    result = json.loads(out.strip().splitlines()[-1])
    assert code == 1 and result["status"] == "failed"
    assert result["error"] == {
        "class": "DatasetError",
        "message": "one-class.csv: the target 'y' has one class only ('same')",
    }
    assert "run one-class: dataset: one-class.csv: the target 'y' has one class" in err
    assert types_in(log_path(logs_in(tmp_path), "one-class")) == [ev.RUN_ACCEPTED, ev.RUN_FAILED]
    # Settled: asked again, the run says how it ended and loads nothing.
    assert run_here(tmp_path, request, capsys) == (1, result)


def test_a_training_that_reports_after_the_run_ended_adds_nothing_to_the_log() -> None:
    """A cancel or a spent budget ends the run while a training still runs
    in the pool; its outcome comes after the ending and must not follow it."""
    log: list[Any] = []
    local = LocalRun(log, executor=None, interrupt=None, out=None)  # type: ignore[arg-type]
    local.state = saga.RunState(run_id="r-1", status="cancelled", version=7)
    local.candidate(
        {"run_id": "r-1", "generation": 0, "index": 0, "genome_key": "g0", "fitness": 0.5,
         "metrics": {"status": "ok"}, "seed": 1}
    )  # fmt: skip
    assert log == [] and local.sequence == 0


def test_runs_that_arrive_together_load_their_dataset_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A burst of requests on one dataset: the first load serves them all
    # (digits imports scikit-learn: each thread doing it would hold the GIL).
    import threading

    from thunderhelm.streams.execution import executor

    loads: list[int] = []
    real = executor.load_dataset

    def slow_load(*args: Any, **kwargs: Any) -> Any:
        loads.append(1)
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(executor, "load_dataset", slow_load)
    runner = executor.RunExecutor(Settings())
    spec = {"name": "spirals", "samples": 100, "seed": 1}
    got: list[Any] = []
    threads = [
        threading.Thread(target=lambda: got.append(runner._task_dataset(spec))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loads) == 1 and len(got) == 4 and all(d is got[0] for d in got)


def test_a_run_can_maximise_balanced_accuracy_on_an_imbalanced_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import csv

    import numpy as np

    rng = np.random.default_rng(4)
    rows = 500
    rare = rng.random(rows) < 0.12
    x = rng.normal(size=(rows, 3)) + np.where(rare, 1.2, 0.0)[:, None]
    with (tmp_path / "imbalanced.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["a", "b", "c", "label"])
        for features, is_rare in zip(x, rare, strict=True):
            out.writerow([*(f"{v:.4f}" for v in features), "rare" if is_rare else "common"])
    request = {
        **SMALL,
        "run_id": "balanced",
        "dataset": {"name": "table", "path": "imbalanced.csv", "target": "label"},
        "fitness": {"name": "val_balanced_accuracy"},
        "training": {**SMALL["training"], "class_weight": "balanced"},
    }
    code, result = run_here(tmp_path, request, capsys)
    assert code == 0 and result["status"] == "succeeded"
    best = result["best"]
    assert best["fitness"] == pytest.approx(best["metrics"]["val_balanced_accuracy"])
    assert best["metrics"]["val_balanced_accuracy"] != best["metrics"]["val_accuracy"]
    for figures in (result["model"]["validation"], result["model"]["test"]):
        assert 0.0 < figures["balanced_accuracy"] <= 1.0 and figures["roc_auc"] is not None
    events = [json.loads(line) for line in log_path(logs_in(tmp_path), "balanced").open()]
    outcomes = [e["data"] for e in events if e["type"] == ev.CANDIDATE_COMPLETED]
    assert all(
        o["fitness"] is None or o["fitness"] == o["metrics"]["val_balanced_accuracy"]
        for o in outcomes
    )
    # The same run without class weights trains the same first networks to other losses.
    plain = {**request, "run_id": "plain", "training": SMALL["training"]}
    assert run_here(tmp_path, plain, capsys)[0] == 0
    unweighted = [json.loads(line) for line in log_path(logs_in(tmp_path), "plain").open()]
    first = {
        (e["data"]["generation"], e["data"]["index"]): e["data"]["metrics"]["train_loss"]
        for e in unweighted
        if e["type"] == ev.CANDIDATE_COMPLETED
    }
    weighted = {(o["generation"], o["index"]): o["metrics"]["train_loss"] for o in outcomes}
    assert all(weighted[k] != pytest.approx(first[k]) for k in weighted if k[0] == 0 and k in first)


def test_a_run_continued_n_more_equals_one_run_of_the_larger_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short = {**SMALL, "run_id": "local-short", "ga": {**SMALL["ga"], "generations": 2}}
    code, first = run_here(tmp_path, short, capsys)
    assert code == 0 and first["generations"] == 2 and first["revision"] == 1
    logs = logs_in(tmp_path)
    code = run_local(settings_in(tmp_path), short, 2, as_json=True, logs=logs, more=1)
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and second["revision"] == 2 and second["generations"] == 3
    types = types_in(log_path(logs, "local-short"))
    assert types[types.index(ev.RUN_SUCCEEDED) :].count(ev.RUN_CONTINUED) == 1
    code, whole = run_here(tmp_path, {**SMALL, "run_id": "local-whole"}, capsys)
    assert code == 0
    assert (second["best"]["genome"], second["best"]["fitness"]) == (
        whole["best"]["genome"],
        whole["best"]["fitness"],
    )
    assert second["evaluations"] == whole["evaluations"]
    # Started again without --more, it reports the current revision.
    code, again = run_here(tmp_path, short, capsys)
    assert code == 0 and again["revision"] == 2


def test_a_local_run_that_did_not_succeed_refuses_to_go_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short = {**SMALL, "run_id": "local-nothing"}
    logs = logs_in(tmp_path)
    assert run_local(settings_in(tmp_path), short, 2, as_json=True, logs=logs, more=1) == 2
    assert "no such run" in capsys.readouterr().err


def test_a_warm_started_run_begins_with_its_sources_best_genomes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, source = run_here(tmp_path, {**SMALL, "run_id": "local-source"}, capsys)
    assert code == 0
    warm = {
        **SMALL,
        "run_id": "local-warm",
        "dataset": {**SMALL["dataset"], "seed": 4},  # the same task, other rows
        "ga": {**SMALL["ga"], "seed": 12},
        "warm_start": {"run_id": "local-source", "top": 2},
    }
    code, result = run_here(tmp_path, warm, capsys)
    assert code == 0
    logged = events_in(log_path(logs_in(tmp_path), "local-warm"))
    accepted = logged[0]["data"]["warm_start"]
    assert accepted["run_id"] == "local-source" and len(accepted["keys"]) == 2
    # The fittest first: the source's best, then the next.
    assert accepted["fitnesses"][0] == source["best"]["fitness"]
    assert accepted["fitnesses"] == sorted(accepted["fitnesses"], reverse=True)
    population = logged[1]["data"]["ga_state"]["population"]
    assert population[:2] == accepted["genomes"]  # generation 0 begins with them
    assert result["warm_start"] == {"run_id": "local-source", "genomes": accepted["keys"]}
    # The rest is drawn as a cold start with the same seed draws it.
    cold = {**warm, "run_id": "local-cold", "warm_start": None}
    assert run_here(tmp_path, cold, capsys)[0] == 0
    cold_log = events_in(log_path(logs_in(tmp_path), "local-cold"))
    cold_population = cold_log[1]["data"]["ga_state"]["population"]
    assert population[2:] == cold_population[2:]


def test_a_warm_start_from_a_missing_or_other_shaped_run_is_refused_with_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_here(tmp_path, {**SMALL, "run_id": "local-three"}, capsys)[0] == 0
    logs = logs_in(tmp_path)
    missing = {**SMALL, "run_id": "local-a", "warm_start": {"run_id": "nowhere"}}
    assert run_local(settings_in(tmp_path), missing, 2, as_json=True, logs=logs) == 2
    assert "warm_start.run_id: no run 'nowhere'" in capsys.readouterr().err
    four = {**SMALL, "run_id": "local-b", "dataset": {**SMALL["dataset"], "classes": 4}}
    other = {**four, "warm_start": {"run_id": "local-three"}}
    assert run_local(settings_in(tmp_path), other, 2, as_json=True, logs=logs) == 2
    assert "learned 2 inputs and 3 classes; this request's dataset has 2 inputs and 4" in (
        capsys.readouterr().err
    )


def test_the_artifact_names_the_run_a_members_genome_came_from() -> None:
    from thunderhelm.streams.execution.final_model import _search

    lineage = {"run_id": "earlier", "genomes": ["k1", "k2"]}
    assert _search("r", {"key": "k2", "fitness": 0.5}, lineage)["warm_start_from"] == "earlier"
    assert "warm_start_from" not in _search("r", {"key": "k9"}, lineage)
    assert "warm_start_from" not in _search("r", {"key": "k1"}, None)
