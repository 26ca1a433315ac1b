"""Count-based n-gram language models: the baseline neural language models are measured against.

An n-gram model predicts token w from the n-1 tokens before it, the context c, by counting:
P_ML(w | c) = count(c, w) / count(c).  Unseen n-grams would get probability 0, so the counts
are smoothed, in one of three ways:

    add-k          P(w | c) = (count(c, w) + k) / (count(c) + k V)
    interpolation  P(w | c) = sum_m lambda_m P_ML(w | last m-1 tokens of c),  m = n..2,
                              + lambda_1 P_addk(w)                 (lambdas renormalised over
                              the orders whose context was seen)
    backoff        Katz-style with absolute discount d:
                   P(w | c) = (count(c, w) - d) / count(c)          if count(c, w) > 0
                            = alpha(c) P(w | c')                    otherwise, c' = c minus its
                              first token; alpha(c) hands the discounted mass d * #{w: count(c,w)>0}
                              / count(c) to the unseen words in proportion to P(. | c').
                   The lowest order is the add-k unigram.

Every variant is a proper distribution over the V tokens (tests check that it sums to 1).
Tokens are integer ids from any vocabulary in `tinygrad_seq.text.vocab`.
"""
import math

import numpy as np

SMOOTHINGS = ("add-k", "interpolation", "backoff")


# tokens counted at a time: a long id stream (an np.memmap of a corpus cache) is never held
# whole as int64 windows; memory grows with the distinct n-grams, not the corpus
CHUNK_TOKENS = 1 << 22


