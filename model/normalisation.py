"""The input normalisations, G_f's first layer: raw 0-255 images in, float32 out.

`mean` is the paper's mean-subtracted input (Ganin & Lempitsky, 2015,
Sec. 5.2); `instance` the per-image standardisation of Shu et al. (ICLR 2018).
"""
import keras
import tensorflow as tf


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
