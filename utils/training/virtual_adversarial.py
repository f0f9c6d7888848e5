"""Virtual adversarial training on target images: a recipe component.

L_vat = E_{x ~ target} [ KL( p(y|x) || p(y|x + r_adv) ) ],
r_adv = radius * g / ||g||,  g = d/dr KL( p(y|x) || p(y|x + r) ) at r = xi * d,
with d a random unit direction and p(y|x) held constant (Miyato et al.,
"Virtual Adversarial Training: A Regularization Method for Supervised and
Semi-Supervised Learning", TPAMI 2018, Eq. 12-14, one power iteration). It
asks the classifier to be locally Lipschitz around each target image, which
is what keeps the conditional-entropy term (utils/training/target_entropy.py) from
pushing decision boundaries through the target data: the two together are
the target terms of VADA, Shu et al., "A DIRT-T Approach to Unsupervised
Domain Adaptation" (ICLR 2018, Eq. 6-7).

Deviations from VADA:
  * Target only: VADA's source VAT weight for MNIST -> MNIST-M is 0 as well.
  * The radius is an L2 norm in [0, 1] pixel units over the whole 28x28x3
    image. DIRT-T's 3.5 is over 32x32x3 images in [-1, 1]; the same
    perturbation per pixel is 3.5 / 2 * sqrt(2352 / 3072) = 1.53 here.
  * xi, the finite-difference step of the power iteration, is 0.05 in the
    same units rather than 1e-6: the images reach the network as 0-255
    floats, where 1e-6 would round away in float32.
  * The weight waits for its start and then ramps up, like the entropy term
    (`schedules.delayed_ramp`).

Cost: two more forward and two more backward passes of G_f and G_y over the
target half (one of each to find r_adv, one of each for the loss), so an
update costs about twice as much once the weight is on (`improved_48k` on the
reference CPU: 20.0 ms per update over a run with VAT on for its second
half, against 13.4 ms without VAT); before `start` the term is skipped
entirely. `every` = k > 1 pays that cost on every k-th update only, with k times the
weight there, so that the term's gradient per update is the same on average (SGD's
momentum spreads each of those updates over the next ten or so). `fraction` = f < 1
computes it on the first f of each update's target images only (they come shuffled), at
about f of its cost, as the mean over those images: the same term, estimated on fewer.
"""
import tensorflow as tf

from utils.training import schedules

# Finite-difference step of the power iteration, in [0, 1] pixel units (L2 norm per image).
XI = 0.05


def unit_directions(vectors):
    """Each example's direction: `vectors` divided by its L2 norm over all but the batch axis."""
    return tf.math.l2_normalize(vectors, axis=list(range(1, vectors.shape.rank)))


def kl_from_logits(reference_logits, logits):
    """Per-example KL( softmax(reference_logits) || softmax(logits) ), in nats."""
    reference_log_p = tf.nn.log_softmax(reference_logits)
    return tf.reduce_sum(tf.exp(reference_log_p) * (reference_log_p - tf.nn.log_softmax(logits)),
                         axis=-1)


def virtual_adversarial_perturbation(classify, images, logits, radius, seed):
    """r_adv (in 0-255 units, like `images`) for each image: the direction of one power
    iteration from a random start, scaled to `radius` in [0, 1] pixel units.

    `seed` (two integers) fixes the random start: a stateless draw, so a resumed
    run draws the same directions as one that was never stopped.
    """
    images = tf.cast(images, tf.float32)
    logits = tf.stop_gradient(logits)
    direction = unit_directions(tf.random.stateless_normal(tf.shape(images), seed=seed))
    with tf.GradientTape() as tape:
        # The probe is in [0, 1] pixel units, so its gradient is not 255 times smaller.
        probe = XI * direction
        tape.watch(probe)
        divergence = tf.reduce_sum(kl_from_logits(logits, classify(images + 255.0 * probe)))
    gradient = tape.gradient(divergence, probe, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    # Rescaled by its largest entry first (as Miyato et al.'s code does): the gradient of a
    # confident prediction can be so small that l2_normalize's epsilon would shorten r_adv.
    gradient /= 1e-12 + tf.reduce_max(tf.abs(gradient), axis=[1, 2, 3], keepdims=True)
    return tf.stop_gradient(radius * 255.0 * unit_directions(gradient))


class TargetVAT:
    """The weighted target VAT loss of one replica's share of the batch."""

    name = "vat"

    def __init__(self, weight, radius, start, gamma, total_steps, global_target_batch, classify,
                 seed=0, every=1, fraction=1.0, trained_classify=None):
        """`classify` maps a batch of 0-255 float images to class logits (G_y after G_f);
        `seed` is the run's seed, from which each update's random start is derived;
        `every` = k computes the term on every k-th update only, weighted k times;
        `fraction` = f on the first f of each replica's target images only;
        `trained_classify` (default `classify`) gives the logits at x + r_adv whose
        gradients train the network, `classify` those through which r_adv is found."""
        # The term's weight at each step: 0 before `start`, then ramped like lambda_p.
        self.weight_at = schedules.RampedWeight(weight, start, gamma, total_steps)
        self.radius, self.global_target_batch = radius, global_target_batch
        self.classify, self.seed, self.every, self.fraction = classify, seed, every, fraction
        self.trained_classify = trained_classify or classify

    def subset(self, target_images, target_logits):
        """The images (and their logits) VAT is computed on, and the global count of them."""
        if self.fraction >= 1.0:
            return target_images, target_logits, self.global_target_batch
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        count = max(1, round(self.fraction * self.global_target_batch / replicas))
        return target_images[:count], target_logits[:count], count * replicas

    def random_seed(self, step):
        """The stateless seed of the random start at `step`: one per update and replica."""
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        return tf.stack([tf.cast(self.seed, tf.int64) * 1024 + tf.cast(replica, tf.int64),
                         tf.cast(step, tf.int64)])

    def loss(self, target_images, target_logits, seed):
        """Mean KL between the predictions at x and at x + r_adv, over the global batch (or
        the images of it that `fraction` keeps)."""
        target_images, target_logits, global_count = self.subset(target_images, target_logits)
        perturbation = virtual_adversarial_perturbation(
            self.classify, target_images, target_logits, self.radius, seed)
        adversarial_logits = self.trained_classify(tf.cast(target_images, tf.float32)
                                                   + perturbation)
        return tf.nn.compute_average_loss(
            kl_from_logits(tf.stop_gradient(target_logits), adversarial_logits),
            global_batch_size=global_count)

    def __call__(self, target_images, target_logits, step):
        weight = self.weight_at(step)
        # Skipped while the weight is 0, so the first part of training costs nothing extra.
        due = weight > 0.0
        if self.every > 1:
            weight *= float(self.every)
            due = tf.logical_and(due, tf.equal(tf.math.floormod(tf.cast(step, tf.int64),
                                                                self.every), 0))
        return tf.cond(due,
                       lambda: weight * self.loss(target_images, target_logits,
                                                  self.random_seed(step)),
                       lambda: tf.constant(0.0))
