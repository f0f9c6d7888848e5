"""Recipe components (input standardisation, held-out split, target entropy, weight
average), the named recipes, and the TensorBoard cadence."""
import argparse
import math

import numpy as np
import pytest
import tensorflow as tf

from config.cli import add_config_arguments, config_from_args
from config.config import DANNConfig
from config.recipes import RECIPES
from model.dann import InstanceStandardisation
from tests.conftest import SMALL_VAL_SIZE
from utils.data import builtin_domains, hold_out_target_validation
from utils.io import UserError
from utils.summaries import read_scalars
from utils.training.target_entropy import TargetEntropy, conditional_entropy
from utils.training.loop import Trainer
from utils.training.virtual_adversarial import TargetVAT, kl_from_logits, virtual_adversarial_perturbation
from utils.training.weight_average import WeightAverage


def parse(argv):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return config_from_args(parser.parse_args(argv))


def test_validation_split_is_disjoint_from_the_pool_and_the_test_set(data_dir):
    _, target = builtin_domains(data_dir)
    pool, val = hold_out_target_validation(target, SMALL_VAL_SIZE, seed=0)
    num_train = len(target.train)
    assert len(val["labels"]) == SMALL_VAL_SIZE and len(pool["images"]) == num_train - SMALL_VAL_SIZE
    # Every training image lands on exactly one side; the split is seeded.
    rows = {image.tobytes() for image in target.train}
    pool_rows = [image.tobytes() for image in pool["images"]]
    val_rows = [image.tobytes() for image in val["images"]]
    assert set(pool_rows).isdisjoint(val_rows) and set(pool_rows) | set(val_rows) == rows
    np.testing.assert_array_equal(val["images"], target.train[val["indices"]])
    assert not {image.tobytes() for image in target.test} & set(val_rows)
    again = hold_out_target_validation(target, SMALL_VAL_SIZE, seed=0)[1]["indices"]
    np.testing.assert_array_equal(again, val["indices"])
    with pytest.raises(UserError, match="target_val_size must be between 0 and half"):
        hold_out_target_validation(target, num_train, seed=0)


def test_trainer_never_trains_on_the_validation_split(data_dir, tmp_path):
    for mode in ("dann", "target_only"):
        config = DANNConfig(mode=mode, target_val_size=SMALL_VAL_SIZE, batch_size=8,
                            run_name=mode, data_dir=data_dir)
        trainer = Trainer(config, *builtin_domains(data_dir), output_root=str(tmp_path))
        mnist_m_images = trainer.train_images[0 if mode == "target_only" else 2]
        trained_on = {image.tobytes() for image in mnist_m_images}
        assert len(trained_on) and not trained_on & {image.tobytes()
                                                     for image in trainer.target_val["images"]}


def test_instance_standardisation_removes_each_images_channel_offset_and_scale():
    rng = np.random.default_rng(0)
    images = rng.integers(20, 120, size=(4, 28, 28, 3)).astype(np.float32)
    out = InstanceStandardisation()(images).numpy()
    np.testing.assert_allclose(out.mean(axis=(1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=(1, 2)), 1.0, atol=1e-3)
    # A per-image, per-channel contrast and brightness change leaves the output unchanged
    # (up to the epsilon added to the variance).
    shifted = images * np.array([2.0, 0.5, 1.0]) + np.array([10.0, 30.0, 0.0])
    np.testing.assert_allclose(InstanceStandardisation()(shifted).numpy(), out, atol=5e-3)


def test_conditional_entropy_known_values():
    logits = tf.constant([[0.0] * 10, [100.0] + [0.0] * 9, [math.log(3.0), 0.0] + [-1e9] * 8])
    # Uniform: ln 10; one-hot: 0; p = (3/4, 1/4): -(3/4 ln 3/4 + 1/4 ln 1/4).
    expected = [math.log(10.0), 0.0, -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))]
    np.testing.assert_allclose(conditional_entropy(logits).numpy(), expected, atol=1e-5)


def test_target_entropy_weight_waits_for_its_start_then_ramps():
    loss = TargetEntropy(weight=0.5, start=0.5, gamma=10.0, total_steps=100, global_target_batch=2)
    assert float(loss.weight_at(0)) == 0.0 and float(loss.weight_at(50)) == 0.0
    q = (75 / 100 - 0.5) / 0.5
    assert float(loss.weight_at(75)) == pytest.approx(0.5 * (2 / (1 + math.exp(-10 * q)) - 1), rel=1e-5)
    uniform = tf.zeros([2, 10])
    assert float(loss(None, uniform, 75)) == pytest.approx(float(loss.weight_at(75)) * math.log(10), rel=1e-5)


