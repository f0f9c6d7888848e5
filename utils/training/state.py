"""A run's state between sessions: its clock, its checkpoint's contents, save, restore and the
walk back past damaged checkpoints, and forgetting what was logged after a checkpoint.

Every checkpoint on disk passed the NaN and collapse guards (the trainer checks
both before `save`), so the newest one is always a good one to go back to.
Restoring is tolerant of what older checkpoints lack: objects written only by
later code (the global step, the objective window), only by some runs (the
rollback record) or only in a later phase (the refinement), so a checkpoint
written by an earlier release of this code still resumes.
"""
import os
import time

import tensorflow as tf

from utils.io import UserError, atomic_write_text
from utils.summaries import truncate_events
from utils.training.checkpoints import (checkpoint_problem, discard_after, keep_newest,
                                        resume_candidates, saved_objects, saved_step)


class RunClock(tf.Module):
    """Wall time, timed training time and timed steps of the run so far.

    Kept in the checkpoint, so a resumed run reports its wall time and ms/step
    over the whole run rather than over its last session; this session's share
    is counted in Python and added at each save.
    """

    def __init__(self):
        super().__init__(name="run_clock")
        self.totals = tf.Variable([0.0, 0.0, 0.0], dtype=tf.float64, trainable=False)
        self.start_session()

    def read(self):
        """(wall seconds, training seconds, timed steps) as saved."""
        wall, train, steps = self.totals.numpy().tolist()
        return wall, train, int(steps)

    def start_session(self):
        """Times a new session from now, on top of what the (restored) totals say."""
        self.base, self.session_start = self.read(), time.perf_counter()
        self.session_train_seconds, self.session_timed_steps = 0.0, 0

    def add_training(self, seconds, steps):
        self.session_train_seconds += seconds
        self.session_timed_steps += steps

    def run_totals(self):
        """(wall seconds, training seconds, timed steps) of the whole run up to now."""
        wall, train, steps = self.base
        return (wall + time.perf_counter() - self.session_start,
                train + self.session_train_seconds, steps + self.session_timed_steps)


def logged_step(line):
    """N of a log.txt line "step N/T ..." (lines of another form count as step 0)."""
    head = line.split("/", 1)[0].split()
    return int(head[1]) if len(head) == 2 and head[0] == "step" and head[1].isdigit() else 0


def forget_after(log_dir, step, validators=None):
    """Drops what the run logged after `step` (event files, log.txt, validator record), so
    that a run resumed from the checkpoint at `step` logs every later step once."""
    truncate_events(log_dir, step)
    log_path = os.path.join(log_dir, "log.txt")
    if os.path.exists(log_path):
        with open(log_path) as log:
            lines = log.readlines()
        kept = [line for line in lines if logged_step(line) <= step]
        if kept != lines:
            atomic_write_text(log_path, "".join(kept))
    if validators:
        validators.load(up_to_step=step)


class RunState:
    """The run's checkpoint: `objects` ({name: trackable}) saved as ckpt-<global step> in
    `folder`, at most `max_to_keep` of them (TensorFlow's CheckpointManager).

    `optional` ({name: step or None}) names the objects a checkpoint may lack: always (None),
    or only when written at most at that step (a phase that begins after it). A checkpoint
    without `step` takes the global step from its SGD optimizer's `iterations`, which
    counted every update before the step had a variable of its own. A checkpoint is also
    due once `every_seconds` have passed (`time_due`).
    """

    def __init__(self, objects, folder, max_to_keep, global_step, clock, optional=None,
                 every_seconds=float("inf"), agree=None):
        self.objects, self.folder, self.max_to_keep = objects, folder, max_to_keep
        self.global_step, self.clock = global_step, clock
        self.every_seconds, self.agree = every_seconds, agree
        self.optional = dict(optional or {})
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.manager = self._manager()
        # The checkpoint a resume restored (the chief's, in a multi-worker run's worker).
        self.restored = None
        self.last_save = time.monotonic()

    def _manager(self):
        """TensorFlow's manager of ckpt-N in the folder (it reads the state file there)."""
        return tf.train.CheckpointManager(self.checkpoint, self.folder,
                                          max_to_keep=self.max_to_keep, checkpoint_name="ckpt")

    def last_good_checkpoint(self):
        """The newest checkpoint this run wrote, or else the one it resumed from."""
        return self.manager.latest_checkpoint or self.restored

    def save(self):
        """Writes ckpt-<step>, with the run clock's totals up to now; returns its path."""
        self.clock.totals.assign(self.clock.run_totals())
        self.last_save = time.monotonic()
        return self.manager.save(checkpoint_number=self.global_step)

    def time_due(self):
        """Whether `every_seconds` have passed since the last save: agreed by all workers
        (`agree`, an Agreement), whose clocks differ, as every worker must save."""
        due = time.monotonic() - self.last_save >= self.every_seconds
        return self.agree(due)[0] if self.agree else due

    def restore(self, prefix):
        """Restores the checkpoint at `prefix`, without the optional objects it lacks."""
        missing = set(self.optional) - saved_objects(prefix)
        for name in sorted(missing):
            starts_after = self.optional[name]
            if starts_after is not None and name in self.objects:
                step = saved_step(prefix)
                if step > starts_after:
                    raise UserError(f"{prefix} is from step {step}, in the {name} phase, but "
                                    f"holds no {name} state; resume from another checkpoint")
        objects = {name: value for name, value in self.objects.items() if name not in missing}
        tf.train.Checkpoint(**objects).restore(prefix).assert_existing_objects_matched()
        if "step" in missing:
            self.global_step.assign(tf.cast(self.objects["optimizer"].iterations, tf.int64))

    def restore_newest(self, candidates_folder, resume_from=None):
        """Restores the newest intact checkpoint in `candidates_folder`, or `resume_from`.

        Walks back from the newest `ckpt-N` there, reporting and skipping each one
        that is missing a file or cannot be read; the checkpoints of this run's
        folder after the one restored are deleted, as the run writes them again.
        Returns its path, or None when there is none (the run then starts from step 0).
        """
        restored = None
        for prefix in resume_candidates(candidates_folder, resume_from):
            problem = checkpoint_problem(prefix)
            if problem and resume_from is not None:
                raise UserError(f"cannot resume from {prefix}: {problem}; name another checkpoint "
                                "with --resume-from, or drop it to resume from the newest intact one")
            if problem:
                print(f"skipping checkpoint {prefix}: {problem}", flush=True)
                continue
            self.restore(prefix)
            restored = prefix
            break
        self.discard_after(int(self.global_step.numpy()))
        self.restored = restored
        return restored

    def keep_newest(self, count):
        """Deletes all but the newest `count` checkpoints and starts the manager from them."""
        keep_newest(self.folder, count)
        self.manager = self._manager()

    def discard_after(self, step):
        """Deletes this run's checkpoints after `step` and starts the manager from the rest."""
        discard_after(self.folder, step)
        self.manager = self._manager()
