"""The Tensor API against PyTorch, table-driven: every case is ONE function of (lib, *tensors),
run with lib = torch and lib = tinygrad_seq on the same float64 data; the outputs must agree,
the gradients of every floating input must agree (for a random upstream gradient), and
tinygrad_seq's gradient must pass gradcheck (finite differences, float64)."""

import numpy as np
import pytest
import torch

import tinygrad_seq as tgs
from tinygrad_seq import gradcheck

TOL = 1e-8


def make(spec, seed):
    """An input array from a spec: (shape, kind), kind in any/pos/unit/gt1/int/bool/idx<n>."""
    shape, kind = spec
    rng = np.random.default_rng(seed)
    if kind == "any":
        return rng.standard_normal(shape)
    if kind == "pos":
        return rng.uniform(0.5, 2.0, shape)
    if kind == "unit":
        return rng.uniform(-0.9, 0.9, shape)
    if kind == "gt1":
        return rng.uniform(1.2, 3.0, shape)
    if kind == "int":
        return rng.integers(-5, 6, shape).astype(np.int64)
    if kind == "bool":
        return rng.random(shape) > 0.5
    if kind.startswith("idx"):
        return rng.integers(0, int(kind[3:]), shape).astype(np.int64)
    raise ValueError(kind)


def as_arrays(out):
    """Outputs (a tensor, a tuple or named tuple of them, a number or a bool) as numpy arrays."""
    if isinstance(out, (tuple, list)):
        return [a for o in out for a in as_arrays(o)]
    if isinstance(out, torch.Tensor):
        return [out.detach().numpy()]
    if isinstance(out, tgs.Tensor):
        return [out.numpy()]
    return [np.asarray(out)]


def float_outputs(out):
    if isinstance(out, (tuple, list)):
        return [a for o in out for a in float_outputs(o)]
    if isinstance(out, (torch.Tensor, tgs.Tensor)) and out.dtype in (torch.float64, np.float64) \
            and out.requires_grad:
        return [out]
    return []


def run_case(fn, specs, grad=True, tol=TOL, seed=0):
    """grad: True (against PyTorch and gradcheck), "torch" (against PyTorch only: a float32 cast,
    a detach, or NaN/inf gradients that finite differences cannot see), False (outputs only)."""
    arrays = [make(spec, seed + i) for i, spec in enumerate(specs)]
    t_in = [torch.tensor(a, requires_grad=grad and a.dtype.kind == "f") for a in arrays]
    o_in = [tgs.tensor(a, dtype=a.dtype, requires_grad=grad and a.dtype.kind == "f") for a in arrays]
    t_out, o_out = fn(torch, *t_in), fn(tgs, *o_in)
    t_arr, o_arr = as_arrays(t_out), as_arrays(o_out)
    assert len(t_arr) == len(o_arr), f"{len(o_arr)} outputs, PyTorch gives {len(t_arr)}"
    for o, t in zip(o_arr, t_arr):
        assert o.shape == t.shape, f"shape {o.shape} != PyTorch's {t.shape}"
        assert o.dtype == t.dtype, f"dtype {o.dtype} vs PyTorch's {t.dtype}"
        tolerance = tol if o.dtype != np.float32 else max(tol, 1e-6)
        np.testing.assert_allclose(o, t, rtol=tolerance, atol=tolerance, equal_nan=True)
    if not grad:
        return
    t_float, o_float = float_outputs(t_out), float_outputs(o_out)
    assert len(t_float) == len(o_float)
    if not t_float:
        return
    rng = np.random.default_rng(seed + 100)
    weights = [rng.standard_normal(t.shape) for t in t_float]
    sum(((t * torch.tensor(w)).sum() for t, w in zip(t_float, weights))).backward()
    sum(((o * tgs.tensor(w, dtype=np.float64)).sum() for o, w in zip(o_float, weights))).backward()
    for o, t in zip(o_in, t_in):
        if t.requires_grad:
            expected = t.grad.numpy() if t.grad is not None else np.zeros(t.shape)
            got = o.grad.numpy() if o.grad is not None else np.zeros(o.shape)
            np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-7, equal_nan=True)
    if grad is True and all(a.size <= 40 for a in arrays):
        assert gradcheck(lambda *ts: fn(tgs, *ts), [tgs.tensor(a, dtype=a.dtype) for a in arrays])


