"""The GPU path on a real GPU: the CUDA kernels on CuPy arrays against the NumPy reference,
tensors and modules moved with .to("cuda") / .cpu(), the layers of every kernel family on
device tensors against `numpy` on the CPU, and a char-LSTM trained 20 steps on `cuda` giving
numpy's losses to 1e-3.  `bash bench/run_gpu.sh` runs this file on the lent GPU machine.

These skip (saying why) on a machine without a GPU or without CuPy; tests/cudasim checks the
same kernels there under Numba's CUDA simulator.  The device-mixing check and the message for
a missing GPU are tested without one, and so is the following:
`test_every_kernel_compiles_for_the_real_cuda_target` compiles each kernel to PTX for
float32 and float64, which catches what the simulator (plain Python) cannot: code that
Numba's CUDA target does not type, and float64 arithmetic leaking into float32 kernels.
It needs the CUDA compiler libraries (NVVM, NVRTC), pip-installable without a GPU.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from kernel_checks import POOL_CASES as KERNEL_CHECKS_POOL_CASES
from kernel_checks import RECURRENCE_KINDS, char_lstm_losses, check_pooling, conv_inputs, recurrence_args

from tinygrad_seq.device import cupy_or_none, cupy_unavailable_reason

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _gpu_unavailable_reason():
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return "NUMBA_ENABLE_CUDASIM=1: the simulator is not a GPU"
    from tinygrad_seq.kernels import cuda as cuda_backend
    reason = cuda_backend.unavailable_reason()
    if reason is None and cupy_or_none() is None:
        reason = f"CuPy cannot use the GPU ({cupy_unavailable_reason()})"
    return reason


GPU_REASON = _gpu_unavailable_reason()
needs_gpu = pytest.mark.skipif(GPU_REASON is not None, reason=f"needs a CUDA GPU and CuPy: {GPU_REASON}")
DTYPES = [np.float32, np.float64]
# cuBLAS and the CPU BLAS sum in different orders
TOLERANCE = {np.dtype(np.float32): dict(rtol=1e-4, atol=1e-5),
             np.dtype(np.float64): dict(rtol=1e-10, atol=1e-12)}


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def on_gpu(*args):
    """The arguments with every NumPy array copied to the device (other values as they are)."""
    cp = cupy_or_none()
    return [cp.asarray(a) if isinstance(a, np.ndarray) else a for a in args]


def on_host(result):
    """A kernel's result, an array or a tuple of them, brought back to NumPy after checking
    that each output is a CuPy array (the kernel stayed on the device)."""
    cp = cupy_or_none()
    if isinstance(result, tuple):
        return tuple(on_host(r) for r in result)
    assert isinstance(result, cp.ndarray), f"got {type(result)}, not a CuPy array"
    return cp.asnumpy(result)


def assert_close(actual, expected, dtype):
    """NumPy outputs (one or a tuple) of the dtype and the shapes of `expected`, equal within tolerance."""
    actual = actual if isinstance(actual, tuple) else (actual,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.dtype == np.dtype(dtype) and a.shape == e.shape
        np.testing.assert_allclose(a, e, **TOLERANCE[np.dtype(dtype)])


def assert_gpu_close(actual, expected, dtype):
    """actual is a CuPy array (the kernel stayed on the device) equal to the NumPy `expected`."""
    assert_close(on_host(actual), expected, dtype)


def gpu_and_reference(family):
    """both(name, *args): (the CUDA kernel's result on device copies of args, brought back to
    NumPy, the reference kernel's result) for kernel `name` of `family`."""
    import importlib
    cuda_module = importlib.import_module(f"tinygrad_seq.kernels.cuda.{family}")
    reference = importlib.import_module(f"tinygrad_seq.kernels.reference.{family}")

    def both(name, *args):
        return on_host(getattr(cuda_module, name)(*on_gpu(*args))), getattr(reference, name)(*args)
    return both


# ----------------------------------------------------------------------------- softmax

@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (9, 300), (3, 1025), (70_000, 5)])
def test_softmax_on_gpu(rng, dtype, shape):
    from tinygrad_seq.kernels.cuda import softmax as cuda_softmax
    from tinygrad_seq.kernels.reference import softmax as ref
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    mask = rng.random(shape) < 0.3
    mask[0] = True
    dy = rng.standard_normal(shape).astype(dtype)
    for m in (None, mask):
        y = cuda_softmax.softmax_forward(*on_gpu(x, m))
        ry = ref.softmax_forward(x, m)
        assert_gpu_close(y, ry, dtype)
        assert_gpu_close(cuda_softmax.softmax_backward(*on_gpu(dy), y), ref.softmax_backward(dy, ry), dtype)


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (2048, 65), (3, 1025), (70_000, 5)])
def test_log_softmax_on_gpu(rng, dtype, shape):
    from tinygrad_seq.kernels.cuda import softmax as cuda_softmax
    from tinygrad_seq.kernels.reference import softmax as ref
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    x[0, 0] = -np.inf                          # (with one column: a row of only -inf, NaN)
    dy = rng.standard_normal(shape).astype(dtype)
    with np.errstate(invalid="ignore"):
        ry = ref.log_softmax_forward(x)
        y = cuda_softmax.log_softmax_forward(*on_gpu(x))
        assert_gpu_close(y, ry, dtype)
        assert_gpu_close(cuda_softmax.log_softmax_backward(*on_gpu(dy), y), ref.log_softmax_backward(dy, ry), dtype)


