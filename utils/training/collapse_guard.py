"""The collapse guard: a run whose label classifier has died never ends as an ordinary result.

A ReLU unit whose pre-activation is negative on every input passes no
gradient, so once every unit of a layer of G_f or G_y is in that state, G_y's
output no longer depends on the image, the label gradient to every layer
below is exactly zero, and SGD cannot bring the run back (the "dying ReLU",
Lu et al., "Dying ReLU and Initialization", 2019). It happened to
`improved_48k` (then `improved`), seed 3: fc2 of G_y went dead at about step 33,000
and the run still finished with a MNIST-M accuracy of 0.1135, reported as a result.

The guard probes the network on a fixed set of labelled training images and
calls the run collapsed when

  * some ReLU layer of G_f or G_y has no live unit (a unit is live when it is
    positive for at least one probe image; a convolution's unit is a channel),
    or
  * G_y's logits are the same for every probe image (what a dead layer
    implies, checked directly, whatever the architecture) after it had learned
    (below; without probe labels, at any time): a keras.applications backbone
    from random weights gives the same logits for every image at first, which
    is not a death, or
  * G_y had learned and then put (nearly) every probe image in one class,
    confidently wrong: at an earlier check its probe accuracy reached
    LEARNED_FRACTION of the way from chance (1/K) to 1, and now at least
    ONE_CLASS_SHARE of the predictions are one class with a mean
    cross-entropy against the probe's labels above 2 ln K, twice what a
    uniform guess over the K classes scores. Live units and image-dependent
    logits do not make a working classifier: `refined` without its KL term
    (README, "Refinement") drove every image to one class with a loss of 127
    and units alive, and the run ended at chance as an ordinary result. A
    classifier that has not learned yet is not collapsed: on a 600-image
    pair, tens of updates in, an untrained classifier often puts 90-100 % of
    the probe in one class with a loss above 2 ln K for a few updates (a
    transient of SGD with momentum, gone ten updates later), and calling that
    a collapse stopped runs that were only young (docs/own-domains.md).

It runs before every checkpoint is written and before the final results, so
a dead model is never saved as a checkpoint nor reported as a result, and the
newest checkpoint is always one the guard passed. It reads only training
images: no target label is involved.

What happens then is `on_collapse`: `stop` ends the run (exit status 4,
results.json says "collapsed": true); `rollback` (the default) restores the
last good checkpoint and continues from it past the batches that led to the
collapse (`Rollbacks` below), at most `max_rollbacks` times. Skipping the
batches of a loss spike and restarting from an earlier checkpoint is what
large language-model runs do (Chowdhery et al., "PaLM", 2022, Sec. 5.1).
"""
import json
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from utils.training.state import forget_after

# Logits whose spread over the probe images is below this fraction of their size are
# one constant output (a dead fc2 gives a spread of exactly 0).
CONSTANT_OUTPUT_TOLERANCE = 1e-6
# At least this share of the probe's predictions in one class (with a cross-entropy above
# a uniform guess's) is a classifier that collapsed onto that class.
ONE_CLASS_SHARE = 0.9
# A classifier has learned once its probe accuracy has gone this far from chance towards 1
# (0.67 for 3 classes, 0.55 for 10); only then can it collapse onto one class.
LEARNED_FRACTION = 0.5


class Collapsed(Exception):
    """The label classifier died: its output no longer depends on the input."""

    def __init__(self, step, what, last_good_checkpoint, not_rolled_back=None):
        self.step, self.what, self.last_good_checkpoint = step, what, last_good_checkpoint
        last = last_good_checkpoint or "none (no checkpoint was written yet)"
        why = f" (not rolled back: {not_rolled_back})" if not_rolled_back else ""
        super().__init__(f"the label classifier collapsed by step {step}: {what}, so its label "
                         f"gradient is zero and training cannot recover; training stopped{why} and "
                         f"no checkpoint of the collapsed model was written; last good checkpoint: "
                         f"{last}. Try another --seed or a lower --learning-rate, or see README, "
                         f"\"Collapsed runs\"")


