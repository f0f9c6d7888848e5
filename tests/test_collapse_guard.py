"""The collapse guard: a run whose label classifier died stops, says so, exits 4 (a run that
finished at chance was once reported as a result; utils/training/collapse_guard.py)."""
import json
import os
import subprocess

import numpy as np
import pytest

import train_MNIST2MNIST_M
from tests.conftest import SMALL_VAL_SIZE, assert_one_line_failure
from utils.training.collapse_guard import CollapseGuard
from utils.training.loop import Trainer


def kill_layer(layer):
    """Every unit of `layer` negative on every input: kernel 0, bias -1."""
    layer.kernel.assign(np.zeros(layer.kernel.shape, np.float32))
    layer.bias.assign(-np.ones(layer.bias.shape, np.float32))


@pytest.fixture(scope="module")
def dann_and_images(data_dir):
    from model import build_dann
    from utils.data import builtin_domains

    source, _ = builtin_domains(data_dir)
    return build_dann(input_norm="instance"), source.train[:64]


def test_guard_passes_a_live_network_and_names_each_dead_layer(dann_and_images):
    dann, images = dann_and_images
    guard = CollapseGuard(dann.feature_extractor, dann.label_classifier, images)
    assert [layer.name for layer in guard.layers] == ["conv1", "conv2", "fc1", "fc2"]
    assert guard.diagnosis() is None
    live = guard.live_units()
    assert live["fc2"][1] == 100 and live["conv1"][1] == 32 and all(n > 0 for n, _ in live.values())
    saved = [w.numpy() for w in dann.model.weights]
    try:
        kill_layer(dann.label_classifier.get_layer("fc2"))
        assert guard.diagnosis() == "fc2 has 0 of 100 units live on 64 probe training images"
        assert guard.live_units()["fc2"] == (0, 100)
        # A dead conv2 feeds fc1 zeros, and fc1's biases start at 0: dead as well.
        kill_layer(dann.feature_extractor.get_layer("conv2"))
        assert guard.diagnosis() == ("conv2 has 0 of 48 units live, fc1 has 0 of 100 units live, "
                                     "fc2 has 0 of 100 units live on 64 probe training images")
    finally:
        for weight, value in zip(dann.model.weights, saved):
            weight.assign(value)
    assert guard.diagnosis() is None


def test_guard_calls_an_output_that_ignores_the_image_collapsed(dann_and_images):
    dann, images = dann_and_images
    logits = dann.label_classifier.get_layer("class_logits")
    saved = logits.kernel.numpy()
    try:
        # All units live, but the last layer ignores them: the same logits for every image.
        logits.kernel.assign(np.zeros_like(saved))
        guard = CollapseGuard(dann.feature_extractor, dann.label_classifier, images)
        assert guard.diagnosis() == "its logits are the same for all 64 probe training images"
    finally:
        logits.kernel.assign(saved)


def test_guard_calls_a_learned_classifier_that_goes_one_class_collapsed(dann_and_images):
    """Units alive and logits that depend on the image, but every image in one class with a
    loss worse than guessing, after the classifier had learned: what `refined` without its
    KL term became (README)."""
    dann, images = dann_and_images
    logits = dann.label_classifier.get_layer("class_logits")
    saved = logits.bias.numpy()
    # Labels the untrained network gets all right: a classifier that has learned its probe.
    learned = np.argmax(dann.model.predict(images, verbose=0)[0], axis=1)
    guard = CollapseGuard(dann.feature_extractor, dann.label_classifier, images, learned)
    assert guard.diagnosis() is None and guard.best_accuracy == 1.0
    try:
        logits.bias.assign(np.where(np.arange(10) == 3, 50.0, 0.0).astype(np.float32))
        diagnosis = guard.diagnosis()
        assert diagnosis.startswith("it puts 100% of the 64 probe training images in class 3, "
                                    "with a cross-entropy of ")
        assert diagnosis.endswith("(above twice a uniform guess's ln 10 = 2.30), after it had "
                                  "classified 100% of them right")
        # Without labels the guard cannot tell a one-class prediction from a one-class probe.
        assert CollapseGuard(dann.feature_extractor, dann.label_classifier, images).diagnosis() is None
    finally:
        logits.bias.assign(saved)


