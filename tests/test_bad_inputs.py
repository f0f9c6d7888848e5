"""Every bad input to the two entry points ends in one line on stderr and a non-zero exit.

Each case runs the real script in a subprocess, with every path under tmp
folders and explicit data paths, so nothing is ever downloaded.
"""
import os
import pathlib
import pickle
import shutil

import pytest

from config.config import DANNConfig
from tests.conftest import BSDS_TRAIN_FOLDER, assert_one_line_failure, code_running_pickle, \
    run_script, write_builder_inputs, write_tar
from utils.data import MNIST_M_PICKLE, MNIST_PICKLE

TRAIN_SCRIPT = "train_MNIST2MNIST_M.py"
BUILDER_SCRIPT = "create_mnistm.py"
REBUILD_HINT = "python create_mnistm.py"


def flags(values):
    """{"--flag": value} as an argv list; a value of None drops the flag."""
    return [part for flag, value in values.items() if value is not None
            for part in (flag, value)]


def write_corrupted_copy(source, target, corrupt):
    with open(source, "rb") as handle:
        data = handle.read()
    with open(target, "wb") as handle:
        handle.write(corrupt(data))
    return target


def cut_in_half(data):
    return data[:len(data) // 2]


def drop_last_byte(data):
    return data[:-1]


def flip_middle_byte(data):
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]


@pytest.fixture(scope="module")
def builder_inputs(tmp_path_factory):
    """(folder, {"--mnist-path": valid mnist.npz, "--bsds-path": valid BSDS .tgz})."""
    folder = tmp_path_factory.mktemp("builder_inputs")
    mnist_path, bsds_path = write_builder_inputs(folder)
    (folder / "a_file").write_text("a regular file, so nothing can be created below it")
    return folder, {"--mnist-path": mnist_path, "--bsds-path": bsds_path}


def corrupted(flag, corrupt):
    """A case's flags: `flag` pointing at a copy of its valid input passed through `corrupt`."""
    def make_flags(folder, valid):
        source = valid[flag]
        target = folder / f"{corrupt.__name__}-{os.path.basename(source)}"
        return {flag: write_corrupted_copy(source, target, corrupt)}
    return make_flags


# name: (flags replacing the valid ones, given (folder, valid flags), expected message)
BUILDER_CASES = {
    "missing mnist.npz": (lambda folder, valid: {"--mnist-path": folder / "missing.npz"},
                          "MNIST not found at"),
    "missing BSDS archive": (lambda folder, valid: {"--bsds-path": folder / "missing.tgz"},
                             "BSDS500 archive not found at"),
    "tgz cut in half": (corrupted("--bsds-path", cut_in_half),
                        "is not a readable BSDS500 archive"),
    "tgz missing its last byte": (corrupted("--bsds-path", drop_last_byte),
                                  "is not a readable BSDS500 archive"),
    "tgz with one flipped byte": (corrupted("--bsds-path", flip_middle_byte),
                                  "is not a readable BSDS500 archive"),
    "npz cut in half": (corrupted("--mnist-path", cut_in_half), "is not a readable mnist.npz"),
    "npz with one flipped byte": (corrupted("--mnist-path", flip_middle_byte),
                                  "is not a readable mnist.npz"),
    "BSDS archive without training images": (
        lambda folder, valid: {"--bsds-path": write_tar(
            folder / "no_train.tgz", {BSDS_TRAIN_FOLDER.replace("train", "test") + "1.jpg": b"x",
                                      "BSR/README": b"readme"})},
        "holds no training images"),
    "out-dir below a regular file": (lambda folder, valid: {"--out-dir": folder / "a_file" / "out"},
                                     "cannot create output folder"),
    "unknown flag": (lambda folder, valid: {"--colour": "blue"},
                     "unrecognized arguments: --colour blue"),
    # numpy would answer with advice about allow_pickle, a remedy for another problem.
    "tgz passed as mnist.npz": (lambda folder, valid: {"--mnist-path": valid["--bsds-path"]},
                                "is not an npz file: it is a gzip file"),
    "prefix of a flag": (lambda folder, valid: {"--se": 5}, "unrecognized arguments: --se 5"),
}


@pytest.mark.parametrize("case", BUILDER_CASES)
def test_builder_rejects_bad_input_in_one_line(case, builder_inputs, tmp_path):
    folder, valid = builder_inputs
    make_flags, expected = BUILDER_CASES[case]
    values = dict(valid, **{"--out-dir": tmp_path / "out"})
    values.update(make_flags(folder, valid))
    message = assert_one_line_failure(run_script(BUILDER_SCRIPT, *flags(values)), expected)
    assert "allow_pickle" not in message
    assert not list(tmp_path.rglob("*.pkl")), "a failed build wrote a pickle"
    # nor empty MNIST/ and MNIST_M/ folders, which would later be taken for data.
    assert not (tmp_path / "out").exists(), list((tmp_path / "out").rglob("*"))


