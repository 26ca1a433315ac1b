"""The benchmark harness (not timings: those live in bench/ and BENCHMARKS.md): every
workload builds and steps in both frameworks, the table's ratios, and auto's choice table."""
import json

import pytest
from click.testing import CliRunner

import importlib

from tinygrad_seq import benchmark
from tinygrad_seq.cli.main import cli

backend = importlib.import_module("tinygrad_seq.backend")  # the module; tinygrad_seq.backend is also a function

TINY = {"lstm_lm": dict(V=7, H=4, B=2, T=3), "gru_lm": dict(V=7, H=4, B=2, T=3), "rnn_lm": dict(V=7, H=4, B=2, T=3),
        "cnn": dict(B=2), "transformer": dict(V=7, d=8, heads=2, layers=1, B=2, T=4),
        "transformer_block": dict(V=7, d=8, heads=2, layers=1, B=2, T=4), "scalar_mlp": dict(points=5)}


@pytest.mark.parametrize("workload", list(TINY))
def test_every_workload_steps_in_both_frameworks(workload):
    step = benchmark.tgs_step(workload, TINY[workload], "cpu")
    step()
    step()
    if workload != "scalar_mlp":
        torch_step = benchmark.torch_step(workload, TINY[workload], "cpu")
        torch_step()


