"""A vanilla RNN character language model written from scratch with Tensor ops.

    python examples/rnn_charlm.py                  # about 30 s on a laptop CPU
    python examples/rnn_charlm.py --steps 100 --hidden 32

No nn.RNN here: the recurrence of the notes is spelled out one time step at a time,

    a_t   = tanh(W_aa a_{t-1} + W_ax x_t + b_a)        x_t: one-hot character
    y^_t  = softmax(W_ya a_t + b_y)                    the next character's distribution
    loss  = -(1/T) sum_t log y^_t[x_{t+1}]

and backpropagation through time is simply `loss.backward()` over the unrolled graph.
Consecutive chunks of the text carry the hidden state forward, detached (truncated BPTT).
"""
import tinygrad_seq as tgs
import numpy as np

from tinygrad_seq.nn import functional as F
from tinygrad_seq.nn.utils import clip_grad_norm_
from tinygrad_seq.text.corpus import bundled_corpus
from tinygrad_seq.text.vocab import CharVocab

from script_options import run_main


def sample(params, vocab, start, length, rng, temperature=0.8):
    W_ax, W_aa, b_a, W_ya, b_y = params
    a = tgs.zeros(1, W_aa.shape[0])
    token, out = vocab.encode(start)[-1], []
    with tgs.no_grad():
        for _ in range(length):
            x = tgs.one_hot(tgs.Tensor(np.array([token])), len(vocab)).float()
            a = (a @ W_aa.T + x @ W_ax.T + b_a).tanh()
            probs = F.softmax((a @ W_ya.T + b_y) * (1 / temperature), dim=-1).numpy()[0].astype(np.float64)
            token = rng.choice(len(vocab), p=probs / probs.sum())
            out.append(token)
    return vocab.decode(np.array(out))


def main(steps=300, hidden=64, seq_len=25, batch_size=16, lr=5e-3, chars=200_000, seed=0, verbose=True):
    tgs.manual_seed(seed)
    text = bundled_corpus()[:chars]
    vocab = CharVocab.from_text(text)
    V, H = len(vocab), hidden
    ids = vocab.encode(text)
    rows = (ids.size - 1) // batch_size
    inputs, targets = ids[:rows * batch_size].reshape(batch_size, rows), ids[1:rows * batch_size + 1].reshape(batch_size, rows)

    def weight(*shape, scale):
        return tgs.Tensor(np.random.default_rng(seed + len(shape) + shape[0]).standard_normal(shape) * scale,
                          requires_grad=True)

    W_ax, W_aa = weight(H, V, scale=0.1), weight(H, H, scale=1 / np.sqrt(H))
    W_ya = weight(V, H, scale=0.1)
    b_a, b_y = tgs.zeros(H, requires_grad=True), tgs.zeros(V, requires_grad=True)
    params = [W_ax, W_aa, b_a, W_ya, b_y]
    optimizer = tgs.optim.Adam(params, lr=lr)
    a = tgs.zeros(batch_size, H)
    losses = []
    for step in range(steps):
        start = (step * seq_len) % (rows - seq_len)
        if start < seq_len:
            a = tgs.zeros(batch_size, H)  # a new pass over the text
        loss = 0
        for t in range(seq_len):
            x = tgs.one_hot(tgs.Tensor(inputs[:, start + t]), V).float()
            a = (a @ W_aa.T + x @ W_ax.T + b_a).tanh()
            loss = loss + F.cross_entropy(a @ W_ya.T + b_y, tgs.Tensor(targets[:, start + t]))
        loss = loss * (1 / seq_len)
        optimizer.zero_grad()
        loss.backward()
        clip_grad_norm_(params, 5.0)
        optimizer.step()
        a = a.detach()
        losses.append(loss.item())
        if verbose and (step + 1) % max(1, steps // 5) == 0:
            print(f"step {step + 1}: loss {np.mean(losses[-20:]):.3f} nats/char")
    text_out = sample(params, vocab, "\n", 200, np.random.default_rng(seed))
    if verbose:
        print("--- sample ---\n" + text_out)
    print(f"first loss {losses[0]:.3f}, last loss {np.mean(losses[-20:]):.3f} (uniform guess: {np.log(V):.3f})")
    return losses


if __name__ == "__main__":
    run_main(main, __doc__, "steps", "hidden", "seq_len", "seed")