CASES = []


def case(name, fn, *specs, grad=True, tol=TOL):
    CASES.append(pytest.param(fn, specs, grad, tol, id=name))


A34, A234, A0, A5 = ((3, 4), "any"), ((2, 3, 4), "any"), ((), "any"), ((5,), "any")

# ---- elementwise methods, each on a matrix, a 3-D tensor and a 0-d tensor
def method(name, *args, **kwargs):
    """The case `lambda l, x: x.<name>(*args, **kwargs)`."""
    return lambda l, x: getattr(x, name)(*args, **kwargs)


def function(name):
    """The case `lambda l, x: l.<name>(x)`: the function form, torch.<name> or tgs.<name>."""
    return lambda l, x: getattr(l, name)(x)


# the argument-free methods, by the inputs they are defined on (a kind of make())
PLAIN_METHODS = {
    "any": "neg abs exp expm1 sin cos atan sinh cosh tanh asinh sigmoid relu erf floor ceil sign square exp2",
    "pos": "log log2 log10 log1p sqrt rsqrt reciprocal",
    "unit": "tan asin acos atanh",
    "gt1": "acosh",
}
UNARY = {name: (method(name), kind) for kind, names in PLAIN_METHODS.items() for name in names.split()}
UNARY.update({
    "round": (lambda l, x: (x * 3).round(), "any"), "round_decimals": (method("round", decimals=1), "any"),
    "trunc": (lambda l, x: (x * 3).trunc(), "any"),
    "pow_method": (method("pow", 3), "any"), "pow_half": (method("pow", 0.5), "pos"),
    "clamp": (method("clamp", -0.5, 0.5), "any"), "clamp_min": (method("clamp", min=0.1), "any"),
    "clip_max": (method("clip", max=0.2), "any"),
    "mod": (lambda l, x: x % 0.7, "any"), "rpow": (lambda l, x: 2.0 ** x, "any"),
})
UNARY.update({f"torch_{name}": (function(name), kind) for name, kind in
              (("sin", "any"), ("exp", "any"), ("abs", "any"), ("sqrt", "pos"), ("tanh", "any"), ("sigmoid", "any"))})
for name, (fn, kind) in UNARY.items():
    for label, shape in (("2d", (3, 4)), ("3d", (2, 3, 2)), ("0d", ())):
        case(f"{name}-{label}", fn, (shape, kind))

# ---- binary methods and operators, with broadcasting
BINARY = {
    "add": (lambda l, a, b: a.add(b), "any"), "add_alpha": (lambda l, a, b: a.add(b, alpha=2.5), "any"),
    "sub": (lambda l, a, b: a.sub(b), "any"), "mul": (lambda l, a, b: a.mul(b), "any"),
    "div": (lambda l, a, b: a.div(b), "pos"), "pow": (lambda l, a, b: a.pow(b), "pos"),
    "maximum": (lambda l, a, b: l.maximum(a, b), "any"), "minimum": (lambda l, a, b: l.minimum(a, b), "any"),
    "max_tensor": (lambda l, a, b: a.max(b), "any"), "remainder": (lambda l, a, b: a.remainder(b), "pos"),
    "lerp": (lambda l, a, b: a.lerp(b, 0.3), "any"),
    "torch_add": (lambda l, a, b: l.add(a, b), "any"), "torch_mul": (lambda l, a, b: l.mul(a, b), "any"),
    "where": (lambda l, a, b: l.where(a > 0, a, b), "any"),
    "tensor_where": (lambda l, a, b: a.where(a > b, b), "any"),
}
for name, (fn, kind) in BINARY.items():
    for label, (sa, sb) in (("same", ((3, 4), (3, 4))), ("row", ((3, 4), (4,))), ("outer", ((3, 1), (1, 4)))):
        case(f"{name}-{label}", fn, (sa, kind), (sb, kind))

