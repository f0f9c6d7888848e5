"""`.npz` domains, in the layout of Keras' `mnist.npz`: `x_train`, `y_train`, `x_test`, `y_test`,
and optionally `class_names`, read with allow_pickle=False. One format of
utils/data/formats.py: a SPEC that is a .npz file.

Images are N x H x W or N x H x W x C uint8 arrays, converted to the network's
channels and, with --input-shape, resized exactly as image folders are
(utils/data/files.py): grey repeated to RGB, RGB made grey with the weights of
`tf.image.rgb_to_grayscale`, alpha dropped, `tf.image.resize` bilinear. A
target may leave out both y_ arrays (an unlabelled domain); the source may not.
"""
import os

import numpy as np

from utils.data.domain import LAYOUT_HINT, Domain
from utils.io import UserError


def is_npz(spec):
    """True when `spec` is a .npz file (this format's test in utils/data/formats.py)."""
    return os.path.isfile(spec) and spec.lower().endswith(".npz")


def _npz_arrays(path, flag, labelled_required):
    """{key: array} of a Keras-layout .npz, read without pickles."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise UserError(f"{flag} {path} is not a readable .npz ({type(error).__name__}); "
                        f"{LAYOUT_HINT}") from None
    with archive:
        keys = set(archive.files)
        required = ["x_train", "x_test"]
        if labelled_required or keys & {"y_train", "y_test"}:
            required += ["y_train", "y_test"]
        missing = [key for key in required if key not in keys]
        if missing:
            raise UserError(f"{flag} {path} has no {', '.join(missing)}; a domain .npz holds "
                            "x_train, y_train, x_test and y_test (as Keras' mnist.npz; a target "
                            "may leave out both y_ arrays)")
        arrays = {}
        for key in required + (["class_names"] if "class_names" in keys else []):
            try:
                arrays[key] = archive[key]
            except ValueError as error:
                raise UserError(f"{flag} {path}: {key} cannot be read without pickle ({error}); "
                                "save it as a plain numeric array") from None
    return arrays


def _to_shape(images, shape, resize, flag, path, key):
    """N x H x W (x C) uint8 images converted to `shape` (channels, and size if `resize`)."""
    if images.dtype != np.uint8:
        raise UserError(f"{flag} {path}: {key} is {images.dtype}, not uint8 images (0-255); "
                        "save it with .astype(np.uint8)")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 2, 3, 4) or not len(images):
        raise UserError(f"{flag} {path}: {key} has shape {images.shape}, not N x H x W or "
                        "N x H x W x C images (C from 1 to 4)")
    height, width, channels = shape
    stored = images.shape[-1]
    if channels == 3:
        images = images[..., :3] if stored >= 3 else np.repeat(images[..., :1], 3, axis=-1)
    elif stored >= 3:
        weights = np.array([0.2989, 0.5870, 0.1140], np.float32)  # tf.image.rgb_to_grayscale's
        images = np.round(images[..., :3].astype(np.float32) @ weights)[..., None].astype(np.uint8)
    else:
        images = images[..., :1]
    if images.shape[1:3] != (height, width):
        if not resize:
            raise UserError(f"{flag} {path}: {key} holds {images.shape[1]}x{images.shape[2]} "
                            f"images, not {height}x{width}; pass --input-shape H,W,C to resize")
        import tensorflow as tf

        resized = [tf.image.resize(images[i:i + 4096], [height, width], method="bilinear")
                   for i in range(0, len(images), 4096)]
        images = np.concatenate([np.round(np.clip(r.numpy(), 0, 255)).astype(np.uint8)
                                 for r in resized])
    return np.ascontiguousarray(images)


def _npz_labels(arrays, flag, path, key, count):
    labels = arrays[key]
    if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (count,):
        raise UserError(f"{flag} {path}: {key} must be {count} integer labels, found "
                        f"{labels.dtype} {labels.shape}")
    if count and labels.min() < 0:
        raise UserError(f"{flag} {path}: {key} has negative labels")
    return labels.astype(np.int64)


def load(path, flag, shape, resize, data_dir=None, num_classes=None):
    """The Domain of the .npz `path` at `shape` (`data_dir` and `num_classes` do not apply: the
    classes are its class_names, or the label numbers)."""
    arrays = _npz_arrays(path, flag, labelled_required=flag == "--source")
    train = _to_shape(arrays["x_train"], shape, resize, flag, path, "x_train")
    test = _to_shape(arrays["x_test"], shape, resize, flag, path, "x_test")
    if "y_train" not in arrays:
        return Domain(path, os.path.basename(path), (), train, None, test, None)
    train_labels = _npz_labels(arrays, flag, path, "y_train", len(train))
    test_labels = _npz_labels(arrays, flag, path, "y_test", len(test))
    count = int(max(train_labels.max(initial=0), test_labels.max(initial=0))) + 1
    if "class_names" in arrays:
        names = tuple(str(name) for name in arrays["class_names"])
        if len(names) < count:
            raise UserError(f"{flag} {path}: class_names lists {len(names)} classes but the "
                            f"labels go up to {count - 1}")
    else:
        names = tuple(str(label) for label in range(count))
    return Domain(path, os.path.basename(path), names, train, train_labels, test, test_labels)


def probe(spec, flag, data_dir=None):
    """((H, W), channels) of the .npz's training images, read without converting them."""
    images = _npz_arrays(spec, flag, labelled_required=False)["x_train"]
    if images.ndim not in (3, 4) or not len(images):
        raise UserError(f"{flag} {spec}: x_train has shape {images.shape}, not N x H x W or "
                        "N x H x W x C images")
    return tuple(images.shape[1:3]), (images.shape[3] if images.ndim == 4 else 1)
