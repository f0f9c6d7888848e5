"""How a run ends: every way training can stop, as one line and the shell's exit status.

    0    finished (results.json written), or --resume of a run with nothing left to train
    2    bad input, a disk or folder that fails the run's writes, or a lost worker of a
         multi-worker cluster: one line naming the cause (utils.io.UserError, via run_main)
    3    the loss or a gradient became NaN/Inf (the Trainer's Diverged)
    4    the collapse guard stopped the run (utils/training/collapse_guard.py, Collapsed)
    130  SIGINT, 143 SIGTERM: stopped at a checkpoint (the Trainer's Interrupted)

Every stop that leaves a resumable run names the command that continues it. Nothing here
imports TensorFlow until training has begun, so bad input fails in a second.
"""
import contextlib
import json
import os
import re
import sys

from utils.io import UserError, atomic_write_json, free_space, one_line
from utils.runs import diverged_file, results_file
from utils.training.distribute import is_peer_failure

DIVERGED_EXIT = 3
COLLAPSED_EXIT = 4
# What TensorFlow's file writers say when the disk or the folder fails them.
WRITE_FAILURES = ("No space left", "Disk quota", "Read-only file system", "Permission denied",
                  "Input/output error")


def resume_command(config, output_root):
    """The command that continues the run (on every worker, for a multi-worker run)."""
    return (f"python train_MNIST2MNIST_M.py --run-name {config.run_name} --resume"
            + (f" --output-root {output_root}" if output_root != "." else "")
            + (" on every worker, with its TF_CONFIG" if config.strategy == "multi_worker"
               else ""))


def ended_run(config, output_root):
    """What `--resume` finds of a run that has already ended: (collapsed, notice).

    A run that stopped on a collapse, resumed with --on-collapse rollback, gives the
    Collapsed to roll back from (to its last good checkpoint, past the batches since).
    Any other ended run gives the notice that there is nothing to resume: resuming would
    retrain nothing but rewrite results.json with the timing of a no-op. (None, None)
    for a run that has not ended.
    """
    path = results_file(config.run_name, output_root)
    if not os.path.exists(path):
        return None, None
    with open(path) as handle:
        results = json.load(handle)
    collapsed_at = results.get("collapsed_at")
    if collapsed_at is not None and config.on_collapse == "rollback":
        from utils.training.collapse_guard import Collapsed

        return Collapsed(collapsed_at, results["collapse"], results["last_good_checkpoint"]), None
    state = (f"collapsed at step {collapsed_at}; pass --on-collapse rollback to go back to its "
             "last good checkpoint and continue" if collapsed_at is not None
             else "is already finished")
    return None, (f"run {config.run_name!r} {state} ({path}); nothing to resume. Start a new "
                  "run with another --run-name to train again.")


def op_error_cause(message):
    """What a TensorFlow op error says went wrong, without its graph trace (node, file lines)."""
    # Without the "{{function_node ...}}" prefix naming the op's graph function.
    message = re.sub(r"^\{\{[^}]*\}\}\s*", "", message)
    lines = [line.strip() for line in message.splitlines()
             if line.strip() and not line[:1].isspace()
             and not line.startswith(("Graph execution error", "Detected at node", "[[", "File "))]
    return one_line(" ".join(lines[:2]))[:240]


def write_failure(error, folder, checkpoint):
    """The one line for an OS error while the run writes (a full disk, a lost mount...)."""
    reason = getattr(error, "strerror", None) or one_line(getattr(error, "message", error))
    free = free_space(folder).replace(",", ";", 1)
    last = (f"the last good checkpoint {checkpoint} is intact" if checkpoint
            else "no checkpoint was written yet")
    return f"writing the run failed: {reason}{free}; {last}. Free space (or fix the folder), then"


def diverged(trainer, step, output_root):
    """Records a divergence at `step` (logs/<run>/diverged.json, which lets --resume change the
    learning rate and clipping: config/cli.py) and returns the hint that does so."""
    config = trainer.config
    # In the run's own logs (a multi-worker run's worker writes to a temporary copy).
    atomic_write_json(os.path.join(trainer.dirs["logs"], os.path.basename(
        diverged_file(config.run_name))), {"diverged_at": step, "learning_rate":
                                           config.learning_rate, "clip_norm": config.clip_norm})
    lower = float(f"{config.learning_rate / 10:.2g}")
    return (f"Continue from that checkpoint with smaller updates: "
            f"{resume_command(config, output_root)} --learning-rate {lower:g}"
            + ("" if config.clip_norm else " (and/or --clip-norm 5)"))


@contextlib.contextmanager
def before_training(config):
    """Around building the Trainer: a worker that failed before the workers met (see
    distribute.meet_and_leave) is one line, not a TensorFlow trace."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.OpError as error:
        if not is_peer_failure(error, config):
            raise
        raise UserError(f"a worker of the cluster stopped before training began "
                        f"({type(error).__name__}: {op_error_cause(error.message)}); "
                        "nothing was trained. See that worker's error, then start every "
                        "worker again") from None


def train(trainer, output_root, **fit_options):
    """trainer.fit(**fit_options) with every way it can stop turned into one line and the
    shell's exit status (see the module docstring); the results of a finished run."""
    import tensorflow as tf

    from utils.training.collapse_guard import Collapsed
    from utils.training.loop import Diverged, Interrupted

    config = trainer.config
    try:
        return trainer.fit(**fit_options)
    except Interrupted as stop:
        print(f"stopped by {stop} at step {trainer.step}; checkpoint saved. Continue with: "
              f"{resume_command(config, output_root)}", file=sys.stderr)
        sys.exit(stop.exit_status)
    except Diverged as error:
        print(f"error: {error} {diverged(trainer, error.step, output_root)}", file=sys.stderr)
        sys.exit(DIVERGED_EXIT)
    except Collapsed as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(COLLAPSED_EXIT)
    except (OSError, tf.errors.OpError) as error:
        if isinstance(error, tf.errors.OpError) and not any(
                text in str(error) for text in WRITE_FAILURES):
            if not is_peer_failure(error, config):
                raise
            latest = trainer.last_good_checkpoint()
            # Named in the run's own folder: a worker's copy was temporary.
            latest = (os.path.join(trainer.checkpoints_from, os.path.basename(latest))
                      if latest else "none yet")
            raise UserError(f"a worker of the cluster stopped or cannot be reached "
                            f"({type(error).__name__}: {op_error_cause(error.message)}); the "
                            f"last good checkpoint is {latest}. Continue with: "
                            f"{resume_command(config, output_root)}") from None
        message = write_failure(error, trainer.dirs["checkpoints"], trainer.last_good_checkpoint())
        raise UserError(f"{message} continue with: {resume_command(config, output_root)}") from None
