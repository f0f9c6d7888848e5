"""Writes a suite of domain pairs nobody tuned on, offline, seeded and deterministic.

    python -m utils.make_pairs --out model_data/pairs [--pairs shapes-28 digits-easy-32 ...]

The defaults of this repository were chosen on MNIST -> MNIST-M alone. These
pairs differ from it in image size (28 to 128 pixels, one non-square),
classes (3 to 10), grey and colour, labelled and unlabelled targets, and
count (600 to 60,000 images), and are built only from what the machine has:
drawn shapes and textures, scikit-learn's bundled digits
(`sklearn.datasets.load_digits`, 1,797 8x8 images), MNIST (a Keras-layout
mnist.npz) and crops of the BSDS500 training photographs (the MNIST-M
backgrounds; Ganin & Lempitsky, 2015, Sec. 5).

Each pair is `<out>/<name>/source` and `<out>/<name>/target` in the layout
of `keras.utils.image_dataset_from_directory` that the training reads
(utils/data/files.py): class subfolders below `train/` and `test/`; an
unlabelled target is one flat folder of images, with its labelled test
images in `<out>/<name>/target_test` (passed as --target-test).
`<out>/pairs.json` lists every pair with its training flags, paths relative
to that file's folder, and MNIST -> MNIST-M as the reference row (the
built-in domains: no files).

Pairs that need MNIST or BSDS500 are skipped, with a line saying so, when
neither the flag nor the default location (as create_mnistm.py looks: the
data folder, then the Keras cache for MNIST) has them; naming such a pair in
--pairs makes the missing file an error. Nothing is downloaded. The suite
is written into a temporary folder beside --out and renamed onto it, so
--out appears whole or not at all (an earlier suite there is replaced).
"""
import dataclasses
import os
import signal
import sys
import zlib
from typing import Callable, Tuple

import cv2
import numpy as np

from utils.data import DATA_DIR
from utils.io import ArgumentParser, UserError, atomic_folder, atomic_write_json, run_main

DEFAULT_OUT = os.path.join(os.path.dirname(DATA_DIR), "pairs")
DEFAULT_SEED = 0
MANIFEST = "pairs.json"
SHAPES = ("circle", "square", "triangle", "star", "cross")
DIGITS = tuple(str(digit) for digit in range(10))


@dataclasses.dataclass
class Split:
    """Images (uint8, N x H x W x C) with their labels (None: unlabelled)."""
    images: np.ndarray
    labels: object = None


@dataclasses.dataclass
class Pair:
    name: str
    about: str
    difficulty: str  # what the pair is for: "issue", "easy", "hard" or "varied"
    needs: Tuple[str, ...]  # "mnist", "bsds": inputs the machine may lack
    build: Callable  # (rng, inputs) -> (class names, {split: Split})


# ---------------------------------------------------------------- drawing
def _polygon(kind, centre, radius, angle):
    """Corner points of a shape (int32 for cv2.fillPoly), rotated by `angle` radians."""
    if kind == "square":
        turns = np.arange(4) / 4 + 1 / 8
        radii = np.full(4, radius)
    elif kind == "triangle":
        turns = np.arange(3) / 3
        radii = np.full(3, radius)
    elif kind == "star":
        turns = np.arange(10) / 10
        radii = np.where(np.arange(10) % 2, radius * 0.45, radius)
    else:  # cross: a plus sign of arms a third of its width
        arm = radius / 3
        corners = [(arm, radius), (arm, arm), (radius, arm), (radius, -arm), (arm, -arm),
                   (arm, -radius), (-arm, -radius), (-arm, -arm), (-radius, -arm),
                   (-radius, arm), (-arm, arm), (-arm, radius)]
        x, y = np.array(corners).T
        cos, sin = np.cos(angle), np.sin(angle)
        points = np.stack([centre[0] + x * cos - y * sin, centre[1] + x * sin + y * cos], 1)
        return np.round(points * 16).astype(np.int32)
    theta = angle + 2 * np.pi * turns
    points = np.stack([centre[0] + radii * np.cos(theta), centre[1] + radii * np.sin(theta)], 1)
    return np.round(points * 16).astype(np.int32)  # 4 fractional bits (shift=4 below)


