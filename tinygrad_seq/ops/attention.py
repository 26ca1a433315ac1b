"""Attention as one op: scaled dot-product attention whose L x S scores never leave the kernel
(the `attention` kernel family), instead of matmul, scale, masked softmax and matmul."""
from ..device import device_of, xp_of
from ..tensor import Function


class ScaledDotProductAttention(Function):
    """out = p v,  p = softmax(scale q k^T) over the keys (causal: query i sees keys j <= i);
    per matrix, every leading axis of q (..., L, E), k (..., S, E), v (..., S, Ev) folded into one.

    Backward, with p recomputed from the saved lse = log sum_j exp(scale q k^T) (nothing of
    size L x S is kept), D = sum(dout * out, -1) and ds = p * (dout v^T - D):
    dq = scale ds k;  dk = scale ds^T q;  dv = p^T dout.
    """

    def forward(self, q, k, v, scale, causal=False):
        from ..backend import kernels
        xp = xp_of(q)
        self.kernels = kernels("attention", device_of(q))
        self.scale, self.causal = float(scale), bool(causal)
        self.shapes = (q.shape, k.shape, v.shape)
        # leading axes folded into N; a transposed head view becomes a contiguous copy here
        q3, k3, v3 = (xp.ascontiguousarray(a.reshape((-1,) + a.shape[-2:])) for a in (q, k, v))
        out, lse = self.kernels.attention_forward(q3, k3, v3, self.scale, self.causal)
        self.save_for_backward(q3, k3, v3, out, lse)
        return out.reshape(q.shape[:-1] + v.shape[-1:])

    def backward(self, dout):
        q3, k3, v3, out, lse = self.saved
        dout3 = xp_of(dout).ascontiguousarray(dout.reshape(out.shape), dtype=out.dtype)
        dq, dk, dv = self.kernels.attention_backward(dout3, q3, k3, v3, out, lse, self.scale, self.causal)
        q_shape, k_shape, v_shape = self.shapes
        return dq.reshape(q_shape), dk.reshape(k_shape), dv.reshape(v_shape)
