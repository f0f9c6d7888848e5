"""The DANN training loop: one compiled train step, evaluation, checkpoints and resume.

Implements the stochastic updates of Ganin & Lempitsky (2015), Sec. 3.2-3.3:
the label loss L_y on labelled source images and the domain loss L_d on source
and target images are minimised together, and the gradient-reversal layer
turns the domain gradient reaching the features into -lambda * dL_d/dtheta_f
(Eq. 13). Learning rate and lambda follow the schedules of Sec. 5.2.2.

Deviations from the paper are listed in config/config.py.
"""
import os
import signal
import time

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from model import build_dann
from utils.training import precision, schedules
from utils.data import (hold_out_source_validation, hold_out_target_validation, pixel_mean,
                        seeded_subset_indices)
from utils.data.domains import evaluation_sets, fill_config, pool_size_problem
from utils.training.checkpoints import (checkpoint_path, checkpoint_problem, discard_after,
                                        resume_candidates, saved_objects, saved_step)
from utils.training.collapse_guard import Collapsed, CollapseGuard, Rollbacks
from utils.training.distribute import Agreement, create_strategy
from utils.data.pipeline import make_train_dataset
from utils.runs import FINAL_WEIGHTS, run_dirs
from utils.io import (UserError, atomic_save, atomic_write_json, atomic_write_text,
                      ensure_writable_dir)
from utils.summaries import (create_writers, format_validation_line, truncate_events,
                             write_scalars)
from utils.training.refinement import Refinement
from utils.training.target_entropy import TargetEntropy
from utils.training.virtual_adversarial import TargetVAT
from utils.training.weight_average import WeightAverage
from utils.training.window_sums import WindowMetrics

