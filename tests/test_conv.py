"""Convolution, pooling and padding ops and layers against PyTorch, and gradcheck in float64."""
import numpy as np
import pytest
import torch
from kernel_checks import assert_close_to_torch

import tinygrad_seq as tgs
from tinygrad_seq import Tensor, gradcheck, nn
from tinygrad_seq.backend import BACKENDS, unavailable_reason
from tinygrad_seq.nn import functional_conv as F

RNG = np.random.default_rng(0)
TF = torch.nn.functional
CPU_BACKENDS = [name for name, (_, devices) in BACKENDS.items() if "cpu" in devices]


def pair(shape, dtype=np.float32):
    """The same random data as a tinygrad_seq leaf and a torch leaf."""
    data = RNG.standard_normal(shape).astype(dtype)
    return Tensor(data, requires_grad=True, dtype=dtype), torch.tensor(data, requires_grad=True)


def close(ours, theirs, tol=2e-5):
    assert_close_to_torch(ours, theirs, tol)


def backward_both(y, ty):
    g = RNG.standard_normal(y.shape).astype(np.float32)
    y.backward(Tensor(g))
    ty.backward(torch.tensor(g))


def random_cases(count, seed, draw):
    """`count` cases drawn by draw(rng); it returns None for a window that does not fit its
    padded input, and the case is drawn again."""
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        case = draw(rng)
        if case is not None:
            cases.append(case)
    return cases


def random_ints(rng, low, high, dims):
    return tuple(int(v) for v in rng.integers(low, high, dims))


def random_conv_cases(dims, count, seed):
    """Random shapes/strides/paddings/dilations, many of them odd sizes the windows don't tile."""
    def draw(rng):
        k, s, d, p, size = (random_ints(rng, low, high, dims)
                            for low, high in ((1, 5), (1, 4), (1, 3), (0, 3), (3, 12)))
        if any(n + 2 * pp < dd * (kk - 1) + 1 for n, pp, dd, kk in zip(size, p, d, k)):
            return None
        groups = int(rng.choice([1, 1, 2]))
        cin, cout = groups * int(rng.integers(1, 4)), groups * int(rng.integers(1, 4))
        return dict(n=int(rng.integers(1, 4)), cin=cin, cout=cout, size=size, k=k, s=s, p=p, d=d,
                    groups=groups, bias=bool(rng.random() < 0.7))
    return random_cases(count, seed, draw)


