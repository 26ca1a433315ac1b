"""Word embeddings: train skip-gram word2vec on the King James Bible, then look up neighbours.

    python examples/embedding_neighbours.py        # under a minute on a laptop CPU
    python examples/embedding_neighbours.py --words 40000 --epochs 1

Skip-gram with negative sampling learns a vector per word such that words used in the same
contexts point the same way; cosine similarity then finds a word's neighbours.  The same
`nearest_neighbours` works on any embedding matrix, e.g. the nn.Embedding weight of a
word-level LM trained with `tgs train wordlm`.
"""


from tinygrad_seq.text.corpus import bundled_corpus
from tinygrad_seq.text.embeddings import nearest_neighbours, train_word2vec
from tinygrad_seq.text.vocab import WordVocab

from script_options import run_main

QUERIES = ("god", "king", "water", "son", "gold")


def main(words=150_000, dim=48, window=3, epochs=2, min_count=5, seed=0, queries=QUERIES, verbose=True):
    text = bundled_corpus()
    # drop the verse references ("Ge1:1") so that they do not become words
    text = "\n".join(line.partition(" ")[2] for line in text.splitlines())
    vocab = WordVocab.from_text(text[:words * 6], min_count=min_count, lower=True)
    ids = vocab.encode(text[:words * 6])
    ids = ids[ids > 1][:words]  # without <UNK> and <EOS>
    vectors, losses = train_word2vec(ids, len(vocab), dim=dim, window=window, epochs=epochs, batch_size=512,
                                     lr=0.01, seed=seed, echo=print if verbose else None)
    print(f"{ids.size:,} words, vocabulary {len(vocab):,}, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    neighbours = {}
    for word in queries:
        if word in vocab:
            neighbours[word] = nearest_neighbours(vectors, vocab, word, k=6)
            print(f"{word:8s} " + ", ".join(f"{w} ({s:.2f})" for w, s in neighbours[word]))
    return vectors, vocab, losses, neighbours


if __name__ == "__main__":
    run_main(main, __doc__, "words", "epochs", "dim")
