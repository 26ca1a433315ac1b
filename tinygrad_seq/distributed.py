"""Data-parallel collectives over MPI, with PyTorch's `torch.distributed` names.

    import tinygrad_seq.distributed as dist
    dist.init_process_group("mpi")           # under `mpiexec -n N python train.py` (or srun)
    rank, world = dist.get_rank(), dist.get_world_size()
    dist.all_reduce(grad)                    # in place: the sum over every rank
    dist.broadcast(weights, src=0)
    dist.barrier()

Without mpi4py, or before `init_process_group`, this is a world of one process: get_rank() is
0, get_world_size() 1, and the collectives return their argument unchanged, so code written
for N ranks runs as it always did in one.  Importing this module imports no MPI; MPI is
initialised only by `init_process_group` (or `init_from_environment`, which the command line
calls and which does nothing unless the process was started by an MPI launcher).

A job must never hang because one rank died, and must say which one.  Three guards:
- an uncaught exception in any rank prints "rank R failed: ..." and aborts the whole job
  (MPI_Abort), so the others do not wait forever in their next collective;
- every collective waits at most `timeout` seconds (default 600, or $TGS_DIST_TIMEOUT) for
  the other ranks, then prints which collective timed out on which rank and aborts the job.
- a rank killed outright (SIGKILL, the out-of-memory killer) cannot say anything itself, and
  the launcher only names its pid ("BAD TERMINATION ... PID 1234 ... KILLED BY SIGNAL: 9")
  before it kills the others.  So every rank forks a small watcher before MPI starts; it
  waits on a pipe from its rank and, if the rank vanishes without saying goodbye, prints
  "Error: rank R (pid P on HOST) ended without finishing (killed, or out of memory?)" and the
  note the trainer left (where the last intact checkpoint is).  The first watcher to report
  on a node takes a lock, so the ranks the launcher kills afterwards stay quiet.
"""
import atexit
import os
import socket
import sys
import tempfile
import time

import numpy as np

DEFAULT_TIMEOUT = 600.0
ABORT_GRACE_SECONDS = 0.5

# Variables that the common launchers set in every process they start: MPICH/Intel MPI (PMI),
# Open MPI, PMIx-based launchers and Slurm's srun (SLURM_STEP_NUM_TASKS exists only inside a step).
# (Slurm's SLURM_NTASKS is also set in a batch script outside any srun step, where a
# `tgs train` is one process: it must not count.)
_LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS",
                            "SLURM_STEP_NUM_TASKS")
_LAUNCHER_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")


class ReduceOp:
    """Reduction of `all_reduce` (torch.distributed.ReduceOp)."""

    SUM = "sum"
    PRODUCT = "product"
    MIN = "min"
    MAX = "max"
    AVG = "avg"


class DistributedError(RuntimeError):
    """Distributed training cannot start (no mpi4py under a launcher, a bad backend name...)."""


class _World:
    comm = None       # an mpi4py communicator once initialised
    MPI = None        # the mpi4py.MPI module
    timeout = DEFAULT_TIMEOUT
    previous_hook = None
    watcher_pipe = None   # write end of the pipe to this rank's death watcher


_world = _World()


