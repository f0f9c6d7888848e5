"""Refinement on the target after adaptation (DIRT-T): a recipe component.

Shu et al., "A DIRT-T Approach to Unsupervised Domain Adaptation" (ICLR 2018,
arXiv 1802.08735), Sec. 5 and Eq. 14: once the adaptation phase is over, the
model is refined on target images alone, with no source and no domain loss,

    min_theta  lambda_t * (L_ent(theta) + L_vat(theta)) + beta * E_{x~target} KL(h_teacher(x) || h_theta(x)),

where h_teacher is a frozen copy of the model, re-copied every
`refine_interval` updates, so each stretch of refinement is a proximal step
that may not move far from where the last one ended. L_ent is the target
conditional entropy (utils/training/target_entropy.py) and L_vat the target
VAT loss (utils/training/virtual_adversarial.py): the same two terms as the
adaptation phase of `improved_48k`, now without the source to hold the decision
boundaries in place, which is why the KL term is needed.

As in the authors' released code (RuiShu/dirt-t, codebase/models/dirtt.py and
codebase/train.py):
  * the KL term and the two target terms see two independent batches of
    target images (theirs: a "pseudo-labelled source" batch and a target
    batch); here they are the two halves of the run's own batch;
  * the optimizer is a fresh Adam with beta_1 = 0.5 (here lr
    `refine_learning_rate`), the adaptation phase's optimizer being left as it was;
  * the teacher is a copy of the weight average (EMA), refreshed at the start
    of refinement and every `refine_interval` updates; the average goes on
    being updated and is what is evaluated and saved;
  * the weights of the three terms are equal, 1e-2 each (Adam makes only their
    ratios matter).

Deviations: 32 + 32 target images per update rather than 64 + 64 (the run's
batch, so an update costs about what an adaptation update with VAT costs);
the KL is KL(teacher || student) itself rather than the cross-entropy to the
teacher's probabilities, which differs by the teacher's entropy, a constant
(same gradient, but a value that reaches 0 when the two agree); without a
weight average the teacher copies the raw weights.
"""
import keras
import tensorflow as tf

from utils.training import precision
from utils.training.target_entropy import conditional_entropy
from utils.training.virtual_adversarial import TargetVAT, kl_from_logits
from utils.training.window_sums import WindowSums

# Adam's beta_1 in DIRT-T's released code (tf.train.AdamOptimizer(lr, 0.5)).
ADAM_BETA_1 = 0.5


class RefinementMetrics(WindowSums):
    """The refinement's terms over the logging window (utils/training/window_sums.py)."""

    NAMES = ("kl", "entropy", "vat", "agree", "count")

    def __init__(self):
        super().__init__("refinement_metrics")

    def result(self):
        """The window's means (unweighted terms), or {} for a window without refinement."""
        sums = self.read()
        if sums["count"] == 0:
            return {}
        return {"loss/refine_kl": sums["kl"] / sums["count"],
                "loss/refine_entropy": sums["entropy"] / sums["count"],
                "loss/refine_vat": sums["vat"] / sums["count"],
                # How often the student's class is the teacher's (1 right after a refresh).
                "acc/teacher_agreement": sums["agree"] / sums["count"]}


