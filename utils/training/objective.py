"""The DANN objective of the adaptation phase: its loss terms, their sum, what the window logs.

Ganin & Lempitsky (2015), Sec. 3.2-3.3: the label loss L_y on the labelled
half and the domain loss L_d on the whole batch are minimised together, and
the gradient-reversal layer turns the domain gradient reaching the features
into -lambda_p * dL_d/dtheta_f (Eq. 13), with lambda_p from the schedule of
Sec. 5.2.2. A recipe adds terms on the unlabelled half (config/recipes.py):
each one enters through TARGET_TERMS below, one line per term, and is then
summed into the loss, logged as `loss/<name>` (its weighted value) and given to
utils.diagnose, with no other edit.

The objective of the refinement phase (DIRT-T, Eq. 14) is the other one with
this interface: utils/training/refinement.py.
"""
import functools
from typing import Callable, NamedTuple, Optional

import keras
import tensorflow as tf

from utils.training import schedules
from utils.training.prediction_diversity import TargetDiversity
from utils.training.pseudo_labels import TargetPseudoLabels
from utils.training.target_entropy import TargetEntropy
from utils.training.virtual_adversarial import TargetVAT
from utils.training.window_sums import WindowMetrics


class TermContext(NamedTuple):
    """What a target term's factory may use besides the config.

    `classify` maps 0-255 float images to G_y(G_f(x)) in training mode, its gradients
    reaching the input and every weight (VAT's perturbation is found through it);
    `classify_trained` gives the same logits with gradients only to the weights the
    terms may train (`target_terms_scope`); `average` is the weight average's model
    (utils/training/weight_average.py) or None; `global_target_batch` the target images
    of an update over all replicas.
    """
    classify: Callable
    classify_trained: Callable
    average: Optional[keras.Model]
    global_target_batch: int


def entropy_term(config, context):
    """Target conditional entropy (utils/training/target_entropy.py), when weighted."""
    if config.entropy_weight <= 0:
        return None
    return TargetEntropy(config.entropy_weight, config.entropy_start, config.grl_gamma,
                         config.adaptation_steps, context.global_target_batch)


def diversity_term(config, context):
    """Target prediction diversity (utils/training/prediction_diversity.py), when weighted;
    on the entropy term's schedule, whose collapses it counters."""
    if config.diversity_weight <= 0:
        return None
    return TargetDiversity(config.diversity_weight, config.entropy_start, config.grl_gamma,
                           config.adaptation_steps)


def vat_term(config, context):
    """Target VAT (utils/training/virtual_adversarial.py), when weighted."""
    if config.vat_weight <= 0:
        return None
    return TargetVAT(config.vat_weight, config.vat_radius, config.vat_start, config.grl_gamma,
                     config.adaptation_steps, context.global_target_batch, context.classify,
                     seed=config.seed, every=config.vat_every, fraction=config.vat_fraction,
                     trained_classify=context.classify_trained)


def pseudo_label_term(config, context):
    """Pseudo-labels from the weight average (utils/training/pseudo_labels.py), when weighted;
    on the entropy term's schedule, until pseudo_label_stop."""
    if config.pseudo_label_weight <= 0:
        return None

    def teacher(images):
        return context.average(images, training=False)[0]

    return TargetPseudoLabels(config.pseudo_label_weight, config.pseudo_label_threshold,
                              config.entropy_start, config.grl_gamma, config.adaptation_steps,
                              context.global_target_batch, teacher, config.pseudo_label_stop)


# The recipe's terms on the unlabelled half, in the order they are summed:
#   name -> factory(config, context: TermContext) -> term, or None when the config leaves it
#   off. A term is called as term(target_images, target_logits, step), where target_logits
#   carry gradients only to the weights `target_terms_scope` lets the terms train, and
#   returns its weighted loss on one replica's share of the batch (divided by the global
#   target batch, so that the replicas' shares add up to the batch mean). A term whose
#   weight follows a `weight_at` schedule (schedules.RampedWeight) is left out of the
#   compiled step over the first updates, while every term's weight is still 0.
TARGET_TERMS = {
    "entropy": entropy_term,
    "diversity": diversity_term,
    "vat": vat_term,
    "pseudo_label": pseudo_label_term,
}


