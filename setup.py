"""Build of memifx: the Cython data path (memifx/*.pyx) against csrc/ headers."""
from setuptools import Extension, setup
from Cython.Build import cythonize

extensions = [
    Extension(
        "memifx.%s" % name,
        ["memifx/%s.pyx" % name],
        include_dirs=["csrc"],
        extra_compile_args=["-O3", "-Wno-unused-function", "-Wno-sign-compare"],
    )
    for name in ("memory", "ring", "xconnect", "traffic", "fib", "neighbor", "ip4", "slots",
                 "fdwait")
]

setup(
    packages=["memifx", "memifx.cli"],
    package_dir={"memifx": "memifx", "memifx.cli": "cli"},
    package_data={"memifx": ["*.pxd", "*.pyx", "*.pyi", "py.typed"]},
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": 3},
        include_path=["."],
    ),
)
