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
from .kinds import fail

EXIT_INTERRUPTED = 130
EXIT_DIVERGED = 1


# ---------------------------------------------------------------------------- shared pieces
def _read(path, what="corpus"):
    from tinygrad_seq.text.corpus import CorpusError, bundled_corpus, read_text

    try:
        return bundled_corpus() if path is None else read_text(path)
    except CorpusError as exc:
        fail(f"{what}: {exc}")


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
            click.option("--batch-size", type=int, default=32, show_default=True, help="Parallel streams per step."),
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
            click.option("--out", type=click.Path(), default=default_out, show_default=True, help="Run directory."),
            click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint."),
            click.option("--backend", type=click.Choice(["auto", "numpy", "numba", "cython", "cuda"]),
                         default="auto", show_default=True, help="Kernel backend for the recurrence."),
            click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True),
        ]
        for decorator in reversed(opts):
            f = decorator(f)
        return f
    return decorate


# options a resumed run may change; the others come from its checkpoint
RESUMABLE = ("steps", "eval_every", "backend", "device")
MODEL_OPTIONS = ("model", "layers", "heads", "hidden", "embed", "seq_len", "batch_size", "lr", "clip", "dropout", "seed",
                 "min_count", "max_vocab")


def train_language_model(level, corpus, val_file, resume, options):
    """The body of `tgs train charlm` / `tgs train wordlm`."""
    from tinygrad_seq.checkpoint import CheckpointError, load_checkpoint, resolve_path
    from tinygrad_seq.training import LMTrainer, TrainConfig, split_corpus

    ctx = click.get_current_context()
    out = options["out"]
    if os.path.exists(out) and not os.path.isdir(out):
        fail(f"--out {out} is a file; give a directory for the run")
    ckpt = resolve_path(out) if os.path.isdir(out) else os.path.join(out, "checkpoint.npz")

    if resume:
        try:
            state = load_checkpoint(ckpt)
        except CheckpointError as exc:
            fail(f"cannot resume: {exc}")
        expected = "charlm" if level == "char" else "wordlm"
        if state.get("kind") != expected or "train" not in state:
            fail(f"cannot resume: {ckpt} holds a {state.get('kind')!r} model, not a {expected!r} run")
        ignored = [name for name in MODEL_OPTIONS if name in options
                   and ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
                   and options[name] != state["train"]["config"].get(name)]
        if ignored:
            click.echo("note: a resumed run keeps its checkpoint's settings; ignoring "
                       + ", ".join("--" + n.replace("_", "-") for n in ignored), err=True)
        data = state["train"].get("data", {})
        corpus = corpus if corpus is not None else data.get("corpus")
        val_file = val_file if val_file is not None else data.get("val_file")
        settings = dict(state["train"]["config"])
        steps = options["steps"] if ctx.get_parameter_source("steps") == click.core.ParameterSource.COMMANDLINE else None
        _check_device(options["device"], options["backend"])
    else:
        if os.path.exists(ckpt):
            fail(f"{out} already holds a checkpoint; pass --resume to continue it, or choose another --out")
        settings = dict(options, level=level)
        try:
            TrainConfig.from_dict(settings)
        except ValueError as exc:
            fail(exc)
        _check_device(options["device"], options["backend"])

    text = _read(corpus)
    val_text = _read(val_file, "--val") if val_file is not None else None
    train_text, val_text = split_corpus(text, val_text, settings.get("val_fraction", 0.1))
    data = {"corpus": os.path.abspath(corpus) if corpus is not None else None,
            "val_file": os.path.abspath(val_file) if val_file is not None else None}
    try:
        if resume:
            trainer = LMTrainer.from_checkpoint(state, train_text, val_text, steps=steps,
                                                eval_every=options["eval_every"], out=out,
                                                backend=options["backend"], device=options["device"])
        else:
            trainer = LMTrainer.from_texts(TrainConfig.from_dict(settings), train_text, val_text, data)
    except (ValueError, CheckpointError) as exc:
        fail(exc)

    cfg = trainer.config
    unit = cfg.unit
    source = "the bundled King James Bible" if corpus is None else corpus
    n_params = sum(p.numel() for p in trainer.params)
    if cfg.model == "transformer":
        shape = (f"{cfg.layers} block{'s' if cfg.layers > 1 else ''}, width {cfg.embed}, {cfg.heads} heads, "
                 f"context {cfg.seq_len}")
    else:
        shape = (f"{cfg.layers} layer{'s' if cfg.layers > 1 else ''}, hidden {cfg.hidden}, "
                 f"{'one-hot' if not cfg.embed else 'embedding ' + str(cfg.embed)}")
    click.echo(f"{'Resuming at step ' + str(trainer.step) + ': ' if resume else ''}{cfg.model.upper()} "
               f"({shape}, {n_params:,} parameters) on "
               f"{source}: {trainer.train_ids.size:,} {unit} for training, {trainer.val_ids.size:,} for validation, "
               f"vocabulary {len(trainer.vocab)}; run directory {cfg.out}", err=True)
    if trainer.batches.batch_size < cfg.batch_size:
        click.echo(f"note: the text is short, so {trainer.batches.batch_size} streams are used instead of "
                   f"--batch-size {cfg.batch_size}", err=True)
    # tune hook (issue 18): `tgs tune` passes its per-evaluation callback through the click context
    from tinygrad_seq.tune import ON_EVALUATE
    result = trainer.train(echo=lambda line: click.echo(line, err=True), on_evaluate=ctx.meta.get(ON_EVALUATE))
    if result.status in ("done", "stopped"):
        click.echo(result.message, err=True)
        return
    click.echo(("Interrupted: " if result.status == "interrupted" else "Error: ") + result.message, err=True)
    ctx.exit(EXIT_INTERRUPTED if result.status == "interrupted" else EXIT_DIVERGED)


