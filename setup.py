"""The build steps of tinygrad_seq that pyproject.toml cannot state (its metadata lives there).

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


# Float flags of every kernel module: IEEE semantics kept (NaN and inf propagate as in the NumPy
# reference, -inf masks give exact zeros), so no -ffast-math / -ffinite-math-only.  The speed
# they gave comes from flags that change no result: no errno from libm (-fno-math-errno, which
# lets GCC inline sqrt and vectorise the loops), no floating-point traps (-fno-trapping-math),
# and a*b+c contracted into one FMA (-ffp-contract=fast, which only adds precision).  glibc's
# vector exp/erf/tanh (libmvec) are announced by _fastmath.h instead of by -ffast-math.
IEEE_FLOAT_FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=fast"]

# The instruction-set variants each kernel module is built in; kernels/cython/__init__.py picks
# the best one the running CPU supports (as NumPy and OpenBLAS dispatch at run time), so a wheel
# or an in-place build made on an AVX-512 machine still runs on an AVX2-only or older CPU.
# Each variant is a folder next to the wrappers; the names are x86-64 psABI micro-architecture
# levels (v2: SSE4.2/POPCNT, v3: AVX2/FMA/BMI2, v4: AVX-512 F/BW/CD/DQ/VL).
X86_VARIANTS = {
    "x86_64_v2": ["-march=x86-64-v2", "-mtune=generic"],
    "x86_64_v3": ["-march=x86-64-v3", "-mtune=generic"],
    "x86_64_v4": ["-march=x86-64-v4", "-mtune=generic"],
}
PORTABLE_VARIANT = {"portable": []}   # any other machine: the compiler's default target
# TGS_NATIVE_BUILD=1 at build time: one variant for exactly this CPU (-march=native), which the
# loader then prefers; such a build is not portable to another CPU.
NATIVE_VARIANT = {"native": ["-march=native"]}


def build_variants():
    """{variant folder name: its target flags} for this build."""
    if os.environ.get("TGS_NATIVE_BUILD", "").strip() not in ("", "0"):
        return NATIVE_VARIANT
    return X86_VARIANTS if _is_x86() else PORTABLE_VARIANT


OPENMP = "-fopenmp"  # GCC/clang spelling; dropped again when the compiler rejects it


def cython_extensions():
    """Per kernels/cython/*.pyx one extension per build variant (kernels/cython/<variant>/_x.so),
    all compiled from the same translated C; none when Cython or NumPy is missing."""
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
    shared = sorted(glob.glob(os.path.join("kernels", "cython", "*.pxi"))
                    + glob.glob(os.path.join("kernels", "cython", "*.h")))
    modules = []
    for src in sources:
        name = os.path.splitext(os.path.basename(src))[0]
        modules.append(Extension(
            "tinygrad_seq.kernels.cython." + name,
            [src],
            depends=shared,  # rebuild when the shared include changes; ships it in the sdist
            include_dirs=[numpy.get_include(), os.path.join("kernels", "cython")],
            extra_compile_args=IEEE_FLOAT_FLAGS + openmp,
            extra_link_args=openmp,
            # libm's linker script pulls in libmvec, which the vectorised exp/erf/tanh loops call
            libraries=[] if sys.platform in ("darwin", "win32") else ["m"],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        ))
    try:
        # A Cython error must leave the package installable, as a failed C build does.
        translated = cythonize(
            modules,
            compiler_directives={"language_level": 3, "boundscheck": False, "wraparound": False,
                                 "cdivision": True, "initializedcheck": False},
            quiet=True,
            nthreads=_cores() if _cores() > 1 else 0,   # one module translated per core
        )
    except Exception as exc:  # pragma: no cover - depends on the build machine
        print(f"tinygrad_seq: Cython kernels not translated ({type(exc).__name__}: {exc}); "
              "the cython backend will be unavailable", file=sys.stderr)
        return []
    # The C of `_x` defines PyInit__x and names itself tinygrad_seq.kernels.cython._x, so each
    # variant's copy lives in its own folder under that file name and the loader imports it
    # under the module's own name.  Each variant compiles a one-line C file of its own that
    # includes the translated one, so the variants' object files never share a path and
    # `build_ext -j` can compile them side by side.
    extensions = []
    for ext in translated:
        package, module = ext.name.rsplit(".", 1)
        (translated_c,) = ext.sources
        for variant, flags in build_variants().items():
            # the in-place (editable) build copies the module into this folder, which must exist
            os.makedirs(os.path.join("kernels", "cython", variant), exist_ok=True)
            stub = os.path.join("build", "tgs_variants", variant, module + ".c")
            os.makedirs(os.path.dirname(stub), exist_ok=True)
            line = f'#include "{os.path.abspath(translated_c)}"\n'
            if not os.path.exists(stub) or open(stub).read() != line:
                with open(stub, "w") as f:
                    f.write(line)
            copy = Extension(f"{package}.{variant}.{module}", [stub],
                             depends=[translated_c] + list(ext.depends),
                             include_dirs=list(ext.include_dirs),
                             extra_compile_args=ext.extra_compile_args + flags,
                             extra_link_args=list(ext.extra_link_args),
                             libraries=list(ext.libraries), define_macros=list(ext.define_macros))
            copy.tgs_variant = variant
            extensions.append(copy)
    return extensions


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


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
    """Compile what compiles; a failed kernel build must never fail the install.  The variants
    compile in parallel, one per core (the build is ~4 modules x 3 variants)."""

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:
            self.parallel = _cores() if _cores() > 1 else None

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


# The project's metadata, dependencies and entry point are in pyproject.toml (PEP 621); what
# stays here is what cannot be static: the package folders mapped into tinygrad_seq and the
# optional Cython extensions.
setup(
    packages=packages,
    package_dir=package_dir,
    ext_modules=cython_extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
)
