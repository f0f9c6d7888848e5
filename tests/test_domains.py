"""Your own domains: image folders, .npz files and any registered format as source, target and
target test."""
import dataclasses
import json
import os
import re

import cv2
import numpy as np
import pytest

import train_MNIST2MNIST_M
from tests.conftest import SMALL_VAL_SIZE, assert_one_line_failure, run_script
from utils.data import builtin_domains, load_run_domains
from utils.data import files as domain_files
from utils.io import UserError

TINY_RUN = ["--epochs", "1", "--steps-per-epoch", "4", "--batch-size", "8",
            "--eval-batch-size", "16", "--no-progress"]


@pytest.fixture(scope="module")
def folders(data_dir, tmp_path_factory):
    """The synthetic MNIST and MNIST-M pickles written as class folders (utils.export_folders),
    plus MNIST-M with an unlabelled (flat) train split."""
    from utils import export_folders

    out = tmp_path_factory.mktemp("folders")
    export_folders.main(["--data-dir", data_dir, "--out", str(out)])
    export_folders.main(["--data-dir", data_dir, "--out", str(out / "flat"), "--domains",
                         "mnist_m", "--unlabelled", "mnist_m"])
    return out


def config_for(data_dir, **fields):
    from config.config import DANNConfig

    return DANNConfig(data_dir=data_dir, batch_size=8, target_val_size=SMALL_VAL_SIZE, **fields)


def write_png(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), image)


def image_folder(root, sizes_by_class, channels=3, seed=0):
    """A class-folder domain of random images: {class: [(h, w), ...]}."""
    rng = np.random.default_rng(seed)
    for name, sizes in sizes_by_class.items():
        for index, (height, width) in enumerate(sizes):
            shape = (height, width) if channels == 1 else (height, width, channels)
            write_png(os.path.join(root, name, f"{index}.png"),
                      rng.integers(0, 256, shape, dtype=np.uint8))
    return str(root)


def test_exported_folders_hold_the_pickles_pixels_by_class(data_dir, folders):
    source, target = load_run_domains(config_for(data_dir, source=str(folders / "mnist"),
                                                 target=str(folders / "mnist_m")))
    pickled_source, pickled_target = builtin_domains(data_dir)
    for loaded, pickled in ((source, pickled_source), (target, pickled_target)):
        assert loaded.class_names == tuple(str(digit) for digit in range(10))
        assert loaded.shape == (28, 28, 3) and loaded.labelled
        # Listed class by class, in file order: the pickle's images sorted stably by label.
        order = np.argsort(pickled.train_labels, kind="stable")
        np.testing.assert_array_equal(loaded.train, pickled.train[order])
        np.testing.assert_array_equal(loaded.train_labels, pickled.train_labels[order])
        order = np.argsort(pickled.test_labels, kind="stable")
        np.testing.assert_array_equal(loaded.test, pickled.test[order])


def test_decoded_images_are_cached_and_decoded_again_when_a_file_changes(data_dir, folders,
                                                                         monkeypatch, capsys):
    config = config_for(data_dir, source=str(folders / "mnist"), target=str(folders / "mnist_m"))
    load_run_domains(config)  # the fixture's run may not have cached them yet
    capsys.readouterr()
    decoded = []
    original = domain_files.decode_and_report
    monkeypatch.setattr(domain_files, "decode_and_report",
                        lambda paths, *args: decoded.append(len(paths)) or original(paths, *args))
    first, _ = load_run_domains(config)
    assert decoded == [] and "decoding" not in capsys.readouterr().out
    # A resumed run's config names the input shape, so images may be resized there: the
    # cache the run's start wrote serves it all the same.
    load_run_domains(dataclasses.replace(config, input_shape=tuple(first.train.shape[1:])))
    assert decoded == [] and "decoding" not in capsys.readouterr().out
    # A file rewritten (new size and time) changes the key: that split is decoded again.
    changed = folders / "mnist" / "train" / "3"
    path = sorted(changed.iterdir())[0]
    image = cv2.imread(str(path))
    image[0, 0] = 255 - image[0, 0]
    write_png(path, image)
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10 ** 9))
    again, _ = load_run_domains(config)
    assert decoded == [len(first.train)]
    caches = os.listdir(folders / "mnist" / ".dann-cache")
    assert len([name for name in caches if name.startswith("train-")]) == 1  # the stale one went
    assert not np.array_equal(again.train, first.train)


