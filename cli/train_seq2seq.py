"""`tgs train seq2seq`, `tgs translate` and `tgs train tagger`, and their checkpoint kinds.

    tgs train seq2seq                       # dates in many spellings -> ISO, with attention
    tgs translate runs/seq2seq "3rd of March 2021" "12/25/99" --beam 5
    tgs sample runs/seq2seq --prime "Tue 14 Jun 1988" --top-k 3 --seed 1
    tgs eval runs/seq2seq [FILE]            # exact match on held-out dates (or FILE: source<TAB>target lines)
    tgs train tagger                        # BiLSTM finds the proper names in lower-cased KJV verses
    tgs sample runs/tagger --prime "and moses went up unto the lord"

Heavy imports stay inside the functions so that `tgs --help` stays instant.
"""
import os
import string
import time

import click

from . import kinds
from .kinds import fail, fail_unless_positive

# every character a date spelling may use, so a new spelling never fails on the vocabulary
DATE_CHARACTERS = string.ascii_letters + string.digits + " ,./-'"


def _check_rates(lr, clip, dropout):
    from tinygrad_seq.trainer import check_rates

    try:
        check_rates(lr, clip, dropout)
    except ValueError as exc:
        fail(f"--{exc}")


def _run_options(f):
    """--eval-every, --out, --resume, --overwrite: the run-directory options of seq2seq and tagger."""
    f = click.option("--overwrite", is_flag=True, help="Replace a checkpoint already in --out.")(f)
    f = click.option("--resume", is_flag=True,
                     help="Continue the run in --out (--steps, --eval-every, --lr, --clip, --dropout may change).")(f)
    return f


def _prepare(kind, out, resume, overwrite, options, model_config_of):
    """(state or None, training config, changes) for a fresh or resumed run; `options` are the
    command's options, `model_config_of(state)` the saved model config to compare them with."""
    from tinygrad_seq.models.seq2seq import Seq2SeqTrainConfig

    from . import runs

    state = runs.open_run(out, (kind,), resume, overwrite)
    if state is None:
        fail_unless_positive(**{k: v for k, v in options.items()
                                if k in ("embed", "hidden", "layers", "train_size", "test_size", "steps",
                                         "batch_size", "eval_every", "train_verses", "test_verses", "dev_size",
                                         "dev_verses")})
        _check_rates(options["lr"], options["clip"], options["dropout"])
        fields = {k: options[k] for k in ("steps", "batch_size", "lr", "clip", "dropout", "seed", "eval_every")}
        return None, Seq2SeqTrainConfig(out=out, **fields), {}
    train = state["train"]
    if not isinstance(train.get("config"), dict) or not isinstance(train.get("data"), dict):
        fail(f"cannot resume: {runs.checkpoint_of(out)} is a malformed checkpoint (no run config)")
    saved = dict(model_config_of(state), **train["data"], **train["config"])
    changes = runs.resume_changes(saved, options, changeable=("steps", "eval_every", "lr", "clip", "dropout"))
    try:
        config = Seq2SeqTrainConfig.from_dict(dict(train["config"], out=out))
    except (ValueError, TypeError) as exc:
        fail(f"cannot resume: {runs.checkpoint_of(out)} is a malformed checkpoint ({exc})")
    _check_rates(changes.get("lr", config.lr), changes.get("clip", config.clip), changes.get("dropout", config.dropout))
    return state, config, changes


def _restore(trainer, state, changes, out):
    from tinygrad_seq.checkpoint import CheckpointError

    from . import runs

    try:
        trainer.restore(state, runs.checkpoint_of(out))
        trainer.change_settings(**changes)
    except (CheckpointError, ValueError) as exc:
        fail(f"cannot resume: {exc}")
    return trainer


def _trainer_or_fail(make_trainer):
    """make_trainer(), or the one-line error of the ValueError it raises (a bad setting)."""
    try:
        return make_trainer()
    except ValueError as exc:
        fail(exc)


def _resume_and_run(trainer, state, changes, out, description):
    """Restore a resumed run (`state` not None) with its changed settings, print the run's
    header line (`description`: the model and its data), and train; returns the seconds spent."""
    from . import runs

    if state is not None:
        _restore(trainer, state, changes, out)
    resuming = f"Resuming at step {trainer.step}: " if state is not None else ""
    ranks = f"; {trainer.world_size} ranks" if trainer.world_size > 1 else ""
    runs.echo(f"{resuming}{description}; run directory {out}{ranks}")
    started = time.perf_counter()
    runs.run(trainer)
    return time.perf_counter() - started


