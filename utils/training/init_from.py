"""Starting a run from another run's finished adaptation phase (`--init-from RUN`).

A run with a refinement phase (utils/training/refinement.py) is the adaptation
run of the same settings followed by refinement, which is how DIRT-T's released
code runs it too (`run_dirtt.py --dirt 5000` restores the VADA run's
checkpoint). So a new run may start from a finished run whose settings it
shares except for the refinement's: the other run's checkpoint at the end of
its adaptation phase, its logs (curves, log.txt, validator record, rollback
record) and best-<validator> weights are copied under the new run's name, and
the new run then resumes from that checkpoint as if it had trained the
adaptation phase itself. Nothing of the other run is changed.
"""
import json
import os
import shutil

from config.config import FROM_DATA, DANNConfig, config_changes
from utils.io import UserError, atomic_write_json
from utils.runs import FINAL_WEIGHTS, config_file, results_file, run_dirs
from utils.training.checkpoints import checkpoint_path, checkpoint_problem
from utils.training.run_lock import LOCK_FILE

# Fields the two runs may differ in: the refinement's, naming, and what acts only on
# output, on a collapse or on where the data lies.
MAY_DIFFER = {"run_name", "recipe", "refine_steps", "refine_interval", "refine_learning_rate",
              "refine_kl_weight", "refine_entropy_weight", "refine_vat_weight",
              "tensorboard_extras", "on_collapse", "max_rollbacks", "max_to_keep",
              "keep_checkpoints_at_end",
              "checkpoint_every_seconds", "data_dir"}
# What the other run's logs/ hold that belongs to its end only: its results, its
# end-of-run TensorBoard extras (top-level event file, projector/) and diagnostics.
NOT_COPIED = {"results.json", "projector", "diagnostics"}
RECORD = "init_from.json"


def init_problem(config, run, output_root):
    """Why `config`'s run cannot start from `run` (a one-line reason), or None."""
    path = config_file(run, output_root)
    if not os.path.exists(path):
        return f"there is no run {run!r} under {output_root} (no {path})"
    if not config.refine_steps:
        return "--init-from starts a run's refinement phase from another run, but --refine-steps is 0"
    other = DANNConfig.load(path)
    # A field filled from the data that the other run's config predates (None there) came
    # from the same data: the domains themselves are compared.
    saved = other.to_dict()
    changed = config_changes(saved, config.to_dict(), MAY_DIFFER | {
        name for name in FROM_DATA if saved[name] is None})
    if changed:
        return (f"run {run!r} was trained with other settings ({', '.join(changed)}); only the "
                "refinement's may differ")
    if other.refine_steps:
        return f"run {run!r} has a refinement phase of its own; start from a run without one"
    results = results_file(run, output_root)
    if not os.path.exists(results):
        return f"run {run!r} has not finished; finish it first (python train_MNIST2MNIST_M.py " \
               f"--run-name {run} --resume)"
    with open(results) as handle:
        if json.load(handle).get("collapsed"):
            return f"run {run!r} collapsed; start from a run that finished"
    prefix = checkpoint_path(run_dirs(output_root, run)["checkpoints"], config.adaptation_steps)
    problem = checkpoint_problem(prefix)
    if problem:
        return f"run {run!r} has no intact checkpoint of its last step ({prefix}: {problem})"
    return None


def check_start_from(config, run, output_root):
    """Raises UserError saying why `config`'s run cannot start from `run` (`init_problem`)."""
    problem = init_problem(config, run, output_root)
    if problem:
        raise UserError(f"cannot start run {config.run_name!r} from run {run!r}: {problem}")


def copy_run(config, run, output_root):
    """Copies `run`'s adaptation phase to `config.run_name` (see the module docstring).

    Each folder in turn is copied to a temporary sibling, then its files are
    renamed into place. A crash leaves at most part of a copy (logs/ without
    checkpoints/, say), which a rerun refuses as "not empty" and `--overwrite`
    clears; a leftover temporary sibling is removed by the next copy. The new
    run's config is written by its own start, after both folders, so a part copy
    is never taken for a finished start.
    """
    check_start_from(config, run, output_root)
    source, target = run_dirs(output_root, run), run_dirs(output_root, config.run_name)
    last = os.path.basename(checkpoint_path(source["checkpoints"], config.adaptation_steps))
    copied = {
        "logs": lambda name: name not in NOT_COPIED and not name.startswith("events.out.tfevents"),
        # The last checkpoint only, and the validators' best weights (their record is in logs).
        "checkpoints": lambda name: (name.startswith(last + ".") or
                                     (name.startswith("best-") and name != FINAL_WEIGHTS)),
    }
    for kind, keep in copied.items():
        folder = target[kind]
        if os.path.isdir(folder) and set(os.listdir(folder)) - {LOCK_FILE}:
            raise UserError(f"{folder} is not empty; pass another --run-name, or --overwrite")
        temporary = folder + ".init"
        shutil.rmtree(temporary, ignore_errors=True)
        os.makedirs(temporary)
        for name in sorted(os.listdir(source[kind])):
            if keep(name):
                path = os.path.join(source[kind], name)
                (shutil.copytree if os.path.isdir(path) else shutil.copy2)(
                    path, os.path.join(temporary, name))
        if kind == "checkpoints":
            # TensorFlow's state file, naming the one checkpoint copied.
            with open(os.path.join(temporary, "checkpoint"), "w") as state:
                state.write(f'model_checkpoint_path: "{last}"\n'
                            f'all_model_checkpoint_paths: "{last}"\n')
        else:
            atomic_write_json(os.path.join(temporary, RECORD),
                              {"init_from": run, "step": config.adaptation_steps})
        os.makedirs(folder, exist_ok=True)
        for name in os.listdir(temporary):
            os.replace(os.path.join(temporary, name), os.path.join(folder, name))
        os.rmdir(temporary)
