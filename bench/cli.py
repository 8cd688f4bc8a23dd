"""`thunderhelm bench NAME|all [--quick] [--out DIR]`: run benchmarks, write their results.

A plain dispatcher: `BENCHMARKS` names each benchmark's `run(Options) -> dict`
function, and every result goes through `bench.report.write_result`. Adding a
benchmark is one module with a `run` function and one line here.
"""

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import dlq, faults, kernel, pool, quality, soak, tracing
from bench.common import Options
from bench.report import DEFAULT_OUT, write_result

DESCRIPTION = "Run thunderhelm's benchmarks and write their results."

Runner = Callable[[Options], dict[str, Any]]

# Runs in this order for `all`.
BENCHMARKS: dict[str, Runner] = {
    "pool": pool.run,
    "kernel": kernel.run,
    "quality": quality.run,
    "faults": faults.run,
    "dlq": dlq.run,
    "tracing": tracing.run,
    "soak": soak.run,
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="thunderhelm bench", description=DESCRIPTION)
    p.add_argument("name", choices=[*BENCHMARKS, "all"], help="benchmark to run")
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny settings: checks the code paths, measures nothing",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="folder for results/NAME.json and RESULTS.md (default: the bench package)",
    )
    p.add_argument("--pool-size", type=int, default=None, help="interpreters (default: cores)")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    opts = Options(quick=args.quick, out=args.out, pool_size=args.pool_size)
    names = list(BENCHMARKS) if args.name == "all" else [args.name]
    for name in names:
        began = time.perf_counter()
        print(f"bench {name}: running{' (quick)' if opts.quick else ''} ...", flush=True)
        result = BENCHMARKS[name](opts)
        path = write_result(name, result, opts.out)
        print(f"bench {name}: {time.perf_counter() - began:.1f}s -> {path}", flush=True)
        for item in result.get("bars", []):
            met = item.get("met")
            mark = "    " if met is None else ("ok  " if met else "MISS")
            print(f"  {mark} {item['bar']}: {item['measured']}", flush=True)
    print(f"summary: {opts.out / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
