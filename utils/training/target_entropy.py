"""Conditional entropy of the label classifier on target images: a recipe component.

L_ent = E_{x ~ target} [ -sum_k p(k|x) log p(k|x) ], minimised so that the
decision boundaries avoid dense regions of target data (the cluster
assumption): Grandvalet & Bengio, "Semi-supervised Learning by Entropy
Minimization" (NIPS 2004); used with DANN as the conditional-entropy term of
VADA, Shu et al., "A DIRT-T Approach to Unsupervised Domain Adaptation"
(ICLR 2018, Eq. 5), and of Long et al., "Unsupervised Domain Adaptation with
Residual Transfer Networks" (NIPS 2016).

Its weight is 0 until the training progress p reaches `start`, then follows
the shape of the paper's adaptation schedule over the rest of training:
w_p = weight * (2 / (1 + exp(-gamma * q)) - 1), q = (p - start) / (1 - start)
(`schedules.delayed_ramp`).
The delay matters: from the first step, the term locks in the source-only
model's mistakes on the target domain before the features are aligned.
"""
import tensorflow as tf

from utils.training import schedules


def conditional_entropy(logits):
    """Per-example entropy (nats) of softmax(`logits`)."""
    log_probabilities = tf.nn.log_softmax(logits)
    return -tf.reduce_sum(tf.exp(log_probabilities) * log_probabilities, axis=-1)


class TargetEntropy:
    """The weighted target conditional-entropy loss of one replica's share of the batch."""

    name = "entropy"

    def __init__(self, weight, start, gamma, total_steps, global_target_batch):
        # w_p for the update at `step` (a pure function of the step, like lambda_p).
        self.weight_at = schedules.RampedWeight(weight, start, gamma, total_steps)
        self.global_target_batch = global_target_batch

    def __call__(self, target_images, target_logits, step):
        """w_p * mean entropy; dividing by the global batch makes replicas sum to the mean."""
        return self.weight_at(step) * tf.nn.compute_average_loss(
            conditional_entropy(target_logits), global_batch_size=self.global_target_batch)
