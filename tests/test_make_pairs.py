"""utils.make_pairs: the suite of domain pairs, on tiny synthetic MNIST and BSDS500 stand-ins."""
import hashlib
import json
import os
import subprocess
import sys

import cv2
import pytest

from tests.conftest import ROOT, write_builder_inputs
from utils import make_pairs
from utils.io import run_main

SMALL = ["shapes-grey-48", "digits-easy-32"]


def make(argv):
    """main(argv) as the command runs it: a UserError is one line on stderr and exit 2."""
    return run_main(lambda: make_pairs.main(argv))


def images_below(folder):
    return sorted(os.path.join(root, name) for root, _, names in os.walk(folder)
                  for name in names if name.endswith(".png"))


def digest(folder):
    """One hash of every file's relative path and bytes below `folder`."""
    hashed = hashlib.sha256()
    for root, dirs, names in sorted(os.walk(folder)):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(root, name)
            hashed.update(os.path.relpath(path, folder).encode())
            with open(path, "rb") as handle:
                hashed.update(handle.read())
    return hashed.hexdigest()


def manifest(out):
    with open(os.path.join(out, "pairs.json")) as handle:
        return {entry["name"]: entry for entry in json.load(handle)["pairs"]}


def test_layout_counts_manifest_and_commands(tmp_path, capsys):
    out = str(tmp_path / "suite")
    make(["--out", out, "--pairs", *SMALL])
    printed = capsys.readouterr().out
    pairs = manifest(out)
    assert sorted(pairs) == sorted(SMALL + ["mnist-mnist_m"])
    assert pairs["mnist-mnist_m"]["flags"] == ["--source", "mnist", "--target", "mnist_m"]
    assert not os.path.exists(os.path.join(out, "mnist-mnist_m"))
    for name in SMALL:
        entry = pairs[name]
        assert entry["flags"] == ["--source", f"{name}/source", "--target", f"{name}/target"]
        height, width, channels = entry["input_shape"]
        for domain in ("source", "target"):
            for split in ("train", "test"):
                folder = os.path.join(out, name, domain, split)
                # One class folder per class, named as the manifest says.
                assert sorted(os.listdir(folder)) == sorted(entry["classes"])
                files = images_below(folder)
                assert len(files) == entry["counts"][f"{domain}_{split}"]
                image = cv2.imread(files[0], cv2.IMREAD_UNCHANGED)
                assert image.shape[:2] == (height, width) and image.ndim == 2  # grey
        assert entry["images"] == sum(entry["counts"].values())
        assert f"python train_MNIST2MNIST_M.py --source {out}/{name}/source" in printed
    assert pairs["shapes-grey-48"]["images"] == 600
    assert len(pairs["shapes-grey-48"]["classes"]) == 4
    assert pairs["digits-easy-32"]["classes"] == [str(d) for d in range(10)]
    assert pairs["digits-easy-32"]["images"] == 1797  # every scikit-learn digit, once
    assert f"wrote 2 pairs and pairs.json to {out}" in printed


def test_same_seed_same_bytes_whatever_else_is_written(tmp_path):
    make(["--out", str(tmp_path / "a"), "--pairs", "shapes-grey-48", "--seed", "3"])
    make(["--out", str(tmp_path / "b"), "--pairs", *SMALL, "--seed", "3"])
    make(["--out", str(tmp_path / "c"), "--pairs", "shapes-grey-48", "--seed", "4"])
    first = digest(tmp_path / "a" / "shapes-grey-48")
    assert first == digest(tmp_path / "b" / "shapes-grey-48")
    assert first != digest(tmp_path / "c" / "shapes-grey-48")
    # Written again over itself: the same suite, byte for byte, manifest included.
    whole = digest(tmp_path / "a")
    make(["--out", str(tmp_path / "a"), "--pairs", "shapes-grey-48", "--seed", "3"])
    assert digest(tmp_path / "a") == whole


def test_unlabelled_target_and_pairs_from_mnist_and_bsds(tmp_path, capsys):
    mnist_path, bsds_path = write_builder_inputs(tmp_path)  # 50 + 20 digits, 3 small photos
    out = str(tmp_path / "suite")
    make(["--out", out, "--mnist-path", mnist_path, "--bsds-path", bsds_path,
          "--pairs", "shapes-photo-128", "digits-mnist-28", "mnist-polarity-32"])
    pairs = manifest(out)
    photo = pairs["shapes-photo-128"]
    assert not photo["target_labelled"] and photo["colour"]
    assert photo["flags"][-2:] == ["--target-test", "shapes-photo-128/target_test"]
    target = os.path.join(out, "shapes-photo-128", "target")
    # An unlabelled target is one flat folder of images; its labelled test set beside it.
    assert all(name.endswith(".png") for name in os.listdir(target))
    assert len(os.listdir(target)) == photo["counts"]["target_train"] == 400
    test = os.path.join(out, "shapes-photo-128", "target_test")
    assert sorted(os.listdir(test)) == sorted(photo["classes"]) and len(photo["classes"]) == 5
    assert len(images_below(test)) == photo["counts"]["target_test"] == 100
    assert cv2.imread(images_below(test)[0], cv2.IMREAD_UNCHANGED).shape == (128, 128, 3)
    # The MNIST pairs take what the file holds: half of each split a domain.
    polarity = pairs["mnist-polarity-32"]
    assert polarity["counts"] == {"source_train": 25, "source_test": 10,
                                  "target_train": 25, "target_test": 10}
    assert polarity["input_shape"] == [32, 32, 3]
    assert pairs["digits-mnist-28"]["counts"]["target_train"] == 50
    assert "skipped" not in capsys.readouterr().out