class Objective:
    """The adaptation phase's loss: `forward(batch, step)` -> ({term: weighted loss}, outputs).

    `batch` is (labelled images, labels, unlabelled images), one replica's share;
    `step` the global step of the update. Terms: `label` (L_y), `domain`
    (domain_loss_weight * L_d) and each recipe term of TARGET_TERMS, in the order
    they are summed. Only `dann` mode adapts: elsewhere lambda stays 0 and no
    target term is built. `average`: the weight average's model, for the terms that read it.
    """

    def __init__(self, config, dann, labelled_domain, half_batch, average=None):
        self.config, self.dann = config, dann
        self.labelled_domain, self.half_batch = labelled_domain, half_batch
        self.adapt = config.mode == "dann"
        context = TermContext(self.classify, self.classify_trained, average, half_batch)
        terms = {name: factory(config, context)
                 for name, factory in TARGET_TERMS.items()} if self.adapt else {}
        self.target_terms = {name: term for name, term in terms.items() if term is not None}
        self.metrics = WindowMetrics("target" if labelled_domain == 1.0 else "source")

    @property
    def logged_terms(self):
        """The terms logged as loss/<name> by the objective window (L_y and L_d are logged
        unweighted by the metrics, as loss/label_loss and loss/domain_loss)."""
        return tuple(self.target_terms)

    @functools.cached_property
    def idle_steps(self):
        """How many first updates leave every target term's weight exactly 0 (0 without terms).

        Over those the compiled step can leave the terms out (`forward(..., target_terms=False)`):
        a weight of 0 makes their gradients exact zeros, and adding a zero changes no bit of
        the update, while building them costs a second pass of G_y over the target half and
        its backward pass on every update.
        """
        # A term without a scheduled weight (`weight_at`) is on from the first update.
        return min((term.weight_at.first_active_step() if hasattr(term, "weight_at") else 0
                    for term in self.target_terms.values()), default=0)

    @property
    def trained_variables(self):
        return self.dann.model.trainable_variables

    def classify(self, images):
        """G_y(G_f(images)) in training mode (0-255 images)."""
        return self.dann.label_classifier(self.dann.feature_extractor(images, training=True),
                                          training=True)

    def terms_features(self, features):
        """G_f's features as the target terms see them: under `target_terms_scope`
        "label_head" their gradients stop here, so only G_y learns from the terms."""
        if self.config.target_terms_scope == "label_head":
            return tf.stop_gradient(features)
        return features

    def classify_trained(self, images):
        """G_y(G_f(images)) with gradients only where the target terms may train."""
        features = self.dann.feature_extractor(images, training=True)
        return self.dann.label_classifier(self.terms_features(features), training=True)

    def grl_lambda_at(self, step):
        """lambda_p for the update at `step`; held at 0 outside `dann` mode."""
        if not self.adapt:
            return tf.constant(0.0)
        return schedules.grl_lambda(schedules.progress(step, self.config.adaptation_steps),
                                    self.config.grl_gamma)

    def prepare(self, step):
        """Before the update at `step`: lambda_p into the GRL (a variable, so the compiled step
        follows the schedule without a retrace)."""
        self.dann.gradient_reversal.grl_lambda.assign(self.grl_lambda_at(step))

    def forward(self, batch, step, target_terms=True):
        """({term: weighted loss}, outputs) of one replica's share (Sec. 3.2, Eq. 9-13);
        `outputs` holds what the window metrics read. `target_terms=False` (only for steps
        before `idle_steps`) gives each target term as 0 without building it."""
        labelled_images, labels, unlabelled_images = batch
        dann = self.dann
        images = tf.concat([labelled_images, unlabelled_images], axis=0)
        num_labelled = tf.shape(labelled_images)[0]
        domain_labels = tf.concat(
            [tf.fill([num_labelled], self.labelled_domain),
             tf.fill([tf.shape(unlabelled_images)[0]], 1.0 - self.labelled_domain)], axis=0)
        # One pass of G_f over source and target together: both heads share it.
        features = dann.feature_extractor(images, training=True)
        class_logits = dann.label_classifier(features[:num_labelled], training=True)
        domain_logits = dann.domain_classifier(features, training=True)[:, 0]
        label_losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, class_logits)
        domain_losses = tf.nn.sigmoid_cross_entropy_with_logits(domain_labels, domain_logits)
        # L_y is the mean over the labelled half and L_d `domain_loss_weight` times
        # the mean over the whole batch: 1 as the authors' Caffe code normalises
        # it, 2 for Eq. 9's source mean plus target mean (equal halves). Dividing
        # by the global batch makes the replicas' gradients sum to those means.
        terms = {
            "label": tf.nn.compute_average_loss(label_losses, global_batch_size=self.half_batch),
            "domain": self.config.domain_loss_weight * tf.nn.compute_average_loss(
                domain_losses, global_batch_size=self.config.batch_size),
        }
        if self.target_terms and not target_terms:
            terms.update({name: tf.constant(0.0) for name in self.target_terms})
        elif self.target_terms:
            # Recipe terms on the unlabelled half: its images and G_y's outputs.
            target_logits = dann.label_classifier(self.terms_features(features[num_labelled:]),
                                                  training=True)
            for name, term in self.target_terms.items():
                terms[name] = term(unlabelled_images, target_logits, step)
        outputs = dict(labels=labels, label_losses=label_losses, class_logits=class_logits,
                       domain_losses=domain_losses, domain_logits=domain_logits,
                       domain_labels=domain_labels)
        return terms, outputs

    def loss_terms(self, batch, step):
        """{term: weighted loss} of one replica's share of `batch` at `step`."""
        return self.forward(batch, step)[0]

    @staticmethod
    def total(terms):
        """The loss minimised: L_y + L_d, then the recipe's terms. Summed in this order and
        shape always, since the order the gradients of shared tensors are added in follows
        it, and with it the last bits of every update."""
        total = terms["label"] + terms["domain"]
        rest = [value for name, value in terms.items() if name not in ("label", "domain")]
        if rest:
            total += tf.add_n(rest)
        return total

    def record(self, outputs):
        """Adds one replica's share of the update to the window metrics."""
        labels, class_logits = outputs["labels"], outputs["class_logits"]
        domain_logits, domain_labels = outputs["domain_logits"], outputs["domain_labels"]
        self.metrics.update(
            label_loss=tf.reduce_sum(outputs["label_losses"]),
            label_correct=tf.reduce_sum(tf.cast(
                tf.equal(tf.argmax(class_logits, axis=1, output_type=tf.int32), labels), tf.float32)),
            label_count=tf.size(labels),
            domain_loss=tf.reduce_sum(outputs["domain_losses"]),
            domain_correct=tf.reduce_sum(tf.cast(tf.equal(domain_logits > 0, domain_labels > 0.5),
                                                 tf.float32)),
            domain_count=tf.size(domain_labels))
