"""The benchmark harness behind `tgs bench` and bench/run_benchmarks.py.

Each workload of ../shared/benchmarks.md is one training step (forward + backward +
optimiser update) built twice: once with tinygrad_seq and once with PyTorch, from the
same sizes.  Both run in the same process, so the ratio compares like with like:
median of `repeats` timed steps after `warmup` untimed ones, the implementations' steps
taken in turn (one of each per round).  PyTorch is optional here
(the bench extra); without it the table has no ratio column.

On a GPU every step, tgs's and PyTorch's alike, ends by waiting for the device
(device_synchronize): kernel launches return before the work is done, and a step timed
without waiting would leave its backward and optimiser work to be billed to whichever step
synchronises next.  float32 math is like for like: PyTorch runs with TF32 off, tgs's cuBLAS
calls strict FP32, plus one tgs row with CuPy's TF32 compute type where CuPy exposes it.
"""
import contextlib
import dataclasses
import platform
import statistics
import time

import numpy as np

RNN_MODES = {"lstm_lm": "LSTM", "gru_lm": "GRU", "rnn_lm": "RNN"}
# the three recurrent workloads share their sizes, so that their rows compare the cells alone
CPU_SIZES = {
    **{workload: dict(V=65, H=256, B=32, T=64) for workload in RNN_MODES},
    "cnn": dict(B=64),
    "transformer": dict(V=65, d=128, heads=4, layers=2, B=16, T=128),
    # the same network as `transformer`, its blocks written by hand from public ops (user_block_lm)
    "transformer_block": dict(V=65, d=128, heads=4, layers=2, B=16, T=128),
    "scalar_mlp": dict(points=100),
}
GPU_SIZES = {
    **{workload: dict(V=65, H=1024, B=256, T=128) for workload in RNN_MODES},
    "cnn": dict(B=1024),
    "transformer": dict(V=65, d=512, heads=8, layers=4, B=64, T=256),
}
# Approximate FLOPs of one lstm_lm-style step, for the GFLOP/s column (forward 1x, backward 2x).
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


@dataclasses.dataclass
class Result:
    workload: str
    impl: str
    ms: float
    gflops: float = None
    tf32: bool = False    # a GPU row whose float32 matmuls ran in TF32 (CuPy's compute type)
    # transformer_block's tgs rows: the same backend's TransformerLM step (the `transformer`
    # workload), timed in the same rounds, so that block / model is not two runs' noise apart
    model_ms: float = None


def rnn_step_flops(mode, V, H, B, T):
    g = GATES[mode] * H
    forward = 2 * B * T * (V * g + H * g + H * V)
    return 3 * forward


def median_ms(step, warmup=3, repeats=15):
    return interleaved_median_ms({"step": step}, warmup, repeats)["step"]


