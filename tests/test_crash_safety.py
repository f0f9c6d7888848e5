"""Crash safety: every kill, damaged checkpoint, full disk or second process leaves a run that
can be resumed or restarted, with one clear line, since a long run on a shared machine meets
all of them."""
import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import train_MNIST2MNIST_M
from tests.conftest import ROOT, SMALL_VAL_SIZE, assert_one_line_failure
from utils.training.checkpoints import checkpoint_problem, checkpoint_steps
from utils.io import UserError, run_main
from utils.training.run_lock import RunLock
from utils.summaries import read_scalars

TRAIN_SCRIPT = "train_MNIST2MNIST_M.py"


def flags(data_dir, root, run, steps=30, checkpoint_every=10, *extra):
    return ["--data-dir", data_dir, "--output-root", str(root), "--run-name", run,
            "--epochs", "1", "--steps-per-epoch", str(steps), "--batch-size", "8",
            "--target-val-size", str(SMALL_VAL_SIZE), "--eval-batch-size", "16",
            "--checkpoint-every-steps", str(checkpoint_every), "--max-to-keep", "5",
            "--keep-checkpoints-at-end", "5",
            "--log-every-steps", "1", "--eval-every-steps", "5", "--deterministic",
            "--no-progress", *map(str, extra)]


def resume(root, run, *extra):
    return ["--run-name", run, "--resume", "--output-root", str(root), "--no-progress", *extra]


def main_exit(argv, capsys):
    """Runs the train script in-process; returns (exit status, stdout, stderr)."""
    try:
        run_main(lambda: train_MNIST2MNIST_M.main(argv))  # as the script runs it
        status = 0
    except SystemExit as exit_info:
        status = exit_info.code
    output = capsys.readouterr()
    return subprocess.CompletedProcess(argv, status, output.out, output.err)


def assert_each_step_once(log_dir, total_steps):
    scalars = read_scalars(str(log_dir))
    for writer, tags in scalars.items():
        for tag, points in tags.items():
            steps = [step for step, _ in points]
            assert len(steps) == len(set(steps)), f"{writer} {tag} repeats a step: {steps}"
    assert [s for s, _ in scalars["train"]["loss/label_loss"]] == list(range(1, total_steps + 1))
    assert [s for s, _ in scalars["hyperparameter"]["hyperparameter/learning_rate"]] == \
        list(range(total_steps))
    lines = (log_dir / "log.txt").read_text().splitlines()
    logged = [int(line.split()[1].split("/")[0]) for line in lines]
    assert logged == sorted(set(logged)), lines


@pytest.mark.slow  # 10-20 s: kept out of the default suite for its 5-minute budget
def test_run_with_no_checkpoint_resumes_from_step_0_and_logs_each_step_once(data_dir, tmp_path,
                                                                              capsys, monkeypatch):
    from utils.training.loop import Trainer

    # A run killed before its first checkpoint: config and logs written, no ckpt-N.
    original = Trainer.save_checkpoint

    def crash(self):
        raise KeyboardInterrupt  # stands in for a kill at the first checkpoint

    monkeypatch.setattr(Trainer, "save_checkpoint", crash)
    with pytest.raises(KeyboardInterrupt):
        train_MNIST2MNIST_M.main(flags(data_dir, tmp_path, "early"))
    monkeypatch.setattr(Trainer, "save_checkpoint", original)
    capsys.readouterr()
    assert checkpoint_steps(tmp_path / "checkpoints" / "early") == []
    assert not (tmp_path / "checkpoints" / "early" / "lock").exists()

    # Without --resume: both ways out are named.
    refused = main_exit(flags(data_dir, tmp_path, "early"), capsys)
    assert_one_line_failure(refused, "already exists", "--resume", "--overwrite")

    done = main_exit(resume(tmp_path, "early"), capsys)
    assert done.returncode == 0, done.stderr
    assert "no intact checkpoint" in done.stdout and "from step 0" in done.stdout
    assert json.loads((tmp_path / "logs" / "early" / "results.json").read_text())["steps"] == 30
    assert_each_step_once(tmp_path / "logs" / "early", 30)


