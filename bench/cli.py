"""`thunderhelm bench NAME|all [--quick] [--out DIR]`: run benchmarks, write their results.

A plain dispatcher: `BENCHMARKS` names each benchmark's `run(Options) -> dict`
function, and every result goes through `bench.report.write_result`. Adding a
benchmark is one module with a `run` function and one line here.
"""

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from bench import (
    chaos,
    data,
    dlq,
    faults,
    kernel,
    pool,
    quality,
    scale,
    soak,
    stream,
    tracing,
    warm_start,
)
from bench.common import Options
from bench.report import DEFAULT_OUT, write_result

DESCRIPTION = "Run thunderhelm's benchmarks and write their results."

Runner = Callable[[Options], dict[str, Any]]

# Runs in this order for `all`.
BENCHMARKS: dict[str, Runner] = {
    "pool": pool.run,
    "kernel": kernel.run,
    "quality": quality.run,
    "warm_start": warm_start.run,
    "data": data.run,
    "faults": faults.run,
    "chaos": chaos.run,
    "dlq": dlq.run,
    "tracing": tracing.run,
    "soak": soak.run,
    "stream": stream.run,
    "scale": scale.run,
}

app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)


@app.command(help=DESCRIPTION)
def bench(
    name: Annotated[str, typer.Argument(help=f"benchmark: {', '.join([*BENCHMARKS, 'all'])}")],
    quick: Annotated[
        bool, typer.Option("--quick", help="tiny settings: checks the code paths, measures nothing")
    ] = False,
    out: Annotated[
        Path, typer.Option(help="folder for results/NAME.json and RESULTS.md")
    ] = DEFAULT_OUT,
    pool_size: Annotated[
        int | None, typer.Option(min=1, help="interpreters (default: cores)")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="one JSON object per benchmark on stdout")
    ] = False,
) -> None:
    if name != "all" and name not in BENCHMARKS:
        raise typer.BadParameter(f"one of {', '.join([*BENCHMARKS, 'all'])}", param_hint="NAME")
    opts = Options(quick=quick, out=out, pool_size=pool_size)
    names = list(BENCHMARKS) if name == "all" else [name]
    # With --json, stdout carries only the JSON lines; the progress goes to stderr.
    say = sys.stderr if as_json else sys.stdout
    for one in names:
        began = time.perf_counter()
        print(f"bench {one}: running{' (quick)' if opts.quick else ''} ...", file=say, flush=True)
        result = BENCHMARKS[one](opts)
        path = write_result(one, result, opts.out)
        seconds = time.perf_counter() - began
        if as_json:
            line = {"benchmark": one, "seconds": round(seconds, 3), "result": str(path)}
            print(json.dumps({**line, "bars": result.get("bars", [])}), flush=True)
            continue
        print(f"bench {one}: {seconds:.1f}s -> {path}", flush=True)
        for item in result.get("bars", []):
            met = item.get("met")
            mark = "    " if met is None else ("ok  " if met else "MISS")
            print(f"  {mark} {item['bar']}: {item['measured']}", flush=True)
    print(f"summary: {opts.out / 'RESULTS.md'}", file=say)


def main(argv: Sequence[str]) -> int:
    """`python -m bench ARGV...`; returns the exit code."""
    try:
        app(args=list(argv), prog_name="thunderhelm bench")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