def tiny_run_flags(data_dir, output_root, overrides=()):
    """Flags of a two-step training run, with `overrides` ({"--flag": value}) replacing them."""
    values = {"--data-dir": data_dir, "--output-root": output_root, "--run-name": "bad",
              "--epochs": 1, "--steps-per-epoch": 2, "--batch-size": 8, "--eval-batch-size": 16,
              "--target-val-size": 32}
    values.update(overrides)
    return flags(values) + ["--no-progress"]


# name: (flags replacing the valid ones, expected message)
TRAIN_CASES = {
    "learning rate 0": ({"--learning-rate": 0}, "learning_rate must be positive, got 0.0"),
    "negative learning rate": ({"--learning-rate": -0.01}, "learning_rate must be positive"),
    "non-numeric learning rate": ({"--learning-rate": "fast"}, "invalid float value: 'fast'"),
    "batch size 0": ({"--batch-size": 0}, "batch_size must be positive, got 0"),
    "negative batch size": ({"--batch-size": -8}, "batch_size must be positive, got -8"),
    "odd batch size": ({"--batch-size": 7}, "batch_size must be even"),
    # Without --steps-per-epoch the default is derived from the batch size.
    "batch size 1 with default steps": ({"--batch-size": 1, "--steps-per-epoch": None},
                                        "batch_size must be even"),
    "epochs 0": ({"--epochs": 0}, "epochs must be positive, got 0"),
    "steps per epoch 0": ({"--steps-per-epoch": 0}, "steps_per_epoch must be positive, got 0"),
    "unknown mode": ({"--mode": "adversarial"}, "unknown mode 'adversarial'"),
    "VAT starting at the end": ({"--vat-start": 1.0}, "vat_start must be in [0, 1), got 1.0"),
    "VAT radius 0": ({"--vat-radius": 0}, "vat_radius must be positive, got 0.0"),
    "unknown flag": ({"--colour": "blue"}, "unrecognized arguments: --colour blue"),
    # argparse would read a prefix as the flag it starts (--see 5 as --seed 5).
    "prefix of a flag": ({"--see": 5}, "unrecognized arguments: --see 5"),
    "non-numeric steps per epoch": ({"--steps-per-epoch": "many"},
                                    "expected an integer or none, got 'many'"),
    # Run folders must stay inside the output root.
    "run name with ..": ({"--run-name": "../escaped"}, "must stay inside the output root"),
    "absolute run name": ({"--run-name": "/tmp/escaped"}, "must stay inside the output root"),
    # The flag, not the pickle, is the likelier mistake: the hint names the flag.
    "input shape unlike the pickles": ({"--input-shape": "32,32,3"},
                                       "the pickles hold 28x28x3 images but --input-shape is "
                                       "32,32,3; pass --input-shape 28,28,3 or rebuild"),
}


@pytest.mark.parametrize("case", TRAIN_CASES)
def test_train_script_rejects_bad_config_in_one_line(case, data_dir, tmp_path):
    overrides, expected = TRAIN_CASES[case]
    completed = run_script(TRAIN_SCRIPT, *tiny_run_flags(data_dir, tmp_path / "out", overrides))
    assert_one_line_failure(completed, expected)
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_train_script_rejects_output_root_below_a_file(data_dir, tmp_path):
    # Permission bits do not stop root; a regular file as parent stops everyone.
    (tmp_path / "a_file").write_text("")
    completed = run_script(TRAIN_SCRIPT, *tiny_run_flags(data_dir, tmp_path / "a_file" / "out"))
    assert_one_line_failure(completed, "cannot create output folder", "a_file")


def test_train_script_reports_missing_pickle(data_dir, tmp_path):
    # With both pickles missing the script builds them (tests/test_first_hour.py); with
    # one missing the folder is damaged, and the missing file is named.
    folder = tmp_path / "data"
    os.makedirs(folder / os.path.dirname(MNIST_M_PICKLE))
    shutil.copy(os.path.join(data_dir, MNIST_M_PICKLE), folder / MNIST_M_PICKLE)
    completed = run_script(TRAIN_SCRIPT, *tiny_run_flags(folder, tmp_path / "out"))
    assert_one_line_failure(completed, "dataset pickle not found", MNIST_PICKLE, REBUILD_HINT)


