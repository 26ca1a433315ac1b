"""Data-parallel scaling and corpus-size memory of `tgs train charlm` (issue 17).

    python bench/bench_distributed.py                   # scaling 1 vs 2 ranks, then memory on 100 MB and 1 GB
    python bench/bench_distributed.py --steps 10 --sizes 100   # quicker
    python bench/bench_distributed.py --skip-memory
    python bench/bench_distributed.py --skip-scaling --sizes 100 --memory-kinds ngram
    python bench/bench_distributed.py --overlap-study --steps 20   # allreduce after vs during the backward

Scaling: the charlm defaults (Embedding 64 -> LSTM 256 -> Linear, global batch 32, T 64, Adam,
clipping) on the bundled KJV text, `mpiexec -n 1` and `-n 2`, one kernel thread per rank
(OMP/NUMBA/TGS_CYTHON_THREADS=1).  Each rank times its steps after a warm-up and the gradient
allreduce inside them (DistributedDataParallel.reduce_gradients); rank 0 reports throughput
(chars/s of the global batch) and the communication share (allreduce time / step time; the
allreduce inside a step includes waiting for the slower rank), and the median time of the same
allreduce started right after a barrier (the transfer alone).
The same for the transformer defaults (--model transformer).

Memory: peak RSS of the real command `tgs train charlm CORPUS --steps 5` on generated corpora
of the given sizes (MB), cache building included (first run, empty cache); with
--memory-kinds charlm,ngram also `tgs train ngram CORPUS` (5-gram, interpolation: counted from
the memory-mapped cache in chunks, then the whole held-out tenth scored).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONE_THREAD = {"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "TGS_CYTHON_THREADS": "1",
              "OPENBLAS_NUM_THREADS": "1"}


def worker(steps, model, overlap=False, bucket_mb=25.0):
    """Run under mpiexec: time `steps` training steps; rank 0 prints one JSON line.
    overlap: DistributedDataParallel(overlap=True, bucket_cap_mb=bucket_mb) instead of the default."""
    import numpy as np

    import tinygrad_seq.distributed as dist
    from tinygrad_seq.text.corpus import bundled_corpus
    from tinygrad_seq.training import LMTrainer, TrainConfig, split_corpus

    dist.init_process_group("mpi")
    config = TrainConfig(model=model, steps=steps + 3, out=tempfile.mkdtemp(prefix="tgs-bench-"))
    trainer = LMTrainer.from_texts(config, *split_corpus(bundled_corpus()))
    comm_time = [0.0]
    if trainer.ddp is not None and (overlap or bucket_mb != 25.0):
        from tinygrad_seq.nn.parallel import DistributedDataParallel

        trainer.ddp = DistributedDataParallel(trainer.model, bucket_cap_mb=bucket_mb, overlap=overlap)
        trainer.reduce_gradients = lambda params: trainer.ddp.reduce_gradients()
    if trainer.ddp is not None:
        reduce = trainer.ddp.reduce_gradients

        def timed():
            began = time.perf_counter()
            reduce()
            comm_time[0] += time.perf_counter() - began

        trainer.ddp.reduce_gradients = timed
    for _ in range(3):  # warm-up: kernels compiled and caches filled
        trainer.train_step()
    dist.barrier()
    comm_time[0] = 0.0
    began = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    dist.barrier()
    elapsed = time.perf_counter() - began
    shares = []
    dist.all_gather_object(shares, comm_time[0] / elapsed)
    params = sum(p.numel() for p in trainer.params)
    # the transfer alone: the same bytes reduced right after a barrier (no waiting for a slower rank)
    flat = np.ones(params, dtype=np.float32)
    transfers = []
    for _ in range(20):
        dist.barrier()
        began_one = time.perf_counter()
        dist.all_reduce(flat)
        transfers.append(time.perf_counter() - began_one)
    transfer = float(np.median(transfers))  # the median: a loaded machine deschedules a rank now and then
    if dist.is_main_process():
        tokens = trainer.batches.batch_size * config.seq_len * steps
        print(json.dumps({"model": model, "ranks": dist.get_world_size(), "params": params, "overlap": overlap,
                          "bucket_mb": bucket_mb, "async_progress": os.environ.get("MPIR_CVAR_ASYNC_PROGRESS", "0"),
                          "step_ms": 1000 * elapsed / steps, "chars_per_s": tokens / elapsed,
                          "comm_share": max(shares), "allreduce_ms": 1000 * comm_time[0] / steps,
                          "transfer_ms": 1000 * transfer if dist.get_world_size() > 1 else 0.0}))
    shutil.rmtree(config.out, ignore_errors=True)


def scaling(steps, models):
    rows = []
    env = dict(os.environ, **ONE_THREAD)
    for model in models:
        for ranks in (1, 2):
            out = subprocess.run(["mpiexec", "-n", str(ranks), sys.executable, __file__, "--worker",
                                  "--steps", str(steps), "--model", model],
                                 capture_output=True, text=True, env=env, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def overlap_study(steps, models, bucket_mb, repeats):
    """2 ranks: the allreduce after the backward (default buckets) against overlapped buckets
    of `bucket_mb`, each with MPICH's asynchronous progress thread off and on, interleaved."""
    rows = []
    for _ in range(repeats):
        for model in models:
            for async_progress in ("0", "1"):
                env = dict(os.environ, MPIR_CVAR_ASYNC_PROGRESS=async_progress, **ONE_THREAD)
                for extra in ([], ["--overlap", "--bucket-mb", str(bucket_mb)]):
                    out = subprocess.run(["mpiexec", "-n", "2", sys.executable, __file__, "--worker",
                                          "--steps", str(steps), "--model", model] + extra,
                                         capture_output=True, text=True, env=env, check=True)
                    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                    print(json.dumps(rows[-1]), flush=True)
    return rows


