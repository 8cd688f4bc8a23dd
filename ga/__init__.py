"""The GA, its search space, the training kernel and the sub-interpreter pool.

The pool is built on CPython 3.13's private `_interpreters` module, and it is
tested on 3.13.0 and the newest 3.13 patch release only: other versions are
refused with a clear error instead of run untested.
"""

import sys

# [floor, ceiling) of the CPython versions the pool is tested on.
SUPPORTED_PYTHON: tuple[tuple[int, int], tuple[int, int]] = ((3, 13), (3, 14))


class UnsupportedPythonError(RuntimeError):
    """The running interpreter is outside `SUPPORTED_PYTHON`."""


def check_python(version: tuple[int, ...] = tuple(sys.version_info[:3])) -> None:
    """Raise `UnsupportedPythonError` unless `version` is a supported CPython."""
    floor, ceiling = SUPPORTED_PYTHON
    implementation = sys.implementation.name
    if implementation != "cpython" or not floor <= tuple(version[:2]) < ceiling:
        found = ".".join(str(part) for part in version)
        raise UnsupportedPythonError(
            f"thunderhelm needs CPython {floor[0]}.{floor[1]}.x (found {implementation} "
            f"{found}): its interpreter pool is built on CPython 3.13's _interpreters module"
        )
