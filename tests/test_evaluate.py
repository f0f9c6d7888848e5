"""utils.evaluate: test accuracies, domain accuracy and proxy A-distance of a run."""
import json
import os

import numpy as np
import pytest

from tests.conftest import assert_one_line_failure, png_size, run_script
from utils import evaluate
from utils.io import UserError
from utils.runs import find_run, load_test_sets, run_config

KEYS = {"run", "mode", "weights", "source", "target", "source_accuracy", "target_accuracy",
        "target_per_class_accuracy", "target_confusion_matrix", "domain_classifier_accuracy",
        "num_source_test", "num_target_test", "seed", "proxy_a_distance", "domain_probe_error",
        "domain_probe_train_size", "domain_probe_test_size"}


def read_evaluation(root, run):
    with open(os.path.join(root, "logs", run, "evaluation.json")) as handle:
        return json.load(handle)


def test_compare_run_writes_both_evaluations(smoke_runs, capsys):
    evaluate.main(["--run", "dann", "--compare-run", "source_only", "--output-root", smoke_runs])
    printed = capsys.readouterr().out
    for run in ("dann", "source_only"):
        evaluation = read_evaluation(smoke_runs, run)
        assert set(evaluation) == KEYS and evaluation["mode"] == run
        for key in ("source_accuracy", "target_accuracy", "domain_probe_error"):
            assert 0.0 <= evaluation[key] <= 1.0
        domain_accuracy = evaluation["domain_classifier_accuracy"]
        assert set(domain_accuracy) == {"source_test", "target_test", "both"}
        assert all(0.0 <= value <= 1.0 for value in domain_accuracy.values())
        per_class = evaluation["target_per_class_accuracy"]
        assert sorted(per_class, key=int) == [str(digit) for digit in range(10)]
        assert all(value is None or 0.0 <= value <= 1.0 for value in per_class.values())
        confusion = np.array(evaluation["target_confusion_matrix"])
        assert confusion.shape == (10, 10) and confusion.sum() == evaluation["num_target_test"]
        assert np.trace(confusion) / confusion.sum() == pytest.approx(evaluation["target_accuracy"])
        assert evaluation["proxy_a_distance"] == pytest.approx(
            2 * (1 - 2 * evaluation["domain_probe_error"]))
        assert evaluation["domain_probe_train_size"] + evaluation["domain_probe_test_size"] == (
            evaluation["num_source_test"] + evaluation["num_target_test"])
        width, height = png_size(os.path.join(smoke_runs, "logs", run, "confusion_matrix.png"))
        assert width > 400 and height > 400
    side_by_side = next(line for line in printed.splitlines()
                        if line.startswith("proxy A-distance"))
    assert side_by_side.split()[2:] == [f"{read_evaluation(smoke_runs, run)['proxy_a_distance']:.4f}"
                                        for run in ("dann", "source_only")]


def test_training_checkpoint_matches_final_weights(smoke_runs):
    # The 2-step run's last checkpoint and its final weights hold the same model.
    test_sets = load_test_sets(run_config("dann", smoke_runs))
    final = evaluate.evaluate_run(find_run("dann", smoke_runs), test_sets)
    checkpoint = os.path.join(smoke_runs, "checkpoints", "dann", "ckpt-2")
    restored = evaluate.evaluate_run(find_run("dann", smoke_runs, checkpoint), test_sets)
    assert restored["weights"] == checkpoint
    for key in ("source_accuracy", "target_accuracy", "domain_classifier_accuracy",
                "proxy_a_distance"):
        assert restored[key] == final[key]


def test_target_labels_only_change_the_reported_accuracies(smoke_runs):
    (source, (target_images, target_labels)) = load_test_sets(run_config("dann", smoke_runs))
    run = find_run("dann", smoke_runs)
    honest = evaluate.evaluate_run(run, (source, (target_images, target_labels)))
    shuffled = evaluate.evaluate_run(
        run, (source, (target_images, np.random.default_rng(0).permutation(target_labels))))
    for key in ("source_accuracy", "domain_classifier_accuracy", "proxy_a_distance"):
        assert shuffled[key] == honest[key]


def test_proxy_a_distance_of_separable_and_identical_domains():
    rng = np.random.default_rng(0)
    source = rng.normal(size=(400, 20))
    separable = evaluate.proxy_a_distance(source, source + 5.0, seed=0)
    assert separable["domain_probe_error"] == 0.0 and separable["proxy_a_distance"] == 2.0
    same = evaluate.proxy_a_distance(source, rng.normal(size=(400, 20)), seed=0)
    assert abs(same["proxy_a_distance"]) < 0.4
    assert same["domain_probe_train_size"] == same["domain_probe_test_size"] == 400


def test_unloadable_checkpoint_is_a_user_error(smoke_runs, tmp_path):
    bogus = tmp_path / "bogus.weights.h5"
    bogus.write_bytes(b"not hdf5")
    with pytest.raises(UserError, match="cannot load"):
        evaluate.main(["--run", "dann", "--checkpoint", str(bogus), "--output-root", smoke_runs])


@pytest.mark.parametrize("extra, fragment", [
    ([], "no config at"),
    (["--checkpoint", "nowhere/ckpt-7"], "no weights at nowhere/ckpt-7"),
])
def test_missing_run_or_weights_exit_with_one_line(smoke_runs, extra, fragment):
    run = "dann" if extra else "missing"
    completed = run_script("-m", "utils.evaluate", "--run", run, "--output-root", smoke_runs,
                           *extra)
    assert completed.returncode == 2
    assert_one_line_failure(completed, fragment)
