"""Backbones from `keras.applications`: a pretrained G_f for photographs.

The paper's Office experiments fine-tune a network pretrained on ImageNet
(Ganin et al., JMLR 2016, Sec. 5.2.3); every maintained domain-adaptation
library centres on ResNet-50. Each entry here is a `keras.applications`
network built without its classifier (`include_top=False`, global average
pooling), named `backbone` inside G_f, with the label and domain heads on its
pooled features:

  resnet50            ResNet50, caffe preprocessing (RGB -> BGR, ImageNet mean subtracted)
  efficientnet_b0     EfficientNetB0, which rescales and normalises inside itself
  mobilenet_v3_small  MobileNetV3Small, which rescales to [-1, 1] inside itself

Each takes raw 0-255 pixels: its own preprocessing is inside the model (the
run's --input-norm does not apply), so predict and the exported SavedModel
take plain uint8 images. Grey images are repeated to three channels.
Heads: G_y fc 256 (the bottleneck of the Office experiments), G_d fc 1024,
fc 1024 (JMLR 2016, Sec. 5.2.3).

Weights (--backbone-weights, utils/training/backbone.py): none (random), `imagenet`
(Keras fetches and caches them; needs a network) or a local file: the one
Keras caches in ~/.keras/models/ or any .weights.h5 saved from the same
application built without its top.
"""
import dataclasses

from model.network import Network


@dataclasses.dataclass(frozen=True)
class KerasApplication(Network):
    """A `keras.applications` constructor without its top, pooled."""

    constructor: str = ""
    caffe_preprocessing: bool = False
    min_size: int = 32
    # G_f's own preprocessing takes the raw pixels (model/dann.py skips --input-norm).
    raw_pixels = True

    def backbone(self, input_shape, weights=None):
        """The application alone, on three-channel images of `input_shape`'s size."""
        import keras

        constructor = getattr(keras.applications, self.constructor)
        return constructor(include_top=False, weights=weights, pooling="avg",
                           input_shape=(input_shape[0], input_shape[1], 3))

    def build(self, images):
        import keras

        x = images
        if x.shape[-1] == 1:
            x = keras.layers.Concatenate(name="grey_to_rgb")([x, x, x])
        if self.caffe_preprocessing:
            x = keras.layers.Lambda(caffe_preprocess, name="caffe_preprocessing")(x)
        backbone = self.backbone(tuple(x.shape[1:]))
        backbone.name = "backbone"
        return backbone(x)

    def output_size(self, size):
        return size if size >= self.min_size else 0


def caffe_preprocess(images):
    """keras.applications.resnet50.preprocess_input, in the graph: RGB -> BGR, minus the
    ImageNet mean of each channel."""
    import keras

    return keras.applications.resnet50.preprocess_input(images)


RESNET50 = KerasApplication("resnet50", (256,), (1024, 1024), "ResNet50", True)
EFFICIENTNET_B0 = KerasApplication("efficientnet_b0", (256,), (1024, 1024), "EfficientNetB0")
MOBILENET_V3_SMALL = KerasApplication("mobilenet_v3_small", (256,), (1024, 1024),
                                      "MobileNetV3Small")
