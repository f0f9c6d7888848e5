"""Classifies image files with a trained run: one line per image, and a CSV with --out.

    python -m utils.predict --run <run> PATH [PATH ...] [--out predictions.csv]

PATH is an image file or a folder (searched recursively for .png, .jpg,
.jpeg, .bmp and .gif; other files are skipped and counted). Each image is
decoded, converted to the run's channels and resized to its input shape
exactly as training data are (utils/data/files.py: bilinear, as Keras
resizes), then classified by the run's final model (the weight average for
recipes that keep one) or --checkpoint. Printed per image: path, class name,
probability.
"""
import csv
import os

import numpy as np

from utils.data import files as domain_files
from utils.io import ArgumentParser, UserError, atomic_save, run_main
from utils.runs import (add_checkpoint_argument, add_output_root_argument, add_run_argument,
                        find_run)


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_argument(parser, "trained run, as given to --run-name")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    add_checkpoint_argument(parser, "weights to use instead of the run's final ones: a "
                                    ".weights.h5 file or a checkpoint prefix such as "
                                    "checkpoints/<run>/ckpt-1000")
    parser.add_argument("--out", help="also write path,class,probability rows to this CSV")
    add_output_root_argument(parser)
    parser.add_argument("--batch-size", type=int, default=256,
                        help="images classified per batch (default: %(default)s)")
    return parser.parse_args(argv)


def image_paths(paths):
    """(image files, skipped files) of `paths`: files as given, folders walked in sorted order."""
    found, skipped = [], []
    for path in paths:
        if os.path.isdir(path):
            images, others = domain_files.walk_images(path, "PATH")
            found += images
            skipped += others
        elif os.path.isfile(path):
            if not domain_files.is_image(path):
                raise UserError(f"{path} is not an image file ({', '.join(domain_files.IMAGE_EXTENSIONS)})")
            found.append(path)
        else:
            raise UserError(f"no such file or folder: {path}")
    if not found:
        raise UserError(f"no images in {', '.join(paths)} "
                        f"({', '.join(domain_files.IMAGE_EXTENSIONS)})")
    return found, skipped


def class_names(config):
    """The run's class names (runs from before they were recorded: the label numbers)."""
    return list(config.class_names or [str(label) for label in range(config.num_classes)])


def probabilities(dann, images, batch_size):
    """softmax(G_y(G_f(images))) in inference mode, as one array."""
    import tensorflow as tf

    from utils.training.evaluation import apply_in_batches

    return apply_in_batches(lambda batch: tf.nn.softmax(dann.model(batch, training=False)[0]),
                            images, batch_size)


def predict_files(run, paths, batch_size=256):
    """[(path, class name, probability)] and the full probability array for image `paths`,
    classified by `run` (a utils.runs.Run, from find_run)."""
    config, dann = run.config, run.load_model()
    images = domain_files.decode_files(paths, tuple(config.input_shape), True, "PATH")
    probs = probabilities(dann, images, batch_size)
    names = class_names(config)
    best = np.argmax(probs, axis=1)
    return [(path, names[label], float(probs[i, label]))
            for i, (path, label) in enumerate(zip(paths, best))], probs


def main(argv=None):
    args = parse_args(argv)
    if args.batch_size <= 0:
        raise UserError(f"--batch-size must be positive, got {args.batch_size}")
    run = find_run(args.run, args.output_root, args.checkpoint)  # before the slow imports
    paths, skipped = image_paths(args.paths)
    if skipped:
        print(f"skipped {len(skipped)} file{'s' if len(skipped) > 1 else ''} that "
              f"{'are' if len(skipped) > 1 else 'is'} not an image, e.g. {skipped[0]}")
    rows, _ = predict_files(run, paths, args.batch_size)
    for path, name, probability in rows:
        print(f"{path}\t{name}\t{probability:.4f}")
    if args.out:
        def write(tmp_path):
            with open(tmp_path, "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["path", "class", "probability"])
                writer.writerows((path, name, f"{p:.6f}") for path, name, p in rows)

        atomic_save(args.out, write)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    run_main(main)