def test_kl_from_logits_known_values():
    reference = tf.constant([[math.log(3.0), 0.0], [0.0, 0.0]])
    logits = tf.constant([[0.0, 0.0], [0.0, 0.0]])
    # KL((3/4, 1/4) || (1/2, 1/2)) = 3/4 ln(3/2) + 1/4 ln(1/2); identical distributions: 0.
    expected = [0.75 * math.log(1.5) + 0.25 * math.log(0.5), 0.0]
    np.testing.assert_allclose(kl_from_logits(reference, logits).numpy(), expected, atol=1e-6)


def test_virtual_adversarial_perturbation_finds_the_direction_that_changes_the_prediction():
    # A linear two-class classifier changes its output only along w, so one power
    # iteration from any random start must return +-w, scaled to the radius.
    rng = np.random.default_rng(0)
    w = tf.constant(rng.normal(size=(4, 4, 3)).astype(np.float32))

    def classify(images):
        score = tf.reduce_sum((images - 128.0) / 255.0 * w, axis=[1, 2, 3])
        return tf.stack([score, tf.zeros_like(score)], axis=1)

    # Near-undecided images, so that float32 resolves the change of the prediction.
    images = tf.constant(rng.integers(120, 137, size=(5, 4, 4, 3)).astype(np.float32))
    perturbation = virtual_adversarial_perturbation(classify, images, classify(images),
                                                    radius=1.5, seed=(1, 0)).numpy()
    flat = perturbation.reshape(5, -1) / 255.0
    np.testing.assert_allclose(np.linalg.norm(flat, axis=1), 1.5, rtol=1e-4)
    cosine = np.abs(flat @ w.numpy().ravel()) / (1.5 * np.linalg.norm(w.numpy()))
    np.testing.assert_allclose(cosine, 1.0, atol=1e-3)


def steep_classifier(calls):
    """(classify, images, logits): a classifier undecided (score 0) at the two images and
    steep around them, which appends to `calls` each time it runs (after these logits)."""

    def classify(images):
        calls.append(1)
        score = tf.reduce_sum(images - 100.0, axis=[1, 2, 3]) / 255.0
        return tf.stack([score, -score], axis=1)

    images = tf.constant(np.full((2, 4, 4, 3), 100, np.uint8))
    logits = classify(tf.cast(images, tf.float32))
    calls.clear()
    return classify, images, logits


def test_target_vat_waits_for_its_start_and_then_penalises_a_sensitive_classifier():
    calls = []
    classify, images, logits = steep_classifier(calls)
    vat = TargetVAT(weight=0.5, radius=1.5, start=0.5, gamma=10.0, total_steps=100,
                    global_target_batch=2, classify=classify)
    assert float(vat(images, logits, 40)) == 0.0 and not calls
    loss = float(vat(images, logits, 75))
    assert loss > 0 and len(calls) == 2
    # The same classifier flattened to a constant is not sensitive at all: no loss.
    flat = TargetVAT(0.5, 1.5, 0.5, 10.0, 100, 2, lambda x: tf.zeros([tf.shape(x)[0], 2]))
    assert float(flat(images, tf.zeros([2, 2]), 75)) == 0.0


def test_sparse_vat_pays_on_every_kth_update_only_with_k_times_the_weight():
    calls = []
    classify, images, logits = steep_classifier(calls)
    every_update = TargetVAT(0.5, 1.5, 0.5, 10.0, 100, 2, classify)
    every_third = TargetVAT(0.5, 1.5, 0.5, 10.0, 100, 2, classify, every=3)
    assert float(every_third(images, logits, 76)) == 0.0 and not calls
    # Step 75 is a multiple of 3: the same random start, three times the weighted loss.
    np.testing.assert_allclose(float(every_third(images, logits, 75)),
                               3 * float(every_update(images, logits, 75)), rtol=1e-5)


def test_weight_average_follows_the_ema_rule():
    import keras

    def model():
        inputs = keras.Input((2,))
        return keras.Model(inputs, keras.layers.Dense(1)(inputs))

    raw, averaged = model(), model()
    average = WeightAverage(raw, averaged, decay=0.9)
    expected = [w.numpy() for w in raw.weights]
    for step in range(3):
        for w in raw.weights:
            w.assign(w + 1.0)
        average.update(step)
        decay = min(0.9, (1 + step) / (10 + step))
        expected = [decay * e + (1 - decay) * w.numpy() for e, w in zip(expected, raw.weights)]
    for got, want in zip(averaged.weights, expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)


