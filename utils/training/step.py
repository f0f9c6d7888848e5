"""One compiled train step for any phase, and the compiled loop of `steps_per_call` updates.

An update of either phase (the adaptation's DANN objective, utils/training/objective.py,
or the refinement's, utils/training/refinement.py) is the same seven moves:

  1. the phase prepares for the update at global step t (lambda_p into the GRL,
     or the refinement's teacher refresh);
  2. each replica takes the gradient of its share of the objective, the loss
     scaled under `mixed_float16` (utils/training/precision.py);
  3. the replicas agree whether every loss and gradient is finite (an all-reduce,
     so that every replica and worker takes the same branch);
  4. the update is applied only if so: a NaN/Inf never reaches the weights;
  5. the global step counts the update;
  6. the weight average follows (utils/training/weight_average.py), with the
     step t of the update, read before it was counted;
  7. the first non-finite step is recorded for the NaN guard (`diverged_at`).

The global step is a variable of its own, kept in the checkpoint as `step` and
shared by both phases' steps, so that neither phase's optimizer counter has to
stand for it. A checkpoint written before it existed takes it from the SGD
optimizer's `iterations`, which then counted the updates of both phases
(utils/training/state.py).
"""
import tensorflow as tf

from utils.training import precision


def global_step_variable():
    """The run's global step: the number of updates applied so far (int64)."""
    return tf.Variable(0, dtype=tf.int64, trainable=False, name="step",
                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


def divergence_variable():
    """Step of the first NaN/Inf loss or gradient, -1 while training is healthy."""
    return tf.Variable(-1, dtype=tf.int64, trainable=False)


class TrainStep:
    """The update of one phase: `objective` minimised by `optimizer` (module docstring).

    `global_step`, `diverged_at`, `window` (utils/training/window_sums.py,
    ObjectiveWindow) and `weight_average` (or None) are shared by the phases.
    `count_skipped`: whether an update the loss scaler skipped advances the
    optimizer's own counter (utils/training/precision.py, apply_gradients).

    `update(batch)` is one update, for use inside a tf.function; `run(iterator,
    count)` runs `count` updates in one call of a compiled loop. `count` is a
    tensor, so any count reuses the one trace (`loop.experimental_get_tracing_count()`).
    """

    def __init__(self, strategy, objective, optimizer, global_step, diverged_at, window,
                 weight_average=None, count_skipped=True, gradient_scales=None):
        self.strategy, self.objective, self.optimizer = strategy, objective, optimizer
        self.global_step, self.diverged_at, self.window = global_step, diverged_at, window
        self.weight_average, self.count_skipped = weight_average, count_skipped
        # Per-variable factors on the gradients: a backbone's lower learning rate
        # (utils/training/backbone.py); None leaves them as they are.
        self.gradient_scales = gradient_scales
        self.loop = tf.function(self._steps)

    def _steps(self, iterator, num_steps, target_terms):
        # A graph loop: Python and the per-call overhead are paid once per call rather than
        # once per update.
        for _ in tf.range(num_steps):
            self.update(next(iterator), target_terms)

    def traces(self):
        """How many times the compiled loop has been traced (its first call traces it)."""
        return self.loop.experimental_get_tracing_count()

    def run(self, iterator, count, first_step=None):
        """`count` updates from `iterator` (a distributed dataset's), in one call.

        `first_step`, the global step of the first of them, lets a call that ends before
        the objective's `idle_steps` run the loop traced without the target terms: a
        second trace, taken once, whose updates are bit for bit those of the first.
        """
        target_terms = first_step is None or first_step + count > self.objective.idle_steps
        self.loop(iterator, tf.constant(count, tf.int32), target_terms)

    def replica_gradients(self, batch, step, target_terms=True):
        """(gradients, finite) of one replica's share of `batch`, with `finite` agreed by all
        replicas; adds the share to the window sums. `target_terms`: objective.forward's."""
        objective = self.objective
        with tf.GradientTape() as tape:
            terms, outputs = objective.forward(batch, step, target_terms)
            total_loss = objective.total(terms)
            scaled_loss = precision.scale_loss(self.optimizer, total_loss)
        gradients, finite = precision.gradients_and_finite(
            tape, total_loss, scaled_loss, objective.trained_variables, self.optimizer)
        if self.gradient_scales:
            gradients = [gradient if scale == 1.0 else gradient * scale
                         for gradient, scale in zip(gradients, self.gradient_scales)]
        replicas_not_finite = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32))
        objective.record(outputs)
        self.window.record(total_loss, terms)
        return gradients, tf.equal(replicas_not_finite, 0.0)

    def apply_gradients(self, gradients):
        precision.apply_gradients(self.optimizer, gradients, self.objective.trained_variables,
                                  self.count_skipped)

    def update(self, batch, target_terms=True):
        """One update (module docstring); skipped when not finite."""
        # A value read now, before the update counts itself: the weight average and the
        # schedules use the step of the update they belong to.
        step = self.global_step.read_value()
        self.objective.prepare(step)
        gradients, finite = self.strategy.run(self.replica_gradients,
                                             args=(tuple(batch), step, target_terms))
        finite = self.strategy.experimental_local_results(finite)[0]

        def apply():
            self.strategy.run(self.apply_gradients, args=(gradients,))
            self.global_step.assign_add(1)
            return tf.constant(True)

        # The branch sits outside strategy.run: replicas may not synchronise inside
        # control flow. A non-finite update is never applied, so the weights stay
        # at the last good step.
        tf.cond(finite, apply, lambda: tf.constant(False))
        if self.weight_average:
            self.weight_average.update(step)
        self.diverged_at.assign(tf.where(tf.logical_or(finite, self.diverged_at >= 0),
                                         self.diverged_at, step))
