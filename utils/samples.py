"""Writes samples.png: MNIST training images next to the same digits in MNIST-M.

    python -m utils.samples [--data-dir model_data/dataset] [--out logs/figures/samples.png]

The README's figure is `--out image/samples.png`; the default never replaces it.

A seeded choice of --num training indices is drawn once and used for both
domains: create_mnistm.py keeps the digit order, so MNIST-M train[i] is MNIST
train[i] blended over a BSDS500 crop (Ganin & Lempitsky, 2015, Sec. 5), and the
two grids show the same digits. Each grid is laid out by
`skimage.util.montage`, one of the uses for which scikit-image is a requirement.
"""
import os

import numpy as np
from skimage.util import montage

from utils.data import DATA_DIR, load_mnist_and_mnistm
from utils.figures import new_figure, save_png
from utils.io import ArgumentParser, UserError, run_main

DOMAINS = ("MNIST", "MNIST-M")


def sample_indices(num_train, num, seed):
    """`num` distinct training indices, sorted, drawn by a seeded generator."""
    if not 1 <= num <= num_train:
        raise UserError(f"--num must be between 1 and the {num_train} training images, got {num}")
    return np.sort(np.random.default_rng(seed).choice(num_train, size=num, replace=False))


def domain_grids(mnist, mnist_m, indices, columns):
    """{domain: montage} of the chosen training images, `columns` per row, white gaps."""
    rows = -(-len(indices) // columns)
    return {name: montage(data["train"][indices], grid_shape=(rows, columns), padding_width=2,
                          fill=(255, 255, 255), channel_axis=-1)
            for name, data in zip(DOMAINS, (mnist, mnist_m))}


def write_samples(data_dir, out, num=32, columns=8, seed=0):
    """Loads the pickles from `data_dir` and writes the side-by-side PNG to `out`."""
    if columns < 1:
        raise UserError(f"--columns must be positive, got {columns}")
    mnist, mnist_m = load_mnist_and_mnistm(data_dir)
    if len(mnist["train"]) != len(mnist_m["train"]):
        raise UserError(f"{data_dir}: MNIST and MNIST-M hold {len(mnist['train'])} and "
                        f"{len(mnist_m['train'])} training images, so they are not one build; "
                        "rebuild both with `python create_mnistm.py`")
    indices = sample_indices(len(mnist["train"]), num, seed)
    grids = domain_grids(mnist, mnist_m, indices, min(columns, num))
    figure, axes = new_figure(2, panel_size=(4.0, 4.0 * grids["MNIST"].shape[0]
                                             / grids["MNIST"].shape[1] + 0.4))
    for axis, name in zip(axes, DOMAINS):
        axis.imshow(grids[name], interpolation="nearest")
        axis.set_title(f"{name} (train)")
        axis.set_axis_off()
    save_png(figure, out, dpi=150)
    return out, indices


def build_parser():
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=DATA_DIR,
                        help="folder holding MNIST/ and MNIST_M/ pickles (default: %(default)s)")
    parser.add_argument("--out", default=os.path.join("logs", "figures", "samples.png"),
                        help="PNG to write (default: %(default)s)")
    parser.add_argument("--num", type=int, default=32,
                        help="training images shown per domain (default: %(default)s)")
    parser.add_argument("--columns", type=int, default=8,
                        help="images per grid row (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the choice of images (default: %(default)s)")
    return parser


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    out, indices = write_samples(args.data_dir, args.out, args.num, args.columns, args.seed)
    print(f"{len(indices)} MNIST and MNIST-M training images (seed {args.seed}) -> {out}")


if __name__ == "__main__":
    run_main(main)