class Rollbacks(tf.Module):
    """`--on-collapse rollback`: how many times the run went back, and how far its data moved on.

    A rollback restores the last good checkpoint (step M, written before the
    collapse was found at step N) and continues with the input stream N - M
    batches further on, so the updates M..N that killed the classifier are not
    replayed: the update at step s then sees the batch a run without rollbacks
    would see at step s + data_offset. Everything else (weights, momentum,
    weight average, schedules, which follow the step) is the checkpoint's.

    Each rollback is recorded, with the data offset after it, in
    logs/<run>/rollbacks.json (written atomically before training goes on)
    and then in results.json. `count` and `data_offset` are also variables of
    every later checkpoint; restoring a checkpoint at step S takes them from
    the record instead (`sync`): the rollbacks whose restored step is at most
    S happened after that checkpoint was written, or before it, and none
    other did. So the checkpoint rolled back to is never rewritten (a kill
    mid-write could cost the only good one), and a run resumed from it still
    skips the same batches.
    """

    def __init__(self, limit, log_dir):
        super().__init__(name="rollbacks")
        self.limit = limit
        self.path = os.path.join(log_dir, "rollbacks.json")
        self.count = tf.Variable(0, dtype=tf.int64, trainable=False, name="count")
        self.data_offset = tf.Variable(0, dtype=tf.int64, trainable=False, name="data_offset")

    def _read(self):
        if not os.path.exists(self.path):
            return []
        with open(self.path) as handle:
            return json.load(handle)

    def records(self):
        """The rollbacks of the run up to its restored state (later ones were undone by a resume)."""
        return self._read()[:int(self.count.numpy())]

    def sync(self, step):
        """After restoring the checkpoint of `step`: the count and data offset of the record."""
        from utils.io import atomic_write_json

        every = self._read()
        kept = [entry for entry in every if entry["restored_step"] <= step]
        if every or int(self.count.numpy()):
            self.count.assign(len(kept))
            self.data_offset.assign(kept[-1]["data_offset"] if kept else 0)
        if kept != every:
            atomic_write_json(self.path, kept)

    def adopt(self, log_dir):
        """Takes the record that `log_dir` holds as this run's own (a multi-worker run's
        worker, resuming: utils/training/distribute.py); nothing when it is this one."""
        source = os.path.join(log_dir, "rollbacks.json")
        if os.path.abspath(source) == os.path.abspath(self.path):
            return
        if os.path.exists(source):
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            shutil.copyfile(source, self.path)
        elif os.path.exists(self.path):
            os.remove(self.path)

    def refusal(self, collapse):
        """Why this collapse cannot be rolled back (None when it can)."""
        if collapse.last_good_checkpoint is None:
            return "no checkpoint was written before it, so there is nothing to roll back to"
        if self.limit == 0:
            return "--max-rollbacks is 0"
        if int(self.count.numpy()) >= self.limit:
            return f"the run already rolled back {self.limit} times (--max-rollbacks)"
        return None

    def record(self, collapse, restored_step):
        """Counts a rollback from `collapse` to the checkpoint at `restored_step` (already restored)."""
        from utils.io import atomic_write_json

        skipped = collapse.step - restored_step
        offset = int(self.data_offset.numpy()) + skipped
        entry = {"collapsed_at": collapse.step, "collapse": collapse.what,
                 "restored": collapse.last_good_checkpoint, "restored_step": restored_step,
                 "skipped_batches": skipped, "data_offset": offset}
        records = self.records() + [entry]
        atomic_write_json(self.path, records)
        self.count.assign(len(records))
        self.data_offset.assign(offset)
        return entry


    def roll_back(self, collapse, state, validators=None):
        """Goes back to `collapse.last_good_checkpoint`, past the batches since it; returns
        the log line that says so.

        Restores it into `state` (utils/training/state.py, RunState), deletes the
        checkpoints after it, forgets what was logged after it (as a resume would; the
        caller closes its event writers first) and records the rollback, so that a kill
        from here on resumes past the skipped batches too. The best-<validator> weights
        of steps after it stay: every one passed the guard before it was scored.
        """
        state.restore(collapse.last_good_checkpoint)
        restored_step = int(state.global_step.numpy())
        self.sync(restored_step)
        state.discard_after(restored_step)
        forget_after(os.path.dirname(self.path), restored_step, validators)
        entry = self.record(collapse, restored_step)
        return (f"rollback {len(self.records())} of at most {self.limit}: the label classifier "
                f"collapsed by step {collapse.step} ({collapse.what}); restored "
                f"{collapse.last_good_checkpoint} and continuing from step {restored_step}, "
                f"skipping the {entry['skipped_batches']} batches it had trained on since")


