"""Behaviour of the sub-interpreter pool and the evaluators built on it.

Speed is measured by the benchmarks, not asserted here: these tests check
behaviour only (parallel execution is proven by a rendezvous that can only
complete when two interpreters run at once on one shared buffer).
"""

import _interpreters
import importlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import pytest

from thunderhelm.ga.pool import task_runner
from thunderhelm.ga.pool.interpreter_pool import (
    CancelToken,
    InterpreterPool,
    PoolClosedError,
    RemoteError,
    TaskRefusedError,
    dataset_arg,
)
from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.execution.executor import RunExecutor

T = "thunderhelm.ga.pool.selftest:"
SELFTEST = [
    T + name
    for name in (
        "interpreter_id",
        "echo",
        "spin",
        "fail",
        "not_a_str",
        "remember",
        "buffer_sum",
        "rendezvous",
        "wait_for_cancel",
    )
]


@pytest.fixture
def pool() -> Iterator[InterpreterPool]:
    with InterpreterPool(2, allowed=SELFTEST) as p:
        yield p


def _live_interpreters() -> set[int]:
    return {iid for iid, _ in _interpreters.list_all()}


def test_lifecycle_and_idempotent_close() -> None:
    p = InterpreterPool(2, allowed=SELFTEST)
    stats = p.stats()
    assert (stats.size, stats.alive, stats.idle, stats.busy, stats.queued) == (2, 2, 2, 0, 0)
    ids = set(stats.interpreters)
    assert len(ids) == 2 and ids <= _live_interpreters()
    assert p.submit(T + "echo", ("hello",)).result(timeout=10) == "hello"
    p.close()
    p.close()
    assert not ids & _live_interpreters()
    assert p.stats().alive == 0
    with pytest.raises(PoolClosedError):
        p.submit(T + "echo", ("late",))


def test_context_manager_closes() -> None:
    with InterpreterPool(1, allowed=SELFTEST) as p:
        (iid,) = p.stats().interpreters
        assert p.submit(T + "interpreter_id").result(timeout=10) == str(iid)
    assert iid not in _live_interpreters()


def test_allowlist_refuses_everything_else(pool: InterpreterPool) -> None:
    for name in ("os:system", "builtins:eval", "thunderhelm.ga.pool.selftest:_state", "echo", ""):
        with pytest.raises(TaskRefusedError):
            pool.submit(name, ("x",))
    with pytest.raises(ValueError, match="module:function"):
        InterpreterPool(1, allowed=["not a name"])
    # The default allowlist admits only the training function.
    with InterpreterPool(1) as default, pytest.raises(TaskRefusedError):
        default.submit(T + "echo", ("x",))
    assert pool.stats().tasks_done == 0


def test_interpreter_side_refuses_unlisted_function() -> None:
    # Second line of defence: the worker checks its own allowlist too.
    task_runner.configure((T + "echo",))
    try:
        with pytest.raises(PermissionError):
            task_runner.call(("os:getcwd", ()))
        assert task_runner.call((T + "echo", ("ok",))) == "ok"
    finally:
        task_runner.configure(())


@pytest.mark.parametrize("bad", [[1], {"a": 1}, bytearray(1), memoryview(b"x"), (1, [2]), object()])
def test_unshareable_arguments_are_refused(pool: InterpreterPool, bad: object) -> None:
    with pytest.raises(TaskRefusedError, match="not shareable"):
        pool.submit(T + "echo", (bad,))


def test_raising_task_fails_alone_and_interpreter_is_recycled() -> None:
    with InterpreterPool(1, allowed=SELFTEST) as p:
        (before,) = p.stats().interpreters
        assert json.loads(p.submit(T + "remember", ("a",)).result(timeout=10)) == ["a"]
        failing = p.submit(T + "fail", ("boom",))
        after_failure = p.submit(T + "echo", ("still serving",))
        with pytest.raises(RemoteError) as caught:
            failing.result(timeout=10)
        err = caught.value
        assert err.exc_type == "ValueError" and err.message == "boom"
        assert "Traceback" in err.formatted and "selftest.py" in err.formatted
        assert err.interpreter == before
        assert after_failure.result(timeout=10) == "still serving"
        stats = p.stats()
        assert stats.recycles == 1 and stats.tasks_failed == 1 and stats.tasks_done == 2
        (now,) = stats.interpreters
        assert now != before and before not in _live_interpreters()
        # A fresh interpreter: the module state of the failed one is gone.
        assert json.loads(p.submit(T + "remember", ("b",)).result(timeout=10)) == ["b"]
        assert failing.info is not None and not failing.info.ok
        assert failing.info.interpreter == before