def test_pairs_without_their_data_are_skipped_unless_named(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no model_data/dataset here
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.keras/datasets/mnist.npz
    monkeypatch.setattr(make_pairs, "PAIRS", {name: make_pairs.PAIRS[name]
                                              for name in ("shapes-grey-48", "digits-mnist-28")})
    make(["--out", "suite"])
    printed = capsys.readouterr().out
    assert "skipped digits-mnist-28: MNIST not found" in printed and "--mnist-path" in printed
    assert sorted(manifest("suite")) == ["mnist-mnist_m", "shapes-grey-48"]
    with pytest.raises(SystemExit) as stop:
        make(["--out", "other", "--pairs", "digits-mnist-28"])
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: digits-mnist-28 needs MNIST") and error.count("\n") == 1
    assert not os.path.exists("other")


@pytest.mark.parametrize("argv, message", [
    (["--pairs", "shapes-9"], "unknown pair shapes-9; the pairs are shapes-28"),
    (["--seed", "-1"], "--seed must be 0 or more"),
    (["--pairs", "shapes-grey-48", "--bsds-path", "missing.tgz"], "--bsds-path missing.tgz: no such"),
    (["--pairs", "digits-mnist-28", "--mnist-path", "not.npz"], "is not an npz file"),
    (["--out", "a_file"], "--out a_file is a file"),
    (["--out", "someone_elses"], "--out someone_elses is a folder that holds no pairs.json"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, capsys, argv,
                                                         message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("mine")
    (tmp_path / "not.npz").write_bytes(b"\x1f\x8b not an npz")
    (tmp_path / "someone_elses").mkdir()
    (tmp_path / "someone_elses" / "notes.txt").write_text("keep me")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(SystemExit) as stop:
        make(argv if "--out" in argv else ["--out", "suite", *argv])
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error and error.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == before
    assert (tmp_path / "someone_elses" / "notes.txt").read_text() == "keep me"


def test_a_failure_midway_leaves_the_earlier_suite_whole(tmp_path, monkeypatch):
    out = str(tmp_path / "suite")
    make(["--out", out, "--pairs", "shapes-grey-48"])
    before = digest(out)

    def broken(rng, inputs):
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(make_pairs.PAIRS, "digits-easy-32",
                        make_pairs.Pair("digits-easy-32", "", "easy", (), broken))
    with pytest.raises(SystemExit):
        make(["--out", out, "--pairs", "shapes-grey-48", "digits-easy-32"])
    assert digest(out) == before
    assert os.listdir(tmp_path) == ["suite"]  # no temporary folder left behind


def test_command_line_entry_point(tmp_path):
    done = subprocess.run([sys.executable, "-m", "utils.make_pairs", "--out", str(tmp_path / "s"),
                           "--pairs", "nope"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: unknown pair nope")
    assert not (tmp_path / "s").exists()


@pytest.mark.slow  # seven short trainings, about a minute
def test_pair_table_trains_each_row_records_it_and_continues(tmp_path, capsys):
    from utils import pair_table

    suite, root = str(tmp_path / "suite"), str(tmp_path / "runs")
    make(["--out", suite, "--pairs", "shapes-grey-48"])
    tiny = ["--epochs", "1", "--steps-per-epoch", "3", "--batch-size", "8",
            "--eval-batch-size", "16"]
    argv = ["--suite", suite, "--output-root", root, "--seeds", "2", "--pairs", "shapes-grey-48",
            *tiny]
    run_main(lambda: pair_table.main(argv))
    with open(os.path.join(root, "logs", "pair_table", "pair_table.json")) as handle:
        records = json.load(handle)
    assert [(r["row"], r["seed"]) for r in records] == [
        ("source_only", 0), ("source_only", 1), ("dann", 0), ("dann", 1), ("improved", 0),
        ("improved", 1), ("target_only", 0)]
    assert all(r["state"] == "finished" and 0 <= r["target_accuracy"] <= 1
               and r["disk_bytes"] > 0 and r["ms_per_step"] > 0 for r in records)
    table = open(os.path.join(root, "logs", "pair_table", "pair_table.md")).read()
    assert "| shapes-grey-48 | 48x48 grey, 4 classes" in table and "| 0 / 0 |" in table
    assert "mnist-mnist_m (recorded: docs/results.md)" in table
    capsys.readouterr()
    # Run again: every run is recorded, nothing is trained.
    run_main(lambda: pair_table.main(argv))
    assert "seed 0 ..." not in capsys.readouterr().out
    with pytest.raises(SystemExit):
        run_main(lambda: pair_table.main(argv + ["--seed", "3"]))
    assert "--seed is set per run by this tool" in capsys.readouterr().err
