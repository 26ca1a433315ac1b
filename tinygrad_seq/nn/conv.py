"""Convolution and pooling: the functional forms and the layers, with PyTorch's arguments,
parameter names and shapes (NCL for 1-D, NCHW for 2-D).

A convolutional layer slides a small filter over the input and takes a dot product at every
position (a cross-correlation, which deep learning calls convolution):

    y[n, f, ho, wo] = b[f] + sum_{c,i,j} w[f, c, i, j] * xpad[n, c, ho*sh + i*dh, wo*sw + j*dw]

so an input of size n, padded by p on each side, filtered by a kernel of size f (dilated:
d*(f-1) + 1) with stride s gives floor((n + 2p - d*(f-1) - 1) / s) + 1 outputs.  Pooling
slides a window the same way and keeps its maximum or its mean.

Each of convolution, max pooling and average pooling is ONE op (`ops.Conv2d`,
`ops.MaxPool2d`, `ops.AvgPool2d`, in tinygrad_seq/ops/convolution.py) whose forward and
backward call the `conv` kernel family.  The kernels take symmetric zero padding only, so
the functional forms here do the rest before calling them: the asymmetric
'same' padding of even kernels (PyTorch puts the extra row/column at the end), other
padding modes, and 1-D ops, which run as 2-D ops on (N, C, 1, L).
"""
import math

import numpy as np

from .. import ops
from ..device import to_device, xp_of
from ..ops.movement import PAD_MODES
from ..random import generator
from ..tensor import Tensor
from .module import Module, Parameter

__all__ = ["Conv1d", "Conv2d", "MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d",
           "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d",
           "GlobalMaxPool1d", "ConstantPad1d", "ConstantPad2d", "ZeroPad2d"]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")  # of a Conv layer