@pytest.mark.slow  # 10-20 s: kept out of the default suite for its 5-minute budget
def test_overwrite_deletes_the_run_and_trains_it_anew(data_dir, tmp_path, capsys):
    assert main_exit(flags(data_dir, tmp_path, "again", 10), capsys).returncode == 0
    (tmp_path / "logs" / "again" / "stray.txt").write_text("from the first run")
    again = main_exit(flags(data_dir, tmp_path, "again", 10, 10, "--overwrite"), capsys)
    assert again.returncode == 0, again.stderr
    assert "--overwrite: deleting run 'again'" in again.stdout
    assert not (tmp_path / "logs" / "again" / "stray.txt").exists()
    assert_each_step_once(tmp_path / "logs" / "again", 10)
    both = main_exit(flags(data_dir, tmp_path, "again", 10, 10, "--overwrite", "--resume"), capsys)
    assert_one_line_failure(both, "--overwrite", "--resume")


def test_keep_newest_deletes_the_older_checkpoints_and_lists_the_rest(tmp_path):
    from utils.training.checkpoints import keep_newest

    for step in (5, 10, 15, 20):
        for suffix in ("index", "data-00000-of-00001"):
            (tmp_path / f"ckpt-{step}.{suffix}").write_text("x")
    (tmp_path / "best-snd.weights.h5").write_text("kept")
    keep_newest(str(tmp_path), 2)
    assert checkpoint_steps(str(tmp_path)) == [20, 15]
    assert sorted(os.listdir(tmp_path)) == ["best-snd.weights.h5", "checkpoint",
                                            "ckpt-15.data-00000-of-00001", "ckpt-15.index",
                                            "ckpt-20.data-00000-of-00001", "ckpt-20.index"]
    state = (tmp_path / "checkpoint").read_text()
    assert 'model_checkpoint_path: "ckpt-20"' in state and "ckpt-10" not in state
    keep_newest(str(tmp_path), 1)
    assert checkpoint_steps(str(tmp_path)) == [20]


def test_a_finished_run_keeps_only_its_newest_checkpoint(data_dir, tmp_path, capsys):
    argv = flags(data_dir, tmp_path, "ends", 10, 5)
    at = argv.index("--keep-checkpoints-at-end")
    del argv[at:at + 2]  # the default, 1
    done = main_exit(argv, capsys)
    assert done.returncode == 0, done.stderr
    assert "1 once it has finished (--keep-checkpoints-at-end)" in done.stdout
    folder = tmp_path / "checkpoints" / "ends"
    # ckpt-5 and ckpt-10 were written (--max-to-keep 5); the finished run keeps ckpt-10.
    assert checkpoint_steps(str(folder)) == [10]
    assert (folder / "final.weights.h5").exists()
    # A new run can still start from its end (--init-from: utils/training/init_from.py).
    from config.config import DANNConfig
    from utils.training.init_from import init_problem

    config = DANNConfig.load(str(tmp_path / "config" / "ends" / "config.json"))
    refined = dataclasses.replace(config, run_name="refined", refine_steps=2)
    assert init_problem(refined, "ends", str(tmp_path)) is None


@pytest.fixture(scope="module")
def finished_run(data_dir, tmp_path_factory):
    """A finished 30-step deterministic run with ckpt-10, -20 and -30, and its final weights."""
    root = tmp_path_factory.mktemp("finished")
    train_MNIST2MNIST_M.main(flags(data_dir, root, "straight"))
    return root


def copy_run(source_root, run, target_root, new_name):
    import shutil

    for kind in ("logs", "checkpoints", "config"):
        shutil.copytree(source_root / kind / run, target_root / kind / new_name)
    config = target_root / "config" / new_name / "config.json"
    config.write_text(config.read_text().replace(f'"run_name": "{run}"',
                                                 f'"run_name": "{new_name}"'))


def final_weights(root, run):
    import h5py

    arrays = {}
    with h5py.File(root / "checkpoints" / run / "final.weights.h5", "r") as handle:
        handle.visititems(lambda name, item: arrays.__setitem__(name, item[()])
                          if hasattr(item, "shape") else None)
    return arrays


@pytest.mark.slow  # 3 runs, about 20 s: kept out of the default suite for its 5-minute budget
@pytest.mark.parametrize("damage", ["delete_index", "delete_state_file", "truncate_data"])
def test_resume_walks_back_past_a_damaged_newest_checkpoint(finished_run, tmp_path, capsys, damage):
    copy_run(finished_run, "straight", tmp_path, "damaged")
    folder = tmp_path / "checkpoints" / "damaged"
    os.remove(tmp_path / "logs" / "damaged" / "results.json")  # as if killed after ckpt-30
    os.remove(folder / "final.weights.h5")
    if damage == "delete_index":
        os.remove(folder / "ckpt-30.index")
    elif damage == "delete_state_file":
        os.remove(folder / "checkpoint")
    else:
        data = next(folder.glob("ckpt-30.data-*"))
        with open(data, "r+b") as handle:
            handle.truncate(1000)
    resumed = main_exit(resume(tmp_path, "damaged"), capsys)
    assert resumed.returncode == 0, resumed.stderr
    if damage == "delete_state_file":
        assert "resuming from" in resumed.stdout and "ckpt-30 at step 30" in resumed.stdout
    else:
        assert "skipping checkpoint" in resumed.stdout or damage == "delete_index"
        assert "ckpt-20 at step 20" in resumed.stdout
    assert checkpoint_problem(str(folder / "ckpt-30")) is None  # written again
    assert_each_step_once(tmp_path / "logs" / "damaged", 30)
    for name, array in final_weights(finished_run, "straight").items():
        np.testing.assert_allclose(final_weights(tmp_path, "damaged")[name], array, rtol=1e-6,
                                   atol=1e-7, err_msg=name)


