"""The refinement phase (DIRT-T, utils/training/refinement.py) and `--init-from`."""
import json
import os

import signal

import numpy as np
import pytest
import tensorflow as tf

import train_MNIST2MNIST_M
from config.config import DANNConfig
from config.recipes import RECIPES
from tests.conftest import SMALL_VAL_SIZE, run_script
from tests.test_stop_and_resume import TRAIN_SCRIPT, h5_arrays, resume_flags, stop_after_checkpoint
from tests.test_training import tiny_config
from utils.data import builtin_domains
from utils.io import UserError
from utils.summaries import read_scalars
from utils.training.loop import Trainer

ADAPTATION, REFINE, INTERVAL = 6, 4, 3
REFINE_TAGS = {"loss/refine_kl", "loss/refine_entropy", "loss/refine_vat", "acc/teacher_agreement"}


def refined_config(data_dir, **overrides):
    values = dict(refine_steps=REFINE, refine_interval=INTERVAL, ema_decay=0.9,
                  eval_every_steps=3, tensorboard_extras=False, max_to_keep=10,
                  keep_checkpoints_at_end=10)
    values.update(overrides)
    return tiny_config(data_dir, **values)


@pytest.fixture(scope="module")
def refined(data_dir, tmp_path_factory):
    """A tiny run: 6 adaptation updates, then 4 refinement updates; (trainer, results, logs)."""
    root = tmp_path_factory.mktemp("refined")
    trainer = Trainer(refined_config(data_dir), *builtin_domains(data_dir), output_root=str(root))
    results = trainer.fit(show_progress=False)
    return trainer, results, root / "logs" / "tiny"


def test_refined_recipe_is_improved_48k_then_refinement():
    refined = {name: value for name, value in RECIPES["refined"].items()
               if not name.startswith("refine_")}
    assert refined == RECIPES["improved_48k"]
    config = DANNConfig(**RECIPES["refined"])
    assert config.adaptation_steps == 48000 and config.total_steps == 58000
    # The adaptation phase's validation points are improved_48k's.
    assert config.eval_every_steps == DANNConfig(**RECIPES["improved_48k"]).eval_every_steps


def test_refinement_phase_trains_the_target_terms_after_the_adaptation_phase(refined):
    trainer, results, logs = refined
    assert results["steps"] == trainer.step == ADAPTATION + REFINE
    assert int(trainer.refinement.optimizer.iterations.numpy()) == REFINE
    train = read_scalars(str(logs))["train"]
    # The adaptation phase logs its losses, the refinement phase the terms of Eq. 14.
    assert [step for step, _ in train["loss/label_loss"]] == list(range(1, ADAPTATION + 1))
    for tag in REFINE_TAGS:
        assert [step for step, _ in train[tag]] == list(range(ADAPTATION + 1, ADAPTATION + REFINE + 1))
        assert all(np.isfinite(value) for _, value in train[tag])
    assert all(0.0 <= value <= 1.0 for _, value in train["acc/teacher_agreement"])
    # The end of the adaptation phase is a whole-set validation point of its own.
    lines = (logs / "log.txt").read_text().splitlines()
    assert any(line.startswith(f"step {ADAPTATION}/{ADAPTATION + REFINE} (whole test sets)")
               for line in lines)
    learning_rates = dict(read_scalars(str(logs))["hyperparameter"]["hyperparameter/learning_rate"])
    assert learning_rates[ADAPTATION] == pytest.approx(1e-3)
    assert learning_rates[ADAPTATION - 1] != pytest.approx(1e-3)


def test_plot_curves_draws_the_refinement_terms(refined, tmp_path):
    from tests.conftest import png_size
    from utils import plot_curves

    trainer, _, logs = refined
    plot_curves.main(["--run", "tiny", "--logs-root", str(logs.parent), "--out", str(tmp_path)])
    assert sorted(os.listdir(tmp_path)) == ["acc.png", "hyperparameter.png", "loss.png",
                                            "refinement.png"]
    # Four panels of 5 x 4 inches at 100 dpi.
    assert png_size(tmp_path / "refinement.png") == (2000, 400)


def test_refinement_leaves_the_domain_head_alone(refined):
    trainer, _, _ = refined
    head = trainer.dann.domain_classifier.trainable_variables
    features = trainer.dann.feature_extractor.trainable_variables
    head_after, features_after = ([v.numpy() for v in head], [v.numpy() for v in features])
    # Back to the model as it was at the end of the adaptation phase.
    tf.train.Checkpoint(model=trainer.dann.model).restore(
        os.path.join(trainer.dirs["checkpoints"], f"ckpt-{ADAPTATION}")).expect_partial()
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(head_after, head))
    assert not all(np.array_equal(a, v.numpy()) for a, v in zip(features_after, features))