# ---------------------------------------------------------------------------- argument helpers
def ntuple(value, n, name):
    """An int or an n-sequence of ints as an n-tuple (PyTorch's _pair / _single)."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * n
    try:
        value = tuple(int(v) for v in value)
    except TypeError:
        raise TypeError(f"{name} must be an int or a tuple of {n} ints, got {value!r}") from None
    if len(value) != n:
        raise ValueError(f"{name} must be an int or a tuple of {n} ints, got {value}")
    return value


def padding_pairs(op, padding, kernel_size, stride, dilation):
    """(before, after) padding for every spatial dimension.

    'valid' is no padding; 'same' keeps the size at stride 1: a dilated kernel spans
    d*(f-1) + 1 inputs, so d*(f-1) must be added in all, half before and the odd one out
    after (PyTorch's choice for even kernels)."""
    dims = len(kernel_size)
    if isinstance(padding, str):
        if padding == "valid":
            return [(0, 0)] * dims
        if padding != "same":
            raise ValueError(f"{op}: padding must be an int, a tuple, 'valid' or 'same', not {padding!r}")
        if any(s != 1 for s in stride):
            raise ValueError(f"{op}: padding='same' is not supported for strided convolutions")
        totals = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
        return [(t // 2, t - t // 2) for t in totals]
    pads = ntuple(padding, dims, "padding")
    if min(pads) < 0:
        raise ValueError(f"{op}: padding must be >= 0, got {padding}")
    return [(p, p) for p in pads]


# ---------------------------------------------------------------------------- the functional forms
def pad(input, pad, mode="constant", value=None):
    """torch.nn.functional.pad: `pad` lists (before, after) widths starting from the LAST dimension,
    e.g. (left, right, top, bottom) for an image."""
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2 or len(pad) // 2 > input.ndim:
        raise ValueError(f"pad: needs an even number of widths for at most {input.ndim} dimensions, got {pad}")
    if mode not in PAD_MODES:
        raise ValueError(f"pad: mode must be one of {', '.join(PAD_MODES)}, not {mode!r}")
    if mode != "constant" and min(pad) < 0:
        raise ValueError(f"pad: {mode} padding needs widths >= 0, got {pad}")
    if mode != "constant" and value:
        raise ValueError(f"pad: value= only applies to mode 'constant', not {mode!r}")
    trailing = [(pad[2 * i], pad[2 * i + 1]) for i in range(len(pad) // 2)][::-1]
    widths = ((0, 0),) * (input.ndim - len(trailing)) + tuple(trailing)
    if mode == "reflect":
        for n, (before, after) in zip(input.shape, widths):
            if max(before, after) >= n:
                raise ValueError(f"pad: reflect padding {(before, after)} must be smaller than the dimension {n}")
    return ops.Pad.apply(input, widths=widths, mode=mode, value=0.0 if value is None else value)


def _batched(op, x, dims):
    """(x as a batch, whether to drop the batch dimension again): (C, *spatial) inputs are one sample."""
    if x.ndim == dims + 2:
        return x, False
    if x.ndim == dims + 1:
        return x.unsqueeze(0), True
    kind = "(N, C, L) or (C, L)" if dims == 1 else "(N, C, H, W) or (C, H, W)"
    raise ValueError(f"{op}: expected input of shape {kind}, got shape {x.shape}")


def convolution(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    """conv1d / conv2d (chosen by the weight's rank) of an (N, C, *spatial) or (C, *spatial) input.

    `padding` is an int, a tuple, 'valid' or 'same'; padding_mode 'zeros', 'reflect',
    'replicate' or 'circular'.  Output size: floor((n + 2p - d*(f-1) - 1) / s) + 1."""
    dims = weight.ndim - 2
    op = f"conv{dims}d"
    if dims not in (1, 2):
        raise ValueError(f"conv: weight must be (F, C, k) or (F, C, kh, kw), got shape {weight.shape}")
    x, unbatched = _batched(op, input, dims)
    kernel_size = weight.shape[2:]
    stride = ntuple(stride, dims, "stride")
    dilation = ntuple(dilation, dims, "dilation")
    if min(stride) < 1 or min(dilation) < 1 or groups < 1:
        raise ValueError(f"{op}: stride, dilation and groups must be >= 1, got {stride}, {dilation}, {groups}")
    if x.shape[1] != weight.shape[1] * groups or weight.shape[0] % groups:
        raise ValueError(f"{op}: input of shape {x.shape} has {x.shape[1]} channels but weight of shape "
                         f"{weight.shape} with groups={groups} expects {weight.shape[1] * groups}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"{op}: bias must have shape ({weight.shape[0]},), got {bias.shape}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"{op}: padding_mode must be one of {', '.join(PADDING_MODES)}, not {padding_mode!r}")
    pads = padding_pairs(op, padding, kernel_size, stride, dilation)
    if padding_mode != "zeros":
        x = ops.Pad.apply(x, widths=((0, 0), (0, 0)) + tuple(pads), mode=padding_mode, value=0.0)
        symmetric = (0,) * dims
    else:
        # the kernel pads symmetrically; an uneven 'same' adds the odd row/column here first
        symmetric = tuple(min(before, after) for before, after in pads)
        extra = tuple((before - s, after - s) for (before, after), s in zip(pads, symmetric))
        if any(b or a for b, a in extra):
            x = ops.Pad.apply(x, widths=((0, 0), (0, 0)) + extra, mode="constant", value=0.0)
    w = weight
    if dims == 1:  # a 1-D convolution is a 2-D one over a single row
        x, w = x.unsqueeze(2), weight.unsqueeze(2)
        stride, symmetric, dilation = (1,) + stride, (0,) + symmetric, (1,) + dilation
    y = ops.Conv2d.apply(x, w, bias, stride=stride, padding=symmetric, dilation=dilation, groups=groups)
    if dims == 1:
        y = y.reshape(y.shape[:2] + y.shape[3:])
    return y.reshape(y.shape[1:]) if unbatched else y


def _pool_args(op, dims, kernel_size, stride, padding, ceil_mode, dilation=1):
    kernel_size = ntuple(kernel_size, dims, "kernel_size")
    stride = kernel_size if stride is None or stride == () or stride == [] else ntuple(stride, dims, "stride")
    padding = ntuple(padding, dims, "padding")
    if ceil_mode:
        raise ValueError(f"{op}: ceil_mode=True is not supported; pad the input (F.pad) so the windows tile it")
    if ntuple(dilation, dims, "dilation") != (1,) * dims:
        raise ValueError(f"{op}: dilation other than 1 is not supported")
    if dims == 1:  # as 2-D pooling over a single row
        return (1,) + kernel_size, (1,) + stride, (0,) + padding
    return kernel_size, stride, padding


def _pool(op, dims, x, run):
    """Run a 2-D pooling `run(x4)` on a 1-D or 2-D, batched or unbatched input."""
    x, unbatched = _batched(op, x, dims)
    if dims == 1:
        x = x.unsqueeze(2)
    outs = run(x)
    single = not isinstance(outs, tuple)
    outs = (outs,) if single else outs
    if dims == 1:
        outs = tuple(o.reshape(o.shape[:2] + o.shape[3:]) for o in outs)
    if unbatched:
        outs = tuple(o.reshape(o.shape[1:]) for o in outs)
    return outs[0] if single else outs


def max_pool(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False, dims=2):
    """Max over each kernel_size window (stride defaults to kernel_size); -inf padding.
    return_indices=True also gives the flat index (h*W + w, or l in 1-D) of every maximum."""
    op = f"max_pool{dims}d"
    k, s, p = _pool_args(op, dims, kernel_size, stride, padding, ceil_mode, dilation)

    def run(x4):
        out = ops.MaxPool2d.apply(x4, kernel_size=k, stride=s, padding=p, return_indices=return_indices)
        if return_indices:  # indices are data, not part of the graph
            return out[0], Tensor._wrap(out[1].data)
        return out
    return _pool(op, dims, x, run)


def avg_pool(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
             divisor_override=None, dims=2):
    """Mean over each window.  count_include_pad=False divides by the number of real (unpadded)
    inputs in the window instead of the window size; divisor_override divides by that number."""
    op = f"avg_pool{dims}d"
    k, s, p = _pool_args(op, dims, kernel_size, stride, padding, ceil_mode)

    def run(x4):
        y = ops.AvgPool2d.apply(x4, kernel_size=k, stride=s, padding=p)
        window = math.prod(k)
        if divisor_override:
            return y * (window / divisor_override)
        if not count_include_pad and any(p):
            # the mean of a plane of ones is the fraction of each window that is real input
            xp = xp_of(x4.data)
            ones = xp.ones((1, 1) + tuple(x4.shape[2:]), dtype=x4.dtype)
            real = ops.AvgPool2d.apply(Tensor._wrap(ones), kernel_size=k, stride=s, padding=p)
            return y / real
        return y
    return _pool(op, dims, x, run)


def adaptive_windows(n, out):
    """PyTorch's adaptive pooling windows: [floor(i*n/out), ceil((i+1)*n/out)) for i < out."""
    if out < 1:
        raise ValueError(f"adaptive pooling: output size must be >= 1, got {out}")
    return [((i * n) // out, -(-((i + 1) * n) // out)) for i in range(out)]


def adaptive_pool(x, output_size, kind, dims):
    """Pool to a fixed output size whatever the input size (kind 'max' or 'avg').  When the size
    divides evenly this is one ordinary pooling; otherwise each output takes its own window."""
    op = f"adaptive_{kind}_pool{dims}d"
    x, unbatched = _batched(op, x, dims)
    sizes = x.shape[2:]
    if isinstance(output_size, (tuple, list)):  # None keeps that dimension's size
        output_size = ntuple([n if o is None else o for o, n in zip(output_size, sizes)] if len(output_size) == dims
                             else output_size, dims, "output_size")
    else:
        output_size = ntuple(output_size, dims, "output_size")
    pool = max_pool if kind == "max" else avg_pool
    if all(n % o == 0 for n, o in zip(sizes, output_size)):
        k = tuple(n // o for n, o in zip(sizes, output_size))
        y = pool(x, k, k, 0, dims=dims)
    else:
        from ..creation import cat
        windows = [adaptive_windows(n, o) for n, o in zip(sizes, output_size)]
        if dims == 1:
            y = cat([pool(x[:, :, a:b], b - a, dims=1) for a, b in windows[0]], dim=2)
        else:
            rows = [cat([pool(x[:, :, a:b, c:d], (b - a, d - c), dims=2) for c, d in windows[1]], dim=3)
                    for a, b in windows[0]]
            y = cat(rows, dim=2)
    return y.reshape(y.shape[1:]) if unbatched else y


# ---------------------------------------------------------------------------- layers
def _uniform(shape, bound, dtype, device):
    values = generator().uniform(-bound, bound, size=shape).astype(np.dtype(dtype or np.float32))
    return Parameter(to_device(values, device or "cpu"), dtype=values.dtype)


class _ConvNd(Module):
    dims = 2

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        n = self.dims
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: in_channels ({in_channels}) and out_channels ({out_channels}) "
                             f"must be divisible by groups ({groups})")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"{name}: padding_mode must be one of {', '.join(PADDING_MODES)}, not {padding_mode!r}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = ntuple(kernel_size, n, "kernel_size")
        self.stride = ntuple(stride, n, "stride")
        self.dilation = ntuple(dilation, n, "dilation")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.dilation) < 1:
            raise ValueError(f"{name}: kernel_size, stride and dilation must be >= 1")
        padding_pairs(name, padding, self.kernel_size, self.stride, self.dilation)  # validate now
        self.padding = padding if isinstance(padding, str) else ntuple(padding, n, "padding")
        self.padding_mode = padding_mode
        # PyTorch's default: kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)), bias alike
        fan_in = in_channels // groups * math.prod(self.kernel_size)
        self._init = dict(bound=1 / math.sqrt(fan_in), dtype=dtype, device=device)
        self.weight = _uniform((out_channels, in_channels // groups) + self.kernel_size, **self._init)
        self.register_parameter("bias", _uniform((out_channels,), **self._init) if bias else None)

    def reset_parameters(self):
        self.weight.data = _uniform(self.weight.shape, **self._init).data
        if self.bias is not None:
            self.bias.data = _uniform(self.bias.shape, **self._init).data

    def forward(self, x):
        return convolution(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                           self.groups, self.padding_mode)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * self.dims:
            s += f", padding={self.padding!r}"
        if self.dilation != (1,) * self.dims:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return s


class Conv1d(_ConvNd):
    """1-D convolution over (N, C_in, L) -> (N, C_out, L_out); weight (C_out, C_in/groups, k), bias (C_out,).
    L_out = floor((L + 2p - d*(k-1) - 1) / s) + 1.  Text CNNs use it as an n-gram detector."""
    dims = 1


class Conv2d(_ConvNd):
    """2-D convolution over (N, C_in, H, W) -> (N, C_out, H_out, W_out);
    weight (C_out, C_in/groups, kh, kw), bias (C_out,).  H_out = floor((H + 2p - d*(kh-1) - 1) / s) + 1."""
    dims = 2


class _PoolNd(Module):
    """What the max and average pooling layers share: the window (stride defaults to
    kernel_size), checked when the layer is made rather than at its first call, and a forward
    that hands it with the layer's own `options` to its functional form `pool`."""
    dims, pool, options = 2, None, ()

    def __init__(self, kernel_size, stride, padding, ceil_mode, dilation=1):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride if stride is not None else kernel_size, padding
        self.ceil_mode = ceil_mode
        _pool_args(type(self).__name__, self.dims, kernel_size, stride, padding, ceil_mode, dilation)

    def forward(self, x):
        options = {name: getattr(self, name) for name in self.options}
        return type(self).pool(x, self.kernel_size, self.stride, self.padding, ceil_mode=self.ceil_mode,
                               dims=self.dims, **options)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class _MaxPoolNd(_PoolNd):
    pool, options = max_pool, ("dilation", "return_indices")

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__(kernel_size, stride, padding, ceil_mode, dilation)
        self.dilation, self.return_indices = dilation, return_indices


class MaxPool1d(_MaxPoolNd):
    """Max over windows of length kernel_size along L (stride defaults to kernel_size)."""
    dims = 1


class MaxPool2d(_MaxPoolNd):
    """Max over kernel_size windows of each (H, W) plane (stride defaults to kernel_size)."""
    dims = 2


class _AvgPoolNd(_PoolNd):
    pool, options = avg_pool, ("count_include_pad", "divisor_override")

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override


class AvgPool1d(_AvgPoolNd):
    """Mean over windows of length kernel_size along L."""
    dims = 1

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad)


class AvgPool2d(_AvgPoolNd):
    """Mean over kernel_size windows of each (H, W) plane."""
    dims = 2


class _AdaptivePool(Module):
    dims, kind = 1, "max"

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return adaptive_pool(x, self.output_size, self.kind, self.dims)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveMaxPool1d(_AdaptivePool):
    """Max-pool (N, C, L) to (N, C, output_size) for any L; output_size=1 is max-over-time."""
    dims, kind = 1, "max"


class AdaptiveMaxPool2d(_AdaptivePool):
    dims, kind = 2, "max"


class AdaptiveAvgPool1d(_AdaptivePool):
    dims, kind = 1, "avg"


class AdaptiveAvgPool2d(_AdaptivePool):
    """Average-pool (N, C, H, W) to (N, C, *output_size); output_size=1 is global average pooling."""
    dims, kind = 2, "avg"


class GlobalMaxPool1d(Module):
    """Max-over-time pooling: (N, C, L) -> (N, C), each feature's strongest response anywhere
    in the sequence (Kim 2014's text CNN), so sequences of any length give one vector."""

    def forward(self, x):
        y = adaptive_pool(x, 1, "max", 1)
        return y.reshape(y.shape[:-1])


class ConstantPad1d(Module):
    """Pad the last dimension with `value`: padding is an int or (left, right)."""
    dims = 1

    def __init__(self, padding, value):
        super().__init__()
        self.padding = tuple(ntuple(padding, 2 * self.dims, "padding")) if isinstance(padding, int) else tuple(padding)
        self.value = value

    def forward(self, x):
        return pad(x, self.padding, "constant", self.value)

    def extra_repr(self):
        return f"padding={self.padding}, value={self.value}"


class ConstantPad2d(ConstantPad1d):
    """Pad the last two dimensions with `value`: padding is an int or (left, right, top, bottom)."""
    dims = 2


class ZeroPad2d(ConstantPad2d):
    def __init__(self, padding):
        super().__init__(padding, 0.0)
