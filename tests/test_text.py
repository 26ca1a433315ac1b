"""Text: corpora, vocabularies, the n-gram LM, decoding and word embeddings."""
import gzip
import itertools
import math

import numpy as np
import pytest

from tinygrad_seq.text import decoding
from tinygrad_seq.text.corpus import CorpusError, bundled_corpus, read_text, split_tail
from tinygrad_seq.text.embeddings import (analogy, nearest_neighbours, negative_sampling_table, skipgram_loss,
                                          skipgram_pairs, train_word2vec)
from tinygrad_seq.text.ngram import NGramLM
from tinygrad_seq.text.vocab import ByteVocab, CharVocab, VocabError, WordVocab, tokenize_words, vocab_from_dict


# ---------------------------------------------------------------------------- corpora
def test_read_text_plain_and_gzip(tmp_path):
    (tmp_path / "a.txt").write_text("héllo\nworld\n", encoding="utf-8")
    (tmp_path / "b.txt.gz").write_bytes(gzip.compress("héllo\nworld\n".encode()))
    assert read_text(tmp_path / "a.txt") == "héllo\nworld\n"
    assert read_text(tmp_path / "b.txt.gz") == "héllo\nworld\n"


@pytest.mark.parametrize("case, expected", [
    ("missing", "no such file"), ("directory", "is a directory"), ("empty", "is empty"),
    ("blank", "only whitespace"), ("latin1", "not valid utf-8 text: byte 0xe9 at offset 1"),
])
def test_read_text_errors_are_one_line(tmp_path, case, expected):
    path = tmp_path / "corpus.txt"
    if case == "directory":
        path = tmp_path
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "blank":
        path.write_bytes(b"  \n\n")
    elif case == "latin1":
        path.write_bytes("héllo".encode("latin-1"))
    with pytest.raises(CorpusError) as info:
        read_text(path)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_bundled_corpus_and_split():
    text = bundled_corpus()
    assert text.startswith("Ge1:1 In the beginning God created the heaven and the earth.")
    assert len(text) > 4_000_000
    head, tail = split_tail("abcdefghij", 0.2)
    assert (head, tail) == ("abcdefgh", "ij")


# ---------------------------------------------------------------------------- vocabularies
def test_char_vocab_round_trip_and_unknowns():
    vocab = CharVocab.from_text("hello world")
    assert vocab.symbols == sorted(set("hello world"))
    ids = vocab.encode("hello")
    assert ids.dtype == np.int64 and vocab.decode(ids) == "hello"
    assert ids.tolist() == [vocab.symbols.index(c) for c in "hello"]
    with pytest.raises(VocabError, match=r"2 character\(s\) not in the model's vocabulary: 'x', 'z'"):
        vocab.encode("hex zz")
    again = vocab_from_dict(vocab.to_dict())
    assert again.symbols == vocab.symbols and again.encode("world").tolist() == vocab.encode("world").tolist()


def test_byte_vocab_round_trip_non_ascii():
    vocab = ByteVocab()
    ids = vocab.encode("naïve ☃")
    assert len(vocab) == 256 and ids.size == len("naïve ☃".encode()) and ids.max() < 256
    assert vocab.decode(ids) == "naïve ☃"
    assert isinstance(vocab_from_dict(vocab.to_dict()), ByteVocab)


def test_word_vocab_min_count_max_size_unk_eos():
    text = "the cat sat.\nthe cat ran.\nthe dog sat.\n"
    assert tokenize_words(text)[:5] == ["the", "cat", "sat", ".", "<EOS>"]
    vocab = WordVocab.from_text(text, min_count=2)
    assert vocab.symbols[:2] == ["<UNK>", "<EOS>"]
    assert vocab.symbols[2:] == [".", "the", "cat", "sat"]  # by count, then alphabetically
    ids = vocab.encode("the dog ran.")
    assert vocab.decode(ids) == "the <UNK> <UNK>.\n"
    assert ids[-1] == 1  # <EOS>
    small = WordVocab.from_text(text, max_size=4)
    assert len(small) == 4 and small.symbols[2:] == [".", "the"]
    again = vocab_from_dict(vocab.to_dict())
    assert again.symbols == vocab.symbols
    with pytest.raises(ValueError):
        WordVocab.from_text(text, min_count=0)


