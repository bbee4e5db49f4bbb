"""Build of memifx: the Cython data path (memifx/*.pyx) against csrc/ headers.

``MEMIFX_ASAN=1`` builds the extensions with AddressSanitizer (compile and
link flags).  CPython itself is not instrumented, so the ASan runtime must
be loaded first, and CPython's deliberate leaks at exit are not reports:

    MEMIFX_ASAN=1 .venv/bin/python setup.py -q build_ext --inplace --force
    LD_PRELOAD=$(gcc -print-file-name=libasan.so) \
    ASAN_OPTIONS=detect_leaks=0,abort_on_error=1 \
        .venv/bin/python -m pytest -q tests/test_hostile.py tests/test_fuzz.py

Rebuild without the variable (``--force``) to get the normal extensions back.

The extensions compile in parallel, one job per CPU (``MEMIFX_JOBS=N`` or
``build_ext -j N`` to choose): both the Cython translation and the C compiler.

``MEMIFX_PREBUILT=1`` is for an editable install of a tree whose extensions
were already built in place (``build_ext --inplace``, as .ci/setup does): the
install then only links the tree instead of compiling everything a second
time.  It refuses to run if a compiled module is missing.

``MEMIFX_OPTIMIZE=0`` (1, 2, s; default 3) sets the C optimisation level: at
0 the extensions compile about five times faster, for a build that only has
to work (tests/test_packaging.py installs the sdist that way).
"""
import glob
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SANITIZE = ["-fsanitize=address", "-fno-omit-frame-pointer"] \
    if os.environ.get("MEMIFX_ASAN") == "1" else []
JOBS = int(os.environ.get("MEMIFX_JOBS") or os.cpu_count() or 1)
PREBUILT = os.environ.get("MEMIFX_PREBUILT") == "1"
OPTIMIZE = "-O" + os.environ.get("MEMIFX_OPTIMIZE", "3")
if OPTIMIZE not in ("-O0", "-O1", "-O2", "-O3", "-Os"):
    sys.exit("MEMIFX_OPTIMIZE must be 0, 1, 2, 3 or s")


class ParallelBuildExt(build_ext):
    """build_ext with one compiler job per CPU unless ``-j`` says otherwise."""

    def finalize_options(self):
        if self.parallel is None:
            self.parallel = JOBS
        super().finalize_options()


def prebuilt_check():
    here = os.path.dirname(os.path.abspath(__file__))
    missing = [e.name for e in extensions
               if not glob.glob(os.path.join(here, *e.name.split(".")) + ".*.so")]
    if missing:
        sys.exit("MEMIFX_PREBUILT=1, but not built in place: %s "
                 "(run: python setup.py build_ext --inplace)" % ", ".join(missing))


# memifx.traffic's loops (the checker's check_frames, check_usual and
# check_gathered; the generator's fill loops) are written once and made into
# one loop per header length, check level or payload kind by inlining them
# where each is called with those as constants; gcc's default limits for
# that module (max-inline-insns-single, inline-unit-growth) stop after a
# few, leaving loops that test them per frame (the in-place checker 10-15 %
# more instructions per frame, tests/test_cost.py).
MODULE_ARGS = {"traffic": ["--param=max-inline-insns-single=400",
                           "--param=inline-unit-growth=100"]}

extensions = [
    Extension(
        "memifx.%s" % name,
        ["memifx/%s.pyx" % name],
        include_dirs=["csrc"],
        extra_compile_args=[OPTIMIZE, "-Wno-unused-function", "-Wno-sign-compare"]
        + MODULE_ARGS.get(name, []) + SANITIZE,
        extra_link_args=SANITIZE,
    )
    for name in ("guard", "memory", "ring", "counted", "xconnect", "traffic", "stream", "table", "reclaim",
                 "fib", "routes", "neighbor", "ip4", "slots", "fdwait", "layout")
]

if PREBUILT:
    prebuilt_check()
else:
    from Cython.Build import cythonize

setup(
    packages=["memifx", "memifx.cli", "memifx.agent", "memifx.nodes", "memifx.workers",
              "memifx.stats", "memifx.runtime"],
    package_dir={"memifx": "memifx", "memifx.cli": "cli"},
    package_data={"memifx": ["*.pxd", "*.pyx", "*.pyi", "py.typed"]},
    ext_modules=[] if PREBUILT else cythonize(
        extensions,
        compiler_directives={"language_level": 3},
        include_path=["."],
        nthreads=JOBS,
    ),
    cmdclass={"build_ext": ParallelBuildExt},
)
