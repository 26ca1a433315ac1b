"""Edge maps: what one fixed 3x3 filter does to a photograph.

    python examples/edge_maps.py                 # writes edge_maps/*.png (or .pgm)
    python examples/edge_maps.py --out /tmp/maps --size 200

The photograph is scikit-learn's bundled `china.jpg` (no download), turned to grey; without
scikit-learn, or without Pillow to decode its JPEG, a drawn test scene (shapes, a ramp, stripes)
stands in for it.  Each
map is `tinygrad_seq.vision.apply_filter`, i.e. the conv2d op of a Conv2d layer with the
filter given instead of learned:
  sobel_vertical    bright where brightness changes from left to right (vertical edges)
  sobel_horizontal  the same for top to bottom (horizontal edges)
  magnitude         sqrt(Gx^2 + Gy^2): edges of any direction
  blur, sharpen     a local mean, and the image plus its difference from that mean
PNGs are written with matplotlib or Pillow, whichever is installed; with neither, the
maps are written as binary PGM images, which any image viewer opens.
"""
import argparse
import os

import numpy as np

from tinygrad_seq import vision


def grey_photo(size):
    """The bundled photo in grey, shrunk to `size` pixels wide by averaging blocks; the drawn
    scene when scikit-learn or Pillow (which reads the JPEG) is missing.  Returns (image, name)."""
    try:
        from sklearn.datasets import load_sample_image
        rgb = load_sample_image("china.jpg").astype(np.float64) / 255
    except ImportError:
        return test_scene(size), "a drawn test scene (scikit-learn or Pillow is not installed)"
    grey = rgb @ np.array([0.299, 0.587, 0.114])           # luma
    step = max(1, grey.shape[1] // size)
    h, w = grey.shape[0] // step * step, grey.shape[1] // step * step
    return grey[:h, :w].reshape(h // step, step, w // step, step).mean(axis=(1, 3)), "china.jpg"


def test_scene(size):
    """A grey picture with edges of every direction, drawn with NumPy: a left-to-right ramp, a
    bright disc, a dark square, a triangle and a patch of diagonal stripes; size x 3/4 size."""
    height = max(8, size * 3 // 4)
    y, x = np.mgrid[0:height, 0:size] / np.array([height, size]).reshape(2, 1, 1)
    image = 0.25 + 0.3 * x                                               # a gentle ramp: no edge
    image[(x - 0.25) ** 2 + ((y - 0.4) * height / size) ** 2 < 0.15 ** 2] = 0.95
    image[(x > 0.5) & (x < 0.7) & (y > 0.15) & (y < 0.45)] = 0.05
    image[(y > 0.6) & (y < 0.9) & (np.abs(x - 0.3) < (y - 0.6) * 0.6)] = 0.8
    stripes = (x > 0.75) & (x < 0.95) & (y > 0.55) & (y < 0.9)
    image[stripes] = 0.5 + 0.4 * np.sign(np.sin((x + y)[stripes] * 60))
    return image


def to_uint8(image, signed=False):
    """Scale a map to 0..255; signed maps put 0 at mid-grey so both edge polarities show."""
    if signed:
        scale = np.abs(image).max() or 1.0
        image = 0.5 + 0.5 * image / scale
    else:
        low, high = image.min(), image.max()
        image = (image - low) / ((high - low) or 1.0)
    return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)


def save_grey(path_stem, pixels):
    """Write an 8-bit grey image as PNG (matplotlib or Pillow), else PGM; returns the path."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        plt.imsave(path_stem + ".png", pixels, cmap="gray", vmin=0, vmax=255)
        return path_stem + ".png"
    except ImportError:
        pass
    try:
        from PIL import Image
        Image.fromarray(pixels, mode="L").save(path_stem + ".png")
        return path_stem + ".png"
    except ImportError:
        pass
    with open(path_stem + ".pgm", "wb") as f:
        f.write(f"P5 {pixels.shape[1]} {pixels.shape[0]} 255\n".encode() + pixels.tobytes())
    return path_stem + ".pgm"


def main():
    parser = argparse.ArgumentParser(description="Sobel edge maps of a photograph, written as images.")
    parser.add_argument("--out", default="edge_maps", help="folder for the images (default: edge_maps)")
    parser.add_argument("--size", type=int, default=320, help="width in pixels after shrinking (default: 320)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    photo, source = grey_photo(args.size)
    print(f"picture: {source}")
    maps = {
        "original": (photo, False),
        # 'replicate' continues the photo past its border, so the frame is not drawn as an edge
        "sobel_vertical": (vision.apply_filter(photo, "sobel_vertical", padding_mode="replicate"), True),
        "sobel_horizontal": (vision.apply_filter(photo, "sobel_horizontal", padding_mode="replicate"), True),
        "magnitude": (vision.edge_magnitude(photo), False),
        "blur": (vision.apply_filter(photo, "gaussian_blur", padding_mode="replicate"), False),
        "sharpen": (vision.apply_filter(photo, "sharpen", padding_mode="replicate"), False),
    }
    for name, (image, signed) in maps.items():
        path = save_grey(os.path.join(args.out, name), to_uint8(image, signed))
        print(f"{path}  ({image.shape[1]}x{image.shape[0]}, range {image.min():+.2f} .. {image.max():+.2f})")


if __name__ == "__main__":
    main()