# ---------------------------------------------------------------------------- n-grams
TEXT = "the cat sat on the mat. the cat ate the rat. a dog sat on a log."


@pytest.fixture(scope="module")
def char_ids():
    vocab = CharVocab.from_text(TEXT)
    return vocab, vocab.encode(TEXT)


@pytest.mark.parametrize("smoothing", ["add-k", "interpolation", "backoff"])
def test_ngram_is_a_distribution_and_prob_matches(char_ids, smoothing):
    vocab, ids = char_ids
    model = NGramLM(3, len(vocab), smoothing=smoothing, k=0.5).fit(ids)
    contexts = [[], ids[:1].tolist(), ids[3:5].tolist(), [0, 0], vocab.encode("at").tolist(), ids[:10].tolist()]
    for context in contexts:
        dist = model.distribution(context)
        assert dist.shape == (len(vocab),) and (dist > 0).all()
        assert dist.sum() == pytest.approx(1.0, abs=1e-12)
        scalar = [model.prob(context, w) for w in range(len(vocab))]
        np.testing.assert_allclose(scalar, dist, rtol=1e-12, atol=1e-15)


def test_ngram_formulas(char_ids):
    vocab, ids = char_ids
    V = len(vocab)
    at = vocab.encode("at").tolist()
    after_at = [TEXT[i + 2] for i in range(len(TEXT) - 2) if TEXT[i:i + 2] == "at"]  # ' ', ' ', '.', ...
    count_at = len(after_at)
    space = vocab.index[" "]
    c = after_at.count(" ")
    addk = NGramLM(3, V, smoothing="add-k", k=0.5).fit(ids)
    assert addk.prob(at, space) == pytest.approx((c + 0.5) / (count_at + 0.5 * V))
    # backoff: a seen trigram gets its discounted relative frequency
    backoff = NGramLM(3, V, smoothing="backoff", discount=0.5).fit(ids)
    assert backoff.prob(at, space) == pytest.approx((c - 0.5) / count_at)
    # interpolation with all weight on the trigram is the maximum-likelihood estimate
    ml = NGramLM(3, V, smoothing="interpolation", lambdas=[0, 0, 1]).fit(ids)
    assert ml.prob(at, space) == pytest.approx(c / count_at)


def test_ngram_perplexity_sampling_and_saving(char_ids):
    vocab, ids = char_ids
    model = NGramLM(4, len(vocab), smoothing="backoff").fit(ids)
    assert model.perplexity(ids) < len(vocab) / 4  # far better than uniform on its own text
    a = model.sample(50, context=vocab.encode("the "), rng=np.random.default_rng(3))
    b = model.sample(50, context=vocab.encode("the "), rng=np.random.default_rng(3))
    assert a.tolist() == b.tolist() and a.max() < len(vocab)
    greedy = vocab.decode(model.sample(4, context=vocab.encode("the c"), temperature=0))
    assert greedy == "at o"  # "cat sat on", "sat on": after "at " comes "o" most often
    restored = NGramLM.from_state_dict(model.state_dict())
    np.testing.assert_array_equal(restored.distribution(ids[:3]), model.distribution(ids[:3]))


