"""The pool benchmark: why thunderhelm trains on sub-interpreters, in measured figures.

The same four queued NAS runs are done four ways in one benchmark run:
one after another in the main interpreter (`InProcessEvaluator`, the
baseline), concurrently on one warm sub-interpreter pool of one interpreter
per core, on a thread pool of as many threads, and on a process pool of as many
processes. Speed-up is the sequential time divided by each one's time. Every
way trains the same candidates with the same seeds, so the four must agree on
each run's best genome and fitness; the result records whether they did.

It also measures the two costs the pool has to keep small: the round trip of
a trivial task into a warm interpreter, and the resident memory one more warm
interpreter (kernel imported) adds to the process.
"""

import contextlib
import multiprocessing
import os
import queue
import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Self

from bench.common import Options, cores, load_named, rss_mb, run_request, warm_pool
from bench.report import bar
from thunderhelm.ga.core.engine import GAState
from thunderhelm.ga.pool import warmup
from thunderhelm.ga.pool.interpreter_pool import InterpreterPool
from thunderhelm.ga.training.datasets import PreparedDataset
from thunderhelm.ga.training.evaluators import TRAIN_FUNCTION, InProcessEvaluator, PoolEvaluator

__all__ = ["run"]

ECHO = "thunderhelm.ga.pool.selftest:echo"
SPIN = "thunderhelm.ga.pool.selftest:spin"
ALLOWED = (TRAIN_FUNCTION, warmup.FUNCTION, ECHO, SPIN)
RUNS = 4
ROUNDS = 3
EXTRA_INTERPRETERS = 4