def test_teacher_is_refreshed_at_the_start_and_every_interval(refined):
    trainer, _, _ = refined
    refinement = trainer.refinement
    for variable in refinement.teacher.trainable_variables:
        variable.assign(tf.zeros_like(variable))

    def teacher_is_copy():
        return all(np.array_equal(t.numpy(), e.numpy()) for t, e in
                   zip(refinement.teacher.weights, refinement.evaluated.weights))

    refinement.prepare(tf.constant(ADAPTATION + 1, tf.int64))
    assert not teacher_is_copy()
    refinement.prepare(tf.constant(ADAPTATION + INTERVAL, tf.int64))
    assert teacher_is_copy()


def test_kl_to_the_teacher_is_zero_for_the_teacher_itself(refined):
    trainer, _, _ = refined
    refinement = trainer.refinement
    # With the student's own weights as teacher, and dropout-free networks, KL = 0
    # and every class agrees; entropy and VAT are what is left.
    for target, source in zip(refinement.teacher.weights, trainer.dann.model.weights):
        target.assign(source)
    images = trainer.train_images[2][:8]
    terms, window = refinement.forward((images, None, images), tf.constant(ADAPTATION, tf.int64))
    assert float(window["kl"]) == pytest.approx(0.0, abs=1e-5)
    assert float(window["agree"]) == float(window["count"]) == 8
    assert float(terms["refine_entropy"]) > 0 and float(terms["refine_vat"]) >= 0


def test_config_refuses_refinement_outside_dann_mode():
    with pytest.raises(UserError, match="refine_steps refines .* mode is 'source_only'"):
        DANNConfig(mode="source_only", refine_steps=10)


def script_flags(data_dir, root, name, refine_steps, *extra):
    return ["--epochs", 2, "--steps-per-epoch", 3, "--batch-size", 8, "--eval-batch-size", 16,
            "--target-val-size", SMALL_VAL_SIZE, "--log-every-steps", 1,
            "--checkpoint-every-steps", 2, "--data-dir", data_dir, "--output-root", root,
            "--run-name", name, "--ema-decay", 0.9, "--refine-steps", refine_steps,
            "--refine-interval", INTERVAL, "--tensorboard-extras", "false", "--no-progress", *extra]


@pytest.fixture(scope="module")
def adapted(data_dir, tmp_path_factory):
    """An output root holding one finished adaptation run, `adapt`."""
    root = tmp_path_factory.mktemp("adapted")
    train_MNIST2MNIST_M.main([str(f) for f in script_flags(data_dir, str(root), "adapt", 0)])
    return root


def test_init_from_continues_a_finished_adaptation_run_into_refinement(data_dir, adapted, capsys):
    root, tmp_path = str(adapted), adapted
    adapt_logs = tmp_path / "logs" / "adapt"
    before = {path: path.read_bytes() for path in adapt_logs.rglob("*") if path.is_file()}
    train_MNIST2MNIST_M.main([str(f) for f in script_flags(data_dir, root, "refine", REFINE,
                                                           "--init-from", "adapt")])
    output = capsys.readouterr().out
    assert f"starting from run adapt's step {ADAPTATION}" in output
    assert f"resuming from {tmp_path / 'checkpoints' / 'refine' / f'ckpt-{ADAPTATION}'}" in output
    # The other run is untouched.
    assert before == {path: path.read_bytes() for path in adapt_logs.rglob("*") if path.is_file()}
    logs = tmp_path / "logs" / "refine"
    results = json.loads((logs / "results.json").read_text())
    assert results["steps"] == ADAPTATION + REFINE and not results["collapsed"]
    assert json.loads((logs / "init_from.json").read_text()) == {"init_from": "adapt",
                                                                  "step": ADAPTATION}
    # Its curves and log hold the adaptation phase (copied) and the refinement, each step once.
    train = read_scalars(str(logs))["train"]
    assert [step for step, _ in train["loss/label_loss"]] == list(range(1, ADAPTATION + 1))
    assert [step for step, _ in train["loss/refine_kl"]] == list(
        range(ADAPTATION + 1, ADAPTATION + REFINE + 1))
    steps = [int(line.split()[1].split("/")[0]) for line in
             (logs / "log.txt").read_text().splitlines() if line.startswith("step ")]
    assert steps == sorted(set(steps)) and steps[0] == 1 and steps[-1] == ADAPTATION + REFINE