@pytest.mark.parametrize("smoothing", ["add-k", "interpolation", "backoff"])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_ngram_chunked_fit_equals_whole_fit(char_ids, n, smoothing):
    """Counting in chunks shorter than the text (even shorter than the n-1 overlap) gives the
    same counts, probabilities and log-probability as counting it at once."""
    vocab, ids = char_ids
    train, held_out = ids[:50], ids[50:]
    whole = NGramLM(n, len(vocab), smoothing=smoothing).fit(train, chunk_tokens=len(train))
    expected = whole.state_dict()
    for chunk in (1, 2, 7, 49):
        chunked = NGramLM(n, len(vocab), smoothing=smoothing).fit(train, chunk_tokens=chunk)
        got = chunked.state_dict()
        for m in range(n):
            np.testing.assert_array_equal(got["grams"][m], expected["grams"][m])
            np.testing.assert_array_equal(got["counts"][m], expected["counts"][m])
        for context in ([], train[-3:].tolist(), held_out[:2].tolist()):
            np.testing.assert_array_equal(chunked.distribution(context), whole.distribution(context))
        assert chunked.log_prob(held_out, context=train[-3:], chunk_tokens=chunk) == \
            whole.log_prob(held_out, context=train[-3:], chunk_tokens=len(held_out))
    # the counts are the n-grams of the text, each once: n-grams across chunk boundaries included
    text = vocab.decode(train)
    assert got["counts"][n - 1].sum() == len(text) - n + 1
    grams = {vocab.decode(g): int(c) for g, c in zip(got["grams"][n - 1], got["counts"][n - 1])}
    assert grams == {g: sum(text[i:i + n] == g for i in range(len(text) - n + 1)) for g in grams}


def test_ngram_chunked_fit_of_a_large_vocabulary():
    """V^n past 2^62: the rows are sorted as rows, not packed into integers; merged the same."""
    ids = np.random.default_rng(0).choice([3, 70_000, 123_456, 99_999], size=200)
    whole = NGramLM(4, 150_000, smoothing="backoff").fit(ids).state_dict()
    chunked = NGramLM(4, 150_000, smoothing="backoff").fit(ids, chunk_tokens=9).state_dict()
    for m in range(4):
        np.testing.assert_array_equal(chunked["grams"][m], whole["grams"][m])
        np.testing.assert_array_equal(chunked["counts"][m], whole["counts"][m])
    assert whole["counts"][3].sum() == 197


def test_ngram_fits_a_memmap_in_chunks(char_ids, tmp_path):
    """The ids of a corpus cache: a uint8 np.memmap, counted as if it were in memory."""
    vocab, ids = char_ids
    path = tmp_path / "ids.u8"
    ids.astype(np.uint8).tofile(path)
    mapped = np.memmap(path, dtype=np.uint8, mode="r", shape=ids.shape)
    a = NGramLM(3, len(vocab), smoothing="backoff").fit(mapped, chunk_tokens=8)
    b = NGramLM(3, len(vocab), smoothing="backoff").fit(ids)
    assert a.log_prob(mapped, chunk_tokens=5) == b.log_prob(ids)
    with pytest.raises(ValueError, match="chunk_tokens must be positive"):
        NGramLM(3, len(vocab)).fit(mapped, chunk_tokens=0)
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 3\)"):
        NGramLM(2, 3).fit(np.array([0, 1, 2, 2, 1, 5, 0]), chunk_tokens=2)  # bad id in a later chunk


def test_ngram_bad_arguments():
    with pytest.raises(ValueError, match="n must be at least 1"):
        NGramLM(0, 5)
    with pytest.raises(ValueError, match="smoothing"):
        NGramLM(2, 5, smoothing="kneser")
    with pytest.raises(RuntimeError, match="fit"):
        NGramLM(2, 5).distribution([1])


# ---------------------------------------------------------------------------- decoding
def test_probabilities_top_k_and_temperature():
    logits = np.array([[1.0, 3.0, 2.0, 0.0]])
    p = decoding.probabilities(logits)
    np.testing.assert_allclose(p, np.exp(logits) / np.exp(logits).sum())
    top2 = decoding.probabilities(logits, top_k=2)
    assert top2[0, 0] == 0 and top2[0, 3] == 0
    assert top2[0, 1] / top2[0, 2] == pytest.approx(math.e)
    assert decoding.probabilities(logits, temperature=0).tolist() == [[0, 1, 0, 0]]
    hot = decoding.probabilities(logits, temperature=2.0)
    np.testing.assert_allclose(hot, np.exp(logits / 2) / np.exp(logits / 2).sum())


def test_sampling_follows_the_distribution():
    rng = np.random.default_rng(0)
    logits = np.log(np.array([[0.1, 0.6, 0.3]]))
    draws = np.concatenate([decoding.sample_from_logits(logits, rng=rng) for _ in range(20000)])
    freq = np.bincount(draws, minlength=3) / draws.size
    np.testing.assert_allclose(freq, [0.1, 0.6, 0.3], atol=0.015)
    only_top = np.concatenate([decoding.sample_from_logits(logits, top_k=1, rng=rng) for _ in range(50)])
    assert (only_top == 1).all()


