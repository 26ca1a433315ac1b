"""Convolution, pooling and padding as functions, with torch.nn.functional's names and arguments.

The ops themselves (one differentiable Function each) live in `tinygrad_seq/ops/convolution.py`;
these are the stateless forms the layers of `nn/conv.py` call with their own weights.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

from .._typing import IntOrTuple
from ..tensor import Tensor
from .conv import adaptive_pool, avg_pool, convolution, max_pool, pad  # noqa: F401  (pad: torch's F.pad)

__all__ = ["conv1d", "conv2d", "max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d", "pad",
           "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool2d"]


def conv1d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
           stride: IntOrTuple = 1, padding: Union[IntOrTuple, str] = 0,
           dilation: IntOrTuple = 1, groups: int = 1) -> Tensor:
    """(N, C, L) * weight (F, C/groups, k) -> (N, F, floor((L + 2p - d*(k-1) - 1) / s) + 1).
    padding: int, (int,), 'valid' or 'same'."""
    if weight.ndim != 3:
        raise ValueError(f"conv1d: weight must be (F, C, k), got shape {weight.shape}")
    return convolution(input, weight, bias, stride, padding, dilation, groups)


def conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
           stride: IntOrTuple = 1, padding: Union[IntOrTuple, str] = 0,
           dilation: IntOrTuple = 1, groups: int = 1) -> Tensor:
    """(N, C, H, W) * weight (F, C/groups, kh, kw) -> (N, F, Ho, Wo), Ho = floor((H + 2p - d*(kh-1) - 1) / s) + 1.
    padding: int, (ph, pw), 'valid' or 'same'."""
    if weight.ndim != 4:
        raise ValueError(f"conv2d: weight must be (F, C, kh, kw), got shape {weight.shape}")
    return convolution(input, weight, bias, stride, padding, dilation, groups)


def max_pool1d(input: Tensor, kernel_size: IntOrTuple,
               stride: Optional[IntOrTuple] = None,
               padding: IntOrTuple = 0, dilation: IntOrTuple = 1,
               ceil_mode: bool = False, return_indices: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    return max_pool(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, dims=1)


def max_pool2d(input: Tensor, kernel_size: IntOrTuple,
               stride: Optional[IntOrTuple] = None,
               padding: IntOrTuple = 0, dilation: IntOrTuple = 1,
               ceil_mode: bool = False, return_indices: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    return max_pool(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, dims=2)


def avg_pool1d(input: Tensor, kernel_size: IntOrTuple,
               stride: Optional[IntOrTuple] = None,
               padding: IntOrTuple = 0, ceil_mode: bool = False,
               count_include_pad: bool = True) -> Tensor:
    return avg_pool(input, kernel_size, stride, padding, ceil_mode, count_include_pad, dims=1)


def avg_pool2d(input: Tensor, kernel_size: IntOrTuple,
               stride: Optional[IntOrTuple] = None,
               padding: IntOrTuple = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: Optional[int] = None) -> Tensor:
    return avg_pool(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, dims=2)


def adaptive_max_pool1d(input: Tensor, output_size: IntOrTuple) -> Tensor:
    """output_size=1 is max-over-time pooling: each channel's largest value over the sequence."""
    return adaptive_pool(input, output_size, "max", 1)


def adaptive_max_pool2d(input: Tensor, output_size: IntOrTuple) -> Tensor:
    return adaptive_pool(input, output_size, "max", 2)


def adaptive_avg_pool1d(input: Tensor, output_size: IntOrTuple) -> Tensor:
    return adaptive_pool(input, output_size, "avg", 1)


def adaptive_avg_pool2d(input: Tensor, output_size: IntOrTuple) -> Tensor:
    return adaptive_pool(input, output_size, "avg", 2)

