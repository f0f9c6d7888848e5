"""A newcomer's first hour: the README's quick start comes first and runs CI's commands (in
English and Chinese alike), one command trains from the raw inputs, a finished run is never
overwritten, run folders stay inside the output root, the BSDS500 mirror's .zip is found
again, image/samples.png is drawn, and a CPU run prints no CUDA noise."""
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import create_mnistm
from config.config import DANNConfig
from tests.conftest import ROOT, assert_one_line_failure, png_size, run_script, \
    write_builder_inputs
from tests.test_docs import code_blocks, read, section, shell_commands
from utils import samples
from utils.data import MNIST_M_PICKLE, MNIST_PICKLE, load_mnist_and_mnistm

TRAIN_SCRIPT = "train_MNIST2MNIST_M.py"
# The lines a CPU-only machine printed on every command before utils/__init__.py filtered
# TensorFlow's start-up notices.
NOISE = ("cuInit", "CUDA error", "absl::InitializeLog", "Could not find cuda drivers",
         "Traceback")


README = os.path.join(ROOT, "README.md")
# Flags that only change what pip prints, not what it installs.
QUIET_FLAGS = {"--quiet", "-q", "--disable-pip-version-check"}


def essence(words):
    """A python command without its interpreter and pip's output-only flags: the same
    essence is the same command in .ci/run, the Makefile and the README."""
    assert re.search(r"python(3\.11)?$", words[0]), words
    rest = words[1:]
    if rest[:3] == ["-m", "pip", "install"]:
        rest = [word for word in rest if word not in QUIET_FLAGS]
    return " ".join(rest)


def ci_commands():
    return [essence(line.split()) for line in read(os.path.join(ROOT, ".ci", "run")).splitlines()
            if line.startswith("python")]


def make_recipes():
    """{target: [command essence, ...]} of the Makefile's python recipe lines."""
    recipes, target = {}, None
    for line in read(os.path.join(ROOT, "Makefile")).splitlines():
        match = re.match(r"^([^\s:#][^:=]*):(?!=)", line)
        if match:
            target = match.group(1).strip()
        elif line.startswith("\t") and "python" in line.split()[0]:
            recipes.setdefault(target, []).append(essence(line.split()))
    return recipes


def quick_start():
    """The README from its title to the end of the quick start (its first ### subsection)."""
    text = read(README)
    return text[:text.index("### ", text.index("## Quick start"))]


def quick_start_commands(text):
    return [" ".join(command) for _, lines in code_blocks(text)
            for command in shell_commands(lines)]


def test_quick_start_comes_within_the_first_80_lines():
    head = "\n".join(read(README).splitlines()[:80])
    for needed in ("## Quick start", "make train ", "make test ", "--steps-per-epoch 50",
                   "**Where the results go.**", "### What a run writes"):
        assert needed in head, needed


def test_quick_start_runs_the_commands_ci_runs():
    ci, recipes = ci_commands(), make_recipes()
    install, default_suite, slow_suite = ci
    assert install == "-m pip install -r requirements.txt"
    assert default_suite == "-m pytest -q tests" and slow_suite == "-m pytest -q -m slow tests"
    # make train and make test install what CI installs, then run what CI runs.
    assert recipes["$(VENV)/.installed"][-1] == install
    assert recipes["test"] == [default_suite] and recipes["test-slow"] == [slow_suite]
    assert recipes["train"] == ["train_MNIST2MNIST_M.py $(ARGS)"]
    commands = quick_start_commands(quick_start())
    assert commands[:2] == ["make train", "make test"]
    by_hand = [essence(command.split()) for command in commands
               if command.startswith((".venv/bin/python", "python3.11"))]
    assert by_hand == ["-m venv .venv", install, "train_MNIST2MNIST_M.py", default_suite]


