"""Learning-rate and adaptation-factor schedules of Ganin & Lempitsky (2015), Sec. 5.2.2.

Both are driven by the training progress p = step / total_steps, linear from
0 to 1. They accept Python numbers or tensors, so the same code serves the
compiled train step, the logger and the tests.
"""
import tensorflow as tf
import keras


def progress(step, total_steps):
    """p in [0, 1]: the fraction of training done."""
    return tf.minimum(tf.cast(step, tf.float32) / tf.cast(total_steps, tf.float32), 1.0)


def annealed_learning_rate(p, initial_lr, alpha, beta):
    """mu_p = mu_0 / (1 + alpha * p) ** beta."""
    return initial_lr / tf.pow(1.0 + alpha * tf.cast(p, tf.float32), beta)


def grl_lambda(p, gamma):
    """lambda_p = 2 / (1 + exp(-gamma * p)) - 1: 0 at the start, close to 1 at the end."""
    return 2.0 / (1.0 + tf.exp(-gamma * tf.cast(p, tf.float32))) - 1.0


def delayed_ramp(step, total_steps, start, gamma):
    """0 until p reaches `start`, then lambda's shape over the rest of training:
    2 / (1 + exp(-gamma * q)) - 1 with q = (p - start) / (1 - start).

    The weight schedule of the recipe's target losses (utils/training/target_entropy.py,
    utils/training/virtual_adversarial.py): they start once the features are aligned.
    """
    q = tf.maximum(progress(step, total_steps) - start, 0.0) / max(1.0 - start, 1e-8)
    return grl_lambda(q, gamma)


class RampedWeight:
    """A target term's weight at each step: `weight` * delayed_ramp(step, ...), a pure
    function of the step like lambda_p (the schedule every recipe term follows), and 0
    again from progress `stop` on when `stop` < 1 (a term used over a window only)."""

    def __init__(self, weight, start, gamma, total_steps, stop=1.0):
        self.weight, self.start, self.gamma, self.total_steps = weight, start, gamma, total_steps
        self.stop = stop

    def __call__(self, step):
        weight = self.weight * delayed_ramp(step, self.total_steps, self.start, self.gamma)
        if self.stop >= 1.0:
            return weight
        return tf.where(progress(step, self.total_steps) < self.stop, weight, 0.0)

    def first_active_step(self):
        """The first step whose weight is not exactly 0 (`total_steps` when none is): found
        by bisection on the same ops the compiled step runs, since the ramp is monotone up to
        `stop` and 0 before `start`."""
        low, high = 0, int(self.total_steps)
        while low < high:
            middle = (low + high) // 2
            ramp = self.weight * delayed_ramp(tf.constant(middle, tf.int64), self.total_steps,
                                              self.start, self.gamma)
            if float(ramp) > 0.0:
                high = middle
            else:
                low = middle + 1
        return low


class AnnealedLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """mu_p as a Keras schedule: the optimizer evaluates it from its own step counter
    inside the compiled step, so the rate changes every step without a retrace."""

    def __init__(self, initial_lr, alpha, beta, total_steps):
        self.initial_lr = initial_lr
        self.alpha = alpha
        self.beta = beta
        self.total_steps = total_steps

    def __call__(self, step):
        return annealed_learning_rate(progress(step, self.total_steps),
                                      self.initial_lr, self.alpha, self.beta)

    def get_config(self):
        return {"initial_lr": self.initial_lr, "alpha": self.alpha, "beta": self.beta,
                "total_steps": self.total_steps}
