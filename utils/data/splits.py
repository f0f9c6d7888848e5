"""Splits and statistics of domain arrays: held-out validation splits, seeded subsets and the
pixel mean (NumPy only)."""
import numpy as np

from utils.io import UserError


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
    """Splits a domain's training images into (pool, held-out), disjoint, by a seeded permutation.

    `domain` is a Domain (utils/data/domains.py); `size` images are held out,
    at most half of them. `flag` names the setting in the error message.
    Returns two dicts: {"images", "labels"} (the pool; labels None for an
    unlabelled domain) and {"images", "labels", "indices"} (indices into the
    training images, sorted).
    """
    num_train = len(domain.train)
    if not 0 <= size <= num_train // 2:
        raise UserError(f"{flag} must be between 0 and half the {num_train} training images "
                        f"of {domain.title}, got {size}; pass a smaller --{flag.replace('_', '-')}")
    if size and domain.train_labels is None:
        raise UserError(f"{domain.title} has no labels, so no labelled {flag} split can be held "
                        f"out of it; pass --{flag.replace('_', '-')} 0")
    order = np.random.default_rng(seed).permutation(num_train)
    held_out, pool = np.sort(order[:size]), np.sort(order[size:])
    labels = domain.train_labels
    return ({"images": domain.train[pool], "labels": None if labels is None else labels[pool]},
            {"images": domain.train[held_out],
             "labels": (np.zeros(0, np.int64) if labels is None else labels[held_out]),
             "indices": held_out})


def seeded_subset_indices(count, size, rng):
    """Sorted indices of `size` of `count` items, drawn with `rng`; all of them
    (no draw) when `size` is 0 or covers the whole set."""
    if 0 < size < count:
        return np.sort(rng.permutation(count)[:size])
    return np.arange(count)


def hold_out_target_validation(target, size, seed):
    """Splits the target's training images into (pool, validation), disjoint, by a seeded
    permutation.

    The validation part is `size` labelled images held out of the target's
    training set (MNIST-M train by default), the protocol of Bousmalis et
    al., "Domain Separation Networks" (NIPS 2016) and Shu et al., "A DIRT-T
    Approach to Unsupervised Domain Adaptation" (ICLR 2018), on which every
    recipe setting is chosen. They are removed from the unlabelled training
    pool too, so a run never trains on them; the target's test set is not
    touched. `seed` is fixed across runs (not the run's seed), so every run
    is judged on the same images.

    Returns two dicts: {"images", "labels"} (the pool) and
    {"images", "labels", "indices"} (indices into the target's training images).
    """
    return hold_out(target, size, seed, "target_val_size")


def hold_out_source_validation(source, size, seed):
    """Splits the source's training images into (pool, labelled source validation split), like
    the target one.

    The source validation split is what label-free model selection may use
    (utils/validators.py): source validation accuracy, and the importance-
    weighted source loss of deep embedded validation (You et al., ICML 2019),
    which needs source images the model was not trained on. It leaves the
    training pool in every mode (in `target_only` the source is the unlabelled
    domain), so no run ever sees it.

    At most an eighth of the source's training images are held out: the
    default 1,000 of MNIST's 60,000, but 32 of a 256-image synthetic test set,
    whose runs would otherwise all need the flag.
    """
    if size < 0:
        raise UserError(f"source_val_size must be >= 0, got {size}; pass --source-val-size 0 "
                        "or more")
    return hold_out(source, held_out_count(size, len(source.train)), seed, "source_val_size")


def held_out_count(size, count):
    """How many of `count` training images a validation split of `size` takes: at most an
    eighth of them."""
    return min(size, count // 8)
