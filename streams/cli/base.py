"""What every `thunderhelm` command shares: settings, output streams, error handling.

`ThunderhelmGroup` is the root command group; it runs each command inside
the one handler that maps expected failures to a line on stderr and an exit
code (`exits.py`). `CliState` travels in the typer context (`ctx.obj`) so
tests can hand a command its settings and output stream; by default they come
from the environment and stdout. Output is rich (tables, trees, live
progress) only on a terminal and never with `--json`: anything else gets the
plain lines scripts read.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, TextIO

import typer
from typer.core import TyperGroup

from thunderhelm.streams.cli.exits import CliError, ExitCode, classify
from thunderhelm.streams.config.settings import Settings

# What a shell reports for a pipe writer killed by SIGPIPE.
SIGPIPE_EXIT = 128 + signal.SIGPIPE


@dataclass
class CliState:
    """Settings and output stream of one invocation (injectable for tests)."""

    settings_given: Settings | None = None
    out_given: TextIO | None = None
    command: list[str] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        if self.settings_given is None:
            try:
                self.settings_given = Settings.from_env()
            except ValueError as exc:  # a variable holds a value that cannot be used
                raise CliError(ExitCode.USAGE, f"bad setting: {exc}") from None
        return self.settings_given

    @property
    def out(self) -> TextIO:
        # Resolved per call: test runners swap sys.stdout after import.
        return self.out_given or sys.stdout

    def rich(self, as_json: bool = False) -> bool:
        """Whether to draw for a person: a terminal on `out`, and no --json."""
        return not as_json and self.out.isatty()

    def console(self) -> Any:
        from rich.console import Console

        return Console(file=self.out)


def state(ctx: typer.Context) -> CliState:
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def emit(ctx: typer.Context, line: str) -> None:
    state(ctx).out.write(line + "\n")
    state(ctx).out.flush()


def emit_json(ctx: typer.Context, value: Any, *, indent: int | None = None) -> None:
    emit(ctx, json.dumps(value, indent=indent))


def answer(ctx: typer.Context, as_json: bool, data: Any, line: str) -> None:
    """A command's one answer: `data` as a JSON line with --json, else `line`."""
    if as_json:
        emit_json(ctx, data)
    else:
        emit(ctx, line)


def note(line: str) -> None:
    """A line for the person, not for the script: stderr."""
    print(line, file=sys.stderr, flush=True)


def finish(code: int) -> None:
    """End the command with `code` (typer ignores a command's return value)."""
    if code != 0:
        raise typer.Exit(code)


def fail(code: ExitCode, message: str) -> NoReturn:
    raise CliError(code, message)


class ThunderhelmGroup(TyperGroup):
    """The root group: remembers which command runs and handles its expected failures."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, cmd, rest = super().resolve_command(ctx, args)
        if name:
            state(ctx).command.append(name)
        return name, cmd, rest

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort):
            raise
        except BrokenPipeError:
            # The reader of stdout left (`| head`): stop quietly, as a killed
            # pipe writer does, and keep Python from writing to it at exit.
            # (The Kafka client reports a broken broker socket as its own error.)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(SIGPIPE_EXIT) from None
        except Exception as exc:
            cli = state(ctx)
            bootstrap = cli.settings_given.bootstrap_servers if cli.settings_given else None
            known = classify(exc, bootstrap)
            if known is None or ctx.parent is not None:
                raise  # a bug: keep the traceback (nested groups leave it to the root)
            name = " ".join(["thunderhelm", *cli.command])
            print(f"{name}: {known.message}", file=sys.stderr, flush=True)
            raise typer.Exit(int(known.code)) from None


def options_of(
    build: Callable[..., Any], name: str
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """A command decorator: `build`'s parameters become options in place of `name`.

    Typer reads options from a signature and has no way to group them, so
    commands that share options declare them once, on `build`; the command is
    called with what `build` makes of them as `name`.
    """
    options = inspect.signature(build, eval_str=True).parameters

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(command, eval_str=True)
        params: list[inspect.Parameter] = []
        for param in signature.parameters.values():
            if param.name == name:
                params += [option.replace(kind=param.kind) for option in options.values()]
            else:
                params.append(param)

        @functools.wraps(command)
        def with_options(*args: Any, **kwargs: Any) -> None:
            chosen = {option: kwargs.pop(option) for option in options}
            command(*args, **{name: build(**chosen)}, **kwargs)

        with_options.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        return with_options

    return decorate
