"""Cython kernels: kernels/cython/_*.pyx, compiled by setup.py, behind thin Python wrappers
(recurrence.py, conv.py, softmax.py, activation.py, optim.py, attention.py, normalization.py) that check their arguments with the
reference's own checks (the C loops run without bounds checks, so a wrong shape must never
reach them).

The OpenMP regions use every core unless TGS_CYTHON_THREADS (or `set_num_threads`) says
otherwise (why that pays, and what it needs: _common.pxi).

Run-time dispatch: setup.py builds every module once per instruction-set variant, each in a
folder of its own (x86_64_v2, x86_64_v3 = AVX2+FMA, x86_64_v4 = AVX-512; `portable` off x86;
`native` after a TGS_NATIVE_BUILD=1 build).  Importing this package picks the best variant the
running CPU supports (NumPy's own run-time CPU detection, cpuid + xgetbv, says which) and puts
its folder first on this package's search path, so `from . import _conv` loads that build; a
module missing from it comes from the next lower level.  TGS_CYTHON_VARIANT=<name> forces a
variant (the tests use it), unless this CPU cannot run it.  `variant()` says which one runs and
why; `tgs backends` prints it.

The compiled modules are optional: without a C compiler at install time they are simply
missing, `unavailable_reason()` says so and the registry falls back to another backend.
"""
import glob
import importlib
import os
import sys

COMPILED = ("_recurrence", "_conv", "_softmax", "_activation", "_optim", "_attention", "_normalization")
# Idle threads of the kernels' OpenMP team spin this many times before they sleep (GNU OpenMP's
# default, 300,000 pause instructions, is milliseconds on AMD Zen: after every kernel and team GEMM
# the team's idle thread held a core the rest of the step needed; numpy-first transformer step
# on a loaded 2-core EPYC: 116-411 ms with the default, 79-170 ms with this).
TEAM_SPINCOUNT = "10000"


def _load_openmp_with_brief_spinning():
    """Load GNU OpenMP for the kernels with GOMP_SPINCOUNT=TEAM_SPINCOUNT, which it reads only
    as it loads, and take the variable out of the environment again: the setting belongs to the
    kernels' team, and nothing else (another library, a child process) sees a changed environment.
    Left alone when OpenMP is already loaded or the user chose a spin count or wait policy."""
    if not sys.platform.startswith("linux") or {"GOMP_SPINCOUNT", "OMP_WAIT_POLICY"} & set(os.environ):
        return
    try:
        with open("/proc/self/maps") as maps:
            # any libgomp.so.1 (PyTorch ships one of that name): the modules would share it
            if any(os.path.basename(line.rstrip()).startswith("libgomp.so.1") for line in maps):
                return
        import ctypes
        os.environ["GOMP_SPINCOUNT"] = TEAM_SPINCOUNT
        try:
            ctypes.CDLL("libgomp.so.1")     # the library the compiled modules link (their DT_NEEDED)
        finally:
            del os.environ["GOMP_SPINCOUNT"]
    except OSError:       # no /proc, or no GNU OpenMP: the modules load whatever they link
        pass


_load_openmp_with_brief_spinning()

# Best first.  What each x86-64 level needs beyond the one below it (NumPy's feature names);
# NumPy 2 also reports the levels themselves (X86_V2..X86_V4), which then must agree.
X86_LEVELS = (
    ("x86_64_v4", ("AVX512F", "AVX512BW", "AVX512CD", "AVX512DQ", "AVX512VL")),
    ("x86_64_v3", ("AVX", "AVX2", "FMA3", "F16C", "BMI", "BMI2")),
    ("x86_64_v2", ("SSSE3", "SSE41", "SSE42", "POPCNT")),
)
LEVEL_NAMES = {"x86_64_v4": "AVX-512 (F/BW/CD/DQ/VL)", "x86_64_v3": "AVX2+FMA",
               "x86_64_v2": "SSE4.2+POPCNT"}