# ----------------------------------------------------------------------------- normalization

@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (9, 300), (3, 1025), (2048, 128), (70_000, 5)])
def test_layer_norm_on_gpu(rng, dtype, shape):
    from tinygrad_seq.kernels.cuda import normalization as cuda_normalization
    from tinygrad_seq.kernels.reference import normalization as ref
    x = (2 * rng.standard_normal(shape) + 1).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    weight, bias = rng.standard_normal(shape[1]).astype(dtype), rng.standard_normal(shape[1]).astype(dtype)
    for w, b in ((weight, bias), (None, None)):
        got = cuda_normalization.layer_norm_forward(*on_gpu(x, w, b), 1e-5)
        expected = ref.layer_norm_forward(x, w, b, 1e-5)
        assert_gpu_close(got, expected, dtype)
        grads = cuda_normalization.layer_norm_backward(*on_gpu(dy, x, w, *expected[1:]), True)
        assert_gpu_close(grads, ref.layer_norm_backward(dy, x, w, *expected[1:], True), dtype)


# ----------------------------------------------------------------------------- conv

CONV_CASES = [
    ((2, 3, 5, 4), (2, 3, 3, 3), (1, 1), (1, 1), (1, 1)),
    ((1, 2, 7, 6), (3, 2, 3, 2), (2, 3), (1, 0), (1, 2)),
    ((2, 2, 1, 9), (3, 2, 1, 3), (1, 2), (0, 1), (1, 1)),
    ((8, 16, 28, 28), (32, 16, 3, 3), (1, 1), (1, 1), (1, 1)),
]


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_on_gpu(rng, dtype, case):
    from tinygrad_seq.kernels.cuda import conv as cuda_conv
    from tinygrad_seq.kernels.reference import conv as ref
    x_shape, w_shape, stride, padding, dilation = case
    x, w, b = conv_inputs(rng, dtype, x_shape, w_shape)
    y = cuda_conv.conv2d_forward(*on_gpu(x, w, b), stride, padding, dilation)
    assert_gpu_close(y, ref.conv2d_forward(x, w, b, stride, padding, dilation), dtype)
    dy = rng.standard_normal(y.shape).astype(dtype)
    got = cuda_conv.conv2d_backward(*on_gpu(dy, x, w), stride, padding, dilation, True)
    for g, e in zip(got, ref.conv2d_backward(dy, x, w, stride, padding, dilation, True)):
        assert_gpu_close(g, e, dtype)


POOL_CASES = KERNEL_CHECKS_POOL_CASES + [((64, 16, 28, 28), (2, 2), (2, 2), (0, 0))]   # and the CNN's size


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_pooling_on_gpu(rng, dtype, case):
    x_shape, kernel, stride, padding = case
    x = rng.standard_normal(x_shape).astype(dtype)
    check_pooling(gpu_and_reference("conv"), lambda got, expected: assert_close(got, expected, dtype),
                  rng, x, kernel, stride, padding)


# ----------------------------------------------------------------------------- recurrence

