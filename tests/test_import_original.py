"""The bridge from the original TF2 repository (Daipuwei/DANN-MNIST-tf2): importing its released
weights, overlaying its curves, and its training recipe.

Every file of the original is synthetic here: h5 and event files written in its
layout with random values, so no test needs the original's artefacts.
"""
import json
import os

import h5py
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import SMALL_VAL_SIZE, assert_one_line_failure, png_size, run_script
from utils import evaluate, import_original_weights, plot_curves
from utils.io import UserError

PIXEL_MEAN = 45.652287
# The original's Keras 2.4 full-model save: layer groups under model_weights/,
# written independently of utils.import_original_weights.LAYERS.
ORIGINAL_LAYOUT = {
    "sequential/conv2d": ((5, 5, 3, 32), (32,)),
    "sequential/conv2d_1": ((5, 5, 32, 48), (48,)),
    "sequential_1/dense": ((768, 100), (100,)),
    "sequential_1/dense_1": ((100, 100), (100,)),
    "sequential_1/image_cls_pred": ((100, 10), (10,)),
    "sequential_2/dense_2": ((768, 100), (100,)),
    "sequential_2/domain_cls_pred": ((100, 2), (2,)),
}


def original_weights(seed=0, reshape=None):
    """Random He-scaled weights {group: (kernel, bias)}; `reshape` overrides kernel shapes."""
    rng = np.random.default_rng(seed)
    weights = {}
    for group, (kernel_shape, bias_shape) in ORIGINAL_LAYOUT.items():
        kernel_shape = (reshape or {}).get(group, kernel_shape)
        fan_in = int(np.prod(kernel_shape[:-1]))
        weights[group] = (rng.normal(0, np.sqrt(2.0 / fan_in), kernel_shape).astype(np.float32),
                          rng.normal(0, 0.1, bias_shape).astype(np.float32))
    return weights


def write_original_h5(path, weights, drop=()):
    """An h5 file in the original's layout (datasets `<group>/kernel:0`, `bias:0`)."""
    with h5py.File(path, "w") as handle:
        handle.attrs["keras_version"] = "2.4.0"
        root = handle.create_group("model_weights")
        for group, (kernel, bias) in weights.items():
            if group in drop:
                continue
            layer = root.create_group(group)
            layer.create_dataset("kernel:0", data=kernel)
            layer.create_dataset("bias:0", data=bias)
    return str(path)


def original_forward(weights, images, pixel_mean=PIXEL_MEAN):
    """The original network in plain TensorFlow: (x - mean) / 255, conv 5x5 valid + ReLU +
    max-pool 2, twice, flatten, FC + ReLU twice, softmax; and the domain head's softmax."""
    x = (tf.cast(images, tf.float32) - pixel_mean) / 255.0
    for group in ("sequential/conv2d", "sequential/conv2d_1"):
        kernel, bias = weights[group]
        x = tf.nn.relu(tf.nn.conv2d(x, kernel, strides=1, padding="VALID") + bias)
        x = tf.nn.max_pool2d(x, ksize=2, strides=2, padding="VALID")
    features = tf.reshape(x, [x.shape[0], -1])

    def dense(inputs, group, activation):
        kernel, bias = weights[group]
        return activation(tf.matmul(inputs, kernel) + bias)

    hidden = dense(dense(features, "sequential_1/dense", tf.nn.relu), "sequential_1/dense_1",
                   tf.nn.relu)
    class_probs = dense(hidden, "sequential_1/image_cls_pred", tf.nn.softmax)
    domain_probs = dense(dense(features, "sequential_2/dense_2", tf.nn.relu),
                         "sequential_2/domain_cls_pred", tf.nn.softmax)
    return class_probs.numpy(), domain_probs.numpy()


def import_args(weights_path, root, data_dir, run="original"):
    return ["--weights", weights_path, "--run-name", run, "--output-root", root,
            "--data-dir", data_dir]


@pytest.fixture(scope="module")
def imported(data_dir, tmp_path_factory):
    """(output root, weights) of a synthetic original h5 imported as run `original`."""
    folder = tmp_path_factory.mktemp("original")
    weights = original_weights()
    path = write_original_h5(folder / "trained_dann_mnist2mnist_m.h5", weights)
    root = str(folder / "out")
    import_original_weights.main(import_args(path, root, data_dir))
    return root, weights, path


def test_import_writes_a_run_of_the_original_recipe(imported, data_dir):
    root, _, _ = imported
    with open(os.path.join(root, "config", "original", "config.json")) as handle:
        config = json.load(handle)
    expected = dict(recipe="original", mode="dann", input_norm="mean", batch_size=256,
                    epochs=5000, steps_per_epoch=468, learning_rate=0.01, momentum=0.9,
                    data_dir=data_dir, run_name="original")
    assert {key: config[key] for key in expected} == expected
    assert os.path.isfile(os.path.join(root, "checkpoints", "original", "final.weights.h5"))

    from utils.runs import load_run

    _, dann = load_run("original", root)
    mean = dann.feature_extractor.get_layer("mean_subtraction").pixel_mean.numpy()
    np.testing.assert_allclose(mean, [PIXEL_MEAN / 255.0] * 3, rtol=1e-6)


