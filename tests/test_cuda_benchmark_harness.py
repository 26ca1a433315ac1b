"""The GPU side of the benchmark harness, on a fake device (no GPU needed): a step's queued
device work is billed to that step, and the table says which float32 math each row used."""
import contextlib
import time

from tinygrad_seq import benchmark

QUEUED_S = 0.04   # device work one tgs step leaves queued when its Python code returns


class FakeDevice:
    """Launches return at once; a synchronize waits for everything queued so far, whoever queued it."""

    def __init__(self):
        self.queued_s = 0.0
        self.syncs = []

    def launch(self, seconds):
        self.queued_s += seconds

    def synchronize(self, device):
        self.syncs.append(device)
        time.sleep(self.queued_s)
        self.queued_s = 0.0


def test_each_cuda_step_waits_for_its_own_device_work(monkeypatch):
    gpu = FakeDevice()
    # tgs's step only queues work; PyTorch's step, like torch.cuda.synchronize(), waits for the
    # whole device: without the harness's wait after the tgs step, tgs's work lands on PyTorch.
    monkeypatch.setattr(benchmark, "tgs_step", lambda *args: lambda: gpu.launch(QUEUED_S))
    monkeypatch.setattr(benchmark, "torch_step", lambda *args: lambda: gpu.synchronize("torch"))
    monkeypatch.setattr(benchmark, "device_synchronize", gpu.synchronize)
    monkeypatch.setattr(benchmark, "torch_tf32", lambda enabled: contextlib.nullcontext())
    results = benchmark.run(["lstm_lm"], backends=["numpy"], device="cuda", warmup=1, repeats=3,
                            echo=lambda line: None)
    ms = {r.impl: r.ms for r in results}
    assert ms["tgs[numpy]"] >= 0.9 * QUEUED_S * 1e3, ms
    assert ms["pytorch"] < 0.5 * QUEUED_S * 1e3, ms
    assert gpu.syncs.count("cuda") == 2 * (1 + 3)   # after every step of both, warm-ups included


def test_cpu_steps_do_not_synchronize(monkeypatch):
    calls = []
    monkeypatch.setattr(benchmark, "tgs_step", lambda *args: lambda: None)
    monkeypatch.setattr(benchmark, "torch_step", lambda *args: None)
    monkeypatch.setattr(benchmark, "device_synchronize", lambda device: calls.append(device))
    benchmark.run(["lstm_lm"], backends=["numpy"], device="cpu", warmup=1, repeats=2, echo=lambda line: None)
    assert calls == []


def test_torch_is_timed_with_tf32_off_and_restored():
    import torch
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        with benchmark.torch_tf32(False):
            assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (False, False)
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_tf32_rows_are_marked_in_the_table_and_never_chosen_for_auto():
    R = benchmark.Result
    results = [R("lstm_lm", "pytorch", 10.0), R("lstm_lm", "tgs[cuda]", 20.0),
               R("lstm_lm", "tgs[cuda]", 5.0, tf32=True)]
    table = benchmark.format_table(results, device="cuda")
    assert "| lstm_lm | tgs[cuda] | 20.0 | 2.00 |" in table
    assert "| lstm_lm | tgs[cuda] TF32 | 5.0 | 0.50 |" in table
    assert "pytorch with TF32 off" in table
    assert "TF32" not in benchmark.format_table(results[:2], device="cpu")
    assert benchmark.fastest_per_family(results) == {"recurrence": "cuda", "matmul": "cuda", "optim": "cuda"}
    assert benchmark.fastest_per_family(results[:1] + results[2:]) == {}


def test_the_tf32_switch_exists_exactly_when_cupy_imports():
    import importlib.util
    switch = benchmark.cupy_tf32_switch()
    if importlib.util.find_spec("cupy") is None:
        assert switch is None
    else:   # CuPy installed: its compute-type switch must be found (else no TF32 row on the GPU)
        assert callable(switch)