def test_non_str_result_is_a_task_failure(pool: InterpreterPool) -> None:
    with pytest.raises(RemoteError, match="TypeError"):
        pool.submit(T + "not_a_str").result(timeout=10)
    assert pool.submit(T + "echo", ("fine",)).result(timeout=10) == "fine"
    assert pool.stats().recycles == 1


def test_attached_buffer_is_shared_zero_copy_by_two_interpreters(pool: InterpreterPool) -> None:
    flags = bytearray(2)
    pool.attach("flags", {"both": memoryview(flags)})
    futures = [
        pool.submit(T + "rendezvous", (dataset_arg("flags", "both"), i, 20.0)) for i in range(2)
    ]
    results = [json.loads(f.result(timeout=30)) for f in futures]
    # Each task saw the other's write and main sees both: one buffer, no copies,
    # and both tasks were running at the same time in different interpreters.
    assert flags == b"\x01\x01"
    assert results[0]["interpreter"] != results[1]["interpreter"]
    infos = [f.info for f in futures]
    assert all(i is not None for i in infos)
    assert {i.interpreter for i in infos if i is not None} == set(pool.stats().interpreters)


def test_numpy_buffers_survive_recycling_and_detach(pool: InterpreterPool) -> None:
    data = np.arange(100, dtype=np.uint8)
    pool.attach("nums", {"x": memoryview(data).toreadonly()})
    ref = dataset_arg("nums", "x")
    expected = str(int(data.sum()))
    assert pool.submit(T + "buffer_sum", (ref,)).result(timeout=10) == expected
    with pytest.raises(RemoteError):
        pool.submit(T + "fail", ("x",)).result(timeout=10)
    # Both interpreters, including the recycled one, have the buffer.
    futures = [pool.submit(T + "buffer_sum", (ref,)) for _ in range(6)]
    assert {f.result(timeout=10) for f in futures} == {expected}
    pool.detach("nums")
    pool.detach("nums")
    assert pool.attached() == ()
    with pytest.raises(LookupError):
        pool.submit(T + "buffer_sum", (ref,))


def test_attach_validates_buffers(pool: InterpreterPool) -> None:
    with pytest.raises(TypeError):
        pool.attach("k", {"x": b"bytes"})  # type: ignore[dict-item]  # checking the runtime guard
    with pytest.raises(ValueError, match="C-contiguous"):
        pool.attach("k", {"x": memoryview(np.zeros((4, 4))[:, 1])})
    with pytest.raises(ValueError):
        pool.attach("", {})


def test_cooperative_cancel_and_queued_deadline() -> None:
    with InterpreterPool(1, allowed=SELFTEST) as p:
        token = CancelToken()
        p.attach("flag", {"cancel": token.view})
        running = p.submit(T + "wait_for_cancel", (dataset_arg("flag", "cancel"), time.time() + 60))
        expired = p.submit(T + "echo", ("x",), deadline=time.time() - 1)
        while p.stats().busy == 0:
            time.sleep(0.001)
        token.cancel()
        assert token.cancelled
        assert json.loads(running.result(timeout=10)) == {"status": "cancelled"}
        with pytest.raises(TimeoutError):
            expired.result(timeout=10)
        assert p.stats().recycles == 0  # a task that never ran breaks nothing


def test_close_cancels_queued_tasks() -> None:
    p = InterpreterPool(1, allowed=SELFTEST)
    token = CancelToken()
    p.attach("flag", {"cancel": token.view})
    running = p.submit(T + "wait_for_cancel", (dataset_arg("flag", "cancel"), time.time() + 60))
    queued = p.submit(T + "echo", ("never",))
    while p.stats().busy == 0:
        time.sleep(0.001)
    p.close(wait=False)
    assert queued.cancelled()
    with pytest.raises(CancelledError):
        queued.result(timeout=1)
    token.cancel()
    p.close()
    assert json.loads(running.result(timeout=1)) == {"status": "cancelled"}


