"""A many-to-many sequence tagger: a bidirectional (optionally stacked) LSTM that labels every
token, and its task on real text: finding the proper names in lower-cased KJV verses.

    tokens (B, T) -> Embedding -> [LSTM-> ; <-LSTM] x layers -> Linear -> tag logits (B, T, K)
    P(tag_t | whole verse) = softmax(logits_t);  training minimises the mean per-token cross-entropy

The labels come from the King James Bible's own capitalisation, which marks proper names
("Moses", "Egypt", "the Holy Ghost", "the LORD") but also sentence starts ("And", "Let").
A word token is tagged NAME when it is capitalised in the original text, is not "I" or "O",
and either
  * stands in the middle of a sentence (the token before it is a word, not punctuation or the
    verse start), where a capital can only mean a name, or
  * belongs to a NAME TYPE: a word whose mid-sentence occurrences, counted over the whole
    corpus, are capitalised at least 90% of the time (so "Moses" at a verse start is a name,
    "And" or the "Let" of "And God said, Let there be light" are not).
Everything else (other words and punctuation) is tagged O.  The model sees the verse LOWER-CASED,
so it must recognise names from the words and their context: "lot" (a share) vs "Lot" (a man),
"the red sea", names it has never seen ("the son of <UNK>").  Held-out verses are a fixed 10%
of the Bible chosen at random; scores are per-token accuracy over all tokens and precision /
recall / F1 of the NAME tag.
"""
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..config import Config, check_dropout, check_positive_ints
from ..nn import functional as F
from ..nn.layers import Linear
from ..nn.module import Module
from ..tensor import Tensor, no_grad
from ..text.vocab import WordVocab
from ..trainer import share_weighted, zero_loss
from .seq2seq import HeldOutTrainer, RecurrentEncoder

__all__ = ["TAGS", "NAME", "tokenize", "kjv_verses", "name_types", "label_tokens", "TaggingData", "default_dev_verses", "load_kjv_tagging",
           "TaggerConfig", "Tagger", "tagging_scores", "LengthWindowBatches", "TaggerTrainer", "train_tagger",
           "lexicon_baseline"]

TAGS = ["O", "NAME"]
NAME = 1
PAD_WORD = "<pad>"
NOT_NAMES = {"i", "o"}           # capitalised everywhere, but a pronoun and an interjection
NAME_TYPE_THRESHOLD = 0.9
SPLIT_SEED = 1611                # fixed: the held-out verses must not move with the training seed
TEST_FRACTION = 0.1
IGNORE = -100                    # the target of padded positions

_TOKEN = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?|[^\sA-Za-z0-9]")


def tokenize(verse):
    """Words (with an apostrophe-s) and single punctuation marks, case kept."""
    return _TOKEN.findall(verse)


def kjv_verses(text=None):
    """The verses of the bundled KJV (or of `text` in its format: 'Ge1:1 In the beginning...'),
    reference removed, one string each."""
    if text is None:
        from ..text.corpus import bundled_corpus
        text = bundled_corpus()
    verses = []
    for line in text.splitlines():
        reference, _, verse = line.strip().partition(" ")
        if verse:
            verses.append(verse)
    return verses


def _is_word(token):
    return token[0].isalpha()


def _mid_sentence(tokens, i):
    return i > 0 and _is_word(tokens[i - 1])


def name_types(token_lists, threshold=NAME_TYPE_THRESHOLD):
    """Lower-cased word types capitalised in at least `threshold` of their mid-sentence uses."""
    upper, lower = Counter(), Counter()
    for tokens in token_lists:
        for i, t in enumerate(tokens):
            if _is_word(t) and _mid_sentence(tokens, i):
                (upper if t[0].isupper() else lower)[t.lower()] += 1
    return {w for w, n in upper.items() if n / (n + lower[w]) >= threshold} - NOT_NAMES


def label_tokens(tokens, names):
    """The tag (0 = O, 1 = NAME) of every token (see the module docstring for the rule)."""
    tags = []
    for i, t in enumerate(tokens):
        capital = _is_word(t) and t[0].isupper() and t.lower() not in NOT_NAMES
        tags.append(int(capital and (_mid_sentence(tokens, i) or t.lower() in names)))
    return tags


@dataclass
class TaggingData:
    """Lower-cased token lists and their tags: training verses, dev verses (set aside from the
    training side, for validation) and the held-out test verses (for the final score)."""

    train_tokens: list
    train_tags: list
    test_tokens: list
    test_tags: list
    dev_tokens: list = field(default_factory=list)
    dev_tags: list = field(default_factory=list)


