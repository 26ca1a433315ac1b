"""Convolutional classifiers: a LeNet-style image CNN and a text CNN.

LeNet (LeCun et al. 1998), scaled to small images:

    image (N, C, H, W)
      -> [Conv2d -> (BatchNorm2d) -> ReLU -> MaxPool2d(2)]  x len(channels)
      -> Flatten -> (Dropout) -> Linear -> ReLU -> (Dropout) -> Linear   = class scores (logits)

Each stage halves H and W while the number of channels grows: early filters see edges,
later ones combinations of them.  Softmax turns the scores into probabilities; training uses
cross_entropy on the logits, which applies log-softmax itself.

Text CNN (Kim 2014):

    token ids (N, L) -> Embedding (N, L, E) -> as (N, E, L)
      -> for each width w: Conv1d(E, F, w) -> ReLU -> max over time  (N, F)
      -> concatenate (N, F * len(widths)) -> Dropout -> Linear = class scores

A width-w filter is an n-gram detector: it fires on w consecutive words it likes, and max
over time keeps its strongest match anywhere in the sentence, so any length works.
"""
from dataclasses import dataclass

from .. import nn
from ..config import Config, check_dropout
from ..creation import cat
from ..nn import functional as F
from ..nn.functional_conv import adaptive_max_pool1d, pad
from ..tensor import no_grad


@dataclass
class LeNetConfig(Config):
    in_channels: int = 1
    image_size: int = 8            # square images: 8 for scikit-learn's digits, 28 for MNIST
    num_classes: int = 10
    channels: tuple = (16, 32)     # one conv -> ReLU -> pool stage per entry
    kernel_size: int = 3
    hidden: int = 64               # the fully connected layer before the output; 0 for none
    dropout: float = 0.0
    batch_norm: bool = False

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"LeNetConfig: channels must be positive ints, got {self.channels}")
        if self.image_size >> len(self.channels) < 1:
            raise ValueError(f"LeNetConfig: {len(self.channels)} pooling stages halve a {self.image_size}-pixel "
                             f"image to nothing; use fewer channels entries or larger images")
        check_dropout(self.dropout, "LeNetConfig: ")


class LeNet(nn.Module):
    """LeNet-style CNN: `LeNet(LeNetConfig(...))(images)` -> logits (N, num_classes)."""

    def __init__(self, config=None):
        super().__init__()
        self.config = config = config or LeNetConfig()
        layers, channels_in, size = [], config.in_channels, config.image_size
        for channels_out in config.channels:
            # 'same' padding keeps the size through the conv, so only the pools shrink it
            layers.append(nn.Conv2d(channels_in, channels_out, config.kernel_size, padding="same"))
            if config.batch_norm:
                layers.append(nn.BatchNorm2d(channels_out))
            layers += [nn.ReLU(), nn.MaxPool2d(2)]
            channels_in, size = channels_out, size // 2
        self.features = nn.Sequential(*layers)
        flat = channels_in * size * size
        head = [nn.Flatten()]
        if config.dropout:
            head.append(nn.Dropout(config.dropout))
        if config.hidden:
            head += [nn.Linear(flat, config.hidden), nn.ReLU()]
            if config.dropout:
                head.append(nn.Dropout(config.dropout))
            flat = config.hidden
        head.append(nn.Linear(flat, config.num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, images):
        expected = (self.config.in_channels, self.config.image_size, self.config.image_size)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(f"LeNet: expects images of shape (N, {', '.join(map(str, expected))}), got {images.shape}")
        return self.classifier(self.features(images))

    @no_grad()
    def predict_proba(self, images):
        """softmax of the logits: (N, num_classes) class probabilities (evaluation mode is the caller's)."""
        return F.softmax(self.forward(images), dim=-1)


@dataclass
class TextCNNConfig(Config):
    vocab_size: int
    num_classes: int = 2
    embed_dim: int = 64
    num_filters: int = 64          # per width
    widths: tuple = (2, 3, 4)      # n-gram sizes the filters look at
    dropout: float = 0.5
    pad_id: int = 0                # the token used to lengthen sequences shorter than the widest filter

    def __post_init__(self):
        self.widths = tuple(int(w) for w in self.widths)
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"TextCNNConfig: widths must be positive ints, got {self.widths}")


class TextCNN(nn.Module):
    """Kim-style text CNN: `TextCNN(TextCNNConfig(vocab_size=V))(ids (N, L))` -> logits (N, num_classes)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim)
        self.convs = nn.ModuleList([nn.Conv1d(config.embed_dim, config.num_filters, w) for w in config.widths])
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(config.num_filters * len(config.widths), config.num_classes)

    def forward(self, ids):
        if ids.ndim != 2:
            raise ValueError(f"TextCNN: expects token ids of shape (N, L), got {ids.shape}")
        short = max(self.config.widths) - ids.shape[1]
        if short > 0:  # every filter needs at least one full window
            ids = pad(ids, (0, short), value=self.config.pad_id)
        x = self.embedding(ids).transpose(1, 2)                       # (N, E, L)
        features = [adaptive_max_pool1d(conv(x).relu(), 1) for conv in self.convs]
        h = cat(features, dim=1).reshape(ids.shape[0], -1)              # (N, F * widths)
        return self.fc(self.dropout(h))