RNN_SHAPES = [(1, 1, 3), (4, 3, 37), (3, 16, 300)]


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", RNN_SHAPES)
@pytest.mark.parametrize("kind", RECURRENCE_KINDS)
def test_recurrence_on_gpu(rng, dtype, shape, kind):
    both = gpu_and_reference("recurrence")
    cell, forward_args, backward_args = recurrence_args(kind, rng, dtype, *shape)
    got, expected = both(f"{cell}_forward", *forward_args)
    assert_close(got, expected, dtype)
    assert_close(*both(f"{cell}_backward", *backward_args(expected)), dtype)


@needs_gpu
def test_registry_serves_the_cuda_backend_for_gpu_arrays():
    from tinygrad_seq import backend
    assert backend.unavailable_reason("cuda") is None
    with backend.backend("cuda"):
        assert backend.kernels("softmax", "cuda").__name__ == "tinygrad_seq.kernels.cuda.softmax"


# ----------------------------------------------------------------------------- tensors on the GPU

@needs_gpu
def test_tensors_move_between_devices_and_gradients_follow():
    import tinygrad_seq as tgs
    cp = cupy_or_none()
    x = tgs.Tensor(np.arange(6.0).reshape(2, 3), dtype="float64", requires_grad=True)
    on_device = tgs.Tensor(np.ones((2, 3)), dtype="float64", device="cuda")
    assert on_device.device == "cuda" and isinstance(on_device.data, cp.ndarray)
    y = x.to("cuda")
    assert y.device == "cuda" and isinstance(y.data, cp.ndarray)
    z = (y * y + on_device).sum()                      # computed on the GPU
    assert isinstance(z.data, cp.ndarray)
    z.backward()
    assert x.grad.device == "cpu"                      # the gradient came back through .to()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.arange(6.0).reshape(2, 3))
    back = y.cpu()
    assert back.device == "cpu" and isinstance(back.data, np.ndarray)
    np.testing.assert_array_equal(back.numpy(), x.numpy())


@needs_gpu
def test_mixing_devices_in_one_op_names_both_devices():
    import tinygrad_seq as tgs
    from tinygrad_seq.nn import functional_conv as Fc
    a = tgs.Tensor(np.ones((2, 2)))
    b = tgs.Tensor(np.ones((2, 2)), device="cuda")
    for op in (lambda: a + b, lambda: b * a, lambda: a @ b, lambda: a < b):
        with pytest.raises(RuntimeError, match="different devices: (cpu and cuda|cuda and cpu)"):
            op()
    with pytest.raises(RuntimeError, match="cuda and cpu"):
        Fc.conv2d(tgs.Tensor(np.ones((1, 1, 4, 4)), device="cuda"), tgs.Tensor(np.ones((1, 1, 3, 3))))


@needs_gpu
def test_module_to_moves_every_parameter():
    import tinygrad_seq as tgs
    from tinygrad_seq import nn
    cp = cupy_or_none()
    tgs.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    expected = model(tgs.Tensor(x)).numpy()
    assert model.to("cuda") is model
    assert all(isinstance(p.data, cp.ndarray) for p in model.parameters())
    out = model(tgs.Tensor(x, device="cuda"))
    assert out.device == "cuda"
    out.sum().backward()
    assert all(isinstance(p.grad.data, cp.ndarray) for p in model.parameters())
    np.testing.assert_allclose(out.cpu().numpy(), expected, rtol=1e-5, atol=1e-6)
    model.cpu()
    assert all(isinstance(p.data, np.ndarray) for p in model.parameters())