# ---- comparisons, predicates and floor division (PyTorch has no derivative for floor_divide)
case("floordiv", lambda l, x: x // 0.3, A34, grad=False)
case("floordiv_tensor", lambda l, a, b: a // b, A34, ((4,), "pos"), grad=False)
case("floordiv_int", lambda l, a: a // 2, ((3, 4), "int"), grad=False)
case("mod_int", lambda l, a: a % 3, ((3, 4), "int"), grad=False)
case("truediv_int", lambda l, a: (a / 4, 3 / (a * 0 + 2), a.div(2.5)), ((3, 4), "int"), grad=False)
for name, fn in {
    "eq": lambda l, a, b: a.eq(b), "ne": lambda l, a, b: a.ne(b), "gt": lambda l, a, b: a.gt(b),
    "lt": lambda l, a, b: a.lt(b), "ge": lambda l, a, b: a >= b, "le": lambda l, a, b: a <= b,
    "isclose": lambda l, a, b: a.isclose(a + b * 1e-9), "allclose": lambda l, a, b: a.allclose(a + b * 1e-9),
    "logical_and": lambda l, a, b: (a > 0).logical_and(b > 0), "logical_or": lambda l, a, b: (a > 0).logical_or(b > 0),
    "equal": lambda l, a, b: l.equal(a, a.clone()),
}.items():
    case(name, fn, A34, A34, grad=False)
for name, fn in {
    "isnan": lambda l, x: (x.log()).isnan(), "isinf": lambda l, x: (1 / x.relu()).isinf(),
    "isfinite": lambda l, x: (x.log()).isfinite(), "logical_not": lambda l, x: (x > 0).logical_not(),
    "any_dims": lambda l, x: (x > 1).any(dim=(0, 2)) if l is tgs else (x > 1).any(dim=(0, 2)),
    "all_dim": lambda l, x: (x > -1).all(dim=1), "any": lambda l, x: (x > 1).any(),
    "any_keepdim": lambda l, x: (x > 1).any(dim=2, keepdim=True),
    "nonzero": lambda l, x: (x > 0.5).nonzero(), "count_nonzero": lambda l, x: l.count_nonzero(x > 0, dim=1),
    "argmax": lambda l, x: x.argmax(), "argmax_dim": lambda l, x: x.argmax(dim=1, keepdim=True),
    "argmin_dim": lambda l, x: x.argmin(-1), "argsort": lambda l, x: x.argsort(dim=1),
    "argsort_desc": lambda l, x: x.argsort(dim=-1, descending=True),
    "int_cast": lambda l, x: (x * 3).int(), "long_cast": lambda l, x: (x * 3).long(),
    "bool_cast": lambda l, x: x.bool(), "sum_bool": lambda l, x: (x > 0).sum(),
}.items():
    case(name, fn, A234, grad=False)

# ---- reductions
for dim in (None, 0, 1, -1, (0, 2)):
    for keep in (False, True):
        label = f"dim={dim}-keep={keep}"
        if dim is None:
            if not keep:
                for name, fn in {"sum": lambda l, x: x.sum(), "mean": lambda l, x: x.mean(),
                                 "var": lambda l, x: x.var(), "std": lambda l, x: x.std(),
                                 "prod": lambda l, x: x.prod(), "amax": lambda l, x: x.amax(),
                                 "max": lambda l, x: x.max(), "min": lambda l, x: x.min(),
                                 "median": lambda l, x: x.median(), "norm": lambda l, x: x.norm(),
                                 "logsumexp_all": lambda l, x: x.logsumexp((0, 1, 2))}.items():
                    case(f"{name}-{label}", fn, A234)
            continue
        for name in ("sum", "mean", "var", "std", "amax", "amin", "logsumexp", "norm"):
            if name == "norm":
                fn = (lambda d, k: lambda l, x: x.norm(dim=d, keepdim=k))(dim, keep)
            else:
                fn = (lambda n, d, k: lambda l, x: getattr(x, n)(d, keepdim=k))(name, dim, keep)
            case(f"{name}-{label}", fn, A234)
        if isinstance(dim, int):
            for name in ("max", "min", "median", "prod", "cumsum", "softmax", "log_softmax"):
                if name == "cumsum" or name.endswith("softmax"):
                    if keep:
                        continue
                    fn = (lambda n, d: lambda l, x: getattr(x, n)(d))(name, dim)
                else:
                    fn = (lambda n, d, k: lambda l, x: getattr(x, n)(d, keepdim=k))(name, dim, keep)
                case(f"{name}-{label}", fn, A234)
            case(f"kthvalue-{label}", (lambda d, k: lambda l, x: x.kthvalue(2, d, keepdim=k))(dim, keep), A234)
case("var_unbiased_false", lambda l, x: x.var(1, unbiased=False), A234)
case("var_correction0", lambda l, x: x.var(0, correction=0), A234)
case("std_keepdim", lambda l, x: x.std(-1, keepdim=True), A234)
case("prod_with_zero", lambda l, x: (x * (x > 0)).prod(1), A34)
case("norm_p1", lambda l, x: x.norm(p=1, dim=1), A34)
case("norm_p3", lambda l, x: x.norm(p=3), A34)
case("norm_inf", lambda l, x: x.norm(p=float("inf"), dim=0), A34)
case("max_named", lambda l, x: (x.max(dim=1).values, x.max(dim=1).indices), A34)
case("min_unpack", lambda l, x: tuple(x.min(0)), A34)
case("torch_max_dim", lambda l, x: l.max(x, 1), A34)
case("torch_sum_dim", lambda l, x: l.sum(x, dim=0), A34)
case("torch_mean", lambda l, x: l.mean(x), A34)
case("sum_dtype", lambda l, x: (x > 0).sum(dim=1), A34, grad=False)

# ---- sorting and selection
for label, dim in (("last", -1), ("first", 0)):
    case(f"sort-{label}", (lambda d: lambda l, x: x.sort(dim=d))(dim), A234)
    case(f"sort_desc-{label}", (lambda d: lambda l, x: x.sort(dim=d, descending=True))(dim), A234)
    case(f"topk-{label}", (lambda d: lambda l, x: x.topk(2, dim=d))(dim), A234)
    case(f"topk_smallest-{label}", (lambda d: lambda l, x: x.topk(2, dim=d, largest=False))(dim), A234)
    case(f"torch_sort-{label}", (lambda d: lambda l, x: l.sort(x, d))(dim), A234)
    case(f"torch_topk-{label}", (lambda d: lambda l, x: l.topk(x, 1, d))(dim), A234)
case("topk_1d", lambda l, x: x.topk(3), A5)
case("sort_1d_values", lambda l, x: x.sort().values, A5)
case("kthvalue_1d", lambda l, x: x.kthvalue(3), A5)
case("median_even", lambda l, x: x.median(dim=1), ((3, 4), "any"))
case("gather", lambda l, x, i: x.gather(1, i), A34, ((3, 5), "idx4"))
case("gather_dim0", lambda l, x, i: l.gather(x, 0, i), A34, ((2, 4), "idx3"))
case("index_select", lambda l, x, i: x.index_select(1, i), A34, ((5,), "idx4"))
case("scatter", lambda l, x, i, s: x.scatter(1, i, s), A34, ((3, 2), "idx4"), ((3, 3), "any"), grad=False)
case("scatter_unique", lambda l, x, s: x.scatter(1, l.tensor([[0, 2], [1, 3], [3, 0]]), s), A34, ((3, 2), "any"))
case("scatter_value", lambda l, x: x.scatter(0, l.tensor([[1, 0, 2, 1]]), value=-1.0), A34)
case("scatter_add", lambda l, x, i, s: x.scatter_add(1, i, s), A34, ((3, 5), "idx4"), ((3, 5), "any"))
case("torch_scatter_add", lambda l, x, i, s: l.scatter_add(x, 0, i, s), A34, ((2, 4), "idx3"), ((2, 4), "any"))
case("index_add", lambda l, x, s: x.index_add(0, l.tensor([0, 2, 0]), s), A34, ((3, 4), "any"))
case("index_add_alpha", lambda l, x, s: x.index_add(1, l.tensor([3, 1]), s, alpha=2.0), A34, ((3, 2), "any"))
case("masked_select", lambda l, x: x.masked_select(x > 0), A34)
case("masked_select_bcast", lambda l, x: l.masked_select(x, l.tensor([True, False, True, False])), A34)
case("argwhere", lambda l, x: (x > 0).argwhere(), A34, grad=False)
case("unique", lambda l, x: l.unique((x * 2).round()), A34, grad=False)
case("unique_inverse_counts", lambda l, x: (x * 2).round().unique(return_inverse=True, return_counts=True), A34,
     grad=False)
case("einsum_matmul", lambda l, a, b: l.einsum("ij,jk->ik", a, b), A34, ((4, 2), "any"))
case("einsum_batched", lambda l, a, b: l.einsum("bij,bkj->bik", a, b), A234, ((2, 5, 4), "any"))
case("einsum_sum_out", lambda l, a, b: l.einsum("ij,k->i", a, b), A34, A5)
case("einsum_outer", lambda l, a, b: l.einsum("i,j->ij", a, b), A5, ((3,), "any"))
case("einsum_transpose", lambda l, a: l.einsum("ijk->kji", a), A234)
case("einsum_trace_free", lambda l, a, b, c: l.einsum("ij,jk,kl->il", a, b, c), A34, ((4, 2), "any"), ((2, 3), "any"))
case("take_along_dim", lambda l, x: l.take_along_dim(x, x.argsort(1), 1), A34)

# ---- shapes and movement
SHAPE_CASES = {
    "tril": (lambda l, x: x.tril(), A34), "triu": (lambda l, x: x.triu(), A34),
    "tril_k1": (lambda l, x: x.tril(1), A34), "triu_km1": (lambda l, x: x.triu(-1), A34),
    "tril_batched": (lambda l, x: x.tril(), A234), "torch_triu": (lambda l, x: l.triu(x, 1), A34),
    "flip": (lambda l, x: x.flip(0), A234), "flip_dims": (lambda l, x: x.flip((0, 2)), A234),
    "torch_flip": (lambda l, x: l.flip(x, [1]), A234), "fliplr": (lambda l, x: x.fliplr(), A34),
    "roll": (lambda l, x: x.roll(1, 1), A234), "roll_neg": (lambda l, x: x.roll(-2, -1), A234),
    "roll_multi": (lambda l, x: x.roll((1, 2), (0, 2)), A234), "roll_flat": (lambda l, x: x.roll(3), A34),
    "diag_2d": (lambda l, x: x.diag(), A34), "diag_2d_off": (lambda l, x: x.diag(1), A34),
    "diag_2d_neg": (lambda l, x: x.diag(-1), A34), "diag_1d": (lambda l, x: x.diag(), A5),
    "diag_1d_off": (lambda l, x: l.diag(x, 1), A5), "diagonal": (lambda l, x: x.diagonal(), A34),
    "diagonal_3d": (lambda l, x: x.diagonal(0, 1, 2), A234), "diagonal_off": (lambda l, x: x.diagonal(1, -1, 0), A234),
    "diag_embed": (lambda l, x: x.diag_embed(), A34),
    "unfold": (lambda l, x: x.unfold(1, 2, 1), A34), "unfold_step": (lambda l, x: x.unfold(2, 2, 2), A234),
    "unfold_1d": (lambda l, x: x.unfold(0, 3, 1), A5),
    "unflatten": (lambda l, x: x.unflatten(1, (2, 2)), A34), "unflatten_neg": (lambda l, x: x.unflatten(-1, (2, -1)), A234),
    "repeat_interleave": (lambda l, x: x.repeat_interleave(2), A34),
    "repeat_interleave_dim": (lambda l, x: x.repeat_interleave(3, dim=1), A34),
    "repeat_interleave_counts": (lambda l, x: x.repeat_interleave(l.tensor([1, 0, 2]), dim=0), A34),
    "repeat": (lambda l, x: x.repeat(2, 1, 3), A34), "tile": (lambda l, x: x.tile((2,)), A34),
    "narrow": (lambda l, x: x.narrow(1, 1, 2), A34), "movedim": (lambda l, x: x.movedim(0, -1), A234),
    "movedim_multi": (lambda l, x: x.movedim((0, 1), (2, 0)), A234), "swapaxes": (lambda l, x: x.swapaxes(0, 2), A234),
    "transpose": (lambda l, x: x.transpose(-1, -2), A234), "t": (lambda l, x: x.t(), A34),
    "T": (lambda l, x: x.T, A34), "mT_like": (lambda l, x: l.transpose(x, 0, 1), A34),
    "permute": (lambda l, x: x.permute(2, 0, 1), A234), "view_neg": (lambda l, x: x.view(4, -1), A234),
    "view_as": (lambda l, x: x.view_as(x.reshape(6, 4)), A234), "flatten": (lambda l, x: x.flatten(1), A234),
    "flatten_0d": (lambda l, x: x.flatten(), A0), "squeeze_dims": (lambda l, x: x.reshape(1, 12, 1).squeeze((0, 2)), A34),
    "squeeze_not_one": (lambda l, x: x.squeeze(0), A34), "unsqueeze": (lambda l, x: x.unsqueeze(-1), A34),
    "expand": (lambda l, x: x.reshape(3, 1, 4).expand(3, 2, 4), A34), "expand_neg": (lambda l, x: x.unsqueeze(0).expand(2, -1, -1), A34),
    "chunk": (lambda l, x: x.chunk(2, 1), A34), "split": (lambda l, x: x.split(2, 0), ((5, 2), "any")),
    "split_sizes": (lambda l, x: x.split([1, 3], 1), A34), "unbind": (lambda l, x: x.unbind(1), A34),
    "cat": (lambda l, x: l.cat([x, x * 2], 1), A34), "stack": (lambda l, x: l.stack([x, -x], 0), A34),
    "getitem_slice": (lambda l, x: x[1:, ::2], A34), "getitem_neg_step_free": (lambda l, x: x[..., -1], A234),
    "getitem_mask": (lambda l, x: x[x > 0], A34), "getitem_index_list": (lambda l, x: x[[0, 2, 0]], A34),
    "getitem_none": (lambda l, x: x[None, :, 1], A34), "getitem_tensor_idx": (lambda l, x: x[l.tensor([2, 0])], A34),
    "clone": (lambda l, x: x.clone(), A34), "contiguous": (lambda l, x: x.permute(1, 0).contiguous(), A34),
    "masked_fill": (lambda l, x: x.masked_fill(x < 0, 0.0), A34),
    "masked_fill_inf_softmax": (lambda l, x: x.masked_fill(l.ones(3, 4).triu(1).bool(), float("-inf")).softmax(-1), A34),
    "torch_masked_fill": (lambda l, x: l.masked_fill(x, x > 0, -1.0), A34),
    "outer": (lambda l, x: l.outer(x, x), A5), "dot": (lambda l, x: x.dot(x), A5),
    "matmul_method": (lambda l, x: x.matmul(x.t()), A34), "mm": (lambda l, x: l.mm(x, x.t()), A34),
    "bmm": (lambda l, x: x.bmm(x.transpose(1, 2)), A234), "mv": (lambda l, x: x.mv(x[0]), ((4, 4), "any")),
    "softmax_fn": (lambda l, x: l.softmax(x, dim=0), A34), "cumsum_fn": (lambda l, x: l.cumsum(x, 1), A34),
    "type_as": ("torch", lambda l, x: x.float().type_as(x), A34), "to_dtype": ("torch", lambda l, x: x.to(l.float32).to(l.float64), A34),
    "double": ("torch", lambda l, x: x.float().double(), A34), "detach_mul": ("torch", lambda l, x: x * x.detach(), A34),
    "new_zeros": (lambda l, x: x + x.new_zeros(3, 4), A34), "new_ones": (lambda l, x: x * x.new_ones((3, 4)), A34),
    "new_full": (lambda l, x: x - x.new_full((4,), 2.0), A34), "new_tensor": (lambda l, x: x * x.new_tensor([1.0, 2.0, 3.0, 4.0]), A34),
    "zeros_like": (lambda l, x: x + l.zeros_like(x), A34), "full_like": (lambda l, x: x * l.full_like(x, 3.0), A34),
    "broadcast_to": (lambda l, x: l.broadcast_to(x, (2, 3, 4)), A34),
    "abs_builtin": (lambda l, x: abs(x), A34), "reshape_0d": (lambda l, x: x.reshape(1, 1), A0),
}
for name, entry in SHAPE_CASES.items():
    grad, (fn, spec) = (entry[0], entry[1:]) if entry[0] == "torch" else (True, entry)
    case(name, fn, spec, grad=grad)

# ---- factories (no gradient)
for name, fn in {
    "arange": lambda l, x: l.arange(5), "arange_float": lambda l, x: l.arange(0, 1, 0.25, dtype=l.float64),
    "arange_long": lambda l, x: l.arange(1.0, 4.0, dtype=l.long), "linspace": lambda l, x: l.linspace(0, 1, 5, dtype=l.float64),
    "linspace_default": lambda l, x: l.linspace(-1, 1, 7), "full_int": lambda l, x: l.full((2, 2), 3),
    "full_float": lambda l, x: l.full((2,), 1.5), "full_bool": lambda l, x: l.full((2,), True),
    "full_dtype": lambda l, x: l.full((2, 3), 7, dtype=l.float64), "zeros_long": lambda l, x: l.zeros(2, 3, dtype=l.long),
    "ones_tuple": lambda l, x: l.ones((2, 3), dtype=l.float64), "eye": lambda l, x: l.eye(3, dtype=l.float64),
    "tril_ones": lambda l, x: l.tril(l.ones(3, 3)), "empty_shape": lambda l, x: l.empty(2, 3).shape,
    "tensor_long": lambda l, x: l.tensor([1, 2, 3], dtype=l.long), "from_numpy": lambda l, x: l.from_numpy(np.arange(3.0)),
    "dtype_alias": lambda l, x: l.tensor([1.5]).to(l.float64).dtype == l.float64,
    "is_tensor": lambda l, x: l.is_tensor(x), "numel": lambda l, x: l.numel(x),
    "size_dim": lambda l, x: x.size(1), "shape_tuple": lambda l, x: tuple(x.shape),
    "item": lambda l, x: x[0, 0].item(), "tolist": lambda l, x: x.tolist(),
    "is_floating_point": lambda l, x: x.is_floating_point(), "element_size": lambda l, x: x.element_size(),
    "len": lambda l, x: len(x), "dim": lambda l, x: x.dim(), "nelement": lambda l, x: x.nelement(),
}.items():
    case(name, fn, A34, grad=False)

# ---- the wrong cases of issue 20: zero-size reductions, size-0 squeeze, var over one element,
# the gradient of 0 ** x, sum(0) of a 0-d tensor
Z = ((0, 3), "any")
for name, fn in {
    "zero_size_sum": lambda l, x: x.sum(0), "zero_size_mean": lambda l, x: x.mean(0),
    "zero_size_mean_all": lambda l, x: x.mean(), "zero_size_var": lambda l, x: x.var(0),
    "zero_size_std": lambda l, x: x.std(0), "zero_size_sum_other": lambda l, x: x.sum(1),
    "zero_size_prod": lambda l, x: x.prod(0), "squeeze_size0": lambda l, x: x.squeeze(0),
    "squeeze_size0_all": lambda l, x: x.reshape(0, 1, 3).squeeze(), "zero_size_cat": lambda l, x: l.cat([x, x], 0),
}.items():
    case(name, fn, Z)
case("var_size1_axis", lambda l, x: x.var(1), ((3, 1), "any"), grad="torch")
case("std_size1_axis", lambda l, x: x.std(0), ((1, 3), "any"), grad="torch")
case("var_size1_biased", lambda l, x: x.var(1, unbiased=False), ((3, 1), "any"))
case("zero_pow_x", lambda l, x: 0.0 ** x, ((2, 3), "any"), grad="torch")
case("zero_pow_x_pos", lambda l, x: 0.0 ** x, ((2, 3), "pos"))
case("zero_base_tensor", lambda l, a, b: (a * 0) ** b, ((2, 3), "pos"), ((2, 3), "pos"), grad="torch")
case("pow_zero_exponent", lambda l, a, b: a ** (b * 0), ((2, 3), "any"), ((2, 3), "any"), grad="torch")
case("sum0_of_0d", lambda l, x: x.sum(0), A0)
case("sum_neg1_of_0d", lambda l, x: x.mean(-1), A0)
case("max0_of_0d", lambda l, x: x.max(0), A0)
case("squeeze_0d", lambda l, x: x.squeeze(), A0)
case("unsqueeze_0d", lambda l, x: x.unsqueeze(0), A0)


@pytest.mark.filterwarnings("ignore:.*degrees of freedom is <= 0:UserWarning")
@pytest.mark.parametrize("fn,specs,grad,tol", CASES)
def test_matches_pytorch(fn, specs, grad, tol):
    with np.errstate(all="ignore"):
        run_case(fn, specs, grad, tol)


def test_the_table_is_large():
    assert len(CASES) >= 300