def test_map_returns_results_in_order(pool: InterpreterPool) -> None:
    words = [f"w{i}" for i in range(20)]
    assert list(pool.map(T + "echo", [(w,) for w in words], timeout=30)) == words
    assert pool.stats().tasks_done == 20


def test_cpu_bound_tasks_run_on_both_interpreters(pool: InterpreterPool) -> None:
    expected = _pool_selftest_spin(20_000)
    futures = [pool.submit(T + "spin", (20_000,)) for _ in range(8)]
    assert [f.result(timeout=60) for f in futures] == [expected] * 8
    recent = pool.stats().recent
    assert len(recent) == 8 and all(r.ok and r.run_s >= 0 for r in recent)


def _pool_selftest_spin(n: int) -> str:
    from thunderhelm.ga.pool import selftest

    return selftest.spin(n)


def _kernel_importable() -> bool:
    try:
        importlib.import_module("thunderhelm.ga.training._kernel")
    except ImportError:
        return False
    return True


needs_kernel = pytest.mark.skipif(
    not _kernel_importable(), reason="thunderhelm.ga.training._kernel is not built"
)


_TWO_INTERPRETER_IMPORT = """
import _interpreters, sys
KERNEL = "thunderhelm.ga.training._kernel"
for _ in range(2):
    iid = _interpreters.create()
    err = _interpreters.exec(iid, f"import sys; sys.path[:] = {sys.path!r}; import {KERNEL}")
    _interpreters.destroy(iid)
    if err is not None:
        sys.exit(err.errdisplay)
"""


def _check_kernel_loads_in_two_interpreters() -> None:
    # Run in a child process: an extension that is unsafe in several
    # interpreters aborts the whole process, which must not take pytest down.
    proc = subprocess.run(
        [sys.executable, "-c", _TWO_INTERPRETER_IMPORT],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
    )
    if proc.returncode != 0:
        pytest.fail(
            f"the kernel cannot be imported by two interpreters (exit {proc.returncode}): "
            f"{proc.stderr[-2000:]}"
        )


@needs_kernel
def test_pool_and_in_process_evaluators_agree() -> None:
    _check_kernel_loads_in_two_interpreters()
    from thunderhelm.ga.training.datasets import load_dataset
    from thunderhelm.ga.training.evaluators import InProcessEvaluator, PoolEvaluator

    ds = load_dataset(
        {"name": "spirals", "samples": 300, "classes": 3, "seed": 1},
        data_root=Path("/nonexistent"),
        text_dir=Path("/nonexistent"),
    )
    network = {
        "n_inputs": ds.n_features,
        "n_outputs": ds.n_classes,
        "units": [{"inputs": [0], "neurons": 8, "activation": "relu"}],
        "output_inputs": [1],
        "learning_rate": 0.01,
        "weight_decay": 0.0,
        "epochs": 2,
        "batch_size": 32,
        "seed": 5,
    }
    broken = {**network, "units": [{"inputs": [7], "neurons": 0, "activation": "nope"}]}
    with InterpreterPool(2) as p:
        evaluate = PoolEvaluator(p, ds, deadline_s=120)
        pooled = evaluate([network, broken, network])
        evaluate.close()
    local = InProcessEvaluator(ds, deadline_s=120)([network])
    assert pooled[0]["status"] == "ok" and pooled[0]["fitness"] == pooled[0]["val_accuracy"]
    assert pooled[0]["val_accuracy"] == pooled[2]["val_accuracy"] == local[0]["val_accuracy"]
    assert pooled[1]["status"] != "ok" and pooled[1]["fitness"] == float("-inf")
    assert isinstance(pooled[0]["interpreter"], int)


def test_pool_interpreters_do_not_share_a_gil() -> None:
    # Two pure-Python busy-waits that never block meet only if they run at the
    # same time. Under one shared GIL the holder gives it up only when the
    # switch interval expires, which is set far beyond the rendezvous timeout
    # here, so a pool built on a shared GIL times out. The kernel releases the
    # GIL, so kernel tests alone cannot tell.
    flags = bytearray(2)
    before = sys.getswitchinterval()
    sys.setswitchinterval(120.0)
    try:
        with InterpreterPool(2, allowed=[T + "gil_rendezvous"]) as p:
            p.attach("flags", {"both": memoryview(flags)})
            futures = [
                p.submit(T + "gil_rendezvous", (dataset_arg("flags", "both"), i, 10.0))
                for i in range(2)
            ]
            results = [json.loads(f.result(timeout=60)) for f in futures]
    finally:
        sys.setswitchinterval(before)
    assert flags == b"\x01\x01"
    assert results[0]["interpreter"] != results[1]["interpreter"]


