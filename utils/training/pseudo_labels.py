"""Pseudo-labels from the weight average on confident target images: a recipe component.

L_pl = E_{x ~ target batch} [ 1{max_k q(k|x) >= tau} * CE(argmax_k q(k|x), p(.|x)) ],

where q is the prediction of the weight average (utils/training/weight_average.py, the
teacher, no gradient) and p the trained network's, minimised on the target half of
each update. An exponential moving average of the weights as the teacher is Mean
Teacher's (Tarvainen & Valpola, NIPS 2017); keeping only the teacher's confident
predictions is the confidence thresholding of French, Mackiewicz & Fisher,
"Self-ensembling for visual domain adaptation" (ICLR 2018, Sec. 3.1), and hard
labels above a threshold are FixMatch's form of it (Sohn et al., NeurIPS 2020, Eq. 4).

Why beside (or instead of) the conditional entropy (utils/training/target_entropy.py):
the entropy term's target is the network's own prediction of the same update, so a
class the network starts to misread is pushed further the same way at once. The
average moves by 1 - decay of each update (1,000 updates at 0.999), so its labels
lag behind such a slide, and target images it is unsure of get no label at all.

The weight is 0 until the progress p reaches `start`, then ramps like the entropy
term's (`schedules.delayed_ramp`); the recipe gives it `entropy_start`. With `stop` < 1
it is 0 again from p = stop on: an anchor over the first updates of the other target
terms only, where a run that slides into confident mistakes does so.

Deviations from French et al.: hard labels and a cross-entropy rather than their
squared difference of probabilities; no augmentation of the student's input (the
student's target logits are the ones the update computes anyway, so the term costs one
forward pass of the average over the target half, in inference mode, once it has
started); the mean is over the whole target half, masked images counting as 0 (theirs
too).
"""
import tensorflow as tf

from utils.training import schedules


def confident_pseudo_labels(teacher_logits, threshold):
    """(labels, mask): the teacher's classes, and 1.0 where its probability is >= threshold."""
    probabilities = tf.nn.softmax(tf.cast(teacher_logits, tf.float32))
    labels = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    mask = tf.cast(tf.reduce_max(probabilities, axis=-1) >= threshold, tf.float32)
    return labels, mask


class TargetPseudoLabels:
    """The weighted pseudo-label loss of one replica's share of the target batch.

    `teacher` maps 0-255 images to the weight average's class logits.
    """

    name = "pseudo_label"

    def __init__(self, weight, threshold, start, gamma, total_steps, global_target_batch,
                 teacher, stop=1.0):
        # The term's weight at each step: 0 before `start`, then ramped like lambda_p,
        # and 0 again from `stop` on.
        self.weight_at = schedules.RampedWeight(weight, start, gamma, total_steps, stop)
        self.threshold, self.global_target_batch, self.teacher = (threshold, global_target_batch,
                                                                   teacher)

    def loss(self, target_logits, teacher_logits):
        """The unweighted term: masked cross-entropy to the teacher's confident classes,
        divided by the global target batch so that the replicas' shares sum to the mean."""
        labels, mask = confident_pseudo_labels(tf.stop_gradient(teacher_logits), self.threshold)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels, tf.cast(target_logits, tf.float32))
        return tf.nn.compute_average_loss(mask * losses,
                                          global_batch_size=self.global_target_batch)

    def __call__(self, target_images, target_logits, step):
        weight = self.weight_at(step)
        # Skipped while the weight is 0, so updates outside [start, stop) pay nothing for the
        # teacher.
        return tf.cond(weight > 0.0,
                       lambda: weight * self.loss(target_logits, self.teacher(target_images)),
                       lambda: tf.constant(0.0))