def _run_layers(device, dtype, backend):
    """Bidirectional 2-layer LSTM, GRU and RNN, a conv/pool stack and a masked softmax, forward
    and backward, on `device` under `backend`: every output and gradient as host arrays."""
    import tinygrad_seq as tgs
    from tinygrad_seq import nn
    from tinygrad_seq.nn import functional as F
    from tinygrad_seq.nn import functional_conv as Fc
    rng = np.random.default_rng(3)
    results = []
    with tgs.backend(backend):
        for cls in (nn.LSTM, nn.GRU, nn.RNN):
            tgs.manual_seed(0)
            layer = cls(4, 6, num_layers=2, bidirectional=True).to(device, dtype)
            x = tgs.Tensor(rng.standard_normal((7, 3, 4)), dtype=dtype, device=device, requires_grad=True)
            out, _ = layer(x)
            (out * out).sum().backward()
            results += [out, x.grad] + [p.grad for p in layer.parameters()]
        x = tgs.Tensor(rng.standard_normal((2, 3, 9, 8)), dtype=dtype, device=device, requires_grad=True)
        w = tgs.Tensor(rng.standard_normal((4, 3, 3, 3)), dtype=dtype, device=device, requires_grad=True)
        y = Fc.avg_pool2d(Fc.max_pool2d(Fc.conv2d(x, w, padding=1).relu(), 2), 2, 1)
        (y * y).sum().backward()
        results += [y, x.grad, w.grad]
        logits = tgs.Tensor(rng.standard_normal((2, 5, 5)), dtype=dtype, device=device, requires_grad=True)
        mask = np.triu(np.ones((5, 5), dtype=bool), 1)
        p = F.softmax(logits, dim=-1, mask=mask)
        (p * p).sum().backward()
        results += [p, logits.grad]
    return [r.cpu().numpy() for r in results]


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_layers_on_cuda_tensors_match_numpy_on_the_cpu(dtype):
    """The backend-comparison suite on real device tensors: the `cuda` kernels against `numpy`."""
    expected = _run_layers("cpu", dtype, "numpy")
    got = _run_layers("cuda", dtype, "cuda")
    tol = dict(rtol=1e-3, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-11)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype == np.dtype(dtype)
        np.testing.assert_allclose(g, e, **tol)


@needs_gpu
def test_char_lstm_trains_the_same_on_cuda_and_numpy(tmp_path):
    """The whole model on the GPU: 20 training steps, same seed, same losses to 1e-3."""
    losses = {}
    for device, backend in (("cpu", "numpy"), ("cuda", "cuda")):
        trainer, losses[device] = char_lstm_losses(tmp_path / device, backend, device)
        assert all(p.device == device for p in trainer.model.parameters())
    np.testing.assert_allclose(losses["cuda"], losses["cpu"], rtol=1e-3)
    assert losses["cpu"][-1] < losses["cpu"][0]


@needs_gpu
def test_sample_on_cuda_gives_the_cpu_text(tmp_path):
    """`tgs sample --device cuda` runs the model on the GPU and, seeded, prints what the CPU prints."""
    from cli_helpers import tgs

    corpus = tmp_path / "c.txt"
    corpus.write_text("And God said, Let there be light: and there was light.\n" * 40)
    trained = tgs("train", "charlm", corpus, "--steps", 20, "--hidden", 32, "--out", tmp_path / "run")
    assert trained.exit_code == 0, trained.output
    texts = {}
    for device in ("cpu", "cuda"):
        result = tgs("sample", tmp_path / "run", "--length", 40, "--seed", 3, "--temperature", 0,
                     "--device", device)
        assert result.exit_code == 0, result.output
        texts[device] = result.output
    assert texts["cuda"] == texts["cpu"] and len(texts["cpu"].strip()) >= 40


# ----------------------------------------------------------------------------- no GPU needed

class _StandInDeviceArray(np.ndarray):
    """A NumPy array that the engine takes for a CuPy one (device_of reads the type's module),
    so the device check can be exercised on a machine without a GPU."""


_StandInDeviceArray.__module__ = "cupy.stand_in"


def test_mixing_devices_is_refused_before_any_op_runs():
    import tinygrad_seq as tgs
    from tinygrad_seq.tensor import Tensor
    a = tgs.Tensor(np.ones((2, 2)))
    b = Tensor._wrap(np.ones((2, 2)).view(_StandInDeviceArray))
    assert a.device == "cpu" and b.device == "cuda"
    with pytest.raises(RuntimeError, match=r"^Add: tensors on different devices: cpu and cuda; move one"):
        a + b
    with pytest.raises(RuntimeError, match=r"^Mul: tensors on different devices: cuda and cpu"):
        b * a
    with pytest.raises(RuntimeError, match="comparison: tensors on different devices: cpu and cuda"):
        a < b
    assert (a + 1).device == "cpu"          # a Python scalar joins either device


