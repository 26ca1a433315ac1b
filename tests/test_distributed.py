"""Data-parallel training over MPI (tinygrad_seq.distributed, nn.parallel, `mpiexec -n 2 tgs train`).

The MPI tests start `mpiexec -n 2` as a subprocess, one kernel thread per rank (the CI machine
has two cores); they skip only where the mpi extra (mpi4py and an mpiexec) is missing."""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import numpy as np
import pytest

import tinygrad_seq.distributed as dist
from tinygrad_seq.checkpoint import load_checkpoint

# the mpich wheel puts mpiexec beside the interpreter, which need not be on PATH (a venv not activated)
_BESIDE = os.path.join(os.path.dirname(sys.executable), "mpiexec")
MPIEXEC = _BESIDE if os.access(_BESIDE, os.X_OK) else shutil.which("mpiexec")
needs_mpi = pytest.mark.skipif(MPIEXEC is None or not dist.is_available(),
                               reason="needs the mpi extra (mpi4py + mpiexec)")
TGS = [sys.executable, "-m", "tinygrad_seq.cli.main"]
TEXT = ("In the beginning God created the heaven and the earth. And the earth was without form, "
        "and void; and darkness was upon the face of the deep.\n") * 40
TINY = ["--hidden", "24", "--embed", "8", "--seq-len", "16", "--batch-size", "8"]


def one_thread_env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", TGS_CYTHON_THREADS="1",
               OPENBLAS_NUM_THREADS="1", TGS_DIST_TIMEOUT="120",
               # Open MPI's mpiexec refuses root (CI containers) unless told; MPICH ignores these
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    # a test run under a launcher must not look like a rank
    for name in dist._LAUNCHER_SIZE_VARIABLES + dist._LAUNCHER_RANK_VARIABLES:
        env.pop(name, None)
    env.update(extra)
    return env


def run(args, ranks=1, timeout=300, env=None):
    command = ([MPIEXEC, "-n", str(ranks)] if ranks > 1 else []) + [str(a) for a in args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env or one_thread_env())