def test_dann_trains_on_folders_and_records_shape_classes_and_network(data_dir, folders, tmp_path,
                                                                      capsys):
    train_MNIST2MNIST_M.main(["--source", str(folders / "mnist"), "--target",
                              str(folders / "mnist_m"), "--target-val-size", str(SMALL_VAL_SIZE),
                              "--output-root", str(tmp_path), "--run-name", "folders", *TINY_RUN])
    out = capsys.readouterr().out
    assert "network mnist (the default; --network picks" in out and "input 28x28x3" in out
    results = json.loads((tmp_path / "logs" / "folders" / "results.json").read_text())
    assert 0 <= results["target_accuracy"] <= 1 and 0 <= results["target_val_accuracy"] <= 1
    # Timed on a run this short too: every update but the one that traced the step.
    assert results["timed_steps"] == 3 and results["ms_per_step"] > 0
    saved = json.loads((tmp_path / "config" / "folders" / "config.json").read_text())
    assert saved["input_shape"] == [28, 28, 3] and saved["network"] == "mnist"
    # The device, said at start and recorded in both files; where the run is, said last.
    from utils.device import describe_device

    device = describe_device()
    assert device.startswith(("CPU: ", "GPU: ")) and f"; {device}" in out
    assert saved["device"] == results["device"] == device
    # The disk the run said at start its checkpoints would take is what one takes.
    said = float(re.search(r"a checkpoint takes about ([0-9.]+) MB", out).group(1)) * 1e6
    checkpoints = tmp_path / "checkpoints" / "folders"
    written = max(sum(f.stat().st_size for f in checkpoints.glob(f"ckpt-{step}.*"))
                  for step in {f.name.split(".")[0].split("-")[1] for f in checkpoints.glob("ckpt-*")})
    assert 0.9 * written < said < 1.1 * written, (said, written)
    assert out.rstrip().splitlines()[-1] == (
        f"run folders saved: logs and results.json in {tmp_path}/logs/folders (tensorboard "
        f"--logdir {tmp_path}/logs/folders), weights in {tmp_path}/checkpoints/folders, config "
        f"in {tmp_path}/config/folders")
    assert saved["class_names"] == [str(digit) for digit in range(10)] and saved["num_classes"] == 10
    # The tools take the run as they take a built-in one.
    from utils import evaluate

    evaluate.main(["--run", "folders", "--output-root", str(tmp_path)])
    assert "target accuracy" in capsys.readouterr().out
    # Resuming re-reads the same folders (from the cache) and finds the run finished.
    train_MNIST2MNIST_M.main(["--run-name", "folders", "--resume", "--output-root", str(tmp_path)])
    assert "is already finished" in capsys.readouterr().out


@pytest.mark.slow  # 10-20 s: kept out of the default suite for its 5-minute budget
def test_unlabelled_target_reports_no_target_accuracy_and_still_scores_validators(
        data_dir, folders, tmp_path, capsys):
    flat = folders / "flat" / "mnist_m" / "train"  # a flat folder: no labels, no test split
    train_MNIST2MNIST_M.main(["--source", str(folders / "mnist"), "--target", str(flat),
                              "--output-root", str(tmp_path), "--run-name", "unlabelled",
                              *TINY_RUN])
    out = capsys.readouterr().out
    assert "training images have no labels: no target validation split, no target accuracy" in out
    # Strict JSON: null, never NaN, where there is nothing to measure.
    results = json.loads((tmp_path / "logs" / "unlabelled" / "results.json").read_text(),
                         parse_constant=lambda name: pytest.fail(f"{name} in results.json"))
    for name in ("results.json", "validators.json"):
        json.loads((tmp_path / "logs" / "unlabelled" / name).read_text(),
                   parse_constant=lambda name: pytest.fail(f"{name} in a JSON file"))
    assert results["target_accuracy"] is None and results["domain_accuracy"] is None
    assert 0 <= results["source_accuracy"] <= 1
    assert "validators source_acc=" in (tmp_path / "logs" / "unlabelled" / "log.txt").read_text()
    # The same flat train split with its labelled test/ beside it: test accuracy, no val split.
    train_MNIST2MNIST_M.main(["--source", str(folders / "mnist"), "--target",
                              str(folders / "flat" / "mnist_m"), "--output-root", str(tmp_path),
                              "--run-name", "labelled_test", *TINY_RUN])
    # The start line says what results.json then holds: a test accuracy, no validation split.
    assert ("no target validation split, the target accuracy is measured on its "
            in capsys.readouterr().out)
    results = json.loads((tmp_path / "logs" / "labelled_test" / "results.json").read_text())
    assert 0 <= results["target_accuracy"] <= 1 and results["target_val_accuracy"] is None


