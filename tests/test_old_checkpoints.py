"""A checkpoint written by the code before the training core's redesign still resumes.

That code kept no global step variable (the SGD optimizer's `iterations` counted the
updates of both phases) and no objective window; utils/training/state.py restores
such checkpoints without them. The old code is run from the repository's history.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import train_MNIST2MNIST_M
from tests.conftest import ROOT, SMALL_VAL_SIZE
from tests.test_stop_and_resume import h5_arrays

# The last commit before the training core was redesigned (loop.py split into objective,
# step, evaluation, state, ...): its checkpoints are the ones users have on disk.
OLD_COMMIT = "4ed0808"


def old_code(folder):
    """The repository at OLD_COMMIT, extracted into `folder`; skips without git history."""
    try:
        subprocess.run(["git", "rev-parse", "--verify", f"{OLD_COMMIT}^{{commit}}"], cwd=ROOT,
                       check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"git history with commit {OLD_COMMIT} is not available")
    archive = subprocess.run(["git", "archive", OLD_COMMIT], cwd=ROOT, check=True,
                             capture_output=True).stdout
    os.makedirs(folder)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


@pytest.mark.slow  # a training process of the old code, about 30 s
def test_a_checkpoint_of_the_old_code_resumes_inside_the_refinement(data_dir, tmp_path):
    code, root = old_code(tmp_path / "old_code"), tmp_path / "runs"
    # Adaptation 6 steps, refinement 4, checkpoints every 2 steps, windows of 3 steps, VAT
    # from the adaptation's second half, a weight average and the rollback record.
    flags = ["--data-dir", data_dir, "--output-root", str(root), "--run-name", "old",
             "--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "8",
             "--eval-batch-size", "16", "--target-val-size", str(SMALL_VAL_SIZE),
             "--log-every-steps", "3", "--checkpoint-every-steps", "2", "--max-to-keep", "10",
             "--ema-decay", "0.9", "--vat-weight", "0.1", "--vat-start", "0.5",
             "--refine-steps", "4", "--refine-interval", "3", "--deterministic",
             "--tensorboard-extras", "false", "--no-progress"]
    old = subprocess.run([sys.executable, "train_MNIST2MNIST_M.py", *flags], cwd=code,
                         capture_output=True, text=True, timeout=300)
    assert old.returncode == 0, old.stderr[-3000:]
    checkpoints = root / "checkpoints" / "old"
    old_final = h5_arrays(checkpoints / "final.weights.h5")
    # As if it had been killed after its last checkpoint: a finished run is not resumed.
    os.remove(root / "logs" / "old" / "results.json")
    os.remove(checkpoints / "final.weights.h5")

    # ckpt-8: two updates into the refinement, in the middle of a logging window.
    train_MNIST2MNIST_M.main(["--resume", "--resume-from", "ckpt-8", "--run-name", "old",
                              "--keep-checkpoints-at-end", "10",
                              "--output-root", str(root), "--no-progress"])
    from utils.training.checkpoints import saved_objects, saved_step

    assert saved_step(str(checkpoints / "ckpt-10")) == 10
    assert {"step", "objective_window"} <= saved_objects(str(checkpoints / "ckpt-10"))
    assert "step" not in saved_objects(str(checkpoints / "ckpt-8"))
    # The same updates as the old code's own run straight through.
    new_final = h5_arrays(checkpoints / "final.weights.h5")
    assert new_final.keys() == old_final.keys()
    for name, array in old_final.items():
        np.testing.assert_array_equal(new_final[name], array, err_msg=name)
