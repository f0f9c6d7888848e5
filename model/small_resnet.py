"""small_resnet: a residual G_f whose cost follows the image and whose size does not.

The paper's columns (model/paper_columns.py) were drawn for 28, 32 and 40
pixel images, and they flatten their last feature map: on larger images the
first dense layers of G_y and G_d grow with the image (26.9 M parameters at
100x80 for `gtsrb`, 92 % of them in those two layers) and so does the cost.
This network ends in global average pooling instead, so its 128 features and
its 0.3 M parameters are the same at any size, and its cost grows with the
pixels only:

  stem     conv 4x4 / 4, 32 channels (a "patchify" stem, Liu et al., "A ConvNet
           for the 2020s", CVPR 2022), group norm, ReLU
  stage 1  basic residual block, 32 channels        (He et al., CVPR 2016, Fig. 2)
  stage 2  basic residual block, 64 channels, stride 2
  stage 3  basic residual block, 128 channels, stride 2
  global average pool -> 128 features | G_y fc 100, fc 100 | G_d fc 100 (the mnist heads)

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

Convolutions pad ("same"), so any image of at least 4x4 pixels fits.
"""
import dataclasses

from model.network import Network

GROUPS = 8


@dataclasses.dataclass(frozen=True)
class SmallResNet(Network):
    """A patchify stem and one basic block per width in `widths` (each after the first halves
    the resolution), then global average pooling."""

    widths: tuple = (32, 64, 128)
    stem_stride: int = 4

    def build(self, images):
        import keras

        def norm(name):
            return keras.layers.GroupNormalization(GROUPS, name=f"{name}_gn")

        x = keras.layers.Conv2D(self.widths[0], self.stem_stride, strides=self.stem_stride,
                                use_bias=False, name="stem_conv")(images)
        x = keras.layers.Activation("relu", name="stem_relu")(norm("stem")(x))
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
        # The stem needs one whole patch; the padded convolutions after it never shrink to 0.
        return size // self.stem_stride


SMALL_RESNET = SmallResNet("small_resnet", (100, 100), (100,))
