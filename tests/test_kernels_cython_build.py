"""The Cython backend: present after `pip install -e .` on a machine with a C compiler,
explained when missing, never needed to import tinygrad_seq; its recurrence and conv kernels
equal the NumPy reference (float32 and float64, forward and backward, the reference's error
messages), and a char-LSTM trains on it as on `numpy`.  The build is portable and IEEE-safe
(no -march=native, no -ffast-math): each module is built per x86-64 level and the best level
the CPU runs is chosen at import; every variant this CPU runs is checked against the reference,
and the AVX2 one under an emulated AVX2-only CPU (qemu-x86_64 -cpu EPYC-Rome).

The softmax family is compared across every CPU backend in tests/test_softmax_backends.py.
"""
import importlib
import os
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest

import wheel_build
from kernel_checks import (POOL_CASES, assert_raises_like_reference, char_lstm_losses, check_pooling, conv_inputs,
                           lstm_xh_case)

import tinygrad_seq.kernels.cython as cython_backend

# the module, not tinygrad_seq.backend the context manager that the package re-exports
registry = importlib.import_module("tinygrad_seq.backend")

COMPILED = [f"tinygrad_seq.kernels.cython.{name}" for name in cython_backend.COMPILED]


def _is_x86():
    import platform
    return platform.machine().lower() in ("x86_64", "amd64")


def _c_compiler():
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc)


@pytest.fixture
def fresh_registry(monkeypatch):
    """The registry with its caches emptied, restored after the test."""
    monkeypatch.setattr(registry, "_reasons", {})
    monkeypatch.setattr(registry, "_modules", {})
    return registry


def test_backend_is_available_after_the_build(fresh_registry):
    if _c_compiler() is None:
        pytest.skip("no C compiler on this machine, so the Cython kernels cannot have been built")
    assert cython_backend.unavailable_reason() is None
    assert fresh_registry.unavailable_reason("cython") is None
    with fresh_registry.backend("cython"):
        for family in fresh_registry.FAMILIES:
            module = fresh_registry.kernels(family)
            assert module.__name__ == f"tinygrad_seq.kernels.cython.{family}"


@pytest.mark.parametrize("missing", COMPILED)
def test_reason_names_the_missing_module_and_the_fix(monkeypatch, fresh_registry, missing):
    monkeypatch.delitem(sys.modules, missing, raising=False)
    monkeypatch.setitem(sys.modules, missing, None)   # makes `import missing` raise ImportError
    reason = cython_backend.unavailable_reason()
    assert reason is not None and "\n" not in reason
    assert "not compiled" in reason and "pip install -e ." in reason
    assert missing.rsplit(".", 1)[1] in reason

    assert fresh_registry.unavailable_reason("cython") == reason
    with pytest.raises(fresh_registry.BackendError, match="unavailable: not compiled"):
        with fresh_registry.backend("cython"):
            fresh_registry.kernels("softmax")
    with fresh_registry.backend("auto"):
        assert fresh_registry.resolve("softmax") != "cython"   # auto falls back


def test_import_tinygrad_seq_without_the_compiled_modules():
    """A fresh interpreter in which every compiled kernel module fails to import: the package,
    `auto` and `tgs backends` (which says why cython is unavailable) all still work."""
    script = f"""
import importlib.abc, sys
class NoCompiledKernels(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in {COMPILED!r}:
            raise ImportError("simulated: no compiled module " + name)
sys.meta_path.insert(0, NoCompiledKernels())
import tinygrad_seq
from tinygrad_seq.backend import resolve, unavailable_reason
reason = unavailable_reason("cython")
assert reason and reason.startswith("not compiled"), reason
assert resolve("conv") != "cython"
from click.testing import CliRunner
from tinygrad_seq.cli.main import cli
shown = CliRunner().invoke(cli, ["backends"])
assert shown.exit_code == 0, shown.output
line = [l for l in shown.output.splitlines() if l.startswith("cython")][0]
assert "unavailable: not compiled" in line and "_recurrence" in line, line
assert "cuda" in shown.output and "auto on cpu picks" in shown.output
print("ok")
"""
    env = dict(os.environ, TGS_BACKEND="auto")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def _build_with_a_failing_compiler(tmp_path, **env_extra):
    """Run setup.py's build_ext with a compiler that records its arguments and always fails
    (as on a machine without one); (the build's result, the compile command lines)."""
    pytest.importorskip("Cython", reason="Cython is needed to run setup.py's build at all")
    calls = tmp_path / "calls.txt"
    compiler = tmp_path / "failing-cc"
    compiler.write_text(f'#!/bin/sh\necho "$*" >> {calls}\necho "no compiler here" >&2\nexit 1\n')
    compiler.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "TGS_NATIVE_BUILD"}
    env.update(CC=str(compiler), LDSHARED=str(compiler), **env_extra)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    build = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(tmp_path / "lib"),
                            "--build-temp", str(tmp_path / "tmp")],
                           cwd=root, env=env, capture_output=True, text=True, timeout=300)
    compiles = [line for line in calls.read_text().splitlines() if " -c " in f" {line} "]
    return build, compiles


