"""Build the optional Cython fast-scan core.

The package works without it (pure-Python fallback).  A failed build is only a
warning unless ``NVFS_REQUIRE_EXTENSION=1``, which CI sets so that the fallback
never hides a broken build.  No ``-march=native``: CPU-specific kernels are
chosen at run time.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

REQUIRE = os.environ.get("NVFS_REQUIRE_EXTENSION") == "1"


class OptionalBuildExt(build_ext):
    """build_ext that degrades to the pure-Python path unless required."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure
            self._give_up(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._give_up(exc)

    def _give_up(self, exc):
        if REQUIRE:
            raise
        print(f"warning: nvfs_tools._fastscan not built ({exc}); using the pure-Python scan path", file=sys.stderr)


def extensions():
    if os.environ.get("NVFS_PURE_BUILD") == "1":
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        if REQUIRE:
            raise
        return []
    ext = Extension(
        "nvfs_tools._fastscan",
        ["nvfs_tools/_fastscan.pyx"],
        extra_compile_args=["-O3"],
    )
    return cythonize([ext], compiler_directives={"language_level": "3"}, quiet=True)


setup(
    ext_modules=extensions() if os.path.exists("nvfs_tools/_fastscan.pyx") else [],
    cmdclass={"build_ext": OptionalBuildExt},
)