# ---------------------------------------------------------------------------- commands
@click.command()
@lm_options("runs/charlm", {"embed": 64, "seq_len": 64, "steps": 1000})
def charlm(corpus, val_file, resume, **options):
    """Train a character-level language model on CORPUS (default: the bundled King James Bible).

    \b
    tgs train charlm                          # LSTM on the bundled corpus, samples as it learns
    tgs train charlm my.txt --model gru --layers 2 --hidden 512 --steps 5000
    tgs train charlm --out runs/charlm --resume --steps 3000
    """
    train_language_model("char", corpus, val_file, resume, options)


@click.command()
@lm_options("runs/wordlm", {"embed": 128, "seq_len": 32, "steps": 1000})
@click.option("--min-count", type=int, default=2, show_default=True, help="Rarer words become <UNK>.")
@click.option("--max-vocab", type=int, default=10000, show_default=True, help="Largest vocabulary (with <UNK>, <EOS>).")
def wordlm(corpus, val_file, resume, **options):
    """Train a word-level language model on CORPUS (default: the bundled King James Bible)."""
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
def ngram(corpus, n, level, smoothing, k, discount, val_file, out, length, seed):
    """Count an n-gram language model on CORPUS (default: the bundled corpus), report its
    validation loss and print a sample.  Sample more with `tgs sample OUT`."""
    import math

    import numpy as np

    from tinygrad_seq.checkpoint import save_checkpoint
    from tinygrad_seq.text.ngram import NGramLM
    from tinygrad_seq.text.vocab import CharVocab, WordVocab
    from tinygrad_seq.training import split_corpus

    for name, value in (("--n", n), ("--length", length)):
        if value < 1:
            fail(f"{name} must be a positive integer, got {value}")
    if os.path.exists(out) and not os.path.isdir(out):
        fail(f"--out {out} is a file; give a directory for the run")
    text = _read(corpus)
    val_text = _read(val_file, "--val") if val_file is not None else None
    train_text, val_text = split_corpus(text, val_text)
    vocab = CharVocab.from_text(text + (val_text or "")) if level == "char" else WordVocab.from_text(train_text)
    train_ids = vocab.encode(train_text)
    if train_ids.size < n:
        fail(f"the training text has {train_ids.size} tokens, fewer than --n {n}")
    try:
        model = NGramLM(n, len(vocab), smoothing=smoothing, k=k, discount=discount).fit(train_ids)
    except ValueError as exc:
        fail(exc)
    val_ids = vocab.encode(val_text)
    state = {"kind": "ngram", "vocab": vocab.to_dict(), "ngram": model.state_dict(), "level": level}
    path = save_checkpoint(os.path.join(out, "checkpoint.npz"), state)
    unit = "char" if level == "char" else "word"
    click.echo(f"{n}-gram {unit} model ({smoothing}) on {train_ids.size:,} {unit}s, vocabulary {len(vocab)}; "
               f"saved to {path}", err=True)
    if val_ids.size:
        nats = -model.log_prob(val_ids, context=train_ids[-(n - 1):] if n > 1 else ())
        per = nats / val_ids.size
        click.echo(f"validation: {per:.4f} nats/{unit} ({per / math.log(2):.3f} bits/{unit}), "
                   f"perplexity {math.exp(per):.2f} over {val_ids.size:,} {unit}s", err=True)
    click.echo(vocab.decode(model.sample(length, rng=np.random.default_rng(seed),
                                         context=[_start_id(vocab)])))


def _start_id(vocab):
    from tinygrad_seq.models.charlm import _default_start
    return _default_start(vocab)


# ---------------------------------------------------------------------------- checkpoint kinds
def _require_file(file):
    if file is None:
        raise ValueError("give the text FILE to evaluate on: tgs eval CKPT FILE")
    return _read(file, "FILE")


def _evaluate_lm(state, file, path):
    from tinygrad_seq.training import evaluate_text

    return evaluate_text(state, _require_file(file))


def _sample_lm(state, options):
    import numpy as np

    from tinygrad_seq.models.charlm import generate
    from tinygrad_seq.training import load_lm

    model, vocab = load_lm(state)
    model.to(options.device)
    rng = np.random.default_rng(options.seed)
    text = generate(model, vocab, options.prime, options.length, temperature=options.temperature,
                    top_k=options.top_k, beam=options.beam, rng=rng)
    joiner = " " if vocab.type == "word" and options.prime and not options.prime.endswith((" ", "\n")) and \
        not text.startswith(("\n", ".", ",", ";", ":", "?", "!")) else ""
    return options.prime + joiner + text


def _load_ngram(state):
    from tinygrad_seq.text.ngram import NGramLM
    from tinygrad_seq.text.vocab import vocab_from_dict

    return NGramLM.from_state_dict(state["ngram"]), vocab_from_dict(state["vocab"])


def _evaluate_ngram(state, file, path):
    import math

    model, vocab = _load_ngram(state)
    text = _require_file(file)
    ids = vocab.encode(text)
    nats = -model.log_prob(ids)
    result = {"nats_per_char": nats / len(text), "bits_per_char": nats / len(text) / math.log(2), "chars": len(text)}
    if vocab.type == "word":
        result.update(nats_per_word=nats / ids.size, perplexity=math.exp(nats / ids.size), words=int(ids.size))
    else:
        result["perplexity"] = math.exp(nats / ids.size)
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