class MarkovModel:
    """Next-token log-probabilities that depend on the last two tokens: the one fed in and the
    one before it, which only the state remembers.  A decoder that failed to reorder the
    state along with its hypotheses would score them with the wrong rows."""

    def __init__(self, V, seed):
        self.logp = np.log(np.random.default_rng(seed).dirichlet(np.ones(V) * 0.5, size=(V, V)))

    def step(self, tokens, state):
        before = np.zeros_like(tokens) if state is None else state["before"]
        return self.logp[before, tokens], {"before": tokens}

    def score(self, start, seq):
        before, prev, total = 0, start, 0.0
        for t in seq:
            total += self.logp[before, prev, t]
            before, prev = prev, t
        return total


def test_greedy_and_sample_decoders():
    model = MarkovModel(5, 1)
    ids, _ = decoding.greedy(model.step, None, [2], 4)
    expected, before, prev = [], 0, 2
    for _ in range(4):
        before, prev = prev, int(model.logp[before, prev].argmax())
        expected.append(prev)
    assert ids.tolist() == [expected]
    a, _ = decoding.sample(model.step, None, [2, 3], 6, rng=np.random.default_rng(5))
    b, _ = decoding.sample(model.step, None, [2, 3], 6, rng=np.random.default_rng(5))
    assert a.shape == (2, 6) and np.array_equal(a, b)
    stop, _ = decoding.greedy(model.step, None, [2], 10, eos=expected[1])
    assert stop.tolist() == [expected[:2]]


def test_beam_search_is_exact_when_wide_and_beats_greedy():
    V, L = 4, 3
    for seed in range(6):
        model = MarkovModel(V, seed)
        best = max(itertools.product(range(V), repeat=L), key=lambda s: model.score(0, s))
        hyps = decoding.beam_search(model.step, None, [0], beam_width=V ** (L - 1), max_len=L, length_penalty=0)
        assert tuple(hyps[0].tokens) == best
        assert hyps[0].log_prob == pytest.approx(model.score(0, best))
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
    # greedy takes the locally best first token and loses: 0 -> 1 (0.6) then flat; 0 -> 2 (0.4) then certain
    trap = MarkovModel(4, 0)
    table = np.log(np.array([[0.0001, 0.6, 0.3999, 0.0], [0.25] * 4, [0, 0, 0, 1.0], [0.25] * 4]) + 1e-12)
    trap.logp = np.broadcast_to(table, (4, 4, 4))
    greedy_ids, _ = decoding.greedy(trap.step, None, [0], 2)
    beam = decoding.beam_search(trap.step, None, [0], beam_width=2, max_len=2, length_penalty=0)[0]
    assert greedy_ids.tolist() == [[1, 0]] and beam.tokens == [2, 3]


def test_beam_search_length_normalisation_and_eos():
    # from 0: stop at once (eos=3) with p=0.4, or go through 1 (0.6) and then stop for sure
    model = MarkovModel(4, 0)
    table = np.log(np.array([[1e-9, 0.6, 1e-9, 0.4], [1e-9, 1e-9, 1e-9, 1.0], [0.25] * 4, [0.25] * 4]))
    model.logp = np.broadcast_to(table, (4, 4, 4))
    raw = decoding.beam_search(model.step, None, [0], beam_width=2, max_len=5, eos=3, length_penalty=0)
    normalised = decoding.beam_search(model.step, None, [0], beam_width=2, max_len=5, eos=3, length_penalty=1)
    assert raw[0].tokens == [1, 3] and raw[0].finished          # log 0.6 > log 0.4
    assert raw[1].tokens == [3] and raw[1].log_prob == pytest.approx(math.log(0.4))
    assert normalised[0].score == pytest.approx(math.log(0.6) / 2)
    assert normalised[1].score == pytest.approx(math.log(0.4) / 1)
    # normalising by length lets a longer finished hypothesis beat a shorter, likelier one:
    # [3] has p = 0.3; [1, 3] has p = 0.7 * 0.4 = 0.28 but 0.28 ** (1/2) > 0.3
    table = np.log(np.array([[1e-9, 0.7, 1e-9, 0.3], [1e-9, 0.6, 1e-9, 0.4], [0.25] * 4, [0.25] * 4]))
    model.logp = np.broadcast_to(table, (4, 4, 4))
    raw = decoding.beam_search(model.step, None, [0], beam_width=2, max_len=4, eos=3, length_penalty=0)
    normalised = decoding.beam_search(model.step, None, [0], beam_width=2, max_len=4, eos=3, length_penalty=1)
    assert [h.tokens for h in raw] == [[3], [1, 3]]
    assert [h.tokens for h in normalised] == [[1, 3], [3]]