def interleaved_median_ms(steps, warmup=3, repeats=15):
    """{name: median ms} of the zero-argument functions in `steps`, timed in rounds of one call
    each: on a shared machine a burst of someone else's load then slows every implementation
    in the round alike, instead of whichever one happened to be running (timed one after the
    other, PyTorch's own lstm_lm step moved by 40% between runs)."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def best_block_median_ms(steps, warmup=3, repeats=15, passes=2):
    """{name: ms} for the zero-argument functions in `steps`, each warmed up and timed `repeats`
    times in a block of its own (median), `passes` rounds of blocks, keeping each step's least
    disturbed (lowest) block median: the bench/ scripts' timing of kernels alone.

    Blocks, not interleaved calls (interleaved_median_ms is for whole training steps): every
    implementation timed there has its own spinning thread pool (OpenBLAS, PyTorch's OpenMP,
    Numba's), and alternating them call by call on 2 cores makes each wait for the others'
    spinning threads (measured: 10-50x slower for all of them)."""
    best = {}
    for _ in range(passes):
        for name, step in steps.items():
            for _ in range(warmup):
                step()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
            ms = statistics.median(times) * 1e3
            best[name] = min(ms, best.get(name, ms))
    return best


def race_table(ms, columns):
    """The lines of a table of `ms` {(implementation, column): ms} (best_block_median_ms's keys
    as pairs): per implementation each column's ms and its ratio to ("torch", column); a missing
    "both" is the implementation's forward + backward."""
    names = list(dict.fromkeys(name for name, _ in ms))
    header = "".join(f"{column + ' ms':>12s}{'vs torch':>10s}" for column in columns)
    lines = [f"  {'':15s}{header}"]
    for name in names:
        cells = []
        for column in columns:
            t = ms.get((name, column))
            if t is None and column == "both" and (name, "forward") in ms and (name, "backward") in ms:
                t = ms[name, "forward"] + ms[name, "backward"]
            ref = ms.get(("torch", column))
            cells.append(f"{t:12.3f}" if t is not None else f"{'-':>12s}")
            cells.append(f"{t / ref:9.2f}x" if t is not None and ref and name != "torch" else f"{'-':>10s}")
        lines.append(f"  {name:15s}" + "".join(cells))
    return lines


def row_kernel_race(argv, doc, steps, columns, n, what, footnote):
    """The command line of a bench/ script racing one row-wise kernel family on (rows, n) float32
    (--repeats, --passes, --rows, --n): `steps(rows, n)` gives its {(row, column): step}, timed
    by best_block_median_ms and printed as race_table's lines under the CPU model and `what`."""
    import argparse
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--n", type=int, default=n)
    args = parser.parse_args(argv)
    print(f"{cpu_model()}; {what.format(rows=args.rows, n=args.n)}")
    ms = best_block_median_ms(steps(args.rows, args.n), warmup=5, repeats=args.repeats, passes=args.passes)
    print("\n".join(race_table(ms, columns)))
    print(footnote)


def cpu_model():
    """lscpu's "Model name" (what BENCHMARKS.md records beside every figure), else what the
    platform module can tell."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            found = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), None)
    except OSError:
        found = None
    return found or platform.processor() or platform.machine() or "unknown CPU"


def user_block_lm(nn, F, arange, V, d, heads, layers, T):
    """The `transformer` workload's network with its blocks written the way a PyTorch user writes
    one: nn.Linear for q, k and v at once, reshape/transpose into heads,
    F.scaled_dot_product_attention(is_causal=True), nn.LayerNorm, nn.GELU.  Written once, for
    either framework: `nn`, `F` and `arange` are torch's or tinygrad_seq's."""

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

        def forward(self, x):
            B, L, _ = x.shape
            q, k, v = (t.reshape(B, L, heads, d // heads).transpose(1, 2)
                       for t in self.qkv(self.ln1(x)).chunk(3, dim=-1))
            attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(attended.transpose(1, 2).reshape(B, L, d))
            return x + self.mlp(self.ln2(x))

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok, self.pos = nn.Embedding(V, d), nn.Embedding(T, d)
            self.blocks = nn.Sequential(*(Block() for _ in range(layers)))
            self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, V)

        def forward(self, idx):
            x = self.tok(idx) + self.pos(arange(idx.shape[1]))
            return self.head(self.ln(self.blocks(x)))
    return LM()


# ---------------------------------------------------------------------------- the steps, written once
@dataclasses.dataclass(frozen=True)
class Framework:
    """What a workload needs of one framework, so that each workload's step is written once for
    tinygrad_seq and PyTorch alike.  `tensor` and `one_hot` take NumPy arrays drawn from the
    shared generator and put them on the device (float data as float32); `reference_lm` builds
    the framework's own transformer LM for the `transformer` workload."""
    name: str
    nn: object
    F: object
    optim: object
    tensor: object          # numpy array -> tensor on the device
    one_hot: object         # (numpy int array, classes) -> float one-hot tensor on the device
    arange: object          # n -> arange(n) on the device
    reference_lm: object    # (V, d, heads, layers, T) -> the framework's transformer LM


def tgs_framework(device="cpu"):
    import tinygrad_seq as tgs
    from tinygrad_seq import nn, optim
    from tinygrad_seq.models.transformer_lm import TransformerLM, TransformerLMConfig
    from tinygrad_seq.nn import functional as F

    def reference_lm(V, d, heads, layers, T):
        return TransformerLM(TransformerLMConfig(vocab_size=V, block_size=T, n_embd=d, n_head=heads,
                                                 n_layer=layers, dropout=0.0))
    return Framework("tgs", nn, F, optim,
                     tensor=lambda array: tgs.Tensor(array).to(device),
                     one_hot=lambda array, classes: tgs.one_hot(tgs.Tensor(array), classes).float().to(device),
                     arange=lambda n: tgs.arange(n, device=device), reference_lm=reference_lm)


def torch_framework(device="cpu"):
    import torch
    import torch.nn.functional as F
    dev = torch.device(device)

    def tensor(array):
        return torch.as_tensor(array, dtype=torch.float32 if array.dtype.kind == "f" else None, device=dev)
    return Framework("pytorch", torch.nn, F, torch.optim, tensor=tensor,
                     one_hot=lambda array, classes: F.one_hot(tensor(array), classes).float(),
                     arange=lambda n: torch.arange(n, device=dev), reference_lm=_torch_reference_lm)


def _torch_reference_lm(V, d, heads, layers, T):
    """PyTorch's own pre-norm transformer (nn.TransformerEncoder) with token and position
    embeddings: the peer of tinygrad_seq's TransformerLM."""
    import torch

    class TorchLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = torch.nn.Embedding(V, d)
            self.pos = torch.nn.Embedding(T, d)
            block = torch.nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, activation="gelu",
                                                     batch_first=True, norm_first=True)
            self.blocks = torch.nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
            self.ln = torch.nn.LayerNorm(d)
            self.head = torch.nn.Linear(d, V)
            self.register_buffer("mask", torch.nn.Transformer.generate_square_subsequent_mask(T))

        def forward(self, idx):
            h = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
            return self.head(self.ln(self.blocks(h, mask=self.mask, is_causal=True)))
    return TorchLM()