@pytest.mark.skipif(sys.platform != "linux", reason="uses a shell-script compiler and Linux's -fopenmp flag")
def test_a_failing_compiler_leaves_the_build_successful_without_the_kernels(tmp_path):
    """The command still succeeds, each extension (every module in every ISA variant) is tried
    with OpenMP and again without it, nothing is built, and the log says the cython backend will
    be unavailable.  The flags keep IEEE semantics and portability: no -ffast-math, no
    -ffinite-math-only, no -march=native; each variant names its own x86-64 level."""
    build, compiles = _build_with_a_failing_compiler(tmp_path)
    assert build.returncode == 0, build.stderr
    assert not list(tmp_path.rglob("*.so")) and not list(tmp_path.rglob("*.pyd"))
    variants = ["x86_64_v2", "x86_64_v3", "x86_64_v4"] if _is_x86() else ["portable"]
    for name in cython_backend.COMPILED:
        for variant in variants:
            tries = [line for line in compiles if f"{variant}/{name}.c" in line]
            assert len(tries) == 2, tries
            assert "-fopenmp" in tries[0].split() and "-fopenmp" not in tries[1].split(), tries
            assert f"could not build tinygrad_seq.kernels.cython.{variant}.{name}" in build.stderr
            for line in tries:
                flags = line.split()
                assert not {"-ffast-math", "-ffinite-math-only", "-march=native"} & set(flags), line
                assert {"-fno-math-errno", "-fno-trapping-math"} <= set(flags), line
                if variant != "portable":
                    assert f"-march={variant.replace('_64_', '-64-')}" in flags, line
    assert "the cython backend will be unavailable" in build.stderr


@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs binutils' objdump to read the built code")
@pytest.mark.parametrize("variant, wide", [("x86_64_v4", True), ("x86_64_v3", False)])
def test_only_the_avx512_build_has_the_wide_panel_tile(variant, wide):
    """The recurrences' products use 64-byte (zmm) FMAs in the AVX-512 build, where an Intel core
    does twice the work per instruction, and never in the AVX2 build, which must run on CPUs
    without AVX-512 (_panel_gemm.h picks the tile at compile time from __AVX512F__)."""
    if variant not in cython_backend.built_variants():
        pytest.skip(f"no {variant} variant was built here")
    folder = os.path.join(os.path.dirname(cython_backend.__file__), variant)
    module = next(f for f in os.listdir(folder) if f.startswith("_recurrence."))
    code = subprocess.run(["objdump", "-d", os.path.join(folder, module)], capture_output=True,
                          text=True, check=True).stdout
    functions = {}   # name -> its instructions (objdump: "<name>:" starts each function)
    for block in code.split("\n\n"):
        head, _, body = block.partition(">:\n")
        if body:
            functions[head.rsplit("<", 1)[-1]] = body
    wide_fmas = [line for line in functions.get("tgs_wide_panel_gemm_f", "").splitlines()
                 if "vfmadd" in line and "%zmm" in line]
    narrow_fmas = [line for line in functions.get("tgs_panel_gemm_f", "").splitlines()
                   if "vfmadd" in line and "%ymm" in line]
    assert narrow_fmas, f"no 32-byte FMAs in {variant}'s narrow tile"
    assert bool(wide_fmas) == wide, f"{len(wide_fmas)} 64-byte FMAs in {variant}'s wide tile"


@pytest.mark.skipif(sys.platform != "linux", reason="uses a shell-script compiler and Linux's -fopenmp flag")
def test_native_build_is_opt_in(tmp_path):
    """TGS_NATIVE_BUILD=1 builds one `native` variant with -march=native (for this CPU only)."""
    build, compiles = _build_with_a_failing_compiler(tmp_path, TGS_NATIVE_BUILD="1")
    assert build.returncode == 0, build.stderr
    assert compiles and all("-march=native" in line.split() for line in compiles), compiles
    assert all("/native/" in line for line in compiles), compiles
    assert "-ffast-math" not in " ".join(compiles)


@pytest.mark.skipif(cython_backend.unavailable_reason() is not None,
                    reason="Cython kernels not compiled (no C compiler at install time)")
def test_openmp_threads_give_the_serial_results():
    """The thread count must not change the results beyond rounding: conv2d's weight and bias
    gradients are summed per thread and then added up, so their order of addition depends on
    it; everything else is the same arithmetic however the work is shared out."""
    from tinygrad_seq.kernels.cython import conv, recurrence, softmax

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 9, 8))
    w = rng.standard_normal((5, 4, 3, 3))
    xw = rng.standard_normal((4, 6, 4 * 5))
    w_hh = rng.standard_normal((4 * 5, 5))
    h0, c0 = rng.standard_normal((2, 6, 5))
    logits = rng.standard_normal((7, 11))
    mask = rng.random((7, 11)) < 0.3

    def everything():
        y = conv.conv2d_forward(x, w, None, (1, 2), (1, 1), (1, 1))
        out = [y, *conv.conv2d_backward(y, x, w, (1, 2), (1, 1), (1, 1), True)]
        out += conv.maxpool2d_forward(x, (3, 3), (2, 2), (1, 1))
        out += [conv.avgpool2d_forward(x, (2, 3), (2, 1), (1, 1))]
        hs, cs, gates = recurrence.lstm_forward(xw, w_hh, h0, c0)
        out += [hs, *recurrence.lstm_backward(hs, c0, w_hh, h0, c0, hs, cs, gates)]
        out += [softmax.softmax_forward(logits, mask)]
        return out

    from tinygrad_seq.kernels.cython import _conv
    default = _conv.get_num_threads()
    try:
        cython_backend.set_num_threads(1)
        serial = everything()
        cython_backend.set_num_threads(2)
        threaded = everything()
    finally:
        cython_backend.set_num_threads(default)
    for a, b in zip(serial, threaded):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)   # float64 inputs