@pytest.mark.parametrize("init_from, extra, error", [
    ("adapt", ["--learning-rate", "0.02"], "run 'adapt' was trained with other settings "
     r"\(learning_rate 0.01 -> 0.02\); only the refinement's may differ"),
    ("adapt", ["--refine-steps", "0"], "--refine-steps is 0"),
    ("adapt", ["--resume"], "--init-from starts a new run, and --resume continues one"),
    ("unfinished", [], "run 'unfinished' has not finished; finish it first"),
    ("missing", [], "there is no run 'missing'"),
])
def test_init_from_refuses_what_it_cannot_continue(data_dir, adapted, init_from, extra, error):
    # A run with a config but no results, as one stopped half-way leaves it.
    unfinished = adapted / "config" / "unfinished"
    if not unfinished.exists():
        unfinished.mkdir(parents=True)
        (unfinished / "config.json").write_bytes(
            (adapted / "config" / "adapt" / "config.json").read_bytes())
    with pytest.raises(UserError, match=error):
        train_MNIST2MNIST_M.main([str(f) for f in script_flags(
            data_dir, str(adapted), "refused", REFINE, "--init-from", init_from, *extra)])
    assert not (adapted / "logs" / "refused").exists()
    assert not (adapted / "config" / "refused").exists()


@pytest.mark.slow  # four training processes, about a minute
def test_refinement_resumes_exactly_across_and_inside_the_phase(data_dir, tmp_path):
    """Deterministic runs: one straight through both phases; one trained to the end of
    adaptation alone, then refined with --init-from; one stopped by SIGINT inside the
    refinement (between two teacher refreshes) and resumed. All end with the same weights."""
    root = str(tmp_path)

    def flags(name, refine_steps, *extra):
        # No collapse guard: 40 refinement updates on the tiny synthetic target may put it in
        # one class (the guard rightly calls that a collapse); this test is about exactness.
        return script_flags(data_dir, root, name, refine_steps, "--deterministic",
                            "--eval-every-steps", 2, "--collapse-probe-size", 0, *extra)

    # Long enough (a validation every other step) for the signal to land inside the refinement.
    refine = 40
    straight = run_script(TRAIN_SCRIPT, *flags("straight", refine), timeout=300)
    assert straight.returncode == 0, straight.stderr[-3000:]
    adapted = run_script(TRAIN_SCRIPT, *flags("adapt", 0), timeout=300)
    assert adapted.returncode == 0, adapted.stderr[-3000:]
    initialised = run_script(TRAIN_SCRIPT, *flags("init", refine, "--init-from", "adapt"),
                             timeout=300)
    assert initialised.returncode == 0, initialised.stderr[-3000:]
    stopped = stop_after_checkpoint(flags("stopped", refine), tmp_path / "checkpoints" / "stopped",
                                    ADAPTATION + 2, signal.SIGINT)
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    resumed = run_script(TRAIN_SCRIPT, *resume_flags(root, "stopped"), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = {name: h5_arrays(tmp_path / "checkpoints" / name / "final.weights.h5")
             for name in ("straight", "init", "stopped")}
    for name in ("init", "stopped"):
        assert final[name].keys() == final["straight"].keys()
        for key, array in final["straight"].items():
            np.testing.assert_array_equal(final[name][key], array, err_msg=f"{name}: {key}")


def test_init_from_compares_settings_but_not_fields_an_older_config_lacks(tmp_path):
    """A run saved before class_names existed has None there: it came from the same data."""
    from config.config import FROM_DATA
    from utils.training.init_from import init_problem

    filled = dict(input_shape=(28, 28, 3), num_classes=10, network="mnist",
                  class_names=tuple(str(k) for k in range(10)), steps_per_epoch=8000)
    older = DANNConfig(**{**RECIPES["improved_48k"], **filled, "class_names": None,
                          "run_name": "older"})
    older.save(tmp_path / "config" / "older")
    assert set(filled) == set(FROM_DATA)
    config = DANNConfig(**{**RECIPES["refined"], **filled, "run_name": "new"})
    assert "has not finished" in init_problem(config, "older", str(tmp_path))
    config.learning_rate = 0.02
    problem = init_problem(config, "older", str(tmp_path))
    assert "(learning_rate 0.01 -> 0.02)" in problem and "class_names" not in problem