def test_a_run_without_flags_gets_the_default_recipe_which_is_the_field_defaults():
    # Each default is stated once, in DANNConfig: the default recipe adds nothing to it.
    assert RECIPES["default"] == {}
    assert parse([]) == parse(["--recipe", "default"]) == DANNConfig()
    # The other recipes state only how they differ from those defaults.
    defaults = DANNConfig()
    for recipe, fields in RECIPES.items():
        for name, value in fields.items():
            assert getattr(defaults, name) != value, f"{recipe}: {name}={value!r} is the default"


def test_recipes_set_their_fields_and_flags_override_them():
    paper = parse(["--recipe", "paper"])
    assert paper.recipe == "paper" and paper.batch_size == 128 and paper.input_norm == "mean"
    assert paper.ema_decay == 0 and paper.entropy_weight == 0
    overridden = parse(["--recipe", "paper", "--batch-size", "32"])
    assert overridden.batch_size == 32 and overridden.input_norm == "mean"
    improved = parse(["--recipe", "improved"])
    assert improved.ema_decay > 0 and improved.entropy_weight > 0 and improved.vat_weight > 0
    assert parse(["--recipe", "improved", "--vat-weight", "0"]).vat_weight == 0
    with pytest.raises(UserError, match="unknown recipe 'best'"):
        parse(["--recipe", "best"])


def test_improved_is_24000_updates_on_mnist_and_keeps_1500_on_a_small_own_pair():
    improved = DANNConfig(**RECIPES["improved"])
    assert improved.total_steps == 24000 and improved.steps_per_epoch == 4000
    # The terms start, and the pseudo-labels stop, at the same steps as in 3 epochs of 8,000.
    assert (improved.entropy_start * 24000, improved.pseudo_label_stop * 24000) == (9600, 14400)
    small = DANNConfig(**RECIPES["improved"], source="folder/shapes")
    small.fill_schedule(source_pool_size=240)
    assert small.steps_per_epoch == 250 and small.total_steps == 1500
    old = DANNConfig(**RECIPES["improved_48k"], source="folder/shapes")
    old.fill_schedule(source_pool_size=240)
    assert old.total_steps == 1500 and DANNConfig(**RECIPES["improved_48k"]).total_steps == 48000


@pytest.mark.slow  # 10-20 s: kept out of the default suite for its 5-minute budget
def test_scalars_are_written_at_the_training_and_validation_cadence(data_dir, tmp_path):
    config = DANNConfig(epochs=2, steps_per_epoch=20, batch_size=8, eval_batch_size=16,
                        log_every_steps=4, eval_every_steps=10, checkpoint_every_steps=1000,
                        target_val_size=SMALL_VAL_SIZE, ema_decay=0.9, entropy_weight=0.1,
                        vat_weight=0.1, vat_start=0.25, run_name="cadence", data_dir=data_dir)
    trainer = Trainer(config, *builtin_domains(data_dir), output_root=str(tmp_path))
    results = trainer.fit(show_progress=False)
    scalars = read_scalars(trainer.dirs["logs"])
    train_steps = [step for step, _ in scalars["train"]["acc/label_acc"]]
    assert train_steps == list(range(4, 41, 4))
    for tag in ("acc/label_acc", "acc/domain_acc", "acc/target_val_acc", "loss/label_loss"):
        assert [step for step, _ in scalars["validation"][tag]] == [10, 20, 30, 40]
    assert results["target_val_accuracy"] == pytest.approx(
        scalars["validation"]["acc/target_val_acc"][-1][1], abs=1e-6)
    # Two traces, and no more while the schedules move: one for the updates before VAT's
    # weight leaves 0 at step 11 (the terms left out, Objective.idle_steps), one after.
    assert trainer.objective.idle_steps == 11
    assert trainer.phases.steps["adaptation"].loop.experimental_get_tracing_count() == 2
    # The synthetic test sets are smaller than eval_subset, so every point used them whole.
    lines = open(f"{trainer.dirs['logs']}/log.txt").read().splitlines()
    assert len(lines) == 4 and all("(whole test sets)" in line for line in lines)
    # The weight average, not the raw weights, is what was evaluated and saved.
    assert any(not np.array_equal(a.numpy(), b.numpy())
               for a, b in zip(trainer.eval_model.weights, trainer.dann.model.weights))


