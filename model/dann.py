"""Domain-Adversarial Neural Network: the composition of its parts.

Ganin & Lempitsky (2015), Sec. 3 and 5.2: a shared feature extractor G_f, a
label classifier G_y and, behind a gradient-reversal layer R_lambda (Sec.
3.3, Eq. 12-13), a domain classifier G_d. G_f is the input normalisation
(model/normalisation.py), a registered network (model/networks.py; `mnist`,
the MNIST -> MNIST-M column of the paper, by default) and a flatten; the heads
are in model/heads.py, R_lambda in model/grl.py.
"""
import dataclasses

import keras
import numpy as np

from model.grl import GradientReversal  # noqa: F401 -- model.GradientReversal
from model.heads import build_domain_classifier, build_label_classifier
from model.networks import NETWORKS, get_network
from model.normalisation import InstanceStandardisation, MeanSubtraction


def build_feature_extractor(input_shape, pixel_mean, input_norm="mean", network=NETWORKS["mnist"]):
    """G_f: the input normalisation, the network's layers, then flatten (`mnist`: conv 5x5x32,
    ReLU, max-pool 2, conv 5x5x48, ReLU, max-pool 2).

    Takes raw 0-255 images (any dtype). `input_norm` is `mean` (the paper's
    mean subtraction; `pixel_mean` is per channel, in [0, 1]) or `instance`
    (per-image standardisation, `pixel_mean` unused).
    """
    images = keras.Input(shape=input_shape, name="images")
    # The normalisation computes in float32 under any policy (utils/training/precision.py).
    if getattr(network, "raw_pixels", False):
        # A pretrained backbone's own preprocessing takes the 0-255 pixels (model/applications.py).
        x = keras.layers.Rescaling(1.0, name="pixels", dtype="float32")(images)
    elif input_norm == "instance":
        x = InstanceStandardisation(name="instance_standardisation", dtype="float32")(images)
    else:
        mean_subtraction = MeanSubtraction(name="mean_subtraction", dtype="float32")
        x = mean_subtraction(images)
        mean_subtraction.pixel_mean.assign(np.asarray(pixel_mean, np.float32))
    x = network.build(x)
    # float32 features under any policy: the validators, guard and Projector read them.
    features = keras.layers.Flatten(name="flatten", dtype="float32")(x)
    return keras.Model(images, features, name="feature_extractor")


@dataclasses.dataclass
class DANN:
    """The three named sub-models and the functional model composing them.

    `model(images)` returns `[class_logits, domain_logit]`; the train step
    calls the parts directly so the feature extractor runs once per step.
    """

    feature_extractor: keras.Model
    label_classifier: keras.Model
    domain_classifier: keras.Model
    model: keras.Model

    @property
    def gradient_reversal(self):
        return self.domain_classifier.get_layer("gradient_reversal")


def build_dann(input_shape=(28, 28, 3), num_classes=10, pixel_mean=(0.0, 0.0, 0.0),
               input_norm="mean", network="mnist"):
    """Builds G_f, G_y, G_d of the registered `network` (model/networks.py) and composes them
    into one functional `dann` model. The parts are created in that order, always: Keras'
    seeded initialisers draw in creation order, so a deterministic run depends on it, and
    checkpoints find the layers by these names and this nesting."""
    network = get_network(network, input_shape)
    feature_extractor = build_feature_extractor(input_shape, pixel_mean, input_norm, network)
    feature_dim = feature_extractor.output.shape[-1]
    label_classifier = build_label_classifier(feature_dim, num_classes, network.label_units)
    domain_classifier = build_domain_classifier(feature_dim, network.domain_units)
    images = keras.Input(shape=input_shape, name="images")
    features = feature_extractor(images)
    model = keras.Model(images, [label_classifier(features), domain_classifier(features)],
                        name="dann")
    return DANN(feature_extractor, label_classifier, domain_classifier, model)