def test_npz_source_grey_becomes_rgb_beside_a_colour_target(data_dir, folders, tmp_path):
    from tests.conftest import synthetic_mnist

    x_train, y_train, x_test, y_test = synthetic_mnist(num_train=64, num_test=16)
    path = tmp_path / "digits.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    source, target = load_run_domains(config_for(data_dir, source=str(path),
                                                 target=str(folders / "mnist_m")))
    assert source.shape == (28, 28, 3) and target.shape == (28, 28, 3)
    np.testing.assert_array_equal(source.train[..., 1], x_train)  # grey repeated into RGB
    assert source.class_names == tuple(str(d) for d in range(10))
    # --target-test: a labelled set the target accuracy is measured on instead.
    _, target = load_run_domains(config_for(data_dir, source=str(path), target=str(path),
                                            target_test=str(folders / "mnist_m")))
    assert len(target.test) == len(builtin_domains(data_dir)[1].test)


def test_mixed_sizes_need_input_shape_and_are_then_resized_as_keras_does(data_dir, tmp_path):
    import tensorflow as tf

    sizes = {"a": [(34, 34)] * 5, "b": [(34, 34)] * 4 + [(36, 40)]}
    source = image_folder(tmp_path / "source", sizes)
    # small_resnet takes images as they are, so they must agree...
    with pytest.raises(UserError, match=r"images of mixed sizes \(34x34, but .*b/4.png is 36x40\); "
                                        r"pass --input-shape"):
        load_run_domains(config_for(data_dir, source=source, target=source,
                                    network="small_resnet"))
    # ...while a paper column (the default mnist) resizes every image to its own size.
    assert load_run_domains(config_for(data_dir, source=source, target=source))[0].shape == (
        28, 28, 3)
    loaded, _ = load_run_domains(config_for(data_dir, source=source, target=source,
                                            input_shape=(32, 32, 1)))
    assert loaded.shape == (32, 32, 1)
    original = cv2.imread(os.path.join(source, "b", "4.png"))[..., ::-1]
    grey = tf.image.rgb_to_grayscale(tf.cast(original, tf.float32))
    expected = np.round(np.clip(tf.image.resize(tf.round(grey), [32, 32]).numpy(), 0, 255))
    np.testing.assert_array_equal(loaded.train[-1], expected.astype(np.uint8))
    # A cache holding a resized image (34x34, from --input-shape) does not serve a load
    # without --input-shape at that same shape: that one still names the odd file.
    load_run_domains(config_for(data_dir, source=source, target=source, network="small_resnet",
                                input_shape=(34, 34, 3)))
    with pytest.raises(UserError, match=r"images of mixed sizes \(34x34, but .*b/4.png"):
        load_run_domains(config_for(data_dir, source=source, target=source,
                                    network="small_resnet"))


def run_fails(tmp_path, capsys, argv, *fragments):
    """In process: the train script raises one UserError naming `fragments`, writes no run."""
    with pytest.raises(UserError) as error:
        train_MNIST2MNIST_M.main([*argv, "--output-root", str(tmp_path / "out"), "--run-name",
                                  "bad", *TINY_RUN])
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert not any((tmp_path / "out" / kind / "bad").exists()
                   for kind in ("logs", "checkpoints", "config"))
    return message


