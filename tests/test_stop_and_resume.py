"""Stopping a training run by signal or divergence, and resuming it.

The signal tests run the real script in subprocesses. One uninterrupted run
and one run stopped twice (SIGINT, then SIGTERM) and resumed are shared by
them: each subprocess pays ~8 s of TensorFlow import, so the assertions share
runs rather than repeat them.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import (ROOT, SMALL_VAL_SIZE, assert_one_line_failure, run_script,
                            script_messages)
from utils.training.checkpoints import checkpoint_steps
from utils.summaries import read_scalars

TRAIN_SCRIPT = "train_MNIST2MNIST_M.py"
STEPS_PER_EPOCH, EPOCHS, CHECKPOINT_EVERY, MAX_TO_KEEP = 30, 4, 10, 2
TOTAL_STEPS = STEPS_PER_EPOCH * EPOCHS
STOPPED_AT = re.compile(r"stopped by (SIG\w+) at step (\d+); checkpoint saved")


def run_flags(data_dir, output_root, run_name):
    return ["--data-dir", data_dir, "--output-root", output_root, "--run-name", run_name,
            "--epochs", EPOCHS, "--steps-per-epoch", STEPS_PER_EPOCH, "--batch-size", 8,
            "--target-val-size", SMALL_VAL_SIZE,
            # VAT draws random directions every update: resume must draw the same ones.
            "--vat-weight", 0.1, "--vat-start", 0.0,
            "--eval-batch-size", 16, "--checkpoint-every-steps", CHECKPOINT_EVERY,
            "--max-to-keep", MAX_TO_KEEP, "--keep-checkpoints-at-end", MAX_TO_KEEP,
            "--log-every-steps", 1, "--deterministic",
            "--no-progress"]


def resume_flags(output_root, run_name):
    return ["--resume", "--run-name", run_name, "--output-root", output_root, "--no-progress"]


def latest_checkpoint_step(checkpoint_folder):
    latest = tf.train.latest_checkpoint(str(checkpoint_folder))
    return -1 if latest is None else int(latest.rsplit("-", 1)[1])


def stop_after_checkpoint(args, checkpoint_folder, min_step, signum):
    """Starts the train script, sends `signum` once a checkpoint >= `min_step` exists.

    Returns the CompletedProcess. Waiting for a checkpoint guarantees the
    signal lands inside the training loop, not during the TensorFlow import.
    """
    process = subprocess.Popen([sys.executable, TRAIN_SCRIPT, *map(str, args)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while latest_checkpoint_step(checkpoint_folder) < min_step:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            _, stderr = process.communicate()
            pytest.fail(f"no checkpoint >= {min_step} before the run ended:\n{stderr[-3000:]}")
        time.sleep(0.02)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=180)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def h5_arrays(path):
    """{dataset path: array} of every array in an .h5 file."""
    arrays = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(lambda name, item: arrays.__setitem__(name, item[()])
                          if isinstance(item, h5py.Dataset) else None)
    return arrays


def checkpoint_numbers(checkpoint_folder):
    return sorted(checkpoint_steps(str(checkpoint_folder)))


@pytest.fixture(scope="module")
def output_root(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def uninterrupted_run(data_dir, output_root):
    completed = run_script(TRAIN_SCRIPT, *run_flags(data_dir, output_root, "straight"),
                           timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return "straight"


@pytest.fixture(scope="module")
def stopped_twice_run(data_dir, output_root):
    """Run "stopped": SIGINT after the first checkpoint, resumed, SIGTERM in epoch 2, resumed."""
    checkpoints = output_root / "checkpoints" / "stopped"
    stops = [stop_after_checkpoint(run_flags(data_dir, output_root, "stopped"), checkpoints,
                                   CHECKPOINT_EVERY, signal.SIGINT)]
    stops.append(stop_after_checkpoint(resume_flags(output_root, "stopped"), checkpoints,
                                       STEPS_PER_EPOCH + CHECKPOINT_EVERY, signal.SIGTERM))
    final = run_script(TRAIN_SCRIPT, *resume_flags(output_root, "stopped"), timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    return stops, final


def resumed_at_step(stdout):
    match = re.search(r"resuming from \S+ckpt-(\d+) at step (\d+)", stdout)
    assert match and match.group(1) == match.group(2), stdout[-2000:]
    return int(match.group(2))


@pytest.mark.slow  # about 100 s: four training processes
def test_signals_stop_with_shell_status_and_resume_from_that_step(stopped_twice_run):
    stops, final = stopped_twice_run
    stopped_steps = []
    for stop, name, expected_status in zip(stops, ("SIGINT", "SIGTERM"), (130, 143)):
        assert "Traceback" not in stop.stderr, stop.stderr[-3000:]
        assert stop.returncode == expected_status, stop.stderr[-3000:]
        messages = script_messages(stop.stderr)
        assert len(messages) == 1, stop.stderr[-3000:]
        match = STOPPED_AT.search(messages[0])
        assert match and match.group(1) == name, messages[0]
        assert "--run-name stopped --resume" in messages[0]
        stopped_steps.append(int(match.group(2)))
    assert CHECKPOINT_EVERY <= stopped_steps[0] < TOTAL_STEPS
    assert STEPS_PER_EPOCH + CHECKPOINT_EVERY <= stopped_steps[1] < TOTAL_STEPS
    # Each resume starts from a checkpoint of the exact step its predecessor stopped at.
    assert [resumed_at_step(stops[1].stdout), resumed_at_step(final.stdout)] == stopped_steps


@pytest.mark.slow
def test_resumed_run_counts_every_step_once(stopped_twice_run, uninterrupted_run, output_root):
    for run in ("stopped", uninterrupted_run):
        results = json.loads((output_root / "logs" / run / "results.json").read_text())
        assert results["steps"] == TOTAL_STEPS
        # ms/step covers the whole run, every session: each of the 20 validation
        # chunks leaves its first call (1 step here) untimed, each session one more.
        # Only the last session's steps would be fewer than 80.
        assert TOTAL_STEPS - 25 <= results["timed_steps"] < TOTAL_STEPS, results
    stopped = read_scalars(str(output_root / "logs" / "stopped"))
    straight = read_scalars(str(output_root / "logs" / uninterrupted_run))
    for writer, tags in stopped.items():
        for tag, points in tags.items():
            steps = [step for step, _ in points]
            assert len(steps) == len(set(steps)), f"{writer} {tag} repeats a step"
            assert steps == [step for step, _ in straight[writer][tag]], f"{writer} {tag}"
    assert [step for step, _ in stopped["hyperparameter"]["hyperparameter/learning_rate"]] == \
        list(range(TOTAL_STEPS))
    # --log-every-steps 1: a training window per step, each written once.
    assert [step for step, _ in stopped["train"]["loss/label_loss"]] == \
        list(range(1, TOTAL_STEPS + 1))


@pytest.mark.slow
def test_resumed_deterministic_run_matches_uninterrupted(stopped_twice_run, uninterrupted_run,
                                                         output_root):
    stopped = h5_arrays(output_root / "checkpoints" / "stopped" / "final.weights.h5")
    straight = h5_arrays(output_root / "checkpoints" / uninterrupted_run / "final.weights.h5")
    assert stopped.keys() == straight.keys() and len(stopped) > 10
    for name, array in straight.items():
        np.testing.assert_allclose(stopped[name], array, rtol=1e-6, atol=1e-7, err_msg=name)
    # The training-window averages, restored from the checkpoint mid-window, match too.
    stopped_scalars = read_scalars(str(output_root / "logs" / "stopped"))["train"]
    straight_scalars = read_scalars(str(output_root / "logs" / uninterrupted_run))["train"]
    for tag, points in straight_scalars.items():
        np.testing.assert_allclose([v for _, v in stopped_scalars[tag]], [v for _, v in points],
                                   rtol=1e-5, err_msg=tag)


@pytest.mark.slow
def test_checkpoints_on_disk_are_bounded_by_max_to_keep(stopped_twice_run, uninterrupted_run,
                                                        output_root):
    for run in ("stopped", uninterrupted_run):
        # TOTAL_STEPS / CHECKPOINT_EVERY = 12 periodic checkpoints were written.
        assert checkpoint_numbers(output_root / "checkpoints" / run) == \
            [TOTAL_STEPS - CHECKPOINT_EVERY, TOTAL_STEPS]


def test_divergence_stops_cleanly_and_last_good_checkpoint_loads(data_dir, tmp_path, capsys):
    import train_MNIST2MNIST_M
    from config.config import DANNConfig
    from utils.data import builtin_domains
    from utils.training.loop import Trainer

    # In-process, to spare one TensorFlow import: the script handles divergence
    # inside main() itself, so the exit status and stderr are the shell's.
    argv = ["--data-dir", data_dir, "--output-root", str(tmp_path), "--run-name", "diverges",
            "--learning-rate", "1e6", "--epochs", "1", "--steps-per-epoch", "30",
            "--target-val-size", str(SMALL_VAL_SIZE),
            "--batch-size", "8", "--eval-batch-size", "16", "--checkpoint-every-steps", "1",
            # The NaN guard alone: at this rate the collapse guard would first see the
            # exploded classifier put every probe image in one class (and stop with exit 4).
            "--collapse-probe-size", "0"]
    with pytest.raises(SystemExit) as exit_info:
        train_MNIST2MNIST_M.main(argv)
    output = capsys.readouterr()
    # The progress bar is cleared first: the error starts a line of its own on a terminal.
    assert re.search(r"[\r\n]error: loss or gradient became NaN/Inf at step ", output.err)
    errors = "\n".join(part for part in re.split(r"[\r\n]", output.err)
                       if not part.startswith("diverges:"))
    completed = subprocess.CompletedProcess(argv, exit_info.value.code, output.out, errors)
    message = assert_one_line_failure(completed, "NaN/Inf at step", "last good checkpoint: ")
    last_good = message.split("last good checkpoint: ")[1].split(". ")[0]
    assert message.endswith("--run-name diverges --resume --output-root "
                            f"{tmp_path} --learning-rate 100000 (and/or --clip-norm 5)")
    assert os.path.exists(last_good + ".index"), message
    assert not (tmp_path / "logs" / "diverges" / "results.json").exists()

    config = DANNConfig.load(tmp_path / "config" / "diverges" / "config.json")
    trainer = Trainer(config, *builtin_domains(data_dir), output_root=str(tmp_path))
    initial = [w.numpy() for w in trainer.dann.model.trainable_weights]
    trainer.state.restore(last_good)
    restored = [w.numpy() for w in trainer.dann.model.trainable_weights]
    assert trainer.step == int(last_good.rsplit("-", 1)[1]) > 0
    assert int(trainer.diverged_at.numpy()) == -1
    assert all(np.isfinite(w).all() for w in restored)
    assert any(not np.array_equal(a, b) for a, b in zip(initial, restored))



@pytest.mark.slow  # two short runs, about 15 s: kept out of the default suite's 5 minutes
def test_the_hint_after_a_divergence_can_be_followed(data_dir, tmp_path, capsys, monkeypatch):
    """The resume the hint names lowers the learning rate, says so and records it. (At 1e6,
    as above, the weights are past saving at any rate; here a run at the default rate is told
    at step 12 that it diverged.)"""
    import train_MNIST2MNIST_M
    from config.config import DANNConfig
    from utils.training.guards import Diverged, Guards

    def diverges_at_12(self, last_good):
        if self.diverged_at.numpy() < 0 and trainer_step[0] >= 12:
            raise Diverged(12, f"NaN at step 12; last good checkpoint: {last_good}.")

    trainer_step = [0]
    original = Guards.check_finite
    monkeypatch.setattr(Guards, "check_finite", diverges_at_12)
    from utils.training.loop import Trainer
    original_until = Trainer.train_until

    def counting(self, *args, **kwargs):
        result = original_until(self, *args, **kwargs)
        trainer_step[0] = self.step
        return result

    monkeypatch.setattr(Trainer, "train_until", counting)
    argv = ["--data-dir", data_dir, "--output-root", str(tmp_path), "--run-name", "slips",
            "--epochs", "1", "--steps-per-epoch", "20", "--target-val-size", str(SMALL_VAL_SIZE),
            "--batch-size", "8", "--eval-batch-size", "16", "--checkpoint-every-steps", "5",
            "--eval-every-steps", "4", "--no-progress"]
    with pytest.raises(SystemExit):
        train_MNIST2MNIST_M.main(argv)
    hint = capsys.readouterr().err.strip().splitlines()[-1]
    assert hint.endswith("--run-name slips --resume --output-root "
                         f"{tmp_path} --learning-rate 0.001 (and/or --clip-norm 5)")
    monkeypatch.setattr(Guards, "check_finite", original)
    train_MNIST2MNIST_M.main(hint.split("python train_MNIST2MNIST_M.py ")[1].split(" (")[0].split()
                             + ["--no-progress"])
    line = "resumed after a divergence with learning_rate 0.01 -> 0.001 (from the resumed step on)"
    assert line in capsys.readouterr().out
    assert line in (tmp_path / "logs" / "slips" / "log.txt").read_text()
    assert DANNConfig.load(tmp_path / "config" / "slips" / "config.json").learning_rate == 0.001
    results = json.loads((tmp_path / "logs" / "slips" / "results.json").read_text())
    assert results["steps"] == 20 and not results["collapsed"]


@pytest.mark.slow  # six processes, about a minute: run by .ci/run after the default suite
def test_kill_9_at_five_random_moments_then_resume_matches_uninterrupted(data_dir, output_root,
                                                                        uninterrupted_run):
    """Fault injection: SIGKILL (no handler runs) at 5 seeded moments, the first before any
    checkpoint, each followed by the command a user would type next."""
    rng = np.random.default_rng(19)
    run, checkpoints = "killed", output_root / "checkpoints" / "killed"
    config = output_root / "config" / "killed" / "config.json"
    # Kill once the config exists (before the first checkpoint), then after checkpoints at
    # four seeded steps, each with a seeded delay so some kills land between checkpoints.
    targets = [None] + sorted(rng.choice(np.arange(CHECKPOINT_EVERY, TOTAL_STEPS - 10,
                                                   CHECKPOINT_EVERY), 4, replace=False))
    for target in targets:
        args = resume_flags(output_root, run) if config.exists() else \
            run_flags(data_dir, output_root, run)
        process = subprocess.Popen([sys.executable, TRAIN_SCRIPT, *map(str, args)], cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 180
        while not (config.exists() if target is None
                   else latest_checkpoint_step(checkpoints) >= target):
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        process.kill()
        process.communicate(timeout=60)
        assert process.returncode in (-signal.SIGKILL, 0), process.returncode
    final = run_script(TRAIN_SCRIPT, *resume_flags(output_root, run), timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    results = json.loads((output_root / "logs" / run / "results.json").read_text())
    straight = json.loads((output_root / "logs" / uninterrupted_run / "results.json").read_text())
    assert results["steps"] == TOTAL_STEPS
    for key in ("target_accuracy", "source_accuracy", "domain_accuracy", "target_val_accuracy"):
        assert results[key] == straight[key], key
    killed_scalars = read_scalars(str(output_root / "logs" / run))
    straight_scalars = read_scalars(str(output_root / "logs" / uninterrupted_run))
    for writer, tags in straight_scalars.items():
        for tag, points in tags.items():
            steps = [step for step, _ in killed_scalars[writer][tag]]
            assert steps == [step for step, _ in points], f"{writer} {tag}: {steps}"
    log_lines = (output_root / "logs" / run / "log.txt").read_text().splitlines()
    straight_lines = (output_root / "logs" / uninterrupted_run / "log.txt").read_text().splitlines()
    assert [line.split(" |")[0] for line in log_lines] == \
        [line.split(" |")[0] for line in straight_lines]
    weights = h5_arrays(checkpoints / "final.weights.h5")
    for name, array in h5_arrays(output_root / "checkpoints" / uninterrupted_run /
                                 "final.weights.h5").items():
        np.testing.assert_allclose(weights[name], array, rtol=1e-6, atol=1e-7, err_msg=name)