def test_index_state_nested():
    import tinygrad_seq as tgs

    state = (tgs.Tensor(np.arange(12.0).reshape(2, 3, 2)), [np.arange(3)[None]], {"k": None})
    picked = decoding.index_state(state, np.array([2, 0]), axis=1)
    assert isinstance(picked, tuple) and isinstance(picked[1], list) and picked[2] == {"k": None}
    assert picked[0].numpy()[:, :, 0].tolist() == [[4, 0], [10, 6]]
    assert picked[1][0].tolist() == [[2, 0]]


# ---------------------------------------------------------------------------- embeddings
def test_nearest_neighbours_and_analogy():
    words = ["king", "queen", "man", "woman", "apple"]
    royal, male = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    matrix = np.stack([royal + male, royal - male, male, -male, np.array([0, 0, 1.0])])
    near = nearest_neighbours(matrix, words, "king", k=2)
    assert near[0][0] == "man" and near[0][1] == pytest.approx(1 / math.sqrt(2))
    assert "king" not in [w for w, _ in nearest_neighbours(matrix, words, "king", k=4)]
    assert analogy(matrix, words, "man", "king", "woman")[0][0] == "queen"
    with pytest.raises(KeyError):
        nearest_neighbours(matrix, words, "pear")


def test_skipgram_pieces():
    centres, contexts = skipgram_pairs([5, 6, 7], window=1)
    assert sorted(zip(centres.tolist(), contexts.tolist())) == [(5, 6), (6, 5), (6, 7), (7, 6)]
    table = negative_sampling_table([0, 0, 0, 0, 1], 3)
    np.testing.assert_allclose(table, np.array([4 ** 0.75, 1, 0]) / (4 ** 0.75 + 1))


def test_skipgram_loss_matches_formula_and_gradients():
    import tinygrad_seq as tgs

    rng = np.random.default_rng(0)
    v, u, n = rng.standard_normal((2, 3)), rng.standard_normal((2, 3)), rng.standard_normal((2, 4, 3))
    sig = lambda x: 1 / (1 + np.exp(-x))
    expected = np.mean(-np.log(sig((v * u).sum(-1))) - np.log(sig(-(n * v[:, None]).sum(-1))).sum(-1))
    loss = skipgram_loss(*(tgs.Tensor(a, dtype="float64") for a in (v, u, n)))
    assert float(loss.item()) == pytest.approx(expected)
    assert tgs.gradcheck(skipgram_loss, [v, u, n])


def test_word2vec_puts_cooccurring_words_together():
    # two topics whose words only ever appear next to each other
    rng = np.random.default_rng(0)
    topics = [[0, 1, 2, 3], [4, 5, 6, 7]]
    ids = np.concatenate([rng.permutation(topics[rng.integers(2)]) for _ in range(1500)])
    vectors, losses = train_word2vec(ids, 8, dim=8, window=2, negatives=3, epochs=2, batch_size=512, lr=0.02)
    assert vectors.shape == (8, 8) and losses[-1] < losses[0]
    for word in range(8):
        same = topics[word // 4]
        neighbours = [int(w) for w, _ in nearest_neighbours(vectors, [str(i) for i in range(8)], str(word), k=3)]
        assert set(neighbours) == set(same) - {word}