def generate_corpus(path, megabytes):
    """Text with a few dozen distinct characters (verses of the bundled corpus, repeated)."""
    from tinygrad_seq.text.corpus import bundled_corpus

    block = bundled_corpus().encode()
    target = int(megabytes * 1e6)
    with open(path, "wb") as f:
        written = 0
        while written < target:
            piece = block[:target - written]
            f.write(piece)
            written += len(piece)


MEMORY_COMMANDS = {"charlm": lambda steps: ["--steps", str(steps), "--eval-every", str(steps)],
                   "ngram": lambda steps: ["--length", "100"]}


def memory(sizes, steps, kinds=("charlm",)):
    rows = []
    folder = tempfile.mkdtemp(prefix="tgs-bench-mem-")
    try:
        for size in sizes:
            corpus = os.path.join(folder, f"corpus{size}.txt")
            generate_corpus(corpus, size)
            for kind in kinds:
                out = os.path.join(folder, f"{kind}{size}")
                code = ("import resource, subprocess, sys, time; t = time.time(); "
                        "subprocess.run(sys.argv[1:], check=True, capture_output=True); "
                        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.time() - t)")
                command = [sys.executable, "-m", "tinygrad_seq.cli.main", "train", kind, corpus, "--out", out,
                           *MEMORY_COMMANDS[kind](steps)]
                result = subprocess.run([sys.executable, "-c", code] + command, capture_output=True, text=True,
                                        check=True)
                kib, seconds = result.stdout.split()
                rows.append({"kind": kind, "corpus_mb": size, "peak_rss_mb": int(kib) / 1024,
                             "target_mb": 300 + 0.05 * size, "seconds": round(float(seconds), 1)})
                print(json.dumps(rows[-1]), flush=True)
                shutil.rmtree(out, ignore_errors=True)
            os.unlink(corpus)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="lstm")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--models", default="lstm,transformer")
    parser.add_argument("--sizes", default="100,1000", help="corpus sizes in MB for the memory runs")
    parser.add_argument("--memory-kinds", default="charlm", help="`tgs train` kinds measured: charlm, ngram")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--overlap", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bucket-mb", type=float, default=25.0, help=argparse.SUPPRESS)
    parser.add_argument("--overlap-study", action="store_true",
                        help="only compare the allreduce after the backward with overlapped buckets, "
                             "MPIR_CVAR_ASYNC_PROGRESS off and on (2 ranks)")
    parser.add_argument("--overlap-bucket-mb", type=float, default=0.25)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if args.worker:
        worker(args.steps, args.model, args.overlap, args.bucket_mb)
        return
    if args.overlap_study:
        overlap_study(args.steps, args.models.split(","), args.overlap_bucket_mb, args.repeats)
        return
    if not args.skip_scaling:
        scaling(args.steps, args.models.split(","))
    if not args.skip_memory:
        memory([float(s) for s in args.sizes.split(",")], 5, args.memory_kinds.split(","))


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    import tinygrad_seq  # noqa: F401  (before NumPy: see tinygrad_seq/__init__.py)
    main()
