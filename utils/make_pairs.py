"""Writes a suite of domain pairs nobody tuned on, offline, seeded and deterministic.

    python -m utils.make_pairs --out model_data/pairs [--pairs shapes-28 digits-easy-32 ...]

The defaults were chosen on MNIST -> MNIST-M alone. These pairs differ in size (28 to 128
pixels, one non-square), classes (3 to 10), grey and colour, labelled or not, and count (600
to 14,000 images; MNIST -> MNIST-M's 140,000 is the reference), from what the
machine has: drawn shapes and textures, scikit-learn's 8x8
digits, MNIST (a Keras mnist.npz) and BSDS500 photographs (MNIST-M's backgrounds; Ganin &
Lempitsky, 2015, Sec. 5). Each pair is `<out>/<name>/source` and `target` in the layout of
`keras.utils.image_dataset_from_directory` that training reads (utils/data/files.py): class
folders below `train/` and `test/`; an unlabelled target is one flat folder, with its labelled
test images in `<name>/target_test` (--target-test). `<out>/pairs.json` lists each pair's train
flags (paths relative to it) and MNIST -> MNIST-M (built in, no files) as the reference row. A
pair whose MNIST or BSDS500 file is found neither by flag nor where create_mnistm.py looks is
skipped, with a line (an error when named in --pairs); nothing is downloaded. The suite is
written into a temporary folder renamed onto --out: it appears whole or not at all.
"""
import dataclasses
import os
import signal
import zlib
from typing import Callable, Tuple

import cv2
import numpy as np

from utils.data import DATA_DIR
from utils.io import ArgumentParser, UserError, atomic_folder, atomic_write_json, run_main

DEFAULT_OUT = os.path.join(os.path.dirname(DATA_DIR), "pairs")
MANIFEST = "pairs.json"
DIGITS = tuple(str(digit) for digit in range(10))
# Corners of each shape on the unit circle, (x, y); a circle is drawn as one.
_TURNS = {"square": np.arange(4) / 4 + 1 / 8, "triangle": np.arange(3) / 3,
          "star": np.arange(10) / 10}
UNIT_SHAPES = {name: np.stack([np.cos(2 * np.pi * t), np.sin(2 * np.pi * t)], 1)
               for name, t in _TURNS.items()}
UNIT_SHAPES["star"] *= np.where(np.arange(10) % 2, 0.45, 1.0)[:, None]
UNIT_SHAPES["cross"] = np.array([(1, 3), (1, 1), (3, 1), (3, -1), (1, -1), (1, -3), (-1, -3),
                                 (-1, -1), (-3, -1), (-3, 1), (-1, 1), (-1, 3)]) / 3.0
SHAPES = ("circle", "square", "triangle", "star", "cross")
# What a pair may need that the machine may lack: (title, flag, default places).
INPUTS = {"mnist": ("MNIST", "--mnist-path", (os.path.join(DATA_DIR, "mnist.npz"),
                                              os.path.join("~", ".keras", "datasets", "mnist.npz"))),
          "bsds": ("BSDS500", "--bsds-path", (os.path.join(DATA_DIR, "BSR_bsds500.tgz"),
                                              os.path.join(DATA_DIR, "BSR_bsds500.zip")))}


@dataclasses.dataclass
class Pair:
    name: str
    about: str
    difficulty: str  # "issue" (the shapes), "easy", "hard" or "varied"
    needs: Tuple[str, ...]  # keys of INPUTS
    # (rng, {need: data}) -> (class names, {domain: {split: (images N x H x W x C, labels)}});
    # labels None: unlabelled.
    build: Callable


def draw_shape(canvas, kind, colour, rng):
    """One filled, anti-aliased `kind` at a random place, size and angle, drawn in place."""
    height, width = canvas.shape[:2]
    radius = rng.uniform(0.22, 0.38) * min(height, width)
    centre = np.array([rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)])
    colour = tuple(float(c) for c in colour)
    if kind == "circle":  # coordinates with 4 fractional bits (shift=4)
        cv2.circle(canvas, tuple(int(c) for c in np.round(centre * 16)), int(round(radius * 16)),
                   colour, -1, cv2.LINE_AA, shift=4)
        return
    angle = rng.uniform(0, 2 * np.pi)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = centre + radius * UNIT_SHAPES[kind] @ rotation.T
    cv2.fillPoly(canvas, [np.round(points * 16).astype(np.int32)], colour, cv2.LINE_AA, shift=4)


def plain_background(size, channels, rng, photos=None):
    """A uniform dark background (every channel below 50)."""
    return np.full((*size, channels), rng.integers(0, 50, channels), np.uint8)


