"""Attention scores of the notes (Bahdanau, Luong), the date data, seq2seq with attention and
the BiLSTM tagger: formulas, PyTorch, finite differences, padding, decoding, learning."""
import datetime

import numpy as np
import pytest
import torch

import tinygrad_seq as tgs
from tinygrad_seq import gradcheck
from tinygrad_seq.models.seq2seq import (BOS_ID, EOS_ID, PAD_ID, RecurrentEncoder, Seq2Seq, Seq2SeqConfig, exact_match,
                                         make_batch, pad_batch, reverse_padded, special_vocab, train)
from tinygrad_seq.models.tagger import (NAME, Tagger, TaggerConfig, TaggerTrainer, label_tokens, lexicon_baseline,
                                        load_kjv_tagging, name_types, tagger_vocab, tagging_scores, tokenize,
                                        train_tagger)
from tinygrad_seq.nn.attention import AdditiveAttention, DotAttention, GeneralAttention
from tinygrad_seq.text.dates import FORMATS, date_pairs, date_splits, parse_date, split_of

RNG = np.random.default_rng(0)


def T(array, **kwargs):
    """A float64 Tensor (float data would otherwise become float32)."""
    return tgs.Tensor(array, dtype=np.float64, **kwargs)


# ---------------------------------------------------------------------------- attention scores
def _softmax_masked(e, mask):
    e = np.where(mask, -np.inf, e)
    w = np.exp(e - e.max(axis=1, keepdims=True))
    return w / w.sum(axis=1, keepdims=True)