@pytest.mark.skipif(cython_backend.unavailable_reason() is not None,
                    reason="Cython kernels not compiled (no C compiler at install time)")
def test_maxpool_backward_rejects_an_argmax_outside_the_plane():
    """The compiled scatter would write outside dx; it must raise instead."""
    from tinygrad_seq.kernels.cython import conv

    dy = np.ones((1, 1, 2, 2))
    argmax = np.array([[[[0, 1], [4, 16]]]], dtype=np.int64)   # 16 is past a 4x4 plane
    with pytest.raises(ValueError, match="maxpool2d"):
        conv.maxpool2d_backward(dy, argmax, (1, 1, 4, 4))


# ----------------------------------------------------------------------------- the numbers

needs_cython = pytest.mark.skipif(cython_backend.unavailable_reason() is not None,
                                  reason=f"Cython kernels not compiled: {cython_backend.unavailable_reason()}")
DTYPES = [np.float32, np.float64]
TOLERANCE = {np.dtype(np.float32): dict(rtol=1e-4, atol=1e-5),
             np.dtype(np.float64): dict(rtol=1e-10, atol=1e-12)}


def assert_all_close(got, expected, dtype):
    """Each output: same dtype (the kernels compute in the input dtype), shape and numbers."""
    got = got if isinstance(got, tuple) else (got,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        if e is None:
            assert g is None
            continue
        assert g.dtype == e.dtype == np.dtype(dtype) and g.shape == e.shape
        np.testing.assert_allclose(g, e, **TOLERANCE[np.dtype(dtype)])


def both(name, module, *args):
    """(cython result, reference result) of kernel `name` on the same arguments."""
    from tinygrad_seq.kernels import reference
    import tinygrad_seq.kernels.cython.conv  # noqa: F401 (make the submodules attributes)
    import tinygrad_seq.kernels.cython.recurrence  # noqa: F401
    ours = getattr(getattr(importlib.import_module("tinygrad_seq.kernels.cython"), module), name)
    theirs = getattr(importlib.import_module(f"{reference.__name__}.{module}"), name)
    return ours(*args), theirs(*args)


@needs_cython
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T, B, H", [(1, 1, 1), (5, 3, 7)])
def test_recurrence_kernels_equal_the_reference(dtype, T, B, H):
    rng = np.random.default_rng(T * 100 + H)

    def arr(*shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(dtype)

    h0, c0, dcT = arr(B, H), arr(B, H), arr(B, H)
    dhs = arr(T, B, H)
    for nonlinearity in ("tanh", "relu"):
        xw, w_hh = arr(T, B, H), arr(H, H, scale=H ** -0.5)
        hs, expected = both("rnn_forward", "recurrence", xw, w_hh, h0, nonlinearity)
        assert_all_close(hs, expected, dtype)
        assert_all_close(*both("rnn_backward", "recurrence", dhs, w_hh, h0, expected, nonlinearity), dtype)

    xw, w_hh = arr(T, B, 4 * H), arr(4 * H, H, scale=H ** -0.5)
    got, expected = both("lstm_forward", "recurrence", xw, w_hh, h0, c0)
    assert_all_close(got, expected, dtype)
    assert_all_close(*both("lstm_backward", "recurrence", dhs, dcT, w_hh, h0, c0, *expected), dtype)

    xw, w_hh, b_hh = arr(T, B, 3 * H), arr(3 * H, H, scale=H ** -0.5), arr(3 * H, scale=0.1)
    got, expected = both("gru_forward", "recurrence", xw, w_hh, b_hh, h0)
    assert_all_close(got, expected, dtype)
    assert_all_close(*both("gru_backward", "recurrence", dhs, w_hh, h0, *expected), dtype)


@needs_cython
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads, B, H", [
    (2, 32, 40),    # shares of 32 and 8 units; row blocks of 6, 6, 5, 5, 5, 5 (AVX-512's wide tile: 8 x 4)
    (3, 7, 40),     # 16, 16, 8 units; row blocks of 4 and 3 (wide tile: one of 7)
    (2, 15, 24),    # 16 and 8 units; row blocks of 5, 5, 5 (wide: 8 and 7); 8 RNN columns: narrow panels
    (2, 2, 1),      # one unit: the second thread owns nothing but still meets every barrier
    (4, 1, 17),     # 16 and 1 units; threads 3 and 4 own nothing; a single batch row
    (1, 13, 70),    # the whole layer on one thread: several panels, two of them padded
])
def test_recurrence_team_kernels_equal_the_reference(dtype, threads, B, H):
    """The recurrences split the hidden units over a team of threads that packs its share of
    W_hh into panels: every split, row remainder and panel padding must give the reference's
    numbers, and those of one thread up to rounding (a unit that lands in a loop's scalar tail
    under one split and in its SIMD body under another may see a division done another way,
    or libm's float64 tanh instead of libmvec's)."""
    from tinygrad_seq.kernels.cython import _recurrence
    rng = np.random.default_rng(threads * 1000 + B * 10 + H)
    T = 6

    def arr(*shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(dtype)

    h0, c0, dhs, dcT = arr(B, H), arr(B, H), arr(T, B, H), arr(B, H)
    w_rnn, w_lstm, w_gru = (arr(g * H, H, scale=H ** -0.5) for g in (1, 4, 3))
    xw_rnn, xw_lstm, xw_gru, b_hh = arr(T, B, H), arr(T, B, 4 * H), arr(T, B, 3 * H), arr(3 * H, scale=0.1)
    xh, w_x, w_xh_hh, c0_xh, *_ = lstm_xh_case(rng, dtype, T, B, 5, H, True)   # rows [x_t (5) | 1 | h_{t-1}]

    def run_all(check):
        """Every kernel, forward then backward from the reference's forward results."""
        from tinygrad_seq.kernels.cython import recurrence
        from tinygrad_seq.kernels.reference import recurrence as reference
        out = []
        ours, theirs = xh.copy(), xh.copy()     # each writes its h_t into its own rows
        out += check(recurrence.lstm_forward_xh(ours, w_x, w_xh_hh, c0_xh) + (ours[1:, :, 6:],),
                     reference.lstm_forward_xh(theirs, w_x, w_xh_hh, c0_xh) + (theirs[1:, :, 6:],))
        for kind in ("tanh", "relu"):
            got, expected = both("rnn_forward", "recurrence", xw_rnn, w_rnn, h0, kind)
            out += check(got, expected)
            out += check(*both("rnn_backward", "recurrence", dhs, w_rnn, h0, expected, kind))
        got, expected = both("lstm_forward", "recurrence", xw_lstm, w_lstm, h0, c0)
        out += check(got, expected)
        out += check(*both("lstm_backward", "recurrence", dhs, dcT, w_lstm, h0, c0, *expected))
        got, expected = both("gru_forward", "recurrence", xw_gru, w_gru, b_hh, h0)
        out += check(got, expected)
        out += check(*both("gru_backward", "recurrence", dhs, w_gru, h0, *expected))
        return out

    def against_reference(got, expected):
        assert_all_close(got, expected, dtype)
        return list(got) if isinstance(got, tuple) else [got]

    default = _recurrence.get_num_threads()
    try:
        _recurrence.set_num_threads(threads)
        split = run_all(against_reference)
        _recurrence.set_num_threads(1)
        serial = run_all(against_reference)
    finally:
        _recurrence.set_num_threads(default)
    ulps = 8 * np.finfo(dtype).eps
    for a, b in zip(split, serial):
        np.testing.assert_allclose(a, b, rtol=ulps, atol=ulps)


@needs_cython
@pytest.mark.parametrize("dtype", DTYPES)
def test_lstm_forward_xh_projects_first_when_its_weights_outgrow_the_cache(monkeypatch, dtype):
    """Past FUSED_WEIGHTS_PER_THREAD bytes of [W_ih | b] and W_hh a thread, the Cython
    lstm_forward_xh projects the inputs with one product on the team and runs lstm_forward:
    the numbers of the fused loop, h_t in the same place."""
    from tinygrad_seq.kernels.cython import matmul, recurrence
    T, B, H = 5, 4, 9
    xh, w_x, w_hh, c0, *_ = lstm_xh_case(np.random.default_rng(11), dtype, T, B, 5, H, True)   # [x_t (5) | 1 | h]
    fused_rows = xh.copy()
    fused = recurrence.lstm_forward_xh(fused_rows, w_x, w_hh, c0)
    products, team_matmul = [], matmul.matmul
    monkeypatch.setattr(matmul, "matmul", lambda a, b: products.append((a.shape, b.shape)) or team_matmul(a, b))
    monkeypatch.setattr(recurrence, "FUSED_WEIGHTS_PER_THREAD", w_hh.nbytes // 64)
    projected = recurrence.lstm_forward_xh(xh, w_x, w_hh, c0)
    assert products == [((T * B, 6), (6, 4 * H))]
    assert_all_close(projected + (xh[1:, :, 6:],), fused + (fused_rows[1:, :, 6:],), dtype)


@needs_cython
def test_float32_gate_activations_within_a_few_ulp():
    """The float32 recurrences compute tanh and sigmoid inline (_fastmath.h).  With W_hh = 0 and
    zero initial states the kernels return them bare: rnn_forward gives tanh(xw), lstm_forward's
    gates are sigmoid, sigmoid, tanh, sigmoid of xw.  Within 4 ulp of the float64 values over the
    range where they are not yet saturated, and saturated to within an ulp beyond it (the
    vectorised division may leave sigmoid one ulp below 1)."""
    from tinygrad_seq.kernels.cython import recurrence

    def ulps(got, exact):
        spacing = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
        return np.max(np.abs(got - exact) / np.maximum(spacing, np.spacing(np.float32(1e-30))))

    def as_steps(values, width):
        """values (n,) as xw of shape (1, n / width, width)."""
        return np.ascontiguousarray(values.reshape(1, -1, width), dtype=np.float32)

    H = 64
    tanh_x = np.concatenate([np.linspace(-10, 10, 64000), np.linspace(-1, 1, 6400)]).astype(np.float32)
    hs = recurrence.rnn_forward(as_steps(tanh_x, H), np.zeros((H, H), np.float32),
                                np.zeros((tanh_x.size // H, H), np.float32), "tanh")
    assert ulps(hs.reshape(-1), np.tanh(tanh_x.astype(np.float64))) <= 4

    sig_x = np.linspace(-30, 30, 4 * 16000).astype(np.float32)
    B = sig_x.size // (4 * H)
    zeros = np.zeros((B, H), np.float32)
    _, _, gates = recurrence.lstm_forward(as_steps(sig_x, 4 * H), np.zeros((4 * H, H), np.float32), zeros, zeros)
    exact = sig_x.astype(np.float64).reshape(B, 4, H)
    sigmoid = 1 / (1 + np.exp(-exact))
    gates = gates.reshape(B, 4, H)
    for k, expected in enumerate([sigmoid[:, 0], sigmoid[:, 1], np.tanh(exact[:, 2]), sigmoid[:, 3]]):
        assert ulps(gates[:, k], expected) <= 4, f"gate {k}"

    extreme = np.array([-1e30, -200, -88, 88, 200, 1e30] * (4 * H // 6 + 1), np.float32)[:4 * H]
    zeros = np.zeros((1, H), np.float32)
    _, _, gates = recurrence.lstm_forward(as_steps(extreme, 4 * H), np.zeros((4 * H, H), np.float32), zeros, zeros)
    gates, extreme = gates.reshape(4, H), extreme.reshape(4, H)
    np.testing.assert_allclose(gates[[0, 1, 3]], (extreme[[0, 1, 3]] > 0).astype(np.float32), rtol=0,
                               atol=np.finfo(np.float32).epsneg)
    np.testing.assert_array_equal(gates[2], np.sign(extreme[2]))


CONV_CASES = [  # x shape, w shape, stride, padding, dilation
    ((2, 3, 6, 5), (4, 3, 3, 3), (1, 1), (1, 1), (1, 1)),
    ((1, 2, 9, 8), (3, 2, 3, 2), (2, 3), (1, 0), (2, 1)),
    ((3, 1, 1, 7), (2, 1, 1, 3), (1, 2), (0, 2), (1, 1)),   # a 1-D conv as the engine passes it
]


@needs_cython
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_equals_the_reference(dtype, case):
    x_shape, w_shape, stride, padding, dilation = case
    rng = np.random.default_rng(len(x_shape) + x_shape[2])
    x, w, b = conv_inputs(rng, dtype, x_shape, w_shape)
    for bias in (b, None):
        y, expected = both("conv2d_forward", "conv", x, w, bias, stride, padding, dilation)
        assert_all_close(y, expected, dtype)
        dy = rng.standard_normal(y.shape).astype(dtype)
        got, expected = both("conv2d_backward", "conv", dy, x, w, stride, padding, dilation, bias is not None)
        assert_all_close(got, expected, dtype)


@needs_cython
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_pooling_equals_the_reference(dtype, case):
    x_shape, kernel, stride, padding = case
    rng = np.random.default_rng(x_shape[3])
    x = rng.standard_normal(x_shape).astype(dtype)
    x.flat[::5] = x.flat[1]                   # ties: the first maximum must win, as in the reference
    check_pooling(lambda name, *args: both(name, "conv", *args),
                  lambda got, expected: assert_all_close(got, expected, dtype), rng, x, kernel, stride, padding)


BAD_CALLS = [  # (module, kernel, arguments): each must raise the reference's ValueError
    ("recurrence", "rnn_forward", (np.zeros((2, 1, 3)), np.zeros((3, 3)), np.zeros((1, 3)), "sigmoid")),
    ("recurrence", "rnn_forward", (np.zeros((2, 1, 3)), np.zeros((3, 4)), np.zeros((1, 3)), "tanh")),
    ("recurrence", "rnn_backward", (np.zeros((2, 1, 3)), np.zeros((3, 3)), np.zeros((1, 3)),
                                    np.zeros((3, 1, 3)), "relu")),
    ("recurrence", "lstm_forward", (np.zeros((2, 1, 8)), np.zeros((12, 3)), np.zeros((1, 3)), np.zeros((1, 3)))),
    ("recurrence", "lstm_forward", (np.zeros((2, 1, 12), np.float32), np.zeros((12, 3)), np.zeros((1, 3)),
                                    np.zeros((1, 3)))),
    ("recurrence", "gru_forward", (np.zeros((2, 1, 9)), np.zeros((9, 3)), np.zeros(6), np.zeros((1, 3)))),
    ("recurrence", "gru_backward", (np.zeros((2, 1, 3)), np.zeros((9, 3)), np.zeros((1, 3)), np.zeros((2, 1, 3)),
                                    np.zeros((2, 1, 9)), np.zeros((2, 2, 3)))),
    ("conv", "conv2d_forward", (np.zeros((1, 2, 3, 3)), np.zeros((1, 3, 2, 2)), None, (1, 1), (0, 0), (1, 1))),
    ("conv", "conv2d_forward", (np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 5, 5)), None, (1, 1), (0, 0), (1, 1))),
    ("conv", "conv2d_forward", (np.zeros((1, 1, 3, 3)), np.zeros((2, 1, 2, 2)), np.zeros(3), (1, 1), (0, 0), (1, 1))),
    ("conv", "maxpool2d_forward", (np.zeros((1, 1, 4, 4)), (2, 2), (2, 2), (2, 2))),
    ("conv", "avgpool2d_backward", (np.zeros((1, 1, 3, 3)), (1, 1, 4, 4), (2, 2), (2, 2), (0, 0))),
]


@needs_cython
@pytest.mark.parametrize("module, name, args", BAD_CALLS, ids=[f"{m}.{n}" for m, n, _ in BAD_CALLS])
def test_bad_arguments_raise_the_reference_message(module, name, args):
    """Bounds checks are compiled out, so a wrong shape must be caught before the C loops run."""
    assert_raises_like_reference(importlib.import_module(f"tinygrad_seq.kernels.cython.{module}"),
                                 importlib.import_module(f"tinygrad_seq.kernels.reference.{module}"), name, *args)


@needs_cython
def test_char_lstm_trains_the_same_on_numpy_and_cython(tmp_path):
    """The whole model on the backend: 20 training steps, same seed, same losses to 1e-4."""
    losses = {}
    for name in ("numpy", "cython"):
        trainer, losses[name] = char_lstm_losses(tmp_path / name, name)
    assert trainer.step == 20
    np.testing.assert_allclose(losses["cython"], losses["numpy"], rtol=1e-4)
    assert losses["numpy"][-1] < losses["numpy"][0]     # it trained: the comparison is not of two stalls


@needs_cython
def test_auto_follows_the_measured_choice_table(monkeypatch, tmp_path, fresh_registry):
    """`auto` picks what the benchmark wrote (cython included), per family and device."""
    table = tmp_path / "auto_backend.json"
    monkeypatch.setattr(fresh_registry, "CHOICE_TABLE", str(table))
    saved = fresh_registry.save_auto_choices("cpu", {"softmax": "cython", "conv": "numpy"}, path=str(table))
    assert saved == {"cpu": {"softmax": "cython", "conv": "numpy"}}
    with fresh_registry.backend("auto"):
        assert fresh_registry.resolve("softmax") == "cython"
        assert fresh_registry.resolve("conv") == "numpy"
        fresh_registry.save_auto_choices("cpu", {"softmax": "numpy"}, path=str(table))
        assert fresh_registry.resolve("softmax") == "numpy"    # the new table is read again
        assert fresh_registry.resolve("conv") == "numpy"       # and the other entry kept
    with pytest.raises(fresh_registry.BackendError, match="cuda"):
        fresh_registry.save_auto_choices("cpu", {"softmax": "cuda"}, path=str(table))


# ----------------------------------------------------------------------------- ISA variants

def test_dispatch_picks_the_best_level_the_cpu_runs():
    """The choice among the built variants, for CPUs described as NumPy's feature table: an
    AVX-512 CPU gets x86_64_v4, an AVX2-only one x86_64_v3, an older one x86_64_v2; a forced
    variant wins only where the CPU runs it; a native build is preferred; off x86, portable."""
    levels = {"SSSE3", "SSE41", "SSE42", "POPCNT"}
    avx2 = levels | {"AVX", "AVX2", "FMA3", "F16C", "BMI", "BMI2"}
    avx512 = avx2 | {"AVX512F", "AVX512BW", "AVX512CD", "AVX512DQ", "AVX512VL"}
    cpu = {name: dict.fromkeys(flags, True) for name, flags in
           [("old", levels), ("avx2", avx2), ("avx512", avx512), ("arm", set())]}
    cpu["avx512_os_off"] = dict(cpu["avx512"], X86_V4=False)   # NumPy: the OS does not save zmm
    assert cython_backend.supported_levels(cpu["avx512"]) == ["x86_64_v4", "x86_64_v3", "x86_64_v2"]
    assert cython_backend.supported_levels(cpu["avx2"]) == ["x86_64_v3", "x86_64_v2"]
    assert cython_backend.supported_levels(cpu["old"]) == ["x86_64_v2"]
    assert cython_backend.supported_levels(cpu["avx512_os_off"]) == ["x86_64_v3", "x86_64_v2"]
    assert cython_backend.supported_levels(cpu["arm"]) == []

    built = ["x86_64_v4", "x86_64_v3", "x86_64_v2"]
    choose = cython_backend._choose
    assert choose(built, cython_backend.supported_levels(cpu["avx512"]), "")[0] == "x86_64_v4"
    chosen, reason = choose(built, cython_backend.supported_levels(cpu["avx2"]), "")
    assert chosen == "x86_64_v3" and "AVX2" in reason
    assert choose(built, cython_backend.supported_levels(cpu["old"]), "")[0] == "x86_64_v2"
    assert choose(built, ["x86_64_v4", "x86_64_v3", "x86_64_v2"], "x86_64_v2") == \
        ("x86_64_v2", "forced by TGS_CYTHON_VARIANT=x86_64_v2")
    chosen, reason = choose(built, ["x86_64_v3", "x86_64_v2"], "x86_64_v4")   # would be SIGILL
    assert chosen == "x86_64_v3" and "ignored (this CPU lacks its instructions)" in reason
    assert choose(built[1:], ["x86_64_v4", "x86_64_v3", "x86_64_v2"], "")[0] == "x86_64_v3"
    assert choose(["native"] + built, ["x86_64_v3", "x86_64_v2"], "")[0] == "native"
    assert choose(["portable"], [], "")[0] == "portable"
    assert choose([], [], "")[0] is None


# One kernel of each family, forward and backward, float32 and float64, against the reference
# (and the LSTM's other forward, whose packing differs);
# prints the variant that ran and the worst error per dtype (relative to each output's scale).
VARIANT_CHECK = r"""
import json
import numpy as np
import tinygrad_seq.kernels.cython as cy
from tinygrad_seq.kernels.cython import activation, conv, recurrence, softmax
from tinygrad_seq.kernels import reference
from tinygrad_seq.kernels.reference import activation as ra, conv as rc, recurrence as rr, softmax as rs

worst = {}
def check(dtype, got, expected):
    got = got if isinstance(got, tuple) else (got,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    for g, e in zip(got, expected):
        if e is None:
            continue
        assert g.dtype == e.dtype and g.shape == e.shape
        e64 = e.astype(np.float64)
        err = float(np.max(np.abs(g - e64)) / (1 + np.max(np.abs(e64)))) if e.size else 0.0
        worst[dtype] = max(worst.get(dtype, 0.0), err)

for dtype in ("float32", "float64"):
    rng = np.random.default_rng(5)
    arr = lambda *s, scale=1.0: (scale * rng.standard_normal(s)).astype(dtype)
    T, B, H = 5, 7, 40
    xw, w_hh, h0, c0 = arr(T, B, 4 * H), arr(4 * H, H, scale=H ** -0.5), arr(B, H), arr(B, H)
    out = rr.lstm_forward(xw, w_hh, h0, c0)
    check(dtype, recurrence.lstm_forward(xw, w_hh, h0, c0), out)
    dhs, dcT = arr(T, B, H), arr(B, H)
    check(dtype, recurrence.lstm_backward(dhs, dcT, w_hh, h0, c0, *out), rr.lstm_backward(dhs, dcT, w_hh, h0, c0, *out))
    xh = np.zeros((T + 1, B, 6 + H), dtype)          # lstm_forward_xh: rows [x_t (5) | 1 | h_{t-1}]
    xh[:T, :, :5], xh[:T, :, 5], xh[0, :, 6:] = arr(T, B, 5), 1, h0
    w_x, mine = arr(4 * H, 6, scale=0.4), xh.copy()
    check(dtype, recurrence.lstm_forward_xh(mine, w_x, w_hh, c0) + (mine[1:, :, 6:],),
          rr.lstm_forward_xh(xh, w_x, w_hh, c0) + (xh[1:, :, 6:],))
    xg, wg, bg = arr(T, B, 3 * H), arr(3 * H, H, scale=H ** -0.5), arr(3 * H)
    out = rr.gru_forward(xg, wg, bg, h0)
    check(dtype, recurrence.gru_forward(xg, wg, bg, h0), out)
    check(dtype, recurrence.gru_backward(dhs, wg, h0, *out), rr.gru_backward(dhs, wg, h0, *out))
    xr, wr = arr(T, B, H), arr(H, H, scale=H ** -0.5)
    check(dtype, recurrence.rnn_forward(xr, wr, h0, "relu"), rr.rnn_forward(xr, wr, h0, "relu"))
    for x_shape, w_shape, pad in [((2, 3, 9, 8), (4, 3, 3, 3), (1, 1)), ((1, 1, 1, 1), (1, 1, 5, 5), (2, 2))]:
        x, w, b = arr(*x_shape), arr(*w_shape), arr(w_shape[0])
        y = rc.conv2d_forward(x, w, b, (1, 1), pad, (1, 1))
        check(dtype, conv.conv2d_forward(x, w, b, (1, 1), pad, (1, 1)), y)
        dy = arr(*y.shape)
        check(dtype, conv.conv2d_backward(dy, x, w, (1, 1), pad, (1, 1), True),
              rc.conv2d_backward(dy, x, w, (1, 1), pad, (1, 1), True))
    x = arr(2, 3, 9, 8)
    check(dtype, conv.maxpool2d_forward(x, (3, 3), (2, 2), (1, 1)), rc.maxpool2d_forward(x, (3, 3), (2, 2), (1, 1)))
    check(dtype, conv.avgpool2d_forward(x, (2, 2), (2, 2), (0, 0)), rc.avgpool2d_forward(x, (2, 2), (2, 2), (0, 0)))
    logits, mask = arr(6, 70, scale=4.0), rng.random((6, 70)) < 0.3
    y = rs.softmax_forward(logits, mask)
    check(dtype, softmax.softmax_forward(logits, mask), y)
    dy = arr(6, 70)
    check(dtype, softmax.softmax_backward(dy, y), rs.softmax_backward(dy, y))
    g = arr(3, 50, scale=3.0)
    out = ra.gelu_forward(g)
    check(dtype, activation.gelu_forward(g), out)
    dg = arr(3, 50)
    check(dtype, activation.gelu_backward(dg, g, out[1]), ra.gelu_backward(dg, g, out[1]))
files = sorted({__import__("tinygrad_seq.kernels.cython." + m, fromlist=["x"]).__file__.split("/")[-2] for m in cy.COMPILED})
print(json.dumps({"variant": cy.variant()[0], "folders": files, "worst": worst, "package": cy.__file__}))
"""
VARIANT_TOLERANCE = {"float32": 1e-4, "float64": 1e-10}


def _run_variant_check(command, cwd=None, **env):
    """Run VARIANT_CHECK with `command` (an interpreter, maybe under an emulator) in `cwd`, in an
    environment without TGS_CYTHON_VARIANT unless given; its report, checked against the
    tolerances."""
    import json
    environment = {k: v for k, v in os.environ.items() if k != cython_backend.FORCE_VARIANT}
    environment.update(env)
    result = subprocess.run(command + ["-c", VARIANT_CHECK], capture_output=True, text=True,
                            timeout=600, env=environment, cwd=cwd)
    assert result.returncode == 0, (result.returncode, result.stderr[-3000:])
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for dtype, tolerance in VARIANT_TOLERANCE.items():
        assert report["worst"][dtype] <= tolerance, report
    return report


RUNNABLE_VARIANTS = [v for v in cython_backend.built_variants()
                     if v in cython_backend.supported_levels() or v in cython_backend.OTHER_VARIANTS]


@needs_cython
@pytest.mark.parametrize("variant", RUNNABLE_VARIANTS or ["none built"])
def test_every_variant_this_cpu_runs_equals_the_reference(variant):
    """TGS_CYTHON_VARIANT forces each built variant this CPU can run (a fresh interpreter per
    variant): it is the one loaded, and one kernel of each family matches the reference."""
    if variant == "none built":
        pytest.skip("no per-variant build (kernels/cython/<variant>/) is installed")
    report = _run_variant_check([sys.executable], TGS_CYTHON_VARIANT=variant)
    assert report["variant"] == variant and report["folders"] == [variant], report


def test_the_default_is_the_best_level_of_this_cpu():
    """Without TGS_CYTHON_VARIANT the best built level the CPU supports runs (the AVX-512 build
    on an AVX-512 machine)."""
    built = [v for v in cython_backend.built_variants() if v in cython_backend.LEVEL_NAMES]
    if not built or "native" in cython_backend.built_variants():
        pytest.skip("no per-level x86-64 build here (non-x86, native build, or not compiled)")
    best = next(v for v in cython_backend.supported_levels() if v in built)
    if os.environ.get(cython_backend.FORCE_VARIANT):
        pytest.skip(f"{cython_backend.FORCE_VARIANT} is set in this environment")
    assert cython_backend.variant()[0] == best


@needs_cython
@pytest.mark.skipif(shutil.which("qemu-x86_64") is None,
                    reason="qemu-x86_64 (Debian package qemu-user) is not installed")
@pytest.mark.skipif(not _is_x86(), reason="emulates an x86-64 CPU running this interpreter")
def test_an_avx2_only_cpu_runs_the_avx2_variant_under_qemu():
    """The extensions built here (possibly on an AVX-512 machine) import and compute correctly on
    an emulated AVX2-only CPU (AMD EPYC Rome), where dispatch picks x86_64_v3, not x86_64_v4
    (which would die with SIGILL, as the old -march=native build did)."""
    if "x86_64_v3" not in cython_backend.built_variants():
        pytest.skip("the x86_64_v3 variant is not built")
    report = _run_variant_check(["qemu-x86_64", "-cpu", "EPYC-Rome", sys.executable])
    assert report["variant"] == "x86_64_v3" and report["folders"] == ["x86_64_v3"], report


# ----------------------------------------------------------------------------- a wheel

@pytest.fixture(scope="session")
def installed_wheel(tmp_path_factory):
    """`pip install .` as a user does it: a wheel built from a copy of the source tree (no build
    outputs, so every extension is compiled afresh, and the editable install here is left alone;
    tests/wheel_build.py), installed by pip into a folder of its own; (that folder, a folder
    outside both trees)."""
    root = tmp_path_factory.mktemp("wheel")
    site, elsewhere = root / "site", root / "elsewhere"
    elsewhere.mkdir()
    wheel_build.installed(site, elsewhere)
    return site, elsewhere


def _check_the_installed_wheel(installed_wheel, command):
    """VARIANT_CHECK against the wheel's installation only (PYTHONPATH, run outside the source
    tree): every module of every variant was built into the wheel, and the check imported them
    from there."""
    site, elsewhere = installed_wheel
    package = site / "tinygrad_seq" / "kernels" / "cython"
    variants = cython_backend.LEVEL_NAMES if _is_x86() else ["portable"]
    for variant in variants:
        for name in cython_backend.COMPILED:
            assert list((package / variant).glob(name + ".*.so")), f"the wheel lacks {variant}/{name}"
    report = _run_variant_check(command, cwd=str(elsewhere), PYTHONPATH=str(site))
    assert os.path.dirname(report["package"]) == str(package), report
    return report


@pytest.mark.slow
def test_the_installed_wheel_runs_the_best_variant_of_this_cpu(installed_wheel):
    """The wheel's own extensions pass one kernel of each family here, and dispatch picks this
    CPU's best level (x86_64_v4 on an AVX-512 machine, x86_64_v3 on an AVX2-only one; off x86
    the portable build)."""
    best = cython_backend.supported_levels()[0] if _is_x86() else "portable"
    report = _check_the_installed_wheel(installed_wheel, [sys.executable])
    assert report["variant"] == best and report["folders"] == [best], report


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("qemu-x86_64") is None,
                    reason="qemu-x86_64 (Debian package qemu-user) is not installed")
@pytest.mark.skipif(not _is_x86(), reason="qemu-x86_64 emulates an x86-64 CPU running this interpreter")
def test_the_installed_wheel_runs_on_an_avx2_only_cpu_under_qemu(installed_wheel):
    """Issue 15's "Done when": `pip install .` on this (AVX-512) machine gives extensions that
    import and compute correctly on an emulated AVX2-only CPU (AMD EPYC Rome), where dispatch
    picks x86_64_v3; the old -march=native wheel died there with SIGILL."""
    report = _check_the_installed_wheel(installed_wheel, ["qemu-x86_64", "-cpu", "EPYC-Rome", sys.executable])
    assert report["variant"] == "x86_64_v3" and report["folders"] == ["x86_64_v3"], report