def _training_step(loss_fn, opt, clip_params=None, clip_grad_norm_=None):
    """One step: loss, zero_grad, backward, (gradient-norm clip to 5), optimiser update."""
    def step():
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        if clip_params is not None:
            clip_grad_norm_(clip_params, 5.0)
        opt.step()
    return step


def _rnn_lm_step(fw, mode, rng, device, V, H, B, T):
    """A one-layer recurrent LM on one-hot characters, Adam, gradients clipped to norm 5."""
    rnn = getattr(fw.nn, mode)(V, H, batch_first=True).to(device)
    head = fw.nn.Linear(H, V).to(device)
    params = list(rnn.parameters()) + list(head.parameters())
    tokens = rng.integers(0, V, size=(B, T + 1))
    x, y = fw.one_hot(tokens[:, :-1], V), fw.tensor(tokens[:, 1:].reshape(-1))
    return _training_step(lambda: fw.F.cross_entropy(head(rnn(x)[0]).reshape(B * T, V), y),
                          fw.optim.Adam(params, lr=1e-3), params, fw.nn.utils.clip_grad_norm_)


CNN_IMAGE, CNN_CLASSES = 28, 10   # MNIST-sized inputs


def _cnn_step(fw, rng, device, B):
    """Two conv(3x3, same padding) + ReLU + 2x2 max-pool stages and a linear classifier, SGD."""
    nn = fw.nn
    channels = (1, 16, 32)
    pooled = CNN_IMAGE // 2 // 2     # two 2x2 pools
    model = nn.Sequential(
        nn.Conv2d(channels[0], channels[1], 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(channels[1], channels[2], 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(channels[2] * pooled * pooled, CNN_CLASSES)).to(device)
    x = fw.tensor(rng.standard_normal((B, channels[0], CNN_IMAGE, CNN_IMAGE)))
    y = fw.tensor(rng.integers(0, CNN_CLASSES, size=B))
    return _training_step(lambda: fw.F.cross_entropy(model(x), y),
                          fw.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))


def _transformer_step(fw, workload, rng, device, V, d, heads, layers, B, T):
    """A causal transformer LM, Adam: the framework's own (`transformer`) or user_block_lm."""
    if workload == "transformer":
        model = fw.reference_lm(V, d, heads, layers, T).to(device)
    else:
        model = user_block_lm(fw.nn, fw.F, fw.arange, V, d, heads, layers, T).to(device)
    tokens = rng.integers(0, V, size=(B, T + 1))
    x, y = fw.tensor(tokens[:, :-1]), fw.tensor(tokens[:, 1:])
    return _training_step(lambda: fw.F.cross_entropy(model(x).reshape(B * T, V), y.reshape(-1)),
                          fw.optim.Adam(model.parameters(), lr=1e-3))


def _scalar_mlp_step(rng, points):
    """micrograd's two-moons-style task on the scalar Value engine: hinge loss, plain SGD."""
    from tinygrad_seq.scalar_nn import MLP
    from tinygrad_seq.value import Value
    xy = rng.standard_normal((points, 2))
    labels = np.where(xy[:, 0] * xy[:, 1] > 0, 1.0, -1.0)
    model = MLP(2, [16, 16, 1])

    def step():
        scores = [model([Value(a), Value(b)]) for a, b in xy]
        losses = [(1 + -yi * si).relu() for yi, si in zip(labels, scores)]
        loss = sum(losses) * (1.0 / len(losses))
        model.zero_grad()
        loss.backward()
        for p in model.parameters():
            p.data -= 0.01 * p.grad
    return step


def framework_step(fw, workload, sizes, device="cpu", seed=0):
    """A zero-argument function running one training step of `workload` in framework `fw`,
    its parameters and data drawn from `seed` (the same arrays for either framework)."""
    rng = np.random.default_rng(seed)
    if workload in RNN_MODES:
        return _rnn_lm_step(fw, RNN_MODES[workload], rng, device, **sizes)
    if workload == "cnn":
        return _cnn_step(fw, rng, device, **sizes)
    if workload in ("transformer", "transformer_block"):
        return _transformer_step(fw, workload, rng, device, **sizes)
    if workload == "scalar_mlp" and fw.name == "tgs":
        return _scalar_mlp_step(rng, **sizes)
    raise ValueError(f"unknown workload {workload!r}: one of {', '.join(CPU_SIZES)}")


def tgs_step(workload, sizes, device="cpu", seed=0):
    """A zero-argument function running one training step of `workload` in tinygrad_seq."""
    import tinygrad_seq as tgs
    tgs.manual_seed(seed)
    return framework_step(tgs_framework(device), workload, sizes, device, seed)


def torch_step(workload, sizes, device="cpu", seed=0):
    """The same training step in PyTorch (imported here only); None for scalar_mlp: PyTorch has
    no scalar engine, micrograd is its peer (bench/bench_scalar_mlp.py)."""
    if workload == "scalar_mlp":
        return None
    import torch
    torch.manual_seed(seed)
    return framework_step(torch_framework(device), workload, sizes, device, seed)


def runnable_backends(device):
    """The kernel backends that serve `device` and can run here, in the registry's order."""
    from tinygrad_seq.backend import BACKENDS, unavailable_reason
    return [name for name, (_, devices) in BACKENDS.items() if device in devices and unavailable_reason(name) is None]


MODEL_ROW = " TransformerLM"


def run(workloads=None, backends=None, device="cpu", warmup=3, repeats=15, with_torch=True, echo=print):
    """Time every workload on every requested backend and PyTorch, their steps interleaved
    (interleaved_median_ms); returns a list of Result.  On a GPU each step waits for the
    device before its clock stops, PyTorch runs with TF32 off, and where CuPy has a TF32
    switch each tgs backend gets a second row with it on."""
    sizes_table = CPU_SIZES if device == "cpu" else GPU_SIZES
    workloads = list(workloads or sizes_table)
    if backends is None:
        backends = runnable_backends(device)
    on_gpu = device != "cpu"
    tf32_switch = cupy_tf32_switch() if on_gpu else None
    results = []
    with (torch_tf32(False) if on_gpu and with_torch else contextlib.nullcontext()):
        for workload in workloads:
            sizes = sizes_table[workload]
            flops = rnn_step_flops(RNN_MODES[workload], **sizes) if workload in RNN_MODES else None
            steps, tf32_rows = {}, set()
            torch_workload = torch_step(workload, sizes, device) if with_torch else None
            if torch_workload is not None:
                steps["pytorch"] = torch_workload
            for name in (["-"] if workload == "scalar_mlp" else backends):
                impl = "tgs" if name == "-" else f"tgs[{name}]"
                backend_name = "auto" if name == "-" else name
                steps[impl] = _on_backend(backend_name, tgs_step(workload, sizes, device), tf32_switch, False)
                if tf32_switch is not None:
                    steps[impl + " TF32"] = _on_backend(backend_name, tgs_step(workload, sizes, device),
                                                        tf32_switch, True)
                    tf32_rows.add(impl + " TF32")
                if workload == "transformer_block":
                    steps[impl + MODEL_ROW] = _on_backend(backend_name, tgs_step("transformer", sizes, device),
                                                          tf32_switch, False)
            if on_gpu:
                steps = {impl: _synchronized(step, device) for impl, step in steps.items()}
            medians = interleaved_median_ms(steps, warmup, repeats)
            for impl, ms in medians.items():
                if impl.endswith(MODEL_ROW):
                    continue
                tf32 = impl in tf32_rows
                results.append(Result(workload, impl[:-len(" TF32")] if tf32 else impl, ms,
                                      flops / ms / 1e6 if flops else None, tf32=tf32,
                                      model_ms=medians.get(impl + MODEL_ROW)))
                echo(f"  {workload:12s} {impl:8s} {ms:9.1f} ms")
    return results


def device_synchronize(device):
    """Wait until every kernel queued on `device` has finished (nothing to wait for on the CPU).
    One device-wide wait covers both frameworks: CuPy and PyTorch share the device's context."""
    if device == "cpu":
        return
    from tinygrad_seq.device import cupy_or_none
    cupy = cupy_or_none()
    if cupy is not None:
        cupy.cuda.runtime.deviceSynchronize()
    else:
        import torch
        torch.cuda.synchronize()


def _synchronized(step, device):
    """`step`, then a wait for the device: the step's queued work is billed to the step."""
    def run_step():
        step()
        device_synchronize(device)
    return run_step


@contextlib.contextmanager
def torch_tf32(enabled):
    """PyTorch's TF32 switches for cuBLAS matmuls and cuDNN (RNN, conv) set to `enabled`, and
    restored afterwards: cuDNN uses TF32 by default, CuPy's matmuls are strict FP32."""
    import torch
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def cupy_tf32_switch():
    """A context-manager factory switching CuPy's float32 matmuls to TF32 (True) or strict FP32
    (False), or None when CuPy is missing or keeps the switch elsewhere.  CuPy reads CUPY_TF32=1
    once, at its first matmul, into a per-dtype compute type that set_compute_type changes."""
    try:
        from cupy._core import _routines_linalg as linalg
        get, put = linalg.get_compute_type, linalg.set_compute_type
        modes = {True: linalg.COMPUTE_TYPE_TF32, False: linalg.COMPUTE_TYPE_DEFAULT}
    except (ImportError, AttributeError):
        return None

    @contextlib.contextmanager
    def switch(enabled):
        saved = get(np.float32)
        put(np.float32, modes[enabled])
        try:
            yield
        finally:
            put(np.float32, saved)
    return switch


def _on_backend(name, step, tf32_switch=None, tf32=False):
    """`step` run with the kernel backend `name`, whatever the process default is (and with
    CuPy's float32 matmuls in TF32 or strict FP32 when there is a `tf32_switch`)."""
    import tinygrad_seq as tgs

    def run_step():
        with tgs.backend(name), (tf32_switch(tf32) if tf32_switch else contextlib.nullcontext()):
            step()
    return run_step


# the kernel families whose backend a workload's time mostly depends on (optim: the Adam workloads)
WORKLOAD_FAMILIES = {"lstm_lm": ("recurrence", "matmul", "optim"), "gru_lm": ("recurrence", "matmul", "optim"),
                     "rnn_lm": ("recurrence", "matmul", "optim"), "cnn": ("conv",),
                     "transformer": ("attention", "activation", "normalization", "matmul", "optim"),
                     "transformer_block": ("attention", "activation", "normalization", "matmul", "optim")}


def fastest_per_family(results):
    """{family: backend} with the smallest total time over the family's workloads (only
    backends timed on all of them compete): what `tgs bench --write-choice` stores for auto."""
    times = {}
    for r in results:
        if r.workload in WORKLOAD_FAMILIES and r.impl.startswith("tgs[") and not r.tf32:
            for family in WORKLOAD_FAMILIES[r.workload]:
                times.setdefault(family, {}).setdefault(r.impl[4:-1], {})[r.workload] = r.ms
    winners = {}
    for family, by_backend in times.items():
        needed = max(len(w) for w in by_backend.values())
        complete = {name: sum(w.values()) for name, w in by_backend.items() if len(w) == needed}
        winners[family] = min(complete, key=complete.get)
    return winners


def format_table(results, device="cpu"):
    """Markdown table: ms/step, ratio to PyTorch of the same workload, GFLOP/s where known;
    on a GPU, a last line says which float32 math each row used."""
    torch_ms = {r.workload: r.ms for r in results if r.impl == "pytorch"}
    lines = ["| workload | implementation | ms/step | ratio vs PyTorch | GFLOP/s |",
             "| --- | --- | ---: | ---: | ---: |"]
    for r in results:
        ratio = f"{r.ms / torch_ms[r.workload]:.2f}" if r.workload in torch_ms else "-"
        gflops = f"{r.gflops:.1f}" if r.gflops else "-"
        impl = f"{r.impl} TF32" if r.tf32 else r.impl
        lines.append(f"| {r.workload} | {impl} | {r.ms:.1f} | {ratio} | {gflops} |")
    for r in results:
        if r.model_ms:
            lines.append(f"\n{r.workload}, {r.impl}: {r.ms / r.model_ms:.2f}x the step of its own TransformerLM "
                         f"({r.model_ms:.1f} ms), timed in the same rounds")
    if device != "cpu":
        lines.append("\nfloat32 math: pytorch with TF32 off (torch.backends.cuda.matmul.allow_tf32 = "
                     "torch.backends.cudnn.allow_tf32 = False); tgs rows strict FP32 cuBLAS, "
                     "except rows marked TF32 (CuPy's TF32 compute type, as CUPY_TF32=1 sets).")
    return "\n".join(lines)


def attention_pairs(L, S, causal):
    """The (query, key) pairs attention computes per matrix: L S, or under the causal mask the
    visible ones only, sum_i min(i + 1, S)."""
    if not causal:
        return L * S
    full = max(0, L - S)                       # the rows past the S-th see every key
    seen = min(L, S)
    return seen * (seen + 1) // 2 + full * S


def _kernel_flops(family, function, args):
    """Multiply-add FLOPs of one kernel call where they are one product's: matmul, the
    recurrences' per-step products with W_hh (2 T B G H, G = gates x H rows; lstm_forward_xh's
    with [W_ih | b] too, 2 T B G (K + H)), and attention's
    products over the visible pairs (forward 2 (E + Ev) per pair: q k^T and p v; backward
    2 (3 E + 2 Ev): q k^T again, dout v^T, ds k, ds^T q, p^T dout); else None."""
    from tinygrad_seq.backend import CONTRACT
    if family == "attention":
        names = CONTRACT[family][function]
        q, v = args[names.index("q")], args[names.index("v")]
        N, (L, E), (S, Ev) = int(np.prod(q.shape[:-2])), q.shape[-2:], v.shape[-2:]   # any leading axes
        per_pair = E + Ev if function == "attention_forward" else 3 * E + 2 * Ev
        return 2 * N * attention_pairs(L, S, bool(args[names.index("causal")])) * per_pair
    if family == "matmul":
        a, b = args[0], args[1]
        return 2 * a.size * b.shape[-1]          # a's batch x M x K, times N
    if family == "recurrence":
        names = CONTRACT[family][function]
        weights = args[names.index("w_hh")].size + (args[names.index("w_x")].size if "w_x" in names else 0)
        return 2 * _steps(function, args) * args[0].shape[1] * weights
    return None


def _steps(function, args):
    """T of a recurrence kernel call: its sequence's length (lstm_forward_xh's rows have T + 1)."""
    return args[0].shape[0] - (function == "lstm_forward_xh")


def _kernel_part(family, function, args):
    """A profile row's name: the function and the shapes that set its cost."""
    from tinygrad_seq.backend import CONTRACT
    if family == "matmul":
        a, b = args[0], args[1]
        batch = f"{int(np.prod(a.shape[:-2]))} x " if a.ndim > 2 else ""
        return f"matmul {batch}{a.shape[-2]}x{a.shape[-1]} @ {b.shape[-2]}x{b.shape[-1]}"
    if family == "recurrence":
        return f"{function} T={_steps(function, args)} B={args[0].shape[1]}"
    if family == "attention":
        names = CONTRACT[family][function]
        q, v = args[names.index("q")], args[names.index("v")]
        causal = " causal" if args[names.index("causal")] else ""
        return (f"{function} {int(np.prod(q.shape[:-2]))} x {q.shape[-2]}x{q.shape[-1]}, "
                f"{v.shape[-2]}x{v.shape[-1]}{causal}")
    return f"{function} {'x'.join(map(str, getattr(args[0], 'shape', ())))}"


def kernel_profile(workload, sizes, backend, device="cpu", warmup=3, steps=10):
    """Where one tgs training step's time goes: [(part, calls per step, ms per step, GFLOP/s or
    None)], every kernel call (through the registry's observe_kernels) grouped by function and
    shapes, slowest first, then the rest of the step (Python, NumPy's own ops) and the step."""
    from tinygrad_seq.backend import observe_kernels
    step = _synchronized(_on_backend(backend, tgs_step(workload, sizes, device)), device)
    for _ in range(warmup):
        step()
    parts = {}

    def record(family, function, args, seconds):
        entry = parts.setdefault(_kernel_part(family, function, args),
                                 [0, 0.0, _kernel_flops(family, function, args)])
        entry[0] += 1
        entry[1] += seconds
    with observe_kernels(record):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        total = time.perf_counter() - start
    rows = [(part, calls / steps, seconds / steps * 1e3, flops * calls / seconds / 1e9 if flops else None)
            for part, (calls, seconds, flops) in sorted(parts.items(), key=lambda kv: -kv[1][1])]
    kernel_ms = sum(row[2] for row in rows)
    return rows + [("everything else (Python, NumPy's own ops)", None, total / steps * 1e3 - kernel_ms, None),
                   ("step", 1, total / steps * 1e3, None)]


def torch_profile(workload, sizes, device="cpu", warmup=3, steps=10, top=8):
    """PyTorch's step of the same workload: [(ATen op, calls per step, self ms per step)] of the
    `top` ops by self CPU time (torch.profiler), then the step."""
    from torch.profiler import ProfilerActivity, profile
    step = _synchronized(torch_step(workload, sizes, device), device)
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    total = time.perf_counter() - start
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:top]
    return ([(e.key, e.count / steps, e.self_cpu_time_total / 1e3 / steps) for e in ops]
            + [("step (under the profiler)", 1, total / steps * 1e3)])