BAD_DOMAINS = {
    "missing folder": (lambda root, good: ["--source", str(root / "nowhere"), "--target", good],
                       ["--source", "no such folder or .npz file"]),
    "file that is not a .npz": (lambda root, good: [
        "--source", str((root / "notes.txt").write_text("x") and root / "notes.txt"),
        "--target", good], ["--source", "notes.txt is a file but not a .npz"]),
    "empty folder": (lambda root, good: [
        "--source", str(os.makedirs(root / "empty") or root / "empty"), "--target", good],
        ["holds no images"]),
    "class folder without images": (lambda root, good: [
        "--source", image_folder(root / "noimg", {"a": [(28, 28)] * 8}) and
        str(os.makedirs(root / "noimg" / "b") or root / "noimg"), "--target", good],
        ["class folder", "noimg/b holds no images"]),
    "corrupt image": (lambda root, good: [
        "--source", str(image_folder(root / "corrupt", {"a": [(28, 28)] * 8, "b": [(28, 28)] * 8})
                        and ((root / "corrupt" / "b" / "3.png").write_bytes(b"\x89PNG not really")
                             and root / "corrupt")), "--target", good],
        ["corrupt/b/3.png is not a readable image"]),
    "source without labels": (lambda root, good: [
        "--source", str(root / "flatsrc"), "--target", good],
        ["--source", "has no labels"]),
    "classes differ": (lambda root, good: [
        "--source", good, "--target", image_folder(root / "other", {"0": [(28, 28)] * 8,
                                                                    "cat": [(28, 28)] * 8})],
        ["classes of --target", "only in it: cat", "missing: 1, 2"]),
    "npz missing a key": (lambda root, good: [
        "--source", str(np.savez(root / "nokey.npz", x_train=np.zeros((8, 28, 28), np.uint8),
                                 y_train=np.zeros(8, np.int64)) or root / "nokey.npz"),
        "--target", good], ["has no x_test, y_test"]),
    "npz of objects": (lambda root, good: [
        "--source", str(np.savez(root / "objects.npz", x_train=np.array([None, 1], object),
                                 y_train=np.zeros(2), x_test=np.zeros((2, 28, 28), np.uint8),
                                 y_test=np.zeros(2)) or root / "objects.npz"),
        "--target", good], ["x_train cannot be read without pickle"]),
    "one-image source": (lambda root, good: [
        "--source", image_folder(root / "one", {"0": [(28, 28)]}),
        "--target", image_folder(root / "eight", {"0": [(28, 28)] * 8})],
        ["the source has 1 training image left for training, fewer than the 4 per step",
         "lower --batch-size"]),
    "target test with unknown classes": (lambda root, good: [
        "--source", good, "--target", good, "--target-test",
        image_folder(root / "unknown", {"0": [(28, 28)] * 4, "zebra": [(28, 28)] * 4})],
        ["--target-test", "classes the source does not have: zebra"]),
    "unlabelled target test": (lambda root, good: [
        "--source", good, "--target", good, "--target-test", str(root / "flatsrc")],
        ["--target-test", "has no labels, so no target accuracy can be measured"]),
    "input shape too small": (lambda root, good: [
        "--source", good, "--target", good, "--input-shape", "12,12,3"],
        ["--input-shape 12,12,3 is too small for --network mnist"]),
}


@pytest.mark.parametrize("case", sorted(BAD_DOMAINS))
def test_bad_domains_fail_in_one_line_before_anything_is_written(case, folders, tmp_path, capsys):
    make, fragments = BAD_DOMAINS[case]
    os.makedirs(tmp_path / "flatsrc")
    for index in range(8):
        write_png(tmp_path / "flatsrc" / f"{index}.png", np.zeros((28, 28, 3), np.uint8))
    run_fails(tmp_path, capsys, make(tmp_path, str(folders / "mnist_m")), *fragments)


