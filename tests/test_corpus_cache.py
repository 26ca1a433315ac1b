"""text.corpus_cache: a corpus streamed into memory-mapped token ids, equal to the in-memory path."""
import gzip
import os
import subprocess
import sys

import numpy as np
import pytest

import tinygrad_seq.text.corpus_cache as corpus_cache
from tinygrad_seq.text.corpus import CorpusError
from tinygrad_seq.text.corpus_cache import CorpusCache, smallest_uint
from tinygrad_seq.text.vocab import CharVocab, VocabError
from tinygrad_seq.training import StreamBatches, fingerprint, split_corpus

TEXT = "Grüße aus Köln ✓ — the heaven and the earth.\n" * 300 + "end"


@pytest.fixture
def small_chunks(monkeypatch):
    # chunks of a few hundred bytes: characters and the train/validation cut fall across chunk edges
    monkeypatch.setattr(corpus_cache, "CHUNK_BYTES", 333)


def test_smallest_integer_type():
    assert smallest_uint(2) == np.uint8 and smallest_uint(256) == np.uint8
    assert smallest_uint(257) == np.uint16 and smallest_uint(65536) == np.uint16
    assert smallest_uint(65537) == np.uint32


def test_ids_vocabulary_split_and_fingerprints_equal_the_in_memory_path(tmp_path, small_chunks):
    path = tmp_path / "c.txt"
    path.write_text(TEXT)
    cache = CorpusCache.open_or_build(path, cache_dir=tmp_path / "cache", progress=False)
    vocab = CharVocab.from_text(TEXT)
    train, val = split_corpus(TEXT)
    assert cache.vocab.symbols == vocab.symbols and cache.dtype == np.uint8
    assert isinstance(cache.ids, np.memmap)
    np.testing.assert_array_equal(cache.train_ids, vocab.encode(train))
    np.testing.assert_array_equal(cache.val_ids, vocab.encode(val))
    assert cache.fingerprints == {"train": fingerprint(train), "val": fingerprint(val)}
    # the batches a step reads from the memory map are those of the in-memory ids
    mapped, loaded = StreamBatches(cache.train_ids, 8, 16), StreamBatches(vocab.encode(train), 8, 16)
    for step in (0, 1, 5, mapped.chunks + 2):
        for a, b in zip(mapped(step), loaded(step)):
            np.testing.assert_array_equal(a, b)
    # each of two ranks reads its own half of the rows
    halves = [StreamBatches(cache.train_ids, 8, 16, rank, 2)(3)[0] for rank in (0, 1)]
    np.testing.assert_array_equal(np.concatenate(halves), loaded(3)[0])


def test_a_validation_file_a_gz_corpus_and_wide_vocabularies(tmp_path, small_chunks):
    wide = "".join(chr(0x4E00 + i) for i in range(300)) * 3  # 300 CJK characters: uint16 ids
    (tmp_path / "c.txt.gz").write_bytes(gzip.compress(wide.encode()))
    (tmp_path / "v.txt").write_text("abc" + wide[:50])
    cache = CorpusCache.open_or_build(tmp_path / "c.txt.gz", tmp_path / "v.txt", cache_dir=tmp_path / "cache",
                                      progress=False)
    vocab = CharVocab.from_text(wide + "abc")
    assert cache.dtype == np.uint16 and len(cache.vocab) == 303
    np.testing.assert_array_equal(cache.train_ids, vocab.encode(wide))
    np.testing.assert_array_equal(cache.val_ids, vocab.encode("abc" + wide[:50]))


def test_the_key_follows_the_content(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("abcabc" * 100)
    first = CorpusCache.open_or_build(path, cache_dir=tmp_path / "cache", progress=False)
    again = CorpusCache.open_or_build(path, cache_dir=tmp_path / "cache", progress=False)
    assert again.ids_path == first.ids_path
    stat = os.stat(path)
    path.write_text("abdabd" * 100)  # same size; the mtime is put back: only the content tells
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    changed = CorpusCache.open_or_build(path, cache_dir=tmp_path / "cache", progress=False)
    assert changed.ids_path != first.ids_path and "d" in changed.vocab.symbols
    entries = sorted(os.listdir(tmp_path / "cache"))
    assert len(entries) == 2, entries  # the stale entry is gone
    # a half-written entry (ids shorter than its metadata says) is rebuilt
    with open(changed.ids_path, "r+b") as f:
        f.truncate(10)
    rebuilt = CorpusCache.open_or_build(path, cache_dir=tmp_path / "cache", progress=False)
    assert rebuilt.ids.size == 600


def test_bad_corpora_are_one_line_errors(tmp_path, small_chunks):
    cache_dir = tmp_path / "cache"
    (tmp_path / "blank.txt").write_text("   \n\n ")
    (tmp_path / "latin.txt").write_bytes(b"a" * 1000 + "è".encode("latin-1"))
    (tmp_path / "empty.txt").write_text("")
    cases = [("missing.txt", "no such file"), ("blank.txt", "holds only whitespace"),
             ("latin.txt", "byte 0xe8 at offset 1000"), ("empty.txt", "is empty"), (".", "is a directory")]
    for name, message in cases:
        with pytest.raises(CorpusError, match=message):
            CorpusCache.open_or_build(tmp_path / name, cache_dir=cache_dir, progress=False)


def test_encode_file_names_unknown_characters(tmp_path):
    (tmp_path / "t.txt").write_text("abcz")
    with pytest.raises(VocabError, match="'z'"):
        corpus_cache.encode_file(tmp_path / "t.txt", CharVocab("abc"), tmp_path / "ids", progress=False)


def _peak_rss_mb(args, cwd):
    code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code] + args, capture_output=True, text=True, cwd=cwd, check=True)
    return int(out.stdout.split()[-1]) / 1024


