"""An exponential moving average of the weights, used for evaluation: a recipe component.

theta_ema <- d_t * theta_ema + (1 - d_t) * theta after every update, with
d_t = min(decay, (1 + t) / (10 + t)) so that early averages are not dominated
by the random initialisation (the num_updates rule of TensorFlow's
tf.train.ExponentialMovingAverage). Polyak & Juditsky, "Acceleration of
Stochastic Approximation by Averaging" (SIAM J. Control Optim. 1992); the
teacher of Mean Teacher (Tarvainen & Valpola, NIPS 2017) is such an average,
and Shu et al.'s released VADA/DIRT-T code (ICLR 2018) evaluates one too.

Training never reads the average: it only changes which weights are evaluated
and saved as the run's final model. The adversarial game makes the raw
weights of the last step oscillate, and the average smooths that out.
"""
import tensorflow as tf


class WeightAverage(tf.Module):
    """Keeps `averaged` (a model of the same architecture) as the EMA of `model`."""

    def __init__(self, model, averaged, decay):
        super().__init__(name="weight_average")
        self.model, self.averaged, self.decay = model, averaged, decay
        for target, source in zip(averaged.weights, model.weights):
            target.assign(source)

    def update(self, step):
        """One EMA step after the update numbered `step` (0-based)."""
        t = tf.cast(step, tf.float32)
        decay = tf.minimum(self.decay, (1.0 + t) / (10.0 + t))
        for target, source in zip(self.averaged.weights, self.model.weights):
            if source.trainable:
                target.assign(decay * target + (1.0 - decay) * source)
            else:
                # Non-trainable weights (lambda, the pixel mean) are copied, not averaged.
                target.assign(source)