def test_guard_does_not_call_a_classifier_that_has_not_learned_yet_collapsed(data_dir,
                                                                             dann_and_images):
    """A young run's classifier, one-class and over-confident before it ever learned: on a
    600-image pair that stopped runs at step 60 with exit 4. It is not a collapse."""
    from utils.data import builtin_domains

    dann, images = dann_and_images
    labels = builtin_domains(data_dir)[0].train_labels[:64]
    logits = dann.label_classifier.get_layer("class_logits")
    saved = logits.bias.numpy()
    guard = CollapseGuard(dann.feature_extractor, dann.label_classifier, images, labels)
    try:
        logits.bias.assign(np.where(np.arange(10) == 3, 50.0, 0.0).astype(np.float32))
        for _ in range(3):  # one check after another, never learned: never collapsed
            assert guard.diagnosis() is None
        assert guard.best_accuracy < CollapseGuard.learned_accuracy(10)
        # Nor is an output that ignores the image yet (a pretrained architecture from random
        # weights starts so): once learned, it would be.
        kernel = logits.kernel.numpy()
        logits.kernel.assign(np.zeros_like(kernel))
        assert guard.diagnosis() is None
        guard.best_accuracy = 1.0
        assert guard.diagnosis() == "its logits are the same for all 64 probe training images"
        logits.kernel.assign(kernel)
    finally:
        logits.bias.assign(saved)


@pytest.mark.slow  # 20-55 s: kept out of the default suite's 5 minutes
def test_collapsed_run_stops_with_one_line_exit_4_and_says_so_in_results(data_dir, tmp_path,
                                                                         capsys, monkeypatch):
    saved_checkpoints = []
    original_save = Trainer.save_checkpoint

    def save_and_kill_fc2_at_step_20(self):
        # The collapse seen on `improved`, seed 3, forced: fc2 of G_y dies between two
        # checkpoints.
        if self.step == 20:
            kill_layer(self.dann.label_classifier.get_layer("fc2"))
        path = original_save(self)
        saved_checkpoints.append(path)
        return path

    monkeypatch.setattr(Trainer, "save_checkpoint", save_and_kill_fc2_at_step_20)
    argv = ["--data-dir", data_dir, "--output-root", str(tmp_path), "--run-name", "collapses",
            "--epochs", "1", "--steps-per-epoch", "40", "--checkpoint-every-steps", "10",
            "--target-val-size", str(SMALL_VAL_SIZE), "--batch-size", "8",
            "--eval-batch-size", "16", "--on-collapse", "stop", "--no-progress"]
    with pytest.raises(SystemExit) as exit_info:
        train_MNIST2MNIST_M.main(argv)
    output = capsys.readouterr()
    completed = subprocess.CompletedProcess(argv, exit_info.value.code, output.out, output.err)
    assert completed.returncode == 4
    message = assert_one_line_failure(completed, "collapsed by step 20",
                                      "fc2 has 0 of 100 units live", "last good checkpoint: ")
    last_good = message.split("last good checkpoint: ")[1].split(". ")[0]
    assert last_good.endswith("ckpt-10") and saved_checkpoints == [last_good]
    checkpoints = tmp_path / "checkpoints" / "collapses"
    assert not (checkpoints / "final.weights.h5").exists()
    assert not any(name.startswith("ckpt-20") for name in os.listdir(checkpoints))
    results = json.loads((tmp_path / "logs" / "collapses" / "results.json").read_text())
    assert results["collapsed"] is True and results["collapsed_at"] == 20
    assert results["collapse"].startswith("fc2 has 0 of 100 units live")
    assert results["last_good_checkpoint"] == last_good and results["steps"] == 20

    # Resuming the collapsed run changes nothing and says why.
    train_MNIST2MNIST_M.main(["--run-name", "collapses", "--resume", "--output-root",
                              str(tmp_path), "--no-progress"])
    assert "collapsed at step 20; pass --on-collapse rollback" in capsys.readouterr().out
    # ... unless it is resumed with a rollback: back to ckpt-10, past the 10 batches since.
    monkeypatch.setattr(Trainer, "save_checkpoint", original_save)
    train_MNIST2MNIST_M.main(["--run-name", "collapses", "--resume", "--on-collapse", "rollback",
                              "--output-root", str(tmp_path), "--no-progress"])
    assert ("rollback 1 of at most 2: the run collapsed by step 20 (fc2 has 0 of 100 units live"
            in capsys.readouterr().out)
    results = json.loads((tmp_path / "logs" / "collapses" / "results.json").read_text())
    assert results["collapsed"] is False and results["steps"] == 40
    assert [(r["collapsed_at"], r["restored_step"], r["skipped_batches"])
            for r in results["rollbacks"]] == [(20, 10, 10)]
    saved = json.loads((tmp_path / "config" / "collapses" / "config.json").read_text())
    assert saved["on_collapse"] == "rollback"


def kill_fc2_when_saving_step_20(monkeypatch, times):
    """Makes fc2 die just before the checkpoint of step 20, the first `times` times it is written."""
    original_save, kills = Trainer.save_checkpoint, []

    def save(self):
        if self.step == 20 and len(kills) < times:
            kills.append(self.step)
            kill_layer(self.dann.label_classifier.get_layer("fc2"))
        return original_save(self)

    monkeypatch.setattr(Trainer, "save_checkpoint", save)
    return kills