def _as_list(outputs):
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def relu_layers(model):
    """The layers of `model` (nested models included) with a ReLU activation, in order."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += relu_layers(layer)
        elif getattr(layer, "activation", None) is keras.activations.relu:
            found.append(layer)
    return found


class CollapseGuard:
    """Live ReLU units of G_f and G_y, and the spread of G_y's logits, on fixed probe images."""

    def __init__(self, feature_extractor, label_classifier, probe_images, probe_labels=None):
        """`probe_labels` (the probe images' classes) enables the one-class check."""
        # The best probe accuracy seen at a check so far (the one-class check waits for it).
        self.best_accuracy = 0.0
        self.probe_images = np.asarray(probe_images)
        self.probe_labels = None if probe_labels is None else np.asarray(probe_labels, np.int32)
        fe_layers, lc_layers = relu_layers(feature_extractor), relu_layers(label_classifier)
        self.layers = fe_layers + lc_layers
        self._features = keras.Model(feature_extractor.inputs,
                                     [layer.output for layer in fe_layers]
                                     + [feature_extractor.output])
        self._classifier = keras.Model(label_classifier.inputs,
                                       [layer.output for layer in lc_layers]
                                       + [label_classifier.output])
        self.probe = tf.function(self._probe)

    def _probe(self, images):
        """(live units per ReLU layer, units per layer, spread and size of the logits)."""
        # A model of one output returns it alone (a backbone without ReLU layers' G_f).
        *fe_activations, features = _as_list(self._features(images, training=False))
        *lc_activations, logits = _as_list(self._classifier(features, training=False))
        live, units = [], []
        for activation in fe_activations + lc_activations:
            # Largest activation of each unit (a channel for convolutions) over images and positions.
            peak = tf.reduce_max(tf.reshape(activation, [-1, activation.shape[-1]]), axis=0)
            live.append(tf.reduce_sum(tf.cast(peak > 0.0, tf.int32)))
            units.append(tf.size(peak))
        spread = tf.reduce_max(tf.reduce_max(logits, axis=0) - tf.reduce_min(logits, axis=0))
        return tf.stack(live), tf.stack(units), spread, tf.reduce_max(tf.abs(logits)), logits

    def live_units(self):
        """{layer name: (live units, units)} on the probe images."""
        live, units, _, _, _ = self.probe(self.probe_images)
        return {layer.name: (int(a), int(b)) for layer, a, b in zip(self.layers, live, units)}

    def diagnosis(self):
        """What died, as a phrase, or None while the classifier is alive."""
        live, units, spread, size, logits = (value.numpy() for value in self.probe(self.probe_images))
        dead = [f"{layer.name} has 0 of {count} units live" for layer, alive, count
                in zip(self.layers, live, units) if alive == 0]
        count = len(self.probe_images)
        if dead:
            return f"{', '.join(dead)} on {count} probe training images"
        # Only a classifier that had learned can lose its output (module docstring).
        if not self._had_learned(logits):
            return None
        if spread <= CONSTANT_OUTPUT_TOLERANCE * (1.0 + size):
            return f"its logits are the same for all {count} probe training images"
        return self._one_class(logits)

    def _had_learned(self, logits):
        """Whether an earlier check found the classifier learned (always, without probe
        labels to tell); counts this check's probe accuracy for the next."""
        if self.probe_labels is None:
            return True
        learned = self.best_accuracy >= self.learned_accuracy(logits.shape[1])
        accuracy = float(np.mean(np.argmax(logits, axis=1) == self.probe_labels))
        self.best_accuracy = max(self.best_accuracy, accuracy)
        return learned

    def _one_class(self, logits):
        """The one-class collapse (module docstring), as a phrase, or None."""
        if self.probe_labels is None:
            return None
        predicted = np.argmax(logits, axis=1)
        num_classes = logits.shape[1]
        top = int(np.bincount(predicted).argmax())
        share = float(np.mean(predicted == top))
        cross_entropy = float(np.mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            self.probe_labels, logits.astype(np.float32))))
        if share >= ONE_CLASS_SHARE and cross_entropy > 2 * np.log(num_classes):
            return (f"it puts {share:.0%} of the {len(predicted)} probe training images in class "
                    f"{top}, with a cross-entropy of {cross_entropy:.1f} against their labels "
                    f"(above twice a uniform guess's ln {num_classes} = {np.log(num_classes):.2f}), "
                    f"after it had classified {self.best_accuracy:.0%} of them right")
        return None

    @staticmethod
    def learned_accuracy(num_classes):
        """The probe accuracy from which a classifier counts as having learned."""
        chance = 1.0 / num_classes
        return chance + LEARNED_FRACTION * (1.0 - chance)