def test_values_reach_interpreters_only_through_their_queues(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # CPython 3.13.0 leaks a cross-interpreter data block for every value passed
    # in a shared namespace (gh-140306): the soak worker grew ~2 KB per run while
    # tasks and dataset attaches crossed that way. Every crossing the pool makes
    # (start-up, attach, re-attach, detach, tasks, a recycle) must use the queues.
    shared_namespaces: list[str] = []
    real_exec = _interpreters.exec
    real_set_main = _interpreters.set___main___attrs

    def exec_spy(iid: int, code: object, shared: object = None, **kw: object) -> object:
        if shared:
            shared_namespaces.append(f"exec shared {sorted(shared)}")  # type: ignore[call-overload]
            return real_exec(iid, code, shared, **kw)
        return real_exec(iid, code, **kw)

    def set_main_spy(iid: int, names: dict[str, object]) -> None:
        shared_namespaces.append(f"set___main___attrs {sorted(names)}")
        real_set_main(iid, names)

    monkeypatch.setattr(_interpreters, "exec", exec_spy)
    monkeypatch.setattr(_interpreters, "set___main___attrs", set_main_spy)
    data = np.arange(10, dtype=np.uint8)
    with InterpreterPool(2, allowed=SELFTEST) as p:
        for round_ in range(3):
            p.attach("nums", {"x": memoryview(data).toreadonly(), "y": memoryview(data[:3])})
            refs = (dataset_arg("nums", "x"), dataset_arg("nums", "y"))
            sums = {p.submit(T + "buffer_sum", (ref,)).result(timeout=10) for ref in refs}
            assert sums == {"45", "3"}, round_
        with pytest.raises(RemoteError):
            p.submit(T + "fail", ("recycle one",)).result(timeout=10)
        results = [p.submit(T + "buffer_sum", (refs[0],)) for _ in range(4)]
        assert {f.result(timeout=10) for f in results} == {"45"}
        p.detach("nums")
        assert p.submit(T + "echo", ("after detach",)).result(timeout=10) == "after detach"
        assert p.stats().recycles == 1
    assert shared_namespaces == []


def _thread_nice_values() -> list[int]:
    values = []
    for task in Path("/proc/self/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        values.append(int(fields[16]))  # stat field 19: nice
    return values


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_pool_threads_run_at_the_niceness_asked_for() -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    with InterpreterPool(2, niceness=7) as pool:
        assert _thread_nice_values().count(base + 7) == pool.size
    with InterpreterPool(1):
        assert base + 7 not in _thread_nice_values()


def _idle_threads() -> int:
    return sum(
        os.sched_getscheduler(int(task.name)) == os.SCHED_IDLE
        for task in Path("/proc/self/task").iterdir()
    )


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="needs SCHED_IDLE (Linux)")
def test_an_idle_pool_trains_under_sched_idle_and_the_caller_does_not() -> None:
    with InterpreterPool(2, allowed=SELFTEST, idle=True) as pool:
        assert _idle_threads() == pool.size
        assert os.sched_getscheduler(0) != os.SCHED_IDLE  # the calling thread keeps its policy
        assert pool.submit(T + "echo", ("idle",)).result(timeout=10) == "idle"
    with InterpreterPool(1, niceness=3):
        assert _idle_threads() == 0


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="needs SCHED_IDLE (Linux)")
@pytest.mark.parametrize(
    ("priority", "nice", "idle"), [("idle", 10, 1), ("low", 10, 0), ("normal", 0, 0)]
)
def test_the_worker_setting_picks_the_pool_priority(priority: str, nice: int, idle: int) -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    executor = RunExecutor(Settings.model_validate({"pool_size": 1, "pool_priority": priority}))
    executor.start()
    try:
        assert _idle_threads() == idle
        lowered = _thread_nice_values().count(base + nice) if nice else 0
        assert lowered == (1 if nice else 0)
    finally:
        executor.close()