def test_non_images_are_counted_in_one_line_and_a_bad_folder_exits_2(folders, tmp_path, capsys):
    (folders / "mnist" / "train" / "0" / "notes.txt").write_text("not an image")
    (folders / "mnist" / "train" / "README.md").write_text("beside the classes")
    try:
        load_run_domains(config_for("unused", source=str(folders / "mnist"),
                                    target=str(folders / "mnist")))
    finally:
        os.remove(folders / "mnist" / "train" / "0" / "notes.txt")
        os.remove(folders / "mnist" / "train" / "README.md")
    lines = [line for line in capsys.readouterr().out.splitlines() if "ignored" in line]
    assert len(lines) == 2  # once per role, each one line
    assert "ignored 2 files that are not an image in a class folder" in lines[0]
    completed = run_script("train_MNIST2MNIST_M.py", "--source", tmp_path / "missing",
                           "--target", folders / "mnist_m", "--output-root", tmp_path)
    assert completed.returncode == 2
    assert_one_line_failure(completed, "no such folder or .npz file")


@pytest.mark.slow  # two fresh TensorFlow processes: about 30 s
def test_benchmark_times_the_first_decode_and_the_cached_load(folders, capsys):
    import re

    from utils import benchmark

    benchmark.main(["--decode-folder", str(folders / "mnist_m")])
    out = capsys.readouterr().out
    assert "320 images (256 train)" in out
    rows = {label: re.search(rf"{label}\s+([\d.]+) s\s+peak memory added\s+(-?\d+) MiB = "
                             r"(-?[\d.]+)x the (\d+) MiB", out) for label in
            (r"first decode \(no cache\)", "cached load")}
    assert all(rows.values()), out
    assert (folders / "mnist_m" / ".dann-cache").is_dir()


def test_tools_refuse_to_compare_runs_of_different_data():
    from config.config import DANNConfig
    from utils.runs import check_same_data

    same = {"a": DANNConfig(source="x", input_shape=(28, 28, 3)),
            "b": DANNConfig(source="x", input_shape=(28, 28, 3), mode="source_only")}
    check_same_data(same)
    with pytest.raises(UserError, match=r"runs 'a' and 'c' were trained on different data "
                                        r"\(source 'x' vs 'y'\)"):
        check_same_data({**same, "c": DANNConfig(source="y", input_shape=(28, 28, 3))})


def test_every_image_format_and_channel_count_decodes_to_the_networks_channels(tmp_path):
    """PNG (grey, RGB, RGBA), JPEG, BMP and GIF files all load, converted as Keras would."""
    rows, columns = np.mgrid[0:12, 0:10]
    # Smooth, so that JPEG stays close; OpenCV writes BGR(A).
    rgb = np.dstack([rows * 20, columns * 25, 255 - rows * 10]).astype(np.uint8)
    grey = (rows * 15 + columns * 5).astype(np.uint8)
    for name, pixels in (("rgb.png", rgb[..., ::-1]), ("grey.png", grey),
                         ("rgba.png", np.dstack([rgb[..., ::-1], grey])),
                         ("rgb.bmp", rgb[..., ::-1]), ("rgb.jpg", rgb[..., ::-1]),
                         ("rgb.gif", rgb[..., ::-1])):
        write_png(tmp_path / name, np.ascontiguousarray(pixels))
    paths = [str(tmp_path / name) for name in
             ("rgb.png", "rgba.png", "grey.png", "rgb.bmp", "rgb.jpg", "rgb.gif")]
    colour = domain_files.decode_files(paths, (12, 10, 3), False, "--source")
    np.testing.assert_array_equal(colour[0], rgb)
    np.testing.assert_array_equal(colour[1], rgb)                    # the alpha channel dropped
    np.testing.assert_array_equal(colour[2], np.dstack([grey] * 3))  # grey repeated
    np.testing.assert_array_equal(colour[3], rgb)
    assert np.abs(colour[4].astype(int) - rgb).mean() < 8            # JPEG is lossy
    assert np.abs(colour[5].astype(int) - rgb).mean() < 24           # GIF: a 256-colour palette
    mono = domain_files.decode_files(paths[:3], (12, 10, 1), False, "--source")
    luminance = np.round(rgb.astype(np.float32) @ np.array([0.2989, 0.5870, 0.1140], np.float32))
    assert np.abs(mono[0, ..., 0].astype(int) - luminance).max() <= 1
    np.testing.assert_array_equal(mono[2, ..., 0], grey)


