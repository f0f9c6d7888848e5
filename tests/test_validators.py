"""Label-free validators (utils/validators.py), their logging during training, utils.select,
and the honesty of the selection path: it never reads MNIST-M test labels, which unsupervised
adaptation does not have."""
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, SMALL_VAL_SIZE, assert_one_line_failure
from utils import select as select_module
from utils import validators
from utils.data import builtin_domains, hold_out_source_validation

K = 10


def one_hot_logits(classes, scale=100.0):
    logits = np.zeros((len(classes), K))
    logits[np.arange(len(classes)), classes] = scale
    return logits


def test_entropy_of_one_hot_is_zero_and_of_uniform_is_minus_ln_k():
    assert validators.target_entropy(one_hot_logits(np.arange(20) % K)) == pytest.approx(0, abs=1e-9)
    assert validators.target_entropy(np.zeros((5, K))) == pytest.approx(-math.log(K))


def test_information_maximization_known_values():
    # Uniform predictions: H(mean) = mean H = ln K, so IM = 0.
    assert validators.information_maximization(np.zeros((7, K))) == pytest.approx(0, abs=1e-9)
    # Confident and balanced over the K classes: H(mean) = ln K, mean H = 0.
    assert validators.information_maximization(one_hot_logits(np.arange(30) % K)) == \
        pytest.approx(math.log(K), abs=1e-6)
    # Confident but all one class: no information, IM = 0.
    assert validators.information_maximization(one_hot_logits(np.zeros(9, int))) == \
        pytest.approx(0, abs=1e-6)


def test_source_accuracy():
    assert validators.source_accuracy(one_hot_logits([0, 1, 2, 3]), [0, 1, 2, 0]) == 0.75


def test_snd_of_one_cluster_is_ln_n_minus_1_and_clusters_beat_scattered_predictions():
    # All predictions identical: every other sample is an equally close neighbour.
    n = 12
    assert validators.soft_neighborhood_density(one_hot_logits(np.full(n, 3))) == \
        pytest.approx(math.log(n - 1), abs=1e-6)
    rng = np.random.default_rng(0)
    clustered = one_hot_logits(np.arange(200) % K) + rng.normal(0, 0.1, (200, K))
    scattered = rng.normal(0, 3.0, (200, K))
    assert validators.soft_neighborhood_density(clustered) > \
        validators.soft_neighborhood_density(scattered)


def test_dev_is_the_mean_loss_when_weights_are_one_and_follows_the_control_variate():
    losses = np.array([0.1, 0.5, 2.0, 0.3])
    assert validators.deep_embedded_validation(losses, np.ones(4)) == pytest.approx(losses.mean())
    weights = np.array([0.5, 1.5, 2.0, 0.0])
    weighted = weights * losses
    eta = -np.cov(weighted, weights)[0, 1] / np.var(weights, ddof=1)
    assert validators.deep_embedded_validation(losses, weights) == pytest.approx(
        weighted.mean() + eta * weights.mean() - eta)


def test_dev_density_ratio_is_near_one_when_the_domains_cannot_be_told_apart():
    rng = np.random.default_rng(0)
    source, target, val = (rng.normal(size=(2000, 8)) for _ in range(3))
    weights = validators.density_ratio(source, target, val)
    # Only sampling noise separates them: weights scatter tightly around 1.
    assert abs(weights.mean() - 1) < 0.03 and np.abs(weights - 1).max() < 0.3
    logits = rng.normal(size=(2000, K))
    labels = rng.integers(K, size=2000)
    losses = -np.log(validators.softmax(logits)[np.arange(2000), labels])
    assert -validators.dev_score(source, target, val, logits, labels) == pytest.approx(
        losses.mean(), rel=0.02)
    # Separable domains: source validation images that look like the target weigh more.
    shifted = rng.normal(size=(2000, 8)) + 2.0
    weights = validators.density_ratio(source, shifted, np.array([[-2.0] * 8, [2.0] * 8]))
    assert weights[1] > 10 * weights[0]


def test_spearman_matches_known_rankings():
    assert select_module.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1)
    assert select_module.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1)
    np.testing.assert_allclose(select_module.rank([3, 1, 3, 2]), [3.5, 1, 3.5, 2])
    assert math.isnan(select_module.spearman([1, 1, 1], [1, 2, 3]))