def _count_rows(rows, base, weights=None):
    """(unique rows sorted lexicographically, their counts) of an (N, m) id array; with
    `weights`, the count of a row is the sum of its weights (merging tables of counts).  Rows
    are packed into one integer in base `base` when that fits in 62 bits: sorting integers is
    far faster than sorting rows."""
    m = rows.shape[1]
    packed = base ** m < 2 ** 62
    place = base ** np.arange(m - 1, -1, -1, dtype=np.int64) if packed else None
    found = np.unique(rows @ place if packed else rows, axis=None if packed else 0,
                      return_inverse=weights is not None, return_counts=True)
    unique, count = found[0], found[-1]
    if packed:
        unique = (unique[:, None] // place) % base
    if weights is not None:  # integer sums, exact (bincount would add in float64)
        count = np.zeros(len(unique), dtype=np.int64)
        np.add.at(count, found[1].reshape(-1), weights)
    return unique.astype(np.int64), count.astype(np.int64)


class NGramLM:
    """`NGramLM(n, vocab_size, smoothing="interpolation", k=1.0, discount=0.75, lambdas=None).fit(ids)`."""

    def __init__(self, n, vocab_size, smoothing="interpolation", k=1.0, discount=0.75, lambdas=None):
        if int(n) < 1:
            raise ValueError(f"NGramLM: n must be at least 1, got {n}")
        if vocab_size < 1:
            raise ValueError(f"NGramLM: vocab_size must be positive, got {vocab_size}")
        if smoothing not in SMOOTHINGS:
            raise ValueError(f"NGramLM: smoothing must be one of {', '.join(SMOOTHINGS)}, not {smoothing!r}")
        if not (k > 0 and math.isfinite(k)):
            raise ValueError(f"NGramLM: k must be a positive finite number, got {k}")
        if not 0 < discount <= 1:
            raise ValueError(f"NGramLM: discount must be in (0, 1], got {discount}")
        self.n, self.V, self.smoothing, self.k, self.discount = int(n), int(vocab_size), smoothing, float(k), float(discount)
        # lambdas[m-1] weighs order m; default doubles with each order (longer contexts know more)
        if lambdas is None:
            lambdas = [2.0 ** m for m in range(self.n)]
        if len(lambdas) != self.n or min(lambdas) < 0 or sum(lambdas) <= 0:
            raise ValueError(f"NGramLM: lambdas must be {self.n} non-negative weights (orders 1..n)")
        self.lambdas = [float(x) for x in lambdas]
        self.tables = None  # tables[m-1]: {context tuple (m-1 ids): (next ids, counts, total, {id: count})}
        self._alpha_cache = {}

    # ------------------------------------------------------------------ counting
    def fit(self, ids, chunk_tokens=CHUNK_TOKENS):
        """Count every m-gram (m = 1..n) of the id stream (any integer sequence: a list, an
        array, an np.memmap of a corpus cache).  The stream is counted `chunk_tokens` start
        positions at a time, each chunk reading n-1 tokens past its end so that an m-gram
        across a boundary is counted once, by the chunk it starts in, and the chunks' tables
        are merged: the counts equal those of the whole stream at once."""
        chunk_tokens = int(chunk_tokens)
        if chunk_tokens < 1:
            raise ValueError(f"NGramLM.fit: chunk_tokens must be positive, got {chunk_tokens}")
        ids = (ids if isinstance(ids, np.ndarray) else np.asarray(ids)).reshape(-1)
        if ids.size == 0:
            raise ValueError("NGramLM.fit: no tokens to count")
        grams = [np.zeros((0, m), dtype=np.int64) for m in range(1, self.n + 1)]
        counts = [np.zeros(0, dtype=np.int64) for _ in range(self.n)]
        for start in range(0, ids.size, chunk_tokens):
            starts = min(chunk_tokens, ids.size - start)  # the m-grams this chunk counts begin here
            window = np.asarray(ids[start:start + starts + self.n - 1], dtype=np.int64)
            if window.min() < 0 or window.max() >= self.V:
                raise ValueError(f"NGramLM.fit: ids must lie in [0, {self.V})")
            for m in range(1, min(self.n, window.size) + 1):
                unique, count = _count_rows(np.lib.stride_tricks.sliding_window_view(window, m)[:starts], self.V)
                if start:
                    unique, count = _count_rows(np.concatenate([grams[m - 1], unique]), self.V,
                                                weights=np.concatenate([counts[m - 1], count]))
                grams[m - 1], counts[m - 1] = unique, count
            del window
        self._build(grams, counts)
        return self

    def _build(self, grams, counts):
        """Group the sorted unique m-grams by their context (first m-1 ids)."""
        self.tables, self._alpha_cache = [], {}
        for gram, count in zip(grams, counts):
            table = {}
            if len(gram):
                contexts = gram[:, :-1]
                starts = np.flatnonzero(np.r_[True, (contexts[1:] != contexts[:-1]).any(axis=1)])
                ends = np.r_[starts[1:], len(gram)]
                for s, e in zip(starts.tolist(), ends.tolist()):
                    nxt, cnt = gram[s:e, -1], count[s:e]
                    table[tuple(contexts[s].tolist())] = (nxt, cnt, int(cnt.sum()), dict(zip(nxt.tolist(), cnt.tolist())))
            self.tables.append(table)
        self.total = int(counts[0].sum())
        self.unigram = np.full(self.V, self.k)
        if len(grams[0]):
            self.unigram[grams[0][:, 0]] += counts[0]
        self.unigram /= self.unigram.sum()

    def _check_fitted(self):
        if self.tables is None:
            raise RuntimeError("NGramLM: call fit(ids) first")

    # ------------------------------------------------------------------ probabilities
    def _context(self, context, m):
        """The last m-1 ids of `context` as a tuple (m = 1 gives the empty context)."""
        context = tuple(int(i) for i in context)
        return context[len(context) - (m - 1):] if m > 1 else ()

    def distribution(self, context):
        """P(. | context) as a float64 vector of length V (context: the preceding ids)."""
        self._check_fitted()
        context = list(context)[-(self.n - 1):] if self.n > 1 else []
        if self.smoothing == "add-k":
            m = min(self.n, len(context) + 1)
            probs = np.full(self.V, self.k)
            entry = self.tables[m - 1].get(self._context(context, m))
            if m == 1:
                return self.unigram.copy()
            if entry is not None:
                probs[entry[0]] += entry[1]
            return probs / probs.sum()
        if self.smoothing == "interpolation":
            probs = self.lambdas[0] * self.unigram
            weight = self.lambdas[0]
            for m in range(2, min(self.n, len(context) + 1) + 1):
                entry = self.tables[m - 1].get(self._context(context, m))
                if entry is not None:
                    ml = np.zeros(self.V)
                    ml[entry[0]] = entry[1] / entry[2]
                    probs = probs + self.lambdas[m - 1] * ml
                    weight += self.lambdas[m - 1]
            return probs / weight
        probs = self.unigram.copy()  # backoff: build up from the unigram
        for m in range(2, min(self.n, len(context) + 1) + 1):
            entry = self.tables[m - 1].get(self._context(context, m))
            if entry is None:
                continue
            nxt, cnt, total, _ = entry
            left = self.discount * len(nxt) / total
            unseen_mass = 1.0 - probs[nxt].sum()
            seen = (cnt - self.discount) / total
            if unseen_mass <= 1e-12:  # every token was seen after this context
                probs = np.zeros(self.V)
                probs[nxt] = seen / seen.sum()
                continue
            probs = probs * (left / unseen_mass)
            probs[nxt] = seen
        return probs

    def prob(self, context, token):
        """P(token | context) without building the whole distribution (for scoring long texts)."""
        self._check_fitted()
        context = list(context)[-(self.n - 1):] if self.n > 1 else []
        token = int(token)
        top = min(self.n, len(context) + 1)
        if self.smoothing == "add-k":
            if top == 1:
                return float(self.unigram[token])
            entry = self.tables[top - 1].get(self._context(context, top))
            c, total = (entry[3].get(token, 0), entry[2]) if entry else (0, 0)
            return (c + self.k) / (total + self.k * self.V)
        if self.smoothing == "interpolation":
            p, weight = self.lambdas[0] * self.unigram[token], self.lambdas[0]
            for m in range(2, top + 1):
                entry = self.tables[m - 1].get(self._context(context, m))
                if entry is not None:
                    p += self.lambdas[m - 1] * entry[3].get(token, 0) / entry[2]
                    weight += self.lambdas[m - 1]
            return float(p / weight)
        return self._backoff_prob(tuple(context), token, top)

    def _backoff_prob(self, context, token, m):
        if m == 1:
            return float(self.unigram[token])
        ctx = self._context(context, m)
        entry = self.tables[m - 1].get(ctx)
        if entry is None:
            return self._backoff_prob(context, token, m - 1)
        nxt, cnt, total, lookup = entry
        if token in lookup:
            if self._alpha(context, m) is None:  # every token seen: renormalised discounts
                return (lookup[token] - self.discount) / (total - self.discount * len(nxt))
            return (lookup[token] - self.discount) / total
        alpha = self._alpha(context, m)
        return 0.0 if alpha is None else alpha * self._backoff_prob(context, token, m - 1)

    def _alpha(self, context, m):
        """alpha(c) = (d * #seen / count(c)) / (1 - sum of P(w | c') over the seen w); None if
        nothing is left unseen.  Cached: it depends only on the context."""
        ctx = self._context(context, m)
        key = (m, ctx)
        if key not in self._alpha_cache:
            nxt, _, total, _ = self.tables[m - 1][ctx]
            seen_lower = sum(self._backoff_prob(ctx, w, m - 1) for w in nxt.tolist())
            unseen_mass = 1.0 - seen_lower
            self._alpha_cache[key] = None if unseen_mass <= 1e-12 else self.discount * len(nxt) / total / unseen_mass
        return self._alpha_cache[key]

    def log_prob(self, ids, context=(), chunk_tokens=1 << 16, progress=None):
        """Total natural-log probability of `ids`, each token given the ones before it (and
        `context` before the first).  A long stream (an np.memmap) is read `chunk_tokens` at a
        time (few: scoring runs in Python, so a progress bar moves often), calling
        `progress(tokens scored)` after each; the sum runs in the same order, so the total does
        not depend on the chunking."""
        chunk_tokens = int(chunk_tokens)
        if chunk_tokens < 1:
            raise ValueError(f"NGramLM.log_prob: chunk_tokens must be positive, got {chunk_tokens}")
        ids = (ids if isinstance(ids, np.ndarray) else np.asarray(ids)).reshape(-1)
        history = [int(i) for i in context]
        total = 0.0
        for start in range(0, ids.size, chunk_tokens):
            for token in np.asarray(ids[start:start + chunk_tokens]).tolist():
                total += math.log(max(self.prob(history, token), 1e-300))
                history.append(token)
                if len(history) > self.n:
                    history.pop(0)
            if progress is not None:
                progress(min(start + chunk_tokens, ids.size))
        return total

    def perplexity(self, ids, context=()):
        """exp(-log P(ids) / len(ids)): the effective number of choices per token."""
        ids = np.asarray(ids).reshape(-1)
        if ids.size == 0:
            raise ValueError("perplexity: no tokens to score")
        return math.exp(-self.log_prob(ids, context) / ids.size)

    # ------------------------------------------------------------------ sampling
    def sample(self, length, context=(), temperature=1.0, top_k=None, rng=None):
        """`length` ids drawn one at a time from P(. | the n-1 before), continuing `context`."""
        from .decoding import sample_from_probs

        self._check_fitted()
        rng = rng if rng is not None else np.random.default_rng()
        history = [int(i) for i in context]
        out = []
        for _ in range(int(length)):
            probs = self.distribution(history)
            token = int(sample_from_probs(probs[None], temperature, top_k, rng)[0])
            out.append(token)
            history = (history + [token])[-max(self.n - 1, 1):]
        return np.array(out, dtype=np.int64)

    # ------------------------------------------------------------------ saving
    def state_dict(self):
        """Hyper-parameters and counts as JSON values and arrays (for checkpoint.save_checkpoint)."""
        self._check_fitted()
        grams, counts = [], []
        for m, table in enumerate(self.tables, start=1):
            rows, cnts = [], []
            for ctx, (nxt, cnt, _, _) in sorted(table.items()):
                rows.append(np.column_stack([np.tile(np.asarray(ctx, dtype=np.int64), (len(nxt), 1)), nxt])
                            if m > 1 else nxt[:, None])
                cnts.append(cnt)
            grams.append(np.concatenate(rows).astype(np.int64) if rows else np.zeros((0, m), dtype=np.int64))
            counts.append(np.concatenate(cnts).astype(np.int64) if cnts else np.zeros(0, dtype=np.int64))
        return {"n": self.n, "vocab_size": self.V, "smoothing": self.smoothing, "k": self.k,
                "discount": self.discount, "lambdas": self.lambdas, "grams": grams, "counts": counts}

    @classmethod
    def from_state_dict(cls, state):
        model = cls(state["n"], state["vocab_size"], state["smoothing"], state["k"], state["discount"], state["lambdas"])
        grams = [np.asarray(g, dtype=np.int64).reshape(-1, m) for m, g in enumerate(state["grams"], start=1)]
        counts = [np.asarray(c, dtype=np.int64).reshape(-1) for c in state["counts"]]
        if len(grams) != model.n or len(counts) != model.n:
            raise ValueError(f"NGramLM: a state of order {model.n} needs {model.n} gram and count tables")
        for gram, count in zip(grams, counts):
            if len(gram) != len(count) or (gram.size and (gram.min() < 0 or gram.max() >= model.V)) or \
                    (count.size and count.min() < 1):
                raise ValueError("NGramLM: the saved counts do not fit the vocabulary")
        model._build(grams, counts)
        return model
