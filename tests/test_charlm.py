"""Language models and their training loop: the LM protocol, scoring, generation, truncated
BPTT batching, checkpoints that resume bit-for-bit, the NaN guard and Ctrl-C."""
import math
import os
import signal

import numpy as np
import pytest

import tinygrad_seq as tgs
from tinygrad_seq.backend import unavailable_reason
from tinygrad_seq.checkpoint import load_checkpoint
from tinygrad_seq.models.charlm import (LMConfig, build_lm, detach_state, evaluate_stream, generate, log_prob,
                                        perplexity, state_from_arrays, state_to_arrays)
from tinygrad_seq.nn import functional as F
from tinygrad_seq.text.vocab import CharVocab
from tinygrad_seq.training import LMTrainer, StreamBatches, TrainConfig, evaluate_text, load_lm, split_corpus

TEXT = ("In the beginning God created the heaven and the earth. And the earth was without form, "
        "and void; and darkness was upon the face of the deep.\n") * 12


def tiny_config(tmp_path, **overrides):
    settings = dict(model="lstm", hidden=16, embed=8, seq_len=12, batch_size=4, steps=12, eval_every=6,
                    out=str(tmp_path / "run"), sample_length=20, lr=1e-2)
    settings.update(overrides)
    return TrainConfig(**settings)


def quiet_train(trainer):
    return trainer.train(echo=lambda line: None, progress=False)


# ---------------------------------------------------------------------------- the model
@pytest.mark.parametrize("model, embed, layers", [("rnn", 0, 1), ("gru", 6, 2), ("lstm", 6, 2)])
def test_chunks_with_carried_state_equal_the_whole_sequence(model, embed, layers):
    tgs.manual_seed(0)
    lm = build_lm(LMConfig(model=model, vocab_size=11, embed=embed, hidden=7, layers=layers)).double()
    ids = np.random.default_rng(0).integers(0, 11, size=(3, 10))
    whole, _ = lm(tgs.Tensor(ids))
    assert whole.shape == (3, 10, 11)
    first, state = lm(tgs.Tensor(ids[:, :4]))
    second, _ = lm(tgs.Tensor(ids[:, 4:]), detach_state(state))
    np.testing.assert_allclose(np.concatenate([first.numpy(), second.numpy()], axis=1), whole.numpy(), atol=1e-12)
    restored = state_from_arrays(state_to_arrays(state))
    np.testing.assert_array_equal(lm(tgs.Tensor(ids[:, 4:]), restored)[0].numpy(), second.numpy())
    # select_state keeps batch rows: row 2 alone continues exactly as in the batch
    alone, _ = lm(tgs.Tensor(ids[2:, 4:]), lm.select_state(state, np.array([2])))
    np.testing.assert_allclose(alone.numpy()[0], second.numpy()[2], atol=1e-12)


def test_config_validation():
    with pytest.raises(ValueError, match="unknown model 'cnn'"):
        LMConfig(model="cnn", vocab_size=5)
    with pytest.raises(ValueError, match="hidden must be a positive integer"):
        LMConfig(vocab_size=5, hidden=0)
    for field, value, message in [("hidden", 0, "hidden must be a positive integer"),
                                  ("seq_len", -1, "seq-len must be a positive integer"),
                                  ("lr", 0.0, "lr must be a positive number"),
                                  ("dropout", 1.0, r"dropout must be in \[0, 1\)"),
                                  ("clip", -1.0, "clip must be >= 0")]:
        with pytest.raises(ValueError, match=message):
            TrainConfig(**{field: value})


def test_log_prob_perplexity_and_streaming_agree():
    tgs.manual_seed(1)
    lm = build_lm(LMConfig(model="gru", vocab_size=6, embed=4, hidden=5)).double()
    ids = np.random.default_rng(1).integers(0, 6, size=40)
    logits, _ = lm(tgs.Tensor(ids[None, :-1]))
    logp = F.log_softmax(logits, dim=-1).numpy()[0]
    expected = logp[np.arange(39), ids[1:]].sum()
    assert log_prob(lm, ids, chunk=7) == pytest.approx(expected, rel=1e-10)
    assert log_prob(lm, ids[1:], context=ids[:1]) == pytest.approx(expected, rel=1e-10)
    assert perplexity(lm, ids) == pytest.approx(math.exp(-expected / 39))
    nats, count = evaluate_stream(lm, ids, batch_size=1, seq_len=9)
    assert count == 39 and nats == pytest.approx(-expected, rel=1e-10)
    nats4, count4 = evaluate_stream(lm, ids, batch_size=4, seq_len=5)
    assert count4 == 39 and nats4 / count4 == pytest.approx(-expected / 39, rel=0.2)


