"""Convolution and pooling over (N, C, H, W): each ONE op whose forward and backward call the
`conv` kernel family (`tinygrad_seq.backend.kernels("conv", device)`): the NumPy reference
(im2col + GEMM) or a compiled backend.  The kernels take symmetric zero padding only;
nn.functional does the rest (asymmetric 'same' padding, padding modes, 1-D as 2-D on
(N, C, 1, L)) before calling these."""
from ..backend import kernels
from ..device import device_of, xp_of
from ..tensor import Function
from .movement import contiguous as _contiguous


def _float_array_check(op, *arrays):
    """The kernels compute in one float dtype: refuse integers and mixed precisions up front."""
    dtypes = [a.dtype for a in arrays if a is not None]
    if any(d.kind != "f" for d in dtypes):
        raise TypeError(f"{op}: expects floating-point tensors, got dtypes {[str(d) for d in dtypes]}; "
                        "convert with .float()")
    if len(set(dtypes)) > 1:
        raise TypeError(f"{op}: input, weight and bias must share one dtype, got {[str(d) for d in dtypes]}; "
                        "cast with .float() or .double()")


class Conv2d(Function):
    """y = conv2d(x, w) + b, cross-correlation with symmetric zero padding:

        y[n, f, ho, wo] = b[f] + sum_{c,i,j} w[f, c, i, j] * xpad[n, c, ho*sh + i*dh, wo*sw + j*dw]

    Backward reads the same sum the other two ways:
        dw[f, c, i, j] = sum_{n,ho,wo} dy[n, f, ho, wo] * xpad[n, c, ho*sh + i*dh, wo*sw + j*dw]
        dxpad[n, c, ho*sh + i*dh, wo*sw + j*dw] += sum_f w[f, c, i, j] * dy[n, f, ho, wo]
        db[f] = sum_{n,ho,wo} dy[n, f, ho, wo]
    With groups > 1 the channels split into `groups` independent convolutions.
    """

    def forward(self, x, w, b, stride, padding, dilation, groups=1):
        _float_array_check("conv2d", x, w, b)
        self.kernels = kernels("conv", device_of(x))
        self.args, self.groups, self.has_bias = (stride, padding, dilation), groups, b is not None
        x, w = _contiguous(x), _contiguous(w)
        self.save_for_backward(x, w)
        if groups == 1:
            return self.kernels.conv2d_forward(x, w, b, stride, padding, dilation)
        xp = xp_of(x)
        pieces = zip(self._split(x, 1), self._split(w, 0), self._split(b, 0) if b is not None else [None] * groups)
        return xp.concatenate([self.kernels.conv2d_forward(xg, wg, bg, stride, padding, dilation)
                               for xg, wg, bg in pieces], axis=1)

    def backward(self, dy):
        x, w = self.saved
        need_bias = self.has_bias and self.needs_input_grad[2]
        dy = _contiguous(dy)
        if self.groups == 1:
            dx, dw, db = self.kernels.conv2d_backward(dy, x, w, *self.args, need_bias)
        else:
            xp = xp_of(dy)
            parts = [self.kernels.conv2d_backward(dyg, xg, wg, *self.args, need_bias)
                     for dyg, xg, wg in zip(self._split(dy, 1), self._split(x, 1), self._split(w, 0))]
            dx = xp.concatenate([p[0] for p in parts], axis=1)
            dw = xp.concatenate([p[1] for p in parts], axis=0)
            db = xp.concatenate([p[2] for p in parts]) if need_bias else None
        return (dx if self.needs_input_grad[0] else None,
                dw if self.needs_input_grad[1] else None,
                db)

    def _split(self, a, axis):
        return [_contiguous(part) for part in xp_of(a).split(a, self.groups, axis=axis)]


class MaxPool2d(Function):
    """y[n, c, ho, wo] = max_{i,j} xpad[n, c, ho*sh + i, wo*sw + j]  (padding is -inf);
    dx = dy routed to the position of each window's maximum (the first one on ties).

    With return_indices=True also returns the argmax: the flat index h*W + w of each maximum
    in its unpadded (H, W) plane, as torch.nn.functional.max_pool2d does."""

    def forward(self, x, kernel_size, stride, padding, return_indices=False):
        _float_array_check("max_pool2d", x)
        self.kernels = kernels("conv", device_of(x))
        self.x_shape = x.shape
        y, argmax = self.kernels.maxpool2d_forward(_contiguous(x), kernel_size, stride, padding)
        self.save_for_backward(argmax)
        return (y, argmax) if return_indices else y

    def backward(self, dy, d_indices=None):
        (argmax,) = self.saved
        return self.kernels.maxpool2d_backward(_contiguous(dy), argmax, self.x_shape)


class AvgPool2d(Function):
    """y[n, c, ho, wo] = (1 / (kh*kw)) sum_{i,j} xpad[n, c, ho*sh + i, wo*sw + j]  (zero padding counted);
    dx[n, c, ho*sh + i, wo*sw + j] += dy[n, c, ho, wo] / (kh*kw): each input of a window gets an equal share."""

    def forward(self, x, kernel_size, stride, padding):
        _float_array_check("avg_pool2d", x)
        self.kernels = kernels("conv", device_of(x))
        self.x_shape, self.args = x.shape, (kernel_size, stride, padding)
        return self.kernels.avgpool2d_forward(_contiguous(x), kernel_size, stride, padding)

    def backward(self, dy):
        return self.kernels.avgpool2d_backward(_contiguous(dy), self.x_shape, *self.args)
