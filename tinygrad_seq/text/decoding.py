"""Decoding: turning a model's next-token scores into a sequence.  Shared by language models
and seq2seq.

Every decoder drives a `step` function, so it works with any model:

    logits, state = step(tokens, state)
        tokens  int64 array (B,): the last token of each of B hypotheses
        state   whatever the model carries (hidden states, encoder outputs, a context window)
        logits  (B, V) unnormalised scores for the next token (array or Tensor)

The caller feeds any prime text through the model first and passes the resulting state and
the prime's last token as `start`.  Decoders:

    greedy(step, state, start, max_len)                      argmax at every step
    sample(step, state, start, max_len, temperature, top_k)  draw from softmax(logits / T),
                                                             only among the k best if top_k
    beam_search(step, state, start, beam_width, max_len)     keep the W best partial
        sequences by total log-probability; finished ones are ranked by the length-normalised
        score  log P(y) / len(y)^alpha  (alpha = length_penalty: 0 = raw, 1 = per token)

Beam search runs the W hypotheses as one batch of W, so it must reorder the state when
hypotheses are dropped or duplicated: `reorder_state(state, index)`; the default,
`index_state(state, index, axis=0)`, indexes every array and Tensor in a nested
tuple/list/dict along axis 0 (pass `lambda s, i: index_state(s, i, axis=1)` for states laid
out (layers, batch, hidden) like nn.LSTM's).
"""
from dataclasses import dataclass, field

import numpy as np

from ..device import xp_of
from ..tensor import Tensor, no_grad


def _as_numpy(logits):
    if isinstance(logits, Tensor):
        return logits.numpy()
    if type(logits).__module__.startswith("cupy"):
        return logits.get()
    return np.asarray(logits)


def log_softmax(logits):
    """log softmax over the last axis of a NumPy array, in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def probabilities(logits, temperature=1.0, top_k=None):
    """softmax(logits / temperature) over the last axis, with everything outside the top_k
    best of each row set to probability 0.  Temperature 0 means greedy (all mass on the argmax)."""
    z = np.asarray(_as_numpy(logits), dtype=np.float64)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        if top_k < z.shape[-1]:
            kth = np.partition(z, -top_k, axis=-1)[..., -top_k:].min(axis=-1, keepdims=True)
            z = np.where(z >= kth, z, -np.inf)
    if temperature == 0:
        probs = np.zeros_like(z)
        np.put_along_axis(probs, z.argmax(axis=-1)[..., None], 1.0, axis=-1)
        return probs
    return np.exp(log_softmax(z / temperature))


def sample_from_probs(probs, temperature=1.0, top_k=None, rng=None):
    """One id per row drawn from a (B, V) probability table (re-tempered: p^(1/T), renormalised)."""
    probs = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore"):
        logits = np.log(probs)
    return sample_from_logits(logits, temperature, top_k, rng)


def sample_from_logits(logits, temperature=1.0, top_k=None, rng=None):
    """One id per row drawn from softmax(logits / temperature), restricted to the top_k."""
    rng = rng if rng is not None else np.random.default_rng()
    probs = probabilities(logits, temperature, top_k)
    # inverse-CDF draw: one uniform per row, so a seed gives the same text everywhere
    cdf = np.cumsum(probs, axis=-1)
    u = rng.random(probs.shape[:-1])[..., None] * cdf[..., -1:]
    return np.minimum((cdf <= u).sum(axis=-1), probs.shape[-1] - 1).astype(np.int64)


def _run(step, state, start, max_len, choose, eos):
    tokens = np.atleast_1d(np.asarray(start, dtype=np.int64))
    out = []
    done = np.zeros(tokens.shape, dtype=bool)
    with no_grad():
        for _ in range(int(max_len)):
            logits, state = step(tokens, state)
            tokens = np.where(done, eos if eos is not None else 0, choose(_as_numpy(logits)))
            out.append(tokens)
            if eos is not None:
                done |= tokens == eos
                if done.all():
                    break
    return (np.stack(out, axis=1) if out else np.zeros((tokens.shape[0], 0), dtype=np.int64)), state


def greedy(step, state, start, max_len, eos=None):
    """(B, <=max_len) ids choosing the most likely token each step; rows stop at `eos`
    (later positions repeat eos).  Returns (ids, final state)."""
    return _run(step, state, start, max_len, lambda logits: logits.argmax(axis=-1), eos)


def sample(step, state, start, max_len, temperature=1.0, top_k=None, eos=None, rng=None):
    """(B, <=max_len) ids drawn from softmax(logits / temperature) over the top_k.  Returns
    (ids, final state)."""
    rng = rng if rng is not None else np.random.default_rng()
    return _run(step, state, start, max_len, lambda logits: sample_from_logits(logits, temperature, top_k, rng), eos)


def index_state(state, index, axis=0):
    """Select entries `index` along `axis` of every array / Tensor in a nested state."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return Tensor._wrap(index_state(state.data, index, axis))
    if isinstance(state, tuple):
        return tuple(index_state(s, index, axis) for s in state)
    if isinstance(state, list):
        return [index_state(s, index, axis) for s in state]
    if isinstance(state, dict):
        return {k: index_state(v, index, axis) for k, v in state.items()}
    if hasattr(state, "take") and hasattr(state, "shape"):
        return state.take(xp_of(state).asarray(np.asarray(index)), axis=axis)
    return state


