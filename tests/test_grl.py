import numpy as np
import tensorflow as tf

from model.dann import GradientReversal


def test_forward_is_identity_and_backward_is_minus_lambda_dy():
    layer = GradientReversal()
    x = tf.constant(np.random.default_rng(0).normal(size=(4, 7)), tf.float32)
    upstream = tf.constant(np.random.default_rng(1).normal(size=(4, 7)), tf.float32)
    layer.grl_lambda.assign(0.37)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        objective = tf.reduce_sum(y * upstream)
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    np.testing.assert_allclose(tape.gradient(objective, x).numpy(), -0.37 * upstream.numpy(),
                               rtol=1e-6)


def test_changing_lambda_changes_gradient_without_retrace():
    layer = GradientReversal()
    x = tf.ones((2, 3))

    @tf.function
    def gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(layer(x))
        return tape.gradient(total, x)

    results = []
    for value in (0.0, 0.5, 1.0):
        layer.grl_lambda.assign(value)
        results.append(gradient(x).numpy())
    assert gradient.experimental_get_tracing_count() == 1
    for value, result in zip((0.0, 0.5, 1.0), results):
        np.testing.assert_allclose(result, -value * np.ones((2, 3)))
