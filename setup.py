"""Build of the compiled training kernel ``thunderhelm.ga.training._kernel``.

Everything else about the distribution lives in pyproject.toml; this file only
exists because the Cython extension needs computed build settings: the
OpenBLAS headers and library of the ``scipy-openblas32`` wheel, the
sub-interpreter directives, and run-time search paths for the library.
"""

import os
import sys
import sysconfig
from pathlib import Path

import scipy_openblas32
from Cython.Build import cythonize
from setuptools import Extension, setup


def _runtime_rpaths() -> list[str]:
    """Where libscipy_openblas is looked for when ``thunderhelm.ga.training._kernel`` is loaded.

    * ``$ORIGIN/../../../scipy_openblas32/lib``: a regular install puts
      ``thunderhelm/`` and ``scipy_openblas32/`` side by side in site-packages.
    * the target environment's site-packages: an editable install leaves the
      module in the source tree, and under build isolation the build-time copy
      of the wheel is deleted afterwards, so point at the environment the
      project is installed into (``sysconfig`` still describes it).
    * the build-time copy itself, only when it lives in that environment.
    ``thunderhelm.ga.training.blas.preload()`` covers any layout these miss.
    """
    paths = ["$ORIGIN/../../../scipy_openblas32/lib"]
    for key in ("purelib", "platlib"):
        candidate = os.path.join(sysconfig.get_path(key), "scipy_openblas32", "lib")
        if os.path.isdir(candidate) and candidate not in paths:
            paths.append(candidate)
    build_lib = scipy_openblas32.get_lib_dir()
    prefix = sys.prefix
    if prefix and build_lib.startswith(prefix) and build_lib not in paths:
        paths.append(build_lib)
    return paths


# The repository keeps the required top-level folders; they install as
# subpackages of the one top-level package `thunderhelm`.
LAYERS = ("streams", "ga", "schemas")
DATA_FOLDERS = ("streams/dashboard/static",)


def _packages() -> dict[str, str]:
    """Every package of the distribution, mapped to its folder."""
    mapping = {"thunderhelm": "thunderhelm"}
    for layer in LAYERS:
        for init in sorted(Path(layer).rglob("__init__.py")):
            folder = init.parent.as_posix()
            mapping["thunderhelm." + folder.replace("/", ".")] = folder
    # Folders of data files (no __init__.py) are listed too: setuptools warns,
    # a screen per folder, about package data outside the `packages` it knows.
    for folder in DATA_FOLDERS:
        mapping["thunderhelm." + folder.replace("/", ".")] = folder
    return mapping


kernel = Extension(
    "thunderhelm.ga.training._kernel",
    sources=["ga/training/_kernel.pyx"],
    include_dirs=[scipy_openblas32.get_include_dir()],
    library_dirs=[scipy_openblas32.get_lib_dir()],
    libraries=[scipy_openblas32.get_library()],
    # Module state is what lets the own_gil module load in several interpreters;
    # type specs make `Net` a heap type per interpreter. Without them Cython
    # emits one static PyTypeObject for the whole process, whose __dict__
    # descriptors interpreters with their own GILs refcount without a common
    # lock: the worker died with SIGSEGV after some hundreds of runs.
    define_macros=[("CYTHON_USE_MODULE_STATE", "1"), ("CYTHON_USE_TYPE_SPECS", "1")],
    # No errno from sqrtf etc. lets -O3 vectorise the element-wise loops.
    extra_compile_args=["-O3", "-fno-math-errno"],
    extra_link_args=[f"-Wl,-rpath,{path}" for path in _runtime_rpaths()],
)

setup(
    packages=list(_packages()),
    package_dir=_packages(),
    ext_modules=cythonize(
        [kernel],
        compiler_directives={
            "language_level": 3,
            "subinterpreters_compatible": "own_gil",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            # The generated pickle support keeps process-global state that a
            # second interpreter importing the module frees (double free).
            "auto_pickle": False,
            # Likewise binding (CyFunction) methods of a cdef class: with them a
            # second interpreter's import aborts with "free(): invalid pointer".
            "binding": False,
        },
    ),
)
