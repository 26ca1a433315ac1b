"""`tgs train charlm | wordlm | ngram`: train language models, and the checkpoint kinds
("charlm", "wordlm", "ngram") that `tgs sample` and `tgs eval` read.

Every bad input ends in one "Error: ..." line and a non-zero exit: a missing, empty,
undecodable or too-short corpus, a directory given as a file, a corrupt or foreign checkpoint,
nonsensical hyper-parameters, a loss that becomes NaN (the last good checkpoint is kept).
Heavy imports stay inside the functions so that `tgs --help` stays instant.
"""
import os

import click

from . import kinds
from .kinds import fail, fail_unless_positive

# ---------------------------------------------------------------------------- shared pieces
def _check_device(device, backend_name):
    """Fail early, in one line, when the device or the backend cannot run here."""
    from tinygrad_seq.backend import BackendError, resolve, set_backend
    from tinygrad_seq.device import cupy_or_none, cupy_unavailable_reason

    if device == "cuda" and cupy_or_none() is None:
        fail(f"--device cuda is not available here ({cupy_unavailable_reason()})")
    try:
        set_backend(backend_name)
        resolve("recurrence", device)
    except BackendError as exc:
        fail(f"--backend {backend_name}: {exc}")


def lm_options(default_out, defaults):
    """The options of `tgs train charlm` (and wordlm, with its own defaults)."""
    def decorate(f):
        opts = [
            click.argument("corpus", required=False, type=click.Path(dir_okay=True)),
            click.option("--model", type=click.Choice(["rnn", "gru", "lstm", "transformer"]), default="lstm",
                         show_default=True, help="Recurrent cell, or a causal Transformer."),
            click.option("--layers", type=int, default=1, show_default=True,
                         help="Stacked recurrent layers (Transformer blocks)."),
            click.option("--heads", type=int, default=4, show_default=True,
                         help="Attention heads (transformer only; --embed must be a multiple)."),
            click.option("--hidden", type=int, default=256, show_default=True, help="Hidden units per layer."),
            click.option("--embed", type=int, default=defaults["embed"], show_default=True,
                         help="Embedding size (0 = one-hot inputs)."),
            click.option("--seq-len", type=int, default=defaults["seq_len"], show_default=True,
                         help="Tokens per truncated-BPTT chunk."),
            click.option("--batch-size", type=int, default=32, show_default=True,
                         help="Parallel streams per step: the global batch, shared out among the ranks "
                              "under mpiexec/srun (each of N ranks trains batch-size/N streams)."),
            click.option("--steps", type=int, default=defaults["steps"], show_default=True,
                         help="Total optimisation steps (with --resume: the new total)."),
            click.option("--lr", type=float, default=2e-3, show_default=True, help="Adam learning rate."),
            click.option("--clip", type=float, default=5.0, show_default=True,
                         help="Clip the global gradient norm to this (0 = off)."),
            click.option("--dropout", type=float, default=0.0, show_default=True,
                         help="Dropout between layers and before the output layer."),
            click.option("--seed", type=int, default=0, show_default=True, help="Random seed (weights, dropout)."),
            click.option("--eval-every", type=int, default=200, show_default=True,
                         help="Steps between validation, sample and checkpoint."),
            click.option("--val", "val_file", type=click.Path(), default=None,
                         help="Validation text (default: the last 10% of the corpus)."),
            click.option("--val-tokens", "val_max_tokens", type=int, default=100_000, show_default=True,
                         help="Each validation predicts at most this many tokens of the held-out text: all of "
                              "it when it is shorter, else a bounded sample of it, contiguous windows at random "
                              "offsets (drawn from --seed) spread over the whole held-out part, the same at "
                              "every validation, on every rank and after --resume."),
            click.option("--out", type=click.Path(), default=default_out, show_default=True, help="Run directory."),
            click.option("--resume", is_flag=True,
                         help="Continue the run in --out from its checkpoint (--steps, --eval-every, --lr, --clip, "
                              "--dropout, --val-tokens, --backend, --device may change; the rest is the "
                              "checkpoint's).  A run saved by N ranks resumes on any number."),
            click.option("--overwrite", is_flag=True, help="Replace a checkpoint already in --out."),
            click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
                         help="Where the corpus' token-id cache goes (default: OUT/corpus-cache)."),
            click.option("--backend", type=click.Choice(["auto", "numpy", "numba", "cython", "cuda"]),
                         default="auto", show_default=True, help="Kernel backend for the recurrence."),
            click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True),
        ]
        for decorator in reversed(opts):
            f = decorator(f)
        return f
    return decorate


