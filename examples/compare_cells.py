"""LSTM vs GRU vs vanilla RNN: the same text, the same budget, three recurrent cells.

    python examples/compare_cells.py               # about a minute on a laptop CPU
    python examples/compare_cells.py --steps 40 --hidden 32

Each model is embedding -> one recurrent layer -> linear -> softmax over characters, trained
with the library's truncated-BPTT loop (tinygrad_seq.training.LMTrainer) on the same slice of
the King James Bible; the table shows the validation loss each reaches and its time per step.
Gated cells (GRU, LSTM) usually pull ahead as training goes on: their additive state update
lets gradients reach further back than the RNN's repeated tanh.
"""
import tempfile
import time

from tinygrad_seq.text.corpus import bundled_corpus
from tinygrad_seq.training import LMTrainer, TrainConfig, split_corpus

from script_options import run_main


def main(steps=150, hidden=128, chars=300_000, seed=0, verbose=True):
    train, val = split_corpus(bundled_corpus()[:chars])
    results = {}
    with tempfile.TemporaryDirectory() as runs:
        for cell in ("rnn", "gru", "lstm"):
            config = TrainConfig(model=cell, hidden=hidden, embed=32, seq_len=64, batch_size=32, steps=steps,
                                 eval_every=steps, lr=3e-3, seed=seed, out=f"{runs}/{cell}", val_max_tokens=20_000)
            trainer = LMTrainer.from_texts(config, train, val)
            began = time.perf_counter()
            trainer.train(echo=lambda line: None, progress=False, show_samples=False)
            results[cell] = (trainer.last_val, (time.perf_counter() - began) / steps * 1000)
            if verbose:
                print(f"{cell:5s} done: validation loss {trainer.last_val:.3f}")
    print(f"{'cell':6s} {'val nats/char':>14s} {'ms/step':>8s}")
    for cell, (loss, ms) in results.items():
        print(f"{cell:6s} {loss:14.3f} {ms:8.1f}")
    return results


if __name__ == "__main__":
    run_main(main, __doc__, "steps", "hidden", "seed")