def data_dir_with_mnist_pickle(tmp_path, data_dir, pickle_bytes):
    """A copy of `data_dir` whose MNIST pickle is `pickle_bytes`."""
    folder = tmp_path / "data"
    os.makedirs(folder / os.path.dirname(MNIST_PICKLE))
    os.makedirs(folder / os.path.dirname(MNIST_M_PICKLE))
    shutil.copy(os.path.join(data_dir, MNIST_M_PICKLE), folder / MNIST_M_PICKLE)
    (folder / MNIST_PICKLE).write_bytes(pickle_bytes)
    return folder


def edited_mnist_pickle(data_dir, edit):
    """The bytes of the fixture's MNIST pickle after `edit(dataset_dict)`."""
    with open(os.path.join(data_dir, MNIST_PICKLE), "rb") as handle:
        dataset = pickle.load(handle)  # our own fixture, so a plain load is safe
    edit(dataset)
    return pickle.dumps(dataset, protocol=4)


def _make_grey(dataset):
    dataset["train"] = dataset["train"][..., 0]


def _make_float(dataset):
    dataset["train"] = dataset["train"].astype("float32")


def _add_label_ten(dataset):
    dataset["train_label"][0] = 10


# name: (pickle bytes given the fixture's data_dir, expected message)
PICKLE_CASES = {
    "grey images": (lambda data_dir: edited_mnist_pickle(data_dir, _make_grey),
                    "train must have shape Nx28x28x3, found (256, 28, 28)"),
    "float images": (lambda data_dir: edited_mnist_pickle(data_dir, _make_float),
                     "train must be a uint8 array, found float32"),
    # Well-formed labels beyond --num-classes: the hint is the flag, not a rebuild.
    "label out of range": (lambda data_dir: edited_mnist_pickle(data_dir, _add_label_ten),
                           "train_label has values up to 10, outside 0..9; pass --num-classes 11"),
    "truncated pickle": (lambda data_dir: cut_in_half(
        pathlib.Path(data_dir, MNIST_PICKLE).read_bytes()), "is corrupt or truncated"),
}


@pytest.mark.parametrize("case", PICKLE_CASES)
def test_train_script_rejects_invalid_pickle_with_rebuild_hint(case, data_dir, tmp_path):
    make_bytes, expected = PICKLE_CASES[case]
    bad_data = data_dir_with_mnist_pickle(tmp_path, data_dir, make_bytes(data_dir))
    completed = run_script(TRAIN_SCRIPT, *tiny_run_flags(bad_data, tmp_path / "out"))
    message = assert_one_line_failure(completed, expected)
    # The hint names the real folder, never a placeholder.
    rebuild = f"{REBUILD_HINT} --out-dir {os.path.abspath(bad_data)}`"
    assert (rebuild in message) == (case != "label out of range"), message
    assert "<data-dir>" not in message


def test_train_script_refuses_pickle_that_would_run_code(data_dir, tmp_path):
    marker = tmp_path / "payload_ran"
    bad_data = data_dir_with_mnist_pickle(tmp_path, data_dir, code_running_pickle(marker))
    completed = run_script(TRAIN_SCRIPT, *tiny_run_flags(bad_data, tmp_path / "out"))
    assert_one_line_failure(completed, "is not a plain dataset pickle", "builtins.exec",
                            REBUILD_HINT)
    assert not marker.exists()


def _save_config_with_unknown_key(config_folder, data_dir):
    DANNConfig(run_name="bad", data_dir=str(data_dir)).save(config_folder)
    config_json = config_folder / "config.json"
    config_json.write_text(config_json.read_text().replace('"epochs"', '"colour": 1, "epochs"'))


# name: (edit the saved config folder, extra flags on --resume, expected message)
RESUME_CASES = {
    "changed flag": (lambda folder, data_dir: DANNConfig(run_name="bad",
                                                         data_dir=str(data_dir)).save(folder),
                     ["--learning-rate", "0.5"], "cannot change learning_rate"),
    "unknown key in saved config": (_save_config_with_unknown_key, [], "unknown keys ['colour']"),
}


@pytest.mark.parametrize("case", RESUME_CASES)
def test_resume_rejects_mismatched_config_in_one_line(case, data_dir, tmp_path):
    write_config, extra_flags, expected = RESUME_CASES[case]
    config_folder = tmp_path / "config" / "bad"
    config_folder.mkdir(parents=True)
    write_config(config_folder, data_dir)
    completed = run_script(TRAIN_SCRIPT, "--resume", "--run-name", "bad",
                           "--output-root", tmp_path, *extra_flags)
    assert_one_line_failure(completed, expected)