def test_source_validation_split_is_held_out_of_mnist_train(data_dir):
    source, _ = builtin_domains(data_dir)
    pool, val = hold_out_source_validation(source, SMALL_VAL_SIZE, seed=0)
    assert len(val["labels"]) == SMALL_VAL_SIZE
    assert len(pool["images"]) + SMALL_VAL_SIZE == len(source.train)
    assert not set(map(bytes, pool["images"])) & set(map(bytes, val["images"]))
    # Capped at an eighth of a (small) training set rather than refused.
    assert len(hold_out_source_validation(source, 1000, seed=0)[1]["labels"]) == len(source.train) // 8


def small_config(data_dir, name, **overrides):
    from config.config import DANNConfig

    values = dict(epochs=1, steps_per_epoch=20, batch_size=8, eval_batch_size=16,
                  log_every_steps=10, eval_every_steps=10, checkpoint_every_steps=1000,
                  target_val_size=SMALL_VAL_SIZE, source_val_size=SMALL_VAL_SIZE,
                  run_name=name, data_dir=data_dir)
    values.update(overrides)
    return DANNConfig(**values)


def test_trainer_says_when_the_source_split_is_capped(data_dir, tmp_path, capsys):
    from utils.training.loop import Trainer

    source, target = builtin_domains(data_dir)
    Trainer(small_config(data_dir, "capped", source_val_size=1000), source, target,
            output_root=str(tmp_path))
    assert (f"source validation split: {len(source.train) // 8} MNIST images, not 1000"
            in capsys.readouterr().out)


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """A finished 20-step DANN run with a validation point every 10 steps."""
    from utils.training.loop import Trainer

    root = str(tmp_path_factory.mktemp("validator_runs"))
    trainer = Trainer(small_config(data_dir, "dann"), *builtin_domains(data_dir),
                      output_root=root)
    trainer.fit(show_progress=False)
    return root, trainer


def test_training_logs_every_validator_and_keeps_one_checkpoint_each(trained):
    from utils.summaries import read_scalars

    root, trainer = trained
    scalars = read_scalars(trainer.dirs["logs"])["validation"]
    for name in validators.NAMES:
        assert [step for step, _ in scalars[f"validator/{name}"]] == [10, 20], name
    with open(os.path.join(trainer.dirs["logs"], "validators.json")) as handle:
        record = json.load(handle)
    assert [p["step"] for p in record["points"]] == [10, 20]
    for point in record["points"]:
        assert set(point["scores"]) == set(validators.NAMES)
        assert set(point["report_only"]) == {"target_test_accuracy", "whole_test_set"}
    best_files = sorted(f for f in os.listdir(trainer.dirs["checkpoints"]) if f.startswith("best-"))
    assert best_files == sorted(f"best-{name}.weights.h5" for name in validators.NAMES)
    for name, best in record["best"].items():
        scores = [p["scores"][name] for p in record["points"]]
        assert best["score"] == max(scores)
        assert best["step"] == record["points"][scores.index(max(scores))]["step"]
    # A pick of the last step is the final weights' own file on disk; another step's is not.
    final = os.path.join(trainer.dirs["checkpoints"], "final.weights.h5")
    for name, best in record["best"].items():
        path = os.path.join(trainer.dirs["checkpoints"], best["checkpoint"])
        assert os.path.samefile(path, final) == (best["step"] == 20), name
    # The source validation split never enters training.
    trained_on = {bytes(image) for image in trainer.train_images[0]}
    assert not trained_on & {bytes(image) for image in trainer.source_val["images"]}


def test_select_reports_picks_and_writes_selection_json(trained, capsys):
    root, trainer = trained
    select_module.main(["--run", "dann", "--output-root", root])
    out = capsys.readouterr().out
    with open(os.path.join(root, "logs", "dann", "selection.json")) as handle:
        selection = json.load(handle)
    with open(os.path.join(root, "logs", "dann", "results.json")) as handle:
        results = json.load(handle)
    assert set(selection["picks"]) == set(validators.NAMES)
    assert selection["final_target_test_accuracy"] == results["target_accuracy"]
    for name, pick in selection["picks"].items():
        assert pick["step"] in (10, 20) and 0 <= pick["target_test_accuracy"] <= 1
        assert f"best-{name}.weights.h5" in out
    # A pick at the final step is the final weights: the same test accuracy.
    for pick in selection["picks"].values():
        if pick["step"] == 20:
            assert pick["target_test_accuracy"] == pytest.approx(results["target_accuracy"])
    select_module.main(["--study", "--runs", "dann", "dann", "--output-root", root])
    table = open(os.path.join(root, "logs", "select_study.md")).read()
    assert "| validator |" in table and all(f"| {name} |" in table for name in validators.NAMES)


