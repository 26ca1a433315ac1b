"""`tgs train seq2seq`, `tgs translate` and `tgs train tagger`, and their checkpoint kinds.

    tgs train seq2seq                       # dates in many spellings -> ISO, with attention
    tgs translate runs/seq2seq "3rd of March 2021" "12/25/99" --beam 5
    tgs sample runs/seq2seq --prime "Tue 14 Jun 1988" --top-k 3 --seed 1
    tgs eval runs/seq2seq [FILE]            # exact match on held-out dates (or FILE: source<TAB>target lines)
    tgs train tagger                        # BiLSTM finds the proper names in lower-cased KJV verses
    tgs sample runs/tagger --prime "and moses went up unto the lord"

Heavy imports stay inside the functions so that `tgs --help` stays instant.
"""
import math
import os
import string
import time

import click

from . import kinds
from .kinds import fail

# every character a date spelling may use, so a new spelling never fails on the vocabulary
DATE_CHARACTERS = string.ascii_letters + string.digits + " ,./-'"


def _positive(**values):
    for name, value in values.items():
        if value < 1:
            fail(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


def _check_rates(lr, clip, dropout):
    if not (lr > 0 and math.isfinite(lr)):
        fail(f"--lr must be a positive number, got {lr}")
    if not (clip >= 0 and math.isfinite(clip)):
        fail(f"--clip must be >= 0 (0 turns clipping off), got {clip}")
    if not 0 <= dropout < 1:
        fail(f"--dropout must be in [0, 1), got {dropout}")


def _fresh_run_path(out):
    from tinygrad_seq.checkpoint import DEFAULT_NAME

    if os.path.exists(out) and not os.path.isdir(out):
        fail(f"--out {out} is a file; give a directory for the run")
    path = os.path.join(out, DEFAULT_NAME)
    if os.path.exists(path):
        fail(f"{out} already holds a checkpoint; choose another --out (or delete it to start over)")
    return path


def _fit(name, run, steps, unit_per_step, unit):
    """Run `run(callback)` (a library training loop) with a progress line, Ctrl-C stopping
    between steps; returns (losses, interrupted)."""
    from tinygrad_seq.training import Progress, deferred_interrupt

    bar = Progress(steps, 0, unit)
    with deferred_interrupt() as interrupted:
        def callback(step, loss):
            bar.update(step, loss, unit_per_step)
            return interrupted()

        try:
            losses = run(callback)
        except FloatingPointError as exc:
            bar.clear()
            fail(f"{name}: {exc}; nothing was saved")
        bar.clear()
        return losses, interrupted()


def _report_to_tuner(step, metrics):
    """tune hook (issue 18): these loops have no periodic validation, so `tgs tune` sees the
    held-out score once, at the end (no pruning)."""
    from tinygrad_seq.tune import ON_EVALUATE

    on_evaluate = click.get_current_context().meta.get(ON_EVALUATE)
    if on_evaluate is not None:
        on_evaluate(None, step, metrics)


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
@click.option("--test-size", type=int, default=1000, show_default=True, help="Held-out pairs (days never trained on).")
@click.option("--steps", type=int, default=400, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--lr", type=float, default=3e-3, show_default=True, help="Adam learning rate.")
@click.option("--clip", type=float, default=5.0, show_default=True, help="Global gradient-norm clip (0 = off).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(), default="runs/seq2seq", show_default=True, help="Run directory.")
def seq2seq(cell, attention, embed, hidden, layers, bidirectional, dropout, train_size, test_size, steps,
            batch_size, lr, clip, seed, out):
    """Train the date translator: human-written dates ("3rd of March 2021", "Tue 14 Jun 1988",
    "12/25/99", ...) to ISO dates, a seq2seq GRU/LSTM with attention and teacher forcing.
    Prints the exact-match accuracy on held-out days and writes attention.png (with matplotlib)."""
    from tinygrad_seq import random as tgs_random
    from tinygrad_seq.checkpoint import save_checkpoint
    from tinygrad_seq.models.seq2seq import Seq2Seq, Seq2SeqConfig, exact_match, special_vocab, train
    from tinygrad_seq.text.dates import date_pairs

    _positive(embed=embed, hidden=hidden, layers=layers, train_size=train_size, test_size=test_size, steps=steps,
              batch_size=batch_size)
    _check_rates(lr, clip, dropout)
    path = _fresh_run_path(out)
    tgs_random.manual_seed(seed)
    train_pairs = date_pairs(train_size, "train", seed=seed)
    test_pairs = date_pairs(test_size, "test", seed=seed + 1)
    src_vocab = special_vocab(DATE_CHARACTERS + "".join(s for s, _ in train_pairs))
    tgt_vocab = special_vocab(string.digits + "-")
    config = Seq2SeqConfig(len(src_vocab), len(tgt_vocab), cell=cell, embed=embed, hidden=hidden, layers=layers,
                           bidirectional=bidirectional, attention=attention, dropout=dropout,
                           max_target_len=len("2021-03-03") + 1)
    model = Seq2Seq(config, src_vocab, tgt_vocab)
    n_params = sum(p.numel() for p in model.parameters())
    click.echo(f"seq2seq {cell.upper()} with {attention} attention ({n_params:,} parameters) on {train_size:,} "
               f"generated dates; {test_size:,} held-out dates; run directory {out}", err=True)
    started = time.perf_counter()
    losses, interrupted = _fit("seq2seq", lambda cb: train(model, train_pairs, steps, batch_size=batch_size, lr=lr,
                                                           clip=clip, seed=seed, callback=cb, log_every=1),
                               steps, batch_size, "pairs")
    accuracy, predictions = exact_match(model, test_pairs)
    _report_to_tuner(len(losses), {"exact_match": accuracy})
    state = {"kind": "seq2seq", "model_config": config.to_dict(), "src_vocab": src_vocab.to_dict(),
             "tgt_vocab": tgt_vocab.to_dict(), "model": {k: v.numpy() for k, v in model.state_dict().items()},
             "train": {"steps": len(losses), "final_loss": losses[-1] if losses else None, "seed": seed,
                       "test_exact_match": accuracy}}
    save_checkpoint(path, state)
    for (source, target), guess in list(zip(test_pairs, predictions))[:5]:
        click.echo(f"  {source!r:32} -> {guess}  {'ok' if guess == target else 'expected ' + target}", err=True)
    picture = _attention_png(model, [s for s, _ in test_pairs[:4]], os.path.join(out, "attention.png"))
    if picture:
        click.echo(f"attention maps: {picture}", err=True)
    click.echo(f"{'interrupted' if interrupted else 'done'}: {len(losses)} steps in "
               f"{time.perf_counter() - started:.0f}s; exact match on {len(test_pairs):,} held-out dates "
               f"{accuracy:.2%}; checkpoint in {path}", err=True)


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


def load_seq2seq(state):
    from tinygrad_seq.models.seq2seq import Seq2Seq, Seq2SeqConfig
    from tinygrad_seq.text.vocab import vocab_from_dict

    model = Seq2Seq(Seq2SeqConfig.from_dict(state["model_config"]), vocab_from_dict(state["src_vocab"]),
                    vocab_from_dict(state["tgt_vocab"]))
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
    state, _ = load_for_command(ckpt)
    if state["kind"] != "seq2seq":
        fail(f"{ckpt} holds a {state['kind']!r} model; `tgs translate` needs a seq2seq checkpoint "
              "from `tgs train seq2seq`")
    method, options = _decoding_options(beam, temperature, top_k, seed)
    try:
        for text in _translate_all(load_seq2seq(state), texts, method, options):
            click.echo(text)
    except ValueError as exc:
        fail(exc)


def _sample_seq2seq(state, options):
    if not options.prime:
        raise ValueError("give the date to translate with --prime, e.g. --prime '3rd of March 2021'")
    method, decoding = _decoding_options(options.beam, options.temperature, options.top_k, options.seed)
    return _translate_all(load_seq2seq(state), [options.prime], method, decoding)[0]


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
        accuracy, _ = exact_match(load_seq2seq(state), pairs)
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
@click.option("--train-verses", type=int, default=None, help="Train on a random subset of the verses.")
@click.option("--test-verses", type=int, default=None, help="Score on a random subset of the held-out verses.")
@click.option("--steps", type=int, default=1500, show_default=True, help="Optimisation steps (about 85 s on 2 cores with the defaults).")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=3e-3, show_default=True)
@click.option("--clip", type=float, default=5.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(), default="runs/tagger", show_default=True, help="Run directory.")
def tagger(cell, embed, hidden, layers, dropout, train_verses, test_verses, steps, batch_size, lr, clip, seed, out):
    """Train a bidirectional LSTM that tags the proper names in lower-cased KJV verses; prints
    per-token accuracy and the NAME tag's precision, recall and F1 on held-out verses."""
    from tinygrad_seq import random as tgs_random
    from tinygrad_seq.checkpoint import save_checkpoint
    from tinygrad_seq.models.tagger import (Tagger, TaggerConfig, lexicon_baseline, load_kjv_tagging,
                                            tagger_vocab, tagging_scores, train_tagger)

    _positive(embed=embed, hidden=hidden, layers=layers, steps=steps, batch_size=batch_size,
              **{k: v for k, v in (("train_verses", train_verses), ("test_verses", test_verses)) if v is not None})
    _check_rates(lr, clip, dropout)
    path = _fresh_run_path(out)
    tgs_random.manual_seed(seed)
    data = load_kjv_tagging(train_verses=train_verses, test_verses=test_verses, seed=seed)
    vocab = tagger_vocab(data.train_tokens)
    config = TaggerConfig(vocab_size=len(vocab), cell=cell, embed=embed, hidden=hidden, layers=layers,
                          dropout=dropout)
    model = Tagger(config, vocab)
    click.echo(f"tagger: bidirectional {cell.upper()} x{layers} on {len(data.train_tokens):,} verses "
               f"({len(vocab):,} words); {len(data.test_tokens):,} held-out verses; run directory {out}", err=True)
    started = time.perf_counter()
    losses, interrupted = _fit("tagger", lambda cb: train_tagger(model, data.train_tokens, data.train_tags, steps,
                                                                 batch_size=batch_size, lr=lr, clip=clip, seed=seed,
                                                                 callback=cb, log_every=1),
                               steps, batch_size, "verses")
    scores = tagging_scores(model.predict(data.test_tokens), data.test_tags)
    _report_to_tuner(len(losses), {"name_f1": scores["f1"], "token_accuracy": scores["accuracy"]})
    baseline = tagging_scores(lexicon_baseline(data.train_tokens, data.train_tags, data.test_tokens), data.test_tags)
    state = {"kind": "tagger", "model_config": config.to_dict(), "vocab": vocab.to_dict(),
             "model": {k: v.numpy() for k, v in model.state_dict().items()},
             "train": {"steps": len(losses), "seed": seed, "train_verses": train_verses, "test_verses": test_verses,
                       "test_scores": scores}}
    save_checkpoint(path, state)
    click.echo(f"{'interrupted' if interrupted else 'done'}: {len(losses)} steps in "
               f"{time.perf_counter() - started:.0f}s; held-out: {_format_scores(scores)}", err=True)
    click.echo(f"(lexicon baseline, each word's most frequent tag: {_format_scores(baseline)}); "
               f"checkpoint in {path}", err=True)


def _format_scores(s):
    return (f"token accuracy {s['accuracy']:.2%}, NAME precision {s['precision']:.3f} recall {s['recall']:.3f} "
            f"F1 {s['f1']:.3f}")


def load_tagger(state):
    from tinygrad_seq.models.tagger import Tagger, TaggerConfig
    from tinygrad_seq.text.vocab import vocab_from_dict

    model = Tagger(TaggerConfig.from_dict(state["model_config"]), vocab_from_dict(state["vocab"]))
    model.load_state_dict(state["model"])
    return model.eval()


def _sample_tagger(state, options):
    if not options.prime:
        raise ValueError("give the text to tag with --prime, e.g. --prime 'and moses went up unto the lord'")
    return " ".join(f"[{token}]" if tag == "NAME" else token for token, tag in load_tagger(state).tag_text(options.prime))


def _evaluate_tagger(state, file, path):
    from tinygrad_seq.models.tagger import load_kjv_tagging, tagging_scores

    if file:
        raise ValueError("a tagger is scored on the held-out KJV verses: run `tgs eval CKPT` without FILE")
    info = state["train"]
    data = load_kjv_tagging(train_verses=info.get("train_verses"), test_verses=info.get("test_verses"),
                            seed=info.get("seed", 0))
    return tagging_scores(load_tagger(state).predict(data.test_tokens), data.test_tags)


kinds.register("seq2seq", evaluate=_evaluate_seq2seq, sample=_sample_seq2seq,
               description="seq2seq date translator")
kinds.register("tagger", evaluate=_evaluate_tagger, sample=_sample_tagger, description="sequence tagger")