def test_generate_is_seeded_and_greedy_is_argmax():
    tgs.manual_seed(2)
    vocab = CharVocab.from_text("abcd\n")
    lm = build_lm(LMConfig(model="lstm", vocab_size=len(vocab), embed=3, hidden=6))
    a = generate(lm, vocab, "ab", 15, rng=np.random.default_rng(0))
    b = generate(lm, vocab, "ab", 15, rng=np.random.default_rng(0))
    assert a == b and len(a) == 15 and set(a) <= set("abcd\n")
    greedy = generate(lm, vocab, "ab", 5, temperature=0)
    ids, expected = list(vocab.encode("ab")), []
    for _ in range(5):
        logits, _ = lm(tgs.Tensor(np.array([ids])))
        ids.append(int(logits.numpy()[0, -1].argmax()))
        expected.append(ids[-1])
    assert greedy == vocab.decode(expected)
    # a beam of width 1 is greedy search
    assert generate(lm, vocab, "ab", 5, beam=1) == greedy
    assert len(generate(lm, vocab, "", 4, beam=3)) == 4


# ---------------------------------------------------------------------------- batching
def test_stream_batches_are_contiguous_rows():
    ids = np.arange(101)
    batches = StreamBatches(ids, batch_size=4, seq_len=5)
    assert batches.chunks == 5  # 25 tokens per row
    x, y, first = batches(0)
    assert first and x.shape == (4, 5) and x[:, 0].tolist() == [0, 25, 50, 75]
    np.testing.assert_array_equal(y, x + 1)
    x1, _, first1 = batches(1)
    assert not first1 and x1[:, 0].tolist() == [5, 30, 55, 80]  # the next columns of the same rows
    x5, _, first5 = batches(5)
    assert first5 and np.array_equal(x5, x)  # a new epoch starts over
    assert StreamBatches(np.arange(12), batch_size=8, seq_len=5).batch_size == 2  # short text: fewer rows
    with pytest.raises(ValueError, match="fewer than seq-len \\+ 1 = 6"):
        StreamBatches(np.arange(5), batch_size=1, seq_len=5)


# ---------------------------------------------------------------------------- training
def test_training_learns_and_writes_its_run(tmp_path):
    train, val = split_corpus(TEXT)
    trainer = LMTrainer.from_texts(tiny_config(tmp_path, steps=40, eval_every=20), train, val)
    before = trainer.evaluate()
    result = quiet_train(trainer)
    assert result.status == "done" and result.step == 40
    assert result.val_loss < before - 0.5
    run = tmp_path / "run"
    assert (run / "checkpoint.npz").exists() and (run / "metrics.jsonl").exists()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert any('"val_loss"' in line for line in lines) and any('"chars_per_s"' in line for line in lines)
    pytest.importorskip("matplotlib", reason="the loss curve is drawn with matplotlib (the plot extra)")
    assert (run / "loss.png").stat().st_size > 1000


def test_checkpoint_contents_and_evaluation(tmp_path):
    train, val = split_corpus(TEXT)
    trainer = LMTrainer.from_texts(tiny_config(tmp_path), train, val)
    quiet_train(trainer)
    state = load_checkpoint(tmp_path / "run")
    assert state["kind"] == "charlm"
    assert state["model_config"]["hidden"] == 16 and state["train"]["step"] == 12
    assert state["vocab"]["symbols"] == trainer.vocab.symbols
    assert state["train"]["optimizer"]["state"] and state["train"]["carry"] is not None
    model, vocab = load_lm(state)
    for name, value in trainer.model.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[name].numpy(), value.numpy())
    report = evaluate_text(state, val)
    assert set(report) >= {"nats_per_char", "bits_per_char", "chars"}
    assert report["bits_per_char"] == pytest.approx(report["nats_per_char"] / math.log(2))
    assert report["chars"] == len(val) - 1


