"""Build the Cython kernels in cy/ as the extension module dse._kernels."""
import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

ext = Extension(
    "dse._kernels",
    sources=["cy/kernels.pyx"],
    include_dirs=[np.get_include(), "cy"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    extra_compile_args=["-O3", "-fno-strict-aliasing"],
)

setup(ext_modules=cythonize([ext], language_level=3, compiler_directives={"boundscheck": False, "wraparound": False}))
