"""What a run ends with: its final weights, logs/<run>/results.json and the TensorBoard extras.

results.json holds the run's accuracies (whole test sets), its timing (the run
clock, utils/training/state.py) and its rollbacks; a collapsed run's says so
and has no final weights, so that no tool takes it for a result.
"""
import filecmp
import glob
import os

from utils.device import describe_device
from utils.io import atomic_save, atomic_write_json, link_or_copy
from utils.runs import FINAL_WEIGHTS


class Results:
    """The results of one run: `dirs` its folders (utils/runs.py), `eval_model` the model
    evaluated and saved (the weight average when there is one)."""

    def __init__(self, config, dirs, clock, rollbacks, eval_model, test_sets):
        self.config, self.dirs, self.clock, self.rollbacks = config, dirs, clock, rollbacks
        self.eval_model, self.test_sets = eval_model, test_sets
        self.path = os.path.join(dirs["logs"], "results.json")

    def write(self, step, validation, **status):
        """Writes results.json from the validation scalars of `step` and `status` (collapsed)."""
        wall_seconds, train_seconds, timed_steps = self.clock.run_totals()

        def optional(tag):
            return float(validation[tag]) if tag in validation else None

        results = {
            "mode": self.config.mode,
            "seed": self.config.seed,
            "epochs": self.config.epochs,
            "steps": step,
            # None: the domains have no labels (or test set) to measure it on.
            "target_accuracy": optional("acc/label_acc"),
            "target_val_accuracy": optional("acc/target_val_acc"),
            "source_accuracy": optional("acc/source_label_acc"),
            "domain_accuracy": optional("acc/domain_acc"),
            "wall_seconds": round(wall_seconds, 2),
            "ms_per_step": round(1000.0 * train_seconds / max(timed_steps, 1), 3),
            # Steps the ms/step is measured over: all but each chunk's first call.
            "timed_steps": timed_steps,
            # Collapses the run went back from (--on-collapse rollback), oldest first.
            "rollbacks": self.rollbacks.records() if self.rollbacks else [],
            "device": describe_device(),
            **status,
        }
        atomic_write_json(self.path, results)
        return results

    def collapsed(self, step, validation, collapse):
        """results.json of a collapsed run: what died and when, and the accuracies it fell to,
        marked so that no tool takes them for a result. No final weights."""
        return self.write(step, validation, collapsed=True, collapsed_at=collapse.step,
                          collapse=collapse.what,
                          last_good_checkpoint=collapse.last_good_checkpoint)

    def finish(self, step, validation, command=None):
        """The final weights, results.json and, when the config asks, the TensorBoard extras
        (utils/tensorboard_extras.py); returns the results."""
        final = os.path.join(self.dirs["checkpoints"], FINAL_WEIGHTS)
        atomic_save(final, self.eval_model.save_weights)
        # A validator that picked the last step holds these same bytes: one file on disk.
        for best in glob.glob(os.path.join(self.dirs["checkpoints"], "best-*.weights.h5")):
            if not os.path.samefile(best, final) and filecmp.cmp(best, final, shallow=False):
                atomic_save(best, lambda tmp: link_or_copy(final, tmp))
        results = self.write(step, validation, collapsed=False)
        if self.config.tensorboard_extras:
            from utils.tensorboard_extras import write_extras

            seconds = write_extras(self.dirs["logs"], self.config, results, self.eval_model,
                                   (self.test_sets["source"], self.test_sets["target"]),
                                   command or "(not recorded)", seed=self.config.target_val_seed)
            # What the end-of-run extras cost (README, "TensorBoard").
            results["tensorboard_extras_seconds"] = round(seconds, 2)
            atomic_write_json(self.path, results)
        return results
