"""Word embeddings: nearest neighbours, analogies, and a skip-gram word2vec trainer.

Any (V, d) matrix whose row i is the vector of word i works: an nn.Embedding's weight from a
trained language model, or the output of `train_word2vec`.

    cosine(u, v) = u . v / (|u| |v|)
    nearest_neighbours(matrix, vocab, "king", k=5)  -> [(word, similarity), ...]
    analogy(matrix, vocab, "man", "king", "woman")  -> words w maximising cosine(w, king - man + woman)

Skip-gram with negative sampling (Mikolov et al. 2013): for each (centre c, context o) pair
within `window` words, and `negatives` words k drawn from the unigram distribution raised to
3/4, minimise
    -log sigma(u_o . v_c) - sum_k log sigma(-u_k . v_c)
where v are the input ("centre") vectors and u the output ("context") vectors; v is the embedding.
"""
import numpy as np

from ..tensor import Tensor


def _unit_rows(matrix):
    matrix = np.asarray(matrix.numpy() if isinstance(matrix, Tensor) else matrix, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def _word_index(vocab, word):
    index = getattr(vocab, "index", None)
    if not isinstance(index, dict):  # a plain list of words
        index = {w: i for i, w in enumerate(vocab)}
    if word not in index:
        raise KeyError(f"{word!r} is not in the vocabulary")
    return index[word]


def _symbols(vocab):
    return vocab.symbols if hasattr(vocab, "symbols") else list(vocab)


def cosine_similarity(matrix, vector):
    """cos(row_i, vector) for every row of `matrix`: a (V,) array."""
    unit = _unit_rows(matrix)
    v = np.asarray(vector, dtype=np.float64)
    return unit @ (v / max(np.linalg.norm(v), 1e-12))


def nearest_neighbours(matrix, vocab, query, k=5, exclude=()):
    """The k words whose vectors have the largest cosine similarity to `query` (a word of the
    vocabulary, excluded from its own list, or a vector).  vocab: a WordVocab/CharVocab or a
    list of words in row order.  Returns [(word, similarity)], most similar first."""
    symbols = _symbols(vocab)
    skip = set(exclude)
    if isinstance(query, str):
        row = _word_index(vocab, query)
        vector = _unit_rows(matrix)[row]
        skip.add(row)
    else:
        vector = query
    sims = cosine_similarity(matrix, vector)
    skip = {i if isinstance(i, (int, np.integer)) else _word_index(vocab, i) for i in skip}
    order = [i for i in np.argsort(-sims, kind="stable") if i not in skip]
    return [(symbols[i], float(sims[i])) for i in order[:k]]


def analogy(matrix, vocab, a, b, c, k=1):
    """'a is to b as c is to ?': the words nearest to b - a + c (a, b, c excluded)."""
    unit = _unit_rows(matrix)
    ia, ib, ic = (_word_index(vocab, w) for w in (a, b, c))
    return nearest_neighbours(matrix, vocab, unit[ib] - unit[ia] + unit[ic], k, exclude=(ia, ib, ic))


def skipgram_pairs(ids, window):
    """All (centre, context) id pairs with 1 <= |offset| <= window, as two int64 arrays."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    centres, contexts = [], []
    for offset in range(1, window + 1):
        if offset >= ids.size:
            break
        centres += [ids[:-offset], ids[offset:]]
        contexts += [ids[offset:], ids[:-offset]]
    if not centres:
        raise ValueError("skipgram_pairs: the text is shorter than two tokens")
    return np.concatenate(centres), np.concatenate(contexts)


def negative_sampling_table(ids, vocab_size, power=0.75):
    """P(word) proportional to count(word)^(3/4): frequent words are drawn less than their share."""
    counts = np.bincount(np.asarray(ids).reshape(-1), minlength=vocab_size).astype(np.float64)
    weights = counts ** power
    return weights / weights.sum()


def skipgram_loss(centre_vectors, context_vectors, negative_vectors):
    """Mean over the batch of -log sigma(u_o . v_c) - sum_k log sigma(-u_k . v_c).
    Shapes: (B, d), (B, d), (B, K, d) Tensors.  log sigma(x) = -softplus(-x) is computed stably."""
    from ..nn import functional as F

    positive = (centre_vectors * context_vectors).sum(dim=-1)                       # (B,)
    negative = (negative_vectors * centre_vectors.unsqueeze(1)).sum(dim=-1)         # (B, K)
    # -log sigma(s) is BCE-with-logits against 1; -log sigma(-s) against 0
    ones = Tensor._wrap(np.ones(positive.shape, dtype=positive.dtype))
    zeros = Tensor._wrap(np.zeros(negative.shape, dtype=negative.dtype))
    loss_pos = F.binary_cross_entropy_with_logits(positive, ones, reduction="sum")
    loss_neg = F.binary_cross_entropy_with_logits(negative, zeros, reduction="sum")
    return (loss_pos + loss_neg) * (1.0 / positive.shape[0])


def train_word2vec(ids, vocab_size, dim=50, window=2, negatives=5, epochs=1, batch_size=256, lr=0.01,
                   seed=0, echo=None):
    """Skip-gram word2vec with negative sampling on an id stream; returns the (V, dim) input
    vectors as a NumPy array (and the losses per epoch as the second value)."""
    from .. import nn, optim
    from ..random import manual_seed

    if dim < 1 or window < 1 or negatives < 1 or epochs < 1 or batch_size < 1:
        raise ValueError("train_word2vec: dim, window, negatives, epochs and batch_size must be positive")
    manual_seed(seed)
    rng = np.random.default_rng(seed)
    centres, contexts = skipgram_pairs(ids, window)
    noise = negative_sampling_table(ids, vocab_size)
    centre_embedding = nn.Embedding(vocab_size, dim)
    context_embedding = nn.Embedding(vocab_size, dim)
    # word2vec's initialisation: small random centre vectors, zero context vectors
    centre_embedding.weight.data = ((rng.random((vocab_size, dim)) - 0.5) / dim).astype(np.float32)
    context_embedding.weight.data = np.zeros((vocab_size, dim), dtype=np.float32)
    params = list(centre_embedding.parameters()) + list(context_embedding.parameters())
    optimizer = optim.Adam(params, lr=lr)
    losses = []
    for epoch in range(epochs):
        order = rng.permutation(centres.size)
        total, batches = 0.0, 0
        for start in range(0, order.size, batch_size):
            batch = order[start:start + batch_size]
            negative_ids = rng.choice(vocab_size, size=(batch.size, negatives), p=noise)
            loss = skipgram_loss(centre_embedding(Tensor(centres[batch])),
                                 context_embedding(Tensor(contexts[batch])),
                                 context_embedding(Tensor(negative_ids)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.item())
            batches += 1
        losses.append(total / batches)
        if echo:
            echo(f"epoch {epoch + 1}: loss {losses[-1]:.4f}")
    return centre_embedding.weight.numpy().copy(), losses
