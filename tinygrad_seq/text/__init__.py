"""Text: corpora, vocabularies, n-gram models, decoding (greedy, sampling, beam search) and
word embeddings."""
from .corpus import CorpusError, bundled_corpus, read_text, split_tail  # noqa: F401
from .decoding import beam_search, greedy, index_state, sample, sample_from_logits  # noqa: F401
from .ngram import NGramLM  # noqa: F401
from .vocab import ByteVocab, CharVocab, VocabError, WordVocab, tokenize_words, vocab_from_dict  # noqa: F401
