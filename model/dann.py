"""Domain-Adversarial Neural Network.

Ganin & Lempitsky (2015), Sec. 3 and 5.2: a shared convolutional feature
extractor G_f, a label classifier G_y and, behind a gradient-reversal layer
R_lambda (Sec. 3.3, Eq. 12-13), a domain classifier G_d. Their layers are one
column of the paper's architecture figure (model/networks.py; `mnist`, the
MNIST -> MNIST-M column, by default).
"""
import dataclasses

import keras
import numpy as np
import tensorflow as tf

from model.networks import NETWORKS, get_network


@tf.custom_gradient
def _reverse_gradient(inputs, grl_lambda):
    def grad(upstream):
        # lambda is float32; under a mixed-precision policy the features are 16-bit.
        return -tf.cast(grl_lambda, upstream.dtype) * upstream, tf.zeros_like(grl_lambda)

    return tf.identity(inputs), grad


@keras.saving.register_keras_serializable(package="dann")
class GradientReversal(keras.layers.Layer):
    """R_lambda (Eq. 12-13): the identity forward, -lambda * dy backward.

    lambda lives in a non-trainable variable, so the train step can change it
    every step (the schedule of Sec. 5.2.2) without retracing.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.grl_lambda = self.add_weight(name="grl_lambda", shape=(), initializer="zeros",
                                          trainable=False)

    def call(self, inputs):
        return _reverse_gradient(inputs, tf.convert_to_tensor(self.grl_lambda))


@keras.saving.register_keras_serializable(package="dann")
class MeanSubtraction(keras.layers.Layer):
    """Scales 0-255 images to [0, 1] and subtracts a per-channel pixel mean.

    The mean is a non-trainable weight, so checkpoints and weight files carry
    it and a restored model needs no outside preprocessing.
    """

    def build(self, input_shape):
        self.pixel_mean = self.add_weight(name="pixel_mean", shape=(input_shape[-1],),
                                          initializer="zeros", trainable=False)

    def call(self, images):
        return tf.cast(images, tf.float32) / 255.0 - tf.convert_to_tensor(self.pixel_mean)


@keras.saving.register_keras_serializable(package="dann")
class InstanceStandardisation(keras.layers.Layer):
    """Standardises each image's channels to zero mean and unit variance.

    Per image and per channel, over the pixels: (x - mean) / sqrt(var + eps).
    This is the "instance-normalised input" of Shu et al., "A DIRT-T Approach
    to Unsupervised Domain Adaptation" (ICLR 2018, Sec. 6.1), used there for
    MNIST -> MNIST-M: it removes most of the colour and contrast shift between
    the domains before the network sees the images. It has no weights.
    """

    def __init__(self, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, images):
        images = tf.cast(images, tf.float32) / 255.0
        mean, variance = tf.nn.moments(images, axes=[1, 2], keepdims=True)
        return (images - mean) * tf.math.rsqrt(variance + self.epsilon)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def build_feature_extractor(input_shape, pixel_mean, input_norm="mean", network=NETWORKS["mnist"]):
    """G_f: the network's convolutions, each with a ReLU and its max-pool, then flatten
    (`mnist`: conv 5x5x32, ReLU, max-pool 2, conv 5x5x48, ReLU, max-pool 2).

    Takes raw 0-255 images (any dtype). `input_norm` is `mean` (the paper's
    mean subtraction; `pixel_mean` is per channel, in [0, 1]) or `instance`
    (per-image standardisation, `pixel_mean` unused).
    """
    images = keras.Input(shape=input_shape, name="images")
    # The normalisation computes in float32 under any policy (utils/training/precision.py).
    if input_norm == "instance":
        x = InstanceStandardisation(name="instance_standardisation", dtype="float32")(images)
    else:
        mean_subtraction = MeanSubtraction(name="mean_subtraction", dtype="float32")
        x = mean_subtraction(images)
        mean_subtraction.pixel_mean.assign(np.asarray(pixel_mean, np.float32))
    for index, conv in enumerate(network.convs, start=1):
        x = keras.layers.Conv2D(conv.filters, conv.kernel, padding=conv.padding,
                                activation="relu", name=f"conv{index}")(x)
        if conv.pool:
            x = keras.layers.MaxPooling2D(conv.pool, conv.pool_stride or None,
                                          name=f"pool{index}")(x)
    # float32 features under any policy: the validators, guard and Projector read them.
    features = keras.layers.Flatten(name="flatten", dtype="float32")(x)
    return keras.Model(images, features, name="feature_extractor")


def build_label_classifier(feature_dim, num_classes, network=NETWORKS["mnist"]):
    """G_y: the network's FC ReLU layers, then the class logits (`mnist`: FC100, ReLU, FC100,
    ReLU, FC10)."""
    features = keras.Input(shape=(feature_dim,), name="features")
    x = features
    for index, units in enumerate(network.label_units, start=1):
        x = keras.layers.Dense(units, activation="relu", name=f"fc{index}")(x)
    # float32 logits under any policy: the losses and softmaxes read them.
    logits = keras.layers.Dense(num_classes, name="class_logits", dtype="float32")(x)
    return keras.Model(features, logits, name="label_classifier")


def build_domain_classifier(feature_dim, network=NETWORKS["mnist"]):
    """G_d behind R_lambda: GRL, the network's FC ReLU layers, one logit (target = 1)
    (`mnist`: GRL, FC100, ReLU, logit)."""
    features = keras.Input(shape=(feature_dim,), name="features")
    x = GradientReversal(name="gradient_reversal")(features)
    for index, units in enumerate(network.domain_units, start=1):
        x = keras.layers.Dense(units, activation="relu", name=f"fc{index}")(x)
    logit = keras.layers.Dense(1, name="domain_logit", dtype="float32")(x)
    return keras.Model(features, logit, name="domain_classifier")


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
    """Builds G_f, G_y, G_d of `network` (model/networks.py) and composes them into one
    functional `dann` model."""
    network = get_network(network, input_shape)
    feature_extractor = build_feature_extractor(input_shape, pixel_mean, input_norm, network)
    feature_dim = feature_extractor.output.shape[-1]
    label_classifier = build_label_classifier(feature_dim, num_classes, network)
    domain_classifier = build_domain_classifier(feature_dim, network)
    images = keras.Input(shape=input_shape, name="images")
    features = feature_extractor(images)
    model = keras.Model(images, [label_classifier(features), domain_classifier(features)],
                        name="dann")
    return DANN(feature_extractor, label_classifier, domain_classifier, model)