def train_language_model(level, corpus, val_file, resume, options):
    """The body of `tgs train charlm` / `tgs train wordlm`.  Under an MPI launcher (mpiexec -n N,
    srun) every rank runs it: one model trained data-parallel, rank 0 talking and writing."""
    from . import runs

    runs.on_every_rank(options["out"], _train_language_model, level, corpus, val_file, resume, options)


def _open_cache(corpus, val_file, val_fraction, cache_dir, **vocabulary):
    """The corpus as memory-mapped token ids (text.corpus_cache), built by rank 0 while the
    other ranks wait; an unusable corpus fails on every rank with rank 0's message."""
    from tinygrad_seq import distributed as dist
    from tinygrad_seq.text.corpus import BUNDLED_CORPUS, CorpusError
    from tinygrad_seq.text.corpus_cache import CorpusCache

    source = BUNDLED_CORPUS if corpus is None else corpus
    error = [None]
    if dist.is_main_process():
        try:
            CorpusCache.open_or_build(source, val_file, val_fraction, cache_dir, **vocabulary)
        except CorpusError as exc:
            error = [f"{'--val' if val_file is not None and str(exc).startswith(str(val_file)) else 'corpus'}: {exc}"]
        except ValueError as exc:  # e.g. a word vocabulary limit that leaves no room for words
            error = [str(exc)]
    if dist.get_world_size() > 1:
        dist.barrier(timeout=False)  # encoding a large corpus may take a while
        dist.broadcast_object_list(error, src=0)
    if error[0] is not None:
        if dist.get_world_size() > 1:
            raise SystemExit(1) if not dist.is_main_process() else click.ClickException(error[0])
        fail(error[0])
    return CorpusCache.open_or_build(source, val_file, val_fraction, cache_dir, progress=False, **vocabulary)


def _run_settings(level, state, corpus, val_file, options):
    """(settings, changes, corpus, val_file) of a run: a resumed run's saved settings with the
    options it may change (and its corpus and --val file unless given again), or a new run's
    options, checked.  Fails with one line on a malformed checkpoint, bad settings or a
    device that is not there."""
    from tinygrad_seq.training import TrainConfig

    from . import runs

    if state is not None:
        saved = state["train"]["config"]
        if not isinstance(saved, dict):
            fail(f"cannot resume: {runs.checkpoint_of(options['out'])} is a malformed checkpoint "
                 "(its config is not a table)")
        changes = runs.resume_changes(saved, options, runs.RESUME_CHANGEABLE + ("val_max_tokens",))
        data = state["train"].get("data", {}) if isinstance(state["train"].get("data"), dict) else {}
        corpus = corpus if corpus is not None else data.get("corpus")
        val_file = val_file if val_file is not None else data.get("val_file")
        settings = dict(saved, **changes)
        _check_device(settings.get("device", "cpu"), settings.get("backend", "auto"))
        return settings, changes, corpus, val_file
    settings = dict(options, level=level)
    try:
        TrainConfig.from_dict(settings)
    except ValueError as exc:
        fail(exc)
    _check_device(options["device"], options["backend"])
    return settings, None, corpus, val_file


def _announce(trainer, resumed, source):
    """The run's header line (model, size, data, run directory, ranks), and a note when the
    text is too short for --batch-size streams."""
    from . import runs

    cfg = trainer.config
    unit = cfg.unit
    n_params = sum(p.numel() for p in trainer.params)
    if cfg.model == "transformer":
        shape = (f"{cfg.layers} block{'s' if cfg.layers > 1 else ''}, width {cfg.embed}, {cfg.heads} heads, "
                 f"context {cfg.seq_len}")
    else:
        shape = (f"{cfg.layers} layer{'s' if cfg.layers > 1 else ''}, hidden {cfg.hidden}, "
                 f"{'one-hot' if not cfg.embed else 'embedding ' + str(cfg.embed)}")
    runs.echo(f"{'Resuming at step ' + str(trainer.step) + ': ' if resumed else ''}{cfg.model.upper()} "
              f"({shape}, {n_params:,} parameters) on "
              f"{source}: {trainer.train_ids.size:,} {unit} for training, {trainer.val_ids.size:,} for validation, "
              f"vocabulary {len(trainer.vocab)}; run directory {cfg.out}"
              + (f"; {trainer.world_size} ranks, {trainer.batches.batch_size // trainer.world_size}"
                 f"{'+' if trainer.batches.batch_size % trainer.world_size else ''} streams each"
                 if trainer.world_size > 1 else ""))
    if trainer.batches.batch_size < cfg.batch_size:
        runs.echo(f"note: the text is short, so {trainer.batches.batch_size} streams are used instead of "
                  f"--batch-size {cfg.batch_size}")


