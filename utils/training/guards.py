"""The two guards every checkpoint and result passes, and what the run does when one fails.

The NaN guard: the train step records the first update whose loss or gradient
was NaN or Inf and never applies it (utils/training/step.py, `diverged_at`);
the run then stops with Diverged (exit status 3) and its last good checkpoint.
The collapse guard (utils/training/collapse_guard.py) finds a label classifier
that died; `--on-collapse` then stops the run (Collapsed, exit status 4) or rolls
it back to the last good checkpoint (Rollbacks), at most `--max-rollbacks` times.
Both are asked before every checkpoint is written, so every checkpoint on disk
passed both; the collapse guard also before every validation point and the
final results. Their verdicts are agreed by all workers of a multi-worker run.
"""
from utils.io import UserError
from utils.training.collapse_guard import Collapsed, CollapseGuard, Rollbacks


class Diverged(Exception):
    """A loss or gradient became NaN or Inf at `step`; no update was applied from it on."""

    def __init__(self, step, message):
        super().__init__(message)
        self.step = step


class Guards:
    """The run's guards: the collapse guard probes the first `collapse_probe_size` labelled
    training images (`probe_images`, `probe_labels`); `rollbacks` is the rollback record
    (None unless `--on-collapse rollback`); `agree` makes a verdict every worker's."""

    def __init__(self, config, dann, probe_images, probe_labels, diverged_at, agree, log_dir):
        size = config.collapse_probe_size
        self.collapse_guard = (CollapseGuard(dann.feature_extractor, dann.label_classifier,
                                             probe_images[:size], probe_labels[:size])
                               if size > 0 else None)
        self.rollbacks = (Rollbacks(config.max_rollbacks, log_dir)
                          if self.collapse_guard and config.on_collapse == "rollback" else None)
        self.diverged_at, self.agree = diverged_at, agree

    def check_finite(self, last_good):
        """Raises Diverged when an update was not finite; `last_good` is the checkpoint to name."""
        diverged_at = int(self.diverged_at.numpy())
        if diverged_at >= 0:
            last = last_good or "none (no checkpoint was written yet)"
            raise Diverged(diverged_at, f"loss or gradient became NaN/Inf at step {diverged_at}; "
                           f"training stopped and no update from that step was applied; last "
                           f"good checkpoint: {last}.")

    def check_collapse(self, step, last_good):
        """Raises Collapsed when the collapse guard finds the label classifier dead."""
        if not self.collapse_guard:
            return
        what = self.collapse_guard.diagnosis()
        # Agreed, so that a diagnosis near a threshold cannot stop one worker alone.
        if self.agree(what is not None)[0]:
            raise Collapsed(step, what or "another worker's collapse guard fired", last_good)

    def refusal(self, collapse):
        """None when `collapse` is rolled back, "stop" under `--on-collapse stop`, else why the
        rollback cannot be taken."""
        return self.rollbacks.refusal(collapse) if self.rollbacks else "stop"

    def resume_collapsed(self, collapse, step, run_name):
        """The rollback a run stopped on a collapse did not take, recorded on resume from its
        newest checkpoint (at `step`); returns the log line that says so. Once it is logged,
        the collapsed results.json goes."""
        refusal = self.rollbacks.refusal(collapse) if self.rollbacks else "--on-collapse is stop"
        if refusal is None and step > collapse.step:
            refusal = "its newest checkpoint is after the collapse"
        if refusal:
            raise UserError(f"cannot resume run {run_name!r}, which collapsed at step "
                            f"{collapse.step}, with a rollback: {refusal}")
        entry = self.rollbacks.record(collapse, step)
        line = (f"rollback {len(self.rollbacks.records())} of at most {self.rollbacks.limit}: the "
                f"run collapsed by step {collapse.step} ({collapse.what}) and stopped; continuing "
                f"from step {step}, skipping the {entry['skipped_batches']} batches it had "
                "trained on since")
        return line
