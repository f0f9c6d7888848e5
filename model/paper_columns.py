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

from model.network import Network


@dataclasses.dataclass(frozen=True)
class Conv:
    filters: int
    kernel: int
    pool: int = 0          # max-pool size after the ReLU; 0: none
    pool_stride: int = 0   # 0: the pool size
    padding: str = "valid"


@dataclasses.dataclass(frozen=True)
class ConvStack(Network):
    """G_f as a stack of convolutions, each with a ReLU and its max-pool: layers conv1, pool1,
    conv2, pool2, ... in that order (checkpoints name them; seeded initialisers follow it)."""

    convs: Tuple[Conv, ...] = ()
    native_size: int = 0

    def build(self, images):
        import keras

        x = images
        for index, conv in enumerate(self.convs, start=1):
            x = keras.layers.Conv2D(conv.filters, conv.kernel, padding=conv.padding,
                                    activation="relu", name=f"conv{index}")(x)
            if conv.pool:
                x = keras.layers.MaxPooling2D(conv.pool, conv.pool_stride or None,
                                              name=f"pool{index}")(x)
        return x

    def output_size(self, size):
        for conv in self.convs:
            if conv.padding == "valid":
                size = size - conv.kernel + 1
            if conv.pool and size > 0:
                stride = conv.pool_stride or conv.pool
                size = (size - conv.pool) // stride + 1 if size >= conv.pool else 0
            if size <= 0:
                return 0
        return size


# Each at the size the paper trained it on (Sec. 5.2 of JMLR 2016: MNIST 28x28, SVHN 32x32,
# GTSRB resized to 40x40): images of another size are resized to it unless --input-shape
# says otherwise, so that the first dense layers do not grow with the image.
MNIST = ConvStack("mnist", (100, 100), (100,), (Conv(32, 5, 2), Conv(48, 5, 2)), 28)
SVHN = ConvStack("svhn", (3072, 2048), (1024, 1024),
                 (Conv(64, 5, 3, 2, "same"), Conv(64, 5, 3, 2, "same"),
                  Conv(128, 5, padding="same")), 32)
GTSRB = ConvStack("gtsrb", (512,), (1024, 1024),
                  (Conv(96, 5, 2), Conv(144, 3, 2), Conv(256, 5, 2)), 40)