def _train_language_model(level, corpus, val_file, resume, options):
    from tinygrad_seq.checkpoint import CheckpointError
    from tinygrad_seq.training import LMTrainer, TrainConfig

    from . import runs

    cache_dir = options.pop("cache_dir", None)
    out = options["out"]
    overwrite = options.pop("overwrite")
    expected = "charlm" if level == "char" else "wordlm"
    state = runs.open_run(out, (expected,), resume, overwrite)
    settings, changes, corpus, val_file = _run_settings(level, state, corpus, val_file, options)
    data = {"corpus": os.path.abspath(corpus) if corpus is not None else None,
            "val_file": os.path.abspath(val_file) if val_file is not None else None}
    source = "the bundled King James Bible" if corpus is None else corpus
    val_fraction = settings.get("val_fraction", 0.1)
    # streamed once into a token-id cache and memory-mapped: memory no longer grows with the corpus
    vocabulary = ({} if level == "char" else
                  {"level": "word", "min_count": settings["min_count"], "max_vocab": settings["max_vocab"]})
    cache = _open_cache(corpus, val_file, val_fraction, cache_dir or os.path.join(out, "corpus-cache"), **vocabulary)
    texts = (cache.fingerprints["train"], cache.fingerprints["val"])
    ids = (cache.train_ids, cache.val_ids)
    try:
        if state is not None:
            trainer = LMTrainer.from_checkpoint(state, *texts, out=out, path=runs.checkpoint_of(out), changes=changes,
                                                ids=ids, ids_vocab=cache.vocab)
        else:
            trainer = LMTrainer.from_cache(TrainConfig.from_dict(settings), cache, data, overwrite=overwrite)
    except CheckpointError as exc:
        fail(f"cannot resume: {exc}")
    except ValueError as exc:
        message = str(exc)
        if message.startswith("the validation text has"):
            message = f"{val_file if val_file is not None else source}: {message}"
        fail(message)

    _announce(trainer, state is not None, source)
    runs.run(trainer)


# ---------------------------------------------------------------------------- commands
@click.command()
@lm_options("runs/charlm", {"embed": 64, "seq_len": 64, "steps": 1000})
def charlm(corpus, val_file, resume, **options):
    """Train a character-level language model on CORPUS (default: the bundled King James Bible).

    \b
    tgs train charlm                          # LSTM on the bundled corpus, samples as it learns
    tgs train charlm my.txt --model gru --layers 2 --hidden 512 --steps 5000
    tgs train charlm --out runs/charlm --resume --steps 3000
    mpiexec -n 4 tgs train charlm big.txt.gz  # 4 processes, one model (also srun)

    The corpus is streamed once into a token-id cache (--cache-dir) and memory-mapped, so a
    corpus larger than memory trains too.
    """
    train_language_model("char", corpus, val_file, resume, options)


@click.command()
@lm_options("runs/wordlm", {"embed": 128, "seq_len": 32, "steps": 1000})
@click.option("--min-count", type=int, default=2, show_default=True, help="Rarer words become <UNK>.")
@click.option("--max-vocab", type=int, default=10000, show_default=True, help="Largest vocabulary (with <UNK>, <EOS>).")
def wordlm(corpus, val_file, resume, **options):
    """Train a word-level language model on CORPUS (default: the bundled King James Bible).

    The vocabulary (the words of the training part seen at least --min-count times, at most
    --max-vocab of them) is counted in a streaming pass, and the corpus is encoded into a
    token-id cache (--cache-dir, uint16 ids up to 65536 words) that training memory-maps,
    so a corpus larger than memory trains too; under mpiexec every rank maps the same cache.
    """
    train_language_model("word", corpus, val_file, resume, options)


@click.command()
@click.argument("corpus", required=False, type=click.Path())
@click.option("--n", type=int, default=5, show_default=True, help="Order: predict a token from the n-1 before it.")
@click.option("--level", type=click.Choice(["char", "word"]), default="char", show_default=True)
@click.option("--smoothing", type=click.Choice(["interpolation", "backoff", "add-k"]), default="interpolation",
              show_default=True)
