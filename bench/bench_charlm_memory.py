"""Peak memory of a char-LSTM training run: `tgs train charlm` against PyTorch's same model.

    python bench/bench_charlm_memory.py                 # 200 steps each, on the bundled KJV text
    python bench/bench_charlm_memory.py --steps 20      # a quick check of the script

Each run is a fresh process that prints its own peak resident set as it exits
(tinygrad_seq.benchmark.peak_rss_mib, as `tgs bench --memory` does).  The tgs side is the
real command (`tgs train charlm --steps N`: defaults Embedding 64 -> LSTM 256 -> Linear,
B=32, T=64, Adam, clipping, validation, checkpoint); the PyTorch side is the same model and
batches (bench_charlm_quality.train_torch, validation included).  Also measured: each
framework's bare import, so the table separates what the libraries cost from what training
adds.  Target (issue "compiled backend, part 1"): tgs peak at most 1.5x PyTorch's.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# printed last, at exit, by every measured process (the CLI ends in sys.exit)
REPORT_PEAK = ("import atexit\n"
               "from tinygrad_seq.benchmark import peak_rss_mib\n"
               "atexit.register(lambda: print(peak_rss_mib()))\n")

TORCH_RUN = ("import sys; sys.path.insert(0, {bench!r})\n"
             "import torch; torch.set_num_threads(2)\n"
             "import bench_charlm_quality as q\n"
             "from tinygrad_seq.training import StreamBatches\n"
             "ids = q.load_kjv_bytes(); cut = int(round(ids.size * 0.9))\n"
             "q.train_torch(StreamBatches(ids[:cut], q.B, q.T), ids[cut:cut + 200000], {steps}, 0)\n")


def peak_mib(code, *args):
    """Peak resident memory (MiB) of a fresh Python process running `code` with `args`."""
    out = subprocess.run([sys.executable, "-c", REPORT_PEAK + code, *args], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(steps=200, out=None):
    with tempfile.TemporaryDirectory() as tmp:
        rows = {
            "tgs: import only": peak_mib("import tinygrad_seq"),
            "pytorch: import only": peak_mib("import torch, tinygrad_seq"),
            f"tgs train charlm, {steps} steps": peak_mib(
                "from tinygrad_seq.cli.main import cli; cli()",
                "train", "charlm", "--steps", str(steps), "--eval-every", str(steps), "--out", os.path.join(tmp, "run")),
            f"pytorch, same model, {steps} steps": peak_mib(
                TORCH_RUN.format(bench=os.path.join(ROOT, "bench"), steps=steps)),
        }
    names = list(rows)
    ratio = rows[names[2]] / rows[names[3]]
    print("| run | peak RSS (MiB) |\n| --- | ---: |")
    for name, mib in rows.items():
        print(f"| {name} | {mib:.0f} |")
    print(f"tgs / pytorch peak memory: {ratio:.2f} (target <= 1.5); "
          f"training adds {rows[names[2]] - rows[names[0]]:.0f} MiB (tgs) vs "
          f"{rows[names[3]] - rows[names[1]]:.0f} MiB (pytorch) over the imports")
    if out:
        with open(out, "w") as f:
            json.dump({"peak_mib": rows, "ratio": ratio, "steps": steps}, f, indent=2)
    return rows, ratio


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--json", dest="out", default=None, help="Also write the results to this JSON file.")
    args = parser.parse_args()
    main(args.steps, args.out)