def peak_rss_mib():
    """This process's peak resident memory in MiB.

    Linux's VmHWM starts afresh at exec; getrusage's ru_maxrss does not (a child forked from a
    600 MiB parent reports at least 600 MiB), so it is only the fallback elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    import sys
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024   # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def peak_memory_mb(workload, impl, device="cpu", steps=5):
    """Peak resident memory (MiB) of a fresh process running `steps` steps of one workload.

    A fresh process per measurement keeps one framework's allocations out of the other's
    figure; `impl` is 'pytorch' or a backend name."""
    import json
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "from tinygrad_seq import benchmark as b\n"
        "from tinygrad_seq.benchmark import peak_rss_mib\n"
        f"w, impl, dev, n = {workload!r}, {impl!r}, {device!r}, {steps}\n"
        "sizes = (b.CPU_SIZES if dev == 'cpu' else b.GPU_SIZES)[w]\n"
        "if impl == 'pytorch':\n"
        "    import torch; torch.set_num_threads(2); step = b.torch_step(w, sizes, dev)\n"
        "else:\n"
        "    import tinygrad_seq as tgs; tgs.set_backend(impl); step = b.tgs_step(w, sizes, dev)\n"
        "for _ in range(n): step()\n"
        "print(json.dumps(peak_rss_mib()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