@pytest.mark.slow  # 20-55 s: kept out of the default suite's 5 minutes
def test_resume_from_a_chosen_checkpoint_and_refuse_a_damaged_one(finished_run, tmp_path, capsys):
    copy_run(finished_run, "straight", tmp_path, "chosen")
    os.remove(tmp_path / "logs" / "chosen" / "results.json")
    data = next((tmp_path / "checkpoints" / "chosen").glob("ckpt-20.data-*"))
    data.write_bytes(data.read_bytes()[:1000])
    refused = main_exit(resume(tmp_path, "chosen", "--resume-from", "ckpt-20"), capsys)
    assert_one_line_failure(refused, "cannot resume from", "ckpt-20", "cannot be read")
    bad_name = main_exit(resume(tmp_path, "chosen", "--resume-from", "latest"), capsys)
    assert_one_line_failure(bad_name, "--resume-from takes a checkpoint name such as ckpt-2000")
    chosen = main_exit(["--run-name", "chosen", "--resume-from", "ckpt-10", "--output-root",
                        str(tmp_path), "--no-progress"], capsys)
    assert chosen.returncode == 0, chosen.stderr
    assert "ckpt-10 at step 10" in chosen.stdout
    assert_each_step_once(tmp_path / "logs" / "chosen", 30)


def test_full_disk_is_one_line_exit_2_and_the_run_resumes(data_dir, tmp_path, capsys, monkeypatch):
    from utils.training.loop import Trainer

    original = Trainer.save_checkpoint

    def disk_full_at_step_20(self):
        if self.step == 20:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(self)

    monkeypatch.setattr(Trainer, "save_checkpoint", disk_full_at_step_20)
    full = main_exit(flags(data_dir, tmp_path, "full"), capsys)
    assert full.returncode == 2
    message = assert_one_line_failure(full, "writing the run failed: No space left on device",
                                      "MiB free in", "the last good checkpoint", "ckpt-10",
                                      "is intact", "--run-name full --resume")
    assert "--output-root" in message
    monkeypatch.setattr(Trainer, "save_checkpoint", original)
    assert not (tmp_path / "checkpoints" / "full" / "lock").exists()
    done = main_exit(resume(tmp_path, "full"), capsys)
    assert done.returncode == 0 and "ckpt-10 at step 10" in done.stdout, done.stderr
    assert_each_step_once(tmp_path / "logs" / "full", 30)


def test_lock_refuses_a_second_process_and_takes_over_a_stale_one(tmp_path, capsys):
    folder = tmp_path / "checkpoints" / "run"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        folder.mkdir(parents=True)
        (folder / "lock").write_text(json.dumps({"pid": sleeper.pid,
                                                 "host": __import__("socket").gethostname()}))
        with pytest.raises(UserError, match=rf"being trained by process {sleeper.pid} on"):
            RunLock(str(folder), "run").acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    # The holder is gone now: its lock is taken over, with a message.
    with RunLock(str(folder), "run") as lock:
        assert json.loads((folder / "lock").read_text())["pid"] == os.getpid()
        assert f"taking over the lock of process {sleeper.pid}, which is gone" in \
            capsys.readouterr().out
        with pytest.raises(UserError, match="being trained by process"):
            RunLock(str(folder), "run").acquire()  # this very process holds it
    assert not lock.held and not (folder / "lock").exists()