def texture_background(size, channels, rng, photos=None):
    """Three random coloured gratings plus pixel noise: a busy, mid-grey texture."""
    rows, cols = np.mgrid[0:size[0], 0:size[1]] / max(size)
    texture = np.zeros((*size, channels))
    for _ in range(3):
        angle, cycles, phase = rng.uniform(0, np.pi), rng.uniform(2, 8), rng.uniform(0, 2 * np.pi)
        wave = np.sin(2 * np.pi * cycles * (cols * np.cos(angle) + rows * np.sin(angle)) + phase)
        texture += (0.5 + 0.5 * wave)[..., None] * rng.uniform(20, 70, channels)
    return to_uint8(texture + rng.normal(0, 25, texture.shape))


def photo_background(size, channels, rng, photos):
    """A random crop of a random photograph (enlarged first if smaller than `size`)."""
    photo = photos[rng.integers(len(photos))]
    scale = max(size[0] / photo.shape[0], size[1] / photo.shape[1])
    if scale > 1:
        photo = cv2.resize(photo, (int(np.ceil(photo.shape[1] * scale)),
                                   int(np.ceil(photo.shape[0] * scale))))
    top, left = (rng.integers(photo.shape[i] - size[i] + 1) for i in (0, 1))
    return photo[top:top + size[0], left:left + size[1]]


def shapes_pair(classes, size, channels, per_class, target_background, labelled=True):
    """The builder of a pair of drawn shapes: bright on plain dark (source), bright on
    `target_background` (target); `per_class` (train, test) images per class each."""
    def build(rng, inputs):
        kinds, domains = SHAPES[:classes], {}
        for domain, background in (("source", plain_background), ("target", target_background)):
            domains[domain] = {}
            for split, count in zip(("train", "test"), per_class):
                labels = np.repeat(np.arange(classes), count)
                images = np.empty((len(labels), *size, channels), np.uint8)
                for index, label in enumerate(labels):
                    # A C-ordered copy: cv2 draws in place.
                    canvas = np.array(background(size, channels, rng, inputs.get("bsds")), order="C")
                    colour = rng.integers(140, 256, channels)
                    colour[rng.integers(channels)] = 255  # one full channel: bright anywhere
                    draw_shape(canvas, kinds[label], colour, rng)
                    images[index] = canvas
                if domain == "target" and split == "train" and not labelled:
                    # Shuffled: the file names of an unlabelled folder must not tell the class.
                    images, labels = images[rng.permutation(len(images))], None
                domains[domain][split] = (images, labels)
        return kinds, domains
    return build


def to_uint8(images):
    return np.clip(np.round(images), 0, 255).astype(np.uint8)


def framed_digits(box, size):
    """scikit-learn's bundled 8x8 digits (no download) scaled to `box` pixels, 0-255, centred on
    a black `size` square (as MNIST frames 20x20 digits in 28x28), as floats; and labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = np.zeros((len(digits.target), size, size, 1), np.float32)
    top = (size - box) // 2
    for index, image in enumerate(digits.images.astype(np.float32) * (255.0 / 16.0)):
        out[index, top:top + box, top:top + box, 0] = cv2.resize(image, (box, box))
    return out, digits.target.astype(np.int64)


def split_of(images, labels, index, test_share=0.2):
    """{"train", "test"}: `images[index]`, the last `test_share` of it for testing."""
    cut = int(round(len(index) * (1 - test_share)))
    return {"train": (images[index[:cut]], labels[index[:cut]]),
            "test": (images[index[cut:]], labels[index[cut:]])}


def digits_easy(rng, inputs):
    """Half the digits as they are -> the other half dimmer on a noisy grey: an easy shift."""
    digits, labels = framed_digits(24, 32)
    order = rng.permutation(len(labels))
    half = len(order) // 2
    gain = rng.uniform(0.6, 0.85, (len(digits), 1, 1, 1))
    floor = rng.uniform(25, 60, (len(digits), 1, 1, 1))
    dimmed = to_uint8(floor + gain * digits + rng.normal(0, 8, digits.shape))
    return DIGITS, {"source": split_of(to_uint8(digits), labels, order[:half]),
                    "target": split_of(dimmed, labels, order[half:])}


def digits_to_mnist(rng, inputs):
    """Blurred, blocky 8x8 digits of 43 writers -> MNIST's sharp strokes of 500 others."""
    digits, labels = framed_digits(20, 28)
    x_train, y_train, x_test, y_test = inputs["mnist"]
    train = rng.permutation(len(y_train))[:3000]
    test = rng.permutation(len(y_test))[:1000]
    return DIGITS, {"source": split_of(to_uint8(digits), labels, rng.permutation(len(labels))),
                    "target": {"train": (x_train[train][..., None], y_train[train].astype(int)),
                               "test": (x_test[test][..., None], y_test[test].astype(int))}}


