"""The Network type: a feature extractor G_f that a DANN can be built on, and the widths of
the two heads on top of it (Ganin & Lempitsky, 2015, Sec. 3: G_f, G_y and G_d).

A network module (model/paper_columns.py) defines its networks as instances
of a subclass, and model/networks.py registers them by name. Nothing here
imports TensorFlow: the config reads the registry to list --network's choices.
"""
import dataclasses
from typing import Tuple


@dataclasses.dataclass(frozen=True)
class Network:
    """A named G_f, and the hidden layers of G_y (`label_units`) and of G_d (`domain_units`).

    A subclass defines `build`; it may refine `output_size` when its layers
    shrink the image, so that inputs too small for it are refused before Keras
    fails on them.
    """

    name: str
    label_units: Tuple[int, ...]
    domain_units: Tuple[int, ...]
    # The image side the network was drawn for, to which images are resized unless
    # --input-shape says otherwise (the paper resized GTSRB to 40x40); 0: any size.
    native_size = 0

    def build(self, images):
        """G_f's layers applied to `images` (a Keras tensor of normalised N x H x W x C images),
        created in the order of the returned tensor's graph; returns the features (the caller
        flattens them). Keras is imported inside, when a model is built."""
        raise NotImplementedError(f"network {self.name!r} does not define build()")

    def output_size(self, size):
        """Spatial size of G_f's output for an input side of `size` pixels (<= 0: too small)."""
        return size

    def min_input_size(self):
        """The smallest input side G_f accepts."""
        return next(size for size in range(1, 1024) if self.output_size(size) > 0)

    def fits(self, input_shape):
        """True when images of `input_shape` (H, W, C) are large enough for G_f."""
        return min(self.output_size(side) for side in input_shape[:2]) > 0
