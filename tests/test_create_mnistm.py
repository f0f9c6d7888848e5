import os
import pickle

import numpy as np
import pytest

import create_mnistm
from tests.conftest import SHARED_DATA, write_builder_inputs


def test_pixel_rule_on_hand_made_digit_and_background():
    digit = np.zeros((1, 28, 28), np.uint8)
    digit[0, 10:18, 12:16] = 7  # any non-zero grey level counts as stroke
    background = np.arange(30 * 30 * 3, dtype=np.int64).reshape(30, 30, 3) % 251
    background = background.astype(np.uint8)
    out = create_mnistm.blend_digits(digit, [background], np.random.default_rng(3))
    # Recover the crop the builder chose: it is one of the 3x3 possible corners.
    matches = [(r, c) for r in range(3) for c in range(3)
               if np.array_equal(out[0][digit[0] == 0], background[r:r + 28, c:c + 28][digit[0] == 0])]
    assert len(matches) == 1
    r, c = matches[0]
    crop = background[r:r + 28, c:c + 28].astype(np.int16)
    expected = np.abs(crop - np.where(digit[0] > 0, 255, 0)[..., None]).astype(np.uint8)
    np.testing.assert_array_equal(out[0], expected)
    np.testing.assert_array_equal(out[0][10:18, 12:16], 255 - background[r + 10:r + 18, c + 12:c + 16])


def test_build_writes_original_layout_and_is_byte_identical(tmp_path):
    mnist_path, bsds_path = write_builder_inputs(tmp_path)
    outputs = []
    for run in ("a", "b"):
        out_dir = tmp_path / run
        create_mnistm.main(["--mnist-path", mnist_path, "--bsds-path", bsds_path,
                            "--out-dir", str(out_dir), "--seed", "5"])
        outputs.append([(out_dir / sub).read_bytes()
                        for sub in ("MNIST/mnist_data.pkl", "MNIST_M/mnist_m_data.pkl")])
    assert outputs[0] == outputs[1]
    mnist_m = pickle.loads(outputs[0][1])
    assert sorted(mnist_m) == ["train", "train_label", "val", "val_label"]
    assert mnist_m["train"].shape == (50, 28, 28, 3) and mnist_m["train"].dtype == np.uint8
    assert mnist_m["val"].shape == (20, 28, 28, 3)
    mnist = pickle.loads(outputs[0][0])
    np.testing.assert_array_equal(mnist["train"][..., 0], mnist["train"][..., 2])
    create_mnistm.main(["--mnist-path", mnist_path, "--bsds-path", bsds_path,
                        "--out-dir", str(tmp_path / "c"), "--seed", "6"])
    assert (tmp_path / "c" / "MNIST_M/mnist_m_data.pkl").read_bytes() != outputs[0][1]


@pytest.mark.skipif(not os.path.exists(os.path.join(SHARED_DATA, "mnist.npz")),
                    reason="needs ../shared/data")
def test_full_build_from_shared_data(tmp_path):
    create_mnistm.main(["--mnist-path", os.path.join(SHARED_DATA, "mnist.npz"),
                        "--bsds-path", os.path.join(SHARED_DATA, "BSR_bsds500.tgz"),
                        "--out-dir", str(tmp_path)])
    with open(tmp_path / "MNIST_M/mnist_m_data.pkl", "rb") as handle:
        mnist_m = pickle.load(handle)
    assert mnist_m["train"].shape == (60000, 28, 28, 3)
    assert mnist_m["val"].shape == (10000, 28, 28, 3)
    assert mnist_m["train"].dtype == np.uint8
    assert set(np.unique(mnist_m["train_label"])) == set(range(10))