def short_run_flags(data_dir, tmp_path, name):
    return ["--data-dir", data_dir, "--output-root", str(tmp_path), "--run-name", name,
            "--epochs", "1", "--steps-per-epoch", "40", "--checkpoint-every-steps", "10",
            "--target-val-size", str(SMALL_VAL_SIZE), "--batch-size", "8",
            "--eval-batch-size", "16", "--no-progress"]


@pytest.mark.slow  # 20-55 s: kept out of the default suite's 5 minutes
def test_rollback_restores_the_last_good_checkpoint_and_skips_the_batches_since(
        data_dir, tmp_path, capsys, monkeypatch):
    import tensorflow as tf

    from utils.summaries import read_scalars

    kills = kill_fc2_when_saving_step_20(monkeypatch, times=1)
    train_MNIST2MNIST_M.main(short_run_flags(data_dir, tmp_path, "rolls_back"))  # the default
    out = capsys.readouterr().out
    assert kills == [20]
    assert ("rollback 1 of at most 2: the label classifier collapsed by step 20 (fc2 has 0 of 100 "
            "units live on ") in out
    assert "restored " in out and "continuing from step 10, skipping the 10 batches" in out
    logs = tmp_path / "logs" / "rolls_back"
    results = json.loads((logs / "results.json").read_text())
    assert results["collapsed"] is False and results["steps"] == 40
    [entry] = results["rollbacks"]
    assert entry["collapsed_at"] == 20 and entry["restored_step"] == 10
    assert entry["skipped_batches"] == 10 and entry["restored"].endswith("ckpt-10")
    assert entry["collapse"].startswith("fc2 has 0 of 100 units live")
    assert (tmp_path / "checkpoints" / "rolls_back" / "final.weights.h5").exists()
    # The steps trained before the rollback were forgotten, as a resume forgets them:
    # every validation point once in log.txt and in TensorBoard.
    lines = [line for line in (logs / "log.txt").read_text().splitlines() if line.startswith("step")]
    steps = [int(line.split()[1].split("/")[0]) for line in lines]
    assert steps == sorted(set(steps)) and steps[-1] == 40
    points = [step for step, _ in read_scalars(str(logs))["validation"]["acc/label_acc"]]
    assert points == sorted(set(points)) and points[-1] == 40
    # The checkpoint carries the rollback, so a resumed run skips the same batches.
    reader = tf.train.load_checkpoint(str(tmp_path / "checkpoints" / "rolls_back" / "ckpt-40"))
    assert reader.get_tensor("rollbacks/data_offset/.ATTRIBUTES/VARIABLE_VALUE") == 10
    assert reader.get_tensor("rollbacks/count/.ATTRIBUTES/VARIABLE_VALUE") == 1


@pytest.mark.slow  # 10-20 s: kept out of the default suite for its 5-minute budget
def test_rollbacks_are_bounded_then_the_run_stops_as_collapsed(data_dir, tmp_path, capsys,
                                                               monkeypatch):
    kill_fc2_when_saving_step_20(monkeypatch, times=99)
    with pytest.raises(SystemExit) as exit_info:
        train_MNIST2MNIST_M.main(short_run_flags(data_dir, tmp_path, "keeps_collapsing")
                                 + ["--max-rollbacks", "1"])
    output = capsys.readouterr()
    completed = subprocess.CompletedProcess([], exit_info.value.code, output.out, output.err)
    assert completed.returncode == 4
    assert_one_line_failure(completed, "collapsed by step 20", "not rolled back: the run already "
                            "rolled back 1 times (--max-rollbacks)")
    results = json.loads((tmp_path / "logs" / "keeps_collapsing" / "results.json").read_text())
    assert results["collapsed"] is True and len(results["rollbacks"]) == 1


@pytest.mark.slow
def test_a_collapse_at_a_validation_point_rolls_back_before_any_validator_keeps_it(
        data_dir, tmp_path, capsys, monkeypatch):
    original_validate, kills = Trainer.validate, []

    def validate(self, writers, whole):
        # fc2 dies just before the validation of step 14, between checkpoints 10 and 20.
        if self.step == 14 and not kills:
            kills.append(self.step)
            kill_layer(self.dann.label_classifier.get_layer("fc2"))
        return original_validate(self, writers, whole)

    monkeypatch.setattr(Trainer, "validate", validate)
    train_MNIST2MNIST_M.main(short_run_flags(data_dir, tmp_path, "validation_collapse"))
    results = json.loads((tmp_path / "logs" / "validation_collapse" / "results.json").read_text())
    assert [entry["collapsed_at"] for entry in results["rollbacks"]] == [14]
    record = json.loads((tmp_path / "logs" / "validation_collapse" / "validators.json").read_text())
    # No validator scored the dead model: SND would have kept it as its best.
    assert all(point["step"] != 14 or point["scores"]["im"] > 0 for point in record["points"])
    from model import build_dann
    from utils.training.collapse_guard import CollapseGuard

    dann = build_dann(input_norm="instance")
    dann.model.load_weights(tmp_path / "checkpoints" / "validation_collapse" / "best-snd.weights.h5")
    probe = builtin_probe(data_dir)
    assert CollapseGuard(dann.feature_extractor, dann.label_classifier, probe).diagnosis() is None