def draw_shape(canvas, kind, colour, rng):
    """Draws one filled, anti-aliased `kind` at a random place, size and angle on `canvas`."""
    height, width = canvas.shape[:2]
    radius = rng.uniform(0.22, 0.38) * min(height, width)
    centre = (rng.uniform(radius, width - radius), rng.uniform(radius, height - radius))
    colour = tuple(float(c) for c in colour)
    if kind == "circle":
        cv2.circle(canvas, tuple(int(round(c * 16)) for c in centre), int(round(radius * 16)),
                   colour, -1, cv2.LINE_AA, shift=4)
    else:
        cv2.fillPoly(canvas, [_polygon(kind, centre, radius, rng.uniform(0, 2 * np.pi))],
                     colour, cv2.LINE_AA, shift=4)


def plain_background(size, channels, rng):
    """A uniform dark background (every channel below 50)."""
    return np.full((*size, channels), rng.integers(0, 50, channels), np.uint8)


def texture_background(size, channels, rng):
    """Three random coloured gratings plus pixel noise: a busy mid-grey texture."""
    height, width = size
    rows, cols = np.mgrid[0:height, 0:width] / max(height, width)
    texture = np.zeros((height, width, channels))
    for _ in range(3):
        angle, cycles, phase = rng.uniform(0, np.pi), rng.uniform(2, 8), rng.uniform(0, 2 * np.pi)
        wave = np.sin(2 * np.pi * cycles * (cols * np.cos(angle) + rows * np.sin(angle)) + phase)
        texture += (0.5 + 0.5 * wave)[..., None] * rng.uniform(20, 70, channels)
    texture += rng.normal(0, 25, texture.shape)
    return np.clip(texture, 0, 255).astype(np.uint8)


def photo_background(size, photos, rng):
    """A random crop of a random photograph (enlarged first if it is smaller than `size`)."""
    photo = photos[rng.integers(len(photos))]
    scale = max(size[0] / photo.shape[0], size[1] / photo.shape[1], 1.0)
    if scale > 1:
        photo = cv2.resize(photo, (int(np.ceil(photo.shape[1] * scale)),
                                   int(np.ceil(photo.shape[0] * scale))))
    top = rng.integers(photo.shape[0] - size[0] + 1)
    left = rng.integers(photo.shape[1] - size[1] + 1)
    return np.ascontiguousarray(photo[top:top + size[0], left:left + size[1]])


def shape_images(counts, kinds, size, channels, background, rng):
    """{split: Split} of drawn `kinds`, `counts[split]` per class, bright on `background`."""
    splits = {}
    for split, per_class in counts.items():
        labels = np.repeat(np.arange(len(kinds)), per_class)
        images = np.empty((len(labels), *size, channels), np.uint8)
        for index, label in enumerate(labels):
            canvas = np.array(background(size, channels, rng), order="C")  # cv2 draws in place
            colour = rng.integers(140, 256, channels)
            colour[rng.integers(channels)] = 255  # one full channel: bright on any background
            draw_shape(canvas, kinds[label], colour, rng)
            images[index] = canvas
        splits[split] = Split(images, labels)
    return splits


