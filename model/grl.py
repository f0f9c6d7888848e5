"""The gradient-reversal layer R_lambda of Ganin & Lempitsky (2015), Sec. 3.3, Eq. 12-13."""
import keras
import tensorflow as tf


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
