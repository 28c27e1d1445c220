"""Build configuration that pyproject.toml cannot express: the Cython extension and the search_spaces/ mapping.

* cy/kernels.pyx -> extension module dse._kernels (SIMD kernels with runtime ISA dispatch, no -march=native; OpenMP).
* top-level search_spaces/ -> package dse.search_spaces (bundled budget TOML files, read with importlib.resources).
"""
import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

ext = Extension(
    "dse._kernels",
    sources=["cy/kernels.pyx"],
    depends=["cy/lut_kernel.h", "cy/int_gemm.h", "cy/glue.h", "cy/float_gemm.h"],
    include_dirs=[np.get_include(), "cy"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    # no -march: ISA picked at run time. OpenMP (libgomp ships with gcc) splits kernel loops over threads. -g0 drops
    # Python's -g: the same machine code (.text and .rodata compared) in ~3/4 of the compile time of this one unit.
    extra_compile_args=["-O3", "-fno-strict-aliasing", "-ffp-contract=off", "-fopenmp", "-g0"],
    extra_link_args=["-fopenmp"],
)

setup(
    packages=find_packages(include=["dse", "dse.*"]) + ["dse.search_spaces"],
    package_dir={"dse.search_spaces": "search_spaces"},
    package_data={"dse": ["data/*.npz", "data/*.onnx", "data/*.json"], "dse.search_spaces": ["*.toml"]},
    ext_modules=cythonize([ext], language_level=3,
                          compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True}),
)
