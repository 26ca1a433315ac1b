"""The CNN models (LeNet, TextCNN) and the two vision examples: shapes, errors, learning."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from cli_helpers import ROOT, run_example

import tinygrad_seq as tgs
from tinygrad_seq import optim
from tinygrad_seq.models.cnn import LeNet, LeNetConfig, TextCNN, TextCNNConfig
from tinygrad_seq.nn import functional as F


def test_lenet_layers_and_shapes():
    model = LeNet(LeNetConfig(channels=(4, 6), hidden=10, dropout=0.1, batch_norm=True))
    names = dict(model.named_parameters())
    assert names["features.0.weight"].shape == (4, 1, 3, 3) and names["features.1.weight"].shape == (4,)
    # two 2x2 pools take 8x8 to 2x2, so the first linear layer sees 6 * 2 * 2 features
    linear_shapes = sorted(p.shape for n, p in names.items() if n.startswith("classifier") and p.ndim == 2)
    assert linear_shapes == [(10, 10), (10, 24)]
    logits = model(tgs.randn(5, 1, 8, 8))
    assert logits.shape == (5, 10)
    probabilities = model.predict_proba(tgs.randn(3, 1, 8, 8)).numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    with pytest.raises(ValueError, match=r"expects images of shape \(N, 1, 8, 8\)"):
        model(tgs.randn(5, 8, 8))
    with pytest.raises(ValueError, match="halve"):
        LeNetConfig(channels=(2, 2, 2, 2))
    assert LeNetConfig.from_dict(model.config.to_dict()) == model.config


def test_text_cnn_pads_short_inputs_and_learns_an_ngram():
    """Class 1 iff the bigram (3, 4) occurs somewhere: max over time must find it at any position."""
    tgs.manual_seed(0)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 12, size=(256, 9))
    labels = rng.integers(0, 2, size=256)
    for row in np.flatnonzero(labels):
        start = rng.integers(0, 8)
        ids[row, start:start + 2] = (3, 4)
    model = TextCNN(TextCNNConfig(vocab_size=12, embed_dim=8, num_filters=8, widths=(2, 3), dropout=0.0))
    assert model(tgs.Tensor(ids[:2, :1])).shape == (2, 2)  # shorter than the widest filter: padded
    with pytest.raises(ValueError, match=r"expects token ids of shape \(N, L\)"):
        model(tgs.Tensor(ids[0]))
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        loss = F.cross_entropy(model(tgs.Tensor(ids)), tgs.Tensor(labels))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    accuracy = (model(tgs.Tensor(ids)).numpy().argmax(axis=1) == labels).mean()
    assert accuracy > 0.95


def test_text_cnn_example_beats_guessing(tmp_path):
    out = run_example("text_cnn.py", "--per-class", 1500, "--epochs", 2, cwd=tmp_path)
    accuracies = [float(a) for a in re.findall(r"test accuracy ([\d.]+)%", out)]
    assert len(accuracies) == 2 and max(accuracies) > 65  # guessing scores 50%
    assert "width 4 filter 0:" in out


def test_edge_maps_example_writes_every_map(tmp_path):
    pytest.importorskip("sklearn", reason="the photo comes with scikit-learn")
    pytest.importorskip("PIL", reason="scikit-learn reads its JPEG photo with Pillow")
    out = run_example("edge_maps.py", "--out", tmp_path / "maps", "--size", 64, cwd=tmp_path)
    written = sorted(os.listdir(tmp_path / "maps"))
    assert [os.path.splitext(name)[0] for name in written] == sorted(
        ["original", "sobel_vertical", "sobel_horizontal", "magnitude", "blur", "sharpen"])
    assert out.count("range") == 6


RUN_WITHOUT_IMAGE_LIBRARIES = """
import runpy, sys
sys.modules.update(dict.fromkeys(["matplotlib", "PIL", "sklearn"]))   # each import of them now fails
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_edge_maps_example_writes_pgm_without_matplotlib_pillow_or_sklearn(tmp_path):
    """The example promises binary PGM images when neither matplotlib nor Pillow is installed;
    scikit-learn's JPEG photo needs Pillow, so a drawn scene stands in for it."""
    result = subprocess.run([sys.executable, "-c", RUN_WITHOUT_IMAGE_LIBRARIES,
                             os.path.join(ROOT, "examples", "edge_maps.py"), "--out", str(tmp_path / "maps"),
                             "--size", "40"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "drawn test scene" in result.stdout
    maps = {}
    for name in sorted(os.listdir(tmp_path / "maps")):
        assert name.endswith(".pgm"), name
        raw = (tmp_path / "maps" / name).read_bytes()
        magic, width, height, maxval, pixels = raw.split(maxsplit=4)
        assert (magic, int(width), int(height), int(maxval)) == (b"P5", 40, 30, 255)
        maps[name[:-4]] = np.frombuffer(pixels, dtype=np.uint8).reshape(30, 40)
    assert sorted(maps) == sorted(["original", "sobel_vertical", "sobel_horizontal", "magnitude", "blur", "sharpen"])
    assert maps["magnitude"].max() == 255 and maps["magnitude"].min() == 0   # edges found, flat areas dark
    assert (maps["magnitude"] < 32).mean() > 0.5
