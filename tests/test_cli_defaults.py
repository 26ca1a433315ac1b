"""The training options' defaults are the config dataclasses' defaults: `tgs train charlm` with no
option trains what TrainConfig() describes, and the classifier options that no kind overrides
are ClassifierConfig()'s (one source of truth; a default changed in one place fails here)."""
import dataclasses

import click
import pytest

from tinygrad_seq.classifier_training import ClassifierConfig
from tinygrad_seq.cli.main import cli
from tinygrad_seq.training import TrainConfig


def _options(kind):
    command = cli.commands["train"]
    ctx = click.Context(command)
    sub = command.get_command(ctx, kind)
    return {p.name: p.default for p in sub.params if isinstance(p, click.Option)}


def _field_defaults(config):
    return {f.name: f.default for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING}


def test_charlm_options_default_to_train_config():
    options, fields = _options("charlm"), _field_defaults(TrainConfig)
    shared = sorted(set(options) & set(fields))
    assert len(shared) >= 17, shared
    assert {name: options[name] for name in shared} == {name: fields[name] for name in shared}


@pytest.mark.parametrize("kind", ["cnn", "mlp"])
def test_classifier_options_default_to_classifier_config(kind):
    per_kind = {"epochs", "lr", "dropout", "batchnorm", "out"}    # each kind's own choice
    options, fields = _options(kind), _field_defaults(ClassifierConfig)
    shared = sorted((set(options) & set(fields)) - per_kind)
    assert len(shared) >= 7, shared
    assert {name: options[name] for name in shared} == {name: fields[name] for name in shared}
