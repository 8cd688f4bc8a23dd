"""Measure the interpreter pool: dispatch round-trip, RSS per warm interpreter, speed-up.

Run: ``.venv/bin/python bench/bench_pool.py`` from the project root. Prints one
JSON object. The bars from the design notes: round-trip <= 100 us, <= 10 MB
per extra warm interpreter, ~2x for two CPU-bound tasks on two cores.
"""

import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ga import _pool_selftest
from ga.pool import InterpreterPool

T = "ga._pool_selftest:"
ALLOWED = [T + "echo", T + "spin", T + "interpreter_id"]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def round_trip_us(pool: InterpreterPool, n: int = 3000, reps: int = 7) -> dict[str, float]:
    for _ in range(500):
        pool.submit(T + "echo", ("x",)).result()
    per_rep = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(n):
            pool.submit(T + "echo", ("x",)).result()
        per_rep.append((time.perf_counter() - t) / n * 1e6)
    return {"best_us": min(per_rep), "median_us": statistics.median(per_rep)}


def rss_per_interpreter(extra: int = 8) -> float:
    with InterpreterPool(1, allowed=ALLOWED) as warm:
        warm.submit(T + "interpreter_id").result()
        before = rss_mb()
        with InterpreterPool(extra, allowed=ALLOWED) as more:
            # Make every interpreter import the task module (a warm worker).
            for fut in [more.submit(T + "spin", (200_000,)) for _ in range(extra * 3)]:
                fut.result()
            assert len({i.interpreter for i in more.stats().recent}) == extra
            after = rss_mb()
    return (after - before) / extra


def speed_up(n: int) -> dict[str, float]:
    t = time.perf_counter()
    _pool_selftest.spin(n)
    _pool_selftest.spin(n)
    sequential = time.perf_counter() - t

    threads = [threading.Thread(target=_pool_selftest.spin, args=(n,)) for _ in range(2)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    threaded = time.perf_counter() - t

    with InterpreterPool(2, allowed=ALLOWED) as pool:
        list(pool.map(T + "spin", [(1000,), (1000,)]))  # warm both
        t = time.perf_counter()
        list(pool.map(T + "spin", [(n,), (n,)]))
        pooled = time.perf_counter() - t
    return {
        "sequential_s": sequential,
        "two_threads_s": threaded,
        "pool_2_interpreters_s": pooled,
        "speed_up_vs_sequential": sequential / pooled,
    }


def main() -> None:
    out: dict[str, object] = {}
    with InterpreterPool(1, allowed=ALLOWED) as pool:
        out["round_trip_pool_1"] = round_trip_us(pool)
    with InterpreterPool(2, allowed=ALLOWED) as pool:
        out["round_trip_pool_2"] = round_trip_us(pool)
    out["rss_mb_per_extra_interpreter"] = rss_per_interpreter()
    out["cpu_bound"] = speed_up(int(sys.argv[1]) if len(sys.argv) > 1 else 3_000_000)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
