"""Mixed-precision training (`--precision`): a training component.

Keras' mixed-precision policies (Micikevicius et al., "Mixed Precision
Training", ICLR 2018): under `mixed_bfloat16` or `mixed_float16` the layers
compute in 16 bits while every variable stays float32, so checkpoints and
weight files are float32 whatever the run's precision, and a run of any
precision is evaluated, imported and exported alike.

What stays float32 under a mixed policy, and why:
  * the input normalisation (model/dann.py): a per-image mean and variance
    of 784 pixels lose digits in 16 bits;
  * the class logits and the domain logit (their Dense layers compute in
    float32), so every loss, softmax, the target terms (entropy, VAT's KL)
    and the refinement's KL are float32;
  * the GRL's lambda (a float32 variable, cast to the gradient's dtype where
    it scales it) and the weight average (float32 variables).

`mixed_float16` also wraps the optimizer in Keras' LossScaleOptimizer
(dynamic loss scaling): the loss is scaled before the gradient, and an update
whose scaled gradient overflows is skipped while the scale halves. Such a
skip is part of the method, not a divergence: the NaN guard then checks the
loss only, and the step still counts (its batch is spent and the schedules go
on), so a run has the same number of steps in any precision. `mixed_bfloat16`
has float32's range and needs no scaling.

On a CPU, 16-bit math is only fast where the hardware has it (AVX512_BF16 or
AMX for bfloat16); elsewhere it is emulated and slower than float32 (README,
"Several devices").
"""
import contextlib

import keras
import tensorflow as tf

from config.config import PRECISIONS  # noqa: F401  (the choices, kept with the config)


@contextlib.contextmanager
def policy(precision):
    """Builds the layers made inside it with Keras' policy `precision` (then restores the
    previous global policy, so models built elsewhere, e.g. by the tools, stay float32)."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def wrap_optimizer(optimizer, precision):
    """`optimizer`, behind dynamic loss scaling under `mixed_float16`."""
    if precision == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def is_loss_scaled(optimizer):
    return isinstance(optimizer, keras.optimizers.LossScaleOptimizer)


def scale_loss(optimizer, loss):
    """The loss the gradient is taken of: scaled under loss scaling. Call it inside the
    tape, so the scaling is on the tape."""
    return optimizer.scale_loss(loss) if is_loss_scaled(optimizer) else loss


def gradients_and_finite(tape, loss, scaled_loss, variables, optimizer):
    """(gradients, finite): the gradients of `scaled_loss` (see `scale_loss`; the optimizer
    unscales them) and whether the update is finite. With loss scaling, `finite` says only
    whether `loss` is, since an overflowing scaled gradient is the loss scaler's to handle."""
    gradients = tape.gradient(scaled_loss, variables)
    if is_loss_scaled(optimizer):
        return gradients, tf.math.is_finite(loss)
    finite = tf.logical_and(tf.math.is_finite(loss),
                            tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in gradients]))
    return gradients, finite


def apply_gradients(optimizer, gradients, variables, count_skipped=True):
    """Applies them. With `count_skipped`, an update the loss scaler skipped still advances
    the optimizer's own counter: the SGD learning-rate schedule reads that counter, which
    must stay the global step. Adam's bias correction wants the updates it applied only."""
    if not is_loss_scaled(optimizer) or not count_skipped:
        optimizer.apply_gradients(zip(gradients, variables))
        return
    before = tf.identity(optimizer.iterations)
    optimizer.apply_gradients(zip(gradients, variables))
    tf.cond(tf.equal(optimizer.iterations, before),
            lambda: tf.identity(optimizer.iterations.assign_add(1)),
            lambda: tf.identity(optimizer.iterations))