def default_dev_verses(train_side):
    """Dev verses set aside from a training side of `train_side` verses: a tenth, at most 1000."""
    return max(1, min(1000, train_side // 10))


def load_kjv_tagging(text=None, train_verses=None, test_verses=None, seed=0, dev_verses=None):
    """The name-tagging task on the KJV.  The held-out 10% of verses (test) is fixed; `dev_verses`
    (default: default_dev_verses of the rest) are set aside from the rest by a generator seeded
    with `seed`, and the training verses are what remains.  `train_verses` / `test_verses` take
    random subsets of their side (drawn with `seed`) for quicker runs; dev, train and test never
    share a verse."""
    raw = [tokenize(v) for v in kjv_verses(text)]
    names = name_types(raw)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(raw))
    n_test = max(1, int(round(len(raw) * TEST_FRACTION)))
    test_idx, train_idx = order[:n_test], order[n_test:]
    rng = np.random.default_rng(seed)
    if train_verses is not None:
        train_idx = rng.permutation(train_idx)[:train_verses]
    if test_verses is not None:
        test_idx = rng.permutation(test_idx)[:test_verses]
    n_dev = default_dev_verses(len(train_idx)) if dev_verses is None else dev_verses
    shuffled = np.random.default_rng([seed, 1]).permutation(train_idx)
    dev_idx, train_idx = shuffled[:n_dev], shuffled[n_dev:]

    def side(indices):
        indices = sorted(int(i) for i in indices)
        return [[t.lower() for t in raw[i]] for i in indices], [label_tokens(raw[i], names) for i in indices]

    return TaggingData(*side(train_idx), *side(test_idx), *side(dev_idx))


def tagger_vocab(token_lists, min_count=2):
    """Words seen at least `min_count` times (the rest become <UNK>, so the model learns to
    tag from context too), plus <pad>."""
    counts = Counter(t for tokens in token_lists for t in tokens)
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return WordVocab([PAD_WORD] + words)


@dataclass
class TaggerConfig(Config):
    vocab_size: int = 0
    num_tags: int = 2
    cell: str = "lstm"
    embed: int = 64
    hidden: int = 64           # per direction
    layers: int = 1            # stacked bidirectional layers
    bidirectional: bool = True
    dropout: float = 0.0

    def __post_init__(self):
        check_positive_ints(self, ("vocab_size", "num_tags", "embed", "hidden", "layers"))
        if self.cell not in ("lstm", "gru"):
            raise ValueError(f"unknown cell {self.cell!r}: choose lstm or gru")
        check_dropout(self.dropout)


class Tagger(Module):
    """Bidirectional (stacked) LSTM tagger over words; `vocab` is a WordVocab with <pad>."""

    def __init__(self, config, vocab):
        super().__init__()
        if len(vocab) != config.vocab_size:
            raise ValueError(f"Tagger: the vocabulary has {len(vocab)} words but the config says {config.vocab_size}")
        self.config, self.vocab = config, vocab
        self.pad_id = vocab.index[PAD_WORD]
        self.encoder = RecurrentEncoder(config.vocab_size, config.embed, config.hidden, config.cell, config.layers,
                                        config.bidirectional, config.dropout, padding_idx=self.pad_id)
        self.head = Linear(self.encoder.output_size, config.num_tags)

    def batch(self, token_lists):
        """Token lists -> (ids (B, T) padded, lengths (B,))."""
        lengths = np.array([len(t) for t in token_lists], dtype=np.int64)
        if lengths.size == 0 or lengths.min() < 1:
            raise ValueError("Tagger: every sequence needs at least one token")
        ids = np.full((len(token_lists), int(lengths.max())), self.pad_id, dtype=np.int64)
        for row, tokens in zip(ids, token_lists):
            row[:len(tokens)] = self.vocab.encode_tokens(tokens)
        return ids, lengths

    def forward(self, ids, lengths):
        """ids (B, T), lengths (B,) -> tag logits (B, T, num_tags)."""
        ids = ids if isinstance(ids, Tensor) else Tensor(np.asarray(ids, dtype=np.int64))
        outputs, _ = self.encoder(ids, lengths)
        return self.head(outputs)

    def loss(self, token_lists, tag_lists):
        """Mean cross-entropy per real token."""
        ids, lengths = self.batch(token_lists)
        target = np.full(ids.shape, IGNORE, dtype=np.int64)
        for row, tags in zip(target, tag_lists):
            row[:len(tags)] = tags
        logits = self(ids, lengths)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), Tensor(target.reshape(-1)), ignore_index=IGNORE)

    def predict(self, token_lists, batch_size=128):
        """The most likely tag of every token: a list of int lists."""
        was_training = self.training
        self.eval()
        out = []
        try:
            with no_grad():
                for start in range(0, len(token_lists), batch_size):
                    chunk = token_lists[start:start + batch_size]
                    ids, lengths = self.batch(chunk)
                    best = self(ids, lengths).data.argmax(axis=-1)
                    out += [best[i, :n].tolist() for i, n in enumerate(lengths)]
        finally:
            self.train(was_training)
        return out

    def tag_text(self, text):
        """[(token, tag name)] for a line of text (lower-cased, as in training)."""
        tokens = [t.lower() for t in tokenize(text)]
        if not tokens:
            raise ValueError("nothing to tag: the text has no words")
        return list(zip(tokens, (TAGS[t] for t in self.predict([tokens])[0])))


