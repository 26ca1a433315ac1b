"""Images: fixed filters that show what a convolution computes, and random shift/crop augmentation.

A convolutional layer LEARNS its filters; here the filter is given, so you can see what one
filter does.  A vertical-edge detector such as Sobel's

    [[1, 0, -1],
     [2, 0, -2],
     [1, 0, -1]]

responds where brightness changes from left to right and gives 0 on flat regions; its
transpose finds horizontal edges.  `apply_filter` runs the same conv2d op a Conv2d layer
uses, with the filter fixed, channel by channel.

Augmentation makes new training images from old ones by moving them a few pixels, so the
model cannot rely on exact positions (a regulariser, like dropout).
"""
import numpy as np

from .random import generator
from .tensor import Tensor, no_grad

FILTERS = {
    "identity": [[0, 0, 0], [0, 1, 0], [0, 0, 0]],
    # vertical edges: left minus right, the centre row weighted twice (Sobel)
    "sobel_vertical": [[1, 0, -1], [2, 0, -2], [1, 0, -1]],
    # horizontal edges: top minus bottom
    "sobel_horizontal": [[1, 2, 1], [0, 0, 0], [-1, -2, -1]],
    # the plain vertical-edge detector of the convolution lectures (Prewitt's)
    "vertical": [[1, 0, -1], [1, 0, -1], [1, 0, -1]],
    "horizontal": [[1, 1, 1], [0, 0, 0], [-1, -1, -1]],
    # each pixel becomes the mean of its 3x3 neighbourhood
    "blur": (np.ones((3, 3)) / 9).tolist(),
    # a Gaussian-weighted mean: smoother, fewer blocky artefacts than the box blur
    "gaussian_blur": (np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16).tolist(),
    # identity plus (identity - neighbours): boosts what differs from its surroundings
    "sharpen": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
}


def get_filter(name):
    """The named 3x3 filter as a float64 array (see FILTERS for the names)."""
    if name not in FILTERS:
        raise ValueError(f"unknown filter {name!r}: choose one of {', '.join(FILTERS)}")
    return np.array(FILTERS[name], dtype=np.float64)


def apply_filter(image, kernel, padding="same", stride=1, padding_mode="zeros"):
    """Cross-correlate every channel of `image` with one fixed 2-D `kernel` (a name or an array):

        out[y, x] = sum_{i,j} kernel[i, j] * image_padded[y*stride + i, x*stride + j]

    image: (H, W), (C, H, W) or (N, C, H, W), an array or Tensor; padding: an int, 'same'
    (keeps H and W) or 'valid'; padding_mode 'zeros' treats the outside as black (so the border
    looks like an edge), 'replicate' or 'reflect' continue the image.  Returns a float64 NumPy
    array with the same leading dimensions."""
    from .nn.conv import convolution

    kernel = get_filter(kernel) if isinstance(kernel, str) else np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 2:
        raise ValueError(f"apply_filter: the kernel must be 2-D, got shape {kernel.shape}")
    pixels = image.numpy() if isinstance(image, Tensor) else np.asarray(image)
    if pixels.ndim not in (2, 3, 4):
        raise ValueError(f"apply_filter: image must be (H, W), (C, H, W) or (N, C, H, W), got shape {pixels.shape}")
    lead, (H, W) = pixels.shape[:-2], pixels.shape[-2:]
    # every channel is filtered on its own: fold channels into the batch, one input channel
    planes = Tensor(pixels.reshape(-1, 1, H, W), dtype=np.float64)
    with no_grad():
        out = convolution(planes, Tensor(kernel[None, None], dtype=np.float64), stride=stride, padding=padding,
                          padding_mode=padding_mode)
    return out.numpy().reshape(lead + out.shape[-2:])


def edge_magnitude(image, padding_mode="replicate"):
    """sqrt(Gx^2 + Gy^2) of the two Sobel responses: edge strength whatever its direction."""
    gx = apply_filter(image, "sobel_vertical", padding_mode=padding_mode)
    gy = apply_filter(image, "sobel_horizontal", padding_mode=padding_mode)
    return np.sqrt(gx * gx + gy * gy)


# ---------------------------------------------------------------------------- augmentation
def random_crop(images, size=None, padding=0, fill=0.0, rng=None):
    """For each image of a batch (N, ..., H, W): pad `padding` pixels of `fill` on every side,
    then cut out a random `size` (default (H, W)) window, as torchvision's RandomCrop.
    Draws from the engine's seeded generator unless `rng` is given."""
    batch = np.asarray(images)
    if batch.ndim < 3:
        raise ValueError(f"random_crop: expects a batch (N, ..., H, W), got shape {batch.shape}")
    rng = rng if rng is not None else generator()
    N, (H, W) = batch.shape[0], batch.shape[-2:]
    h, w = (H, W) if size is None else ((size, size) if isinstance(size, int) else tuple(size))
    Hp, Wp = H + 2 * padding, W + 2 * padding
    if h > Hp or w > Wp or min(h, w) < 1:
        raise ValueError(f"random_crop: a {h}x{w} crop does not fit a {Hp}x{Wp} padded image")
    planes = batch.reshape(N, -1, H, W)
    if padding:
        planes = np.pad(planes, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=fill)
    top = rng.integers(0, Hp - h + 1, size=N)
    left = rng.integers(0, Wp - w + 1, size=N)
    windows = np.lib.stride_tricks.sliding_window_view(planes, (h, w), axis=(2, 3))  # (N, C, Hp-h+1, Wp-w+1, h, w)
    crops = windows[np.arange(N), :, top, left]                                       # (N, C, h, w)
    return np.ascontiguousarray(crops).reshape(batch.shape[:-2] + (h, w))


def random_shift(images, max_shift=1, fill=0.0, rng=None):
    """Move each image of a batch (N, ..., H, W) by a random whole number of pixels in
    [-max_shift, max_shift] down and right (independently); uncovered pixels get `fill`.
    The same as a random crop of the original size from the image padded by max_shift."""
    return random_crop(images, None, max_shift, fill, rng)