# Exit status of a run stopped by a signal, as a shell reports it (128 + signal number).
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Diverged(Exception):
    """A loss or gradient became NaN or Inf; no update was applied from that step on."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint of the current step has been written."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.exit_status = SIGNAL_EXIT[signum]


class RunClock(tf.Module):
    """Wall time, timed training time and timed steps of the run so far.

    Kept in the checkpoint, so a resumed run reports its wall time and ms/step
    over the whole run rather than over its last session.
    """

    def __init__(self):
        super().__init__(name="run_clock")
        self.totals = tf.Variable([0.0, 0.0, 0.0], dtype=tf.float64, trainable=False)

    def read(self):
        """(wall seconds, training seconds, timed steps) as saved."""
        wall, train, steps = self.totals.numpy().tolist()
        return wall, train, int(steps)


def _compiled_loop(step_on_batch):
    """A tf.function running `num_steps` calls of step_on_batch(next(iterator)) in one call:
    a graph loop, so Python and the per-call overhead are paid once per call rather than
    once per update."""
    def steps(iterator, num_steps):
        for _ in tf.range(num_steps):
            step_on_batch(next(iterator))

    return tf.function(steps)


def _logged_step(line):
    """N of a log.txt line "step N/T ..." (lines of another form count as step 0)."""
    head = line.split("/", 1)[0].split()
    return int(head[1]) if len(head) == 2 and head[0] == "step" and head[1].isdigit() else 0


def _optional(scalars, tag):
    return float(scalars[tag]) if tag in scalars else None


def _next_multiple(step, every):
    """The first multiple of `every` after `step`."""
    return (step // every + 1) * every


class Trainer:
    """Builds the DANN, its optimizer, input pipeline and checkpoint for one run.

    `source` and `target` are Domains (utils/data/domains.py). Labelled images
    come from the source (the target in `target_only` mode), unlabelled ones
    from the other domain; domain label 0 is the source and 1 the target.

    `resume_root` is the output root of the run a resume reads (its checkpoints and
    rollback record) when it is not `output_root`: a multi-worker run's worker writes
    to a temporary folder but resumes from the chief's run (utils/training/distribute.py).
    """

    def __init__(self, config, source, target, output_root=".", strategy=None,
                 resume_root=None):
        self.config = fill_config(config, source, target)
        self.dirs = run_dirs(output_root, config.run_name)
        self.resume_dirs = run_dirs(resume_root, config.run_name) if resume_root else self.dirs
        self.checkpoints_from = self.resume_dirs["checkpoints"]
        # The checkpoint a resume restored (the chief's, in a worker).
        self._restored = None
        self.strategy = strategy or create_strategy(config.strategy)
        # Stop and wall-time checkpoint decisions, made the same in every worker.
        self.agree = Agreement(self.strategy)
        self.half_batch = config.batch_size // 2
        if config.mode == "target_only" and not target.labelled:
            raise UserError(f"--mode target_only trains on the target's labels, but --target "
                            f"{target.spec} has none; give it class folders or use another mode")
        # The labelled validation split leaves the training pool before anything
        # else sees the target's training images, so no mode ever trains on it.
        # At most an eighth of the target's images, like the source split: 1,000 of MNIST-M's
        # 59,001, but a smaller target of the user's keeps most of its images for training.
        target_val_size = min(config.target_val_size, len(target.train) // 8) if target.labelled else 0
        if target.labelled and target_val_size < config.target_val_size:
            print(f"target validation split: {target_val_size} {target.title} images, not "
                  f"{config.target_val_size} (at most an eighth of the target's training images "
                  "is held out)", flush=True)
        if not target.labelled:
            print(f"the target {target.title} has no labels: no target validation split and no "
                  "target accuracy; the label-free validators still choose checkpoints "
                  "(python -m utils.select)", flush=True)
        target_pool, self.target_val = hold_out_target_validation(
            target, target_val_size, config.target_val_seed)
        # Likewise the source validation split of the validators (utils/validators.py)
        # leaves the source's training images in every mode, labelled or unlabelled.
        source_pool, self.source_val = hold_out_source_validation(
            source, config.source_val_size, config.target_val_seed)
        if len(self.source_val["labels"]) < config.source_val_size:
            print(f"source validation split: {len(self.source_val['labels'])} {source.title} "
                  f"images, not {config.source_val_size} (at most an eighth of the source's "
                  "training images is held out)")
        self.source, self.target = source, target
        self.test_sets = evaluation_sets(source, target, self.source_val)
        labelled, unlabelled = ((target_pool, source_pool) if config.mode == "target_only"
                                else (source_pool, target_pool))
        for name, pool in (("the source", source_pool), ("the target", target_pool)):
            problem = pool_size_problem(name, len(pool["images"]), self.half_batch)
            if problem:
                raise UserError(problem)
        self.labelled_domain = 1.0 if config.mode == "target_only" else 0.0
        self.adapt = config.mode == "dann"
        self.train_images = (labelled["images"], labelled["labels"], unlabelled["images"])
        self.eval_subsets = self._eval_subsets()

        # Every model of the run is built under its precision's policy (float32 variables).
        with self.strategy.scope(), precision.policy(config.precision):
            mean = pixel_mean(source_pool["images"], target_pool["images"])
            self.dann = build_dann(config.input_shape, config.num_classes, mean, config.input_norm,
                                   config.network)
            self.learning_rate = schedules.AnnealedLearningRate(
                config.learning_rate, config.lr_alpha, config.lr_beta, config.adaptation_steps)
            # Clipping the global gradient norm bounds what one batch can do to the weights
            # (and, through the momentum, to the next updates); None leaves SGD as it is.
            self.optimizer = precision.wrap_optimizer(
                keras.optimizers.SGD(self.learning_rate, momentum=config.momentum,
                                     global_clipnorm=config.clip_norm or None), config.precision)
            self.optimizer.build(self.dann.model.trainable_variables)
            self.metrics = WindowMetrics()
            # Step of the first NaN/Inf loss or gradient, -1 while training is healthy.
            self.diverged_at = tf.Variable(-1, dtype=tf.int64, trainable=False)
            self.clock = RunClock()
            # Recipe components (config/recipes.py), each a module of its own.
            self.weight_average = (WeightAverage(self.dann.model, build_dann(
                config.input_shape, config.num_classes, mean, config.input_norm,
                config.network).model,
                config.ema_decay) if config.ema_decay > 0 else None)
            # The refinement phase after adaptation (DIRT-T), with its own teacher and optimizer.
            self.refinement = (Refinement(
                config, self.dann,
                self.weight_average.averaged if self.weight_average else self.dann.model,
                build_dann(config.input_shape, config.num_classes, mean, config.input_norm,
                           config.network).model,
                self.optimizer.iterations, self.half_batch) if config.refine_steps > 0 else None)
        self.target_losses = self._target_losses() if self.adapt else []
        # Guards beside the NaN check: probes on the first labelled training images.
        self.collapse_guard = (CollapseGuard(self.dann.feature_extractor, self.dann.label_classifier,
                                             self.train_images[0][:config.collapse_probe_size],
                                             self.train_images[1][:config.collapse_probe_size])
                               if config.collapse_probe_size > 0 else None)
        # What a collapse does: stop the run, or go back to the last good checkpoint.
        self.rollbacks = (Rollbacks(config.max_rollbacks, self.dirs["logs"])
                          if self.collapse_guard and config.on_collapse == "rollback" else None)
        # This session's timing, until fit() starts it anew (the benchmark trains without fit()).
        self._clock_base, self._session_start = (0.0, 0.0, 0), time.perf_counter()
        self._session_train_seconds, self._session_timed_steps = 0.0, 0
        # The model that is evaluated and saved: the weight average when there is one.
        self.eval_model = (self.weight_average.averaged if self.weight_average
                           else self.dann.model)
        checkpointed = dict(model=self.dann.model, optimizer=self.optimizer,
                            metrics=self.metrics, diverged_at=self.diverged_at, clock=self.clock)
        if self.weight_average:
            checkpointed["averaged_model"] = self.weight_average.averaged
        if self.rollbacks:
            checkpointed["rollbacks"] = self.rollbacks
        if self.refinement:
            checkpointed["refinement"] = self.refinement
        self.checkpoint = tf.train.Checkpoint(**checkpointed)
        self._checkpointed = checkpointed
        self.manager = self._checkpoint_manager()
        self._last_save = time.monotonic()
        # `num_steps` is a tensor, so any count reuses the one trace. One compiled loop
        # per phase: the adaptation's updates, and the refinement's if there is one.
        self.train_steps = _compiled_loop(self._train_step_on_batch)
        if self.refinement:
            self.refine_steps = _compiled_loop(self._refine_step_on_batch)
        self.predict = tf.function(
            self._predict,
            input_signature=[tf.TensorSpec((None,) + tuple(config.input_shape), tf.uint8)])
        # Label-free model selection (issue 12): scored from the source validation split,
        # the source pool and unlabelled MNIST-M *train* images, never the MNIST-M test set.
        self.validators = None
        if config.source_val_size > 0:
            from utils.validators import ValidatorSuite

            self.validator_outputs = tf.function(
                self._validator_outputs,
                input_signature=[tf.TensorSpec((None,) + tuple(config.input_shape), tf.uint8)])
            self.validators = ValidatorSuite(
                self.source_val, source_pool["images"], target_pool["images"], self.validator_outputs,
                self.dirs["logs"], self.dirs["checkpoints"], seed=config.target_val_seed,
                batch_size=config.eval_batch_size)

    def _target_losses(self):
        """The recipe's losses on the unlabelled half, each called as
        loss(target_images, target_logits, step) inside the train step."""
        config, losses = self.config, []
        if config.entropy_weight > 0:
            losses.append(TargetEntropy(config.entropy_weight, config.entropy_start,
                                        config.grl_gamma, config.adaptation_steps, self.half_batch))
        if config.vat_weight > 0:
            def classify(images):
                return self.dann.label_classifier(self.dann.feature_extractor(images, training=True),
                                                  training=True)

            losses.append(TargetVAT(config.vat_weight, config.vat_radius, config.vat_start,
                                    config.grl_gamma, config.adaptation_steps, self.half_batch, classify,
                                    seed=config.seed))
        return losses

    def _checkpoint_manager(self):
        """TensorFlow's manager of ckpt-N in checkpoints/<run> (it reads the state file there)."""
        return tf.train.CheckpointManager(self.checkpoint, self.dirs["checkpoints"],
                                          max_to_keep=self.config.max_to_keep,
                                          checkpoint_name="ckpt")

    def _eval_subsets(self):
        """Fixed, seeded indices of the test images used at intermediate validation points."""
        rng = np.random.default_rng(self.config.target_val_seed)

        def subset(count):
            indices = seeded_subset_indices(count, self.config.eval_subset, rng)
            return None if len(indices) == count else indices  # None: the whole set

        # The target's subset is drawn first (the order of the first release's draws).
        return {name: subset(len(self.test_sets[name][0])) if self.test_sets[name] else None
                for name in ("target", "source")}

    @property
    def step(self):
        """Global step: the number of updates applied so far (survives resume)."""
        return int(self.optimizer.iterations.numpy())

    def grl_lambda_at(self, step):
        """lambda_p for the update at `step`; held at 0 outside `dann` mode."""
        if not self.adapt:
            return tf.constant(0.0)
        return schedules.grl_lambda(schedules.progress(step, self.config.adaptation_steps),
                                    self.config.grl_gamma)

    def refining(self, step):
        """Whether the update at `step` belongs to the refinement phase."""
        return self.refinement is not None and step >= self.config.adaptation_steps

    def log_hyperparameters(self, writer, step):
        """Logs the learning rate and lambda_p of the update at `step` (pure functions of the
        step): in the refinement phase, its Adam's rate and 0 (it has no domain loss)."""
        if self.refining(step):
            values = {"hyperparameter/learning_rate": self.config.refine_learning_rate,
                      "hyperparameter/grl_lambda": 0.0}
        else:
            values = {"hyperparameter/learning_rate": self.learning_rate(step),
                      "hyperparameter/grl_lambda": self.grl_lambda_at(step)}
        write_scalars(writer, values, step)

    def make_dataset(self, start_step=None):
        """The input stream from `start_step` (default: the run's step, past any batches a
        rollback skipped).

        The refinement phase reads target images only: two independent streams of
        them take the place of the labelled and the unlabelled half (the labels are
        not used), numbered from the phase's first update.
        """
        if start_step is None:
            start_step = self.step + (int(self.rollbacks.data_offset.numpy()) if self.rollbacks else 0)
        if self.refining(self.step):
            target = self.train_images[2]
            dataset = make_train_dataset(target, np.zeros(len(target), np.int32), target,
                                         self.half_batch, self.config.seed,
                                         start_step=start_step - self.config.adaptation_steps)
        else:
            dataset = make_train_dataset(*self.train_images, self.half_batch, self.config.seed,
                                         start_step=start_step)
        # Several workers: each computes the same stream and keeps its share of every
        # global batch (the stream comes from memory, not files, so there is no file to
        # shard; DATA is what AUTO would fall back to, said here to skip its warning).
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return self.strategy.experimental_distribute_dataset(dataset.with_options(options))

    def _loss_terms(self, labelled_images, labels, unlabelled_images):
        """The weighted loss terms of one replica's share of the batch (Sec. 3.2, Eq. 9-13).

        Returns ({term: loss}, outputs): `label` (L_y), `domain` (L_d) and one
        term per recipe component on the unlabelled half, in the order they are
        summed; `outputs` holds what the window metrics read. Called inside the
        train step's tape, and by utils.diagnose to take each term's gradient.
        """
        dann = self.dann
        images = tf.concat([labelled_images, unlabelled_images], axis=0)
        num_labelled = tf.shape(labelled_images)[0]
        domain_labels = tf.concat([tf.fill([num_labelled], self.labelled_domain),
                                   tf.fill([tf.shape(unlabelled_images)[0]], 1.0 - self.labelled_domain)],
                                  axis=0)
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
        if self.target_losses:
            # Recipe components on the unlabelled half: its images and G_y's outputs.
            target_logits = dann.label_classifier(features[num_labelled:], training=True)
            step = self.optimizer.iterations
            for loss in self.target_losses:
                terms[loss.name] = loss(unlabelled_images, target_logits, step)
        outputs = dict(label_losses=label_losses, class_logits=class_logits,
                       domain_losses=domain_losses, domain_logits=domain_logits,
                       domain_labels=domain_labels)
        return terms, outputs

    def _replica_gradients(self, labelled_images, labels, unlabelled_images):
        """Gradients of L_y + L_d (+ the recipe's target terms) on a replica's share of the batch.

        The gradient-reversal layer makes the feature extractor's part of the
        domain gradient -lambda * dL_d/dtheta_f (Eq. 13). Returns (gradients,
        finite), with `finite` agreed by all replicas.
        """
        with tf.GradientTape() as tape:
            terms, outputs = self._loss_terms(labelled_images, labels, unlabelled_images)
            total_loss = terms.pop("label") + terms.pop("domain")
            if terms:
                total_loss += tf.add_n(list(terms.values()))
            scaled_loss = precision.scale_loss(self.optimizer, total_loss)
        gradients, finite = precision.gradients_and_finite(
            tape, total_loss, scaled_loss, self.dann.model.trainable_variables, self.optimizer)
        replicas_not_finite = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32))
        class_logits, domain_logits = outputs["class_logits"], outputs["domain_logits"]
        domain_labels = outputs["domain_labels"]
        self.metrics.update(
            label_loss=tf.reduce_sum(outputs["label_losses"]),
            label_correct=tf.reduce_sum(tf.cast(
                tf.equal(tf.argmax(class_logits, axis=1, output_type=tf.int32), labels), tf.float32)),
            label_count=tf.size(labels),
            domain_loss=tf.reduce_sum(outputs["domain_losses"]),
            domain_correct=tf.reduce_sum(tf.cast(tf.equal(domain_logits > 0, domain_labels > 0.5),
                                                 tf.float32)),
            domain_count=tf.size(domain_labels))
        return gradients, tf.equal(replicas_not_finite, 0.0)

    def _apply_gradients(self, gradients):
        precision.apply_gradients(self.optimizer, gradients, self.dann.model.trainable_variables)

    def _train_step_on_batch(self, batch):
        """One SGD update with lambda_p set from the global step; skipped if not finite."""
        step = tf.cast(self.optimizer.iterations, tf.int64)
        self.dann.gradient_reversal.grl_lambda.assign(self.grl_lambda_at(step))
        self._update(step, self._replica_gradients, batch, self._apply_gradients)

    def _refine_step_on_batch(self, batch):
        """One refinement update (utils/training/refinement.py); skipped if not finite."""
        step = tf.cast(self.optimizer.iterations, tf.int64)
        self.refinement.prepare(step)
        self._update(step, self.refinement.replica_gradients, tuple(batch) + (step,),
                     self.refinement.apply_gradients)

    def _update(self, step, replica_gradients, args, apply_gradients):
        """The gradients of each replica's share, applied only if all are finite; then the
        weight average and the NaN record. Shared by both phases' updates."""
        gradients, finite = self.strategy.run(replica_gradients, args=args)
        finite = self.strategy.experimental_local_results(finite)[0]

        def apply():
            self.strategy.run(apply_gradients, args=(gradients,))
            return tf.constant(True)

        # The branch sits outside strategy.run: replicas may not synchronise inside
        # control flow. A non-finite update is never applied, so the weights stay
        # at the last good step.
        tf.cond(finite, apply, lambda: tf.constant(False))
        if self.weight_average:
            self.weight_average.update(step)
        self.diverged_at.assign(tf.where(tf.logical_or(finite, self.diverged_at >= 0),
                                         self.diverged_at, step))

    def _predict(self, images):
        class_logits, domain_logits = self.eval_model(images, training=False)
        return class_logits, domain_logits[:, 0]

    def _validator_outputs(self, images):
        """G_f features and class logits of the evaluated model (the validators need both)."""
        features = self.eval_model.get_layer("feature_extractor")(images, training=False)
        return features, self.eval_model.get_layer("label_classifier")(features, training=False)

    def evaluate_domain(self, images, labels, domain_label):
        """Label loss/accuracy (NaN without labels) and domain loss/accuracy of one test set,
        in large batches."""
        sums = np.zeros(4)
        for start in range(0, len(images), self.config.eval_batch_size):
            chunk = slice(start, start + self.config.eval_batch_size)
            class_logits, domain_logits = self.predict(images[chunk])
            if labels is not None:
                chunk_labels = labels[chunk].astype(np.int32)
                sums[:2] += [
                    tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(chunk_labels,
                                                                                 class_logits)),
                    np.sum(np.argmax(class_logits, axis=1) == chunk_labels)]
            sums[2:] += [
                tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(
                    tf.fill(tf.shape(domain_logits), domain_label), domain_logits)),
                np.sum((domain_logits.numpy() > 0) == (domain_label > 0.5)),
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
            indices = None if whole else self.eval_subsets[name]
            images, labels = self.test_sets[name]
            if indices is None:
                return images, labels
            return images[indices], None if labels is None else labels[indices]

        results = {}
        for name, domain_label in (("target", 1.0), ("source", 0.0)):
            if self.test_sets[name] is not None:
                images, labels = test_set(name)
                results[name] = (len(images), self.evaluate_domain(images, labels, domain_label))
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
        if len(self.target_val["labels"]):
            scalars["acc/target_val_acc"] = self.evaluate_domain(
                self.target_val["images"], self.target_val["labels"], 1.0)[1]
        return scalars

    def _check_finite(self):
        diverged_at = int(self.diverged_at.numpy())
        if diverged_at >= 0:
            last = self.last_good_checkpoint() or "none (no checkpoint was written yet)"
            raise Diverged(f"loss or gradient became NaN/Inf at step {diverged_at}; training "
                           f"stopped and no update from that step was applied; last good "
                           f"checkpoint: {last}. Try a lower --learning-rate.")

    def _check_collapse(self):
        """Raises Collapsed when the guard finds the label classifier dead (utils/training/collapse_guard.py)."""
        if not self.collapse_guard:
            return
        what = self.collapse_guard.diagnosis()
        # Agreed, so that a diagnosis near a threshold cannot stop one worker alone.
        if self.agree(what is not None)[0]:
            raise Collapsed(self.step, what or "another worker's collapse guard fired",
                            self.last_good_checkpoint())

    def last_good_checkpoint(self):
        """The newest checkpoint this run wrote, or else the one it resumed from."""
        return self.manager.latest_checkpoint or self._restored

    def _run_totals(self):
        """(wall seconds, training seconds, timed steps) of the whole run up to now."""
        wall, train, steps = self._clock_base
        return (wall + time.perf_counter() - self._session_start,
                train + self._session_train_seconds, steps + self._session_timed_steps)

    def save_checkpoint(self):
        """Writes ckpt-<step> unless the run diverged or collapsed: every checkpoint on disk
        passed both guards, so the newest one is always a good one to go back to."""
        self._check_finite()
        self._check_collapse()
        self.clock.totals.assign(self._run_totals())
        self._last_save = time.monotonic()
        return self.manager.save(checkpoint_number=self.optimizer.iterations)

    def restore(self, resume_from=None):
        """Restores the newest intact checkpoint of this run, or `resume_from` (issue 19).

        Walks back from the newest `ckpt-N` on disk, reporting and skipping each
        one that is missing a file or cannot be read; the checkpoints after the
        one restored are deleted, as the run writes them again. Returns its
        path, or None when there is none (the run then starts from step 0).
        """
        folder = self.dirs["checkpoints"]
        restored = None
        for prefix in resume_candidates(self.checkpoints_from, resume_from):
            problem = checkpoint_problem(prefix)
            if problem and resume_from is not None:
                raise UserError(f"cannot resume from {prefix}: {problem}; name another checkpoint "
                                "with --resume-from, or drop it to resume from the newest intact one")
            if problem:
                print(f"skipping checkpoint {prefix}: {problem}", flush=True)
                continue
            self._restore_checkpoint(prefix)
            restored = prefix
            break
        discard_after(folder, self.step)
        self.manager = self._checkpoint_manager()
        self._restored = restored
        if self.rollbacks:
            # A worker's own folder is new: the run's record of rollbacks is the chief's.
            self.rollbacks.adopt(self.resume_dirs["logs"])
            self.rollbacks.sync(self.step)
        return restored

    def _restore_checkpoint(self, prefix):
        """Restores `prefix`, which may lack the state of what it was written without: the
        rollback record (a run that stopped on a collapse, resumed with rollbacks) and the
        refinement (a checkpoint of the adaptation phase, e.g. a finished `improved` run)."""
        optional = {"rollbacks", "refinement"} - saved_objects(prefix)
        if "refinement" in optional and self.refinement:
            step = saved_step(prefix)
            if step > self.config.adaptation_steps:
                raise UserError(f"{prefix} is from step {step}, in the refinement phase, but "
                                "holds no refinement state; resume from another checkpoint")
        objects = {name: value for name, value in self._checkpointed.items()
                   if name not in optional}
        tf.train.Checkpoint(**objects).restore(prefix).assert_existing_objects_matched()

    def _forget_after(self, step):
        """Drops what the run logged after `step` (event files, log.txt, validator record),
        so that a run resumed from the checkpoint at `step` logs every later step once."""
        truncate_events(self.dirs["logs"], step)
        log_path = os.path.join(self.dirs["logs"], "log.txt")
        if os.path.exists(log_path):
            with open(log_path) as log:
                lines = log.readlines()
            kept = [line for line in lines if _logged_step(line) <= step]
            if kept != lines:
                atomic_write_text(log_path, "".join(kept))
        if self.validators:
            self.validators.load(up_to_step=step)

    def fit(self, resume=False, show_progress=True, resume_from=None, command=None,
            collapsed=None):
        """Trains to `config.total_steps`; returns the results dict (also results.json).

        Training scalars are written every `log_every_steps` steps, validation
        every `eval_every_steps` and at the end, checkpoints every
        `checkpoint_every_steps` and at each epoch end. SIGINT/SIGTERM stop
        the run after the current update with a checkpoint of that exact step,
        so `resume=True` continues without a gap or a repeated step in the curves.
        Checkpoints are also written every `checkpoint_every_seconds`, so a kill
        loses at most that much; a resume after one rewrites the steps since the
        checkpoint (`_forget_after`) rather than logging them twice.

        `collapsed` (a Collapsed) resumes a run that stopped on that collapse
        (`--on-collapse stop`) as a rollback: its newest checkpoint is the last
        good one, and the batches since it are skipped.
        """
        config = self.config
        for folder in self.dirs.values():
            ensure_writable_dir(folder)
        if resume:
            restored = self.restore(resume_from)
            if restored:
                print(f"resuming from {restored} at step {self.step}", flush=True)
            else:
                print(f"no intact checkpoint in {self.checkpoints_from}: starting run "
                      f"{config.run_name!r} from step 0", flush=True)
            self._forget_after(self.step)
            if collapsed is not None:
                self._resume_collapsed(collapsed)
        config.save(self.dirs["config"])
        writers = create_writers(self.dirs["logs"])
        stop_signal = []
        handlers = {signum: signal.signal(signum, lambda signum, _: stop_signal.append(signum))
                    for signum in SIGNAL_EXIT}
        # Timing of this session, added to what the checkpoint says earlier sessions took.
        self._clock_base = self.clock.read()
        self._session_start = time.perf_counter()
        self._session_train_seconds, self._session_timed_steps = 0.0, 0
        try:
            bar = tqdm(initial=self.step, total=config.total_steps, desc=config.run_name,
                       disable=not show_progress, leave=False, mininterval=1.0)
            while True:
                try:
                    validation = self._train_to_end(writers, stop_signal, bar)
                    self._check_collapse()
                    break
                except Collapsed as collapse:
                    refusal = self.rollbacks.refusal(collapse) if self.rollbacks else "stop"
                    if refusal == "stop":
                        raise
                    if refusal:
                        raise Collapsed(collapse.step, collapse.what,
                                        collapse.last_good_checkpoint, refusal) from None
                    self._roll_back(collapse, writers)
                    if self._stopping(stop_signal):
                        # The restored checkpoint is on disk and the rollback recorded.
                        raise Interrupted(stop_signal[0])
                    bar.reset(total=config.total_steps)
                    bar.update(self.step)
            bar.close()
        except Collapsed as collapse:
            self._record_collapse(collapse)
            raise
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            for writer in writers.values():
                writer.flush()
        # The loop ends with a whole-set validation of the final step: reuse it
        # (a run resumed when already finished has none and evaluates once).
        results = self._finish(validation or self.evaluate(), *self._run_totals())
        if config.tensorboard_extras:
            from utils.tensorboard_extras import write_extras

            seconds = write_extras(self.dirs["logs"], config, results, self.eval_model,
                                   (self.test_sets["source"], self.test_sets["target"]),
                                   command or "(not recorded)", seed=config.target_val_seed)
            # What the end-of-run extras cost (README, "TensorBoard").
            results["tensorboard_extras_seconds"] = round(seconds, 2)
            atomic_write_json(os.path.join(self.dirs["logs"], "results.json"), results)
        return results

    def _train_to_end(self, writers, stop_signal, bar):
        """Trains, validates and checkpoints from the current step to the last; returns the
        final validation (None when there was nothing left to train)."""
        config = self.config
        validation = None
        refining = self.refining(self.step)
        iterator = iter(self.make_dataset())
        while self.step < config.total_steps:
            if self.refining(self.step) != refining:
                # The refinement phase begins: its own input stream.
                refining, iterator = True, iter(self.make_dataset())
            # Train up to the next validation point, epoch end or phase end, whichever is first.
            stop_at = min(_next_multiple(self.step, config.eval_every_steps),
                          _next_multiple(self.step, config.steps_per_epoch), config.total_steps)
            if not refining and self.refinement:
                stop_at = min(stop_at, config.adaptation_steps)
            seconds, steps, stopping = self._train_until(stop_at, iterator, writers,
                                                         stop_signal, bar)
            self._session_train_seconds += seconds
            self._session_timed_steps += steps
            step = self.step
            if step == config.total_steps and step % config.log_every_steps:
                self._log_training_window(writers["train"], step)  # the last, shorter window
            # The end of the adaptation phase before a refinement is validated on the whole
            # sets and checkpointed, like the end of the run: it is a result of its own.
            phase_end = self.refinement is not None and step == config.adaptation_steps
            if step == stop_at:
                if step % config.eval_every_steps == 0 or step == config.total_steps or phase_end:
                    validation = self._validate(writers, whole=step == config.total_steps or phase_end)
                if step % config.steps_per_epoch == 0 or phase_end or self._checkpoint_due(step):
                    self.save_checkpoint()
            if stopping and step < config.total_steps:
                if self.manager.latest_checkpoint != checkpoint_path(self.dirs["checkpoints"],
                                                                     step):
                    self.save_checkpoint()
                raise Interrupted(stop_signal[0])
        return validation

    def _resume_collapsed(self, collapse):
        """The rollback a run stopped on a collapse did not take, taken now on resume."""
        refusal = (self.rollbacks.refusal(collapse) if self.rollbacks
                   else "--on-collapse is stop")
        if refusal is None and self.step > collapse.step:
            refusal = "its newest checkpoint is after the collapse"
        if refusal:
            raise UserError(f"cannot resume run {self.config.run_name!r}, which collapsed at "
                            f"step {collapse.step}, with a rollback: {refusal}")
        entry = self.rollbacks.record(collapse, self.step)
        line = (f"rollback {len(self.rollbacks.records())} of at most {self.rollbacks.limit}: the "
                f"run collapsed by step {collapse.step} ({collapse.what}) and stopped; continuing "
                f"from step {self.step}, skipping the {entry['skipped_batches']} batches it had "
                "trained on since")
        print(line, flush=True)
        with open(os.path.join(self.dirs["logs"], "log.txt"), "a") as log:
            log.write(line + "\n")
        # The collapsed results go only now that the rollback is on record (a multi-worker
        # run's worker has none: the chief wrote them).
        results_path = os.path.join(self.dirs["logs"], "results.json")
        if os.path.exists(results_path):
            os.remove(results_path)

    def _roll_back(self, collapse, writers):
        """`--on-collapse rollback`: back to the last good checkpoint, past the batches since it.

        Restores it, forgets what was logged after it (as a resume would) and
        records the rollback (utils/training/collapse_guard.py, Rollbacks), so that
        a kill from here on resumes past the skipped batches too. The best-<validator>
        weights of steps after it stay: every one passed the guard (see _validate).
        """
        self._restore_checkpoint(collapse.last_good_checkpoint)
        restored_step = self.step
        self.rollbacks.sync(restored_step)
        discard_after(self.dirs["checkpoints"], restored_step)
        self.manager = self._checkpoint_manager()
        for writer in writers.values():
            writer.close()
        self._forget_after(restored_step)
        writers.update(create_writers(self.dirs["logs"]))
        entry = self.rollbacks.record(collapse, restored_step)
        line = (f"rollback {len(self.rollbacks.records())} of at most {self.rollbacks.limit}: the "
                f"label classifier collapsed by step {collapse.step} ({collapse.what}); restored "
                f"{collapse.last_good_checkpoint} and continuing from step {restored_step}, "
                f"skipping the {entry['skipped_batches']} batches it had trained on since")
        print(line, flush=True)
        with open(os.path.join(self.dirs["logs"], "log.txt"), "a") as log:
            log.write(line + "\n")

    def _stopping(self, stop_signal):
        """Whether to stop: a signal reached this or any other worker (agreed by all). A
        worker stopped by another's signal stops as by SIGTERM."""
        (stopping,) = self.agree(bool(stop_signal))
        if stopping and not stop_signal:
            stop_signal.append(signal.SIGTERM)
        return stopping

    def _train_until(self, last_step, iterator, writers, stop_signal, bar):
        """Runs updates up to `last_step`, or until a stop signal arrives.

        Returns (seconds, steps, stopping): the time and steps timed from the end of
        the first call, so the one-time tracing stays out of ms/step, and whether a
        stop signal was agreed. Only every `log_every_steps` does Python wait for
        the device (the NaN check and the training scalars), keeping the loop async.
        """
        config = self.config
        timed_from = None
        step = self.step
        stopping = False
        while step < last_step and not stopping:
            if step % config.log_every_steps == 0:
                self._check_finite()
                self.log_hyperparameters(writers["hyperparameter"], step)
            # Up to `steps_per_call` updates, never past a logging or checkpoint step.
            count = min(config.steps_per_call, last_step - step,
                        _next_multiple(step, config.log_every_steps) - step,
                        _next_multiple(step, config.checkpoint_every_steps) - step)
            train_steps = self.refine_steps if self.refining(step) else self.train_steps
            train_steps(iterator, tf.constant(count, tf.int32))
            step += count
            if timed_from is None:
                timed_from = (time.perf_counter(), step)
            bar.update(count)
            if step % config.log_every_steps == 0:
                self._log_training_window(writers["train"], step)
            # The caller checkpoints `last_step` itself, after its validation: a kill
            # between the two must not leave a checkpoint whose validation is missing.
            if step < last_step and self._checkpoint_due(step):
                self.save_checkpoint()
            stopping = self._stopping(stop_signal)
        self._check_finite()
        if timed_from is None:
            return 0.0, 0, stopping
        return time.perf_counter() - timed_from[0], self.step - timed_from[1], stopping

    def _checkpoint_due(self, step):
        """Every `checkpoint_every_steps`, and once `checkpoint_every_seconds` have passed:
        that is agreed by all workers, whose clocks differ, as every worker must save it."""
        if step % self.config.checkpoint_every_steps == 0:
            return True
        return self.agree(time.monotonic() - self._last_save
                          >= self.config.checkpoint_every_seconds)[0]

    def _log_training_window(self, writer, step):
        """Writes the running means of the window that ends at `step`, then starts a new one
        (the refinement's terms in its phase; a window across the boundary has both)."""
        for metrics in (self.metrics, self.refinement.metrics) if self.refinement else (self.metrics,):
            write_scalars(writer, metrics.result(), step)
            metrics.reset_state()

    def _validate(self, writers, whole):
        """Evaluates, writes the validation scalars and the log line; returns them.

        The collapse guard runs first: a dead model is never scored, so it is never
        kept as a validator's best checkpoint (SND would score it at its best).
        """
        self._check_collapse()
        validation = self.evaluate(whole=whole)
        step = self.step
        write_scalars(writers["validation"], validation, step)
        # Sets smaller than eval_subset are evaluated whole at every point.
        all_whole = whole or all(indices is None for indices in self.eval_subsets.values())
        line = format_validation_line(step, self.config.total_steps, all_whole, validation)
        if self.validators:
            started = time.perf_counter()
            scores = self.validators.scores()
            write_scalars(writers["validation"],
                          {f"validator/{name}": value for name, value in scores.items()}, step)
            # The MNIST-M test accuracy evaluate() computed anyway is stored for the
            # study's judgement only: no checkpoint is ever kept because of it.
            self.validators.update(step, scores, {"target_test_accuracy": float(
                validation.get("acc/label_acc", np.nan)), "whole_test_set": bool(whole)},
                self.eval_model.save_weights,
                seconds=time.perf_counter() - started)
            line += " | validators " + " ".join(f"{name}={value:.4f}"
                                                for name, value in scores.items())
        print(line, flush=True)
        with open(os.path.join(self.dirs["logs"], "log.txt"), "a") as log:
            log.write(line + "\n")
        return validation

    def _record_collapse(self, collapse):
        """results.json of a collapsed run: what died and when, and the accuracies it fell to
        (whole test sets), marked so that no tool takes them for a result. No final weights."""
        self._write_results(self.evaluate(), *self._run_totals(), collapsed=True,
                            collapsed_at=collapse.step, collapse=collapse.what,
                            last_good_checkpoint=collapse.last_good_checkpoint)

    def _finish(self, validation, wall_seconds, train_seconds, timed_steps):
        # With a weight average, the averaged model is the one evaluated and saved.
        atomic_save(os.path.join(self.dirs["checkpoints"], FINAL_WEIGHTS),
                    self.eval_model.save_weights)
        return self._write_results(validation, wall_seconds, train_seconds, timed_steps,
                                   collapsed=False)

    def _write_results(self, validation, wall_seconds, train_seconds, timed_steps, **status):
        results = {
            "mode": self.config.mode,
            "seed": self.config.seed,
            "epochs": self.config.epochs,
            "steps": self.step,
            # None: the domains have no labels (or test set) to measure it on.
            "target_accuracy": _optional(validation, "acc/label_acc"),
            "target_val_accuracy": float(validation.get("acc/target_val_acc", float("nan"))),
            "source_accuracy": _optional(validation, "acc/source_label_acc"),
            "domain_accuracy": _optional(validation, "acc/domain_acc"),
            "wall_seconds": round(wall_seconds, 2),
            "ms_per_step": round(1000.0 * train_seconds / max(timed_steps, 1), 3),
            # Steps the ms/step is measured over: all but each chunk's first call.
            "timed_steps": timed_steps,
            # Collapses the run went back from (--on-collapse rollback), oldest first.
            "rollbacks": self.rollbacks.records() if self.rollbacks else [],
            **status,
        }
        atomic_write_json(os.path.join(self.dirs["logs"], "results.json"), results)
        return results