# ---------------------------------------------------------------------------- seq2seq: dates
@click.command()
@click.option("--cell", type=click.Choice(["gru", "lstm"]), default="gru", show_default=True)
@click.option("--attention", type=click.Choice(["additive", "dot", "general"]), default="additive",
              show_default=True, help="Bahdanau (additive) or Luong (dot / general) scores.")
@click.option("--embed", type=int, default=32, show_default=True)
@click.option("--hidden", type=int, default=64, show_default=True, help="Hidden units per encoder direction.")
@click.option("--layers", type=int, default=1, show_default=True, help="Stacked encoder layers.")
@click.option("--bidirectional/--unidirectional", default=True, show_default=True, help="Encoder directions.")
@click.option("--dropout", type=float, default=0.0, show_default=True)
@click.option("--train-size", type=int, default=20000, show_default=True, help="Generated training pairs.")
@click.option("--test-size", type=int, default=1000, show_default=True,
              help="Held-out pairs (days never trained on), scored once, after the last step.")
@click.option("--dev-size", type=int, default=None,
              help="Pairs set aside from the generated training draws for validation (the loss at every "
                   "--eval-every, what `tgs tune` sees)  [default: a tenth of --train-size, at most 1000]")
@click.option("--steps", type=int, default=400, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True,
              help="Pairs per step: the global batch, shared out among the ranks under mpiexec/srun.")
@click.option("--lr", type=float, default=3e-3, show_default=True, help="Adam learning rate.")
@click.option("--clip", type=float, default=5.0, show_default=True, help="Global gradient-norm clip (0 = off).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--eval-every", type=int, default=100, show_default=True, help="Steps between validation and checkpoint.")
@click.option("--out", type=click.Path(), default="runs/seq2seq", show_default=True, help="Run directory.")
@_run_options
def seq2seq(cell, attention, embed, hidden, layers, bidirectional, dropout, train_size, test_size, dev_size, steps,
            batch_size, lr, clip, seed, eval_every, out, resume, overwrite):
    """Train the date translator: human-written dates ("3rd of March 2021", "Tue 14 Jun 1988",
    "12/25/99", ...) to ISO dates, a seq2seq GRU/LSTM with attention and teacher forcing.
    Validates on dev pairs set aside from the training draws; prints the exact-match accuracy
    on held-out days at the end and writes attention.png (with matplotlib).  Under mpiexec/srun
    every rank runs it: one model trained data-parallel, rank 0 talking and writing."""
    from . import runs

    options = dict(cell=cell, attention=attention, embed=embed, hidden=hidden, layers=layers,
                   bidirectional=bidirectional, dropout=dropout, train_size=train_size, test_size=test_size,
                   dev_size=dev_size, steps=steps, batch_size=batch_size, lr=lr, clip=clip, seed=seed,
                   eval_every=eval_every)
    runs.on_every_rank(out, _train_seq2seq, out, resume, overwrite, options)


