"""keras.applications backbones (model/applications.py, utils/training/backbone.py), on tiny
images: weights from a local file, the bad files, the backbone's learning rate and frozen
batch norm, and predict and export with the preprocessing inside the model. No ImageNet
weights can be fetched here: every file is one these tests make with keras.applications."""
import os

import cv2
import numpy as np
import pytest

import train_MNIST2MNIST_M
from utils.io import UserError

SIDE = 32


def mobilenet_weights(path, seed):
    """A MobileNetV3Small without its top, random weights from `seed`, saved to `path`."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.applications.MobileNetV3Small(include_top=False, weights=None, pooling="avg",
                                                input_shape=(SIDE, SIDE, 3))
    model.save_weights(str(path))
    return model


def pair(root, count=16, seed=0):
    """Source and target folders of two classes of random 40x40 colour images."""
    rng = np.random.default_rng(seed)
    for domain in ("source", "target"):
        for split, number in (("train", count), ("test", 4)):
            for name in ("a", "b"):
                folder = root / domain / split / name
                folder.mkdir(parents=True)
                for index in range(number):
                    cv2.imwrite(str(folder / f"{index}.png"),
                                rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    return str(root / "source"), str(root / "target")


def config(path, **fields):
    from config.config import DANNConfig

    values = dict(source="s", target="t", network="mobilenet_v3_small",
                  input_shape=(SIDE, SIDE, 3), num_classes=2, backbone_weights=str(path))
    return DANNConfig(**{**values, **fields})


@pytest.mark.slow  # four keras.applications builds, about 15 s
def test_weights_from_a_file_start_the_backbone_and_bad_files_are_one_line(tmp_path):
    from model import build_dann
    from utils.training import backbone

    path = tmp_path / "mobilenet.weights.h5"
    saved = mobilenet_weights(path, seed=1)
    dann = build_dann((SIDE, SIDE, 3), 2, network="mobilenet_v3_small")
    backbone.check_weights(config(path))
    backbone.prepare(dann, config(path))
    for loaded, expected in zip(backbone.backbone_of(dann).weights, saved.weights):
        np.testing.assert_array_equal(loaded.numpy(), expected.numpy())

    with pytest.raises(UserError, match="missing.weights.h5: no such file"):
        backbone.check_weights(config(tmp_path / "missing.weights.h5"))
    cut = tmp_path / "cut.weights.h5"
    cut.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    with pytest.raises(UserError, match="cut.weights.h5 cannot be loaded into mobilenet_v3_small"):
        backbone.check_weights(config(cut))
    import keras

    foreign = tmp_path / "efficientnet.weights.h5"
    keras.applications.EfficientNetB0(include_top=False, weights=None,
                                      input_shape=(SIDE, SIDE, 3)).save_weights(str(foreign))
    with pytest.raises(UserError, match="efficientnet.weights.h5 cannot be loaded into "
                                        "mobilenet_v3_small"):
        backbone.check_weights(config(foreign))
    with pytest.raises(UserError, match="not mnist"):
        backbone.check_weights(config(path, network="mnist"))


@pytest.mark.slow  # builds MobileNetV3 in a run's process, about 10 s
def test_a_bad_weights_file_stops_the_run_before_anything_is_written(tmp_path, capsys):
    source, target = pair(tmp_path)
    argv = ["--source", source, "--target", target, "--network", "mobilenet_v3_small",
            "--backbone-weights", str(tmp_path / "none.weights.h5"), "--input-shape", "32,32,3",
            "--output-root", str(tmp_path / "out"), "--run-name", "bad"]
    with pytest.raises(SystemExit) as stop:
        from utils.io import run_main

        run_main(lambda: train_MNIST2MNIST_M.main(argv))
    assert stop.value.code == 2
    assert "none.weights.h5: no such file" in capsys.readouterr().err
    assert not any((tmp_path / "out" / kind / "bad").exists()
                   for kind in ("logs", "checkpoints", "config"))


@pytest.mark.slow  # a MobileNetV3 run, predict and export: about half a minute
def test_the_backbone_learns_at_its_rate_keeps_frozen_statistics_and_exports(tmp_path, capsys):
    import tensorflow as tf

    from model import build_dann
    from utils import export, predict
    from utils.data.files import decode_files
    from utils.runs import find_run
    from utils.training.backbone import backbone_of

    source, target = pair(tmp_path)
    path = tmp_path / "mobilenet.weights.h5"
    saved = mobilenet_weights(path, seed=2)
    root = str(tmp_path / "out")
    train_MNIST2MNIST_M.main(["--source", source, "--target", target, "--network",
                              "mobilenet_v3_small", "--backbone-weights", str(path),
                              "--input-shape", "32,32,3", "--backbone-lr-mult", "0",
                              "--freeze-backbone-bn", "--epochs", "1", "--steps-per-epoch", "3",
                              "--batch-size", "8", "--eval-batch-size", "8",
                              # Random weights behind frozen batch norm give nearly the same
                              # features for every noise image: not what the guard is for.
                              "--collapse-probe-size", "0",
                              "--output-root", root, "--run-name", "mobile", "--no-progress"])
    run = find_run("mobile", root)
    trained = build_dann((SIDE, SIDE, 3), 2, network="mobilenet_v3_small")
    trained.model.load_weights(os.path.join(root, "checkpoints", "mobile", "final.weights.h5"))
    # At a rate of 0 and with frozen statistics the backbone is still the file: kernels,
    # scales and the batch-norm moving averages alike.
    for after, before in zip(backbone_of(trained).weights, saved.weights):
        np.testing.assert_array_equal(after.numpy(), before.numpy())
    # Predict takes image files of any size; the SavedModel takes plain uint8 images and
    # gives the same probabilities, the application's preprocessing inside it.
    folder = os.path.join(target, "test", "a")
    paths = sorted(os.path.join(folder, name) for name in os.listdir(folder))
    _, expected = predict.predict_files(run, paths)
    export.main(["--run", "mobile", "--out", str(tmp_path / "exported"), "--output-root", root])
    loaded = tf.saved_model.load(str(tmp_path / "exported"))
    images = decode_files(paths, (SIDE, SIDE, 3), True, "PATH")
    np.testing.assert_allclose(loaded.serve(tf.constant(images)).numpy(), expected, atol=1e-5)
    # The backbone alone, for another run's --backbone-weights: at any input size.
    export.main(["--run", "mobile", "--backbone-only", "--out", str(tmp_path / "bb.weights.h5"),
                 "--output-root", root])
    from model import get_network

    larger = get_network("mobilenet_v3_small").backbone((64, 64, 3))
    larger.load_weights(str(tmp_path / "bb.weights.h5"))
    for exported, trained_weight in zip(larger.weights, backbone_of(trained).weights):
        np.testing.assert_array_equal(exported.numpy(), trained_weight.numpy())


def test_a_backbone_is_exported_to_a_weights_file_only():
    from utils import export

    with pytest.raises(UserError, match=r"\.weights\.h5"):
        export.parse_args(["--run", "r", "--backbone-only", "--out", "backbone.h5"])