class Refinement(tf.Module):
    """The refinement phase's state (teacher, optimizer, window sums) and its objective.

    `dann` is the student (model.DANN), `evaluated` the model the teacher copies
    (the weight average, or the student itself), `teacher` a model of the same
    architecture. It is an objective as utils/training/objective.py's is
    (`forward`, `loss_terms`, `total`, `record`, `prepare`, `trained_variables`), so the
    one train step (utils/training/step.py) runs both phases; its optimizer is
    its own Adam, and the run's global step, which counts both phases, is the
    step's.
    """

    # Its terms are logged unweighted by its metrics (loss/refine_<term>), their weights
    # being constants of the config; their weighted sum is loss/total_loss. (The adaptation
    # logs its recipe terms weighted instead: their weights follow a schedule.)
    logged_terms = ()

    def __init__(self, config, dann, evaluated, teacher, global_target_batch):
        super().__init__(name="refinement")
        self.start, self.interval = config.adaptation_steps, config.refine_interval
        self.kl_weight = config.refine_kl_weight
        self.entropy_weight = config.refine_entropy_weight
        self.vat_weight = config.refine_vat_weight
        self.dann, self.evaluated, self.teacher = dann, evaluated, teacher
        self.global_target_batch = global_target_batch
        self.optimizer = precision.wrap_optimizer(
            keras.optimizers.Adam(config.refine_learning_rate, beta_1=ADAM_BETA_1,
                                  global_clipnorm=config.clip_norm or None), config.precision)
        # Built over the whole model, as its first release did (the checkpoint holds
        # slots for the domain head too, which gets no gradient here).
        self.optimizer.build(dann.model.trainable_variables)
        self.metrics = RefinementMetrics()
        self.vat = TargetVAT(1.0, config.vat_radius, 0.0, config.grl_gamma, 1, global_target_batch,
                             self.classify, seed=config.seed)

    def classify(self, images):
        """G_y(G_f(images)) of the student, in training mode (0-255 images)."""
        return self.dann.label_classifier(self.dann.feature_extractor(images, training=True),
                                          training=True)

    def refresh_teacher(self):
        for target, source in zip(self.teacher.weights, self.evaluated.weights):
            target.assign(source)

    def prepare(self, step):
        """Before the update at `step`: the teacher is refreshed at the start of refinement
        and every `interval` updates after (inside the compiled step, so a resumed run
        refreshes it at the same steps; the teacher is in the checkpoint between)."""
        def refresh():
            self.refresh_teacher()
            return tf.constant(True)

        tf.cond(tf.equal((step - self.start) % self.interval, 0), refresh,
                lambda: tf.constant(False))

    def forward(self, batch, step, target_terms=True):
        """The weighted terms of Eq. 14 on one replica's share of the batch, and what the
        window sums read. `batch` is two independent halves of target images (the middle,
        labels, is unused): KL to the teacher on the first, entropy and VAT on the second.
        Its terms are never idle, so `target_terms` is ignored."""
        pseudo_images, _, target_images = batch
        teacher_logits = tf.stop_gradient(self.teacher(pseudo_images, training=False)[0])
        student_logits = self.classify(pseudo_images)
        kl = kl_from_logits(teacher_logits, student_logits)
        target_logits = self.classify(target_images)
        entropy = conditional_entropy(target_logits)
        vat = self.vat.loss(target_images, target_logits, self.vat.random_seed(step))

        def mean(values):
            return tf.nn.compute_average_loss(values, global_batch_size=self.global_target_batch)

        terms = {"refine_kl": self.kl_weight * mean(kl),
                 "refine_entropy": self.entropy_weight * mean(entropy),
                 "refine_vat": self.vat_weight * vat}
        agree = tf.equal(tf.argmax(teacher_logits, axis=1), tf.argmax(student_logits, axis=1))
        # Sums of the unweighted terms over this replica's images (VAT's loss is a mean
        # over the global batch already), so the window means add up across replicas.
        window = dict(kl=tf.reduce_sum(kl), entropy=tf.reduce_sum(entropy),
                      vat=vat * self.global_target_batch,
                      agree=tf.reduce_sum(tf.cast(agree, tf.float32)), count=tf.size(kl))
        return terms, window

    def loss_terms(self, batch, step):
        """{term: weighted loss} of one replica's share of `batch` at `step`."""
        return self.forward(batch, step)[0]

    # Every term of the refinement is on from its first update.
    idle_steps = 0

    @staticmethod
    def total(terms):
        """The loss minimised: the three weighted terms in one sum (its shape, like the
        adaptation's, fixes the order gradients are added in)."""
        return tf.add_n(list(terms.values()))

    def record(self, window):
        self.metrics.update(**window)

    @property
    def trained_variables(self):
        """G_f's and G_y's weights: the domain head has no loss in this phase and stays as it is."""
        return (self.dann.feature_extractor.trainable_variables
                + self.dann.label_classifier.trainable_variables)