def test_chinese_quick_start_has_the_same_times_and_commands():
    english, chinese = quick_start(), section(read(README), "中文快速上手")
    assert quick_start_commands(english) == quick_start_commands(chinese)
    english_minutes = re.findall(r"(\d+(?:\.\d+)?) minutes?\b", english)
    chinese_minutes = re.findall(r"(\d+(?:\.\d+)?) 分钟", chinese)
    assert english_minutes and sorted(english_minutes) == sorted(chinese_minutes)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_without_python_3_11_is_one_line_and_sets_nothing_up(tmp_path):
    completed = subprocess.run(["make", "-C", ROOT, "setup", f"PYTHON={tmp_path / 'python3.11'}",
                                f"VENV={tmp_path / 'venv'}"], capture_output=True, text=True,
                               timeout=60)
    assert completed.returncode != 0
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not found; install Python 3.11" in errors[0], completed.stderr
    assert not (tmp_path / "venv").exists()


def two_step_flags(data_dir, output_root, run_name):
    # write_builder_inputs makes 50 training images: hold out 8, not the default 1000.
    return ["--data-dir", data_dir, "--output-root", output_root, "--run-name", run_name,
            "--epochs", 1, "--steps-per-epoch", 2, "--batch-size", 8, "--eval-batch-size", 16,
            "--target-val-size", 8, "--no-progress"]


@pytest.fixture(scope="module")
def auto_built(tmp_path_factory):
    """A 2-step run whose data folder held no pickles: (tmp folder, inputs, completed process)."""
    folder = tmp_path_factory.mktemp("first_hour")
    inputs = folder / "inputs"
    inputs.mkdir()
    mnist_path, bsds_path = write_builder_inputs(inputs)
    completed = run_script(TRAIN_SCRIPT, *two_step_flags(folder / "data", folder / "out", "first"),
                           "--mnist-path", mnist_path, "--bsds-path", bsds_path, timeout=300)
    return folder, (mnist_path, bsds_path), completed


def test_train_script_builds_missing_pickles_then_trains(auto_built, tmp_path):
    folder, (mnist_path, bsds_path), completed = auto_built
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "building MNIST-M first" in completed.stdout
    assert os.path.exists(folder / "out" / "logs" / "first" / "results.json")
    # The same pickles, byte for byte, as the explicit step with its default seed.
    create_mnistm.main(["--mnist-path", mnist_path, "--bsds-path", bsds_path,
                        "--out-dir", str(tmp_path)])
    for sub in (MNIST_PICKLE, MNIST_M_PICKLE):
        assert (folder / "data" / sub).read_bytes() == (tmp_path / sub).read_bytes()


def test_cpu_run_prints_no_cuda_error_or_traceback(auto_built):
    completed = auto_built[2]
    assert completed.returncode == 0, completed.stderr[-3000:]
    for line in (completed.stdout + completed.stderr).splitlines():
        assert not any(noise in line for noise in NOISE), line


def test_resume_of_a_finished_run_says_so_and_changes_nothing(auto_built):
    folder, _, _ = auto_built
    out = folder / "out"

    def snapshot():
        return {str(path): (path.stat().st_mtime_ns, path.read_bytes())
                for path in sorted(out.rglob("*")) if path.is_file()}

    before = snapshot()
    completed = run_script(TRAIN_SCRIPT, "--resume", "--run-name", "first", "--output-root", out)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "is already finished" in completed.stdout and "results.json" in completed.stdout
    assert snapshot() == before


def test_failed_automatic_build_is_one_line_and_leaves_no_folders(tmp_path):
    completed = run_script(TRAIN_SCRIPT, *two_step_flags(tmp_path / "data", tmp_path / "out", "r"),
                           "--bsds-path", tmp_path / "missing.tgz")
    assert_one_line_failure(completed, "BSDS500 archive not found at", "missing.tgz")
    assert not (tmp_path / "data").exists()


def test_source_flags_are_refused_when_the_pickles_exist(data_dir, tmp_path):
    completed = run_script(TRAIN_SCRIPT, *two_step_flags(data_dir, tmp_path / "out", "r"),
                           "--mnist-path", tmp_path / "mnist.npz")
    assert_one_line_failure(completed, "already holds pickles", "--mnist-path")


