"""Evaluation of the model a run evaluates and saves: the validation scalars of its test sets.

Label loss and accuracy on the target test set (the number the paper's Table 1
reports for MNIST -> MNIST-M), domain loss and accuracy on both test sets
pooled (as L_d pools both domains in training), the source test accuracy and
the accuracy on the held-out labelled target split. The tags are listed in
utils/summaries.py.
"""
import time

import numpy as np
import tensorflow as tf

from utils.data import seeded_subset_indices
from utils.summaries import format_validation_line, write_scalars
from utils.training.batch_norm_statistics import domain_statistics


def apply_in_batches(fn, images, batch_size):
    """fn applied to `images` `batch_size` at a time, its outputs concatenated as NumPy arrays:
    one array, or a tuple of them when `fn` returns a tuple (e.g. features and logits)."""
    # An empty set still gives arrays of the right shape: fn of an empty batch.
    starts = range(0, len(images), batch_size) or [0]
    outputs = [fn(images[start:start + batch_size]) for start in starts]
    if isinstance(outputs[0], (tuple, list)):
        return tuple(np.concatenate([np.asarray(output[i]) for output in outputs])
                     for i in range(len(outputs[0])))
    return np.concatenate([np.asarray(output) for output in outputs])


def inference(model):
    """`model` called in inference mode, as apply_in_batches calls a function of the images."""
    return lambda images: model(images, training=False)