# ---------------------------------------------------------------------------- convolution
def check_conv_against_torch(case, conv, torch_conv):
    """Our `conv` and PyTorch's `torch_conv` on the same leaves of a random case: the outputs,
    then the input, weight and bias gradients agree.  Returns our output."""
    x, tx = pair((case["n"], case["cin"]) + case["size"])
    w, tw = pair((case["cout"], case["cin"] // case["groups"]) + case["k"])
    b, tb = pair((case["cout"],)) if case["bias"] else (None, None)
    args = dict(stride=case["s"], padding=case["p"], dilation=case["d"], groups=case["groups"])
    y, ty = conv(x, w, b, **args), torch_conv(tx, tw, tb, **args)
    close(y, ty)
    backward_both(y, ty)
    close(x.grad, tx.grad)
    close(w.grad, tw.grad, 1e-4)
    if b is not None:
        close(b.grad, tb.grad, 1e-4)
    return y


@pytest.mark.parametrize("case", random_conv_cases(2, 14, seed=1))
def test_conv2d_matches_torch(case):
    y = check_conv_against_torch(case, F.conv2d, TF.conv2d)
    # output size: floor((n + 2p - d*(f-1) - 1) / s) + 1
    expected = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                     for n, p, d, k, s in zip(case["size"], case["p"], case["d"], case["k"], case["s"]))
    assert y.shape == (case["n"], case["cout"]) + expected


@pytest.mark.parametrize("case", random_conv_cases(1, 8, seed=2))
def test_conv1d_matches_torch(case):
    check_conv_against_torch(case, F.conv1d, TF.conv1d)


@pytest.mark.parametrize("dims,k,d", [(2, (4, 3), (1, 1)), (2, (2, 2), (2, 1)), (2, (4, 2), (1, 3)),
                                      (1, (4,), (1,)), (1, (3,), (2,)), (1, (2,), (3,))])
@pytest.mark.filterwarnings("ignore:Using padding=.same.")
def test_same_and_valid_padding_match_torch(dims, k, d):
    """'same' keeps the size; for an even (dilated) kernel the odd padding goes at the end, as in PyTorch."""
    size = (7, 6)[:dims]
    x, tx = pair((2, 3) + size)
    w, tw = pair((4, 3) + k)
    conv, tconv = (F.conv2d, TF.conv2d) if dims == 2 else (F.conv1d, TF.conv1d)
    for padding in ("same", "valid"):
        x.grad, w.grad, tx.grad, tw.grad = None, None, None, None
        y, ty = conv(x, w, None, 1, padding, d), tconv(tx, tw, None, 1, padding, d)
        if padding == "same":
            assert y.shape[2:] == size
        close(y, ty)
        backward_both(y, ty)
        close(x.grad, tx.grad)
        close(w.grad, tw.grad, 1e-4)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_conv_padding_modes_match_torch(mode):
    x, tx = pair((2, 2, 6, 5))
    ours = nn.Conv2d(2, 3, 3, padding=(2, 1), padding_mode=mode)
    theirs = torch.nn.Conv2d(2, 3, 3, padding=(2, 1), padding_mode=mode)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    y, ty = ours(x), theirs(tx)
    close(y, ty)
    backward_both(y, ty)
    close(x.grad, tx.grad)
    close(ours.weight.grad, theirs.weight.grad, 1e-4)


def test_conv_layers_have_torch_names_shapes_and_init():
    tgs.manual_seed(0)
    for ours, theirs in [(nn.Conv2d(3, 8, (5, 3), stride=2, padding=1, groups=1), torch.nn.Conv2d(3, 8, (5, 3), 2, 1)),
                         (nn.Conv1d(4, 6, 3, bias=False, groups=2), torch.nn.Conv1d(4, 6, 3, bias=False, groups=2))]:
        mine = {k: v.shape for k, v in ours.state_dict().items()}
        assert mine == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
        # PyTorch's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        fan_in = ours.weight.shape[1] * int(np.prod(ours.weight.shape[2:]))
        w = ours.weight.numpy()
        assert np.abs(w).max() <= 1 / np.sqrt(fan_in) and np.abs(w).max() > 0.5 / np.sqrt(fan_in)
        assert ours.weight.dtype == np.float32
    assert "kernel_size=(5, 3), stride=(2, 2), padding=(1, 1)" in repr(nn.Conv2d(3, 8, (5, 3), stride=2, padding=1))


def test_conv2d_layer_matches_torch_after_loading_its_weights():
    ours, theirs = nn.Conv2d(3, 5, 3, stride=(2, 1), padding=(1, 2), dilation=(1, 2)), \
        torch.nn.Conv2d(3, 5, 3, stride=(2, 1), padding=(1, 2), dilation=(1, 2))
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x, tx = pair((2, 3, 9, 8))
    y, ty = ours(x), theirs(tx)
    close(y, ty)
    backward_both(y, ty)
    close(ours.weight.grad, theirs.weight.grad, 1e-4)
    close(ours.bias.grad, theirs.bias.grad, 1e-4)


def test_unbatched_inputs():
    x, tx = pair((3, 8, 7))
    w, tw = pair((4, 3, 3, 3))
    close(F.conv2d(x, w, padding=1), TF.conv2d(tx, tw, padding=1))
    close(F.max_pool2d(x, 2), TF.max_pool2d(tx, 2))
    s, ts = pair((3, 10))
    w1, tw1 = pair((2, 3, 4))
    close(F.conv1d(s, w1), TF.conv1d(ts, tw1))
    close(F.avg_pool1d(s, 3), TF.avg_pool1d(ts, 3))


# ---------------------------------------------------------------------------- pooling
def random_pool_cases(dims, count, seed):
    def draw(rng):
        k, s = random_ints(rng, 1, 5, dims), random_ints(rng, 1, 4, dims)
        p = tuple(int(rng.integers(0, kk // 2 + 1)) for kk in k)
        size = random_ints(rng, 3, 11, dims)
        if any(n + 2 * pp < kk for n, pp, kk in zip(size, p, k)):
            return None
        return dict(shape=(int(rng.integers(1, 4)), int(rng.integers(1, 4))) + size, k=k, s=s, p=p)
    return random_cases(count, seed, draw)


@pytest.mark.parametrize("case", random_pool_cases(2, 10, seed=3) + random_pool_cases(1, 5, seed=4))
def test_max_pool_matches_torch(case):
    dims = len(case["k"])
    ours, theirs = (F.max_pool2d, TF.max_pool2d) if dims == 2 else (F.max_pool1d, TF.max_pool1d)
    x, tx = pair(case["shape"])
    (y, idx), (ty, tidx) = (f(v, case["k"], case["s"], case["p"], return_indices=True)
                            for f, v in ((ours, x), (theirs, tx)))
    close(y, ty)
    np.testing.assert_array_equal(idx.numpy(), tidx.numpy())
    assert not idx.requires_grad
    backward_both(y, ty)
    close(x.grad, tx.grad)


def test_max_pool_ties_route_the_gradient_like_torch():
    """Windows that overlap share inputs; with ties the first maximum in the window takes the gradient."""
    data = np.array([[[[1, 1, 0, 2], [1, 1, 2, 2], [0, 3, 3, 0], [0, 3, 3, 1]]]], dtype=np.float32)
    x, tx = Tensor(data, requires_grad=True), torch.tensor(data, requires_grad=True)
    y, ty = F.max_pool2d(x, 2, 1), TF.max_pool2d(tx, 2, 1)
    backward_both(y, ty)
    close(x.grad, tx.grad)


@pytest.mark.parametrize("case", random_pool_cases(2, 8, seed=5) + random_pool_cases(1, 4, seed=6))
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool_matches_torch(case, count_include_pad):
    dims = len(case["k"])
    ours, theirs = (F.avg_pool2d, TF.avg_pool2d) if dims == 2 else (F.avg_pool1d, TF.avg_pool1d)
    x, tx = pair(case["shape"])
    args = (case["k"], case["s"], case["p"])
    y = ours(x, *args, count_include_pad=count_include_pad)
    ty = theirs(tx, *args, count_include_pad=count_include_pad)
    close(y, ty)
    backward_both(y, ty)
    close(x.grad, tx.grad)


def test_avg_pool_divisor_override_matches_torch():
    x, tx = pair((2, 3, 7, 6))
    y, ty = F.avg_pool2d(x, 3, 2, 1, divisor_override=4), TF.avg_pool2d(tx, 3, 2, 1, divisor_override=4)
    close(y, ty)
    backward_both(y, ty)
    close(x.grad, tx.grad)


@pytest.mark.parametrize("size,out", [((12,), (1,)), ((10,), (4,)), ((9, 7), (3, 2)), ((8, 8), (1, 1)),
                                      ((7, 6), (4, 5))])
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_adaptive_pools_match_torch(size, out, kind):
    dims = len(size)
    x, tx = pair((2, 3) + size)
    ours = getattr(nn, f"Adaptive{kind.capitalize()}Pool{dims}d")(out if dims == 2 else out[0])
    theirs = getattr(torch.nn, f"Adaptive{kind.capitalize()}Pool{dims}d")(out if dims == 2 else out[0])
    y, ty = ours(x), theirs(tx)
    close(y, ty)
    backward_both(y, ty)
    close(x.grad, tx.grad)


def test_global_max_pool_is_max_over_time():
    x, tx = pair((3, 5, 11))
    y = nn.GlobalMaxPool1d()(x)
    ty = tx.max(dim=2).values
    assert y.shape == (3, 5)
    close(y, ty)
    backward_both(y, ty)
    close(x.grad, tx.grad)


def test_pool_layers_match_functional_forms():
    x, tx = pair((2, 3, 9, 9))
    close(nn.MaxPool2d(3, 2, 1)(x), torch.nn.MaxPool2d(3, 2, 1)(tx))
    close(nn.AvgPool2d(2)(x), torch.nn.AvgPool2d(2)(tx))
    s, ts = pair((2, 3, 9))
    close(nn.MaxPool1d(2)(s), torch.nn.MaxPool1d(2)(ts))
    close(nn.AvgPool1d(3, 2, 1, count_include_pad=False)(s), torch.nn.AvgPool1d(3, 2, 1, count_include_pad=False)(ts))


# ---------------------------------------------------------------------------- padding
@pytest.mark.parametrize("widths,mode", [((1, 2), "constant"), ((1, 0, 2, 3), "constant"), ((-1, 2, 0, -2), "constant"),
                                         ((2, 1, 1, 2), "reflect"), ((3, 1, 0, 2), "replicate"),
                                         ((2, 3, 1, 1), "circular")])
def test_pad_matches_torch(widths, mode):
    x, tx = pair((2, 3, 5, 6))
    y, ty = F.pad(x, widths, mode), TF.pad(tx, widths, mode)
    close(y, ty)
    backward_both(y, ty)
    close(x.grad, tx.grad)
    if mode == "constant":
        close(F.pad(x, widths, value=2.5), TF.pad(tx, widths, value=2.5))


# ---------------------------------------------------------------------------- gradcheck (float64)
def small(*shape):
    return Tensor(RNG.standard_normal(shape), dtype=np.float64)


def test_gradcheck_conv2d_strided_padded_dilated():
    assert gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=(1, 2), dilation=(1, 2)),
                     [small(2, 2, 5, 6), small(3, 2, 2, 3), small(3)])


def test_gradcheck_conv2d_groups_and_same_even_kernel():
    assert gradcheck(lambda x, w: F.conv2d(x, w, padding="same", groups=2), [small(1, 4, 4, 5), small(2, 2, 2, 2)])


def test_gradcheck_conv1d_same_and_padding_mode():
    assert gradcheck(lambda x, w, b: F.conv1d(x, w, b, padding="same", dilation=2), [small(2, 2, 7), small(3, 2, 4), small(3)])
    conv = nn.Conv1d(2, 2, 3, padding=2, padding_mode="reflect").double()
    assert gradcheck(lambda x: conv(x), [small(1, 2, 6)])


def test_gradcheck_pools():
    assert gradcheck(lambda x: F.max_pool2d(x, 3, 2, 1), [small(2, 2, 6, 5)])
    assert gradcheck(lambda x: F.avg_pool2d(x, (3, 2), (1, 2), (1, 1), count_include_pad=False), [small(1, 2, 5, 5)])
    assert gradcheck(lambda x: F.max_pool1d(x, 2), [small(2, 3, 7)])
    assert gradcheck(lambda x: F.adaptive_avg_pool2d(x, (2, 3)), [small(1, 2, 5, 7)])


def test_gradcheck_pad():
    assert gradcheck(lambda x: F.pad(x, (2, 1, 1, 2), mode="reflect"), [small(1, 2, 4, 4)])
    assert gradcheck(lambda x: F.pad(x, (-1, 2), value=1.0), [small(2, 5)])


# ---------------------------------------------------------------------------- backends and errors
@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_every_cpu_backend_agrees_with_torch(name):
    if unavailable_reason(name):
        pytest.skip(f"backend {name} unavailable: {unavailable_reason(name)}")
    x, tx = pair((3, 2, 11, 10))
    w, tw = pair((4, 2, 3, 3))
    b, tb = pair((4,))
    with tgs.backend(name):
        y = F.avg_pool2d(F.max_pool2d(F.conv2d(x, w, b, stride=2, padding=1).relu(), 2, 1, 1), 2)
    ty = TF.avg_pool2d(TF.max_pool2d(TF.conv2d(tx, tw, tb, stride=2, padding=1).relu(), 2, 1, 1), 2)
    close(y, ty)
    with tgs.backend(name):
        backward_both(y, ty)
    close(x.grad, tx.grad)
    close(w.grad, tw.grad, 1e-4)


@pytest.mark.parametrize("name", CPU_BACKENDS)
@pytest.mark.parametrize("pool", [F.max_pool2d, F.avg_pool2d])
def test_pooling_an_empty_height_or_width_is_refused_on_every_backend(name, pool):
    # with padding, a window over a 0-row input has no real tap: the compiled kernels read past
    # the input there (garbage, or a crash), so the shared checks refuse it as PyTorch does
    if unavailable_reason(name):
        pytest.skip(f"backend {name} unavailable: {unavailable_reason(name)}")
    with tgs.backend(name):
        for shape in [(1, 1, 0, 3), (1, 1, 3, 0)]:
            with pytest.raises(ValueError, match="no rows or columns to pool"):
                pool(tgs.zeros(*shape), 2, padding=1)
        assert pool(tgs.zeros(0, 1, 3, 3), 2, padding=1).shape == (0, 1, 2, 2)  # an empty batch is fine


def test_bad_arguments_raise_one_line_errors():
    x = tgs.randn(1, 3, 4, 4)
    cases = [
        (lambda: F.conv2d(x, tgs.randn(2, 3, 6, 6)), ValueError, "larger than the padded input"),
        (lambda: F.conv2d(x, tgs.randn(2, 2, 3, 3)), ValueError, "channels"),
        (lambda: F.conv2d(x, tgs.randn(2, 3, 3, 3), stride=2, padding="same"), ValueError, "strided"),
        (lambda: F.conv2d(x, tgs.randn(2, 3, 3, 3), padding="full"), ValueError, "'valid' or 'same'"),
        (lambda: F.conv2d(tgs.randn(4, 4), tgs.randn(2, 3, 3, 3)), ValueError, "expected input"),
        (lambda: F.conv2d(x.double(), tgs.randn(2, 3, 3, 3)), TypeError, "dtype"),
        (lambda: F.conv2d(x, tgs.randn(2, 3, 3, 3), tgs.randn(3)), ValueError, "bias"),
        (lambda: F.max_pool2d(x, 2, padding=2), ValueError, "half the kernel"),
        (lambda: F.max_pool2d(x, 2, ceil_mode=True), ValueError, "ceil_mode"),
        (lambda: nn.Conv2d(3, 4, 3, stride=2, padding="same"), ValueError, "strided"),
        (lambda: nn.Conv2d(3, 4, 3, groups=2), ValueError, "divisible"),
        (lambda: nn.Conv1d(3, 4, 3, padding_mode="mirror"), ValueError, "padding_mode"),
        (lambda: F.pad(x, (1, 2, 3)), ValueError, "even number"),
        (lambda: F.pad(x, (4, 0), mode="reflect"), ValueError, "smaller than"),
    ]
    for call, error, words in cases:
        with pytest.raises(error, match=words) as info:
            call()
        assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------- fixed filters and augmentation
def test_apply_filter_is_cross_correlation_with_each_named_filter():
    from scipy.signal import correlate2d

    from tinygrad_seq import vision
    image = RNG.random((9, 11))
    for name in vision.FILTERS:
        kernel = vision.get_filter(name)
        np.testing.assert_allclose(vision.apply_filter(image, name), correlate2d(image, kernel, mode="same"), atol=1e-12)
        np.testing.assert_allclose(vision.apply_filter(image, kernel, padding="valid"),
                                   correlate2d(image, kernel, mode="valid"), atol=1e-12)
    np.testing.assert_allclose(vision.apply_filter(image, "identity"), image)
    # channels are filtered independently, batch and channel dimensions kept
    batch = RNG.random((2, 3, 6, 7))
    out = vision.apply_filter(batch, "blur")
    assert out.shape == batch.shape
    np.testing.assert_allclose(out[1, 2], correlate2d(batch[1, 2], vision.get_filter("blur"), mode="same"), atol=1e-12)


def test_sobel_finds_vertical_and_horizontal_edges():
    from tinygrad_seq import vision
    step = np.zeros((6, 8))
    step[:, 4:] = 1.0                     # dark left half, bright right half: one vertical edge
    gx = vision.apply_filter(step, "sobel_vertical", padding="valid")
    gy = vision.apply_filter(step, "sobel_horizontal", padding="valid")
    np.testing.assert_array_equal(gx[0], [0, 0, -4, -4, 0, 0])   # left minus right, only at the edge
    assert np.all(gx == gx[0]) and np.all(gy == 0)
    assert np.allclose(vision.apply_filter(step.T, "sobel_horizontal", padding="valid"), gx.T)
    magnitude = vision.edge_magnitude(step)
    assert magnitude[:, 3:5].min() == 4 and magnitude[:, :2].max() == 0 and magnitude[:, 6:].max() == 0
    with pytest.raises(ValueError, match="unknown filter"):
        vision.apply_filter(step, "emboss")


def test_random_shift_moves_each_image_within_range():
    from tinygrad_seq import vision
    images = RNG.random((40, 1, 8, 8)) + 1.0   # no zeros inside, so uncovered pixels are the only zeros
    tgs.manual_seed(3)
    shifted = vision.random_shift(images, max_shift=2)
    assert shifted.shape == images.shape
    seen = set()
    for original, moved in zip(images[:, 0], shifted[:, 0]):
        padded = np.pad(original, 2)
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if np.array_equal(padded[2 - dy:10 - dy, 2 - dx:10 - dx], moved)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 10                  # many different shifts, both directions
    tgs.manual_seed(3)
    np.testing.assert_array_equal(vision.random_shift(images, max_shift=2), shifted)   # seeded


def test_random_crop_cuts_windows_of_the_padded_image():
    from tinygrad_seq import vision
    images = np.arange(3 * 2 * 5 * 5, dtype=np.float64).reshape(3, 2, 5, 5)
    crops = vision.random_crop(images, size=(3, 4), padding=1, rng=np.random.default_rng(0))
    assert crops.shape == (3, 2, 3, 4)
    for image, crop in zip(images, crops):
        padded = np.pad(image, ((0, 0), (1, 1), (1, 1)))
        assert any(np.array_equal(padded[:, t:t + 3, l:l + 4], crop) for t in range(5) for l in range(4))
    with pytest.raises(ValueError, match="does not fit"):
        vision.random_crop(images, size=8)