def run_select(*args):
    return subprocess.run([sys.executable, "-m", "utils.select", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_select_bad_inputs_fail_in_one_line(trained, tmp_path):
    root, _ = trained
    assert_one_line_failure(run_select("--run", "nope", "--output-root", root), "no config")
    assert_one_line_failure(run_select("--run", "dann", "--validator", "oracle",
                                       "--output-root", root), "no validator 'oracle'")
    # A run from before validators existed: config, weights and results, no validators.json.
    legacy = str(tmp_path / "legacy")
    for kind in ("config", "logs", "checkpoints"):
        shutil.copytree(os.path.join(root, kind, "dann"), os.path.join(legacy, kind, "old"))
    os.remove(os.path.join(legacy, "logs", "old", "validators.json"))
    assert_one_line_failure(run_select("--run", "old", "--output-root", legacy),
                            "trained before validators were logged")


class Forbidden:
    """Stands in for the MNIST-M test arrays: any read but len() raises."""

    def __init__(self, length):
        self.length = length

    def __len__(self):
        return self.length

    def _refuse(self, *args, **kwargs):
        raise AssertionError("the MNIST-M test set was read")

    __getitem__ = __iter__ = __array__ = __getattr__ = _refuse


def test_validators_and_selection_never_read_the_mnist_m_test_set(data_dir, tmp_path, monkeypatch):
    """Honesty: training with validators and picking checkpoints run with the MNIST-M test
    images and labels replaced by objects that raise on any read. Only the trainer's
    report-only test evaluation (stubbed here) reads them; select's picks load no data."""
    from utils.training.loop import Trainer

    import dataclasses

    source, target = builtin_domains(data_dir)
    target = dataclasses.replace(target, test=Forbidden(len(target.test)),
                                 test_labels=Forbidden(len(target.test_labels)))
    # The end-of-run TensorBoard extras (utils/tensorboard_extras.py) read the target test set
    # for reporting only, like the stubbed evaluation: they are off here.
    trainer = Trainer(small_config(data_dir, "honest", tensorboard_extras=False), source, target,
                      output_root=str(tmp_path))
    monkeypatch.setattr(trainer.evaluator, "evaluate", lambda whole=True: {
        "acc/label_acc": float("nan"), "acc/source_label_acc": 0.0, "acc/domain_acc": 0.0})
    trainer.fit(show_progress=False)

    import utils.data
    import utils.runs

    def no_data(*args, **kwargs):
        raise AssertionError("selection loaded a dataset")

    monkeypatch.setattr(utils.data, "load_run_domains", no_data)
    monkeypatch.setattr(utils.data, "load_mnist_and_mnistm", no_data)
    monkeypatch.setattr(utils.runs, "load_test_sets", no_data)
    chosen = select_module.picks("honest", list(validators.NAMES), str(tmp_path))
    assert set(chosen) == set(validators.NAMES)
    assert all(os.path.isfile(pick["checkpoint"]) for pick in chosen.values())


def test_which_validators_a_collapsed_model_can_fool():
    """README, "Collapsed runs": a dead G_y outputs one constant for every image (the
    collapsed `improved` run's was near-uniform, its label loss ln 10). IM and entropy score that at their worst;
    SND scores it at its best (every sample's neighbours are all equally close), so SND
    alone would keep a collapsed checkpoint as its pick."""
    from utils.validators import (information_maximization, soft_neighborhood_density,
                                  target_entropy)

    rng = np.random.default_rng(0)
    n, k = 200, 10
    healthy = 8.0 * np.eye(k)[rng.integers(k, size=n)] + rng.normal(0, 0.5, (n, k))
    dead = np.tile(rng.normal(0, 0.01, k), (n, 1))  # the class biases, the same for all images
    assert information_maximization(dead) == pytest.approx(0.0, abs=1e-9)
    assert information_maximization(healthy) > 1.5
    assert target_entropy(dead) == pytest.approx(-np.log(k), abs=1e-3)
    assert target_entropy(healthy) > target_entropy(dead) + 1.0
    assert soft_neighborhood_density(dead) == pytest.approx(np.log(n - 1), abs=1e-6)
    assert soft_neighborhood_density(dead) > soft_neighborhood_density(healthy) + 1.0