OTHER_VARIANTS = ("native", "portable")
FORCE_VARIANT = "TGS_CYTHON_VARIANT"

_HERE = os.path.dirname(os.path.abspath(__file__))


def built_variants():
    """The variant folders that hold at least one compiled module."""
    found = []
    for name in OTHER_VARIANTS + tuple(level for level, _ in X86_LEVELS):
        folder = os.path.join(_HERE, name)
        if any(glob.glob(os.path.join(folder, f"{module}.*")) for module in COMPILED):
            found.append(name)
    return found


def _cpu_features():
    """NumPy's run-time CPU feature table ({} where it has none)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # NumPy 1.x
        try:
            from numpy.core._multiarray_umath import __cpu_features__
        except ImportError:
            return {}
    return dict(__cpu_features__)


def supported_levels(features=None):
    """The x86-64 levels this CPU (and its OS) can run, best first; each needs the ones below."""
    features = _cpu_features() if features is None else features
    supported = []
    for level, needs in reversed(X86_LEVELS):
        numpy_says = features.get(level.upper().replace("_64_", "_"), True)   # X86_V3 ...
        if not (numpy_says and all(features.get(f, False) for f in needs)):
            break
        supported.append(level)
    return supported[::-1]


def _choose(built, supported, forced):
    """(variant, reason) from the built variants, the levels this CPU runs and the forced name."""
    runnable = [v for v in built if v in supported or v in OTHER_VARIANTS]
    best = next((level for level, _ in X86_LEVELS if level in runnable), None)
    note = ""
    if forced:
        if forced in runnable:
            return forced, f"forced by {FORCE_VARIANT}={forced}"
        why = "not built" if forced not in built else "this CPU lacks its instructions"
        note = f"; {FORCE_VARIANT}={forced} ignored ({why})"
    if "native" in built:
        return "native", "built for the build machine's CPU (TGS_NATIVE_BUILD=1)" + note
    if best is not None:
        return best, (f"the best this CPU supports: {LEVEL_NAMES[best]}; "
                      f"built: {', '.join(v for v in built if v in LEVEL_NAMES)}" + note)
    if "portable" in built:
        return "portable", "the one build for this machine's architecture" + note
    return None, "no variant built (a build from before run-time dispatch, if any)" + note


def _dispatch():
    built = built_variants()
    chosen, reason = _choose(built, supported_levels(), os.environ.get(FORCE_VARIANT, "").strip())
    if chosen is not None:
        # The chosen folder first, then the lower levels this CPU also runs (a module whose
        # build failed in one variant still loads from another).
        order = [chosen] + [level for level, _ in X86_LEVELS
                            if level in built and level in supported_levels() and level != chosen
                            and _rank(level) > _rank(chosen)]
        for name in reversed(order):
            __path__.insert(0, os.path.join(_HERE, name))
    return chosen, reason


def _rank(variant):
    """0 for the best x86-64 level, larger for lower ones; -1 for native/portable."""
    names = [level for level, _ in X86_LEVELS]
    return names.index(variant) if variant in names else -1


_VARIANT = _dispatch()


def variant():
    """(name, reason): the compiled variant this process runs (name None when none is built)."""
    return _VARIANT


def unavailable_reason():
    """None when every compiled module imports, else a one-line reason (compiles nothing)."""
    for name in COMPILED:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except Exception as exc:  # ImportError; ValueError when built against another NumPy ABI
            detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
            return (f"not compiled: run `pip install -e .` on a machine with a C compiler "
                    f"({name}: {detail})")
    return None


def set_num_threads(n):
    """Threads for every compiled module's OpenMP regions (1 = serial; default: all cores)."""
    for name in COMPILED:
        importlib.import_module(f"{__name__}.{name}").set_num_threads(n)
    try:                              # the matmul family's team (optional: matmul.py)
        importlib.import_module(f"{__name__}.matmul").set_num_threads(n)
    except ImportError:
        pass
