"""Convolution, pooling and padding as functions, with torch.nn.functional's names and arguments.

The ops themselves (one differentiable Function each) live in `nn/conv.py`; these are the
stateless forms the layers there call with their own weights.
"""
from .conv import adaptive_pool, avg_pool, convolution, max_pool, pad  # noqa: F401  (pad: torch's F.pad)

__all__ = ["conv1d", "conv2d", "max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d", "pad",
           "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool2d"]


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """(N, C, L) * weight (F, C/groups, k) -> (N, F, floor((L + 2p - d*(k-1) - 1) / s) + 1).
    padding: int, (int,), 'valid' or 'same'."""
    if weight.ndim != 3:
        raise ValueError(f"conv1d: weight must be (F, C, k), got shape {weight.shape}")
    return convolution(input, weight, bias, stride, padding, dilation, groups)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """(N, C, H, W) * weight (F, C/groups, kh, kw) -> (N, F, Ho, Wo), Ho = floor((H + 2p - d*(kh-1) - 1) / s) + 1.
    padding: int, (ph, pw), 'valid' or 'same'."""
    if weight.ndim != 4:
        raise ValueError(f"conv2d: weight must be (F, C, kh, kw), got shape {weight.shape}")
    return convolution(input, weight, bias, stride, padding, dilation, groups)


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    return max_pool(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, dims=1)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    return max_pool(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, dims=2)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    return avg_pool(input, kernel_size, stride, padding, ceil_mode, count_include_pad, dims=1)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    return avg_pool(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, dims=2)


def adaptive_max_pool1d(input, output_size):
    """output_size=1 is max-over-time pooling: each channel's largest value over the sequence."""
    return adaptive_pool(input, output_size, "max", 1)


def adaptive_max_pool2d(input, output_size):
    return adaptive_pool(input, output_size, "max", 2)


def adaptive_avg_pool1d(input, output_size):
    return adaptive_pool(input, output_size, "avg", 1)


def adaptive_avg_pool2d(input, output_size):
    return adaptive_pool(input, output_size, "avg", 2)