@dataclass
class Hypothesis:
    tokens: list            # the generated ids (eos included when it ended with one)
    log_prob: float         # sum of the tokens' log-probabilities
    score: float            # log_prob / len(tokens) ** length_penalty
    finished: bool = field(default=False)


def beam_search(step, state, start, beam_width, max_len, eos=None, length_penalty=0.7,
                reorder_state=index_state):
    """The `beam_width` best continuations of one start token, best first (a list of Hypothesis).

    Each step extends every live hypothesis by every token, keeps the beam_width best by total
    log-probability, and moves those ending in `eos` to the finished list.  Search stops when
    beam_width hypotheses have finished or after max_len tokens; live ones then compete too.
    """
    if beam_width < 1:
        raise ValueError(f"beam_width must be at least 1, got {beam_width}")
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")
    tokens = np.atleast_1d(np.asarray(start, dtype=np.int64))
    if tokens.shape != (1,):
        raise ValueError("beam_search decodes one sequence at a time: start must be a single token")
    sequences, totals = [[]], np.zeros(1)
    finished = []

    def score(log_prob, length):
        return float(log_prob) / max(length, 1) ** length_penalty

    with no_grad():
        for _ in range(int(max_len)):
            logits, state = step(tokens, state)
            candidates = (totals[:, None] + log_softmax(_as_numpy(logits))).reshape(-1)
            vocab = candidates.size // len(sequences)
            # stable sort: equal scores keep the earlier hypothesis / smaller token id first
            best = np.argsort(-candidates, kind="stable")[:beam_width]
            parents, chosen = best // vocab, best % vocab
            live = []
            for b, parent, token in zip(best.tolist(), parents.tolist(), chosen.tolist()):
                seq = sequences[parent] + [token]
                if eos is not None and token == eos:
                    finished.append(Hypothesis(seq, float(candidates[b]), score(candidates[b], len(seq)), True))
                else:
                    live.append((seq, candidates[b], parent, token))
            sequences = [seq for seq, _, _, _ in live]
            totals = np.array([total for _, total, _, _ in live])
            if not live or len(finished) >= beam_width:
                break
            tokens = np.array([token for _, _, _, token in live], dtype=np.int64)
            state = reorder_state(state, np.array([parent for _, _, parent, _ in live], dtype=np.int64))
    if len(finished) < beam_width:  # ran out of steps: unfinished hypotheses compete too
        finished += [Hypothesis(seq, float(total), score(total, len(seq))) for seq, total in zip(sequences, totals)]
    return sorted(finished, key=lambda h: -h.score)[:beam_width]