def test_imported_model_equals_a_plain_tensorflow_forward_pass(imported, data_dir):
    root, weights, _ = imported
    evaluate.main(["--run", "original", "--output-root", root])
    with open(os.path.join(root, "logs", "original", "evaluation.json")) as handle:
        evaluation = json.load(handle)

    from utils.runs import load_run, load_test_sets

    config, dann = load_run("original", root)
    (source_images, source_labels), (target_images, target_labels) = load_test_sets(config)
    source_probs, source_domain = original_forward(weights, source_images)
    target_probs, target_domain = original_forward(weights, target_images)
    for key, probs, labels in (("source_accuracy", source_probs, source_labels),
                               ("target_accuracy", target_probs, target_labels)):
        assert evaluation[key] == pytest.approx(np.mean(probs.argmax(1) == labels), abs=0.001)
    domain_correct = np.concatenate([source_domain.argmax(1) == 0, target_domain.argmax(1) == 1])
    assert evaluation["domain_classifier_accuracy"]["both"] == pytest.approx(
        np.mean(domain_correct), abs=0.001)

    # Stronger than equal accuracies: the same probabilities, image by image.
    images = np.concatenate([source_images, target_images])
    class_logits, domain_logit = (np.asarray(output) for output in dann.model(images))
    np.testing.assert_allclose(tf.nn.softmax(class_logits).numpy(),
                               np.concatenate([source_probs, target_probs]), atol=1e-5)
    # A 2-way softmax's target probability is the sigmoid of our single logit.
    np.testing.assert_allclose(tf.sigmoid(domain_logit[:, 0]).numpy(),
                               np.concatenate([source_domain, target_domain])[:, 1], atol=1e-5)


def test_existing_run_is_refused_and_left_alone(imported, data_dir):
    root, _, path = imported
    weights_file = os.path.join(root, "checkpoints", "original", "final.weights.h5")
    before = os.path.getmtime(weights_file)
    with pytest.raises(UserError, match="run 'original' already exists"):
        import_original_weights.main(import_args(path, root, data_dir))
    assert os.path.getmtime(weights_file) == before


