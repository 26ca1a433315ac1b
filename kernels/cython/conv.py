"""Convolution and pooling, Cython backend (NCHW).

Shape checks and their messages come from the reference (`conv2d_output_size`,
`pool2d_output_size`, `check_*`); the loops and GEMMs are in _conv.pyx.
"""
import numpy as np

from tinygrad_seq.kernels.reference.conv import (check_grad_shape, check_maxpool_grad_args,
                                                 conv2d_output_size, pool2d_output_size)

from . import _conv


def _pair(p):
    return tuple(int(v) for v in p)


def conv2d_forward(x, w, b, stride, padding, dilation):
    """y (N, F, Ho, Wo) = im2col(x) GEMM w (F, C, kh, kw), plus b (F,) when given."""
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    Ho, Wo = conv2d_output_size(x.shape, w.shape, stride, padding, dilation)
    F = w.shape[0]
    if b is not None and tuple(b.shape) != (F,):
        raise ValueError(f"conv2d: b must have shape ({F},), got {tuple(b.shape)}")
    return _conv.conv2d_forward(np.ascontiguousarray(x), np.ascontiguousarray(w),
                                None if b is None else np.ascontiguousarray(b),
                                stride, padding, dilation, Ho, Wo)


def conv2d_backward(dy, x, w, stride, padding, dilation, need_bias):
    """(dx, dw, db) of conv2d_forward; db is None unless need_bias."""
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    Ho, Wo = conv2d_output_size(x.shape, w.shape, stride, padding, dilation)
    check_grad_shape("conv2d", dy, (x.shape[0], w.shape[0], Ho, Wo))
    return _conv.conv2d_backward(np.ascontiguousarray(dy), np.ascontiguousarray(x),
                                 np.ascontiguousarray(w), stride, padding, dilation,
                                 bool(need_bias))


def maxpool2d_forward(x, kernel_size, stride, padding):
    """(y, argmax): window maxima (-inf padding) and their flat h*W+w index in the input plane."""
    kernel_size, stride, padding = _pair(kernel_size), _pair(stride), _pair(padding)
    Ho, Wo = pool2d_output_size("maxpool2d", x.shape, kernel_size, stride, padding)
    return _conv.maxpool2d_forward(np.ascontiguousarray(x), *kernel_size, *stride, *padding, Ho, Wo)


def maxpool2d_backward(dy, argmax, x_shape):
    """dx[n, c].flat[argmax] += dy."""
    check_maxpool_grad_args(dy, argmax, x_shape)
    H, W = x_shape[2:]
    return _conv.maxpool2d_backward(np.ascontiguousarray(dy),
                                    np.ascontiguousarray(argmax, dtype=np.int64), int(H), int(W))


def avgpool2d_forward(x, kernel_size, stride, padding):
    """Window means, zero padding counted (count_include_pad=True)."""
    kernel_size, stride, padding = _pair(kernel_size), _pair(stride), _pair(padding)
    Ho, Wo = pool2d_output_size("avgpool2d", x.shape, kernel_size, stride, padding)
    return _conv.avgpool2d_forward(np.ascontiguousarray(x), *kernel_size, *stride, *padding, Ho, Wo)


def avgpool2d_backward(dy, x_shape, kernel_size, stride, padding):
    """Each in-bounds tap of a window gets dy / (kh*kw)."""
    kernel_size, stride, padding = _pair(kernel_size), _pair(stride), _pair(padding)
    Ho, Wo = pool2d_output_size("avgpool2d", x_shape, kernel_size, stride, padding)
    check_grad_shape("avgpool2d", dy, (x_shape[0], x_shape[1], Ho, Wo))
    return _conv.avgpool2d_backward(np.ascontiguousarray(dy), int(x_shape[2]), int(x_shape[3]),
                                    *kernel_size, *stride, *padding)
