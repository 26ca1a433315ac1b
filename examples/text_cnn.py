"""A text CNN on a real task: does a King James verse come from the Old or the New Testament?

    python examples/text_cnn.py                  # about a minute on 2 cores
    python examples/text_cnn.py --epochs 1 --per-class 1500

Data: the bundled corpus (tinygrad_seq/data/kjv.txt.gz), one verse a line, `Ge1:1 In the
beginning ...`; the New Testament starts at Matthew (`Mat1:1`).  The book reference is cut
off, so the model sees only the words.  The Old Testament has about three times as many
verses, so an equal number of each is drawn and a majority-class guess scores 50%.

Model (tinygrad_seq.models.cnn.TextCNN): word embeddings -> Conv1d filters 2, 3 and 4 words
wide -> ReLU -> max over the verse -> linear -> softmax.  Afterwards the script shows, for a
few filters, the n-gram of the test set that excites each one most: the learned n-gram
detectors ("Jesus", "the LORD", "brethren", ...).
"""
import argparse

import tinygrad_seq as tgs
import numpy as np

from tinygrad_seq import optim
from tinygrad_seq.models.cnn import TextCNN, TextCNNConfig
from tinygrad_seq.nn import functional as F
from tinygrad_seq.text.corpus import bundled_corpus
from tinygrad_seq.text.vocab import WordVocab, tokenize_words

NEW_TESTAMENT_START = "Mat1:1 "


def testament_verses(text):
    """[(verse words, label)] with label 0 = Old Testament, 1 = New Testament."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(NEW_TESTAMENT_START))
    return [(line.split(" ", 1)[1], int(i >= start)) for i, line in enumerate(lines) if " " in line]


def encode(verses, vocab, max_len):
    """(N, max_len) ids: each verse's words then <EOS>, cut at max_len or padded with <EOS>."""
    eos = vocab.index[WordVocab.EOS]
    ids = np.full((len(verses), max_len), eos, dtype=np.int64)
    for row, verse in enumerate(verses):
        tokens = vocab.encode(verse)[:max_len]
        ids[row, :len(tokens)] = tokens
    return ids


def accuracy(model, ids, labels, batch_size=256):
    model.eval()
    correct = 0
    with tgs.no_grad():
        for start in range(0, len(ids), batch_size):
            logits = model(tgs.Tensor(ids[start:start + batch_size]))
            correct += int((logits.numpy().argmax(axis=1) == labels[start:start + batch_size]).sum())
    model.train()
    return correct / len(ids)


def strongest_ngrams(model, vocab, ids, filters=3):
    """For the first `filters` filters of each width: the test n-gram with the largest response."""
    model.eval()
    with tgs.no_grad():
        x = model.embedding(tgs.Tensor(ids)).transpose(1, 2)
        for width, conv in zip(model.config.widths, model.convs):
            responses = conv(x).relu().numpy()                       # (N, F, L - width + 1)
            for f in range(filters):
                n, t = np.unravel_index(responses[:, f].argmax(), responses[:, f].shape)
                words = " ".join(vocab.symbols[i] for i in ids[n, t:t + width])
                weight = model.fc.weight.numpy()[:, len(model.convs[0].weight) * model.config.widths.index(width) + f]
                side = "New" if weight[1] > weight[0] else "Old"
                print(f"  width {width} filter {f}: {words!r:40s} -> votes {side} Testament")
    model.train()


def main():
    parser = argparse.ArgumentParser(description="Old or New Testament? A text CNN on KJV verses.")
    parser.add_argument("--per-class", type=int, default=5000, help="verses drawn from each testament")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--max-len", type=int, default=48, help="words per verse kept")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    tgs.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    verses = testament_verses(bundled_corpus())
    chosen = []
    for label in (0, 1):
        pool = [v for v in verses if v[1] == label]
        chosen += [pool[i] for i in rng.choice(len(pool), size=min(args.per_class, len(pool)), replace=False)]
    rng.shuffle(chosen)
    split = int(0.8 * len(chosen))
    train, test = chosen[:split], chosen[split:]

    # the vocabulary comes from the training verses only; unseen test words become <UNK>
    vocab = WordVocab.from_text("\n".join(v for v, _ in train), min_count=2)
    x_train, x_test = encode([v for v, _ in train], vocab, args.max_len), encode([v for v, _ in test], vocab, args.max_len)
    y_train, y_test = np.array([l for _, l in train]), np.array([l for _, l in test])
    print(f"{len(train)} training and {len(test)} test verses, vocabulary of {len(vocab)} words "
          f"(e.g. {' '.join(tokenize_words(test[0][0])[:8])} ...)")

    model = TextCNN(TextCNNConfig(vocab_size=len(vocab), num_classes=2, embed_dim=48, num_filters=48,
                                  widths=(2, 3, 4), dropout=0.5, pad_id=vocab.index[WordVocab.EOS]))
    optimizer = optim.Adam(model.parameters(), lr=args.lr)
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(x_train))
        total = 0.0
        for start in range(0, len(order), args.batch_size):
            batch = order[start:start + args.batch_size]
            loss = F.cross_entropy(model(tgs.Tensor(x_train[batch])), tgs.Tensor(y_train[batch]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        print(f"epoch {epoch}: train loss {total / len(order):.3f}, "
              f"test accuracy {accuracy(model, x_test, y_test):.1%} (guessing: 50%)")
    print("what some filters respond to most:")
    strongest_ngrams(model, vocab, x_test)


if __name__ == "__main__":
    main()