def recoloured(digits, rng):
    """Grey digits (0-255) in a random stroke and background colour each, half dark on light."""
    low, high = rng.uniform(0, 110, (len(digits), 3)), rng.uniform(150, 255, (len(digits), 3))
    flip = (rng.random(len(digits)) < 0.5)[:, None]
    background = np.where(flip, high, low)[:, None, None, :]
    stroke = np.where(flip, low, high)[:, None, None, :]
    return to_uint8(background + (stroke - background) * (digits / 255.0))


def mnist_polarity(rng, inputs):
    """MNIST padded to 32x32 -> other MNIST digits `recoloured`: 6,000 + 1,000 a domain (a
    size the suite's table can train 8 times in minutes; MNIST -> MNIST-M is the large pair)."""
    x_train, y_train, x_test, y_test = inputs["mnist"]
    domains = {"source": {}, "target": {}}
    for split, images, labels, most in (("train", x_train, y_train, 6000),
                                        ("test", x_test, y_test, 1000)):
        order = rng.permutation(len(labels))
        half = min(len(order) // 2, most)
        for domain, index in (("source", order[:half]), ("target", order[half:2 * half])):
            digits = np.pad(images[index], ((0, 0), (2, 2), (2, 2)))[..., None]
            if domain == "target":
                digits = recoloured(digits.astype(np.float32), rng)
            domains[domain][split] = (digits, labels[index].astype(np.int64))
    return DIGITS, domains


PAIRS = {pair.name: pair for pair in (
    Pair("shapes-28", "the issue's shapes: plain dark -> noisy texture, colour", "issue", (),
         shapes_pair(3, (28, 28), 3, (200, 50), texture_background)),
    Pair("shapes-64", "the issue's shapes at 64x64 (the gtsrb network by size)", "issue", (),
         shapes_pair(3, (64, 64), 3, (200, 50), texture_background)),
    Pair("shapes-100x80", "the issue's shapes, non-square: 100 high, 80 wide", "issue", (),
         shapes_pair(3, (100, 80), 3, (200, 50), texture_background)),
    Pair("shapes-grey-48", "four grey shapes, 600 images: the smallest pair", "varied", (),
         shapes_pair(4, (48, 48), 1, (60, 15), texture_background)),
    Pair("shapes-photo-128", "five shapes on BSDS500 photographs, unlabelled target", "varied",
         ("bsds",), shapes_pair(5, (128, 128), 3, (80, 20), photo_background, labelled=False)),
    Pair("digits-easy-32", "scikit-learn digits -> their other half dimmed and noisy", "easy",
         (), digits_easy),
    Pair("digits-mnist-28", "scikit-learn's 8x8 digits upscaled -> MNIST", "hard", ("mnist",),
         digits_to_mnist),
    Pair("mnist-polarity-32", "MNIST grey -> MNIST recoloured, half with flipped polarity",
         "hard", ("mnist",), mnist_polarity),
)}
REFERENCE = {"name": "mnist-mnist_m", "about": "the paper's pair (built-in domains, no files)",
             "difficulty": "reference", "source": "mnist", "target": "mnist_m",
             "target_test": None, "flags": ["--source", "mnist", "--target", "mnist_m"],
             "input_shape": [28, 28, 3], "classes": list(DIGITS), "colour": True,
             "target_labelled": True, "images": 140000,
             "counts": {"source_train": 60000, "source_test": 10000, "target_train": 60000,
                        "target_test": 10000}}


def find_input(need, path):
    """The file of `need` (a key of INPUTS): `path`, else the first default place, else None."""
    title, flag, places = INPUTS[need]
    if path and not os.path.isfile(path):
        raise UserError(f"{flag} {path}: no such file")
    found = [place for place in map(os.path.expanduser, places) if os.path.isfile(place)]
    return path or (found[0] if found else None)


def load_input(need, path):
    # The MNIST-M builder's readers: the same checks and one-line errors for the same files.
    import create_mnistm

    return (create_mnistm.load_mnist if need == "mnist" else create_mnistm.load_bsds_backgrounds)(path)


def write_pair(root, pair, seed, inputs):
    """Builds `pair` with a generator of its own (a pair is the same whichever others are
    written), writes its PNGs below `root` and returns its manifest entry."""
    class_names, domains = pair.build(np.random.default_rng([seed, zlib.crc32(pair.name.encode())]),
                                      inputs)
    labelled = domains["target"]["train"][1] is not None
    folders = {("target", "train"): "target", ("target", "test"): "target_test"} if not labelled else {}
    counts = {}
    for domain, splits in domains.items():
        for split, (images, labels) in splits.items():
            folder = os.path.join(root, pair.name, folders.get((domain, split),
                                                               os.path.join(domain, split)))
            for name in set(class_names) if labels is not None else ("",):
                os.makedirs(os.path.join(folder, name), exist_ok=True)
            for index, image in enumerate(images):
                path = os.path.join(folder, "" if labels is None else class_names[labels[index]],
                                    f"{index:05d}.png")
                # cv2 writes colour as BGR.
                if not cv2.imwrite(path, image[..., ::-1] if image.shape[-1] == 3 else image):
                    raise OSError(f"cv2 could not write {path}")
            counts[f"{domain}_{split}"] = len(images)
    height, width = domains["source"]["train"][0].shape[1:3]
    colour = any(splits["train"][0].shape[-1] == 3 for splits in domains.values())
    paths = {"source": f"{pair.name}/source", "target": f"{pair.name}/target",
             "target_test": None if labelled else f"{pair.name}/target_test"}
    flags = [item for role in ("source", "target", "target_test") if paths[role]
             for item in (f"--{role.replace('_', '-')}", paths[role])]
    return {"name": pair.name, "about": pair.about, "difficulty": pair.difficulty, **paths,
            "flags": flags, "input_shape": [int(height), int(width), 3 if colour else 1],
            "classes": list(class_names), "colour": colour, "target_labelled": labelled,
            "counts": counts, "images": sum(counts.values())}


def describe(entry, out):
    """Two lines: what a manifest entry holds, and its training command (paths as --out)."""
    (height, width, _), counts = entry["input_shape"], entry["counts"]
    flags = [os.path.join(out, flag) if entry is not REFERENCE and not flag.startswith("--")
             else flag for flag in entry["flags"]]
    return (f"{entry['name']}: {height}x{width} {'colour' if entry['colour'] else 'grey'}, "
            f"{len(entry['classes'])} classes, source {counts['source_train']}+"
            f"{counts['source_test']}, target ({'' if entry['target_labelled'] else 'un'}labelled) "
            f"{counts['target_train']}+{counts['target_test']} (train+test), {entry['images']} "
            f"images, {entry['difficulty']}\n    python train_MNIST2MNIST_M.py {' '.join(flags)}")


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="the suite's folder; an earlier "
                        "suite there is replaced (default: %(default)s)")
    parser.add_argument("--pairs", nargs="+", metavar="NAME",
                        help=f"only these pairs (default: all: {', '.join(PAIRS)})")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds every drawing, crop and split (default: %(default)s)")
    for need, (title, flag, places) in INPUTS.items():
        parser.add_argument(flag, help=f"{title} file (default: {' or '.join(places)})")
    args = parser.parse_args(argv)
    unknown = [name for name in args.pairs or () if name not in PAIRS]
    if unknown:
        raise UserError(f"unknown pair {', '.join(unknown)}; the pairs are {', '.join(PAIRS)}")
    if args.seed < 0:
        raise UserError(f"--seed must be 0 or more, got {args.seed}")
    if os.path.isfile(args.out):
        raise UserError(f"--out {args.out} is a file; give a folder for the suite")
    if os.path.isdir(args.out) and os.listdir(args.out) and not os.path.isfile(
            os.path.join(args.out, MANIFEST)):
        # Everything in --out is replaced: never a folder this tool did not write.
        raise UserError(f"--out {args.out} is a folder that holds no {MANIFEST}, so it is not a "
                        "suite written by this tool; choose a new or empty folder")
    return args


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # as Ctrl-C does: the temporary folder is removed