def test_the_validation_sample_is_bounded_spread_and_seeded():
    from tinygrad_seq.training import validation_sample

    n = 1_000_000
    starts, length = validation_sample(n, 5000, windows=64, seed=3)
    assert len(starts) * (length - 1) <= 5000 and len(starts) == 64  # bounded
    assert starts.min() >= 0 and starts.max() + length <= n
    assert starts.min() < 0.05 * n and starts.max() > 0.95 * n  # the whole held-out part, not its head
    assert np.all(np.diff(starts) > 0)  # one window in each stratum
    again, _ = validation_sample(n, 5000, windows=64, seed=3)
    other, _ = validation_sample(n, 5000, windows=64, seed=4)
    np.testing.assert_array_equal(starts, again)  # the same at every validation, rank and resume
    assert not np.array_equal(starts, other)
    assert validation_sample(5001, 5000) is None  # it all fits: the whole stream
    assert validation_sample(10, 3, windows=64)[0].size == 3  # never more windows than tokens


def test_validation_reads_the_sampled_windows_beyond_the_head(tmp_path):
    from tinygrad_seq.models.charlm import evaluate_windows
    from tinygrad_seq.training import validation_sample

    train, val = split_corpus(TEXT * 4, val_fraction=0.5)
    trainer = LMTrainer.from_texts(tiny_config(tmp_path, val_max_tokens=200, seed=5), train, val)
    starts, length = validation_sample(trainer.val_ids.size, 200, 64, seed=5)
    assert starts.max() > trainer.val_ids.size // 2 and len(starts) * (length - 1) <= 200
    nats, count = evaluate_windows(trainer.model, trainer.val_ids, starts, length, seq_len=12)
    assert trainer.evaluate() == pytest.approx(nats / count, rel=1e-12)
    head, head_count = evaluate_stream(trainer.model, trainer.val_ids, batch_size=64, seq_len=12, max_tokens=200)
    assert trainer.evaluate() != pytest.approx(head / head_count, rel=1e-9)  # not the head any more
    whole, whole_count = evaluate_stream(trainer.model, trainer.val_ids, batch_size=64, seq_len=12)
    assert trainer.evaluate(max_tokens=10 ** 6) == pytest.approx(whole / whole_count, rel=1e-12)
    # a resumed run samples the same windows: the same loss from the same weights
    trainer.save()
    resumed = LMTrainer.from_checkpoint(load_checkpoint(tmp_path / "run"), train, val)
    assert resumed.evaluate() == trainer.evaluate()


def test_transformer_lm_follows_the_protocol():
    """Feeding tokens one at a time with the returned window equals reading them at once
    (within the context), and the window is what select_state reorders for beam search."""
    tgs.manual_seed(0)
    lm = build_lm(LMConfig(model="transformer", vocab_size=9, embed=8, heads=2, layers=2, block_size=6)).double()
    assert lm.carries_state is False and lm.max_context == 6
    assert "blocks.layers.1.self_attn.in_proj_weight" in dict(lm.named_parameters())
    ids = np.random.default_rng(1).integers(0, 9, size=(2, 6))
    whole, _ = lm.eval()(tgs.Tensor(ids))
    state, steps = None, []
    for t in range(6):
        logits, state = lm(tgs.Tensor(ids[:, t:t + 1]), state)
        steps.append(logits.numpy())
    np.testing.assert_allclose(np.concatenate(steps, axis=1), whole.numpy(), atol=1e-12)
    assert state.shape == (2, 5)
    np.testing.assert_array_equal(lm.select_state(state, np.array([1])).numpy(), ids[1:, 1:])
    with pytest.raises(ValueError, match="exceed its context"):
        lm(tgs.Tensor(np.zeros((1, 7), dtype=np.int64)))
    with pytest.raises(ValueError, match="multiple of heads"):
        LMConfig(model="transformer", vocab_size=9, embed=10, heads=4)


