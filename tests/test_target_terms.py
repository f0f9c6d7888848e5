"""The prediction-diversity term (utils/training/prediction_diversity.py) and VAT on a fraction
of the target images (utils/training/virtual_adversarial.py)."""
import math

import numpy as np
import pytest
import tensorflow as tf

from tests.test_recipes import steep_classifier
from tests.test_training import tiny_config
from utils.data import builtin_domains
from utils.io import UserError
from utils.training.loop import Trainer
from utils.training.prediction_diversity import TargetDiversity, divergence_from_uniform
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
