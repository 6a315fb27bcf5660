"""Build the C++ extensions (CPU tile rasterizer, CPU skinning): C++17, OpenMP, tuned for the building machine."""

import os
import sys

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

# The extension is built on the machine that runs it (pip install -e .), so -march=native is safe
# and buys AVX2/AVX-512. STREAMER_PORTABLE=1 builds a generic x86-64-v2 binary instead.
arch = ["-march=x86-64-v2"] if os.environ.get("STREAMER_PORTABLE") else ["-march=native"]
# -fno-math-errno / -fno-trapping-math let loops with sqrt/ceil vectorise; neither changes results
# (no -ffast-math: the float semantics of the tests' tolerances stay IEEE).
extra_compile = (
    ["-O3", "-fopenmp", "-ffp-contract=fast", "-fno-math-errno", "-fno-trapping-math", *arch]
    if sys.platform != "win32"
    else ["/O2", "/openmp"]
)
extra_link = ["-fopenmp"] if sys.platform != "win32" else []

setup(
    ext_modules=[
        Pybind11Extension(
            "streamer.avatar._lbs_cpu",
            ["streamer/avatar/csrc/lbs_cpu.cpp"],
            cxx_std=17,
            extra_compile_args=extra_compile,
            extra_link_args=extra_link,
        ),
        Pybind11Extension(
            "streamer.render._cpu_raster",
            ["streamer/render/csrc/cpu_raster.cpp"],
            cxx_std=17,
            extra_compile_args=extra_compile,
            extra_link_args=extra_link,
        )
    ],
    cmdclass={"build_ext": build_ext},
)