def test_training_memory_does_not_grow_with_the_corpus(tmp_path):
    """`tgs train charlm` on a 60 MB corpus peaks within 40 MB of the same run on a tiny one
    (reading it whole took ~17 bytes a character, 1 GB here), and under 300 MB + 5% of it."""
    line = "and the earth was without form, and void; and darkness was upon the deep.\n"
    big = tmp_path / "big.txt"
    with open(big, "w") as f:
        block = line * 10_000
        for _ in range(60_000_000 // len(block)):
            f.write(block)
    small = tmp_path / "small.txt"
    small.write_text(line * 100)
    options = ["--hidden", "16", "--embed", "8", "--seq-len", "16", "--batch-size", "4", "--steps", "2",
               "--eval-every", "2", "--val-tokens", "2000"]
    tgs = [sys.executable, "-m", "tinygrad_seq.cli.main", "train", "charlm"]
    small_mb = _peak_rss_mb(tgs + [str(small), "--out", "small"] + options, tmp_path)
    big_mb = _peak_rss_mb(tgs + [str(big), "--out", "big"] + options, tmp_path)
    size_mb = os.path.getsize(big) / 2 ** 20
    assert big_mb < 300 + 0.05 * size_mb, (small_mb, big_mb)
    assert big_mb - small_mb < 40, (small_mb, big_mb)


def test_streamed_eval_equals_the_in_memory_figures_and_shows_progress(tmp_path, small_chunks, monkeypatch):
    import io

    from tinygrad_seq.checkpoint import load_checkpoint
    from tinygrad_seq.training import evaluate_file, evaluate_text

    from cli_helpers import tgs

    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT)
    result = tgs("train", "charlm", corpus, "--hidden", 8, "--embed", 4, "--seq-len", 8, "--batch-size", 2,
                 "--steps", 2, "--eval-every", 2, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    state = load_checkpoint(tmp_path / "run")
    monkeypatch.setattr(corpus_cache.ByteProgress, "QUIET_SECONDS", 0.0)
    log = io.StringIO()
    streamed = evaluate_file(state, corpus, stream=log)
    assert streamed == pytest.approx(evaluate_text(state, TEXT), rel=1e-9)
    assert "encoding" in log.getvalue() and "evaluating" in log.getvalue() and "100%" in log.getvalue()


# ---------------------------------------------------------------------------- word level
def _words_text(n_words=400, lines=60):
    """Lines of 400 distinct words with varied counts (more than 256 ids: uint16), punctuation,
    CRLF and CR line ends, blank lines, and one line longer than a chunk."""
    words = [f"w{i}" for i in range(n_words)]
    rows = []
    for line in range(lines):
        picked = [words[(line * 7 + k * k) % (n_words // (1 + line % 3))] for k in range(12)]
        rows.append(" ".join(picked) + (", isn't it;" if line % 4 == 0 else "."))
    rows[10] = " ".join(words) + "!"  # longer than a 333-byte chunk
    return "\r\n".join(rows[:20]) + "\n\n" + "\n".join(rows[20:40]) + "\r" + "\n".join(rows[40:])


@pytest.mark.parametrize("min_count, max_vocab", [(1, 10_000), (2, 300), (3, 50)])
def test_word_ids_vocabulary_split_and_fingerprints_equal_the_in_memory_path(tmp_path, small_chunks,
                                                                             min_count, max_vocab):
    from tinygrad_seq.text.vocab import WordVocab

    text = _words_text()
    path = tmp_path / "w.txt"
    path.write_bytes(text.encode())  # the line ends exactly as written
    cache = CorpusCache.open_or_build(path, cache_dir=tmp_path / "cache", progress=False, level="word",
                                      min_count=min_count, max_vocab=max_vocab)
    train, val = split_corpus(text)  # the cut falls inside a line (and maybe a word), as in memory
    vocab = WordVocab.from_text(train, min_count=min_count, max_size=max_vocab)
    assert cache.vocab.to_dict() == vocab.to_dict()
    assert cache.dtype == smallest_uint(len(vocab)) and isinstance(cache.ids, np.memmap)
    np.testing.assert_array_equal(cache.train_ids, vocab.encode(train))
    np.testing.assert_array_equal(cache.val_ids, vocab.encode(val))
    assert cache.fingerprints == {"train": fingerprint(train), "val": fingerprint(val)}
    if max_vocab == 10_000:
        assert cache.dtype == np.uint16 and len(vocab) > 256


def test_word_cache_with_a_validation_file_and_reuse(tmp_path, small_chunks, monkeypatch):
    from tinygrad_seq.text.vocab import WordVocab

    text = _words_text()
    (tmp_path / "w.txt.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "v.txt").write_text("w1 w2 never-seen w3.\nw4")
    options = dict(cache_dir=tmp_path / "cache", progress=False, level="word", min_count=2, max_vocab=1000)
    cache = CorpusCache.open_or_build(tmp_path / "w.txt.gz", tmp_path / "v.txt", **options)
    vocab = WordVocab.from_text(text, min_count=2, max_size=1000)  # the whole corpus trains
    assert cache.vocab.to_dict() == vocab.to_dict()
    np.testing.assert_array_equal(cache.train_ids, vocab.encode(text))
    np.testing.assert_array_equal(cache.val_ids, vocab.encode("w1 w2 never-seen w3.\nw4"))
    assert 0 in cache.val_ids  # the unseen word is <UNK>
    # opened again: read from the cache, not built; the character level's entry lives beside it
    monkeypatch.setattr(corpus_cache, "_build", lambda *a, **k: pytest.fail("rebuilt an up-to-date cache"))
    again = CorpusCache.open_or_build(tmp_path / "w.txt.gz", tmp_path / "v.txt", **options)
    assert again.ids_path == cache.ids_path
    monkeypatch.undo()
    chars = CorpusCache.open_or_build(tmp_path / "w.txt.gz", tmp_path / "v.txt", cache_dir=tmp_path / "cache",
                                      progress=False)
    other = CorpusCache.open_or_build(tmp_path / "w.txt.gz", tmp_path / "v.txt", **dict(options, min_count=1))
    assert len({cache.ids_path, chars.ids_path, other.ids_path}) == 3
    assert all(os.path.exists(c.ids_path) for c in (cache, chars, other))  # none deleted the others


def test_wordlm_trains_on_memory_mapped_ids_from_the_cache(tmp_path, monkeypatch):
    """`tgs train wordlm` reads its training and validation ids through np.memmap (its memory
    does not grow with the corpus), and resuming opens the same cache entry."""
    from tinygrad_seq.training import LMTrainer

    from cli_helpers import tgs

    seen = []
    original = LMTrainer.__init__

    def recording(self, config, vocab, train_ids, val_ids, *args, **kwargs):
        original(self, config, vocab, train_ids, val_ids, *args, **kwargs)
        seen.append((self.train_ids, self.val_ids, self.batches.inputs))

    monkeypatch.setattr(LMTrainer, "__init__", recording)
    corpus = tmp_path / "w.txt"
    corpus.write_text(_words_text())
    options = ["--hidden", 8, "--embed", 4, "--seq-len", 6, "--batch-size", 2, "--eval-every", 2,
               "--min-count", 1, "--out", tmp_path / "run"]
    result = tgs("train", "wordlm", corpus, "--steps", 2, *options)
    assert result.exit_code == 0, result.output
    resumed = tgs("train", "wordlm", corpus, "--steps", 4, "--resume", *options)
    assert resumed.exit_code == 0, resumed.output
    assert len(seen) == 2
    for train_ids, val_ids, rows in seen:
        assert isinstance(train_ids, np.memmap) and isinstance(val_ids, np.memmap)
        assert isinstance(rows.base, np.memmap) or isinstance(rows, np.memmap)  # a view, not a copy
    entries = [n for n in os.listdir(tmp_path / "run" / "corpus-cache") if n.endswith(".ids")]
    assert len(entries) == 1, entries


def test_streamed_eval_of_a_word_model_equals_the_in_memory_figures(tmp_path, small_chunks, monkeypatch):
    import io

    from tinygrad_seq.checkpoint import load_checkpoint
    from tinygrad_seq.training import evaluate_file, evaluate_text

    from cli_helpers import tgs

    corpus = tmp_path / "w.txt"
    corpus.write_text(_words_text())
    result = tgs("train", "wordlm", corpus, "--hidden", 8, "--embed", 4, "--seq-len", 6, "--batch-size", 2,
                 "--steps", 2, "--eval-every", 2, "--min-count", 2, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    state = load_checkpoint(tmp_path / "run")
    monkeypatch.setattr(corpus_cache.ByteProgress, "QUIET_SECONDS", 0.0)
    log = io.StringIO()
    other = tmp_path / "other.txt"
    other.write_text(_words_text(lines=30) + "\nunknown words here\n")
    streamed = evaluate_file(state, other, stream=log)
    assert streamed == pytest.approx(evaluate_text(state, other.read_bytes().decode()), rel=1e-9)
    assert "encoding" in log.getvalue() and "M words" in log.getvalue() and "100%" in log.getvalue()
