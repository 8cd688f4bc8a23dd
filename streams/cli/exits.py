"""The CLI's exit codes, and the one place that turns an expected failure into one.

Scripts branch on `thunderhelm`'s exit status, so each code means one thing
(docs/cli.md has the table). An expected failure -- the broker is down, a
topic is missing, a file is absent or not JSON, a wait ran out -- ends in one
line on stderr and its code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
from enum import IntEnum

from thunderhelm.streams.clients.errors import TopicMissing


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # the run failed, was cancelled or rejected; a check found a problem
    USAGE = 2  # bad options or arguments, a bad setting in the environment
    UNREACHABLE = 3  # Kafka or Jaeger does not answer, or the topics do not exist yet
    TIMEOUT = 4  # a wait the command was given ran out
    NOT_FOUND = 5  # no such run / record / trace; a missing or unreadable input file
    INTERRUPTED = 130  # Ctrl-C (the shell's code for SIGINT)


class CliError(Exception):
    """An expected failure: `message` goes to stderr as one line, `code` is the exit status."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def classify(exc: BaseException, bootstrap: str | None = None) -> CliError | None:
    """The CliError an expected exception stands for; None for anything else (a bug)."""
    from aiokafka.errors import (
        KafkaConnectionError,
        KafkaTimeoutError,
        UnknownTopicOrPartitionError,
    )

    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, KafkaConnectionError | ConnectionError):
        where = f" at {bootstrap}" if bootstrap else ""
        why = "" if isinstance(exc, KafkaConnectionError) else f" ({_one_line(exc)})"
        return CliError(
            ExitCode.UNREACHABLE,
            f"cannot reach the Kafka broker{where}{why}; set THUNDERHELM_BOOTSTRAP_SERVERS, "
            "or start one with `thunderhelm services start`",
        )
    if isinstance(exc, KafkaTimeoutError):
        return CliError(ExitCode.UNREACHABLE, f"the Kafka broker did not answer in time: {exc}")
    if isinstance(exc, UnknownTopicOrPartitionError):
        return CliError(ExitCode.UNREACHABLE, f"a topic does not exist (yet): {exc}")
    if isinstance(exc, TopicMissing):
        return CliError(ExitCode.UNREACHABLE, str(exc))
    if isinstance(exc, TimeoutError):
        return CliError(ExitCode.TIMEOUT, _one_line(exc) or "timed out")
    if isinstance(exc, json.JSONDecodeError):
        return CliError(ExitCode.NOT_FOUND, f"not valid JSON: {exc}")
    if isinstance(exc, FileNotFoundError | IsADirectoryError | NotADirectoryError):
        return CliError(ExitCode.NOT_FOUND, f"{exc.strerror}: {exc.filename}")
    if isinstance(exc, PermissionError):
        return CliError(ExitCode.NOT_FOUND, f"{exc.strerror}: {exc.filename}")
    if isinstance(exc, UnicodeDecodeError):
        return CliError(ExitCode.NOT_FOUND, f"not UTF-8 text: {exc}")
    return None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