def builtin_probe(data_dir):
    from utils.data import builtin_domains

    return builtin_domains(data_dir)[0].train[:64]


def test_rollback_record_is_what_a_resume_from_any_checkpoint_restores(tmp_path):
    from utils.training.collapse_guard import Collapsed, Rollbacks

    rollbacks = Rollbacks(2, str(tmp_path))
    rollbacks.record(Collapsed(35, "fc2 died", "ckpt-30"), 30)   # offset 5
    rollbacks.record(Collapsed(38, "fc2 died", "ckpt-30"), 30)   # offset 5 + 8
    assert [int(rollbacks.count.numpy()), int(rollbacks.data_offset.numpy())] == [2, 13]
    # ckpt-30 itself predates both rollbacks (count 0 inside it): the record restores them.
    rollbacks.count.assign(0), rollbacks.data_offset.assign(0)
    rollbacks.sync(30)
    assert [int(rollbacks.count.numpy()), int(rollbacks.data_offset.numpy())] == [2, 13]
    # An older checkpoint undoes both, and the record forgets them.
    rollbacks.sync(20)
    assert [int(rollbacks.count.numpy()), int(rollbacks.data_offset.numpy())] == [0, 0]
    assert rollbacks.records() == [] and json.loads((tmp_path / "rollbacks.json").read_text()) == []
    assert Rollbacks(0, str(tmp_path)).refusal(Collapsed(5, "x", "ckpt-1")) == "--max-rollbacks is 0"


def test_healthy_run_results_say_not_collapsed(smoke_runs):
    for run in ("dann", "source_only"):
        results = json.loads(open(os.path.join(smoke_runs, "logs", run, "results.json")).read())
        assert results["collapsed"] is False and "collapsed_at" not in results
        assert results["rollbacks"] == []


@pytest.mark.slow
def test_diagnose_replays_the_runs_own_updates_and_changes_nothing(data_dir, tmp_path, capsys):
    import csv

    from tests.test_stop_and_resume import h5_arrays
    from utils import diagnose

    # A run with every target term on, so that each term's gradient is recorded.
    train_MNIST2MNIST_M.main(["--data-dir", data_dir, "--output-root", str(tmp_path),
                              "--run-name", "replayed", "--epochs", "2", "--steps-per-epoch", "4",
                              "--batch-size", "8", "--eval-batch-size", "16",
                              "--target-val-size", str(SMALL_VAL_SIZE), "--entropy-weight", "0.5",
                              "--entropy-start", "0", "--vat-weight", "0.5", "--vat-start", "0",
                              "--keep-checkpoints-at-end", "3", "--deterministic", "--no-progress"])
    checkpoints = tmp_path / "checkpoints" / "replayed"
    before = {name: os.path.getmtime(checkpoints / name) for name in os.listdir(checkpoints)}
    final = h5_arrays(checkpoints / "final.weights.h5")
    capsys.readouterr()
    diagnose.main(["--run", "replayed", "--from-checkpoint", "ckpt-4", "--steps", "4",
                   "--output-root", str(tmp_path)])
    assert "replayed steps 4-7 of run replayed; no collapse" in capsys.readouterr().out
    rows = list(csv.DictReader(open(tmp_path / "logs" / "replayed" / "diagnostics" /
                                    "replay-4.csv")))
    assert [int(row["step"]) for row in rows] == [4, 5, 6, 7]
    for term in ("label", "domain", "entropy", "vat"):
        assert all(float(row[f"{term}/grad_norm"]) > 0 for row in rows), term
    # L_d reaches G_f and G_d, never G_y; the target terms never reach G_d.
    assert all(float(row["domain/grad_norm/G_y/fc2"]) == 0 for row in rows)
    assert all(float(row["vat/grad_norm/G_d/fc1"]) == 0 for row in rows)
    assert all(float(row["live_units/fc2"]) > 0 for row in rows)
    assert all(float(row["update_norm/G_y/fc2"]) > 0 for row in rows)
    # Nothing of the run changed.
    assert {name: os.path.getmtime(checkpoints / name) for name in os.listdir(checkpoints)} == before
    for name, array in h5_arrays(checkpoints / "final.weights.h5").items():
        np.testing.assert_array_equal(array, final[name])
