"""utils.predict and utils.export: classify files, and a SavedModel that agrees."""
import csv
import os

import numpy as np
import pytest

import train_MNIST2MNIST_M
from tests.conftest import SMALL_VAL_SIZE
from utils import export, predict
from utils.io import UserError


@pytest.fixture(scope="module")
def folder_run(data_dir, tmp_path_factory):
    """A 4-step DANN run trained on the synthetic domains written as image folders."""
    from utils import export_folders

    root = tmp_path_factory.mktemp("predict")
    export_folders.main(["--data-dir", data_dir, "--out", str(root / "folders")])
    train_MNIST2MNIST_M.main(["--source", str(root / "folders" / "mnist"), "--target",
                              str(root / "folders" / "mnist_m"), "--output-root", str(root),
                              "--run-name", "run", "--epochs", "1", "--steps-per-epoch", "4",
                              "--batch-size", "8", "--eval-batch-size", "16",
                              "--target-val-size", str(SMALL_VAL_SIZE), "--no-progress"])
    return root


def test_predict_prints_one_line_per_image_and_writes_a_csv(folder_run, capsys):
    folder = folder_run / "folders" / "mnist_m" / "test" / "7"
    (folder / "notes.txt").write_text("not an image")
    out = folder_run / "predictions.csv"
    predict.main(["--run", "run", str(folder), "--output-root", str(folder_run), "--out", str(out)])
    printed = capsys.readouterr().out.splitlines()
    images = sorted(name for name in os.listdir(folder) if name.endswith(".png"))
    assert printed[0].startswith("skipped 1 file that is not an image")
    lines = [line.split("\t") for line in printed[1:-1]]
    assert [os.path.basename(path) for path, _, _ in lines] == images
    assert all(name in [str(d) for d in range(10)] and 0.1 <= float(p) <= 1 for _, name, p in lines)
    rows = list(csv.DictReader(open(out)))
    assert [row["path"] for row in rows] == [path for path, _, _ in lines]
    with pytest.raises(UserError, match="no such file or folder"):
        predict.main(["--run", "run", str(folder_run / "missing.png"), "--output-root",
                      str(folder_run)])


def test_exported_savedmodel_gives_the_probabilities_of_predict(folder_run, capsys):
    import tensorflow as tf

    out = folder_run / "exported"
    export.main(["--run", "run", "--out", str(out), "--output-root", str(folder_run)])
    assert "wrote the SavedModel" in capsys.readouterr().out
    assert (out / "class_names.txt").read_text().split() == [str(d) for d in range(10)]
    folder = folder_run / "folders" / "mnist_m" / "test" / "3"
    paths = sorted(str(folder / name) for name in os.listdir(folder))[:5]
    from utils.runs import find_run

    _, expected = predict.predict_files(find_run("run", str(folder_run)), paths)
    from utils.data.files import decode_files

    images = decode_files(paths, (28, 28, 3), True, "PATH")
    loaded = tf.saved_model.load(str(out))  # no code of this repository is needed
    np.testing.assert_allclose(loaded.serve(tf.constant(images)).numpy(), expected, atol=1e-6)
    served = loaded.signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_allclose(list(served.values())[0].numpy(), expected, atol=1e-6)
    with pytest.raises(UserError, match="exists; pass --overwrite"):
        export.main(["--run", "run", "--out", str(out), "--output-root", str(folder_run)])
