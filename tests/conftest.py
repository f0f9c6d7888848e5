"""Shared fixtures: tiny synthetic MNIST / MNIST-M pickles, so no test needs a download."""
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import utils  # noqa: E402,F401  (sets the TensorFlow environment before TF is imported)

SHARED_DATA = os.path.join(ROOT, "..", "shared", "data")


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
