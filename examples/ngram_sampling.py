"""Count-based n-gram language models, the baseline the notes start from.

    python examples/ngram_sampling.py              # a few seconds
    python examples/ngram_sampling.py --max-n 7

P(c_t | c_{t-n+1} .. c_{t-1}) is estimated from counts, smoothed by interpolating with the
lower orders (or add-k, or backoff).  For n = 1 .. max-n the script prints the validation
loss in nats and bits per character and a sample: the loss falls as the context grows until
the counts get too sparse, and the samples go from letter soup to plausible English.
"""
import math

import numpy as np

from tinygrad_seq.text.corpus import bundled_corpus
from tinygrad_seq.text.ngram import NGramLM
from tinygrad_seq.text.vocab import CharVocab
from tinygrad_seq.training import split_corpus

from script_options import run_main


def main(max_n=6, chars=1_000_000, smoothing="interpolation", seed=0, verbose=True):
    train, val = split_corpus(bundled_corpus()[:chars])
    vocab = CharVocab.from_text(train + val)
    train_ids, val_ids = vocab.encode(train), vocab.encode(val)
    losses = {}
    for n in range(1, max_n + 1):
        model = NGramLM(n, len(vocab), smoothing=smoothing).fit(train_ids)
        nats = -model.log_prob(val_ids, context=train_ids[-(n - 1):] if n > 1 else ()) / val_ids.size
        losses[n] = nats
        text = vocab.decode(model.sample(120, context=vocab.encode("\n"), rng=np.random.default_rng(seed)))
        print(f"n={n}: {nats:.3f} nats/char ({nats / math.log(2):.3f} bits/char)")
        if verbose:
            print("   " + text.replace("\n", " | "))
    return losses


if __name__ == "__main__":
    run_main(main, __doc__, "max_n", "chars", "smoothing",
             choices={"smoothing": ["interpolation", "backoff", "add-k"]})