def test_target_entropy_enters_the_gradient_with_its_scheduled_weight(data_dir, tmp_path):
    config = DANNConfig(epochs=1, steps_per_epoch=100, batch_size=8, run_name="entropy",
                        data_dir=data_dir, target_val_size=SMALL_VAL_SIZE, entropy_weight=0.5,
                        entropy_start=0.5)
    trainer = Trainer(config, *builtin_domains(data_dir), output_root=str(tmp_path))
    labelled, labels, unlabelled = (tf.constant(a[:4]) for a in trainer.train_images)
    labels = tf.cast(labels, tf.int32)
    dann = trainer.dann
    gradients, _ = trainer.strategy.run(trainer.phases.steps["adaptation"].replica_gradients,
                                        args=((labelled, labels, unlabelled),
                                              tf.constant(80, tf.int64)))
    weight = 0.5 * (2 / (1 + math.exp(-10 * (0.8 - 0.5) / 0.5)) - 1)
    with tf.GradientTape() as tape:
        features = dann.feature_extractor(tf.concat([labelled, unlabelled], 0), training=True)
        logits = dann.label_classifier(features, training=True)
        label_loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits[:4]))
        domain_loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
            tf.constant([0.0] * 4 + [1.0] * 4), dann.domain_classifier(features, training=True)[:, 0]))
        probabilities = tf.nn.softmax(logits[4:])
        entropy = -tf.reduce_mean(tf.reduce_sum(probabilities * tf.math.log(probabilities), axis=1))
        total_loss = label_loss + domain_loss + weight * entropy
    expected = tape.gradient(total_loss, dann.model.trainable_variables)
    for variable, got, want in zip(dann.model.trainable_variables, gradients, expected):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-6,
                                   err_msg=variable.path)


def test_target_vat_enters_the_gradient_with_its_scheduled_weight(data_dir, tmp_path):
    config = DANNConfig(epochs=1, steps_per_epoch=100, batch_size=8, run_name="vat",
                        data_dir=data_dir, target_val_size=SMALL_VAL_SIZE, vat_weight=0.5,
                        vat_start=0.5, seed=3)
    trainer = Trainer(config, *builtin_domains(data_dir), output_root=str(tmp_path))
    (vat,) = trainer.objective.target_terms.values()
    labelled, labels, unlabelled = (tf.constant(a[:4]) for a in trainer.train_images)
    labels = tf.cast(labels, tf.int32)
    dann = trainer.dann

    def expected_gradients(step, weight):
        with tf.GradientTape() as tape:
            features = dann.feature_extractor(tf.concat([labelled, unlabelled], 0), training=True)
            logits = dann.label_classifier(features, training=True)
            label_loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits[:4]))
            domain_loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
                tf.constant([0.0] * 4 + [1.0] * 4),
                dann.domain_classifier(features, training=True)[:, 0]))
            total_loss = label_loss + domain_loss
            if weight:
                # The same random start as the train step: seeded by (run seed, step).
                total_loss += weight * vat.loss(unlabelled, logits[4:], tf.constant([3 * 1024, step],
                                                                                    tf.int64))
        return tape.gradient(total_loss, dann.model.trainable_variables)

    def relative_error(got, want):
        return float(np.linalg.norm(got.numpy() - want.numpy()) / np.linalg.norm(want.numpy()))

    # VAT's direction comes from a finite-difference gradient (utils/training/virtual_adversarial.py,
    # XI), so float32 rounding that differs between the two computations (G_y on the target
    # half alone or on the whole batch) moves it slightly; measured: up to 3e-5 absolute on
    # weights whose gradients reach 0.3, depending on the initialisation. The wiring is
    # checked per layer to 1e-3 of the gradient's norm; the term itself moves it by far more.
    for step, weight in ((40, 0.0), (80, 0.5 * (2 / (1 + math.exp(-10 * 0.6)) - 1))):
        gradients, _ = trainer.strategy.run(trainer.phases.steps["adaptation"].replica_gradients,
                                            args=((labelled, labels, unlabelled),
                                                  tf.constant(step, tf.int64)))
        for variable, got, want in zip(dann.model.trainable_variables, gradients,
                                       expected_gradients(step, weight)):
            assert relative_error(got, want) < 1e-3, f"{variable.path} at step {step}"
    # The term is not zero once on: without it the gradients differ by much more than that.
    assert max(relative_error(a, b) for a, b in zip(gradients, expected_gradients(80, 0.0))) > 1e-2