def _train_seq2seq(out, resume, overwrite, options):
    from tinygrad_seq import random as tgs_random
    from tinygrad_seq.models.seq2seq import Seq2Seq, Seq2SeqConfig, Seq2SeqTrainer, special_vocab
    from tinygrad_seq.text.dates import date_splits, default_dev_size

    o = options
    state, train_config, changes = _prepare("seq2seq", out, resume, overwrite, options,
                                            lambda s: s["model_config"])
    if state is not None:
        model = _load_model(state, out, load_seq2seq)
        info = dict(state["train"]["data"])
        info.setdefault("dev_size", default_dev_size(info["train_size"]))  # a run saved before dev splits
    else:
        dev_size = default_dev_size(o["train_size"]) if o["dev_size"] is None else o["dev_size"]
        info = {"train_size": o["train_size"], "test_size": o["test_size"], "dev_size": dev_size}
    tgs_random.manual_seed(train_config.seed)
    train_pairs, dev_pairs, test_pairs = date_splits(info["train_size"], info["test_size"], info["dev_size"],
                                                     seed=train_config.seed)
    if state is None:
        src_vocab = special_vocab(DATE_CHARACTERS + "".join(s for s, _ in train_pairs))
        tgt_vocab = special_vocab(string.digits + "-")
        config = Seq2SeqConfig(len(src_vocab), len(tgt_vocab), cell=o["cell"], embed=o["embed"], hidden=o["hidden"],
                               layers=o["layers"], bidirectional=o["bidirectional"], attention=o["attention"],
                               dropout=o["dropout"], max_target_len=len("2021-03-03") + 1)
        model = Seq2Seq(config, src_vocab, tgt_vocab)
    c = model.config
    n_params = sum(p.numel() for p in model.parameters())
    description = (f"seq2seq {c.cell.upper()} with {c.attention} attention ({n_params:,} parameters) on "
                   f"{len(train_pairs):,} generated dates; {len(dev_pairs):,} dev, {len(test_pairs):,} held-out dates")
    trainer = _trainer_or_fail(lambda: Seq2SeqTrainer(train_config, model, train_pairs, dev_pairs, info, test_pairs,
                                                      overwrite=overwrite))
    trainer.extra_plots = lambda: _attention_png(model, [s for s, _ in test_pairs[:4]],
                                                 os.path.join(out, "attention.png"))
    seconds = _resume_and_run(trainer, state, changes, out, description)
    if trainer.exact_match is None:  # a run already at its last step, or a rank other than 0
        return
    for (source, target), guess in list(zip(test_pairs, trainer.predictions))[:5]:
        click.echo(f"  {source!r:32} -> {guess}  {'ok' if guess == target else 'expected ' + target}", err=True)
    if os.path.exists(os.path.join(out, "attention.png")):
        click.echo(f"attention maps: {os.path.join(out, 'attention.png')}", err=True)
    click.echo(f"{trainer.step} steps in {seconds:.0f}s; exact match on {len(test_pairs):,} "
               f"held-out dates {trainer.exact_match:.2%}; checkpoint in {trainer.checkpoint_path}", err=True)


def _load_model(state, out, loader):
    from tinygrad_seq.checkpoint import CheckpointError

    from . import runs

    try:
        return loader(state, runs.checkpoint_of(out)).train()
    except CheckpointError as exc:
        fail(f"cannot resume: {exc}")


