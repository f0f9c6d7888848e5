"""Running sums over the current logging window, kept in the checkpoint.

Plain variables rather than Keras metrics so they live in the checkpoint (as
`sums/<name>`): a run resumed mid-window reports the same window averages as
one that was never stopped. Sync-on-read with SUM aggregation, they add up
across replicas (and workers) under tf.distribute. Each kind of window (the
adaptation's, the refinement's) names its sums and turns them into scalars.
"""
import tensorflow as tf


class WindowSums(tf.Module):
    """Sums named by the subclass's NAMES; `result()` gives its TensorBoard scalars."""

    NAMES = ()

    def __init__(self, name):
        super().__init__(name=name)
        self.sums = {name: tf.Variable(0.0, trainable=False, name=name,
                                       synchronization=tf.VariableSynchronization.ON_READ,
                                       aggregation=tf.VariableAggregation.SUM)
                     for name in self.NAMES}

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
    """The adaptation phase's training metrics: L_y, L_d and both accuracies."""

    NAMES = ("label_loss", "label_correct", "label_count",
             "domain_loss", "domain_correct", "domain_count")

    def __init__(self):
        super().__init__("window_metrics")

    def result(self):
        """The window's means, or {} for a window without an adaptation update."""
        sums = self.read()
        if sums["label_count"] == 0 and sums["domain_count"] == 0:
            return {}
        label_loss = sums["label_loss"] / max(sums["label_count"], 1.0)
        domain_loss = sums["domain_loss"] / max(sums["domain_count"], 1.0)
        return {
            "loss/label_loss": label_loss,
            "loss/domain_loss": domain_loss,
            "loss/total_loss": label_loss + domain_loss,
            "acc/label_acc": sums["label_correct"] / max(sums["label_count"], 1.0),
            "acc/domain_acc": sums["domain_correct"] / max(sums["domain_count"], 1.0),
        }
