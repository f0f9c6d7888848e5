"""Each domain's batch-norm statistics (utils/training/batch_norm_statistics.py, AdaBN): the
population mean and variance of each trained layer, frozen layers and networks without batch
norm left alone, each test set scored with its domain's, and the run's saved weights carrying
the target's."""
import os
import types

import numpy as np
import pytest

from tests.test_backbones import SIDE, mobilenet_weights, pair


def tiny_dann(frozen=False):
    """A DANN-shaped Keras model whose G_f is dropout, conv, batch norm, conv, batch norm,
    pooling; with `frozen`, the second batch norm is not trained."""
    import keras

    keras.utils.set_random_seed(0)
    images = keras.Input((8, 8, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255.0)(images)
    # Off in evaluation, so off while the statistics are computed (as EfficientNet's).
    x = keras.layers.Dropout(0.5, name="dropout")(x)
    x = keras.layers.Conv2D(4, 3, name="conv1")(x)
    x = keras.layers.BatchNormalization(momentum=0.99, name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(5, 3)(x)
    x = keras.layers.BatchNormalization(momentum=0.99, name="bn2")(x)
    features = keras.layers.GlobalAveragePooling2D()(x)
    extractor = keras.Model(images, features, name="feature_extractor")
    if frozen:
        extractor.get_layer("bn2").trainable = False
    outer = keras.Input((8, 8, 3), dtype="uint8")
    return keras.Model(outer, keras.layers.Dense(2)(extractor(outer))), extractor


def test_the_statistics_are_each_domain_s_population_s_and_frozen_layers_keep_theirs():
    from utils.training.batch_norm_statistics import DomainStatistics

    model, extractor = tiny_dann(frozen=True)
    rng = np.random.default_rng(1)
    images = {"source": rng.integers(0, 100, (120, 8, 8, 3), dtype=np.uint8),
              "target": rng.integers(0, 256, (200, 8, 8, 3), dtype=np.uint8)}
    frozen = extractor.get_layer("bn2")
    frozen_before = [weight.numpy().copy() for weight in frozen.weights]
    statistics = DomainStatistics(model, images, batch_size=40, seed=0)
    assert [layer.name for layer in statistics.layers] == ["bn1"]
    conv, bn1 = extractor.get_layer("conv1"), extractor.get_layer("bn1")
    for name in ("target", "source", "target"):
        statistics.use(name)
        # bn1's input does not depend on any batch norm: its statistics over all of the
        # domain's images (batches of 40) are the population's exactly, pixels and images alike.
        outputs = conv(images[name].astype(np.float32) / 255.0).numpy().reshape(-1, 4)
        np.testing.assert_allclose(bn1.moving_mean.numpy(), outputs.mean(axis=0), rtol=1e-4,
                                   atol=1e-6)
        np.testing.assert_allclose(bn1.moving_variance.numpy(), outputs.var(axis=0), rtol=1e-4)
    # Restored for training.
    assert bn1.momentum == 0.99 and extractor.get_layer("dropout").rate == 0.5
    for after, before in zip(frozen.weights, frozen_before):
        np.testing.assert_array_equal(after.numpy(), before)
    # The same weights give the same statistics again (a resumed run's).
    first = bn1.moving_variance.numpy().copy()
    statistics.refresh()
    bn1.moving_variance.assign(np.ones(4, np.float32))
    statistics.use("target")
    np.testing.assert_array_equal(bn1.moving_variance.numpy(), first)


def test_only_trained_batch_norm_has_statistics_to_recompute():
    from config.config import DANNConfig
    from model import build_dann
    from utils.training.batch_norm_statistics import domain_statistics

    pool = {"images": np.zeros((16, 28, 28, 3), np.uint8)}
    data = types.SimpleNamespace(half_batch=4, source_pool=pool, target_pool=pool)
    # The default network has no batch norm: its evaluation is untouched.
    default = build_dann((28, 28, 3), 10)
    assert domain_statistics(default.model, data, DANNConfig()) is None
    model, _ = tiny_dann()
    pool["images"] = np.zeros((16, 8, 8, 3), np.uint8)
    assert domain_statistics(model, data, DANNConfig()) is not None
    assert domain_statistics(model, data, DANNConfig(bn_statistics="moving")) is None


def test_an_unknown_choice_is_one_line():
    from config.config import DANNConfig
    from utils.io import UserError

    with pytest.raises(UserError, match="unknown bn_statistics 'target'; use one of domain, moving"):
        DANNConfig(bn_statistics="target").validate()


@pytest.mark.slow  # a MobileNetV3 run: about 20 s
def test_a_run_saves_the_target_s_statistics_of_its_final_weights(tmp_path):
    import train_MNIST2MNIST_M
    from model import build_dann
    from utils.data import load_run_domains
    from utils.runs import find_run
    from utils.training.batch_norm_statistics import DomainStatistics
    from utils.training.prepare import prepare

    source, target = pair(tmp_path)
    path = tmp_path / "mobilenet.weights.h5"
    mobilenet_weights(path, seed=3)
    root = str(tmp_path / "out")
    train_MNIST2MNIST_M.main(["--source", source, "--target", target, "--network",
                              "mobilenet_v3_small", "--backbone-weights", str(path),
                              "--input-shape", "32,32,3", "--epochs", "1", "--steps-per-epoch",
                              "3", "--batch-size", "8", "--eval-batch-size", "8",
                              "--collapse-probe-size", "0", "--output-root", root,
                              "--run-name", "adabn", "--no-progress"])
    run = find_run("adabn", root)
    dann = run.load_model()
    saved = [variable.numpy().copy() for variable in dann.model.weights]
    config = run.config
    data = prepare(config, *load_run_domains(config))
    statistics = DomainStatistics(dann.model, {"target": data.target_pool["images"]},
                                  2 * data.half_batch, config.target_val_seed)
    assert len(statistics.layers) > 30  # every batch norm of MobileNetV3Small
    statistics.use("target")
    # The saved statistics are those the final weights give on the target: recomputing
    # them changes nothing, and they are not Keras' running averages from 0 and 1.
    fresh = build_dann((SIDE, SIDE, 3), 2, network="mobilenet_v3_small").model
    moved = 0
    for variable, before, initial in zip(dann.model.weights, saved, fresh.weights):
        np.testing.assert_allclose(variable.numpy(), before, rtol=1e-5, atol=1e-6)
        if "moving_variance" in variable.path:
            moved += not np.allclose(variable.numpy(), initial.numpy(), rtol=0.05)
    assert moved > 30
    assert os.path.isfile(run.weights)


def test_each_test_set_is_scored_with_its_domain_s_statistics_and_the_target_s_stay():
    from config.config import DANNConfig
    from model import build_dann
    from utils.training.evaluation import Evaluator

    images, labels = np.zeros((6, 28, 28, 3), np.uint8), np.zeros(6, np.int64)
    pool = {"images": images}
    data = types.SimpleNamespace(test_sets={"target": (images, labels), "source": (images, labels)},
                                 target_val={"images": images, "labels": labels},
                                 source_pool=pool, target_pool=pool, half_batch=2)
    evaluator = Evaluator(build_dann((28, 28, 3), 10).model, data,
                          DANNConfig(input_shape=(28, 28, 3), eval_batch_size=6))

    class Recorder:
        current, calls = None, []

        def refresh(self):
            self.calls.append("refresh")
            self.current = None

        def use(self, name):
            self.current = name

    evaluator.statistics = recorder = Recorder()
    scored = []
    evaluator.evaluate_domain = lambda _images, _labels, domain_label: (
        scored.append((domain_label, recorder.current)) or np.zeros(4))
    evaluator.evaluate()
    # Source test (domain label 0) under the source's, then the target's test set and its
    # validation split under the target's, which the model keeps.
    assert scored == [(0.0, "source"), (1.0, "target"), (1.0, "target")]
    assert recorder.calls == ["refresh"] and recorder.current == "target"


def test_frozen_batch_norm_is_frozen_in_the_evaluated_weight_average_too():
    import tensorflow as tf

    from config.config import DANNConfig
    from utils.training.batch_norm_statistics import domain_statistics, trained_batch_norm_layers
    from utils.training.phases import Phases

    pool = {"images": np.zeros((16, SIDE, SIDE, 3), np.uint8)}
    data = types.SimpleNamespace(half_batch=4, source_pool=pool, target_pool=pool,
                                 labelled_domain="source")
    config = DANNConfig(source="s", target="t", network="mobilenet_v3_small", num_classes=2,
                        input_shape=(SIDE, SIDE, 3), ema_decay=0.99, freeze_backbone_bn=True,
                        steps_per_epoch=10)
    phases = Phases(config, data, tf.distribute.get_strategy())
    assert phases.eval_model is not phases.dann.model
    # Frozen statistics are never recomputed: the evaluated copy has no trained batch norm.
    assert trained_batch_norm_layers(phases.eval_model.get_layer("feature_extractor")) == []
    assert domain_statistics(phases.eval_model, data, config) is None


def test_a_source_only_run_uses_the_source_s_statistics_for_every_set():
    from config.config import DANNConfig
    from utils.training.batch_norm_statistics import domain_statistics

    model, extractor = tiny_dann()
    rng = np.random.default_rng(2)
    data = types.SimpleNamespace(
        half_batch=20, source_pool={"images": rng.integers(0, 100, (80, 8, 8, 3), np.uint8)},
        target_pool={"images": rng.integers(100, 256, (80, 8, 8, 3), np.uint8)})
    bn1 = extractor.get_layer("bn1")
    means = {}
    for mode in ("dann", "source_only"):
        statistics = domain_statistics(model, data, DANNConfig(mode=mode))
        for name in ("source", "target"):
            statistics.use(name)
            means[mode, name] = bn1.moving_mean.numpy().copy()
    assert not np.allclose(means["dann", "source"], means["dann", "target"])
    np.testing.assert_array_equal(means["source_only", "target"], means["dann", "source"])
    np.testing.assert_array_equal(means["source_only", "source"], means["dann", "source"])