def _pool_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("thunderhelm-pool")]


def test_close_leaves_no_pool_threads() -> None:
    with InterpreterPool(2, allowed=SELFTEST) as p:
        assert p.submit(T + "echo", ("x",)).result(timeout=10) == "x"
        assert len(_pool_threads()) == 4  # per slot: the task thread and its results thread
    assert _pool_threads() == []


def test_futures_nobody_waits_on_still_complete(pool: InterpreterPool) -> None:
    # No caller in `result`: the slots' results threads hand every result back.
    seen: list[str] = []
    futures = [pool.submit(T + "echo", (f"w{i}",)) for i in range(12)]
    for fut in futures:
        fut.add_done_callback(lambda f: seen.append(f.result()))
    _, pending = wait(futures, timeout=30)
    assert not pending
    deadline = time.time() + 10  # callbacks run just after the future resolves
    while len(seen) < 12 and time.time() < deadline:
        time.sleep(0.001)
    assert sorted(seen) == sorted(f"w{i}" for i in range(12))
    assert pool.stats().tasks_done == 12


def test_a_caller_that_stops_waiting_hands_the_result_over() -> None:
    with InterpreterPool(1, allowed=SELFTEST) as p:
        token = CancelToken()
        p.attach("flag", {"cancel": token.view})
        running = p.submit(T + "wait_for_cancel", (dataset_arg("flag", "cancel"), time.time() + 60))
        with pytest.raises(TimeoutError):
            running.result(timeout=0.05)
        token.cancel()
        # Nobody waits now: the result goes through the results thread.
        deadline = time.time() + 10
        while not running.done() and time.time() < deadline:
            time.sleep(0.001)
        assert json.loads(running.result(timeout=0)) == {"status": "cancelled"}
        assert p.submit(T + "echo", ("next",)).result(timeout=10) == "next"


def test_a_callback_may_wait_for_the_next_task_of_its_slot() -> None:
    # The waiting caller runs the first future's callbacks itself, right after
    # the slot started the queued second task.
    with InterpreterPool(1, allowed=SELFTEST) as p:
        token = CancelToken()
        p.attach("flag", {"cancel": token.view})
        first = p.submit(T + "wait_for_cancel", (dataset_arg("flag", "cancel"), time.time() + 60))
        second = p.submit(T + "echo", ("second",))
        got: list[str] = []
        first.add_done_callback(lambda _: got.append(second.result(timeout=10)))
        while p.stats().busy == 0:
            time.sleep(0.001)
        token.cancel()
        assert json.loads(first.result(timeout=10)) == {"status": "cancelled"}
        assert got == ["second"]


def test_several_threads_wait_for_one_task() -> None:
    with InterpreterPool(1, allowed=SELFTEST) as p:
        token = CancelToken()
        p.attach("flag", {"cancel": token.view})
        running = p.submit(T + "wait_for_cancel", (dataset_arg("flag", "cancel"), time.time() + 60))
        with ThreadPoolExecutor(3) as ex:
            waits = [ex.submit(running.result, 30) for _ in range(3)]
            time.sleep(0.05)
            token.cancel()
            assert {w.result(timeout=30) for w in waits} == {json.dumps({"status": "cancelled"})}


def test_a_waiting_caller_sees_a_task_failure_and_the_pool_keeps_serving() -> None:
    with InterpreterPool(1, allowed=SELFTEST) as p:
        for i in range(20):
            with pytest.raises(RemoteError):
                p.submit(T + "fail", (f"boom {i}",)).result(timeout=10)
            assert p.submit(T + "echo", (str(i),)).result(timeout=10) == str(i)
        assert p.stats().recycles == 20


def test_many_quick_round_trips_all_arrive() -> None:
    # Results race the caller to the wait: each must arrive whoever takes it.
    with InterpreterPool(2, allowed=SELFTEST) as p:
        for i in range(2000):
            assert p.submit(T + "echo", (str(i),)).result(timeout=10) == str(i)
        futures = [p.submit(T + "echo", (str(i),)) for i in range(500)]
        assert [f.result(timeout=30) for f in futures] == [str(i) for i in range(500)]