def test_unlabelled_npz_target_and_the_tools_on_a_run_without_target_labels(
        data_dir, folders, tmp_path, capsys):
    from tests.conftest import synthetic_mnist
    from utils import select

    x_train, _, x_test, _ = synthetic_mnist(num_train=64, num_test=16)
    path = tmp_path / "unlabelled.npz"
    np.savez(path, x_train=x_train, x_test=x_test)
    source, target = load_run_domains(config_for(data_dir, source=str(folders / "mnist"),
                                                 target=str(path)))
    assert not target.labelled and target.test_labels is None and target.shape == (28, 28, 3)
    train_MNIST2MNIST_M.main(["--source", str(folders / "mnist"), "--target", str(path),
                              "--output-root", str(tmp_path), "--run-name", "npz", *TINY_RUN])
    capsys.readouterr()
    select.main(["--run", "npz", "--output-root", str(tmp_path)])
    assert "the target has no test labels, so the picks below cannot be scored" in \
        capsys.readouterr().out
    from utils import evaluate

    evaluate.main(["--run", "npz", "--output-root", str(tmp_path)])
    out = capsys.readouterr().out
    assert "target accuracy (unlabelled.npz test)  n/a" in out
    assert "the target has no labels: no target accuracy" in out


def test_a_new_format_is_one_module_and_one_registry_entry(data_dir, folders, monkeypatch):
    """A format is detect, probe and load (utils/data/formats.py); registered, it serves every
    role a SPEC names, and the checks between domains apply to it as to the others."""
    from utils.data import formats
    from utils.data.domain import Domain

    def load(spec, flag, shape, resize, data_dir=None, num_classes=None):
        _, value, labelled = spec.split(":")
        images = np.full((16, *shape), int(value), np.uint8)
        return Domain(spec, "constant", tuple("0123456789"), images,
                      np.arange(16) % 10 if labelled == "labelled" else None)

    monkeypatch.setitem(formats.FORMATS, "constant", formats.Format(
        detect=lambda spec: spec.startswith("constant:"), probe=lambda *args: ((28, 28), 1),
        load=load))
    source, target = load_run_domains(config_for(data_dir, source="constant:7:labelled",
                                                 target=str(folders / "mnist_m")))
    assert source.shape == target.shape == (28, 28, 3)  # colour wins, judged on each domain
    assert source.title == "constant" and (source.train == 7).all()
    with pytest.raises(UserError, match=r"--source constant:7:unlabelled has no labels"):
        load_run_domains(config_for(data_dir, source="constant:7:unlabelled",
                                    target=str(folders / "mnist_m")))


def test_a_paper_column_keeps_its_size_and_small_resnet_takes_any(tmp_path, capsys):
    """--network gtsrb on 64x64 images trains at the 40x40 the paper used (said at start);
    --input-shape overrides; the default mnist takes them at 28x28; small_resnet as they are."""
    from config.config import DANNConfig
    from utils.data.domains import fill_config

    sizes = {name: [(64, 64)] * 4 for name in ("a", "b")}
    source = image_folder(tmp_path / "source", sizes)
    target = image_folder(tmp_path / "target", sizes, seed=1)

    def filled(**fields):
        config = DANNConfig(source=source, target=target, **fields)
        return fill_config(config, *load_run_domains(config))

    config = filled(network="gtsrb")
    assert config.input_shape == (40, 40, 3)
    assert ("network gtsrb takes 40x40 images, the size the paper trained it on: the 64x64 "
            "images are resized (--input-shape 64,64,3 keeps them)") in capsys.readouterr().out
    assert filled(network="gtsrb", input_shape=(64, 64, 3)).input_shape == (64, 64, 3)
    default = filled()
    assert (default.network, default.input_shape) == ("mnist", (28, 28, 3))
    capsys.readouterr()
    resnet = filled(network="small_resnet")
    assert resnet.input_shape == (64, 64, 3) and "resized" not in capsys.readouterr().out
