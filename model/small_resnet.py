"""small_resnet: a residual G_f whose size does not follow the image, for images the paper's
columns were not drawn for.

The paper's columns (model/paper_columns.py) flatten their last feature map:
on images larger than they were drawn for, the first dense layers of G_y and
G_d grow with the image (26.9 M parameters at 100x80 for `gtsrb`, 92 % of
them in those two layers), and so does the cost. This network ends in global
average pooling instead, so its 96 features and its 0.20 M parameters (the
whole DANN's, heads included) are the same at any size:

  input    above MAX_SIDE (64) pixels a side, average-pooled by the smallest
           whole factor that brings it to 64 or less
  stem     conv 3x3 / 2, 24 channels, group norm, ReLU, max-pool 3x3 / 2 (the
           ResNet stem, He et al., CVPR 2016, Table 1, with a 3x3 convolution)
  stage 1  basic residual block, 24 channels        (He et al., CVPR 2016, Fig. 2)
  stage 2  basic residual block, 48 channels, stride 2
  stage 3  basic residual block, 96 channels, stride 2
  global average pool -> 96 features | G_y fc 100, fc 100 | G_d fc 100 (the mnist heads)

Deviation, for a 2-core CPU: the network works on at most 64x64 pixels, so
the residual stages start from at most a 16x16 grid and an update on 128x128
images costs about what one on 64x64 does; detail finer than 1/64 of the
image is averaged away. The stem replaced a 4x4 / 4 "patchify" one, and the
widths 24-48-96 replaced 32-64-128 (for an update at 64x64 within 4x `mnist`'s
at 28x28), each on a rule of docs/own-domains.md written before its runs.

Normalisation: group normalisation (Wu & He, ECCV 2018), 8 groups, after
every convolution. A DANN batch is half source and half target: batch norm
would normalise with statistics of that mix during training and use running
averages of it at test time, which fit neither domain alone (the mismatch
AdaBN and domain-specific batch norm correct for; Li et al., 2017; Chang et
al., CVPR 2019). Group norm's statistics are each image's own, so training
and inference compute the same thing whatever the batch holds. It also bounds
the scale of every residual branch, which the reversed domain gradient would
otherwise grow (on 64x64 shapes, `gtsrb`'s features grew 5.5x in 20 updates
before the run diverged: docs/own-domains.md).

Convolutions and pools pad ("same"), so any image fits.
"""
import dataclasses
import math

from model.network import Network

GROUPS = 8
# The largest image side the stem works on: larger images are averaged down to it.
MAX_SIDE = 64


@dataclasses.dataclass(frozen=True)
class SmallResNet(Network):
    """A ResNet stem and one basic block per width in `widths` (each after the first halves
    the resolution), then global average pooling."""

    widths: tuple = (24, 48, 96)

    def build(self, images):
        import keras

        def norm(name):
            return keras.layers.GroupNormalization(GROUPS, name=f"{name}_gn")

        x = images
        factor = math.ceil(max(images.shape[1:3]) / MAX_SIDE)
        if factor > 1:
            # Larger images are averaged down by a whole factor first (see the docstring).
            x = keras.layers.AveragePooling2D(factor, padding="same", name="downsample")(x)
        x = keras.layers.Conv2D(self.widths[0], 3, strides=2, padding="same", use_bias=False,
                                name="stem_conv")(x)
        x = keras.layers.Activation("relu", name="stem_relu")(norm("stem")(x))
        x = keras.layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x)
        for index, width in enumerate(self.widths, start=1):
            stride = 1 if index == 1 else 2
            name = f"stage{index}"
            y = keras.layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False,
                                    name=f"{name}_conv1")(x)
            y = keras.layers.Activation("relu", name=f"{name}_relu1")(norm(f"{name}_1")(y))
            y = norm(f"{name}_2")(keras.layers.Conv2D(width, 3, padding="same", use_bias=False,
                                                      name=f"{name}_conv2")(y))
            if stride != 1 or x.shape[-1] != width:
                # The projection shortcut of He et al. (option B) where the shape changes.
                x = norm(f"{name}_shortcut")(keras.layers.Conv2D(
                    width, 1, strides=stride, use_bias=False, name=f"{name}_shortcut")(x))
            x = keras.layers.Activation("relu", name=f"{name}_relu2")(
                keras.layers.Add(name=f"{name}_add")([x, y]))
        return keras.layers.GlobalAveragePooling2D(name="pool")(x)

    def output_size(self, size):
        # Padded convolutions and pools never shrink a side to 0.
        return size


SMALL_RESNET = SmallResNet("small_resnet", (100, 100), (100,))
