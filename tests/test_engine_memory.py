"""The engine's own NumPy memory handler (tinygrad_seq.runtime, kernels/cython/_memory.pyx): big
arrays the engine frees come back for its next array of the same size, without a process-wide
allocator setting (only the engine's own work uses the handler)."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import tinygrad_seq as tgs
from tinygrad_seq import runtime
from tinygrad_seq.tensor import Function

try:
    from numpy._core.multiarray import get_handler_name
except ImportError:   # NumPy 1.x
    from numpy.core.multiarray import get_handler_name

memory = pytest.importorskip("tinygrad_seq.kernels.cython._memory",
                             reason="needs the compiled kernels (a C compiler at install time)")
REUSING = "tinygrad_seq_reusing"
BIG = 1 << 19          # float32 elements: 2 MiB, above the handler's 1 MiB threshold


class _Probe(Function):
    """y = 2x, recording which handler is current in the op and in another thread meanwhile."""
    seen = {}

    def forward(self, x):
        other = threading.Thread(target=lambda: self.seen.update(thread=get_handler_name()))
        other.start()
        other.join()
        self.seen["op"] = get_handler_name()
        return 2 * x

    def backward(self, dy):
        self.seen["backward"] = get_handler_name()
        return 2 * dy


def test_only_the_engines_work_uses_the_handler():
    x = tgs.ones(BIG, requires_grad=True)
    y = _Probe.apply(x)
    assert get_handler_name(y.data) == REUSING            # made in the op
    assert get_handler_name() == "default_allocator"      # restored after it
    y.sum().backward()
    assert _Probe.seen == {"op": REUSING, "thread": "default_allocator", "backward": REUSING}
    assert get_handler_name(np.empty(BIG, np.float32)) == "default_allocator"   # the user's arrays


def test_a_freed_block_serves_the_next_array_of_its_size():
    memory.release_kept()
    x = tgs.ones(BIG)
    y = x * 3.0
    address = y.data.ctypes.data
    del y
    blocks, kept_bytes = memory.kept()
    assert blocks == 1 and kept_bytes == BIG * 4
    z = x * 5.0                                           # same size: the same block again
    assert z.data.ctypes.data == address and memory.kept() == (0, 0)
    np.testing.assert_array_equal(z.data, np.full(BIG, 5.0, np.float32))
    del z
    previous = runtime.enter_engine_memory()
    try:
        zeros = np.zeros(BIG, np.float32)                  # calloc from a kept (dirty) block
    finally:
        runtime.leave_engine_memory(previous)
    assert zeros.ctypes.data == address and not zeros.any()


STEPS = """
import resource
import tinygrad_seq as tgs
from numpy._core.multiarray import get_handler_name
model = tgs.nn.Sequential(tgs.nn.Linear(256, 1024), tgs.nn.GELU(), tgs.nn.Linear(1024, 256))
opt = tgs.optim.Adam(model.parameters())
x = tgs.randn(512, 256)

def step():
    loss = (model(x) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5, get_handler_name((x * 2).data))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts page faults with Linux's getrusage")
def test_training_steps_stop_faulting_pages_in_and_TGS_MALLOPT_0_turns_it_off():
    """In a fresh process (no allocator setting made), after the first steps each big array of a
    step reuses one the previous step freed; with TGS_MALLOPT=0 they are mapped afresh (2 MiB
    activations: ~500 pages each) and NumPy's default handler makes them."""
    def run(**env):
        out = subprocess.run([sys.executable, "-c", STEPS], env=dict(os.environ, **env),
                             capture_output=True, text=True, check=True).stdout.split()
        return float(out[0]), out[1]
    environment = {k: v for k, v in os.environ.items() if k != "TGS_MALLOPT"}
    faults, handler = run(**environment)
    assert faults < 100 and handler == REUSING, (faults, handler)
    faults_off, handler_off = run(TGS_MALLOPT="0")
    assert faults_off > 1000 and handler_off == "default_allocator", (faults_off, handler_off)


def test_kept_memory_is_bounded_and_the_oldest_sizes_age_out():
    memory.release_kept()
    previous = runtime.enter_engine_memory()
    try:
        for k in range(300):                     # 300 sizes of 1-2 MiB: more than the 256 MiB kept
            block = np.empty((1 << 20) + k * 4096, np.uint8)
            last_address = block.ctypes.data
            del block
        blocks, kept_bytes = memory.kept()
        assert blocks <= 256 and kept_bytes <= 256 << 20
        again = np.empty((1 << 20) + 299 * 4096, np.uint8)     # the newest size is still there
        assert again.ctypes.data == last_address
        first = np.empty(1 << 20, np.uint8)                    # the oldest was given back
        assert memory.kept()[0] == blocks - 1
        del again, first
    finally:
        runtime.leave_engine_memory(previous)
        memory.release_kept()
