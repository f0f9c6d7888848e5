"""The target terms are left out of the compiled step while every weight is 0, bit for bit."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from config.config import DANNConfig
from tests.conftest import SMALL_VAL_SIZE
from utils.data import builtin_domains
from utils.summaries import read_scalars
from utils.training import schedules
from utils.training.objective import Objective
from utils.training.loop import Trainer

# Every target term of the recipes, starting part-way (p = 0.4 of 20 updates), the anchor
# stopping at 0.6, and the weight average that serves it as the teacher.
ALL_TERMS = dict(ema_decay=0.999, entropy_weight=1.0, entropy_start=0.4, diversity_weight=1.0,
                 pseudo_label_weight=1.0, pseudo_label_stop=0.6, vat_weight=0.5, vat_start=0.4,
                 vat_fraction=0.5)


def config(data_dir, **overrides):
    values = dict(epochs=2, steps_per_epoch=10, batch_size=8, eval_batch_size=16, run_name="idle",
                  data_dir=data_dir, log_every_steps=1, checkpoint_every_steps=10,
                  target_val_size=SMALL_VAL_SIZE, seed=5, **ALL_TERMS)
    values.update(overrides)
    return DANNConfig(**values)


@pytest.mark.parametrize("total, start", [(20, 0.4), (24000, 0.4), (7, 0.5), (1000, 0.0),
                                          (32001, 0.37)])
def test_first_active_step_is_the_first_step_whose_compiled_weight_is_not_zero(total, start):
    weight = schedules.RampedWeight(1.0, start, 10.0, total)
    first = weight.first_active_step()
    at = tf.function(lambda step: weight(step))
    assert float(at(tf.constant(first, tf.int64))) > 0.0
    if first > 0:
        assert float(at(tf.constant(first - 1, tf.int64))) == 0.0
    assert first == int(np.floor(start * total)) + 1


def test_idle_steps_is_the_earliest_start_of_the_terms(data_dir, tmp_path):
    trainer = Trainer(config(data_dir, vat_start=0.6), *builtin_domains(data_dir),
                      output_root=str(tmp_path))
    assert trainer.objective.idle_steps == 9  # the entropy term's weight is 0 up to step 8
    plain = Trainer(config(data_dir, run_name="plain", **{k: 0.0 for k in (
        "entropy_weight", "diversity_weight", "pseudo_label_weight", "vat_weight")}),
        *builtin_domains(data_dir), output_root=str(tmp_path))
    assert plain.objective.idle_steps == 0


def test_a_run_that_leaves_idle_terms_out_is_bit_identical_to_one_that_builds_them(
        data_dir, tmp_path, monkeypatch):
    def fit(folder):
        keras.utils.set_random_seed(5)  # as train_MNIST2MNIST_M.py seeds a run
        trainer = Trainer(config(data_dir), *builtin_domains(data_dir),
                          output_root=str(tmp_path / folder))
        trainer.fit(show_progress=False)
        return trainer

    skipping = fit("skipping")
    # Two traces: the idle one for updates 0-8 (one update a call, as log_every_steps is 1),
    # then the full one from update 9 on.
    assert skipping.objective.idle_steps == 9
    assert skipping.phases.steps["adaptation"].traces() == 2
    monkeypatch.setattr(Objective, "idle_steps", property(lambda self: 0))
    building = fit("building")
    assert building.phases.steps["adaptation"].traces() == 1
    for a, b in zip(skipping.dann.model.weights + skipping.eval_model.weights,
                    building.dann.model.weights + building.eval_model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    # The logged terms too: 0 over the idle updates, the same values after.
    logged = [read_scalars(run.dirs["logs"])["train"] for run in (skipping, building)]
    assert logged[0].keys() == logged[1].keys() and "loss/entropy" in logged[0]
    for tag in logged[0]:
        assert logged[0][tag] == logged[1][tag], tag
    assert logged[0]["loss/entropy"][0][1] == 0.0 and logged[0]["loss/entropy"][-1][1] > 0.0
