"""Quality benchmark: does tinygrad_seq's char-LSTM learn as well as PyTorch's?

    python bench/bench_charlm_quality.py               # the issue's protocol: 1000 steps each
    python bench/bench_charlm_quality.py --steps 20    # a quick check of the script

Protocol (../shared/benchmarks.md): byte vocabulary, Embedding 64 -> LSTM H=256 (1 layer) ->
Linear; B=32 streams, T=64, truncated BPTT with the state carried (detached) across chunks;
Adam lr 2e-3; global gradient norm clipped at 5; the first 90% of kjv.txt trains, the last 10%
validates.  Both frameworks read the same batches (tinygrad_seq.training.StreamBatches) and
are scored the same way (the validation text as 64 parallel streams read in chunks of 64 with
the state carried).  The target: tinygrad_seq's validation loss within 2% of PyTorch's.
"""
import argparse
import gzip
import json
import math
import os
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
E, H, B, T, LR, CLIP = 64, 256, 32, 64, 2e-3, 5.0
EVAL_STREAMS = 64


def load_kjv_bytes():
    """kjv.txt as byte ids: ../shared/data/kjv.txt.gz if present, else the bundled copy."""
    shared = os.path.join(ROOT, "..", "shared", "data", "kjv.txt.gz")
    path = shared if os.path.exists(shared) else os.path.join(ROOT, "tinygrad_seq", "data", "kjv.txt.gz")
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8).astype(np.int64)


def eval_rows(ids):
    """The validation stream as EVAL_STREAMS rows: (inputs, targets), each (rows, length)."""
    row = (ids.size - 1) // EVAL_STREAMS
    return ids[:row * EVAL_STREAMS].reshape(EVAL_STREAMS, row), ids[1:row * EVAL_STREAMS + 1].reshape(EVAL_STREAMS, row)


def detached(state):
    """The recurrent state (tensors, nested in tuples) cut from the graph: truncated BPTT."""
    return type(state)(detached(s) for s in state) if isinstance(state, (tuple, list)) else state.detach()


def train_and_score(lib, model, batches, val_ids, steps):
    """Train `model`, (ids, state) -> (logits, state), for `steps` truncated-BPTT steps and return
    its validation loss in nats/char.  `lib` is torch or tinygrad_seq: the loop uses only what
    the two spell alike (from_numpy, no_grad, optim.Adam, nn.functional, nn.utils)."""
    F = lib.nn.functional
    params = list(model.parameters())
    opt = lib.optim.Adam(params, lr=LR)
    state = None
    for step in range(steps):
        x, y, first = batches(step)
        logits, state = model(lib.from_numpy(x), None if first else state)
        loss = F.cross_entropy(logits.reshape(-1, 256), lib.from_numpy(y.reshape(-1)))
        opt.zero_grad()
        loss.backward()
        lib.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        state = detached(state)
    inputs, targets = eval_rows(val_ids)
    model.eval()
    total, state = 0.0, None
    with lib.no_grad():
        for start in range(0, inputs.shape[1], T):
            logits, state = model(lib.from_numpy(inputs[:, start:start + T]), state)
            total += float(F.cross_entropy(logits.reshape(-1, 256).double(),
                                           lib.from_numpy(targets[:, start:start + T].reshape(-1)),
                                           reduction="sum").item())
    return total / targets.size


def train_tgs(batches, val_ids, steps, seed):
    import tinygrad_seq as tgs
    from tinygrad_seq.models.charlm import LMConfig, build_lm

    tgs.manual_seed(seed)
    return train_and_score(tgs, build_lm(LMConfig(model="lstm", vocab_size=256, embed=E, hidden=H)),
                           batches, val_ids, steps)


def train_torch(batches, val_ids, steps, seed):
    import torch

    torch.manual_seed(seed)

    class CharLSTM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(256, E)
            self.rnn = torch.nn.LSTM(E, H, batch_first=True)
            self.head = torch.nn.Linear(H, 256)

        def forward(self, x, state=None):
            out, state = self.rnn(self.embedding(x), state)
            return self.head(out), state

    return train_and_score(torch, CharLSTM(), batches, val_ids, steps)


def main(steps=1000, seed=0, out=None):
    import torch

    from tinygrad_seq.training import StreamBatches

    torch.set_num_threads(os.cpu_count() or 1)
    ids = load_kjv_bytes()
    cut = int(round(ids.size * 0.9))
    train_ids, val_ids = ids[:cut], ids[cut:]
    batches = StreamBatches(train_ids, B, T)
    results = {}
    for name, fn in (("pytorch", train_torch), ("tinygrad_seq", train_tgs)):
        began = time.perf_counter()
        loss = fn(batches, val_ids, steps, seed)
        results[name] = {"val_nats_per_char": loss, "val_bits_per_char": loss / math.log(2),
                         "seconds": time.perf_counter() - began}
        print(f"{name:13s} validation loss {loss:.4f} nats/char ({loss / math.log(2):.3f} bits/char) "
              f"after {steps} steps, {results[name]['seconds']:.0f} s", flush=True)
    gap = results["tinygrad_seq"]["val_nats_per_char"] / results["pytorch"]["val_nats_per_char"] - 1
    results["relative_gap"] = gap
    results["steps"] = steps
    print(f"relative gap {gap:+.2%} (target: within 2%)")
    if out:
        with open(out, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", dest="out", default=None, help="Also write the results to this JSON file.")
    args = parser.parse_args()
    main(args.steps, args.seed, args.out)
