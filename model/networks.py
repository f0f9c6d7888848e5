"""The three architectures of the paper, one per column of its architecture figure.

Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 2016,
Fig. 4 (the same networks are in the supplement of Ganin & Lempitsky, ICML
2015): the feature extractor G_f is a stack of convolutions, each with a ReLU
and optionally a max-pool; the label predictor G_y and the domain classifier
G_d (behind the gradient-reversal layer) are fully connected ReLU layers
followed by the class logits and the one domain logit.

  mnist:  conv 5x5 32, pool 2; conv 5x5 48, pool 2 | G_y fc 100, fc 100 | G_d fc 100
  svhn:   conv 5x5 64, pool 3x3/2; conv 5x5 64, pool 3x3/2; conv 5x5 128
          | G_y fc 3072, fc 2048 | G_d fc 1024, fc 1024
  gtsrb:  conv 5x5 96, pool 2; conv 3x3 144, pool 2; conv 5x5 256, pool 2
          | G_y fc 512 | G_d fc 1024, fc 1024

Deviations, and interpretations where the figure is silent:
  * `svhn` pads its convolutions ("same"): without padding a 32x32 input
    would shrink to nothing before the third convolution. Pools are unpadded
    (Keras' "valid", which rounds down where Caffe rounds up).
  * `mnist` and `gtsrb` use unpadded convolutions, as their sizes in the
    figure imply (28 -> 24 -> 12 -> 8 -> 4 and 40 -> 36 -> 18 -> 16 -> 8 -> 4 -> 2).
  * No dropout and no local response normalisation in any column.
"""
import dataclasses
from typing import Tuple

from utils.io import UserError


@dataclasses.dataclass(frozen=True)
class Conv:
    filters: int
    kernel: int
    pool: int = 0          # max-pool size after the ReLU; 0: none
    pool_stride: int = 0   # 0: the pool size
    padding: str = "valid"


@dataclasses.dataclass(frozen=True)
class Network:
    name: str
    convs: Tuple[Conv, ...]
    label_units: Tuple[int, ...]
    domain_units: Tuple[int, ...]

    def output_size(self, size):
        """Spatial size of G_f's output for an input of `size` pixels (<= 0: too small)."""
        for conv in self.convs:
            if conv.padding == "valid":
                size = size - conv.kernel + 1
            if conv.pool and size > 0:
                stride = conv.pool_stride or conv.pool
                size = (size - conv.pool) // stride + 1 if size >= conv.pool else 0
            if size <= 0:
                return 0
        return size

    def min_input_size(self):
        return next(size for size in range(1, 1024) if self.output_size(size) > 0)


NETWORKS = {
    "mnist": Network("mnist", (Conv(32, 5, 2), Conv(48, 5, 2)), (100, 100), (100,)),
    "svhn": Network("svhn", (Conv(64, 5, 3, 2, "same"), Conv(64, 5, 3, 2, "same"),
                             Conv(128, 5, padding="same")), (3072, 2048), (1024, 1024)),
    "gtsrb": Network("gtsrb", (Conv(96, 5, 2), Conv(144, 3, 2), Conv(256, 5, 2)), (512,),
                     (1024, 1024)),
}


def default_network(input_shape):
    """The column the paper used for inputs of this size: 28x28 digits (mnist), 32x32
    house numbers (svhn), 40x40 traffic signs (gtsrb)."""
    size = min(input_shape[:2])
    return "mnist" if size < 32 else "svhn" if size < 40 else "gtsrb"


def get_network(name, input_shape=None):
    """The Network called `name`, checked against `input_shape` when given."""
    if name not in NETWORKS:
        raise UserError(f"unknown network {name!r}; use one of {', '.join(NETWORKS)}")
    network = NETWORKS[name]
    if input_shape is not None and min(network.output_size(side) for side in input_shape[:2]) <= 0:
        need = network.min_input_size()
        raise UserError(f"--input-shape {','.join(map(str, input_shape))} is too small for "
                        f"--network {name}, which needs at least {need}x{need} images; pass a "
                        f"larger --input-shape (e.g. {need},{need},{input_shape[2]}) or another "
                        "--network")
    return network
