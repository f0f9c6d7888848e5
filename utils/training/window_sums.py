"""Running sums over the current logging window, kept in the checkpoint.

Plain variables rather than Keras metrics so they live in the checkpoint (as
`sums/<name>`): a run resumed mid-window reports the same window averages as
one that was never stopped. Sync-on-read with SUM aggregation, they add up
across replicas (and workers) under tf.distribute. Each kind of window names
its sums and turns them into TensorBoard scalars (the tags are listed in
utils/summaries.py).
"""
import tensorflow as tf


class WindowSums(tf.Module):
    """Sums named by NAMES (the subclass's, or `names`); `result()` gives its scalars."""

    NAMES = ()

    def __init__(self, name, names=None):
        super().__init__(name=name)
        self.sums = {name: tf.Variable(0.0, trainable=False, name=name,
                                       synchronization=tf.VariableSynchronization.ON_READ,
                                       aggregation=tf.VariableAggregation.SUM)
                     for name in (self.NAMES if names is None else names)}

    def update(self, **values):
        for name, value in values.items():
            self.sums[name].assign_add(tf.cast(value, tf.float32))

    def reset_state(self):
        for variable in self.sums.values():
            variable.assign(0.0)

    def read(self):
        """{name: the window's sum so far} (summed across replicas)."""
        return {name: float(variable.numpy()) for name, variable in self.sums.items()}


class WindowMetrics(WindowSums):
    """The adaptation phase's training metrics: L_y, L_d and both accuracies, as means over
    the window's images (not weighted: the objective's weights are in ObjectiveWindow)."""

    NAMES = ("label_loss", "label_correct", "label_count",
             "domain_loss", "domain_correct", "domain_count")

    def __init__(self, labelled_role="source"):
        """`labelled_role` names the domain of the labelled half ("source", or "target" in
        target_only mode), whose batch accuracy is also logged under its own name."""
        super().__init__("window_metrics")
        self.labelled_role = labelled_role

    def result(self):
        """The window's means, or {} for a window without an adaptation update."""
        sums = self.read()
        if sums["label_count"] == 0 and sums["domain_count"] == 0:
            return {}
        label_acc = sums["label_correct"] / max(sums["label_count"], 1.0)
        return {
            "loss/label_loss": sums["label_loss"] / max(sums["label_count"], 1.0),
            "loss/domain_loss": sums["domain_loss"] / max(sums["domain_count"], 1.0),
            "acc/label_acc": label_acc,
            "acc/domain_acc": sums["domain_correct"] / max(sums["domain_count"], 1.0),
            f"acc/{self.labelled_role}_label_acc": label_acc,
        }


class ObjectiveWindow(WindowSums):
    """The objective as minimised, over the window's updates of either phase: `total`, the
    loss each update took the gradient of, and each logged term's weighted value, as sums
    over updates of the global batch's value; `updates` counts the updates and
    `<term>_updates` those that had the term (a window may span both phases).

    A separate object of the checkpoint from WindowMetrics, so that a checkpoint written
    before it existed still restores (it is optional there; utils/training/state.py).
    """

    def __init__(self, term_names):
        self.term_names = tuple(term_names)
        super().__init__("objective_window", ("total", "updates") + self.term_names
                         + tuple(f"{name}_updates" for name in self.term_names))

    def record(self, total, terms):
        """In a replica: its share of the update's total and of each logged term it has
        (shares of the global batch, so the replicas' sums add up to the update's), and one
        update, counted by the first replica only."""
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        one = tf.cast(tf.equal(replica, 0), tf.float32)
        present = [name for name in self.term_names if name in terms]
        self.update(total=total, updates=one, **{name: terms[name] for name in present},
                    **{f"{name}_updates": one for name in present})

    def result(self):
        """{"loss/total_loss": ..., "loss/<term>": ...}: means over the window's updates (of
        each term: over those that had it)."""
        sums = self.read()
        if sums["updates"] == 0:
            return {}
        scalars = {f"loss/{name}": sums[name] / sums[f"{name}_updates"]
                   for name in self.term_names if sums[f"{name}_updates"] > 0}
        scalars["loss/total_loss"] = sums["total"] / sums["updates"]
        return scalars
