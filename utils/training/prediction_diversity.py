"""Diversity of the label classifier's predictions on target images: a recipe component.

L_div = KL( p_bar || uniform ) = log K - H(p_bar),   p_bar = E_{x ~ target batch} p(y|x),

minimised, i.e. the entropy of the batch's mean prediction maximised. With the
conditional entropy (utils/training/target_entropy.py) it makes the mutual
information between target images and their predicted classes: Krause, Perona
& Gomes, "Discriminative Clustering by Regularized Information Maximization"
(NIPS 2010, Eq. 4); Liang, Hu & Feng, "Do We Really Need to Access the Source
Data?" (SHOT, ICML 2020, Eq. 3-4), where it is the "diversity" loss. The
conditional entropy alone is also minimised by sending a whole class of
target images into a neighbouring one with confidence; this term makes that
costly, which is why it follows the entropy term's schedule (`entropy_start`,
then the same ramp).

Deviations from SHOT: an unweighted KL to the uniform distribution (it
assumes the target's classes are about balanced, as MNIST-M's are), computed
on each update's target half rather than on the whole target set, and on each
replica's share of it under tf.distribute (the mean of the replicas' terms, not
the term of the global batch's mean prediction). Cost: none beyond a softmax of
the target logits the other terms already compute.
"""
import math

import tensorflow as tf

from utils.training import schedules


def divergence_from_uniform(logits):
    """KL( mean softmax(`logits`) || uniform ) over the batch, in nats: log K - H(p_bar)."""
    mean_probabilities = tf.reduce_mean(tf.nn.softmax(logits), axis=0)
    entropy = -tf.reduce_sum(mean_probabilities * tf.math.log(mean_probabilities + 1e-8))
    return math.log(logits.shape[-1]) - entropy


class TargetDiversity:
    """The weighted diversity loss of one replica's share of the target batch."""

    name = "diversity"

    def __init__(self, weight, start, gamma, total_steps):
        # The term's weight at each step: 0 before `start`, then ramped like lambda_p.
        self.weight_at = schedules.RampedWeight(weight, start, gamma, total_steps)

    def __call__(self, target_images, target_logits, step):
        # A function of the batch mean, so not a per-example loss: each replica's share gives
        # its own term, and dividing by the replicas makes their sum the mean of those terms.
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        return self.weight_at(step) * divergence_from_uniform(target_logits) / replicas
