"""Shared fixtures: tiny synthetic MNIST / MNIST-M pickles, so no test needs a download."""
import io
import os
import pickle
import subprocess
import sys
import tarfile

import cv2
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import utils  # noqa: E402,F401  (sets the TensorFlow environment before TF is imported)

SHARED_DATA = os.path.join(ROOT, "..", "shared", "data")
BSDS_TRAIN_FOLDER = "BSR/BSDS500/data/images/train/"
# The synthetic MNIST-M train set is small: hold out this many images, not 1,000.
SMALL_VAL_SIZE = 32
# TensorFlow's native logger writes these to stderr before absl is set up, whatever
# TF_CPP_MIN_LOG_LEVEL says (e.g. "I0000 00:00:17... port.cc:153] oneDNN ...").
_TF_NATIVE_LOG_PREFIXES = ("WARNING: All log messages before absl::InitializeLog()",)
_TF_NATIVE_LOG_LINE = ("I0000 ", "W0000 ", "E0000 ")


def synthetic_mnist(num_train=256, num_test=64, seed=0):
    """Keras-layout arrays of crude digit-like images: a bright bar whose row is the label."""
    rng = np.random.default_rng(seed)

    def split(n):
        labels = rng.integers(10, size=n).astype(np.uint8)
        images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
        images[images < 40] = 0
        for i, label in enumerate(labels):
            images[i, 4 + 2 * label: 6 + 2 * label, 4:24] = 255
        return images, labels

    (x_train, y_train), (x_test, y_test) = split(num_train), split(num_test)
    return x_train, y_train, x_test, y_test


def synthetic_backgrounds(count=3, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(40 + 7 * i, 50 + 5 * i, 3), dtype=np.uint8) for i in range(count)]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A data folder with MNIST/mnist_data.pkl and MNIST_M/mnist_m_data.pkl, built by our builder."""
    import create_mnistm
    from utils.data import MNIST_M_PICKLE, MNIST_PICKLE
    from utils.io import atomic_write_pickle

    folder = tmp_path_factory.mktemp("dataset")
    mnist, mnist_m = create_mnistm.build(synthetic_mnist(), synthetic_backgrounds(), seed=0)
    atomic_write_pickle(os.path.join(folder, MNIST_PICKLE), mnist)
    atomic_write_pickle(os.path.join(folder, MNIST_M_PICKLE), mnist_m)
    return str(folder)


def write_tar(path, members):
    """A .tgz holding {name: bytes}."""
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return str(path)


def write_builder_inputs(folder):
    """A small mnist.npz and a BSDS500-layout .tgz (3 JPEGs and a non-image) in `folder`."""
    x_train, y_train, x_test, y_test = synthetic_mnist(num_train=50, num_test=20)
    mnist_path = os.path.join(folder, "mnist.npz")
    np.savez(mnist_path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    members = {f"{BSDS_TRAIN_FOLDER}{i}.jpg": cv2.imencode(".jpg", image)[1].tobytes()
               for i, image in enumerate(synthetic_backgrounds())}
    members["BSR/README"] = b"not an image"
    return mnist_path, write_tar(os.path.join(folder, "BSR_bsds500.tgz"), members)


def run_script(script, *args, timeout=120):
    """Runs `python <script> <args>` from the repository root; returns the CompletedProcess."""
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def script_messages(stderr):
    """The script's own stderr lines, without TensorFlow's native start-up log."""
    return [line for line in stderr.splitlines()
            if line.strip() and not line.startswith(_TF_NATIVE_LOG_PREFIXES)
            and not line.startswith(_TF_NATIVE_LOG_LINE)]


def assert_one_line_failure(completed, *expected_fragments):
    """A clean failure: non-zero exit, no traceback, and one stderr line naming the problem."""
    assert "Traceback" not in completed.stderr + completed.stdout, completed.stderr[-3000:]
    assert completed.returncode != 0, completed.stdout[-2000:]
    messages = script_messages(completed.stderr)
    assert len(messages) == 1, completed.stderr[-3000:]
    for fragment in expected_fragments:
        assert fragment in messages[0], messages[0]
    return messages[0]


class _WritesMarker:
    """Unpickling this calls exec(...), which creates `marker`: code smuggled in a pickle."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('payload ran')",)


def code_running_pickle(marker):
    """Bytes of a dataset-shaped pickle whose loading would create the file `marker`."""
    return pickle.dumps({"train": _WritesMarker(marker), "train_label": [0]}, protocol=4)


@pytest.fixture(scope="session")
def smoke_runs(data_dir, tmp_path_factory):
    """An output root with two finished 2-step runs on the synthetic data, named after
    their modes: `source_only` and `dann`. Shared by the analysis-tool tests."""
    import train_MNIST2MNIST_M

    root = str(tmp_path_factory.mktemp("runs"))
    for mode in ("source_only", "dann"):
        train_MNIST2MNIST_M.main(["--mode", mode, "--epochs", "1", "--steps-per-epoch", "2",
                                  "--batch-size", "8", "--eval-batch-size", "16",
                                  "--target-val-size", str(SMALL_VAL_SIZE),
                                  "--data-dir", data_dir, "--output-root", root,
                                  "--run-name", mode, "--no-progress"])
    return root


def png_size(path):
    """(width, height) from a PNG's header; fails unless `path` is a PNG file."""
    with open(path, "rb") as handle:
        header = handle.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR", f"{path} is not a PNG"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