def test_cuda_device_without_a_gpu_says_why():
    if GPU_REASON is None:
        pytest.skip("this machine has a GPU and CuPy: moving to 'cuda' works here")
    import tinygrad_seq as tgs
    with pytest.raises(RuntimeError, match="device 'cuda' is not available .*pip install tinygrad_seq\\[gpu\\]"):
        tgs.Tensor(np.ones(3), device="cuda")
    assert tgs.Tensor(np.ones(3)).to("cpu").device == "cpu"


# ----------------------------------------------------------------------------- compile check (no GPU)

# Each kernel with the argument types a launch gives it: C-contiguous arrays, int64, bool.
_COMPILE_ALL = textwrap.dedent('''
    import sys, types
    from numba import cuda
    import numba.cuda.dispatcher as dispatcher

    def trivial(a):
        a[0] = 1

    try:
        cuda.compile_ptx(trivial, "void(float32[::1])", cc=(9, 0))
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}".splitlines()[0])
        sys.exit(3)  # no NVVM / NVRTC here
    # device functions ask the current device for its compute capability: pretend an sm_90
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))

    from tinygrad_seq.kernels.cuda import conv as C, normalization as N, optim as O, recurrence as R, softmax as S

    def arr(dtype, ndim):
        return dtype + "[" + ", ".join([":"] * (ndim - 1) + ["::1"]) + "]"

    # each kernel's argument types: aN an N-d array of the dtype, f its scalar, i4 the int64
    # argmax array, mask a bool matrix, intsN N int64 scalars; a recurrence step takes the pass's
    # inputs, its flat work array and t (kernels/cuda/recurrence.py)
    SIGNATURES = """
        C._im2col                    a4 a3 ints10
        C._col2im                    a3 a4 ints10
        C._maxpool_forward           a4 a4 i4 ints6
        C._maxpool_backward          a4 i4 a2
        C._avgpool_forward           a4 a4 ints6
        C._avgpool_backward          a4 a4 ints6
        S._softmax_forward_f{bits}   a2 mask boolean int64 a2
        S._softmax_backward_f{bits}  a2 a2 a2
        S._log_softmax_forward_f{bits}   a2 a2
        S._log_softmax_backward_f{bits}  a2 a2 a2
        R._rnn_step                  a3 a1 int64 boolean
        R._rnn_grad_step             a3 a3 a1 int64 boolean
        R._lstm_step                 a3 a1 int64
        R._lstm_grad_step            a3 a3 a3 a1 int64
        R._gru_step                  a3 a1 int64
        R._gru_grad_step             a3 a3 a3 a3 a1 int64
        O._adam_step                 a1 a1 a1 a1 a1 f f f f f f f f f boolean
        N._layer_norm_forward_f{bits}   a2 a1 a1 boolean boolean f a2 a1 a1
        N._layer_norm_backward_f{bits}  a2 a2 a1 boolean a1 a1 a2
        N._affine_partials              a2 a2 a1 a1 int64 a3
    """
    modules = {"C": C, "N": N, "O": O, "R": R, "S": S}

    for dt in ("float32", "float64"):
        types_of = {f"a{n}": arr(dt, n) for n in (1, 2, 3, 4)}
        types_of.update(f=dt, i4="int64[:, :, :, ::1]", mask="boolean[:, ::1]",
                        ints6=", ".join(["int64"] * 6), ints10=", ".join(["int64"] * 10))
        kernels = []
        for row in SIGNATURES.strip().splitlines():
            where, *args = row.split()
            module, name = where.split(".")
            kernels.append((getattr(modules[module], name.format(bits=dt[-2:])),
                            "void(" + ", ".join(types_of.get(a, a) for a in args) + ")"))
        for kernel, signature in kernels:
            ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=(9, 0))
            name = kernel.py_func.__name__
            f64_lines = [line for line in ptx.splitlines() if ".f64" in line and not line.lstrip().startswith("//")]
            assert dt == "float64" or not f64_lines, f"{name}: float64 arithmetic in the float32 kernel: {f64_lines[:3]}"
            print("compiled", dt, name)
''')


def test_every_kernel_compiles_for_the_real_cuda_target():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    run = subprocess.run([sys.executable, "-c", _COMPILE_ALL], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    if run.returncode == 3:
        pytest.skip("needs the CUDA compiler libraries NVVM and NVRTC (pip install nvidia-cuda-nvcc-cu12 "
                    f"nvidia-cuda-nvrtc-cu12): {run.stdout.strip()}")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("compiled") == 36, run.stdout
