"""The prediction-diversity term (utils/training/prediction_diversity.py), VAT on a fraction
of the target images (utils/training/virtual_adversarial.py) and pseudo-labels from the
weight average (utils/training/pseudo_labels.py)."""
import math

import numpy as np
import pytest
import tensorflow as tf

from tests.test_recipes import steep_classifier
from tests.test_training import tiny_config
from utils.data import builtin_domains
from utils.io import UserError
from utils.training import schedules
from utils.training.loop import Trainer
from utils.training.prediction_diversity import TargetDiversity, divergence_from_uniform
from utils.training.pseudo_labels import TargetPseudoLabels, confident_pseudo_labels
from utils.training.virtual_adversarial import TargetVAT


def test_diversity_is_zero_for_a_balanced_batch_and_log_k_when_one_class_takes_all():
    balanced = tf.constant(np.eye(4, dtype=np.float32) * 20.0)
    collapsed = tf.constant(np.tile([[20.0, 0.0, 0.0, 0.0]], (4, 1)).astype(np.float32))
    assert float(divergence_from_uniform(balanced)) == pytest.approx(0.0, abs=1e-5)
    assert float(divergence_from_uniform(collapsed)) == pytest.approx(math.log(4), abs=1e-5)
    # Confident or not, a batch whose mean prediction is uniform costs nothing.
    assert float(divergence_from_uniform(tf.zeros([3, 4]))) == pytest.approx(0.0, abs=1e-6)


def test_diversity_follows_the_entropy_schedule_and_pushes_a_collapsed_batch_apart():
    term = TargetDiversity(weight=0.5, start=0.5, gamma=10.0, total_steps=100)
    logits = tf.Variable(np.tile([[3.0, 0.0, 0.0]], (6, 1)).astype(np.float32))
    assert float(term(None, logits, 40)) == 0.0
    with tf.GradientTape() as tape:
        loss = term(None, logits, 80)
    assert float(loss) > 0
    # Descending the term lowers the logit of the class that took the whole batch.
    assert np.all(tape.gradient(loss, logits).numpy()[:, 0] > 0)


def test_vat_on_a_fraction_is_the_term_of_the_first_images_alone():
    calls = []
    classify, images, logits = steep_classifier(calls)
    images = tf.concat([images, images + 3], axis=0)
    logits = classify(tf.cast(images, tf.float32))
    half = TargetVAT(0.5, 1.5, 0.5, 10.0, 100, 4, classify, fraction=0.5)
    first_two = TargetVAT(0.5, 1.5, 0.5, 10.0, 100, 2, classify)
    np.testing.assert_allclose(float(half(images, logits, 75)),
                               float(first_two(images[:2], logits[:2], 75)), rtol=1e-6)
    assert float(TargetVAT(0.5, 1.5, 0.5, 10.0, 100, 4, classify)(images, logits, 75)) != \
        pytest.approx(float(half(images, logits, 75)), rel=1e-3)


def test_a_trainer_with_all_three_terms_sums_them_and_bad_values_name_the_flag(data_dir, tmp_path):
    config = tiny_config(data_dir, entropy_weight=0.5, entropy_start=0.0, diversity_weight=0.5,
                         vat_weight=0.5, vat_start=0.0, vat_fraction=0.5, run_name="terms")
    trainer = Trainer(config, *builtin_domains(data_dir), output_root=str(tmp_path))
    assert list(trainer.objective.target_terms) == ["entropy", "diversity", "vat"]
    batch = tuple(tf.constant(a[:4]) for a in trainer.train_images)
    batch = (batch[0], tf.cast(batch[1], tf.int32), batch[2])
    terms = trainer.objective.loss_terms(batch, tf.constant(3, tf.int64))
    assert all(np.isfinite(float(value)) for value in terms.values())
    for field, value, flag in (("vat_fraction", 0.0, "--vat-fraction"),
                               ("vat_fraction", 1.5, "--vat-fraction"),
                               ("diversity_weight", -1.0, "--diversity-weight")):
        with pytest.raises(UserError, match=flag):
            tiny_config(data_dir, **{field: value}).validate()


def test_pseudo_labels_keep_only_the_teachers_confident_classes():
    teacher_logits = tf.constant([[4.0, 0.0, 0.0], [0.0, 0.3, 0.0], [0.0, 0.0, 9.0]])
    labels, mask = confident_pseudo_labels(teacher_logits, 0.9)
    assert labels.numpy().tolist() == [0, 1, 2]
    assert mask.numpy().tolist() == [1.0, 0.0, 1.0]