@click.option("--k", type=float, default=1.0, show_default=True, help="Add-k constant (also of the unigram base).")
@click.option("--discount", type=float, default=0.75, show_default=True, help="Absolute discount for backoff.")
@click.option("--val", "val_file", type=click.Path(), default=None,
              help="Validation text (default: the last 10% of the corpus).")
@click.option("--out", type=click.Path(), default="runs/ngram", show_default=True, help="Run directory.")
@click.option("--length", type=int, default=300, show_default=True, help="Length of the sample printed.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the printed sample.")
@click.option("--overwrite", is_flag=True, help="Replace a checkpoint already in --out.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Where the corpus' token-id cache goes (default: OUT/corpus-cache).")
def ngram(corpus, n, level, smoothing, k, discount, val_file, out, length, seed, overwrite, cache_dir):
    """Count an n-gram language model on CORPUS (default: the bundled corpus), report its
    validation loss and print a sample.  Sample more with `tgs sample OUT`.

    The corpus is streamed once into a token-id cache (--cache-dir) and counted from the
    memory-mapped ids a chunk at a time, so memory grows with the distinct n-grams, not the
    corpus: a corpus larger than memory counts too."""
    from . import runs

    out_existed = os.path.exists(out)
    try:
        _count_ngram(corpus, n, level, smoothing, k, discount, val_file, out, length, seed, overwrite, cache_dir)
    except click.ClickException:
        if not out_existed:  # a fresh run that failed leaves no --out (nor its corpus cache) behind
            runs.remove_unstarted_run(out)
        raise


def _count_ngram(corpus, n, level, smoothing, k, discount, val_file, out, length, seed, overwrite, cache_dir):
    import math

    import numpy as np

    from tinygrad_seq.checkpoint import save_checkpoint
    from tinygrad_seq.text.corpus_cache import ByteProgress
    from tinygrad_seq.text.ngram import NGramLM
    from tinygrad_seq.trainer import RunDirectoryError, run_directory, safe_exp

    from . import runs

    fail_unless_positive(n=n, length=length)
    if not (k > 0 and math.isfinite(k)):
        fail(f"--k must be a positive finite number, got {k}")
    if not (0 < discount <= 1):
        fail(f"--discount must be in (0, 1], got {discount}")
    runs.open_run(out, ("ngram",), resume=False, overwrite=overwrite)
    # the vocabularies of the in-memory path: every character of corpus and --val, or every
    # word of the training part
    vocabulary = {} if level == "char" else {"level": "word", "min_count": 1, "max_vocab": None}
    cache = _open_cache(corpus, val_file, 0.1, cache_dir or os.path.join(out, "corpus-cache"), **vocabulary)
    vocab, train_ids, val_ids = cache.vocab, cache.train_ids, cache.val_ids
    if train_ids.size < n:
        fail(f"the training text has {train_ids.size} tokens, fewer than --n {n}")
    try:
        model = NGramLM(n, len(vocab), smoothing=smoothing, k=k, discount=discount).fit(train_ids)
    except ValueError as exc:
        fail(exc)
    state = {"kind": "ngram", "vocab": vocab.to_dict(), "ngram": model.state_dict(), "level": level}
    try:
        with run_directory(out, may_replace_checkpoint=overwrite):
            path = save_checkpoint(os.path.join(out, "checkpoint.npz"), state)
    except RunDirectoryError as exc:
        fail(exc)
    unit = "char" if level == "char" else "word"
    click.echo(f"{n}-gram {unit} model ({smoothing}) on {train_ids.size:,} {unit}s, vocabulary {len(vocab)}; "
               f"saved to {path}", err=True)
    if val_ids.size:
        bar = ByteProgress("validating", val_ids.size, unit=f"M {unit}s")
        nats = -model.log_prob(val_ids, context=train_ids[-(n - 1):] if n > 1 else (), progress=bar)
        bar.close()
        per = nats / val_ids.size
        click.echo(f"validation: {per:.4f} nats/{unit} ({per / math.log(2):.3f} bits/{unit}), "
                   f"perplexity {safe_exp(per):.2f} over {val_ids.size:,} {unit}s", err=True)
    click.echo(vocab.decode(model.sample(length, rng=np.random.default_rng(seed),
                                         context=[_start_id(vocab)])))