def test_resumed_run_never_rebuilds_its_data(data_dir, tmp_path):
    out = tmp_path / "out"
    DANNConfig(run_name="r", data_dir=str(tmp_path / "gone"), target_val_size=8).save(
        out / "config" / "r")
    completed = run_script(TRAIN_SCRIPT, "--resume", "--run-name", "r", "--output-root", out)
    assert_one_line_failure(completed, "dataset pickle not found")
    assert not (tmp_path / "gone").exists()
    completed = run_script(TRAIN_SCRIPT, "--resume", "--run-name", "r", "--output-root", out,
                           "--bsds-path", tmp_path / "BSR_bsds500.tgz")
    assert_one_line_failure(completed, "cannot be used with --resume")


@pytest.mark.parametrize("run_name", ["../escaped", "/tmp/escaped-run", "a/../../escaped"])
def test_resume_refuses_run_names_outside_the_output_root(run_name, tmp_path):
    out = tmp_path / "root" / "out"
    completed = run_script(TRAIN_SCRIPT, "--resume", "--run-name", run_name, "--output-root", out)
    assert_one_line_failure(completed, "must stay inside the output root")
    assert not (tmp_path / "root").exists()


def test_mirror_zip_is_found_without_a_new_download(tmp_path):
    # _download keeps the URL's suffix, so the mirror leaves BSR_bsds500.zip behind.
    (tmp_path / "BSR_bsds500.zip").write_bytes(b"PK")
    assert create_mnistm.resolve_bsds(None, str(tmp_path)) == str(tmp_path / "BSR_bsds500.zip")
    (tmp_path / "BSR_bsds500.tgz").write_bytes(b"")
    assert create_mnistm.resolve_bsds(None, str(tmp_path)) == str(tmp_path / "BSR_bsds500.tgz")


def test_samples_png_shows_the_same_seeded_digits_of_both_domains(data_dir, tmp_path):
    out, indices = samples.write_samples(data_dir, str(tmp_path / "samples.png"), num=12,
                                         columns=4, seed=3)
    width, height = png_size(out)
    assert width > height  # two grids side by side
    np.testing.assert_array_equal(indices, samples.sample_indices(256, 12, 3))
    assert len(set(indices.tolist())) == 12
    again, _ = samples.write_samples(data_dir, str(tmp_path / "again.png"), num=12, columns=4,
                                     seed=3)
    assert (tmp_path / "samples.png").read_bytes() == (tmp_path / "again.png").read_bytes()


def test_samples_montage_holds_the_chosen_images(data_dir):
    mnist, mnist_m = load_mnist_and_mnistm(data_dir)
    grids = samples.domain_grids(mnist, mnist_m, np.array([5, 9]), columns=2)
    # 2 images of 28 pixels with 2 white pixels between them and around the grid.
    assert grids["MNIST-M"].shape == (32, 62, 3)
    np.testing.assert_array_equal(grids["MNIST-M"][2:30, 2:30], mnist_m["train"][5])
    np.testing.assert_array_equal(grids["MNIST"][2:30, 32:60], mnist["train"][9])


def test_samples_rejects_bad_num_in_one_line(data_dir, tmp_path):
    completed = run_script("-m", "utils.samples", "--data-dir", data_dir, "--num", 0,
                           "--out", tmp_path / "s.png")
    assert_one_line_failure(completed, "--num must be between 1 and the 256 training images")
    assert not (tmp_path / "s.png").exists()


def test_import_filter_drops_only_the_known_native_notices():
    code = ("import os, utils\n"
            "with utils._native_stderr_without(utils._IMPORT_NOTICES):\n"
            "    os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called"
            " are written to STDERR\\n')\n"
            "    os.write(2, b'a real problem\\n')\n")
    completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                               text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == "a real problem\n"
