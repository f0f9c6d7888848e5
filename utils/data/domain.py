"""The Domain type: one domain's images and labels, whatever format they came from.

Every format module (utils/data/builtin.py, files.py, npz.py) returns one and
utils/data/domains.py checks them against each other; they all import it from
here, so none of them imports another (data flows one way: formats -> domains).
"""
import dataclasses
from typing import Optional, Tuple

import numpy as np

# What a SPEC may name, for the messages of every format that refuses one.
LAYOUT_HINT = ("a domain is mnist, mnist_m, a folder with one subfolder of images per class "
               "(optionally below train/ and test/), a folder of unlabelled images, or a .npz "
               "with x_train, y_train, x_test and y_test")


@dataclasses.dataclass
class Domain:
    """One domain's images (uint8, N x H x W x C) and labels (indices into `class_names`).

    `train_labels` is None for an unlabelled domain (its test split may still
    be labelled); `test` is None when the domain has no test split.
    """

    spec: str
    title: str
    class_names: Tuple[str, ...]
    train: np.ndarray
    train_labels: Optional[np.ndarray]
    test: Optional[np.ndarray] = None
    test_labels: Optional[np.ndarray] = None

    @property
    def labelled(self):
        return self.train_labels is not None

    @property
    def shape(self):
        return tuple(int(n) for n in self.train.shape[1:])
