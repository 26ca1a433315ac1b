"""Datasets and mini-batch loading with torch.utils.data's names and behaviour.

    dataset = TensorDataset(X, y)                      # dataset[i] == (X[i], y[i])
    loader = DataLoader(dataset, batch_size=32, shuffle=True, generator=tgs.Generator().manual_seed(0))
    for xb, yb in loader:                              # stacked Tensors, a new order each epoch
        ...

A Dataset is anything with __getitem__ and __len__; DataLoader draws indices (in order, or a
fresh permutation each epoch with shuffle=True), groups them into batches of batch_size (the
last one smaller unless drop_last=True) and merges each batch's samples with `collate_fn`,
by default `default_collate`: tensors, arrays and numbers are stacked along a new first
dimension, and tuples, lists and dicts are collated field by field.  Loading happens in the
calling process (num_workers is accepted and ignored).
"""
import math
from collections.abc import Mapping, Sequence

import numpy as np

from ..random import generator as _engine_generator
from ..tensor import Tensor

__all__ = ["Dataset", "IterableDataset", "TensorDataset", "Subset", "ConcatDataset", "random_split",
           "DataLoader", "default_collate"]


class Dataset:
    """Map-style dataset: subclasses define __getitem__(index) and __len__()."""

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")

    def __add__(self, other):
        return ConcatDataset([self, other])


class IterableDataset(Dataset):
    """A dataset that is a stream: subclasses define __iter__ (DataLoader batches it in order)."""

    def __iter__(self):
        raise NotImplementedError(f"{type(self).__name__} must define __iter__")


class TensorDataset(Dataset):
    """Sample i is the tuple (t[i] for t in tensors); all tensors share their first dimension."""

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset: give at least one tensor")
        sizes = {t.shape[0] for t in tensors}
        if len(sizes) != 1:
            raise ValueError(f"TensorDataset: the tensors' first dimensions differ: {[t.shape[0] for t in tensors]}")
        self.tensors = tensors

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __len__(self):
        return self.tensors[0].shape[0]