# ---------------------------------------------------------------------------- the process group
def is_available():
    """Whether mpi4py can be imported (the `mpi` extra is installed)."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def is_initialized():
    return _world.comm is not None


def launched_world_size():
    """How many processes the MPI launcher says it started (1 when not under a launcher)."""
    for name in _LAUNCHER_SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 1:
            return int(value)
    return 1


def launched_rank():
    """This process' rank as its launcher numbers it (None when not under a launcher); MPI's
    own rank (get_rank) is the one that counts once initialised."""
    if launched_world_size() == 1:
        return None
    for name in _LAUNCHER_RANK_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return None


def init_process_group(backend="mpi", timeout=None):
    """Join the job's process group (MPI_COMM_WORLD).  `timeout` (seconds; a datetime.timedelta
    works too) bounds every wait for the other ranks.  Calling it twice does nothing."""
    if backend != "mpi":
        raise DistributedError(f"backend {backend!r} is not supported; tinygrad_seq speaks 'mpi' only")
    if is_initialized():
        return
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise DistributedError(f"distributed training needs mpi4py ({exc}); install the mpi extra: "
                               "pip install 'tinygrad_seq[mpi]'") from None
    finally:
        # forked before mpi4py initialises MPI (importing it does): a child of an MPI process
        # must not share its network state
        if launched_world_size() > 1 and _world.watcher_pipe is None:
            _start_watcher()
    if hasattr(timeout, "total_seconds"):
        timeout = timeout.total_seconds()
    if timeout is None:
        timeout = float(os.environ.get("TGS_DIST_TIMEOUT", DEFAULT_TIMEOUT))
    _world.MPI = MPI
    _world.comm = MPI.COMM_WORLD.Dup()  # our own context: our messages never meet the user's
    _world.timeout = float(timeout)
    if _world.comm.Get_size() > 1:
        _world.previous_hook = sys.excepthook
        sys.excepthook = _abort_on_uncaught_exception
        _tell_watcher(f"R{get_rank()}")


def init_from_environment():
    """Initialise when started by an MPI launcher with more than one process; otherwise do
    nothing.  Returns the world size.  Raises DistributedError when launched as N > 1
    processes but mpi4py is missing (each would otherwise train alone, N times over)."""
    if os.environ.get("TGS_DISTRIBUTED", "1") == "0":
        return 1
    launched = launched_world_size()
    if launched > 1:
        if not is_available():
            raise DistributedError(f"started as {launched} MPI processes but mpi4py is not installed; "
                                   "install the mpi extra (pip install 'tinygrad_seq[mpi]') or run one process")
        init_process_group("mpi")
        if get_world_size() != launched:
            # e.g. srun starting processes that the pip MPICH cannot join into one job: each would
            # otherwise train its own copy of the model
            raise DistributedError(f"the launcher started {launched} processes but MPI sees {get_world_size()}: "
                                   f"this mpi4py's MPI ({_world.MPI.Get_library_version().splitlines()[0].strip()}) "
                                   "does not match the launcher; use its own mpiexec, or build mpi4py against "
                                   "the cluster's MPI (see the README)")
    return get_world_size()


def destroy_process_group():
    """Leave the process group (MPI itself is finalised at exit by mpi4py)."""
    if _world.comm is not None:
        _world.comm.Free()
        _world.comm = None
        if _world.previous_hook is not None:
            sys.excepthook = _world.previous_hook
            _world.previous_hook = None


def get_rank():
    return _world.comm.Get_rank() if _world.comm is not None else 0


def get_world_size():
    return _world.comm.Get_size() if _world.comm is not None else 1


def is_main_process():
    """Rank 0, the one that prints, writes metrics and checkpoints."""
    return get_rank() == 0


def abort(message, code=1):
    """Print `message` (prefixed with this rank) and end every process of the job."""
    _tell_watcher("X")  # this rank explains itself: its watcher stays quiet
    sys.stderr.write(f"Error: rank {get_rank()}: {message}\n")
    sys.stderr.flush()
    if _world.comm is not None and get_world_size() > 1:
        # the launcher forwards our stderr through a pipe; aborting at once can kill its
        # forwarder before it has passed the message on (seen on a loaded machine)
        time.sleep(ABORT_GRACE_SECONDS)
        _world.MPI.COMM_WORLD.Abort(code)
    raise SystemExit(code)


def _abort_on_uncaught_exception(kind, value, tb):
    previous = _world.previous_hook or sys.__excepthook__
    previous(kind, value, tb)
    abort(f"failed with {kind.__name__}: {value}; ending the other ranks of the job")


# ---------------------------------------------------------------------------- collectives
def _host_array(tensor):
    """(contiguous NumPy array to communicate, function putting the result back in place)."""
    data = tensor if isinstance(tensor, np.ndarray) else getattr(tensor, "data", tensor)
    if isinstance(data, np.ndarray) and data.flags.c_contiguous:
        return data, lambda result: None
    if isinstance(data, np.ndarray):
        buffer = np.ascontiguousarray(data)
        return buffer, lambda result: np.copyto(data, result)
    buffer = np.ascontiguousarray(data.get())  # a CuPy array: through the host
    return buffer, lambda result: data.set(result)


def _wait(request, what):
    """Complete a non-blocking request, giving up (and aborting the job) after the timeout.
    Polls: spinning first (a reduction of the gradients takes micro- to milliseconds), then
    sleeping briefly so that a rank waiting for a slower one leaves it the CPU."""
    if request.Test():
        return
    began = time.perf_counter()
    deadline = began + _world.timeout
    while not request.Test():
        now = time.perf_counter()
        if now > deadline:
            abort(f"{what} waited {_world.timeout:.0f} s for the other ranks (did one die or hang?); "
                  "aborting the job (set TGS_DIST_TIMEOUT to wait longer)")
        if now - began > 0.005:
            time.sleep(0.0002)


def _mpi_op(op):
    MPI = _world.MPI
    return {ReduceOp.SUM: MPI.SUM, ReduceOp.AVG: MPI.SUM, ReduceOp.PRODUCT: MPI.PROD,
            ReduceOp.MIN: MPI.MIN, ReduceOp.MAX: MPI.MAX}[op]


class Work:
    """A started all_reduce(async_op=True) (torch.distributed's Work): wait() completes it."""

    def __init__(self, request=None, buffer=None, put_back=None, op=ReduceOp.SUM):
        self.request, self.buffer, self.put_back, self.op = request, buffer, put_back, op

    def is_completed(self):
        """Whether it is done; asking also lets MPI advance it (without an asynchronous progress
        thread, MPI moves a non-blocking collective only inside MPI calls)."""
        return self.request is None or bool(self.request.Test())

    def wait(self):
        if self.request is None:
            return True
        _wait(self.request, "all_reduce")
        self.request = None
        if self.op == ReduceOp.AVG:
            world = get_world_size()
            self.buffer /= self.buffer.dtype.type(world) if self.buffer.dtype.kind == "f" else world
        self.put_back(self.buffer)
        return True


def all_reduce(tensor, op=ReduceOp.SUM, async_op=False):
    """Replace `tensor` (a Tensor or NumPy array) in place by its reduction over all ranks.
    async_op=True: start it and return a Work whose wait() finishes it (the tensor must not be
    touched before); else return the tensor."""
    if get_world_size() == 1:
        return Work() if async_op else tensor
    buffer, put_back = _host_array(tensor)
    work = Work(_world.comm.Iallreduce(_world.MPI.IN_PLACE, buffer, op=_mpi_op(op)), buffer, put_back, op)
    if async_op:
        return work
    work.wait()
    return tensor


def broadcast(tensor, src=0):
    """Replace `tensor` in place by rank `src`'s."""
    if get_world_size() == 1:
        return tensor
    buffer, put_back = _host_array(tensor)
    _wait(_world.comm.Ibcast(buffer, root=src), "broadcast")
    put_back(buffer)
    return tensor


def barrier(timeout=True):
    """Wait until every rank gets here (`timeout=False`: as long as it takes, e.g. while
    rank 0 encodes a corpus that the others will read)."""
    if get_world_size() == 1:
        return
    request = _world.comm.Ibarrier()
    if timeout:
        _wait(request, "barrier")
    else:
        request.Wait()


def broadcast_object_list(object_list, src=0):
    """Rank `src`'s picklable objects into `object_list` on every rank (in place)."""
    if get_world_size() == 1:
        return
    barrier()  # the pickled broadcast below blocks; first make sure every rank is alive
    object_list[:] = _world.comm.bcast(list(object_list) if get_rank() == src else None, root=src)


def all_gather_object(object_list, obj):
    """object_list[r] = rank r's `obj`, on every rank."""
    if get_world_size() == 1:
        object_list[:] = [obj]
        return
    barrier()
    object_list[:] = _world.comm.allgather(obj)


# ---------------------------------------------------------------------------- the death watcher
def set_failure_note(note):
    """One line the watcher adds when this rank dies (e.g. where the last intact checkpoint is)."""
    _tell_watcher("N" + note.replace("\n", " "))


def _tell_watcher(message):
    if _world.watcher_pipe is None:
        return
    try:
        os.write(_world.watcher_pipe, (message + "\n").encode())
    except OSError:
        pass


def _say_goodbye():
    _tell_watcher("X")


def _start_watcher():
    read_end, write_end = os.pipe()
    host, launcher, rank_pid = socket.gethostname(), os.getppid(), os.getpid()
    try:
        pid = os.fork()
    except OSError:  # no watcher: the launcher's own message will have to do
        os.close(read_end)
        os.close(write_end)
        return
    if pid:
        os.close(read_end)
        _world.watcher_pipe = write_end
        atexit.register(_say_goodbye)
        return
    # the watcher: nothing but reading the pipe and, maybe, one message
    code = 0
    try:
        os.close(write_end)
        os.closerange(3, read_end)
        os.setsid()  # out of the rank's process group: the launcher's cleanup does not reach it
        rank = launched_rank()
        rank = "?" if rank is None else str(rank)
        note, finished, pending = "", False, b""
        while True:
            chunk = os.read(read_end, 4096)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                text = line.decode(errors="replace")
                if text.startswith("R"):
                    rank = text[1:]
                elif text.startswith("N"):
                    note = text[1:]
                elif text == "X":
                    finished = True
        if not finished and _first_to_report(launcher):
            message = (f"Error: rank {rank} (pid {rank_pid}) on {host} ended without "
                       f"finishing (killed, or out of memory?); the job is ending.")
            os.write(2, ((message + (" " + note if note else "")) + "\n").encode())
    except BaseException:
        code = 1
    os._exit(code)


def _first_to_report(launcher):
    """True for the first watcher on this node of this job (ranks share their launcher process)."""
    try:
        with open(f"/proc/{launcher}/stat") as f:
            started = f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        started = "0"
    lock = os.path.join(tempfile.gettempdir(), f"tgs-rank-failure-{launcher}-{started}")
    try:
        os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    except OSError:
        return True
    return True
