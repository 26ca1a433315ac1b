"""Which testament is a verse from?  A bidirectional LSTM read of the whole verse, many-to-one.

    python examples/testament_classifier.py        # under a minute on a laptop CPU
    python examples/testament_classifier.py --steps 50

    words -> Embedding -> [LSTM-> ; <-LSTM] -> [h->_last ; h<-_first] -> Linear -> softmax(OT, NT)

The forward LSTM's state after the last word and the backward LSTM's state after the first
summarise the verse from both ends (padding is skipped in both directions; see
tinygrad_seq.models.seq2seq.RecurrentEncoder).  Data: the bundled King James Bible, whose
lines start with a book code ("Ge1:1 ...", "Mat1:1 ..."); the books from Matthew on are the
New Testament.  A fixed 10% of the verses is held out; the majority-class baseline is printed
beside the model's accuracy, since the Old Testament has three times as many verses.
"""
import tinygrad_seq as tgs
import numpy as np

from tinygrad_seq import nn, optim
from tinygrad_seq.models.seq2seq import RecurrentEncoder
from tinygrad_seq.models.tagger import tokenize
from tinygrad_seq.nn import functional as F
from tinygrad_seq.text.corpus import bundled_corpus
from tinygrad_seq.text.vocab import WordVocab

from script_options import run_main

FIRST_NT_BOOK = "Mat"


def load_verses():
    """(lower-cased token lists, labels: 0 = Old, 1 = New Testament)."""
    verses, labels, testament = [], [], 0
    for line in bundled_corpus().splitlines():
        reference, _, verse = line.partition(" ")
        book = reference.rstrip("0123456789:")
        testament = 1 if book == FIRST_NT_BOOK else testament
        if verse:
            verses.append([t.lower() for t in tokenize(verse)][:60])
            labels.append(testament)
    return verses, np.array(labels)


class VerseClassifier(nn.Module):
    def __init__(self, vocab_size, embed, hidden, pad_id):
        super().__init__()
        self.encoder = RecurrentEncoder(vocab_size, embed, hidden, cell="lstm", bidirectional=True, padding_idx=pad_id)
        self.head = nn.Linear(2 * hidden, 2)

    def forward(self, ids, lengths):
        _, summary = self.encoder(ids, lengths)
        return self.head(summary)


def batch(vocab, verses, pad_id):
    lengths = np.array([max(1, len(v)) for v in verses])
    ids = np.full((len(verses), lengths.max()), pad_id, dtype=np.int64)
    for row, verse in zip(ids, verses):
        row[:len(verse)] = vocab.encode_tokens(verse)
    return tgs.Tensor(ids), lengths


def main(steps=250, batch_size=64, embed=32, hidden=32, lr=5e-3, seed=0, verbose=True):
    tgs.manual_seed(seed)
    verses, labels = load_verses()
    order = np.random.default_rng(1611).permutation(len(verses))
    test, train = order[:len(order) // 10], order[len(order) // 10:]
    vocab = WordVocab(["<pad>"] + sorted({w for i in train for w in verses[i]}))
    pad_id = vocab.index["<pad>"]
    model = VerseClassifier(len(vocab), embed, hidden, pad_id)
    optimizer = optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    for step in range(steps):
        chosen = rng.choice(train, size=batch_size, replace=False)
        logits = model(*batch(vocab, [verses[i] for i in chosen], pad_id))
        loss = F.cross_entropy(logits, tgs.Tensor(labels[chosen]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if verbose and (step + 1) % max(1, steps // 5) == 0:
            print(f"step {step + 1}: loss {loss.item():.3f}")
    model.eval()
    correct = 0
    with tgs.no_grad():
        for start in range(0, test.size, 512):
            chunk = test[start:start + 512]
            predicted = model(*batch(vocab, [verses[i] for i in chunk], pad_id)).numpy().argmax(axis=1)
            correct += int((predicted == labels[chunk]).sum())
    accuracy = correct / test.size
    majority = max(labels[test].mean(), 1 - labels[test].mean())
    print(f"held-out accuracy {accuracy:.3f} on {test.size} verses (majority-class baseline {majority:.3f})")
    return accuracy, majority


if __name__ == "__main__":
    run_main(main, __doc__, "steps", "seed")