def tagging_scores(predicted, gold):
    """Per-token accuracy and the NAME tag's precision, recall and F1 (with the counts)."""
    p = np.concatenate([np.asarray(x, dtype=np.int64) for x in predicted]) if predicted else np.zeros(0, np.int64)
    g = np.concatenate([np.asarray(x, dtype=np.int64) for x in gold]) if gold else np.zeros(0, np.int64)
    if p.shape != g.shape:
        raise ValueError(f"tagging_scores: {p.size} predicted tags but {g.size} gold tags")
    tp = int(((p == NAME) & (g == NAME)).sum())
    fp = int(((p == NAME) & (g != NAME)).sum())
    fn = int(((p != NAME) & (g == NAME)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": float((p == g).mean()) if g.size else 0.0, "precision": precision, "recall": recall,
            "f1": f1, "tokens": int(g.size), "names": int((g == NAME).sum())}


def lexicon_baseline(train_tokens, train_tags, test_tokens):
    """The no-context baseline: tag each word with its most frequent tag in training (O if unseen)."""
    votes = {}
    for tokens, tags in zip(train_tokens, train_tags):
        for t, y in zip(tokens, tags):
            votes.setdefault(t, Counter())[y] += 1
    return [[votes[t].most_common(1)[0][0] if t in votes else 0 for t in tokens] for tokens in test_tokens]


class LengthWindowBatches:
    """Batch source: verses batched with others of similar length (a random window of the
    length-sorted list), so little time goes into padding; drawn by a generator seeded with
    (seed, step), so a step's batch does not depend on the steps before it."""

    def __init__(self, token_lists, tag_lists, batch_size, seed):
        if not token_lists:
            raise ValueError("no training verses")
        self.tokens, self.tags, self.batch_size, self.seed = token_lists, tag_lists, batch_size, seed
        self.by_length = np.argsort([len(t) for t in token_lists], kind="stable")
        self.window = min(len(self.by_length), batch_size * 8)

    def __call__(self, step):
        rng = np.random.default_rng([self.seed, step])
        start = rng.integers(0, len(self.by_length) - self.window + 1)
        chosen = rng.choice(self.by_length[start:start + self.window], size=min(self.batch_size, self.window),
                            replace=False)
        return [self.tokens[i] for i in chosen], [self.tags[i] for i in chosen]


class TaggerTrainer(HeldOutTrainer):
    """Adam on random batches of verses with the shared loop.  Validation (what callbacks and a
    tuner see): the loss on the dev verses, at the last step also their per-token accuracy and
    the NAME tag's precision, recall and F1.  The test verses (`test_tokens`, `test_tags`) are
    scored once, at the last step, for the final report (`scores`); they never steer the run.

    Under MPI each rank takes its share of every batch (`--batch-size` stays the global batch)."""

    kind = "tagger"
    metric = "val_loss"
    unit = "verses"

    def __init__(self, config, model, tokens, tags, val_tokens=None, val_tags=None, info=None, test_tokens=None,
                 test_tags=None, **trainer_options):
        super().__init__(config, model, LengthWindowBatches(tokens, tags, config.batch_size, config.seed),
                         **trainer_options)
        self.val_tokens, self.val_tags = list(val_tokens or []), list(val_tags or [])
        self.test_tokens, self.test_tags = list(test_tokens or []), list(test_tags or [])
        self.info = dict(info or {})
        self.scores = None

    def compute_loss(self, batch):
        (tokens, tags), (all_tokens, _) = batch
        if not tokens:
            return zero_loss(self.params)
        loss = self.model.loss(tokens, tags)
        if self.world_size == 1:
            return loss
        return share_weighted(loss, sum(map(len, tokens)), sum(map(len, all_tokens)), self.world_size)

    def dev_size(self):
        return len(self.val_tokens)

    def dev_loss(self, n):
        return self.model.loss(self.val_tokens[:n], self.val_tags[:n])

    def dev_scores(self):
        dev = tagging_scores(self.model.predict(self.val_tokens), self.val_tags)
        return {k: v for k, v in dev.items() if k in ("accuracy", "precision", "recall", "f1")}

    def score_test(self):
        if self.test_tokens:
            self.scores = tagging_scores(self.model.predict(self.test_tokens), self.test_tags)

    def dev_summary(self, metrics):
        return f"dev NAME F1 {metrics['f1']:.3f} on {len(self.val_tokens):,} dev verses"

    def checkpoint_extra(self):
        return {"model_config": self.model.config.to_dict(), "vocab": self.model.vocab.to_dict(),
                "train": dict(self.info, seed=self.config.seed, test_scores=self.scores)}


def train_tagger(model, token_lists, tag_lists, steps, batch_size=32, lr=3e-3, clip=5.0, seed=0, callback=None,
                 log_every=None):
    """Adam on random batches of verses of similar length through the shared loop (TaggerTrainer,
    nothing written).  `callback(step, loss)` every `log_every` steps; returning True stops.
    Returns the losses."""
    from .seq2seq import Seq2SeqTrainConfig, _run_quietly

    if not token_lists:
        raise ValueError("no training verses")
    if steps == 0:
        return []
    config = Seq2SeqTrainConfig(steps=steps, batch_size=batch_size, lr=lr, clip=clip, seed=seed, eval_every=steps)
    return _run_quietly(TaggerTrainer(config, model, token_lists, tag_lists), callback, log_every)