class Subset(Dataset):
    """The samples of `dataset` at `indices`, in that order."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, list(indices)

    def __getitem__(self, index):
        return self.dataset[self.indices[index]]

    def __len__(self):
        return len(self.indices)


class ConcatDataset(Dataset):
    """The datasets one after the other."""

    def __init__(self, datasets):
        self.datasets = list(datasets)
        self.ends = np.cumsum([len(d) for d in self.datasets])

    def __getitem__(self, index):
        if index < 0:
            index += len(self)
        which = int(np.searchsorted(self.ends, index, side="right"))
        start = 0 if which == 0 else int(self.ends[which - 1])
        return self.datasets[which][index - start]

    def __len__(self):
        return int(self.ends[-1]) if len(self.ends) else 0


def _rng(generator):
    return _engine_generator() if generator is None else generator.rng


def random_split(dataset, lengths, generator=None):
    """Split into non-overlapping random Subsets of the given lengths (or fractions summing to 1)."""
    n = len(dataset)
    if all(0 <= f <= 1 for f in lengths) and math.isclose(sum(lengths), 1) and sum(lengths) != n:
        counts = [int(math.floor(n * f)) for f in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
        lengths = counts
    if sum(lengths) != n:
        raise ValueError(f"random_split: the lengths {list(lengths)} do not add up to the dataset's {n} samples")
    order = _rng(generator).permutation(n).tolist()
    subsets, start = [], 0
    for length in lengths:
        subsets.append(Subset(dataset, order[start:start + length]))
        start += length
    return subsets


def default_collate(batch):
    """Merge a list of samples into a batch, as torch's default_collate: tensors and arrays are
    stacked (a new first dimension), ints become int64, floats float64, bools bool tensors;
    dicts, tuples, named tuples and lists are collated field by field; strings stay a list."""
    first = batch[0]
    if isinstance(first, Tensor):
        from ..creation import stack
        return stack(batch)
    if isinstance(first, np.ndarray):
        if first.dtype.kind not in "biuf":
            return list(batch)
        return Tensor(np.stack(batch), dtype=first.dtype)
    if isinstance(first, (bool, np.bool_)):
        return Tensor(np.array(batch, dtype=bool))
    if isinstance(first, (int, np.integer)):
        return Tensor(np.array(batch, dtype=np.int64))
    if isinstance(first, (float, np.floating)):
        return Tensor(np.array(batch, dtype=np.float64 if isinstance(first, float) else first.dtype),
                      dtype=np.float64 if isinstance(first, float) else first.dtype)
    if isinstance(first, (str, bytes)):
        return list(batch)
    if isinstance(first, Mapping):
        return {key: default_collate([sample[key] for sample in batch]) for key in first}
    if isinstance(first, tuple) and hasattr(first, "_fields"):  # a named tuple
        return type(first)(*(default_collate(list(field)) for field in zip(*batch)))
    if isinstance(first, Sequence):
        if len({len(sample) for sample in batch}) != 1:
            raise RuntimeError("default_collate: the samples of a batch are sequences of different lengths; "
                               "pad them, or pass a collate_fn")
        fields = [default_collate(list(field)) for field in zip(*batch)]
        return tuple(fields) if isinstance(first, tuple) else fields
    raise TypeError(f"default_collate: cannot batch samples of type {type(first).__name__}; pass a collate_fn")


class DataLoader:
    """Iterate over `dataset` in batches (see the module docstring).

    batch_size=None yields single samples uncollated; sampler / batch_sampler (iterables of
    indices / of index lists) replace the built-in order as in PyTorch."""

    def __init__(self, dataset, batch_size=1, shuffle=False, sampler=None, batch_sampler=None, num_workers=0,
                 collate_fn=None, pin_memory=False, drop_last=False, timeout=0, worker_init_fn=None,
                 generator=None, **unused):
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"DataLoader: batch_size must be a positive integer or None, got {batch_size!r}")
        if shuffle and sampler is not None:
            raise ValueError("DataLoader: give shuffle=True or a sampler, not both")
        if batch_sampler is not None and (batch_size != 1 or shuffle or sampler is not None or drop_last):
            raise ValueError("DataLoader: batch_sampler excludes batch_size, shuffle, sampler and drop_last")
        self.dataset, self.batch_size, self.shuffle, self.sampler = dataset, batch_size, shuffle, sampler
        self.batch_sampler, self.drop_last, self.generator = batch_sampler, drop_last, generator
        self.collate_fn = collate_fn or (default_collate if batch_size is not None or batch_sampler else (lambda s: s))
        self.num_workers = num_workers

    def _indices(self):
        if self.sampler is not None:
            return iter(self.sampler)
        n = len(self.dataset)
        if self.shuffle:
            return iter(_rng(self.generator).permutation(n).tolist())
        return iter(range(n))

    def _batches(self):
        if self.batch_sampler is not None:
            yield from self.batch_sampler
            return
        batch = []
        for index in self._indices():
            batch.append(index)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __iter__(self):
        if isinstance(self.dataset, IterableDataset):
            yield from self._iterate_stream()
            return
        if self.batch_size is None and self.batch_sampler is None:
            for index in self._indices():
                yield self.collate_fn(self.dataset[index])
            return
        for indices in self._batches():
            yield self.collate_fn([self.dataset[i] for i in indices])

    def _iterate_stream(self):
        batch = []
        for sample in self.dataset:
            if self.batch_size is None:
                yield self.collate_fn(sample)
                continue
            batch.append(sample)
            if len(batch) == self.batch_size:
                yield self.collate_fn(batch)
                batch = []
        if batch and not self.drop_last:
            yield self.collate_fn(batch)

    def __len__(self):
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        n = len(self.sampler) if self.sampler is not None else len(self.dataset)
        if self.batch_size is None:
            return n
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
