"""MNIST / MNIST-M pickles: where they live, safe loading and validation (NumPy only)."""
import os
import pickle

import numpy as np

from utils.io import UserError

SPLITS = ("train", "val")
MNIST_PICKLE = os.path.join("MNIST", "mnist_data.pkl")
MNIST_M_PICKLE = os.path.join("MNIST_M", "mnist_m_data.pkl")


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


def validate_domain(data, path, input_shape=(28, 28, 3), num_classes=10):
    """Checks keys, dtypes, shapes and label range of one loaded dataset dict."""
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
        if images.ndim == 4 and len(images) and images.shape[1:] != tuple(input_shape):
            # Well-formed images of another size: the flag is the likelier mistake (issue 10).
            held = "x".join(map(str, images.shape[1:]))
            raise UserError(f"{path}: the pickles hold {held} images but --input-shape is "
                            f"{','.join(map(str, input_shape))}; pass --input-shape "
                            f"{','.join(map(str, images.shape[1:]))} or {rebuild_hint(path)}")
        if images.ndim != 4 or images.shape[1:] != tuple(input_shape) or len(images) == 0:
            fail(f"{split} must have shape Nx{'x'.join(map(str, input_shape))}, found {images.shape}")
        if not isinstance(labels, np.ndarray) or not np.issubdtype(labels.dtype, np.integer):
            fail(f"{split}_label must be an integer array")
        if labels.shape != (len(images),):
            fail(f"{split}_label has shape {labels.shape}, expected ({len(images)},)")
        if labels.min() < 0:
            fail(f"{split}_label has negative values")
        if labels.max() >= num_classes:
            # Well-formed labels beyond the class count: the flag is the mistake (issue 19).
            raise UserError(f"{path}: {split}_label has values up to {labels.max()}, outside "
                            f"0..{num_classes - 1}; pass --num-classes {labels.max() + 1}")
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


def hold_out(domain, size, seed, flag="size"):
    """Splits a domain's train split into (pool, held-out), disjoint, by a seeded permutation.

    `domain` is a dataset dict ({"train", "train_label", ...}); `size` images
    are held out, at most half of them. `flag` names the setting in the error
    message. Returns two dicts: {"train", "train_label"} (the pool) and
    {"images", "labels", "indices"} (indices into the train split, sorted).
    """
    num_train = len(domain["train"])
    if not 0 <= size <= num_train // 2:
        raise UserError(f"{flag} must be between 0 and half the {num_train} training images "
                        f"of that domain, got {size}; pass a smaller --{flag.replace('_', '-')}")
    order = np.random.default_rng(seed).permutation(num_train)
    held_out, pool = np.sort(order[:size]), np.sort(order[size:])
    return ({"train": domain["train"][pool], "train_label": domain["train_label"][pool]},
            {"images": domain["train"][held_out], "labels": domain["train_label"][held_out],
             "indices": held_out})


def seeded_subset_indices(count, size, rng):
    """Sorted indices of `size` of `count` items, drawn with `rng`; all of them
    (no draw) when `size` is 0 or covers the whole set."""
    if 0 < size < count:
        return np.sort(rng.permutation(count)[:size])
    return np.arange(count)


def hold_out_target_validation(mnist_m, size, seed):
    """Splits MNIST-M train into (pool, validation), disjoint, by a seeded permutation.

    The validation part is `size` labelled images held out of MNIST-M train,
    the protocol of Bousmalis et al., "Domain Separation Networks" (NIPS 2016)
    and Shu et al., "A DIRT-T Approach to Unsupervised Domain Adaptation"
    (ICLR 2018), on which every recipe setting is chosen. They are removed
    from the unlabelled training pool too, so a run never trains on them; the
    MNIST-M test set (`val` in the pickles) is not touched. `seed` is fixed
    across runs (not the run's seed), so every run is judged on the same images.

    Returns two dicts: {"train", "train_label"} (the pool) and
    {"images", "labels", "indices"} (indices into MNIST-M train).
    """
    return hold_out(mnist_m, size, seed, "target_val_size")


def hold_out_source_validation(mnist, size, seed):
    """Splits MNIST train into (pool, labelled source validation split), like the target one.

    The source validation split is what label-free model selection may use
    (utils/validators.py): source validation accuracy, and the importance-
    weighted source loss of deep embedded validation (You et al., ICML 2019),
    which needs source images the model was not trained on. It leaves the
    training pool in every mode (in `target_only` MNIST is the unlabelled
    domain), so no run ever sees it.

    At most an eighth of MNIST train is held out: the default 1,000 of the
    real 60,000, but 32 of a 256-image synthetic test set, whose runs would
    otherwise all need the flag.
    """
    if size < 0:
        raise UserError(f"source_val_size must be >= 0, got {size}; pass --source-val-size 0 "
                        "or more")
    return hold_out(mnist, min(size, len(mnist["train"]) // 8), seed, "source_val_size")