# ---------------------------------------------------------------- digits
def sklearn_digits():
    """scikit-learn's bundled 8x8 digits (values 0-16, no download) and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.astype(np.float32), digits.target.astype(np.int64)


def framed(images, box, size):
    """Grey images scaled to `box` x `box` (values 0-255) centred on a black `size` square,
    as MNIST frames its 20x20 digits in 28x28."""
    images = np.asarray(images, np.float32)
    scale = 255.0 / max(float(images.max()), 1.0)
    out = np.zeros((len(images), size, size, 1), np.float32)
    top = (size - box) // 2
    for index, image in enumerate(images):
        out[index, top:top + box, top:top + box, 0] = cv2.resize(
            image * scale, (box, box), interpolation=cv2.INTER_LINEAR)
    return out


def to_uint8(images):
    return np.clip(np.round(images), 0, 255).astype(np.uint8)


def halves(count, rng, test_share=0.2):
    """Two disjoint (train, test) index splits of `count` items, shuffled by `rng`."""
    order = rng.permutation(count)
    result = []
    for half in (order[:count // 2], order[count // 2:]):
        cut = int(round(len(half) * (1 - test_share)))
        result.append((half[:cut], half[cut:]))
    return result


def recoloured(digits, rng):
    """Grey digits (N x H x W x 1, 0-255) painted with a random stroke and background colour
    each; half of them darker strokes on a lighter background (the polarity flipped)."""
    count = len(digits)
    low, high = rng.uniform(0, 110, (count, 3)), rng.uniform(150, 255, (count, 3))
    flip = rng.random(count) < 0.5
    background = np.where(flip[:, None], high, low)[:, None, None, :]
    stroke = np.where(flip[:, None], low, high)[:, None, None, :]
    return to_uint8(background + (stroke - background) * (digits / 255.0))


# ---------------------------------------------------------------- the pairs
def _shapes(classes, size, channels, per_class, target_background, unlabelled=False):
    def build(rng, inputs):
        kinds = SHAPES[:classes]
        counts = {"train": per_class[0], "test": per_class[1]}
        source = shape_images(counts, kinds, size, channels, plain_background, rng)
        if target_background == "photo":
            photos = inputs["bsds"]
            background = (lambda size_, _channels, rng_: photo_background(size_, photos, rng_))
        else:
            background = texture_background
        target = shape_images(counts, kinds, size, channels, background, rng)
        if unlabelled:
            target["train"] = Split(target["train"].images, None)
        return kinds, {"source": source, "target": target}
    return build


def _digits_easy(rng, inputs):
    images, labels = sklearn_digits()
    digits = framed(images, 24, 32)
    (source_train, source_test), (target_train, target_test) = halves(len(labels), rng)

    def dimmed(index):
        # Darker strokes on a grey, slightly noisy background: a small, global shift.
        gain = rng.uniform(0.6, 0.85, (len(index), 1, 1, 1))
        floor = rng.uniform(25, 60, (len(index), 1, 1, 1))
        noise = rng.normal(0, 8, digits[index].shape)
        return to_uint8(floor + gain * digits[index] + noise)

    return DIGITS, {
        "source": {"train": Split(to_uint8(digits[source_train]), labels[source_train]),
                   "test": Split(to_uint8(digits[source_test]), labels[source_test])},
        "target": {"train": Split(dimmed(target_train), labels[target_train]),
                   "test": Split(dimmed(target_test), labels[target_test])}}


def _subset(images, labels, count, rng):
    index = rng.permutation(len(labels))[:count]
    return images[index], labels[index]


def _digits_to_mnist(rng, inputs):
    images, labels = sklearn_digits()
    digits = to_uint8(framed(images, 20, 28))
    order = rng.permutation(len(labels))
    cut = int(round(len(order) * 0.8))
    x_train, y_train, x_test, y_test = inputs["mnist"]
    train = _subset(x_train, y_train, min(3000, len(y_train)), rng)
    test = _subset(x_test, y_test, min(1000, len(y_test)), rng)
    return DIGITS, {
        "source": {"train": Split(digits[order[:cut]], labels[order[:cut]]),
                   "test": Split(digits[order[cut:]], labels[order[cut:]])},
        "target": {"train": Split(train[0][..., None], train[1].astype(np.int64)),
                   "test": Split(test[0][..., None], test[1].astype(np.int64))}}


def _mnist_polarity(rng, inputs):
    x_train, y_train, x_test, y_test = inputs["mnist"]
    pad = ((0, 0), (2, 2), (2, 2), (0, 0))
    splits = {"source": {}, "target": {}}
    for split, images, labels in (("train", x_train, y_train), ("test", x_test, y_test)):
        order = rng.permutation(len(labels))
        # 25,000 + 5,000 images a domain with the real MNIST: 60,000 in all.
        half = min(len(order) // 2, 25000 if split == "train" else 5000)
        for domain, index in (("source", order[:half]), ("target", order[half:2 * half])):
            digits = np.pad(images[index][..., None], pad)
            if domain == "target":
                digits = recoloured(digits.astype(np.float32), rng)
            splits[domain][split] = Split(digits, labels[index].astype(np.int64))
    return DIGITS, splits


PAIRS = {pair.name: pair for pair in (
    Pair("shapes-28", "the issue's shapes: plain dark -> noisy texture, colour", "issue", (),
         _shapes(3, (28, 28), 3, (200, 50), "texture")),
    Pair("shapes-64", "the issue's shapes at 64x64 (the gtsrb network by size)", "issue", (),
         _shapes(3, (64, 64), 3, (200, 50), "texture")),
    Pair("shapes-100x80", "the issue's shapes, non-square 100 high x 80 wide", "issue", (),
         _shapes(3, (100, 80), 3, (200, 50), "texture")),
    Pair("shapes-grey-48", "four grey shapes, 600 images: the smallest pair", "varied", (),
         _shapes(4, (48, 48), 1, (60, 15), "texture")),
    Pair("shapes-photo-128", "five shapes on BSDS500 photographs, unlabelled target",
         "varied", ("bsds",), _shapes(5, (128, 128), 3, (80, 20), "photo", unlabelled=True)),
    Pair("digits-easy-32", "scikit-learn digits -> the other half dimmed and noisy", "easy", (),
         _digits_easy),
    Pair("digits-mnist-28", "scikit-learn's 8x8 digits upscaled -> MNIST", "hard", ("mnist",),
         _digits_to_mnist),
    Pair("mnist-polarity-32", "MNIST grey -> MNIST recoloured, half with flipped polarity, "
         "60,000 images", "hard", ("mnist",), _mnist_polarity),
)}
REFERENCE = {"name": "mnist-mnist_m", "about": "the paper's pair (built-in domains, no files)",
             "difficulty": "reference", "source": "mnist", "target": "mnist_m",
             "target_test": None, "flags": ["--source", "mnist", "--target", "mnist_m"],
             "input_shape": [28, 28, 3], "classes": list(DIGITS), "colour": True,
             "target_labelled": True, "counts": {"source_train": 60000, "source_test": 10000,
                                                 "target_train": 60000, "target_test": 10000},
             "images": 140000}


# ---------------------------------------------------------------- inputs
def find_input(kind, path):
    """The file for `kind` ("mnist" or "bsds"): `path`, else its default location, else None."""
    if path:
        if not os.path.isfile(path):
            flag = "--mnist-path" if kind == "mnist" else "--bsds-path"
            raise UserError(f"{flag} {path}: no such file")
        return path
    if kind == "mnist":
        candidates = [os.path.join(DATA_DIR, "mnist.npz"),
                      os.path.join(os.path.expanduser("~"), ".keras", "datasets", "mnist.npz")]
    else:
        candidates = [os.path.join(DATA_DIR, "BSR_bsds500" + suffix) for suffix in (".tgz", ".zip")]
    return next((candidate for candidate in candidates if os.path.isfile(candidate)), None)


def load_input(kind, path):
    # The MNIST-M builder's readers: the same checks and one-line errors for the same files.
    import create_mnistm

    if kind == "mnist":
        return create_mnistm.load_mnist(path)
    return create_mnistm.load_bsds_backgrounds(path)


# ---------------------------------------------------------------- writing
def write_images(folder, split):
    """PNGs of `split` below `folder`: one subfolder per class name, or flat if unlabelled."""
    images, labels = split
    os.makedirs(folder, exist_ok=True)
    for index, image in enumerate(images):
        where = folder if labels is None else os.path.join(folder, labels[index])
        if index == 0 or labels is not None and labels[index] != labels[index - 1]:
            os.makedirs(where, exist_ok=True)
        if image.shape[-1] == 3:
            image = image[..., ::-1]  # cv2 writes BGR
        if not cv2.imwrite(os.path.join(where, f"{index:05d}.png"), image):
            raise UserError(f"could not write {os.path.join(where, f'{index:05d}.png')}")


def write_pair(root, pair, seed, inputs):
    """Builds `pair` (its own generator: each pair is the same whichever others are written)
    and writes it below `root`; returns its manifest entry."""
    rng = np.random.default_rng([seed, zlib.crc32(pair.name.encode())])
    class_names, domains = pair.build(rng, inputs)
    names = np.array(class_names)
    counts = {}
    labelled = domains["target"]["train"].labels is not None
    for domain, splits in domains.items():
        for split_name, split in splits.items():
            if domain == "target" and not labelled:
                folder = (os.path.join(root, pair.name, "target") if split_name == "train"
                          else os.path.join(root, pair.name, "target_test"))
            else:
                folder = os.path.join(root, pair.name, domain, split_name)
            labels = None if split.labels is None else names[split.labels]
            write_images(folder, (split.images, labels))
            counts[f"{domain}_{split_name}"] = len(split.images)
    shape = domains["source"]["train"].images.shape[1:]
    colour = any(splits["train"].images.shape[-1] == 3 for splits in domains.values())
    paths = {role: f"{pair.name}/{role}" for role in ("source", "target")}
    paths["target_test"] = None if labelled else f"{pair.name}/target_test"
    flags = ["--source", paths["source"], "--target", paths["target"]]
    if paths["target_test"]:
        flags += ["--target-test", paths["target_test"]]
    return {"name": pair.name, "about": pair.about, "difficulty": pair.difficulty, **paths,
            "flags": flags, "input_shape": [int(shape[0]), int(shape[1]), 3 if colour else 1],
            "classes": list(class_names), "colour": colour, "target_labelled": labelled,
            "counts": counts, "images": sum(counts.values())}


def command(entry, out):
    """The training command of a manifest entry, with paths as the user gave --out."""
    flags = [flag if flag.startswith("--") or entry["name"] == REFERENCE["name"]
             else os.path.join(out, flag) for flag in entry["flags"]]
    return " ".join(["python train_MNIST2MNIST_M.py"] + flags)


def describe(entry, out):
    height, width, channels = entry["input_shape"]
    counts = entry["counts"]
    target = "labelled" if entry["target_labelled"] else "unlabelled"
    return (f"{entry['name']}: {height}x{width} {'colour' if entry['colour'] else 'grey'}, "
            f"{len(entry['classes'])} classes, source {counts['source_train']}+"
            f"{counts['source_test']}, target ({target}) {counts['target_train']}+"
            f"{counts['target_test']} (train+test), {entry['images']} images, "
            f"{entry['difficulty']}\n    {command(entry, out)}")


def check_out(out):
    """Refuses an --out that is a file, or a folder this tool did not write (it is replaced)."""
    if os.path.isfile(out):
        raise UserError(f"--out {out} is a file; give a folder for the suite")
    if os.path.isdir(out) and os.listdir(out) and not os.path.isfile(os.path.join(out, MANIFEST)):
        raise UserError(f"--out {out} is a folder that holds no {MANIFEST}, so it is not a suite "
                        "written by this tool and would be replaced; choose a new or empty folder")


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help="the suite's folder; an earlier suite there is replaced "
                        "(default: %(default)s)")
    parser.add_argument("--pairs", nargs="+", metavar="NAME",
                        help=f"only these pairs (default: all: {', '.join(PAIRS)})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="seeds every drawing, crop and split (default: %(default)s)")
    parser.add_argument("--mnist-path", help="Keras-layout mnist.npz (default: "
                        f"{os.path.join(DATA_DIR, 'mnist.npz')}, then ~/.keras/datasets/mnist.npz)")
    parser.add_argument("--bsds-path", help="BSR_bsds500.tgz or .zip (default: "
                        f"{os.path.join(DATA_DIR, 'BSR_bsds500.tgz')} or .zip)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.pairs or () if name not in PAIRS]
    if unknown:
        raise UserError(f"unknown pair {', '.join(unknown)}; the pairs are {', '.join(PAIRS)}")
    if args.seed < 0:
        raise UserError(f"--seed must be 0 or more, got {args.seed}")
    return args


def _stop_on_sigterm(signum, frame):
    # As SIGINT raises KeyboardInterrupt: the temporary folder is removed on the way out.
    raise SystemExit(128 + signum)


def main(argv=None):
    args = parse_args(argv)
    chosen = [PAIRS[name] for name in (args.pairs or PAIRS)]
    check_out(args.out)
    paths = {kind: find_input(kind, getattr(args, f"{kind}_path")) for kind in ("mnist", "bsds")}
    skipped = [(pair, kind) for pair in chosen for kind in pair.needs if paths[kind] is None]
    if skipped and args.pairs:
        pair, kind = skipped[0]
        flag = "--mnist-path" if kind == "mnist" else "--bsds-path"
        raise UserError(f"{pair.name} needs {'MNIST' if kind == 'mnist' else 'BSDS500'}, not "
                        f"found in {DATA_DIR}; pass {flag}")
    missing = {pair.name for pair, _ in skipped}
    chosen = [pair for pair in chosen if pair.name not in missing]
    needed = {kind for pair in chosen for kind in pair.needs}
    inputs = {kind: load_input(kind, paths[kind]) for kind in sorted(needed)}
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        with atomic_folder(args.out) as root:
            entries = [write_pair(root, pair, args.seed, inputs) for pair in chosen]
            atomic_write_json(os.path.join(root, MANIFEST), {
                "about": "domain pairs written by `python -m utils.make_pairs`; paths are "
                         "relative to this file's folder, except the built-in mnist and mnist_m",
                "seed": args.seed, "pairs": entries + [REFERENCE]})
    except OSError as error:
        raise UserError(f"writing the suite into {args.out} failed: "
                        f"{error.strerror or error}; nothing was written") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    for entry in entries + [REFERENCE]:
        print(describe(entry, args.out))
    for pair, kind in skipped:
        flag = "--mnist-path" if kind == "mnist" else "--bsds-path"
        print(f"skipped {pair.name}: {'MNIST' if kind == 'mnist' else 'BSDS500'} not found in "
              f"{DATA_DIR}; pass {flag}")
    print(f"wrote {len(entries)} pairs and {MANIFEST} to {args.out}")


if __name__ == "__main__":
    run_main(main)