def _start_id(vocab):
    from tinygrad_seq.models.charlm import _default_start
    return _default_start(vocab)


# ---------------------------------------------------------------------------- checkpoint kinds
def _require_file(file):
    if file is None:
        raise ValueError("give the text FILE to evaluate on: tgs eval CKPT FILE")


def _evaluate_lm(state, file, path):
    from tinygrad_seq.text.corpus import CorpusError
    from tinygrad_seq.training import evaluate_file

    _require_file(file)
    try:
        # streamed with a progress bar: memory does not grow with FILE
        return evaluate_file(state, file, checkpoint_path=path)
    except CorpusError as exc:
        fail(f"FILE: {exc}")


def _sample_lm(state, options):
    """The prime and a continuation: a string for beam search, else pieces streamed as sampled."""
    import numpy as np

    from tinygrad_seq.models.charlm import generate
    from tinygrad_seq.training import load_lm

    model, vocab = load_lm(state, options.path)
    model.to(options.device)
    rng = np.random.default_rng(options.seed)
    if vocab.type == "word":
        def joiner(text):
            return " " if options.prime and not options.prime.endswith((" ", "\n")) and \
                not text.startswith(("\n", ".", ",", ";", ":", "?", "!")) else ""
    else:
        def joiner(text):
            return ""
    if options.beam:
        text = generate(model, vocab, options.prime, options.length, beam=options.beam, rng=rng)
        return options.prime + joiner(text) + text
    from tinygrad_seq.models.charlm import stream_generate

    pieces = stream_generate(model, vocab, options.prime, options.length, temperature=options.temperature,
                             top_k=options.top_k, rng=rng)  # checks the prime before the first piece

    def stream():
        first = True
        yield options.prime
        for piece in pieces:
            if first:
                yield joiner(piece)
                first = False
            yield piece
    return stream()


def _load_ngram(state, path="checkpoint"):
    from tinygrad_seq.checkpoint import malformed_as_checkpoint_error, require
    from tinygrad_seq.text.ngram import NGramLM
    from tinygrad_seq.text.vocab import vocab_from_dict

    with malformed_as_checkpoint_error(path):
        model, vocab = NGramLM.from_state_dict(state["ngram"]), vocab_from_dict(state["vocab"])
        require(len(vocab) == model.V, path, f"its vocabulary has {len(vocab)} entries, its model {model.V}")
    return model, vocab


def _evaluate_ngram(state, file, path):
    import math

    from tinygrad_seq.text.corpus import CorpusError
    from tinygrad_seq.text.corpus_cache import ByteProgress, encoded_file
    from tinygrad_seq.trainer import safe_exp

    model, vocab = _load_ngram(state, path)
    _require_file(file)
    # streamed into a temporary file of ids, memory-mapped and scored a chunk at a time with a
    # progress bar: memory does not grow with FILE
    try:
        with encoded_file(file, vocab) as (ids, chars):  # reading FILE may raise CorpusError
            bar = ByteProgress("evaluating", ids.size, unit=f"M {vocab.type}s")
            nats = -model.log_prob(ids, progress=bar)
            bar.close()
            tokens = int(ids.size)
    except CorpusError as exc:
        fail(f"FILE: {exc}")
    result = {"nats_per_char": nats / chars, "bits_per_char": nats / chars / math.log(2), "chars": chars}
    if vocab.type == "word":
        result.update(nats_per_word=nats / tokens, perplexity=safe_exp(nats / tokens), words=tokens)
    else:
        result["perplexity"] = safe_exp(nats / tokens)
    return result


def _sample_ngram(state, options):
    import numpy as np

    if options.beam:
        raise ValueError("--beam is for neural language models; an n-gram model samples (use --temperature/--top-k)")
    model, vocab = _load_ngram(state)
    context = vocab.encode(options.prime) if options.prime else np.array([_start_id(vocab)])
    ids = model.sample(options.length, context=context, temperature=options.temperature, top_k=options.top_k,
                       rng=np.random.default_rng(options.seed))
    return options.prime + vocab.decode(ids)


kinds.register("charlm", evaluate=_evaluate_lm, sample=_sample_lm, description="character-level language model")
kinds.register("wordlm", evaluate=_evaluate_lm, sample=_sample_lm, description="word-level language model")
kinds.register("ngram", evaluate=_evaluate_ngram, sample=_sample_ngram, description="n-gram language model")