def test_transformer_trains_resumes_samples_and_evaluates(tmp_path):
    train, val = split_corpus(TEXT)
    settings = dict(model="transformer", embed=16, heads=2, layers=1, steps=10, eval_every=5)
    trainer = LMTrainer.from_texts(tiny_config(tmp_path / "a", **settings), train, val)
    first = trainer.evaluate()
    assert quiet_train(trainer).status == "done" and trainer.last_val < first
    half = LMTrainer.from_texts(tiny_config(tmp_path / "b", **dict(settings, steps=5)), train, val)
    quiet_train(half)
    resumed = LMTrainer.from_checkpoint(load_checkpoint(tmp_path / "b" / "run"), train, val, steps=10)
    quiet_train(resumed)
    for name, value in trainer.model.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), resumed.model.state_dict()[name].numpy(), err_msg=name)
    state = load_checkpoint(tmp_path / "a" / "run")
    model, vocab = load_lm(state)
    text = generate(model, vocab, "And the earth " * 3, 15, beam=3)  # a prime longer than the context
    assert len(text) == 15 and set(text) <= set(TEXT)
    result = evaluate_text(state, val)
    assert result["chars"] == len(val) - 1 and math.isclose(result["bits_per_char"] * math.log(2),
                                                            result["nats_per_char"])


def test_resume_is_bit_for_bit(tmp_path):
    train, val = split_corpus(TEXT)
    settings = dict(dropout=0.2, layers=2, steps=16, eval_every=4)
    whole = LMTrainer.from_texts(tiny_config(tmp_path / "a", **settings), train, val)
    quiet_train(whole)
    half = LMTrainer.from_texts(tiny_config(tmp_path / "b", **dict(settings, steps=8)), train, val)
    quiet_train(half)
    resumed = LMTrainer.from_checkpoint(load_checkpoint(tmp_path / "b" / "run"), train, val, steps=16)
    assert resumed.step == 8
    quiet_train(resumed)
    a = load_checkpoint(tmp_path / "a" / "run")
    b = load_checkpoint(tmp_path / "b" / "run")
    for name in a["model"]:
        np.testing.assert_array_equal(a["model"][name], b["model"][name], err_msg=name)
    assert a["train"]["val_loss"] == b["train"]["val_loss"]
    with pytest.raises(ValueError, match="differs from the one this run was trained on"):
        LMTrainer.from_checkpoint(b, train + "x", val)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    train, val = split_corpus(TEXT)
    trainer = LMTrainer.from_texts(tiny_config(tmp_path, steps=8, eval_every=4), train, val)
    quiet_train(trainer)
    good = (tmp_path / "run" / "checkpoint.npz").read_bytes()
    # continue with an absurd learning rate and no clipping: the weights blow up to inf
    wild = LMTrainer.from_checkpoint(load_checkpoint(tmp_path / "run"), train, val, steps=60)
    for group in wild.optimizer.param_groups:
        group["lr"] = 1e38
    wild.config.clip = 0.0
    result = quiet_train(wild)
    assert result.status == "diverged"
    assert "last good checkpoint (step 8)" in result.message
    assert (tmp_path / "run" / "checkpoint.npz").read_bytes() == good


def test_ctrl_c_saves_and_stops_between_steps(tmp_path):
    train, val = split_corpus(TEXT)
    trainer = LMTrainer.from_texts(tiny_config(tmp_path, steps=50, eval_every=50), train, val)
    real_step = trainer.train_step

    def step_then_press_ctrl_c():
        loss = real_step()
        if trainer.step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # delivered mid-loop, like a keypress
        return loss

    trainer.train_step = step_then_press_ctrl_c
    result = quiet_train(trainer)
    assert result.status == "interrupted" and result.step == 3
    assert "--resume" in result.message
    assert load_checkpoint(tmp_path / "run")["train"]["step"] == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


@pytest.mark.skipif(unavailable_reason("numba") is not None,
                    reason=f"numba backend unavailable: {unavailable_reason('numba')}")
def test_char_lstm_trains_the_same_on_numpy_and_numba(tmp_path):
    """The compiled backend's whole-model check: 20 steps, same seed, same final loss."""
    train, val = split_corpus(TEXT)
    losses = {}
    for name in ("numpy", "numba"):
        trainer = LMTrainer.from_texts(tiny_config(tmp_path / name, steps=20, eval_every=20, backend=name,
                                                   hidden=32, embed=16), train, val)
        steps = []
        with tgs.backend(name):
            while trainer.step < 20:
                steps.append(trainer.train_step())
        losses[name] = steps
    assert losses["numba"][-1] == pytest.approx(losses["numpy"][-1], rel=1e-4)
    assert losses["numpy"][-1] < losses["numpy"][0]