def main(argv=None):
    args = parse_args(argv)
    paths = {need: find_input(need, getattr(args, f"{need}_path")) for need in INPUTS}
    chosen, skipped = [], []
    for pair in (PAIRS[name] for name in args.pairs or PAIRS):
        missing = [need for need in pair.needs if paths[need] is None]
        if missing and args.pairs:
            title, flag, places = INPUTS[missing[0]]
            raise UserError(f"{pair.name} needs {title}, not found at {' or '.join(places)}; "
                            f"pass {flag}")
        (skipped if missing else chosen).append((pair, missing))
    inputs = {need: load_input(need, paths[need])
              for need in sorted({need for pair, _ in chosen for need in pair.needs})}
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        with atomic_folder(args.out) as root:
            entries = [write_pair(root, pair, args.seed, inputs) for pair, _ in chosen]
            atomic_write_json(os.path.join(root, MANIFEST), {
                "about": "domain pairs written by `python -m utils.make_pairs`; paths are "
                         "relative to this file's folder, except the built-in mnist and mnist_m",
                "seed": args.seed, "pairs": entries + [REFERENCE]})
    except OSError as error:
        raise UserError(f"writing the suite into {args.out} failed ({error.strerror or error}); "
                        "nothing was written") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    for entry in entries + [REFERENCE]:
        print(describe(entry, args.out))
    for pair, missing in skipped:
        title, flag, places = INPUTS[missing[0]]
        print(f"skipped {pair.name}: {title} not found at {' or '.join(places)}; pass {flag}")
    print(f"wrote {len(entries)} pairs and {MANIFEST} to {args.out}")


if __name__ == "__main__":
    run_main(main)