class Evaluator:
    """`evaluate(whole)`: the validation scalars of `model` (a DANN Keras model) on the run's
    test sets and held-out target split (utils/training/prepare.py, RunData).

    `predict(images)` and `outputs(images)` are its compiled functions of uint8 images:
    (class logits, domain logit) and (G_f features, class logits).
    """

    def __init__(self, model, data, config):
        self.model, self.data = model, data
        self.batch_size, self.subset_size, self.seed = (config.eval_batch_size, config.eval_subset,
                                                        config.target_val_seed)
        spec = [tf.TensorSpec((None,) + tuple(config.input_shape), tf.uint8)]
        self.predict = tf.function(self._predict, input_signature=spec)
        self.outputs = tf.function(self._outputs, input_signature=spec)
        self.subsets = self._subsets()
        # Each domain's own batch-norm statistics, recomputed at every evaluation (None: the
        # network has none to recompute, or --bn-statistics moving).
        self.statistics = domain_statistics(model, data, config)

    def _predict(self, images):
        class_logits, domain_logits = self.model(images, training=False)
        return class_logits, domain_logits[:, 0]

    def _outputs(self, images):
        """G_f features and class logits (what the validators need)."""
        features = self.model.get_layer("feature_extractor")(images, training=False)
        return features, self.model.get_layer("label_classifier")(features, training=False)

    def _subsets(self):
        """Fixed, seeded indices of the test images used at intermediate validation points."""
        rng = np.random.default_rng(self.seed)
        test_sets = self.data.test_sets

        def subset(count):
            indices = seeded_subset_indices(count, self.subset_size, rng)
            return None if len(indices) == count else indices  # None: the whole set

        # The target's subset is drawn first (the order of the first release's draws).
        return {name: subset(len(test_sets[name][0])) if test_sets[name] else None
                for name in ("target", "source")}

    def evaluate_domain(self, images, labels, domain_label):
        """[label loss, label accuracy, domain loss, domain accuracy] of one set (NaN label
        metrics without labels)."""
        class_logits, domain_logits = apply_in_batches(self.predict, images, self.batch_size)
        sums = np.zeros(4)
        # The losses are summed one batch at a time in float32, then across batches in
        # float64, as they always were: the logged values keep their last bits.
        for start in range(0, len(images), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            if labels is not None:
                chunk_labels = labels[chunk].astype(np.int32)
                sums[:2] += [
                    tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
                        chunk_labels, class_logits[chunk])),
                    np.sum(np.argmax(class_logits[chunk], axis=1) == chunk_labels)]
            sums[2:] += [
                tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(
                    tf.fill(tf.shape(domain_logits[chunk]), domain_label), domain_logits[chunk])),
                np.sum((domain_logits[chunk] > 0) == (domain_label > 0.5)),
            ]
        if labels is None:
            sums[:2] = np.nan
        return sums / len(images)

    def evaluate(self, whole=True):
        """Validation scalars: label metrics on the target test set, domain metrics on both test
        sets, the source test accuracy and, with a held-out split, the target validation accuracy.

        `whole=False` uses the fixed subsets of `eval_subset` images per test set. A metric
        that needs labels (or a test set) the domains do not have is left out.
        """
        def test_set(name):
            indices = None if whole else self.subsets[name]
            images, labels = self.data.test_sets[name]
            if indices is None:
                return images, labels
            return images[indices], None if labels is None else labels[indices]

        if self.statistics:
            self.statistics.refresh()
        evaluated = {}
        # The source first, so that the target's batch-norm statistics are the ones left in
        # the model (without any, the order changes nothing).
        for name, domain_label in (("source", 0.0), ("target", 1.0)):
            if self.data.test_sets[name] is not None:
                if self.statistics:
                    self.statistics.use(name)
                images, labels = test_set(name)
                evaluated[name] = (len(images), self.evaluate_domain(images, labels, domain_label))
        if self.statistics:
            self.statistics.use("target")
        # In this order: the pooled domain metrics below are sums over it.
        results = {name: evaluated[name] for name in ("target", "source") if name in evaluated}
        scalars = {}
        target = results.get("target", (0, np.full(4, np.nan)))[1]
        if not np.isnan(target[0]):
            scalars["loss/label_loss"] = target[0]
        if len(results) == 2:
            # Domain metrics are means over both test sets pooled, like L_d in training.
            count = sum(n for n, _ in results.values())
            domain_loss, domain_acc = sum(n * values[2:] for n, values in results.values()) / count
            scalars["loss/domain_loss"] = domain_loss
            if "loss/label_loss" in scalars:
                scalars["loss/total_loss"] = target[0] + domain_loss
        if not np.isnan(target[1]):
            scalars["acc/label_acc"] = target[1]
        if len(results) == 2:
            scalars["acc/domain_acc"] = domain_acc
        if "source" in results and not np.isnan(results["source"][1][1]):
            scalars["acc/source_label_acc"] = results["source"][1][1]
        target_val = self.data.target_val
        if len(target_val["labels"]):
            scalars["acc/target_val_acc"] = self.evaluate_domain(
                target_val["images"], target_val["labels"], 1.0)[1]
        if "acc/label_acc" in scalars:
            # acc/label_acc under the name that says which domain (utils/summaries.py).
            scalars["acc/target_label_acc"] = scalars["acc/label_acc"]
        return scalars

    def validation_point(self, step, total_steps, whole, writer, validators=None):
        """Evaluates the model at `step` and writes its validation scalars with `writer`; then
        the validators' scores (utils/validators.py, ValidatorSuite), which also keeps their
        record and best weights. Returns (scalars, the log.txt line)."""
        validation = self.evaluate(whole=whole)
        write_scalars(writer, validation, step)
        # Sets smaller than eval_subset are evaluated whole at every point.
        all_whole = whole or all(indices is None for indices in self.subsets.values())
        line = format_validation_line(step, total_steps, all_whole, validation)
        if validators:
            started = time.perf_counter()
            scores = validators.scores()
            write_scalars(writer, {f"validator/{name}": value for name, value in scores.items()},
                          step)
            # The target test accuracy evaluate() computed anyway is stored for the
            # study's judgement only: no checkpoint is ever kept because of it.
            validators.update(step, scores, {"target_test_accuracy": float(
                validation.get("acc/label_acc", np.nan)), "whole_test_set": bool(whole)},
                self.model.save_weights, seconds=time.perf_counter() - started)
            line += " | validators " + " ".join(f"{name}={value:.4f}"
                                                for name, value in scores.items())
        return validation, line
