import json
import math
import os

import numpy as np
import pytest

import train_MNIST2MNIST_M
from tests.conftest import SMALL_VAL_SIZE
from config.config import DANNConfig
from utils.data import builtin_domains
from utils.summaries import read_scalars
from utils.training.loop import Trainer

EPOCH_TAGS = {"loss/label_loss", "loss/domain_loss", "loss/total_loss", "acc/label_acc",
              "acc/domain_acc", "acc/source_label_acc"}


def tiny_config(data_dir, **overrides):
    values = dict(epochs=2, steps_per_epoch=3, batch_size=8, eval_batch_size=16, run_name="tiny",
                  data_dir=data_dir, log_every_steps=1, checkpoint_every_steps=2,
                  target_val_size=SMALL_VAL_SIZE)
    values.update(overrides)
    return DANNConfig(**values)


def test_two_step_run_writes_every_output(data_dir, tmp_path):
    train_MNIST2MNIST_M.main(["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "8",
                              "--target-val-size", str(SMALL_VAL_SIZE), "--eval-subset", "16",
                              "--data-dir", data_dir, "--output-root", str(tmp_path),
                              "--run-name", "smoke", "--no-progress"])
    logs = tmp_path / "logs" / "smoke"
    results = json.loads((logs / "results.json").read_text())
    assert set(results) == {"mode", "seed", "epochs", "steps", "target_accuracy",
                            "target_val_accuracy", "source_accuracy", "domain_accuracy",
                            "wall_seconds", "ms_per_step", "timed_steps", "rollbacks", "collapsed",
                            "tensorboard_extras_seconds", "device"}
    assert results["steps"] == 2 and results["mode"] == "dann"
    assert all(math.isfinite(v) for v in results.values() if isinstance(v, float))
    scalars = read_scalars(str(logs))
    assert set(scalars["hyperparameter"]) == {"hyperparameter/learning_rate",
                                              "hyperparameter/grl_lambda"}
    assert EPOCH_TAGS <= set(scalars["train"])
    assert EPOCH_TAGS | {"acc/target_label_acc", "acc/target_val_acc"} <= set(scalars["validation"])
    assert all(math.isfinite(value) for tags in scalars.values() for points in tags.values()
               for _, value in points)
    # 2 steps: 20 validation points are asked for, so one per step; the last on the whole sets.
    lines = (logs / "log.txt").read_text().splitlines()
    assert len(lines) == 2 and "whole test sets" in lines[-1] and "test subsets" in lines[0]
    assert (tmp_path / "config" / "smoke" / "config.json").exists()
    assert (tmp_path / "config" / "smoke" / "config.txt").exists()
    checkpoints = os.listdir(tmp_path / "checkpoints" / "smoke")
    assert "final.weights.h5" in checkpoints and any(n.startswith("ckpt-2") for n in checkpoints)


def test_train_step_traces_once_while_schedules_move(data_dir, tmp_path):
    config = tiny_config(data_dir)
    trainer = Trainer(config, *builtin_domains(data_dir), output_root=str(tmp_path))
    trainer.fit(show_progress=False)
    assert trainer.step == config.total_steps == 6
    assert trainer.phases.steps["adaptation"].loop.experimental_get_tracing_count() == 1
    hyper = read_scalars(trainer.dirs["logs"])["hyperparameter"]
    learning_rates = [v for _, v in hyper["hyperparameter/learning_rate"]]
    lambdas = [v for _, v in hyper["hyperparameter/grl_lambda"]]
    assert len(learning_rates) == 6 and len(set(learning_rates)) == 6
    assert lambdas[0] == 0.0 and np.all(np.diff(lambdas) > 0)
    # The variable the compiled step wrote holds the value for the last update (p = 5/6).
    assert float(trainer.dann.gradient_reversal.grl_lambda.numpy()) == pytest.approx(
        2 / (1 + np.exp(-10 * 5 / 6)) - 1, rel=1e-6)


def test_source_only_keeps_lambda_at_zero(data_dir, tmp_path):
    trainer = Trainer(tiny_config(data_dir, mode="source_only", epochs=1),
                      *builtin_domains(data_dir), output_root=str(tmp_path))
    before = [w.numpy() for w in trainer.dann.feature_extractor.trainable_weights]
    trainer.fit(show_progress=False)
    assert float(trainer.dann.gradient_reversal.grl_lambda.numpy()) == 0.0
    after = [w.numpy() for w in trainer.dann.feature_extractor.trainable_weights]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("domain_loss_weight", [1.0, 2.0])
def test_losses_are_source_mean_label_loss_plus_batch_mean_domain_loss(data_dir, tmp_path,
                                                                       domain_loss_weight):
    """Weight 1: the Caffe normalisation; weight 2: Eq. 9 (source mean + target mean)."""
    import tensorflow as tf

    trainer = Trainer(tiny_config(data_dir, domain_loss_weight=domain_loss_weight),
                      *builtin_domains(data_dir), output_root=str(tmp_path))
    labelled, labels, unlabelled = (tf.constant(a[:4]) for a in trainer.train_images)
    labels = tf.cast(labels, tf.int32)
    dann = trainer.dann
    dann.gradient_reversal.grl_lambda.assign(0.5)
    gradients, finite = trainer.strategy.run(trainer.phases.steps["adaptation"].replica_gradients,
                                             args=((labelled, labels, unlabelled),
                                                   tf.constant(0, tf.int64)))
    with tf.GradientTape() as tape:
        features = dann.feature_extractor(tf.concat([labelled, unlabelled], 0), training=True)
        label_loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels, dann.label_classifier(features[:4], training=True)))
        domain_losses = tf.nn.sigmoid_cross_entropy_with_logits(
            tf.constant([0.0] * 4 + [1.0] * 4), dann.domain_classifier(features, training=True)[:, 0])
        if domain_loss_weight == 2.0:  # Eq. 9 as printed
            domain_loss = tf.reduce_mean(domain_losses[:4]) + tf.reduce_mean(domain_losses[4:])
        else:
            domain_loss = tf.reduce_mean(domain_losses)
        total_loss = label_loss + domain_loss
    expected = tape.gradient(total_loss, dann.model.trainable_variables)
    assert bool(finite)
    for variable, got, want in zip(dann.model.trainable_variables, gradients, expected):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-6,
                                   err_msg=variable.path)