def test_the_pseudo_label_term_waits_for_its_start_and_pulls_towards_the_teachers_class():
    calls = []

    def teacher(images):
        calls.append(1)
        return tf.constant([[0.0, 9.0, 0.0], [0.0, 0.0, 0.1]])

    term = TargetPseudoLabels(weight=1.0, threshold=0.9, start=0.5, gamma=10.0, total_steps=100,
                              global_target_batch=2, teacher=teacher)
    logits = tf.Variable([[2.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    # Before its start the teacher is not even asked: those updates cost nothing extra.
    assert float(term(None, logits, 40)) == 0.0 and not calls
    with tf.GradientTape() as tape:
        loss = term(None, logits, 80)
    assert calls and float(loss) > 0
    gradient = tape.gradient(loss, logits).numpy()
    # Descending it raises the teacher's class on the confident image...
    assert gradient[0, 1] < 0 and gradient[0, 0] > 0
    # ...and leaves the image the teacher is unsure of alone.
    np.testing.assert_array_equal(gradient[1], 0.0)
    # Masked images count as 0 in a mean over the whole target half.
    expected = float(tf.nn.sparse_softmax_cross_entropy_with_logits([1], logits[:1])[0]) / 2
    assert float(term.loss(logits, teacher(None))) == pytest.approx(expected, rel=1e-6)


def test_a_stopped_pseudo_label_term_is_off_and_asks_no_teacher_from_its_stop_on(data_dir):
    calls = []

    def teacher(images):
        calls.append(1)
        return tf.constant([[0.0, 9.0, 0.0]])

    term = TargetPseudoLabels(weight=1.0, threshold=0.9, start=0.2, gamma=10.0, total_steps=100,
                              global_target_batch=1, teacher=teacher, stop=0.6)
    logits = tf.constant([[2.0, 0.0, 0.0]])
    assert float(term(None, logits, 59)) > 0 and len(calls) == 1
    # From p = stop on the term is 0 and the teacher's forward pass is skipped.
    assert float(term(None, logits, 60)) == 0.0 and float(term(None, logits, 100)) == 0.0
    assert len(calls) == 1
    # Without a stop the weight is the ramp's to the very last step, as before the field.
    kept = schedules.RampedWeight(1.0, 0.2, 10.0, 100)
    assert float(kept(100)) == pytest.approx(float(schedules.delayed_ramp(100, 100, 0.2, 10.0)))
    for stop in (0.2, 1.5):
        with pytest.raises(UserError, match="--pseudo-label-stop"):
            tiny_config(data_dir, entropy_start=0.2, pseudo_label_stop=stop).validate()


def test_a_trainer_takes_pseudo_labels_from_its_weight_average(data_dir, tmp_path):
    config = tiny_config(data_dir, ema_decay=0.99, entropy_start=0.0, pseudo_label_weight=1.0,
                         pseudo_label_threshold=0.05, run_name="pseudo")
    trainer = Trainer(config, *builtin_domains(data_dir), output_root=str(tmp_path))
    assert list(trainer.objective.target_terms) == ["pseudo_label"]
    batch = tuple(tf.constant(a[:4]) for a in trainer.train_images)
    batch = (batch[0], tf.cast(batch[1], tf.int32), batch[2])
    step = tf.constant(3, tf.int64)
    term = trainer.objective.target_terms["pseudo_label"]
    averaged = trainer.phases.weight_average.averaged
    target_logits = trainer.objective.classify(tf.cast(batch[2], tf.float32))
    # The labels are the average's: give it another class and the term follows.
    before, _ = confident_pseudo_labels(term.teacher(batch[2]), 0.05)
    other = (int(before[0]) + 1) % config.num_classes
    for weight in averaged.trainable_weights:
        weight.assign(tf.zeros_like(weight))
    class_bias = [w for w in averaged.trainable_weights if w.shape == (config.num_classes,)][-1]
    class_bias.assign(tf.one_hot(other, config.num_classes) * 10.0)
    after, _ = confident_pseudo_labels(term.teacher(batch[2]), 0.05)
    assert after.numpy().tolist() == [other] * 4
    expected = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(after, target_logits))
    assert float(term.loss(target_logits, term.teacher(batch[2]))) == pytest.approx(
        float(expected), rel=1e-5)
    assert np.isfinite(float(trainer.objective.loss_terms(batch, step)["pseudo_label"]))
    for fields, flag in (({"pseudo_label_weight": 1.0}, "--ema-decay"),
                         ({"pseudo_label_threshold": 1.0}, "--pseudo-label-threshold"),
                         ({"pseudo_label_weight": -1.0}, "--pseudo-label-weight")):
        with pytest.raises(UserError, match=flag):
            tiny_config(data_dir, **fields).validate()


def test_label_head_scope_keeps_every_target_term_from_the_feature_extractor(data_dir, tmp_path):
    """Under `--target-terms-scope label_head` the terms' gradients reach G_y and not G_f,
    VAT's perturbation still being found through the whole network."""
    config = tiny_config(data_dir, entropy_weight=0.5, entropy_start=0.0, vat_weight=0.5,
                         vat_start=0.0, run_name="scope")
    trainer = Trainer(config, *builtin_domains(data_dir), output_root=str(tmp_path))
    dann, objective = trainer.dann, trainer.objective
    batch = tuple(tf.constant(a[:4]) for a in trainer.train_images)
    batch = (batch[0], tf.cast(batch[1], tf.int32), batch[2])
    found = {}
    for scope in ("network", "label_head"):
        # The objective reads the field at each call: same weights, same batch, same VAT seed.
        objective.config.target_terms_scope = scope
        with tf.GradientTape(persistent=True) as tape:
            terms = objective.loss_terms(batch, tf.constant(5, tf.int64))
        found[scope] = {name: (float(terms[name]),
                               tape.gradient(terms[name], dann.feature_extractor.trainable_variables),
                               tape.gradient(terms[name], dann.label_classifier.trainable_variables))
                        for name in ("entropy", "vat")}

    def norm(grads):
        return sum(float(tf.reduce_sum(g ** 2)) for g in grads if g is not None)

    for name in ("entropy", "vat"):
        value, network_f, network_y = found["network"][name]
        head_value, head_f, head_y = found["label_head"][name]
        # The scope changes where the gradients go, not the loss.
        assert head_value == pytest.approx(value, rel=1e-5)
        assert norm(network_f) > 0 and norm(head_f) == 0
        np.testing.assert_allclose(norm(head_y), norm(network_y), rtol=1e-4)
    with pytest.raises(UserError, match="target_terms_scope"):
        tiny_config(data_dir, target_terms_scope="features").validate()