def truncated_h5(folder):
    path = write_original_h5(folder / "full.h5", original_weights())
    data = open(path, "rb").read()
    with open(folder / "truncated.h5", "wb") as handle:
        handle.write(data[:len(data) // 2])
    return str(folder / "truncated.h5")


def text_file(folder):
    (folder / "notes.h5").write_text("not an HDF5 file")
    return str(folder / "notes.h5")


@pytest.mark.parametrize("make_weights, fragment", [
    (lambda folder: str(folder / "absent.h5"), "no weights file at"),
    (truncated_h5, "cannot read"),
    (text_file, "cannot read"),
    (lambda folder: write_original_h5(folder / "no_domain_head.h5", original_weights(),
                                      drop=("sequential_2/domain_cls_pred",)),
     "has no model_weights/sequential_2/domain_cls_pred/kernel:0"),
    (lambda folder: write_original_h5(folder / "3x3.h5", original_weights(
        reshape={"sequential/conv2d": (3, 3, 3, 32)})),
     "model_weights/sequential/conv2d/kernel:0 has shape (3, 3, 3, 32)"),
], ids=["missing", "truncated", "not-hdf5", "missing-group", "wrong-shape"])
def test_bad_weights_exit_with_one_line_and_write_nothing(tmp_path, data_dir, make_weights,
                                                          fragment):
    weights_path = make_weights(tmp_path)
    root = tmp_path / "out"
    completed = run_script("-m", "utils.import_original_weights",
                           *import_args(weights_path, root, data_dir))
    assert completed.returncode == 2
    assert_one_line_failure(completed, fragment)
    assert not root.exists()


def write_original_events(folder, epochs=5):
    """The original's run folder: train/ written by tf.summary (tensor values) and
    validation/ as raw TF1-style events (simple_value), to read both encodings."""
    from tensorflow.core.util import event_pb2

    values = {tag: [0.1 * epoch + index for epoch in range(1, epochs + 1)]
              for index, tag in enumerate(["acc/image_cls_acc", "acc/domain_cls_acc",
                                           "loss/image_cls_loss", "loss/domain_cls_loss",
                                           "loss/loss"])}
    writer = tf.summary.create_file_writer(str(folder / "train"))
    with writer.as_default():
        for epoch in range(1, epochs + 1):
            for tag, series in values.items():
                tf.summary.scalar(tag, series[epoch - 1], step=epoch)
    writer.close()
    os.makedirs(folder / "validation")
    with tf.io.TFRecordWriter(str(folder / "validation" / "events.out.tfevents.1.host.v2")) as out:
        out.write(event_pb2.Event(wall_time=1.0, file_version="brain.Event:2").SerializeToString())
        for epoch in range(1, epochs + 1):
            event = event_pb2.Event(wall_time=1.0 + epoch, step=epoch)
            for tag, series in values.items():
                event.summary.value.add(tag=tag, simple_value=series[epoch - 1])
            out.write(event.SerializeToString())
    return values


@pytest.fixture(scope="module")
def original_recipe_run(data_dir, tmp_path_factory):
    """An output root with run `orig`: `--recipe original`, shrunk to 2 steps of 4 + 4."""
    import train_MNIST2MNIST_M

    root = str(tmp_path_factory.mktemp("recipe"))
    train_MNIST2MNIST_M.main(["--recipe", "original", "--epochs", "1", "--steps-per-epoch", "2",
                              "--batch-size", "8", "--eval-batch-size", "16",
                              "--target-val-size", str(SMALL_VAL_SIZE), "--data-dir", data_dir,
                              "--output-root", root, "--run-name", "orig", "--no-progress"])
    return root


def test_original_recipe_trains_a_few_steps(original_recipe_run):
    with open(os.path.join(original_recipe_run, "config", "orig", "config.json")) as handle:
        config = json.load(handle)
    assert config["recipe"] == "original" and config["input_norm"] == "mean"
    with open(os.path.join(original_recipe_run, "logs", "orig", "results.json")) as handle:
        assert 0.0 <= json.load(handle)["target_accuracy"] <= 1.0


def test_original_recipe_is_the_original_schedule():
    import train_MNIST2MNIST_M
    from config.cli import config_from_args

    config = config_from_args(train_MNIST2MNIST_M.parse_args(["--recipe", "original"]))
    assert (config.batch_size, config.epochs, config.steps_per_epoch) == (256, 5000, 468)
    assert (config.input_norm, config.learning_rate, config.momentum) == ("mean", 0.01, 0.9)
    assert config.total_steps == 2_340_000


def test_original_events_are_read_under_our_tags(tmp_path):
    values = write_original_events(tmp_path)
    scalars = plot_curves.read_original_scalars(str(tmp_path))
    for writer in ("train", "validation"):
        assert [value for _, value in scalars[writer]["acc/label_acc"]] == pytest.approx(
            values["acc/image_cls_acc"])
        assert [step for step, _ in scalars[writer]["loss/total_loss"]] == [1, 2, 3, 4, 5]
    assert scalars["train"]["loss/domain_loss"][0][1] == pytest.approx(
        values["loss/domain_cls_loss"][0])
    # The original logs its validation domain accuracy under loss/domain_cls_loss.
    assert "loss/domain_loss" not in scalars["validation"]


def test_compare_original_png(original_recipe_run, tmp_path, capsys):
    write_original_events(tmp_path / "original_run")
    out = tmp_path / "image"
    plot_curves.main(["--run", "orig", "--output-root", original_recipe_run,
                      "--original-logs", str(tmp_path / "original_run"), "--out", str(out)])
    assert os.listdir(out) == [plot_curves.COMPARE_FILE]
    width, height = png_size(out / plot_curves.COMPARE_FILE)
    assert (width, height) == (1000, 400)
    assert capsys.readouterr().out.strip() == f"wrote {out / plot_curves.COMPARE_FILE}"


def test_original_logs_without_event_files_exit_with_one_line(original_recipe_run, tmp_path):
    os.makedirs(tmp_path / "empty" / "train")
    completed = run_script("-m", "utils.plot_curves", "--run", "orig", "--output-root",
                           original_recipe_run, "--original-logs", tmp_path / "empty",
                           "--out", tmp_path / "image")
    assert completed.returncode == 2
    assert_one_line_failure(completed, "no event files in")
    assert not (tmp_path / "image").exists()


def test_an_imported_run_gets_a_row_in_hparams(imported, data_dir, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    from utils import tensorboard_extras

    root, _, _ = imported
    tensorboard_extras.main(["--run", "original", "--output-root", root, "--data-dir", data_dir])
    assert "of run original" in capsys.readouterr().out
    log_dir = os.path.join(root, "logs", "original")
    with open(os.path.join(log_dir, "evaluation.json")) as handle:
        evaluation = json.load(handle)
    validation = EventAccumulator(os.path.join(log_dir, "validation"),
                                  size_guidance={"tensors": 0})
    validation.Reload()
    written = {tag: float(tf_value(validation.Tensors(tag)[-1])) for tag in
               ("acc/label_acc", "acc/source_label_acc", "acc/domain_acc")}
    assert written == pytest.approx({
        "acc/label_acc": evaluation["target_accuracy"],
        "acc/source_label_acc": evaluation["source_accuracy"],
        "acc/domain_acc": evaluation["domain_classifier_accuracy"]["both"]})
    session = EventAccumulator(log_dir, size_guidance={"tensors": 0})
    session.Reload()
    start = plugin_data_pb2.HParamsPluginData.FromString(
        session.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["recipe"].string_value == "original"


def tf_value(event):
    import tensorflow as tf

    return tf.make_ndarray(event.tensor_proto)