def _attention_png(model, sources, path):
    """A grid of attention maps (rows: output characters, columns: source characters)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(4 * len(sources), 4))
    FigureCanvasAgg(fig)
    for i, source in enumerate(sources):
        weights, src_chars, out_chars = model.attention_map(source)
        ax = fig.add_subplot(1, len(sources), i + 1)
        ax.imshow(weights, cmap="viridis", aspect="auto", vmin=0, vmax=1)
        ax.set_xticks(range(len(src_chars)))
        ax.set_xticklabels(src_chars, fontsize=7)
        ax.set_yticks(range(len(out_chars)))
        ax.set_yticklabels(out_chars, fontsize=7)
        ax.set_title(source, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def load_seq2seq(state, path="checkpoint"):
    from tinygrad_seq.checkpoint import check_module_state, malformed_as_checkpoint_error
    from tinygrad_seq.models.seq2seq import Seq2Seq, Seq2SeqConfig
    from tinygrad_seq.text.vocab import vocab_from_dict

    with malformed_as_checkpoint_error(path):
        model = Seq2Seq(Seq2SeqConfig.from_dict(state["model_config"]), vocab_from_dict(state["src_vocab"]),
                        vocab_from_dict(state["tgt_vocab"]))
        check_module_state(model, state["model"], path)
        model.load_state_dict(state["model"])
    return model.eval()


def _decoding_options(beam, temperature, top_k, seed):
    """(method, options) of Seq2Seq.translate for the sampling flags shared with `tgs sample`."""
    import numpy as np

    if beam:
        return "beam", {"beam_width": beam}
    if top_k or (temperature and temperature != 1.0) or seed is not None:
        return "sample", {"temperature": temperature or 1.0, "top_k": top_k, "rng": np.random.default_rng(seed)}
    return "greedy", {}


def _translate_all(model, texts, method, options):
    try:
        return model.translate(list(texts), method, **options)
    except ValueError as exc:
        raise ValueError(f"cannot translate: {exc}")


@click.command()
@click.argument("ckpt", type=click.Path())
@click.argument("texts", nargs=-1, required=True)
@click.option("--beam", type=int, default=None, help="Beam search of width W (default: greedy).")
@click.option("--top-k", type=int, default=None, help="Sample among the K most likely characters.")
@click.option("--temperature", type=float, default=1.0, show_default=True, help="Sampling temperature.")
@click.option("--seed", type=int, default=None, help="Seed for sampling.")
def translate(ckpt, texts, beam, top_k, temperature, seed):
    """Translate dates with the seq2seq model in CKPT: one ISO date per line."""
    from .sample import load_for_command

    for name, value in (("--beam", beam), ("--top-k", top_k)):
        if value is not None and value < 1:
            fail(f"{name} must be at least 1, got {value}")
    kinds.check_decoding_options(beam, top_k, temperature, seed, temperature_given=click.get_current_context(
    ).get_parameter_source("temperature") == click.core.ParameterSource.COMMANDLINE)
    state, _ = load_for_command(ckpt)
    if state["kind"] != "seq2seq":
        fail(f"{ckpt} holds a {state['kind']!r} model; `tgs translate` needs a seq2seq checkpoint "
              "from `tgs train seq2seq`")
    method, options = _decoding_options(beam, temperature, top_k, seed)
    try:
        for text in _translate_all(load_seq2seq(state, ckpt), texts, method, options):
            click.echo(text)
    except ValueError as exc:
        fail(exc)


def _sample_seq2seq(state, options):
    if not options.prime:
        raise ValueError("give the date to translate with --prime, e.g. --prime '3rd of March 2021'")
    method, decoding = _decoding_options(options.beam, options.temperature, options.top_k, options.seed)
    return _translate_all(load_seq2seq(state, options.path), [options.prime], method, decoding)[0]


def _read_pairs(file):
    """source<TAB>target lines of FILE."""
    from tinygrad_seq.text.corpus import CorpusError, read_text

    try:
        text = read_text(file)
    except CorpusError as exc:
        raise ValueError(f"FILE: {exc}")
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        source, tab, target = line.partition("\t")
        if not tab:
            raise ValueError(f"FILE line {number} has no tab: each line must be 'source<TAB>ISO date'")
        pairs.append((source.strip(), target.strip()))
    return pairs


def _evaluate_seq2seq(state, file, path):
    from tinygrad_seq.models.seq2seq import exact_match
    from tinygrad_seq.text.dates import date_pairs

    pairs = _read_pairs(file) if file else date_pairs(1000, "test", seed=state["train"].get("seed", 0) + 1)
    try:
        accuracy, _ = exact_match(load_seq2seq(state, path), pairs)
    except ValueError as exc:
        raise ValueError(f"cannot translate: {exc}")
    return {"exact_match": accuracy, "examples": len(pairs), "data": file or "held-out generated dates"}


# ---------------------------------------------------------------------------- tagger: names in the KJV
@click.command()
@click.option("--cell", type=click.Choice(["lstm", "gru"]), default="lstm", show_default=True)
@click.option("--embed", type=int, default=64, show_default=True)
@click.option("--hidden", type=int, default=64, show_default=True, help="Hidden units per direction.")
@click.option("--layers", type=int, default=2, show_default=True, help="Stacked bidirectional layers.")
@click.option("--dropout", type=float, default=0.2, show_default=True, help="Dropout between the stacked layers.")
@click.option("--train-verses", type=int, default=None,
              help="Use a random subset of the training verses (the dev verses are set aside from them).")
@click.option("--test-verses", type=int, default=None, help="Score on a random subset of the held-out verses.")
@click.option("--dev-verses", type=int, default=None,
              help="Verses set aside from the training side for validation (the loss at every --eval-every, what "
                   "`tgs tune` sees)  [default: a tenth of the training side, at most 1000]")
@click.option("--steps", type=int, default=1500, show_default=True, help="Optimisation steps (about 85 s on 2 cores with the defaults).")
@click.option("--batch-size", type=int, default=32, show_default=True,
              help="Verses per step: the global batch, shared out among the ranks under mpiexec/srun.")
@click.option("--lr", type=float, default=3e-3, show_default=True)
@click.option("--clip", type=float, default=5.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--eval-every", type=int, default=250, show_default=True, help="Steps between validation and checkpoint.")
@click.option("--out", type=click.Path(), default="runs/tagger", show_default=True, help="Run directory.")
@_run_options
def tagger(cell, embed, hidden, layers, dropout, train_verses, test_verses, dev_verses, steps, batch_size, lr, clip,
           seed, eval_every, out, resume, overwrite):
    """Train a bidirectional LSTM that tags the proper names in lower-cased KJV verses; validates
    on dev verses set aside from the training side and prints per-token accuracy and the NAME
    tag's precision, recall and F1 on held-out verses at the end.  Under mpiexec/srun every rank
    runs it: one model trained data-parallel, rank 0 talking and writing."""
    from . import runs

    options = dict(cell=cell, embed=embed, hidden=hidden, layers=layers, dropout=dropout, train_verses=train_verses,
                   test_verses=test_verses, dev_verses=dev_verses, steps=steps, batch_size=batch_size, lr=lr,
                   clip=clip, seed=seed, eval_every=eval_every)
    runs.on_every_rank(out, _train_tagger, out, resume, overwrite, options)


def _train_tagger(out, resume, overwrite, options):
    from tinygrad_seq import random as tgs_random
    from tinygrad_seq.models.tagger import (Tagger, TaggerConfig, TaggerTrainer, lexicon_baseline, load_kjv_tagging,
                                            tagger_vocab, tagging_scores)

    o = options
    state, train_config, changes = _prepare("tagger", out, resume, overwrite, options, lambda s: s["model_config"])
    if state is not None:
        model = _load_model(state, out, load_tagger)
        info = {k: state["train"]["data"].get(k) for k in ("train_verses", "test_verses", "dev_verses")}
    else:
        info = {"train_verses": o["train_verses"], "test_verses": o["test_verses"], "dev_verses": o["dev_verses"]}
    tgs_random.manual_seed(train_config.seed)
    data = load_kjv_tagging(train_verses=info["train_verses"], test_verses=info["test_verses"],
                            dev_verses=info["dev_verses"], seed=train_config.seed)
    if state is None:
        vocab = tagger_vocab(data.train_tokens)
        config = TaggerConfig(vocab_size=len(vocab), cell=o["cell"], embed=o["embed"], hidden=o["hidden"],
                              layers=o["layers"], dropout=o["dropout"])
        model = Tagger(config, vocab)
    c = model.config
    description = (f"tagger: bidirectional {c.cell.upper()} x{c.layers} on {len(data.train_tokens):,} verses "
                   f"({len(model.vocab):,} words); {len(data.dev_tokens):,} dev, {len(data.test_tokens):,} held-out "
                   "verses")
    trainer = _trainer_or_fail(lambda: TaggerTrainer(train_config, model, data.train_tokens, data.train_tags,
                                                     data.dev_tokens, data.dev_tags, dict(info, data=info),
                                                     data.test_tokens, data.test_tags, overwrite=overwrite))
    seconds = _resume_and_run(trainer, state, changes, out, description)
    if trainer.scores is None:  # a run already at its last step, or a rank other than 0
        return
    baseline = tagging_scores(lexicon_baseline(data.train_tokens, data.train_tags, data.test_tokens), data.test_tags)
    click.echo(f"{trainer.step} steps in {seconds:.0f}s; held-out: "
               f"{_format_scores(trainer.scores)}", err=True)
    click.echo(f"(lexicon baseline, each word's most frequent tag: {_format_scores(baseline)}); "
               f"checkpoint in {trainer.checkpoint_path}", err=True)


def _format_scores(s):
    return (f"token accuracy {s['accuracy']:.2%}, NAME precision {s['precision']:.3f} recall {s['recall']:.3f} "
            f"F1 {s['f1']:.3f}")


def load_tagger(state, path="checkpoint"):
    from tinygrad_seq.checkpoint import check_module_state, malformed_as_checkpoint_error
    from tinygrad_seq.models.tagger import Tagger, TaggerConfig
    from tinygrad_seq.text.vocab import vocab_from_dict

    with malformed_as_checkpoint_error(path):
        model = Tagger(TaggerConfig.from_dict(state["model_config"]), vocab_from_dict(state["vocab"]))
        check_module_state(model, state["model"], path)
        model.load_state_dict(state["model"])
    return model.eval()


def _sample_tagger(state, options):
    if not options.prime:
        raise ValueError("give the text to tag with --prime, e.g. --prime 'and moses went up unto the lord'")
    return " ".join(f"[{token}]" if tag == "NAME" else token for token, tag in load_tagger(state, options.path).tag_text(options.prime))


def _evaluate_tagger(state, file, path):
    from tinygrad_seq.models.tagger import load_kjv_tagging, tagging_scores

    if file:
        raise ValueError("a tagger is scored on the held-out KJV verses: run `tgs eval CKPT` without FILE")
    info = state["train"]
    data = load_kjv_tagging(train_verses=info.get("train_verses"), test_verses=info.get("test_verses"),
                            seed=info.get("seed", 0))
    return tagging_scores(load_tagger(state, path).predict(data.test_tokens), data.test_tags)


kinds.register("seq2seq", evaluate=_evaluate_seq2seq, sample=_sample_seq2seq,
               description="seq2seq date translator")
kinds.register("tagger", evaluate=_evaluate_tagger, sample=_sample_tagger, description="sequence tagger")
