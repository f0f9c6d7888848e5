"""The built-in domains `mnist` and `mnist_m`: the pickles create_mnistm.py writes, where they
live, safe loading and validation (NumPy only). One format of utils/data/formats.py: a SPEC
that is one of their names."""
import os
import pickle

import numpy as np

from utils.data.domain import Domain
from utils.io import UserError

# Where the built-in pickles are looked for and built when --data-dir is not given.
DATA_DIR = os.path.join("model_data", "dataset")
SPLITS = ("train", "val")
MNIST_PICKLE = os.path.join("MNIST", "mnist_data.pkl")
MNIST_M_PICKLE = os.path.join("MNIST_M", "mnist_m_data.pkl")
PICKLES = {"mnist": MNIST_PICKLE, "mnist_m": MNIST_M_PICKLE}
TITLES = {"mnist": "MNIST", "mnist_m": "MNIST-M"}
# The built-in pickles hold 28x28 RGB images: they are never resized.
SIZE, CHANNELS = (28, 28), 3
# Class names of the built-in domains: the digits, in label order.
DIGITS = tuple(str(digit) for digit in range(10))


def rebuild_hint(path):
    """How to rebuild the pickle at `path` (<data-dir>/MNIST/mnist_data.pkl): the real folder."""
    data_dir = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    return f"rebuild it with `python create_mnistm.py --out-dir {data_dir}`"

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
        raise UserError(f"dataset pickle not found: {path}; {rebuild_hint(path)}") from None
    except _RefusedGlobal as error:
        raise UserError(f"{path} is not a plain dataset pickle ({error}); "
                        f"it was not loaded; {rebuild_hint(path)}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            OSError) as error:
        raise UserError(f"{path} is corrupt or truncated ({type(error).__name__}); "
                        f"{rebuild_hint(path)}") from None


def validate_domain(data, path, input_shape=None, num_classes=None):
    """Checks keys, dtypes, shapes and label range of one loaded dataset dict.

    `input_shape` and `num_classes` are checked when given; None takes what the
    pickle holds (28x28x3, and the ten digits).
    """
    num_classes = num_classes or len(DIGITS)
    def fail(what):
        raise UserError(f"{path}: {what}; {rebuild_hint(path)}")

    if not isinstance(data, dict):
        fail(f"expected a dict, found {type(data).__name__}")
    for split in SPLITS:
        for key in (split, f"{split}_label"):
            if key not in data:
                fail(f"missing key {key!r}")
        images, labels = data[split], data[f"{split}_label"]
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
            fail(f"{split} must be a uint8 array, found {getattr(images, 'dtype', type(images))}")
        if input_shape is None and images.ndim == 4:
            input_shape = images.shape[1:]
        if images.ndim == 4 and len(images) and images.shape[1:] != tuple(input_shape):
            # Well-formed images of another size: the flag is the likelier mistake.
            held = "x".join(map(str, images.shape[1:]))
            raise UserError(f"{path}: the pickles hold {held} images but --input-shape is "
                            f"{','.join(map(str, input_shape))}; pass --input-shape "
                            f"{','.join(map(str, images.shape[1:]))} or {rebuild_hint(path)}")
        if images.ndim != 4 or images.shape[1:] != tuple(input_shape) or len(images) == 0:
            shape = "x".join(map(str, input_shape or ("H", "W", "C")))
            fail(f"{split} must have shape Nx{shape}, found {images.shape}")
        if not isinstance(labels, np.ndarray) or not np.issubdtype(labels.dtype, np.integer):
            fail(f"{split}_label must be an integer array")
        if labels.shape != (len(images),):
            fail(f"{split}_label has shape {labels.shape}, expected ({len(images)},)")
        if labels.min() < 0:
            fail(f"{split}_label has negative values")
        if labels.max() >= num_classes:
            # Well-formed labels beyond the class count: --num-classes is the likelier mistake.
            raise UserError(f"{path}: {split}_label has values up to {labels.max()}, outside "
                            f"0..{num_classes - 1}; pass --num-classes {labels.max() + 1}")
    return data


def load_pickle_domain(path, input_shape=None, num_classes=None):
    """The validated dict {"train", "train_label", "val", "val_label"} of one pickle."""
    return validate_domain(safe_load_pickle(path), path, input_shape, num_classes)


def load_mnist_and_mnistm(data_dir, input_shape=None, num_classes=None):
    """Returns the validated (MNIST, MNIST-M) dicts from `data_dir`."""
    return (load_pickle_domain(os.path.join(data_dir, MNIST_PICKLE), input_shape, num_classes),
            load_pickle_domain(os.path.join(data_dir, MNIST_M_PICKLE), input_shape, num_classes))


def builtin_domain(name, data_dir, input_shape=None, num_classes=None):
    """The Domain `mnist` or `mnist_m` from its pickle in `data_dir` (the pickles call the
    test split `val`)."""
    data = load_pickle_domain(os.path.join(data_dir, PICKLES[name]), input_shape, num_classes)
    return Domain(name, TITLES[name], tuple(str(label) for label in range(num_classes or len(DIGITS))),
                  data["train"], data["train_label"], data["val"], data["val_label"])


def builtin_domains(data_dir, input_shape=None, num_classes=None):
    """(MNIST, MNIST-M) as Domains, the default source and target."""
    return (builtin_domain("mnist", data_dir, input_shape, num_classes),
            builtin_domain("mnist_m", data_dir, input_shape, num_classes))


def is_builtin(spec):
    """True when `spec` names a built-in domain (this format's test in utils/data/formats.py)."""
    return spec in PICKLES


def probe(spec, flag, data_dir=None):
    """((H, W), channels) of a built-in domain: known without reading its pickle."""
    return SIZE, CHANNELS


def load(spec, flag, shape, resize, data_dir=None, num_classes=None):
    """The Domain `spec` from its pickle in `data_dir`, checked to hold `shape` images (never
    resized: `resize` does not apply)."""
    return builtin_domain(spec, data_dir, shape, num_classes)