def losses(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text(TEXT)
    return path


# ---------------------------------------------------------------------------- one process
def test_a_world_of_one_without_init():
    assert not dist.is_initialized()
    assert dist.get_rank() == 0 and dist.get_world_size() == 1 and dist.is_main_process()
    x = np.arange(4.0)
    assert dist.all_reduce(x) is x and np.array_equal(x, np.arange(4.0))
    dist.broadcast(x)
    dist.barrier()
    gathered = []
    dist.all_gather_object(gathered, {"a": 1})
    assert gathered == [{"a": 1}]


def test_ddp_with_one_process_leaves_gradients_alone():
    from tinygrad_seq import Tensor, nn
    from tinygrad_seq.nn.parallel import DistributedDataParallel

    model = nn.Linear(3, 2)
    ddp = DistributedDataParallel(model)
    x = Tensor(np.ones((4, 3), dtype=np.float32))
    ddp(x).sum().backward()
    expected = np.full((2, 3), 4.0, dtype=np.float32)
    np.testing.assert_array_equal(model.weight.grad.numpy(), expected)
    assert [name for name, _ in ddp.named_parameters()] == ["module.weight", "module.bias"]


def test_grad_ready_hooks_fire_once_per_leaf_when_its_gradient_is_complete():
    from tinygrad_seq import Tensor
    from tinygrad_seq.tensor import _grad_ready_hooks

    w = Tensor(np.array([2.0, 3.0]), requires_grad=True)   # used twice: ready after both
    b = Tensor(np.array([1.0, 1.0]), requires_grad=True)
    unused = Tensor(np.array([5.0]), requires_grad=True)
    seen = []

    def hook(tensor):
        seen.append((tensor, tensor.grad.numpy().copy()))

    _grad_ready_hooks.append(hook)
    try:
        x = Tensor(np.array([1.0, 4.0]))
        ((w * x + b) * w).sum().backward()
    finally:
        _grad_ready_hooks.remove(hook)
    assert sorted(id(t) for t, _ in seen) == sorted([id(w), id(b)])  # once each, never `unused`
    for tensor, grad in seen:  # complete when announced
        np.testing.assert_array_equal(grad, tensor.grad.numpy())
    np.testing.assert_array_equal(w.grad.numpy(), 2 * np.array([2.0, 3.0]) * [1.0, 4.0] + 1.0)


# ---------------------------------------------------------------------------- two ranks
DDP_SCRIPT = textwrap.dedent("""
    import numpy as np
    import tinygrad_seq.distributed as dist
    from tinygrad_seq import Tensor, manual_seed, nn
    from tinygrad_seq.nn import functional as F
    from tinygrad_seq.nn.parallel import DistributedDataParallel

    dist.init_process_group("mpi")
    rank, world = dist.get_rank(), dist.get_world_size()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(11, 6)
            self.rnn = nn.LSTM(6, 8, batch_first=True)
            self.head = nn.Linear(8, 11)

        def forward(self, x):
            out, _ = self.rnn(self.embedding(x))
            return self.head(out)

    manual_seed(100 + rank)                # different weights per rank: DDP must broadcast rank 0's
    model = Net()
    ddp = DistributedDataParallel(model, bucket_cap_mb=0.002)   # several buckets
    assert len(ddp._make_buckets(list(model.parameters()))) > 1
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 11, (6, 5)), rng.integers(0, 11, (6, 5))
    rows = slice(3 * rank, 3 * rank + 3)
    loss = F.cross_entropy(ddp(Tensor(x[rows])).reshape(-1, 11), Tensor(y[rows].reshape(-1)))
    loss.backward()
    ddp_grads = [p.grad.numpy().copy() for p in model.parameters()]
    # the same weights, the whole batch, one process's arithmetic
    model.zero_grad()
    F.cross_entropy(model(Tensor(x)).reshape(-1, 11), Tensor(y.reshape(-1))).backward()
    for got, want in zip(ddp_grads, [p.grad.numpy() for p in model.parameters()]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    weights = [p.numpy() for p in model.parameters()]
    gathered = []
    dist.all_gather_object(gathered, weights)
    for a, b in zip(*gathered):
        np.testing.assert_array_equal(a, b)
    # overlapped: each bucket's allreduce starts during the backward; the same averaged gradients
    overlapped = DistributedDataParallel(model, bucket_cap_mb=0.0005, overlap=True)  # ~a bucket per parameter
    for reused in range(2):  # twice: the buckets are set up again after each reduction
        model.zero_grad()
        F.cross_entropy(overlapped(Tensor(x[rows])).reshape(-1, 11), Tensor(y[rows].reshape(-1))).backward()
        assert not overlapped._works and overlapped._next == 0
        for got, want in zip([p.grad.numpy() for p in model.parameters()], ddp_grads):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    # a loop calling the module itself: prepare_for_backward, backward, reduce_gradients
    model.zero_grad()
    overlapped.prepare_for_backward()
    F.cross_entropy(model(Tensor(x[rows])).reshape(-1, 11), Tensor(y[rows].reshape(-1))).backward()
    started = len(overlapped._works)
    assert started == len(overlapped._buckets) > 3, "buckets not started during the backward"
    overlapped.reduce_gradients()
    for got, want in zip([p.grad.numpy() for p in model.parameters()], ddp_grads):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    print(f"rank {rank}: ddp gradients match; overlapped too ({started} of {len(overlapped._buckets)} "
          "buckets started during the backward)")
""")


@needs_mpi
def test_ddp_gradients_equal_single_process_full_batch_gradients(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    result = run([sys.executable, script], ranks=2, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rank 0: ddp gradients match" in result.stdout and "rank 1: ddp gradients match" in result.stdout


@needs_mpi
def test_two_ranks_follow_one_rank_and_resume_on_any_number(tmp_path, corpus):
    """20 steps with global batch 8 on 1 and on 2 ranks give the same losses (float order aside);
    the 2-rank checkpoint resumes on 1 rank and on 2 ranks alike, and samples."""
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["train", "charlm", corpus, *TINY, "--steps", 20, "--eval-every", 10]
    r1 = run(TGS + common + ["--out", one])
    assert r1.returncode == 0, r1.stderr
    r2 = run(TGS + common + ["--out", two], ranks=2)
    assert r2.returncode == 0, r2.stderr
    assert "2 ranks, 4 streams each" in r2.stderr
    # rank 0 alone prints: two validations, one "done"
    assert r2.stderr.count("validation loss") == 2 and r2.stderr.count("done: 20 steps") == 1, r2.stderr
    l1, l2 = losses(one), losses(two)
    assert sorted(l1) == sorted(l2) and 20 in l1
    for step in l1:
        assert l2[step] == pytest.approx(l1[step], rel=1e-4), step
    state = load_checkpoint(two)
    assert state["train"]["step"] == 20
    assert np.asarray(state["train"]["carry"][0]).shape[1] == 8  # the whole batch's carried state

    # resume the 2-rank run on 1 rank and on 2 ranks: both continue the same run
    on_one, on_two = tmp_path / "on_one", tmp_path / "on_two"
    shutil.copytree(two, on_one)
    shutil.copytree(two, on_two)
    r = run(TGS + ["train", "charlm", corpus, "--out", on_one, "--resume", "--steps", 30])
    assert r.returncode == 0 and "Resuming at step 20" in r.stderr, r.stderr
    r = run(TGS + ["train", "charlm", corpus, "--out", on_two, "--resume", "--steps", 30], ranks=2)
    assert r.returncode == 0 and "Resuming at step 20" in r.stderr, r.stderr
    assert losses(on_two)[30] == pytest.approx(losses(on_one)[30], rel=1e-4)
    r1 = run(TGS + ["train", "charlm", corpus, *TINY, "--steps", 30, "--eval-every", 10, "--out", tmp_path / "ref"])
    assert losses(on_two)[30] == pytest.approx(losses(tmp_path / "ref")[30], rel=1e-4)

    sample = run(TGS + ["sample", on_two, "--length", 40, "--seed", 1])
    assert sample.returncode == 0 and len(sample.stdout.strip()) >= 30, sample.stderr


def _pid_of_rank(marker, rank):
    """The pid of the process started with TGS_TEST_MARK=marker as rank `rank` (Linux /proc)."""
    mark = f"TGS_TEST_MARK={marker}".encode()
    ranks = {f"{name}={rank}".encode() for name in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = set(f.read().split(b"\0"))
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                is_tgs = b"tinygrad_seq.cli.main" in f.read()
        except OSError:
            continue
        if is_tgs and mark in environ and ranks & environ:
            return int(entry)
    return None


@needs_mpi
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the rank's pid through /proc (Linux)")
def test_a_killed_rank_ends_the_job_naming_it_and_the_checkpoint_survives(tmp_path, corpus):
    out = tmp_path / "run"
    marker = uuid.uuid4().hex
    command = [MPIEXEC, "-n", "2"] + TGS + ["train", "charlm", str(corpus), *TINY, "--steps", "100000",
                                            "--eval-every", "5", "--out", str(out)]
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=one_thread_env(TGS_TEST_MARK=marker))
    try:
        deadline = time.time() + 120
        while not (out / "checkpoint.npz").exists() and time.time() < deadline and job.poll() is None:
            time.sleep(0.2)
        assert (out / "checkpoint.npz").exists(), "no checkpoint was written"
        # rank 1 notes the checkpoint just after rank 0 has written it; once a later checkpoint
        # replaces it, rank 1 has certainly passed that point (the steps between need it)
        first = (out / "checkpoint.npz").stat().st_mtime_ns
        while (out / "checkpoint.npz").stat().st_mtime_ns == first and time.time() < deadline and job.poll() is None:
            time.sleep(0.05)
        pid = _pid_of_rank(marker, 1)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        began = time.time()
        _, stderr = job.communicate(timeout=60)
        assert time.time() - began < 60
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0
    assert f"rank 1 (pid {pid})" in stderr and "ended without finishing" in stderr, stderr
    assert "is intact" in stderr, stderr
    state = load_checkpoint(out)  # whole, and resumable
    step = state["train"]["step"]
    assert step >= 5 and step % 5 == 0
    r = run(TGS + ["train", "charlm", corpus, "--out", out, "--resume", "--steps", step + 2])
    assert r.returncode == 0, r.stderr


@needs_mpi
def test_an_error_on_one_rank_aborts_the_job_with_its_message(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(textwrap.dedent("""
        import numpy as np
        import tinygrad_seq.distributed as dist
        dist.init_process_group("mpi")
        if dist.get_rank() == 1:
            raise RuntimeError("disk full")
        dist.all_reduce(np.ones(3))
    """))
    began = time.time()
    result = run([sys.executable, script], ranks=2, timeout=120)
    assert result.returncode != 0
    assert "rank 1: failed with RuntimeError: disk full" in result.stderr, result.stderr
    assert time.time() - began < 60


@needs_mpi
def test_wordlm_and_the_transformer_train_on_two_ranks(tmp_path, corpus):
    for kind, extra in (("wordlm", ["--min-count", "1"]), ("charlm", ["--model", "transformer", "--heads", "2"])):
        out = tmp_path / kind
        r = run(TGS + ["train", kind, corpus, *TINY, "--steps", 6, "--eval-every", 3, "--out", out] + extra,
                ranks=2)
        assert r.returncode == 0 and "done: 6 steps" in r.stderr, r.stderr
        assert load_checkpoint(out)["train"]["step"] == 6


def test_the_launchers_size_and_rank_come_from_mpi_pmix_or_slurm_variables(monkeypatch):
    for name in dist._LAUNCHER_SIZE_VARIABLES + dist._LAUNCHER_RANK_VARIABLES + ("SLURM_NTASKS",):
        monkeypatch.delenv(name, raising=False)
    assert dist.launched_world_size() == 1 and dist.launched_rank() is None
    # an sbatch script outside any srun step: one process, whatever --ntasks says
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert dist.launched_world_size() == 1 and dist.launched_rank() is None
    # `srun -n 4` (any --mpi plugin): the step's task count and this task's number
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert dist.launched_world_size() == 4 and dist.launched_rank() == 3
    # with PMI (mpiexec, srun --mpi=pmi2) or PMIx (srun --mpi=pmix) variables, theirs
    monkeypatch.setenv("PMIX_RANK", "2")
    assert dist.launched_rank() == 2
    monkeypatch.setenv("PMI_SIZE", "8")
    monkeypatch.setenv("PMI_RANK", "5")
    assert dist.launched_world_size() == 8 and dist.launched_rank() == 5
    assert not dist.is_initialized()  # detection alone starts no MPI


@needs_mpi
@pytest.mark.parametrize("launcher", [{"PMI_SIZE": "2", "PMI_RANK": "0"},
                                      {"SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "0"}], ids=["pmi", "srun"])
def test_a_launcher_that_mpi_cannot_join_is_an_error_not_n_copies(tmp_path, corpus, launcher):
    """Processes started as 2 (by mpiexec's PMI, or srun) that MPI sees as a world of 1 must
    not each train alone."""
    r = run(TGS + ["train", "charlm", corpus, *TINY, "--steps", 2, "--out", tmp_path / "run"],
            env=one_thread_env(**launcher), timeout=120)
    assert r.returncode != 0 and "started 2 processes but MPI sees 1" in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


@needs_mpi
def test_the_mlp_classifier_on_two_ranks_follows_one_rank(tmp_path):
    """The shared loop gives cnn/mlp data parallelism too: a global batch of 49 (shares of 24 and
    25, unequal) on 2 ranks gives one rank's epoch losses; rank 0 alone reports."""
    common = ["train", "mlp", "--epochs", 2, "--dropout", 0, "--batch-size", 49]
    r1 = run(TGS + common + ["--out", tmp_path / "one"])
    assert r1.returncode == 0, r1.stderr
    r2 = run(TGS + common + ["--out", tmp_path / "two"], ranks=2)
    assert r2.returncode == 0, r2.stderr
    assert "2 ranks" in r2.stderr and r2.stderr.count("epoch   2/2") == 1, r2.stderr
    assert r2.stdout.count("test accuracy") == 1, r2.stdout

    def epochs(out):
        with open(os.path.join(out, "metrics.jsonl")) as f:
            return [json.loads(line) for line in f if '"epoch"' in line]
    one, two = epochs(tmp_path / "one"), epochs(tmp_path / "two")
    assert [e["epoch"] for e in one] == [e["epoch"] for e in two] == [1, 2]
    for a, b in zip(one, two):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["dev_loss"] == pytest.approx(a["dev_loss"], rel=1e-4)


@needs_mpi
@pytest.mark.parametrize("kind, args", [
    # batch 9: shares of 4 and 5 pairs whose target tokens differ too (the loss is a mean per token)
    ("seq2seq", ["--train-size", 100, "--test-size", 10, "--embed", 4, "--hidden", 6, "--batch-size", 9]),
    ("tagger", ["--train-verses", 60, "--test-verses", 10, "--embed", 4, "--hidden", 4, "--layers", 1,
                "--dropout", 0, "--batch-size", 7]),
])
def test_seq2seq_and_tagger_on_two_ranks_follow_one_rank(tmp_path, kind, args):
    """Each rank trains on its share of every batch (unequal ones included), the Trainer averages
    the gradients, rank 0 alone reports and writes: the losses follow the one-rank run."""
    common = ["train", kind, *args, "--steps", 6, "--eval-every", 3]
    r1 = run(TGS + common + ["--out", tmp_path / "one"])
    assert r1.returncode == 0, r1.stderr
    r2 = run(TGS + common + ["--out", tmp_path / "two"], ranks=2)
    assert r2.returncode == 0, r2.stderr
    assert "; 2 ranks" in r2.stderr and r2.stderr.count("done: 6 steps") == 1, r2.stderr
    assert r2.stderr.count("held-out") == r1.stderr.count("held-out") > 0  # the final report once
    l1, l2 = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert sorted(l1) == sorted(l2) == list(range(1, 7))
    for step in l1:
        assert l2[step] == pytest.approx(l1[step], rel=1e-4), step
    assert load_checkpoint(tmp_path / "two")["train"]["step"] == 6
    assert sorted(os.listdir(tmp_path / "two")) == sorted(os.listdir(tmp_path / "one"))


def test_rank_shares_partition_each_batch_and_weigh_to_the_whole_batchs_token_mean(monkeypatch):
    """What each rank of seq2seq/tagger trains on (no MPI needed: the rank is faked): the shares
    of a step's batch are disjoint, in order and cover it; scaled by share_weighted, the mean of
    the shares' per-token losses is the whole batch's per-token loss."""
    import tinygrad_seq as tgs
    from tinygrad_seq.models.seq2seq import RandomPairs, Seq2Seq, Seq2SeqConfig, make_batch, special_vocab
    from tinygrad_seq.trainer import rank_share, share_weighted
    from tinygrad_seq.text.dates import date_pairs

    pairs = date_pairs(50, "train", seed=2)
    batches = RandomPairs(pairs, 9, seed=0)
    src, tgt = special_vocab("".join(s for s, _ in pairs)), special_vocab("0123456789-")
    tgs.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(len(src), len(tgt), embed=4, hidden=4, attention_dim=4), src, tgt)

    def loss(ps):
        with tgs.no_grad():
            return model.loss(*map(tgs.Tensor, make_batch(ps, src, tgt)))

    tokens = lambda ps: sum(len(t) + 1 for _, t in ps)  # noqa: E731 (the characters and </s>)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    shares = []
    for rank in range(2):
        monkeypatch.setattr(dist, "get_rank", lambda: rank)
        mine, whole = rank_share(batches, 9)(3)
        assert whole == batches(3)
        shares.append(mine)
    assert [len(s) for s in shares] == [4, 5] and shares[0] + shares[1] == batches(3)
    assert len({tokens(s) for s in shares}) == 2  # unequal token counts: the weighting matters
    weighted = [share_weighted(loss(s), tokens(s), tokens(batches(3)), 2).item() for s in shares]
    assert np.mean(weighted) == pytest.approx(loss(batches(3)).item(), rel=1e-6)
    with pytest.raises(ValueError, match="smaller than the 2 ranks"):
        rank_share(batches, 1)
