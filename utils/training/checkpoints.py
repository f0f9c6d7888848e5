"""A run's training checkpoints on disk: which are intact, which to resume from.

The run's checkpoints are the `ckpt-N.index` / `ckpt-N.data-*` pairs in
checkpoints/<run>/, whatever TensorFlow's `checkpoint` state file says: that
file can be missing or point at a checkpoint that was deleted or cut short
by a full disk or a kill. Resuming walks back from the newest one, skipping
(and reporting) each one that is missing a file or cannot be read whole, so
a damaged newest checkpoint costs the steps since the one before it, not the
run.
"""
import os
import re

import numpy as np

from utils.io import UserError, atomic_write_text

CHECKPOINT = re.compile(r"^ckpt-(\d+)\.index$")


def checkpoint_path(folder, step):
    return os.path.join(folder, f"ckpt-{step}")


def checkpoint_steps(folder):
    """Steps of the checkpoints whose index file is in `folder`, newest first."""
    if not os.path.isdir(folder):
        return []
    steps = [int(match.group(1)) for match in map(CHECKPOINT.match, os.listdir(folder)) if match]
    return sorted(steps, reverse=True)


def checkpoint_problem(prefix):
    """Why the checkpoint at `prefix` cannot be restored (None when it is intact).

    Reads every tensor it holds, so a truncated or overwritten data file is
    found here rather than halfway through a restore.
    """
    import tensorflow as tf

    if not os.path.exists(prefix + ".index"):
        return "its .index file is missing"
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as error:  # noqa: BLE001 -- any failure to read means "not intact"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return f"it cannot be read ({type(error).__name__}{': ' + reason[:160] if reason else ''})"
    return None


def saved_objects(prefix):
    """The names of the objects the checkpoint at `prefix` holds (model, optimizer, ...)."""
    import tensorflow as tf

    return {name.split("/", 1)[0] for name, _ in tf.train.list_variables(prefix)}


# Where a checkpoint holds the global step (utils/training/step.py); one written before the
# step had a variable of its own holds it as its SGD optimizer's update count.
STEP_KEY = "step/.ATTRIBUTES/VARIABLE_VALUE"
OLD_STEP_KEY = "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"


def saved_step(prefix):
    """The global step the checkpoint at `prefix` was written at."""
    import tensorflow as tf

    names = {name for name, _ in tf.train.list_variables(prefix)}
    return int(tf.train.load_variable(prefix, STEP_KEY if STEP_KEY in names else OLD_STEP_KEY))


def parse_checkpoint_name(name, folder):
    """The checkpoint prefix `--resume-from` names: `ckpt-N`, `N` or a path ending in ckpt-N."""
    base = os.path.basename(str(name))
    if base.endswith(".index"):
        base = base[:-len(".index")]
    match = re.fullmatch(r"(?:ckpt-)?(\d+)", base)
    if not match:
        raise UserError(f"--resume-from takes a checkpoint name such as ckpt-2000, got {name!r}; "
                        f"the run's checkpoints are the ckpt-N.index files in {folder}")
    return checkpoint_path(folder, int(match.group(1)))


def resume_candidates(folder, resume_from=None):
    """The checkpoints to try, in order: the one named by `resume_from`, or all, newest first."""
    if resume_from is not None:
        return [parse_checkpoint_name(resume_from, folder)]
    return [checkpoint_path(folder, step) for step in checkpoint_steps(folder)]


def _remove(folder, step):
    for name in os.listdir(folder):
        if name.startswith(f"ckpt-{step}."):
            os.remove(os.path.join(folder, name))


def discard_after(folder, step):
    """Deletes the checkpoints newer than `step` (the run rewrites them) and makes the state
    file list the rest, so that TensorFlow's CheckpointManager starts from what is on disk."""
    for newer in checkpoint_steps(folder):
        if newer > step:
            _remove(folder, newer)
    write_state_file(folder)


def keep_newest(folder, count):
    """Deletes all but the newest `count` checkpoints, oldest first, so that a kill halfway
    leaves the newest intact, and makes the state file list the rest."""
    for older in sorted(checkpoint_steps(folder)[count:]):
        _remove(folder, older)
    write_state_file(folder)


def write_state_file(folder):
    """Makes the `checkpoint` state file list the checkpoints on disk (removes it if none)."""
    kept = sorted(checkpoint_steps(folder))
    state_file = os.path.join(folder, "checkpoint")
    if not kept:
        if os.path.exists(state_file):
            os.remove(state_file)
        return
    # The `checkpoint` state file CheckpointManager reads at start-up (a CheckpointState text
    # proto). With their timestamps listed, the manager prunes these checkpoints by
    # max_to_keep as it would its own; without them it would keep them forever.
    names = [f"ckpt-{s}" for s in kept]
    stamps = [os.path.getmtime(os.path.join(folder, name + ".index")) for name in names]
    lines = [f'model_checkpoint_path: "{names[-1]}"']
    lines += [f'all_model_checkpoint_paths: "{name}"' for name in names]
    lines += [f"all_model_checkpoint_timestamps: {stamp!r}" for stamp in stamps]
    lines.append(f"last_preserved_timestamp: {min(stamps) - 1.0!r}")
    atomic_write_text(state_file, "\n".join(lines) + "\n")


def variable_bytes(*trackables):
    """Bytes of the distinct variables of Keras models, optimizers and tf.Modules."""
    seen, total = set(), 0
    for trackable in trackables:
        variables = getattr(trackable, "weights", None)
        if variables is None:
            variables = getattr(trackable, "variables", ())
        for variable in variables:
            if id(variable) not in seen:
                seen.add(id(variable))
                # Keras variables give their dtype as a name, TensorFlow's as a DType.
                dtype = np.dtype(getattr(variable.dtype, "name", variable.dtype))
                total += int(np.prod(tuple(variable.shape))) * dtype.itemsize
    return total


def disk_line(objects, eval_model, max_to_keep, keep_at_end):
    """What the run's checkpoints and weight files will take on disk, in one line for the
    start of a run: a checkpoint holds every variable of `objects`; a weights file holds
    `eval_model`'s, written for the final model and each validator's best (hard-linked to
    one another when they pick the same step)."""
    checkpoint, weights = variable_bytes(*objects.values()), variable_bytes(eval_model)
    keep_at_end = min(keep_at_end, max_to_keep)

    def mb(size):
        return f"{size / 1e6:.1f} MB"

    return (f"disk: a checkpoint takes about {mb(checkpoint)} and a weights file {mb(weights)}; "
            f"at most {max_to_keep} checkpoints during the run (--keep-checkpoints) and "
            f"{keep_at_end} once it has finished (--keep-checkpoints-at-end), beside the final "
            f"weights and the validators' best (one file per step they pick, at most five): "
            f"at most about {mb(max_to_keep * checkpoint + 6 * weights)} during the run, "
            f"{mb(keep_at_end * checkpoint + 6 * weights)} at its end")