def workload(quick: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The dataset spec and the four run requests (they differ only in their GA seed)."""
    if quick:
        dataset: dict[str, Any] = {"name": "spirals", "samples": 200}
        ga = {"population": 2, "generations": 1, "tournament_size": 2}
        training = {"epochs": 1, "batch_size": 32}
        space = {"max_levels": 1, "max_units": 2, "max_neurons": 8}
    else:
        dataset = {"name": "digits"}
        ga = {"population": 4, "generations": 2, "tournament_size": 2}
        training = {"epochs": 24, "batch_size": 32}
        space = {"max_levels": 3, "max_units": 3, "max_neurons": 128}
    requests = [
        {
            "run_id": f"bench-pool-{seed}",
            "dataset": dataset,
            "ga": {**ga, "seed": seed},
            "training": training,
            "search_space": space,
        }
        for seed in range(1, RUNS + 1)
    ]
    return dataset, requests


def _outcome(state: GAState) -> dict[str, Any]:
    best = state.best
    return {
        "best_fitness": None if best is None else best.fitness,
        "best_genome": None if best is None else best.to_dict()["key"],
        "evaluations": state.evaluations,
    }


class Executors:
    """The four ways of doing the queued runs, started and warmed before any timing.

    Pool start-up, dataset attach and process spawning are paid once here, as
    the worker pays them once; each method then does every run and returns the
    outcomes. The pool's runs are each driven by a main-interpreter thread, all
    sharing the one pool.
    """

    def __init__(
        self,
        spec: Mapping[str, Any],
        dataset: PreparedDataset,
        requests: Sequence[Mapping[str, Any]],
        workers: int,
    ) -> None:
        self.spec = spec
        self.dataset = dataset
        self.requests = list(requests)
        self.workers = workers
        self._stack = contextlib.ExitStack()
        self._in_main = InProcessEvaluator(dataset)
        self._pooled: list[PoolEvaluator] = []
        self._procs: ProcessPoolExecutor | None = None

    def __enter__(self) -> Self:
        with contextlib.ExitStack() as stack:
            pool = stack.enter_context(InterpreterPool(self.workers, allowed=ALLOWED))
            warm_pool(pool)
            self._pooled = [
                stack.enter_context(PoolEvaluator(pool, self.dataset, deadline_s=600.0))
                for _ in self.requests
            ]
            context = multiprocessing.get_context("spawn")  # fork after threads exist is unsafe
            self._procs = stack.enter_context(
                ProcessPoolExecutor(
                    self.workers,
                    mp_context=context,
                    initializer=_process_init,
                    initargs=(self.spec,),
                )
            )
            for _ in range(50):  # until every worker process has answered (and so loaded)
                if len(set(self._procs.map(_process_ready, range(self.workers)))) == self.workers:
                    break
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def sequential(self) -> list[dict[str, Any]]:
        return [_outcome(run_request(r, self.dataset, self._in_main)) for r in self.requests]

    def subinterpreters(self) -> list[dict[str, Any]]:
        with ThreadPoolExecutor(len(self.requests), thread_name_prefix="bench-drive") as ex:
            return list(
                ex.map(
                    lambda pair: _outcome(run_request(pair[0], self.dataset, pair[1])),
                    zip(self.requests, self._pooled, strict=True),
                )
            )

    def threads(self) -> list[dict[str, Any]]:
        with ThreadPoolExecutor(self.workers, thread_name_prefix="bench-run") as ex:
            return list(
                ex.map(
                    lambda r: _outcome(run_request(r, self.dataset, self._in_main)),
                    self.requests,
                )
            )

    def processes(self) -> list[dict[str, Any]]:
        assert self._procs is not None, "use Executors as a context manager"
        return list(self._procs.map(_process_run, self.requests))


# -- the process-pool worker side (module level, so spawned processes can import it) --

_process_dataset: list[PreparedDataset] = []


def _process_init(spec: Mapping[str, Any]) -> None:
    _process_dataset.append(load_named(spec))
    import thunderhelm.ga.training.candidate  # noqa: F401  # warm: the kernel is loaded before any timing


def _process_ready(_: int) -> int:
    time.sleep(0.1)  # long enough that one worker cannot answer every probe
    return os.getpid()


def _process_run(request: Mapping[str, Any]) -> dict[str, Any]:
    dataset = _process_dataset[0]
    return _outcome(run_request(request, dataset, InProcessEvaluator(dataset)))


def measure_runs(
    spec: Mapping[str, Any],
    dataset: PreparedDataset,
    requests: Sequence[Mapping[str, Any]],
    workers: int,
    rounds: int,
) -> tuple[dict[str, list[float]], dict[str, list[dict[str, Any]]]]:
    """Wall times of every way, `rounds` times in turn, and each way's outcomes.

    Taking turns spreads any outside load over all four instead of one.
    """
    times: dict[str, list[float]] = {}
    outcomes: dict[str, list[dict[str, Any]]] = {}
    with Executors(spec, dataset, requests, workers) as ex:
        ways = {
            "sequential": ex.sequential,
            "subinterpreters": ex.subinterpreters,
            "threads": ex.threads,
            "processes": ex.processes,
        }
        for _ in range(rounds):
            for name, way in ways.items():
                began = time.perf_counter()
                outcomes[name] = way()
                times.setdefault(name, []).append(time.perf_counter() - began)
    return times, outcomes


# -- own GIL: a task that holds the GIL ----------------------------------------------


def gil_bound(size: int, tasks: int, n: int, rounds: int) -> dict[str, Any]:
    """Speed-ups of a pure-Python CPU-bound task (it never releases the GIL).

    The kernel releases the GIL, so threads scale on trainings too; only a task
    that holds it shows whether the pool's interpreters really have a GIL each.
    Sequential is the same tasks one after another in the main interpreter.
    """
    from thunderhelm.ga.pool import selftest

    times: dict[str, list[float]] = {"sequential": [], "subinterpreters": [], "threads": []}
    with (
        InterpreterPool(size, allowed=ALLOWED) as pool,
        ThreadPoolExecutor(size, thread_name_prefix="bench-gil") as threads,
    ):
        list(pool.map(SPIN, [(1000,)] * size * 4))  # the spin module is imported everywhere
        for _ in range(rounds):
            began = time.perf_counter()
            for _ in range(tasks):
                selftest.spin(n)
            times["sequential"].append(time.perf_counter() - began)
            began = time.perf_counter()
            list(pool.map(SPIN, [(n,)] * tasks))
            times["subinterpreters"].append(time.perf_counter() - began)
            began = time.perf_counter()
            list(threads.map(selftest.spin, [n] * tasks))
            times["threads"].append(time.perf_counter() - began)
    best = {k: min(v) for k, v in times.items()}
    return {
        "tasks": tasks,
        "loop_iterations": n,
        "rounds": rounds,
        "timings_s": {k: round(v, 3) for k, v in best.items()},
        "timings_all_s": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "speedup_subinterp": round(best["sequential"] / best["subinterpreters"], 3),
        "speedup_threads": round(best["sequential"] / best["threads"], 3),
    }


# -- costs of the pool itself ------------------------------------------------------


def dispatch_us(size: int, tasks: int, repeats: int) -> dict[str, float]:
    """Microseconds per submit-and-wait of a trivial task into a warm pool of `size`.

    One task at a time, so this is the full round trip: queue, wake the
    interpreter's thread, run in the interpreter, hand the result back.
    """
    with InterpreterPool(size, allowed=ALLOWED) as pool:
        for _ in range(min(500, tasks)):
            pool.submit(ECHO, ("x",)).result()
        per_task = []
        for _ in range(repeats):
            began = time.perf_counter()
            for _ in range(tasks):
                pool.submit(ECHO, ("x",)).result()
            per_task.append((time.perf_counter() - began) / tasks * 1e6)
    return {
        "pool_size": size,
        "median_us": round(statistics.median(per_task), 2),
        "best_us": round(min(per_task), 2),
        "tasks_per_repeat": tasks,
        "repeats": repeats,
    }


def _empty() -> None:
    pass


def dispatch_parts_us(tasks: int, repeats: int) -> dict[str, float]:
    """Where a dispatch's time goes: median microseconds of its parts, no pool.

    `loop_round_trip_us`: an echo task through a serving loop (`Interpreter.serve`
    on its own thread, as a pool slot runs it) from a thread that posts it and
    waits on `caller_fd` as a waiting caller does: two thread wake-ups, the
    task's unmarshal, allowlist lookup and call, the result back; the pool's
    dispatch adds its bookkeeping (future, task record, queue) to it.
    `exec_empty_us`: `_interpreters.exec` of an empty function into a warm
    interpreter, the cost of entering an interpreter per task, which the pool
    no longer pays: CPython 3.13 creates and destroys a thread state for every
    call (one mmap and one munmap of its 16 KiB data stack).
    """
    import _interpreters

    from thunderhelm.ga.pool.backend import STOP, Interpreter, encode_task, new_interpreter

    path = tuple(p for p in sys.path if isinstance(p, str))

    def median_us(step: Callable[[], object]) -> float:
        for _ in range(min(500, tasks)):
            step()
        per_call = []
        for _ in range(repeats):
            began = time.perf_counter()
            for _ in range(tasks):
                step()
            per_call.append((time.perf_counter() - began) / tasks * 1e6)
        return round(statistics.median(per_call), 2)

    interp = new_interpreter(path, ALLOWED)
    try:
        exec_empty = median_us(lambda: _interpreters.exec(interp.id, _empty))
    finally:
        interp.close()

    # The interpreter is created, served and destroyed by one thread, as in the pool.
    ready: queue.SimpleQueue[Interpreter] = queue.SimpleQueue()

    def serve() -> None:
        served = new_interpreter(path, ALLOWED)
        try:
            ready.put(served)
            served.serve()
        finally:
            served.close()

    server = threading.Thread(target=serve)
    server.start()
    served = ready.get()
    served.signals.waiting[0] = 1  # results come to caller_fd, as for a waiting caller
    command = encode_task((ECHO, ("x",)))

    def round_trip() -> str | None:
        served.post(command)
        os.eventfd_read(served.signals.caller_fd)
        return served.take_result()

    try:
        loop = median_us(round_trip)
    finally:
        served.post(STOP)
        server.join()
    return {"loop_round_trip_us": loop, "exec_empty_us": exec_empty}


def thread_handoff_us(tasks: int, repeats: int) -> float:
    """Median microseconds of a bare thread round trip (queue + Future), no interpreter.

    The floor under any pool's dispatch on this machine at this moment: on an
    idle VM most of it is the wake-up of a sleeping core.
    """
    jobs: queue.SimpleQueue[Future[int] | None] = queue.SimpleQueue()

    def serve() -> None:
        while (job := jobs.get()) is not None:
            job.set_result(1)

    thread = threading.Thread(target=serve)
    thread.start()
    per_task = []
    try:
        for _ in range(repeats):
            began = time.perf_counter()
            for _ in range(tasks):
                job: Future[int] = Future()
                jobs.put(job)
                job.result()
            per_task.append((time.perf_counter() - began) / tasks * 1e6)
    finally:
        jobs.put(None)
        thread.join()
    return round(statistics.median(per_task), 2)


def crossing_bytes(values: int) -> dict[str, Any]:
    """Process RSS growth per value sent into an interpreter, two ways side by side.

    The pool sends every value (a task, a dataset buffer) through the
    interpreter's inbox queue; the other way is a shared namespace
    (`_interpreters.exec`'s `shared`), which CPython 3.13.0 leaks a block for
    per value (gh-140306). The queue goes first, so memory freed by it is not
    credited to the namespace loop.
    """
    import _interpreters

    from thunderhelm.ga.pool.backend import Interpreter

    interp = Interpreter()
    payload = b"x" * 64
    try:

        def by_queue() -> None:
            interp.send(payload)
            interp.exec("_interpqueues.get(__th_inbox__)")

        def by_namespace() -> None:
            snap = _interpreters.exec(interp.id, "del __v__", {"__v__": payload})
            assert snap is None

        growth: dict[str, float] = {}
        for name, step in (("queue", by_queue), ("shared_namespace", by_namespace)):
            for _ in range(1000):
                step()
            before = rss_mb()
            for _ in range(values):
                step()
            growth[name] = (rss_mb() - before) * 1024 * 1024 / values
    finally:
        interp.close()
    return {
        "values": values,
        "bytes_per_value_queue": round(growth["queue"], 1),
        "bytes_per_value_shared_namespace": round(growth["shared_namespace"], 1),
    }


def rss_per_interpreter(base: int, extra: int) -> dict[str, float]:
    """Process RSS with `base` warm interpreters, then with `extra` more, all kernel-warm."""
    with InterpreterPool(base, allowed=ALLOWED) as first:
        warm_pool(first)
        time.sleep(0.2)
        with_base = rss_mb()
        with InterpreterPool(extra, allowed=ALLOWED) as more:
            warm_pool(more)
            time.sleep(0.2)
            with_more = rss_mb()
    return {
        "interpreters_base": base,
        "interpreters_extra": extra,
        "rss_mb_base": round(with_base, 2),
        "rss_mb_with_extra": round(with_more, 2),
        "rss_mb_per_interp": (with_more - with_base) / extra,
    }


def run(opts: Options) -> dict[str, Any]:
    """Measure everything and return the result record (see `bench.report`)."""
    load_before = os.getloadavg()
    size = opts.pool_size or cores()
    spec, requests = workload(opts.quick)
    dataset = load_named(spec)

    rounds = 1 if opts.quick else ROUNDS
    all_times, outcomes = measure_runs(spec, dataset, requests, size, rounds)
    timings = {name: min(values) for name, values in all_times.items()}
    seq_s = timings["sequential"]
    tasks, repeats = (200, 2) if opts.quick else (3000, 7)
    dispatch = dispatch_us(1, tasks, repeats)
    dispatch_n = dispatch_us(size, tasks, repeats)
    handoff = thread_handoff_us(tasks, repeats)
    parts = dispatch_parts_us(tasks, repeats)
    gil = gil_bound(size, size * 4, 200_000 if opts.quick else 2_000_000, 1 if opts.quick else 3)
    rss = rss_per_interpreter(size, 1 if opts.quick else EXTRA_INTERPRETERS)
    # In a fresh process: memory this one freed earlier would absorb the leak.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as fresh:
        crossing = fresh.submit(crossing_bytes, 5_000 if opts.quick else 100_000).result()
    evaluations = sum(o["evaluations"] for o in outcomes["sequential"])
    identical = all(o == outcomes["sequential"] for o in outcomes.values())
    speedups = {k: seq_s / v for k, v in timings.items()}
    result: dict[str, Any] = {
        "quick": opts.quick,
        "speedup_subinterp": round(speedups["subinterpreters"], 3),
        "speedup_threads": round(speedups["threads"], 3),
        "speedup_processes": round(speedups["processes"], 3),
        "speedup_gil_bound_subinterp": gil["speedup_subinterp"],
        "speedup_gil_bound_threads": gil["speedup_threads"],
        "dispatch_us": round(dispatch["median_us"], 1),
        "thread_handoff_us": handoff,
        "rss_mb_per_interp": round(rss["rss_mb_per_interp"], 2),
        "identical_results": identical,
        "workers": size,
        "runs": len(requests),
        "evaluations": evaluations,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "throughput_candidates_per_s": {k: round(evaluations / v, 2) for k, v in timings.items()},
        "dispatch": dispatch,
        "dispatch_pool_of_workers": dispatch_n,
        "dispatch_parts": parts,
        "rss": rss,
        "crossing": crossing,
        "gil_bound": gil,
        "workload": {"dataset": spec, "request": {k: requests[0][k] for k in ("ga", "training")}},
        "timings_all_s": {k: [round(t, 3) for t in v] for k, v in all_times.items()},
        "rounds": rounds,
        "speedups": {k: round(v, 3) for k, v in speedups.items()},
        "outcomes": outcomes,
        "environment": {"load_before": [round(x, 2) for x in load_before]},
    }
    result["bars"] = [
        bar(
            f"pool speed-up for {len(requests)} concurrent runs >= 1.8x over sequential",
            f"{speedups['subinterpreters']:.2f}x on {size} interpreters",
            speedups["subinterpreters"] >= 1.8,
        ),
        bar(
            "threads stay near 1x (for reference)",
            f"{speedups['threads']:.2f}x on {size} threads (the kernel releases the GIL)",
            None,
        ),
        bar(
            "process pool (for reference)",
            f"{speedups['processes']:.2f}x on {size} processes",
            None,
        ),
        bar(
            "own GIL: a GIL-holding (pure-Python) task >= 1.7x on the pool",
            f"{gil['speedup_subinterp']:.2f}x on {size} interpreters",
            gil["speedup_subinterp"] >= 1.7,
        ),
        bar(
            "the same task on threads (one shared GIL) <= 1.2x",
            f"{gil['speedup_threads']:.2f}x on {size} threads",
            gil["speedup_threads"] <= 1.2,
        ),
        bar(
            "dispatch round-trip <= 2x a bare thread hand-off",
            f"{dispatch['median_us']:.1f} us vs {handoff:.1f} us "
            f"({dispatch['median_us'] / handoff:.2f}x); of it, the serving loop's round trip "
            f"without the pool's bookkeeping: {parts['loop_round_trip_us']:.1f} us. Entering "
            f"the interpreter per task (a thread state made per call), which the pool no "
            f"longer does, alone costs {parts['exec_empty_us']:.1f} us",
            dispatch["median_us"] <= 2 * handoff,
        ),
        bar(
            "dispatch round-trip <= 100 us",
            f"{dispatch['median_us']:.1f} us median, 1 interpreter ({dispatch['best_us']:.1f} "
            f"best); {dispatch_n['median_us']:.1f} us with {size}; a bare thread hand-off "
            f"(no interpreter) takes {handoff:.1f} us on this machine now",
            dispatch["median_us"] <= 100,
        ),
        bar(
            "<= 10 MB RSS per extra warm interpreter",
            f"{rss['rss_mb_per_interp']:.2f} MB",
            rss["rss_mb_per_interp"] <= 10,
        ),
        bar(
            "values sent to an interpreter leave no memory behind (inbox queue)",
            f"{crossing['bytes_per_value_queue']:.1f} B per value over {crossing['values']:,} "
            f"values; a shared namespace (not used): "
            f"{crossing['bytes_per_value_shared_namespace']:.1f} B per value",
            crossing["bytes_per_value_queue"] < 4,
        ),
        bar(
            "same runs, same results on every executor",
            "identical" if identical else "DIFFERENT",
            identical,
        ),
    ]
    result["summary"] = _summary(result, spec, requests[0])
    return result


def _summary(result: Mapping[str, Any], spec: Mapping[str, Any], request: Any) -> str:
    t = result["timings_s"]
    speedups = result["speedups"]
    tp = result["throughput_candidates_per_s"]
    ga, training = request["ga"], request["training"]
    rows = [
        "| executor | wall s | speed-up | candidates/s |",
        "|---|---|---|---|",
    ]
    for key, label in (
        ("sequential", "sequential, main interpreter"),
        ("subinterpreters", f"sub-interpreter pool ({result['workers']})"),
        ("threads", f"thread pool ({result['workers']})"),
        ("processes", f"process pool ({result['workers']})"),
    ):
        rows.append(f"| {label} | {t[key]:.2f} | {speedups[key]:.2f}x | {tp[key]} |")
    return "\n".join(
        [
            f"{result['runs']} NAS runs on `{spec['name']}` (population {ga['population']}, "
            f"{ga['generations']} generations, up to {training['epochs']} epochs; "
            f"{result['evaluations']} candidate trainings in all), each way done "
            f"{result['rounds']} times in turn; the fastest time of each is shown. Pool "
            "start-up, dataset loading and process spawning are excluded. The kernel "
            "releases the GIL inside its numeric loops, which is why threads can scale too; "
            "the Python parts of a training (spec parsing, shuffles, the epoch loop) still "
            "serialise on one GIL.",
            "",
            *rows,
        ]
    )