def test_additive_attention_is_bahdanaus_formula_and_matches_torch():
    tgs.manual_seed(0)
    att = AdditiveAttention(3, 4, 5).double()
    q, k = RNG.standard_normal((2, 3)), RNG.standard_normal((2, 6, 4))
    mask = np.zeros((2, 6), bool)
    mask[1, 4:] = True
    context, weights = att(T(q), T(k), mask=mask)
    Wq, Wk, bk, v = (att.query_proj.weight.numpy(), att.key_proj.weight.numpy(), att.key_proj.bias.numpy(),
                     att.v.weight.numpy())
    e = (np.tanh((q @ Wq.T)[:, None, :] + k @ Wk.T + bk) @ v.T)[..., 0]
    expected = _softmax_masked(e, mask)
    np.testing.assert_allclose(weights.numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(context.numpy(), np.einsum("bs,bsd->bd", expected, k), atol=1e-12)
    assert np.all(weights.numpy()[1, 4:] == 0)
    # the same through torch autograd: gradients of a loss on the context
    tq, tk = torch.tensor(q, requires_grad=True), torch.tensor(k, requires_grad=True)
    te = (torch.tanh((tq @ torch.tensor(Wq).T)[:, None, :] + tk @ torch.tensor(Wk).T + torch.tensor(bk))
          @ torch.tensor(v).T)[..., 0]
    tw = torch.softmax(te.masked_fill(torch.tensor(mask), float("-inf")), dim=1)
    (torch.einsum("bs,bsd->bd", tw, tk) ** 2).sum().backward()
    ours_q, ours_k = T(q, requires_grad=True), T(k, requires_grad=True)
    (att(ours_q, ours_k, mask=mask)[0] ** 2).sum().backward()
    np.testing.assert_allclose(ours_q.grad.numpy(), tq.grad.numpy(), atol=1e-10)
    np.testing.assert_allclose(ours_k.grad.numpy(), tk.grad.numpy(), atol=1e-10)


@pytest.mark.parametrize("make", [lambda: DotAttention(), lambda: DotAttention(scaled=True),
                                  lambda: GeneralAttention(4, 4)])
def test_luong_scores_and_gradcheck(make):
    tgs.manual_seed(1)
    att = make().double()
    q, k, v = RNG.standard_normal((3, 4)), RNG.standard_normal((3, 5, 4)), RNG.standard_normal((3, 5, 2))
    mask = np.zeros((3, 5), bool)
    mask[0, 3:] = True
    _, weights = att(T(q), T(k), T(v), mask=mask)
    if isinstance(att, GeneralAttention):
        e = np.einsum("bd,bsd->bs", q, k @ att.weight.weight.numpy().T)
    else:
        e = np.einsum("bd,bsd->bs", q, k) / (2.0 if att.scaled else 1.0)
    np.testing.assert_allclose(weights.numpy(), _softmax_masked(e, mask), atol=1e-12)
    assert gradcheck(lambda a, b, c: att(a, b, c, mask=mask)[0], [q, k, v])


# ---------------------------------------------------------------------------- dates
def test_date_pairs_cover_the_formats_parse_back_and_respect_the_split():
    pairs = date_pairs(400, "train", seed=3)
    assert pairs == date_pairs(400, "train", seed=3) and pairs != date_pairs(400, "train", seed=4)
    assert len(FORMATS) >= 8
    for human, iso in pairs:
        day = datetime.date.fromisoformat(iso)
        assert parse_date(human) == day, human
        assert split_of(day) == "train"
    assert all(split_of(datetime.date.fromisoformat(iso)) == "test" for _, iso in date_pairs(100, "test"))
    assert parse_date("3rd of March 2021") == datetime.date(2021, 3, 3)
    assert parse_date("Tue 14 Jun 1988") == datetime.date(1988, 6, 14)
    assert parse_date("12/25/99") == datetime.date(1999, 12, 25)
    with pytest.raises(ValueError, match="not a date"):
        parse_date("yesterday")


# ---------------------------------------------------------------------------- seq2seq
def test_padding_helpers():
    ids, lengths = pad_batch([[5, 6, 7], [8]], bos=True, eos=True)
    np.testing.assert_array_equal(ids, [[BOS_ID, 5, 6, 7, EOS_ID], [BOS_ID, 8, EOS_ID, PAD_ID, PAD_ID]])
    np.testing.assert_array_equal(lengths, [5, 3])
    x = T(np.arange(10).reshape(2, 5))
    np.testing.assert_array_equal(reverse_padded(x, [5, 3]).numpy(), [[4, 3, 2, 1, 0], [7, 6, 5, 8, 9]])


def test_encoder_ignores_padding():
    """A padded row encodes exactly as the same row alone, in both directions."""
    tgs.manual_seed(2)
    enc = RecurrentEncoder(9, 4, 3, cell="lstm", layers=2).double()
    long, short = [3, 4, 5, 6, 7], [5, 8]
    ids, lengths = pad_batch([long, short])
    out, summary = enc(tgs.Tensor(ids), lengths)
    alone_out, alone_summary = enc(tgs.Tensor(np.array([short])), [2])
    np.testing.assert_allclose(out.numpy()[1, :2], alone_out.numpy()[0], atol=1e-12)
    np.testing.assert_allclose(summary.numpy()[1], alone_summary.numpy()[0], atol=1e-12)
    assert np.all(out.numpy()[1, 2:] == 0)


def _copy_model(attention="additive", cell="gru"):
    tgs.manual_seed(0)
    vocab = special_vocab("abcd")
    config = Seq2SeqConfig(len(vocab), len(vocab), cell=cell, embed=8, hidden=16, attention=attention,
                           attention_dim=16, max_target_len=6)
    return Seq2Seq(config, vocab, vocab)


def test_teacher_forcing_equals_step_by_step_decoding():
    model = _copy_model(cell="lstm").double().eval()
    src, tgt_in, _ = make_batch([("abca", "acb"), ("db", "bdd")], model.src_vocab, model.tgt_vocab)
    logits, weights = model(tgs.Tensor(src), tgs.Tensor(tgt_in))
    memory, mask, state = model.encode(tgs.Tensor(src))
    for t in range(tgt_in.shape[1]):
        step_logits, state = model._step(tgt_in[:, t], (state, memory, mask))
        state = state[0]
        np.testing.assert_allclose(step_logits, logits.numpy()[:, t], atol=1e-10)
    np.testing.assert_allclose(weights.numpy().sum(-1), 1.0, atol=1e-12)
    assert np.all(weights.numpy()[1, :, 2:] == 0)  # the second source has two characters


@pytest.mark.parametrize("attention", ["additive", "dot", "general"])
def test_seq2seq_learns_to_reverse_strings(attention):
    rng = np.random.default_rng(1)
    words = ["".join(rng.choice(list("abcd"), size=rng.integers(1, 5))) for _ in range(200)]
    pairs = [(w, w[::-1]) for w in words]
    model = _copy_model(attention)
    losses = train(model, pairs, 150, batch_size=32, lr=1e-2)
    assert losses[-1] < 0.3 * losses[0]
    accuracy, _ = exact_match(model, pairs[:50])
    assert accuracy >= 0.6
    greedy = model.translate(["abcd", "dcb"])
    assert model.translate(["abcd", "dcb"], "beam", beam_width=1) == greedy
    sampled = model.translate(["abcd"], "sample", top_k=1, rng=np.random.default_rng(0))
    assert sampled == greedy[:1]  # top-1 sampling is greedy
    weights, src_chars, out_chars = model.attention_map("abcd")
    assert weights.shape == (len(out_chars), 4) and src_chars == list("abcd")


def test_seq2seq_errors():
    model = _copy_model()
    with pytest.raises(ValueError, match="not in the model's vocabulary"):
        model.translate(["abz"])
    with pytest.raises(ValueError, match="empty"):
        model.translate([""])
    with pytest.raises(ValueError, match="hidden must be a positive integer"):
        Seq2SeqConfig(5, 5, hidden=0)
    with pytest.raises(ValueError, match="unknown attention"):
        Seq2SeqConfig(5, 5, attention="cosine")


# ---------------------------------------------------------------------------- tagger
VERSES = ["And Moses said unto the LORD, Behold, I am slow of speech.",
          "Then went Moses and Aaron unto Pharaoh, and said unto him.",
          "And the LORD spake unto Moses in the land of Egypt.",
          "And it came to pass, when Pharaoh had let the people go."]


def test_name_labels_follow_capitals_in_mid_sentence_and_name_types():
    tokens = [tokenize(v) for v in VERSES]
    names = name_types(tokens)
    assert {"moses", "lord", "pharaoh", "aaron", "egypt"} <= names and "and" not in names
    tags = label_tokens(tokens[0], names)
    assert [t for t, y in zip(tokens[0], tags) if y == NAME] == ["Moses", "LORD"]
    assert label_tokens(["Moses", "said"], names)[0] == NAME  # a name type at a verse start
    assert label_tokens(["I", "said"], names)[0] == 0


def test_tagging_scores():
    scores = tagging_scores([[0, 1, 1, 0], [1]], [[0, 1, 0, 0], [0]])
    assert scores["accuracy"] == pytest.approx(3 / 5)
    assert scores["precision"] == pytest.approx(1 / 3) and scores["recall"] == 1.0
    assert scores["f1"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="predicted tags"):
        tagging_scores([[0]], [[0, 1]])


def test_tagger_learns_names_from_context():
    raw = [tokenize(v) for v in VERSES] * 8
    names = name_types(raw)
    tokens = [[t.lower() for t in v] for v in raw]
    tags = [label_tokens(v, names) for v in raw]
    tgs.manual_seed(0)
    vocab = tagger_vocab(tokens, min_count=1)
    model = Tagger(TaggerConfig(vocab_size=len(vocab), embed=16, hidden=16), vocab)
    losses = train_tagger(model, tokens, tags, 60, batch_size=8, lr=2e-2)
    assert losses[-1] < 0.2 * losses[0]
    scores = tagging_scores(model.predict(tokens), tags)
    assert scores["f1"] > 0.9 and scores["accuracy"] > 0.95
    assert dict(model.tag_text("and moses said unto the lord"))["moses"] == "NAME"
    baseline = tagging_scores(lexicon_baseline(tokens, tags, tokens), tags)
    assert baseline["tokens"] == scores["tokens"]


# ---------------------------------------------------------------------------- dev splits: validation never sees test
def test_date_dev_pairs_are_set_aside_from_training_and_share_no_day_with_test():
    train_pairs, dev, test = date_splits(400, 50, 60, seed=3)
    assert (train_pairs, dev, test) == date_splits(400, 50, 60, seed=3)
    assert date_splits(400, 50, 60, seed=4)[1] != dev
    assert len(train_pairs) == 400 and 50 <= len(dev) <= 60 and len(test) == 50
    assert not set(dev) & set(train_pairs) and not set(dev) & set(test)
    assert not {iso for _, iso in dev} & {iso for _, iso in test}  # not even a day in common
    assert all(split_of(datetime.date.fromisoformat(iso)) == "train" for _, iso in dev)
    assert test == date_pairs(50, "test", seed=4)  # the test split does not move with the dev carve


def _letters(i):
    """A word of its own for each number (the tokenizer keeps letters only): 0 -> "aa", 27 -> "bb"."""
    return "abcdefghijklmnopqrstuvwxyz"[i // 26] + "abcdefghijklmnopqrstuvwxyz"[i % 26]


def test_kjv_dev_verses_are_apart_from_training_and_test_verses():
    text = "\n".join(f"Ge1:{i} And Moses spake unto Aaron the word {_letters(i)}." for i in range(300))
    data = load_kjv_tagging(text, seed=5)
    verses = {name: {" ".join(v) for v in getattr(data, name + "_tokens")} for name in ("train", "dev", "test")}
    assert len(verses["test"]) == 30 and len(verses["dev"]) == 27 and len(verses["train"]) == 243
    assert not verses["dev"] & verses["test"] and not verses["dev"] & verses["train"]
    assert not verses["train"] & verses["test"]
    again = load_kjv_tagging(text, seed=5)
    assert again.dev_tokens == data.dev_tokens and load_kjv_tagging(text, seed=6).dev_tokens != data.dev_tokens
    subset = load_kjv_tagging(text, train_verses=100, test_verses=10, dev_verses=20, seed=5)
    assert len(subset.train_tokens) == 80 and len(subset.dev_tokens) == 20 and len(subset.test_tokens) == 10
    assert {" ".join(v) for v in subset.test_tokens} <= verses["test"]  # the test verses stay the fixed tenth


def _evaluations(trainer):
    seen = []
    trainer.callbacks.append(lambda t, step, metrics: seen.append(dict(metrics)))
    assert trainer.train(echo=lambda line: None, progress=False).status == "done"
    return seen


def test_seq2seq_and_tagger_validate_on_dev_and_score_test_only_at_the_end():
    from tinygrad_seq.models.seq2seq import Seq2SeqTrainConfig, Seq2SeqTrainer

    train_pairs, dev, test = date_splits(60, 12, 8, seed=0)
    src, tgt = special_vocab("".join(s for s, _ in train_pairs + dev + test)), special_vocab("0123456789-")
    tgs.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(len(src), len(tgt), embed=4, hidden=4, attention_dim=4), src, tgt)
    trainer = Seq2SeqTrainer(Seq2SeqTrainConfig(steps=4, eval_every=2, batch_size=8), model, train_pairs, dev, {},
                             test)
    seen = _evaluations(trainer)
    with tgs.no_grad():
        on_dev = model.loss(*map(tgs.Tensor, make_batch(dev, src, tgt))).item()
        on_test = model.loss(*map(tgs.Tensor, make_batch(test, src, tgt))).item()
    assert [("exact_match" in m) for m in seen] == [False, True]
    assert seen[-1]["val_loss"] == pytest.approx(on_dev, rel=1e-12) and on_dev != pytest.approx(on_test, rel=1e-9)
    assert seen[-1]["exact_match"] == exact_match(model, dev)[0]
    assert len(trainer.predictions) == len(test) and trainer.exact_match == exact_match(model, test)[0]

    text = "\n".join(f"Ge1:{i} And Moses spake unto Aaron in Egypt, verse {_letters(i)}." for i in range(120))
    data = load_kjv_tagging(text, seed=0)
    vocab = tagger_vocab(data.train_tokens, min_count=1)
    tagger = Tagger(TaggerConfig(vocab_size=len(vocab), embed=4, hidden=4), vocab)
    trainer = TaggerTrainer(Seq2SeqTrainConfig(steps=2, eval_every=2, batch_size=4), tagger, data.train_tokens,
                            data.train_tags, data.dev_tokens, data.dev_tags, {}, data.test_tokens, data.test_tags)
    seen = _evaluations(trainer)
    with tgs.no_grad():
        assert seen[-1]["val_loss"] == pytest.approx(tagger.loss(data.dev_tokens, data.dev_tags).item(), rel=1e-12)
    assert seen[-1]["f1"] == tagging_scores(tagger.predict(data.dev_tokens), data.dev_tags)["f1"]
    assert trainer.scores == tagging_scores(tagger.predict(data.test_tokens), data.test_tags)
