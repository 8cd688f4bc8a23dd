"""Make the OpenBLAS library of the kernel resolvable before any interpreter loads it.

``thunderhelm.ga.training._kernel`` links against ``libscipy_openblas.so`` from the
``scipy-openblas32`` wheel and finds it through its run-time search path
(next to ``ga/`` in site-packages, or the environment it was installed into).
For layouts those paths miss (a relocated environment, a tree built with
``build_ext --inplace`` elsewhere), the main interpreter calls
:func:`preload` once before creating pool interpreters: the library is then
already in the process under its soname and every later load of the kernel,
in any interpreter, binds to it. Stdlib only; call it from the main
interpreter (ctypes is not needed inside the pool).
"""

import ctypes
import importlib.util
import os

_handle: ctypes.CDLL | None = None


def library_path() -> str:
    """Absolute path of the installed libscipy_openblas shared library."""
    spec = importlib.util.find_spec("scipy_openblas32")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the scipy-openblas32 package is not installed")
    lib_dir = os.path.join(next(iter(spec.submodule_search_locations)), "lib")
    for name in sorted(os.listdir(lib_dir)):
        if name.startswith("libscipy_openblas") and ".so" in name:
            return os.path.join(lib_dir, name)
    raise ImportError(f"no libscipy_openblas shared library in {lib_dir}")


def preload(threads: int = 1) -> str:
    """Load OpenBLAS process-wide (RTLD_GLOBAL) and pin it to ``threads`` threads.

    One thread is right for the pool, which already runs one interpreter per
    core. Idempotent; returns the library path.
    """
    global _handle
    path = library_path()
    if _handle is None:
        _handle = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    _handle.scipy_openblas_set_num_threads(ctypes.c_int(threads))
    return path
