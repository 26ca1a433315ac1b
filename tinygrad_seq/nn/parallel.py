"""DistributedDataParallel: one model trained on N processes, each on its own share of the batch.

    import tinygrad_seq.distributed as dist
    from tinygrad_seq.nn.parallel import DistributedDataParallel

    dist.init_process_group("mpi")
    model = DistributedDataParallel(build_model())   # every rank now holds rank 0's weights
    loss = loss_fn(model(x_shard), y_shard)          # the mean over this rank's share
    loss.backward()                                  # .grad = the mean over every rank's share
    optimizer.step()                                 # identical on every rank

With equal shares, the average of the ranks' mean-loss gradients is the gradient of the mean
loss over the global batch:  g = (1/N) sum_r g_r,  g_r = d/dw mean_{i in shard r} l_i.

The gradients travel in buckets: they are copied into a few contiguous buffers of at most
`bucket_cap_mb` each (one per dtype and size limit), each reduced with one MPI allreduce,
and copied back.  A char-LSTM's 330k parameters are one 1.3 MB allreduce per step instead of
seven.  By default the reduction runs once the whole backward is done.  `overlap=True`
starts each bucket's non-blocking allreduce as soon as the backward has finished its
gradients instead; measured on 2 ranks (BENCHMARKS.md, "Reducing during the backward") it
was 4-10% slower, with MPICH's asynchronous progress thread off (MPI advances a started
allreduce only inside MPI calls) and on (the thread takes a core from the compute), so it
stays opt-in, for machines with a spare core per rank and a real network between them.

A parameter that received no gradient on a rank counts as a zero gradient there (and gets a
zero .grad), so every rank takes part in the same reductions.
With one process (or without MPI) the wrapper changes nothing.
"""
import weakref

import numpy as np

from .. import distributed as dist
from ..tensor import Tensor, _grad_ready_hooks, _post_backward_hooks, is_grad_enabled
from .module import Module

__all__ = ["DistributedDataParallel"]


