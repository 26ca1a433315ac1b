"""Packaging for tinygrad_seq.

`kernels/` and `cli/` sit at the top of the repository but install as
`tinygrad_seq.kernels` and `tinygrad_seq.cli`.  The Cython kernels are optional:
when there is no compiler, or the build fails, the package still installs and
`tgs backends` reports why the `cython` backend is missing.
"""
import glob
import os
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
MAPPED = {"tinygrad_seq.kernels": "kernels", "tinygrad_seq.cli": "cli"}


def subpackages(root, dotted):
    """Every folder with an __init__.py below `root`, as dotted package names."""
    found = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(HERE, root)):
        dirnames[:] = [d for d in dirnames if not d.startswith((".", "__"))]
        if "__init__.py" in filenames:
            rel = os.path.relpath(dirpath, os.path.join(HERE, root))
            found.append(dotted if rel == "." else dotted + "." + rel.replace(os.sep, "."))
    return found


packages = subpackages("tinygrad_seq", "tinygrad_seq")
package_dir = {"tinygrad_seq": "tinygrad_seq"}
for dotted, folder in MAPPED.items():
    packages += subpackages(folder, dotted)
    package_dir[dotted] = folder


# Per-module float flags. -ffast-math lets GCC vectorise exp/tanh through glibc's libmvec and
# reassociate sums. The softmax and pooling keep IEEE inf/NaN (-fno-finite-math-only): a
# masked or -inf logit must give exactly 0, a fully masked row all zeros, and a NaN must win
# a max-pool window as in PyTorch; under finite-math-only GCC may fold those tests away.
IEEE_INF_NAN = ["-ffast-math", "-fno-finite-math-only"]
CYTHON_FAST_MATH = {"_softmax": IEEE_INF_NAN, "_conv": IEEE_INF_NAN}


OPENMP = "-fopenmp"  # GCC/clang spelling; dropped again when the compiler rejects it


def cython_extensions():
    """One extension per kernels/cython/*.pyx; none when Cython or NumPy is missing."""
    sources = sorted(glob.glob(os.path.join("kernels", "cython", "*.pyx")))
    if not sources:
        return []
    try:
        import numpy
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError as exc:  # pragma: no cover - depends on the build machine
        print(f"tinygrad_seq: skipping Cython kernels ({exc})", file=sys.stderr)
        return []
    openmp = [] if sys.platform in ("darwin", "win32") else [OPENMP]
    native = ["-march=native"] if _is_x86() else []
    shared = sorted(glob.glob(os.path.join("kernels", "cython", "*.pxi"))
                    + glob.glob(os.path.join("kernels", "cython", "*.h")))
    extensions = []
    for src in sources:
        name = os.path.splitext(os.path.basename(src))[0]
        extensions.append(Extension(
            "tinygrad_seq.kernels.cython." + name,
            [src],
            depends=shared,  # rebuild when the shared include changes; ships it in the sdist
            include_dirs=[numpy.get_include()],
            extra_compile_args=["-O3"] + CYTHON_FAST_MATH.get(name, ["-ffast-math"]) + native + openmp,
            extra_link_args=openmp,
            # libm's linker script pulls in libmvec, which the vectorised exp/tanh loops call
            libraries=[] if sys.platform in ("darwin", "win32") else ["m"],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        ))
    try:
        # A Cython error must leave the package installable, as a failed C build does.
        return cythonize(
            extensions,
            compiler_directives={"language_level": 3, "boundscheck": False, "wraparound": False,
                                 "cdivision": True, "initializedcheck": False},
            quiet=True,
        )
    except Exception as exc:  # pragma: no cover - depends on the build machine
        print(f"tinygrad_seq: Cython kernels not translated ({type(exc).__name__}: {exc}); "
              "the cython backend will be unavailable", file=sys.stderr)
        return []


def _is_x86():
    import platform
    return platform.machine().lower() in ("x86_64", "amd64")


def _is_gcc(compiler):
    """Whether the C compiler setuptools chose is GCC (which takes GCC-only --param flags)."""
    command = getattr(compiler, "compiler_so", None)
    if not command:
        return False
    try:
        banner = subprocess.run([command[0], "--version"], capture_output=True, text=True,
                                timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "Free Software Foundation" in banner


class OptionalBuildExt(build_ext):
    """Compile what compiles; a failed kernel build must never fail the install."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # pragma: no cover - depends on the build machine
            print(f"tinygrad_seq: Cython kernels not built ({exc}); the cython backend "
                  "will be unavailable", file=sys.stderr)

    def build_extension(self, ext):
        if _is_gcc(self.compiler):
            # The fused gate loops touch 6-8 arrays; GCC gives up vectorising them when
            # proving they do not overlap needs more than 10 run-time checks (its default),
            # which made the LSTM forward 4x slower.
            ext.extra_compile_args = ext.extra_compile_args + ["--param=vect-max-version-for-alias-checks=100"]
        try:
            super().build_extension(ext)
            return
        except Exception as exc:  # pragma: no cover - depends on the build machine
            failure = exc
        if OPENMP in ext.extra_compile_args:
            # A compiler without OpenMP (Apple clang, say) still builds the kernels: Cython guards
            # its prange code with #ifdef _OPENMP, so the loops then simply run serially.
            print(f"tinygrad_seq: {ext.name} did not build with {OPENMP} ({failure}); "
                  "retrying without OpenMP", file=sys.stderr)
            ext.extra_compile_args = [a for a in ext.extra_compile_args if a != OPENMP]
            ext.extra_link_args = [a for a in ext.extra_link_args if a != OPENMP]
            try:
                super().build_extension(ext)
                return
            except Exception as exc:  # pragma: no cover - depends on the build machine
                failure = exc
        print(f"tinygrad_seq: could not build {ext.name} ({failure}); the cython backend "
              "will be unavailable", file=sys.stderr)


# numba-cuda: in recent numba releases numba.cuda (and its simulator, which the CUDA kernel tests run
# under in CI) lives in this separate package. The gpu extra adds what a real GPU needs.
# matplotlib, pillow and micrograd: the plotting, photo and micrograd-comparison tests run in CI
# instead of skipping.
TEST_EXTRAS = ["pytest>=7", "torch==2.13.0", "numba-cuda>=0.30", "matplotlib>=3.5", "pillow>=9",
               "micrograd==0.1.0", "optuna>=3.0"]
setup(
    name="tinygrad_seq",
    version="0.1.0",
    description="A readable autodiff engine for classic deep-learning architectures, "
                "with Numba, Cython and CUDA kernels for the hot loops",
    long_description=open(os.path.join(HERE, "README.md")).read() if os.path.exists(os.path.join(HERE, "README.md")) else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=packages,
    package_dir=package_dir,
    package_data={"tinygrad_seq": ["data/*.gz", "data/*.json"],
                  "tinygrad_seq.kernels.cython": ["*.pyx", "*.pxi", "*.h"]},
    ext_modules=cython_extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
    install_requires=["numpy>=1.24", "numba>=0.59", "scipy>=1.9", "cython>=3.0",
                      "click>=8.0", "scikit-learn>=1.2"],
    extras_require={
        "test": TEST_EXTRAS,
        "bench": ["torch==2.13.0", "micrograd==0.1.0"],
        "plot": ["matplotlib>=3.5", "pillow>=9"],
        "tune": ["optuna>=3.0"],
        "gpu": ["numba-cuda>=0.30", "cupy-cuda12x"],
        "dev": TEST_EXTRAS,
    },
    entry_points={"console_scripts": ["tgs=tinygrad_seq.cli.main:cli"]},
    zip_safe=False,
)