@pytest.mark.slow  # about 60 s: two training processes
def test_second_process_on_a_running_run_is_refused(data_dir, tmp_path):
    first = subprocess.Popen([sys.executable, TRAIN_SCRIPT,
                              *flags(data_dir, tmp_path, "busy", 100000, 1000)],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "logs" / "busy" / "log.txt").exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1]
            time.sleep(0.1)
        second = subprocess.run([sys.executable, TRAIN_SCRIPT, *resume(tmp_path, "busy")],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert_one_line_failure(second, "is being trained by process", str(first.pid))
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    assert first.returncode == 130


def test_data_dir_with_other_files_is_refused_not_filled_with_pickles(tmp_path, capsys):
    own_images = tmp_path / "my_images"
    (own_images / "cats").mkdir(parents=True)
    (own_images / "cats" / "1.png").write_bytes(b"not really a png")
    refused = main_exit(["--data-dir", str(own_images), "--output-root", str(tmp_path / "out"),
                         "--run-name", "r", "--no-progress"], capsys)
    assert_one_line_failure(refused, f"--data-dir {own_images} holds other files (cats)",
                            "mnist_data.pkl", "create_mnistm.py --out-dir")
    assert sorted(os.listdir(own_images)) == ["cats"]
    assert not (tmp_path / "out" / "config" / "r").exists()


def test_interrupted_build_leaves_no_temporary_file_and_a_rebuild_removes_old_ones(
        tmp_path, monkeypatch, capsys):
    import pickle

    import create_mnistm
    from tests.conftest import write_builder_inputs
    from utils.data import MNIST_M_PICKLE, MNIST_PICKLE

    mnist_path, bsds_path = write_builder_inputs(str(tmp_path))
    out = tmp_path / "data"
    # A temporary file as a killed build (kill -9) leaves it.
    (out / "MNIST").mkdir(parents=True)
    stale = out / "MNIST" / ".tmp-abc123mnist_data.pkl"
    stale.write_bytes(b"half a pickle")

    real_dump = pickle.dump

    def sigterm_mid_write(obj, handle, protocol=None):
        handle.write(b"partial")
        os.kill(os.getpid(), signal.SIGTERM)  # the build turns it into SystemExit(143)
        time.sleep(5)
        real_dump(obj, handle, protocol=protocol)

    monkeypatch.setattr(pickle, "dump", sigterm_mid_write)
    with pytest.raises(SystemExit) as exit_info:
        create_mnistm.build_pickles(str(out), mnist_path, bsds_path)
    assert exit_info.value.code == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored
    leftovers = [name for folder in ("MNIST", "MNIST_M") if (out / folder).exists()
                 for name in os.listdir(out / folder)]
    assert leftovers == [], leftovers
    assert "left by an interrupted build" in capsys.readouterr().out

    monkeypatch.setattr(pickle, "dump", real_dump)
    create_mnistm.build_pickles(str(out), mnist_path, bsds_path)
    assert sorted(os.listdir(out / "MNIST")) == [os.path.basename(MNIST_PICKLE)]
    assert sorted(os.listdir(out / "MNIST_M")) == [os.path.basename(MNIST_M_PICKLE)]


@pytest.mark.parametrize("name", ["config.py", "recipes.py", "__pycache__", "__init__.py",
                                  ".hidden", "runs/.hidden"])
def test_run_names_that_collide_with_config_code_are_refused(name, tmp_path, capsys):
    refused = main_exit(["--run-name", name, "--output-root", str(tmp_path), "--no-progress"],
                        capsys)
    assert_one_line_failure(refused, f"run name {name!r}", "choose another --run-name")
    assert os.listdir(tmp_path) == []


def test_truncate_events_keeps_each_step_once_up_to_the_checkpoint(tmp_path):
    from utils.summaries import create_writers, truncate_events, write_scalars

    def session(first, last):
        """Hyperparameters of updates first..last-1, training windows ending at first+1..last."""
        writers = create_writers(str(tmp_path))
        for step in range(first, last):
            write_scalars(writers["hyperparameter"], {"hyperparameter/grl_lambda": 0.1}, step)
            write_scalars(writers["train"], {"loss/label_loss": float(step)}, step + 1)
        for writer in writers.values():
            writer.close()
        time.sleep(1.1)  # event file names carry the second they were opened

    # Killed at step 6 after a checkpoint at 4; resumed from it; killed at 8 after one at 6.
    session(0, 6)
    truncate_events(str(tmp_path), 4)
    assert [s for s, _ in read_scalars(str(tmp_path))["train"]["loss/label_loss"]] == \
        [1, 2, 3, 4]
    session(4, 8)
    with open(sorted((tmp_path / "train").iterdir())[-1], "ab") as handle:
        handle.write(b"\x07\x00\x00")  # a record cut short by the kill
    truncate_events(str(tmp_path), 6)
    scalars = read_scalars(str(tmp_path))
    assert [s for s, _ in scalars["train"]["loss/label_loss"]] == [1, 2, 3, 4, 5, 6]
    # The hyperparameters of the checkpoint's step describe the update after it: logged again.
    assert [s for s, _ in scalars["hyperparameter"]["hyperparameter/grl_lambda"]] == \
        [0, 1, 2, 3, 4, 5]
    assert len(list((tmp_path / "train").iterdir())) == 1


def test_full_disk_while_building_the_pickles_is_one_line(tmp_path, monkeypatch, capsys):
    import create_mnistm
    from tests.conftest import write_builder_inputs

    mnist_path, bsds_path = write_builder_inputs(str(tmp_path))

    def disk_full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(create_mnistm, "atomic_write_pickle", disk_full)
    argv = ["--out-dir", str(tmp_path / "data"), "--mnist-path", mnist_path,
            "--bsds-path", bsds_path]
    try:
        run_main(lambda: create_mnistm.main(argv))
        status = 0
    except SystemExit as exit_info:
        status = exit_info.code
    output = capsys.readouterr()
    assert_one_line_failure(subprocess.CompletedProcess(argv, status, output.out, output.err),
                            "mnist_data.pkl failed: No space left on device", "MiB free",
                            "it needs about")
    assert status == 2 and not (tmp_path / "data").exists()


def _hold_build_lock(folder):
    """A process holding `folder`'s build lock as a live build does; returns it once it holds it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX)\n"
         "print('locked', flush=True); time.sleep(120)", str(folder)],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def _build_in_thread(out, mnist_path, bsds_path, unless_built):
    import threading

    import create_mnistm

    errors = []

    def build():
        try:
            create_mnistm.build_pickles(str(out), mnist_path, bsds_path, unless_built=unless_built)
        except BaseException as error:  # noqa: BLE001 -- reported by the test
            errors.append(error)

    thread = threading.Thread(target=build, daemon=True)
    thread.start()
    return thread, errors


def test_builds_into_one_folder_take_turns_and_a_killed_holder_frees_the_folder(tmp_path, capsys):
    """Two builders of one --data-dir (workers on a shared folder): the second waits, and does
    not delete the first one's temporary file as a dead build's; kill -9 of the first
    releases the folder at once (the kernel drops its flock)."""
    from tests.conftest import write_builder_inputs
    from utils.data import MNIST_M_PICKLE, MNIST_PICKLE

    mnist_path, bsds_path = write_builder_inputs(str(tmp_path))
    out = tmp_path / "data"
    (out / "MNIST").mkdir(parents=True)
    live = out / "MNIST" / ".tmp-live01mnist_data.pkl"
    live.write_bytes(b"a live build is writing this")
    holder = _hold_build_lock(out)
    try:
        thread, errors = _build_in_thread(out, mnist_path, bsds_path, unless_built=True)
        thread.join(1.0)
        assert thread.is_alive(), "the second build did not wait for the first"
        assert live.exists(), "the waiting build deleted a live build's temporary file"
    finally:
        holder.kill()  # kill -9: the lock goes with the process
        holder.wait()
    thread.join(60)
    assert not thread.is_alive() and errors == []
    out_text = capsys.readouterr().out
    assert f"another process is building the pickles in {out}; waiting for it" in out_text
    assert "left by an interrupted build" in out_text  # the dead holder's file, now stale
    assert sorted(os.listdir(out / "MNIST")) == [os.path.basename(MNIST_PICKLE)]
    assert sorted(os.listdir(out / "MNIST_M")) == [os.path.basename(MNIST_M_PICKLE)]


def test_a_build_that_waited_finds_the_pickles_built_and_leaves_them(tmp_path, capsys):
    from tests.conftest import write_builder_inputs
    from utils.data import MNIST_M_PICKLE, MNIST_PICKLE

    mnist_path, bsds_path = write_builder_inputs(str(tmp_path))
    out = tmp_path / "data"
    out.mkdir()
    holder = _hold_build_lock(out)
    try:
        thread, errors = _build_in_thread(out, mnist_path, bsds_path, unless_built=True)
        thread.join(1.0)
        assert thread.is_alive()
        # The first build finishes: its pickles appear, then it exits.
        for sub in (MNIST_PICKLE, MNIST_M_PICKLE):
            (out / sub).parent.mkdir(exist_ok=True)
            (out / sub).write_bytes(b"the first build's pickle")
    finally:
        holder.kill()
        holder.wait()
    thread.join(60)
    assert not thread.is_alive() and errors == []
    assert "were built meanwhile by another process" in capsys.readouterr().out
    assert (out / MNIST_PICKLE).read_bytes() == b"the first build's pickle"