def test_implementations_are_timed_in_interleaved_rounds(monkeypatch):
    """Warm-ups first, then one step of each implementation per round, each with its own
    median; and every tgs step runs on the backend it is labelled with."""
    calls = []
    medians = benchmark.interleaved_median_ms({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                              warmup=2, repeats=3)
    assert calls == ["a", "a", "b", "b"] + ["a", "b"] * 3
    assert set(medians) == {"a", "b"} and all(ms >= 0 for ms in medians.values())

    calls.clear()      # the bench/ scripts' kernels: a block of each, pass after pass, the best block kept
    best = benchmark.best_block_median_ms({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                          warmup=1, repeats=2, passes=2)
    assert calls == (["a"] * 3 + ["b"] * 3) * 2 and set(best) == {"a", "b"}
    lines = benchmark.race_table({("ours", "forward"): 1.0, ("ours", "backward"): 3.0, ("torch", "forward"): 2.0,
                                  ("torch", "both"): 2.0}, ("forward", "both"))
    assert lines[1].split() == ["ours", "1.000", "0.50x", "4.000", "2.00x"]     # both = forward + backward
    assert lines[2].split() == ["torch", "2.000", "-", "2.000", "-"]

    seen = []
    monkeypatch.setattr(benchmark, "tgs_step", lambda *args: lambda: seen.append(backend.current()))
    monkeypatch.setattr(benchmark, "torch_step", lambda *args: None)
    results = benchmark.run(["lstm_lm"], backends=["numpy", "numba"], warmup=1, repeats=2, echo=lambda line: None)
    assert [r.impl for r in results] == ["tgs[numpy]", "tgs[numba]"]
    assert seen == ["numpy", "numba"] + ["numpy", "numba"] * 2


def test_transformer_block_is_timed_beside_its_backends_transformer_lm(monkeypatch):
    """transformer_block's tgs rows carry the same backend's TransformerLM median from the same
    rounds (no row of their own, so --write-choice and --memory never see it), and the table says
    block / model."""
    seen = []
    monkeypatch.setattr(benchmark, "tgs_step", lambda workload, *args: lambda: seen.append((workload, backend.current())))
    monkeypatch.setattr(benchmark, "torch_step", lambda *args: None)
    results = benchmark.run(["transformer_block"], backends=["numpy"], warmup=0, repeats=2, echo=lambda line: None)
    assert seen == [("transformer_block", "numpy"), ("transformer", "numpy")] * 2
    (row,) = results
    assert row.impl == "tgs[numpy]" and row.model_ms is not None and row.model_ms >= 0

    R = benchmark.Result
    table = benchmark.format_table([R("transformer_block", "pytorch", 30.0),
                                    R("transformer_block", "tgs[cython]", 24.0, model_ms=20.0)])
    assert "transformer_block, tgs[cython]: 1.20x the step of its own TransformerLM (20.0 ms)" in table


def test_table_ratios_and_the_fastest_backend_per_family():
    R = benchmark.Result
    results = [R("lstm_lm", "pytorch", 10.0), R("lstm_lm", "tgs[numba]", 15.0), R("lstm_lm", "tgs[cython]", 12.0),
               R("gru_lm", "tgs[numba]", 20.0), R("gru_lm", "tgs[cython]", 30.0), R("cnn", "tgs[numpy]", 3.0),
               R("cnn", "tgs[numba]", 2.0), R("transformer", "tgs[numpy]", 5.0)]
    table = benchmark.format_table(results)
    assert "| lstm_lm | tgs[numba] | 15.0 | 1.50 |" in table and "| cnn | tgs[numpy] | 3.0 | - |" in table
    assert benchmark.fastest_per_family(results) == {"recurrence": "numba", "conv": "numba", "attention": "numpy",
                                                     "activation": "numpy", "normalization": "numpy",
                                                     "matmul": "numba", "optim": "numba"}


def test_bench_write_choice_goes_to_the_user_config_and_auto_follows_it(tmp_path, monkeypatch):
    """--write-choice writes $XDG_CONFIG_HOME/tinygrad_seq/auto_backend.json, leaves the shipped
    table (a tracked file in a checkout, read-only in a system install) alone, and wins over it."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setattr(benchmark, "CPU_SIZES", TINY)
    with open(backend.CHOICE_TABLE, "rb") as f:
        shipped = f.read()
    assert json.loads(shipped)["cpu"]["recurrence"] != "numpy"   # else the last check proves nothing
    result = CliRunner().invoke(cli, ["bench", "-w", "rnn_lm", "--backend", "numpy", "--repeats", "1",
                                      "--warmup", "0", "--no-torch", "--write-choice"])
    assert result.exit_code == 0, result.output
    assert "| rnn_lm | tgs[numpy] |" in result.stdout
    table = tmp_path / "config" / "tinygrad_seq" / "auto_backend.json"
    assert json.loads(table.read_text()) == {"cpu": {"matmul": "numpy", "optim": "numpy", "recurrence": "numpy"}}
    assert str(table) in result.stderr
    with open(backend.CHOICE_TABLE, "rb") as f:
        assert f.read() == shipped
    with backend.backend("auto"):
        assert backend.resolve("recurrence") == "numpy"


def test_bench_write_choice_to_an_unwritable_config_is_a_one_line_error(tmp_path, monkeypatch):
    (tmp_path / "config").write_text("a file where the config folder should be")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setattr(benchmark, "CPU_SIZES", TINY)
    result = CliRunner().invoke(cli, ["bench", "-w", "rnn_lm", "--backend", "numpy", "--repeats", "1",
                                      "--warmup", "0", "--no-torch", "--write-choice"])
    assert result.exit_code != 0
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("Error: could not write the choice table") and "XDG_CONFIG_HOME" in message
    assert "Traceback" not in result.output


def test_peak_memory_is_the_measured_process_own():
    """A child forked from a big process must not report the parent's peak (ru_maxrss would)."""
    import numpy as np

    from tinygrad_seq.benchmark import peak_memory_mb, peak_rss_mib
    ballast = np.ones(400 * 2 ** 20 // 8)  # 400 MiB resident in this process
    assert peak_rss_mib() > 400
    child = peak_memory_mb("scalar_mlp", "numpy", steps=1)
    assert 10 < child < 300
    del ballast


def test_bench_takes_comma_separated_backends_and_rejects_unknown_ones_before_timing(monkeypatch):
    timed = []
    monkeypatch.setattr(benchmark, "CPU_SIZES", TINY)
    monkeypatch.setattr(benchmark, "run", lambda workloads, backends, *a, **k: timed.append(backends) or [])
    result = CliRunner().invoke(cli, ["bench", "-w", "rnn_lm", "--backend", "numpy,numba", "--no-torch"])
    assert result.exit_code == 0, result.output
    assert timed == [["numpy", "numba"]]
    result = CliRunner().invoke(cli, ["bench", "-w", "rnn_lm", "--backend", "numpy,cythn", "--no-torch"])
    assert result.exit_code != 0 and "unknown backend 'cythn'" in result.output
    assert len(timed) == 1                      # nothing was timed


def test_kernel_race_has_a_workload_for_every_family(capsys):
    """bench/bench_cython_kernels.py times each registry family; a family added to the
    registry without a workload there would make it fail."""
    import runpy
    from pathlib import Path

    from tinygrad_seq.backend import FAMILIES
    script = Path(__file__).resolve().parents[1] / "bench" / "bench_cython_kernels.py"
    race = runpy.run_path(str(script), run_name="bench_cython_kernels")
    assert set(race["WORKLOADS"]) == set(FAMILIES)
    assert race["main"](["--families", "activation", "--repeats", "1", "--warmup", "0"]) in (None, 0)
    out = capsys.readouterr().out
    assert "activation" in out and "numpy" in out


def test_numpy_first_runs_the_bench_in_a_process_like_a_users_script():
    """`tgs bench --numpy-first`: a child that imports numpy before tinygrad_seq, without the
    thread settings the `tgs` process made for itself, prints the same table."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_THREAD_TIMEOUT", "GOMP_SPINCOUNT")}
    result = subprocess.run([sys.executable, "-m", "tinygrad_seq.cli.main", "bench", "--numpy-first", "-w",
                             "scalar_mlp", "--repeats", "1", "--warmup", "0", "--no-torch"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "numpy imported first; OPENBLAS_THREAD_TIMEOUT=unset" in result.stderr
    assert "| scalar_mlp | tgs |" in result.stdout


def test_numpy_first_times_each_backend_in_a_process_of_its_own():
    """Two backends' thread pools in one process without the tgs command's settings slow each
    other, so --numpy-first runs one child per backend, each printing its own table; the
    cross-backend --write-choice is refused there with a one-line error."""
    import os
    import subprocess
    import sys

    names = [name for name in ("numpy", "cython", "numba") if name in benchmark.runnable_backends("cpu")][:2]
    if len(names) < 2:
        pytest.skip("needs two runnable CPU backends (the cython one is compiled by pip install)")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_THREAD_TIMEOUT", "GOMP_SPINCOUNT")}
    command = [sys.executable, "-m", "tinygrad_seq.cli.main", "bench", "--numpy-first", "-w", "rnn_lm",
               "-w", "scalar_mlp", "--repeats", "1", "--warmup", "0", "--no-torch", "--backend", ",".join(names)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("numpy imported first") == 2
    for name in names:
        assert f"numpy-first: backend {name}, in a process of its own" in result.stderr
        assert result.stdout.count(f"| rnn_lm | tgs[{name}] |") == 1
    assert result.stdout.count("| scalar_mlp | tgs |") == 1
    refused = subprocess.run(command + ["--write-choice"], capture_output=True, text=True, env=env, timeout=300)
    assert refused.returncode == 2 and "--write-choice compares the backends within one process" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_the_user_written_block_model_is_the_transformer_workloads_network():
    """transformer_block times the same network as transformer (same parameter count), written
    from public ops, and the one definition builds in both frameworks."""
    import torch

    from tinygrad_seq import nn
    from tinygrad_seq.nn import functional as F
    import tinygrad_seq as tgs
    from tinygrad_seq.models.transformer_lm import TransformerLM, TransformerLMConfig

    sizes = dict(V=7, d=8, heads=2, layers=2, T=4)
    ours = benchmark.user_block_lm(nn, F, tgs.arange, **sizes)
    theirs = benchmark.user_block_lm(torch.nn, torch.nn.functional, torch.arange, **sizes)
    lm = TransformerLM(TransformerLMConfig(vocab_size=7, block_size=4, n_embd=8, n_head=2, n_layer=2))
    count = lambda model: sum(int(p.numel()) if hasattr(p, "numel") else p.data.size for p in model.parameters())
    assert count(ours) == count(theirs) == count(lm)
    assert ours(tgs.Tensor([[1, 2, 3, 4]])).shape == (1, 4, 7)


def test_kernel_flops_count_the_products_multiply_adds():
    import numpy as np
    a, b = np.ones((2, 3, 4)), np.ones((2, 4, 5))
    assert benchmark._kernel_flops("matmul", "matmul", (a, b)) == 2 * 2 * 3 * 4 * 5
    xw, w_hh = np.ones((3, 2, 16)), np.ones((16, 4))       # T=3, B=2, 4 gates of H=4
    assert benchmark._kernel_flops("recurrence", "lstm_forward", (xw, w_hh, None, None)) == 2 * 3 * 2 * 16 * 4
    xh, w_x = np.ones((4, 2, 7 + 4)), np.ones((16, 7))      # lstm_forward_xh: T + 1 rows, K = 7 inputs
    args = (xh, w_x, w_hh, None)
    assert benchmark._kernel_flops("recurrence", "lstm_forward_xh", args) == 2 * 3 * 2 * 16 * (7 + 4)
    assert benchmark._kernel_part("recurrence", "lstm_forward_xh", args) == "lstm_forward_xh T=3 B=2"
    dhs = np.ones((3, 2, 4))
    args = (dhs, None, w_hh, None, None, None, None, None)   # lstm_backward: w_hh is the third
    assert benchmark._kernel_flops("recurrence", "lstm_backward", args) == 2 * 3 * 2 * 16 * 4
    assert benchmark._kernel_flops("softmax", "softmax_forward", (a, None)) is None
    q, v = np.zeros((6, 5, 4)), np.zeros((6, 3, 7))      # L = 5 queries, S = 3 keys
    assert benchmark.attention_pairs(5, 3, True) == 1 + 2 + 3 + 3 + 3
    assert benchmark._kernel_flops("attention", "attention_forward", (q, None, v, 0.5, False)) == 2 * 6 * 15 * (4 + 7)
    assert benchmark._kernel_flops("attention", "attention_backward", (None, q, None, v, None, None, 0.5, True)) \
        == 2 * 6 * 12 * (3 * 4 + 2 * 7)
    assert benchmark._kernel_part("attention", "attention_forward", (q, None, v, 0.5, True)) == \
        "attention_forward 6 x 5x4, 3x7 causal"


def test_kernel_profile_accounts_for_the_whole_step(monkeypatch):
    """Every kernel call of the step lands in a row (the LSTM's two kernels once per step, the
    products with their GFLOP/s), and the rows plus the rest add up to the step."""
    monkeypatch.setattr(benchmark, "CPU_SIZES", TINY)
    rows = benchmark.kernel_profile("lstm_lm", TINY["lstm_lm"], "numpy", warmup=1, steps=2)
    by_part = {part: (calls, ms, gflops) for part, calls, ms, gflops in rows}
    assert by_part["lstm_forward_xh T=3 B=2"][0] == 1 and by_part["lstm_backward T=3 B=2"][0] == 1
    assert by_part["lstm_forward_xh T=3 B=2"][2] > 0
    assert by_part["matmul 16x6 @ 6x12"][0] == 1     # the weight gradients: dpre^T [x | 1 | h_prev]
    assert not any(part.startswith("matmul 6x8 @") for part in by_part)   # no input projection: in the loop
    assert rows[-1][0] == "step"
    assert sum(ms for _, _, ms, _ in rows[:-1]) == pytest.approx(rows[-1][2])
    assert all(ms >= 0 for _, _, ms, _ in rows[:-2])


def test_bench_profile_prints_tgs_and_pytorch_tables(monkeypatch):
    pytest.importorskip("torch", reason="the PyTorch table needs PyTorch (the bench extra)")
    monkeypatch.setattr(benchmark, "CPU_SIZES", TINY)
    result = CliRunner().invoke(cli, ["bench", "--profile", "-w", "lstm_lm", "--backend", "numpy",
                                      "--repeats", "2", "--warmup", "1"])
    assert result.exit_code == 0, result.output
    assert "lstm_lm, tgs[numpy]" in result.stdout
    assert "| lstm_backward T=3 B=2 | 1 |" in result.stdout
    assert "| everything else (Python, NumPy's own ops) |" in result.stdout
    assert "lstm_lm, pytorch" in result.stdout and "| aten::" in result.stdout