class DistributedDataParallel(Module):
    """Wraps `module`; forward is the module's, backward leaves gradients averaged over ranks.

    overlap=True starts each bucket's allreduce (non-blocking) as soon as the backward has
    finished all of its gradients, and waits for them all when the backward ends; buckets
    then follow the parameters in reverse (the order a backward finishes them) and always
    start in that order, so every rank issues the same collectives in the same order."""

    def __init__(self, module, bucket_cap_mb=25, broadcast_parameters=True, overlap=False):
        super().__init__()
        self.module = module
        self.bucket_cap_bytes = int(bucket_cap_mb * 2 ** 20)
        self.overlap = bool(overlap)
        self._buckets = None
        self._pending = False
        self._armed = False          # overlap: this backward's gradients are ours to reduce
        self._bucket_of = {}         # overlap: id(parameter) -> bucket index
        self._waiting = []           # overlap: per bucket, parameters not ready yet
        self._works = []             # overlap: started buckets' Work, in start order
        self._next = 0               # overlap: the next bucket to start
        if broadcast_parameters and dist.get_world_size() > 1:
            # rank 0's initial weights everywhere, whatever each rank's seed drew
            for tensor in list(module.parameters()) + list(module.buffers()):
                if tensor is not None:
                    dist.broadcast(tensor, src=0)
        own = weakref.ref(self)

        def after_backward():
            ddp = own()
            if ddp is None:
                _post_backward_hooks.remove(after_backward)
            elif ddp._pending:
                ddp.reduce_gradients()

        def grad_ready(tensor):
            ddp = own()
            if ddp is None:
                _grad_ready_hooks.remove(grad_ready)
            elif ddp._armed:
                ddp._grad_ready(tensor)

        self._hook = after_backward
        _post_backward_hooks.append(after_backward)
        if self.overlap:
            self._ready_hook = grad_ready
            _grad_ready_hooks.append(grad_ready)

    def forward(self, *args, **kwargs):
        if is_grad_enabled() and self.training:
            self._pending = True  # reduce when this graph's backward ends
            self.prepare_for_backward()
        return self.module(*args, **kwargs)

    def prepare_for_backward(self):
        """With overlap: the next backward's gradients are a training step's, to be reduced as
        they become ready.  Forward does this; a loop that calls the wrapped module itself
        calls it before backward() and reduce_gradients() after."""
        if self.overlap and dist.get_world_size() > 1:
            self._ensure_buckets()
            self._armed = True

    def __getattr__(self, name):
        # the wrapped model's attributes (carries_state, select_state, ...) as PyTorch users expect
        # from `model.module`; only reached when the wrapper itself has no such attribute
        if name == "module" or name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.__dict__["module"], name)

    # ------------------------------------------------------------------ the reduction
    def _make_buckets(self, params):
        """Consecutive parameters of one dtype, at most bucket_cap_bytes per bucket (a larger
        parameter gets a bucket of its own)."""
        buckets, current, size = [], [], 0
        for p in params:
            nbytes = p.numel() * p.dtype.itemsize
            if current and (p.dtype != current[0].dtype or size + nbytes > self.bucket_cap_bytes):
                buckets.append(current)
                current, size = [], 0
            current.append(p)
            size += nbytes
        if current:
            buckets.append(current)
        return [(group, np.empty(sum(p.numel() for p in group), dtype=group[0].dtype)) for group in buckets]

    def _ensure_buckets(self):
        params = [p for p in self.module.parameters() if p.requires_grad]
        if self._buckets is None or sum(len(g) for g, _ in self._buckets) != len(params):
            # overlap: in reverse, the order in which a backward finishes the gradients
            self._buckets = self._make_buckets(params[::-1] if self.overlap else params)
            self._bucket_of = {id(p): i for i, (group, _) in enumerate(self._buckets) for p in group}
            self._reset_overlap()

    def _reset_overlap(self):
        self._waiting = [len(group) for group, _ in self._buckets]
        self._works, self._next = [], 0

    def _grad_ready(self, tensor):
        index = self._bucket_of.get(id(tensor))
        if index is None:
            return
        self._waiting[index] -= 1
        while self._next < len(self._buckets) and not self._waiting[self._next]:
            self._start(self._next)
        for work in self._works:  # let MPI move the started ones along
            work.is_completed()

    def _start(self, index):
        group, flat = self._buckets[index]
        offset = 0
        for p in group:
            n = p.numel()
            if p.grad is None:
                flat[offset:offset + n] = 0
            else:
                flat[offset:offset + n] = _host(p.grad.data).reshape(-1)
            offset += n
        self._works.append(dist.all_reduce(flat, async_op=True))
        self._next = index + 1

    def reduce_gradients(self):
        """Average every parameter's .grad over the ranks, in place (called after backward)."""
        self._pending = False
        self._armed = False
        world = dist.get_world_size()
        if world == 1:
            return
        if not self.overlap or not self._works:
            self._ensure_buckets()
        while self._next < len(self._buckets):  # buckets the backward did not finish (unused parameters)
            self._start(self._next)
        for work in self._works:
            work.wait()
        for group, flat in self._buckets:
            flat /= flat.dtype.type(world)
            offset = 0
            for p in group:
                n = p.numel()
                averaged = flat[offset:offset + n].reshape(p.shape)
                if p.grad is None or not isinstance(p.grad.data, np.ndarray):
                    p.grad = Tensor._wrap(_like(p.data, averaged))
                else:
                    np.copyto(p.grad.data, averaged)
                offset += n
        self._reset_overlap()


def _host(array):
    return array if isinstance(array, np.ndarray) else array.get()


def _like(reference, array):
    """A copy of `array` on the device of `reference`."""
    if isinstance(reference, np.ndarray):
        return array.copy()
    from ..device import to_device
    return to_device(array.copy(), "cuda")
