"""Build of memifx: the Cython data path (memifx/*.pyx) against csrc/ headers.

``MEMIFX_ASAN=1`` builds the extensions with AddressSanitizer (compile and
link flags).  CPython itself is not instrumented, so the ASan runtime must
be loaded first, and CPython's deliberate leaks at exit are not reports:

    MEMIFX_ASAN=1 .venv/bin/python setup.py -q build_ext --inplace --force
    LD_PRELOAD=$(gcc -print-file-name=libasan.so) \
    ASAN_OPTIONS=detect_leaks=0,abort_on_error=1 \
        .venv/bin/python -m pytest -q tests/test_hostile.py tests/test_fuzz.py

Rebuild without the variable (``--force``) to get the normal extensions back.
"""
import os

from setuptools import Extension, setup
from Cython.Build import cythonize

SANITIZE = ["-fsanitize=address", "-fno-omit-frame-pointer"] \
    if os.environ.get("MEMIFX_ASAN") == "1" else []

extensions = [
    Extension(
        "memifx.%s" % name,
        ["memifx/%s.pyx" % name],
        include_dirs=["csrc"],
        extra_compile_args=["-O3", "-Wno-unused-function", "-Wno-sign-compare"] + SANITIZE,
        extra_link_args=SANITIZE,
    )
    for name in ("guard", "memory", "ring", "counted", "xconnect", "traffic", "fib", "neighbor", "ip4", "slots",
                 "fdwait")
]

setup(
    packages=["memifx", "memifx.cli", "memifx.agent", "memifx.nodes", "memifx.workers",
              "memifx.runtime"],
    package_dir={"memifx": "memifx", "memifx.cli": "cli"},
    package_data={"memifx": ["*.pxd", "*.pyx", "*.pyi", "py.typed"]},
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": 3},
        include_path=["."],
    ),
)
