"""Reading text corpora, with one clear sentence for every way a file can be wrong.

    text = read_text("corpus.txt")          # str; .gz files are decompressed
    text = bundled_corpus()                  # the King James Bible shipped with the package

Every failure raises `CorpusError` (a ValueError) whose message is one line the command line
can print as it is: the file is missing, is a directory, is empty, is a truncated or corrupt
gzip file, or is not valid text in the encoding that was tried.
"""
import gzip
import os
import zlib

BUNDLED_CORPUS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "kjv.txt.gz")


class CorpusError(ValueError):
    """A corpus that cannot be used; the message says why in one line."""


def read_text(path, encoding="utf-8"):
    """The whole file as a str (gzip-compressed if the name ends in .gz).

    Raises CorpusError for a missing file, a directory, an empty file or undecodable bytes
    (naming the encoding tried and where the first bad byte is)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CorpusError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CorpusError(f"{path} is a directory; give a text file")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if path.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            raise gzip_error(path, exc) from None
    if not raw:
        raise CorpusError(f"{path} is empty")
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{path} is not valid {encoding} text: byte 0x{raw[exc.start]:02x} at offset "
                          f"{exc.start} cannot be decoded; convert the file to {encoding}") from None
    if not text.strip():
        raise CorpusError(f"{path} holds only whitespace")
    return text


def gzip_error(path, exc):
    """The CorpusError for a .gz file that does not decompress: `exc` an EOFError (truncated)
    or the gzip/zlib error of a corrupt file."""
    if isinstance(exc, EOFError):
        return CorpusError(f"{path} is a truncated gzip file (it ends before the compressed data does); "
                           "download or copy it again")
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return CorpusError(f"{path} is not a valid gzip file ({reason}); download it again, or "
                       "decompress it yourself and give the plain text file")


def bundled_corpus():
    """The King James Bible (public domain, one verse a line) bundled with the package."""
    return read_text(BUNDLED_CORPUS)


def split_tail(text, fraction=0.1):
    """(head, tail): the last `fraction` of the text held out, e.g. for validation."""
    if not 0 < fraction < 1:
        raise ValueError(f"split_tail: fraction must be in (0, 1), got {fraction}")
    cut = int(round(len(text) * (1 - fraction)))
    return text[:cut], text[cut:]
