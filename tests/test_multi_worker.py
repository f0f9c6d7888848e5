"""`--strategy multi_worker`: two worker processes on 127.0.0.1 train the same run as one
process with the same global batch, only the chief writes the run, and a run whose worker
was killed resumes."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from tests.conftest import ROOT, assert_one_line_failure, run_script
from utils.io import UserError
from utils.training.distribute import cluster_task, run_task

TRAIN_SCRIPT = "train_MNIST2MNIST_M.py"


def tf_config(ports, index, kind="worker", chief_port=None):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    if chief_port:
        cluster["chief"] = [f"127.0.0.1:{chief_port}"]
    return json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})


# -- TF_CONFIG, read without TensorFlow ------------------------------------------------------

def test_cluster_task_follows_tensorflows_chief_rule():
    worker0 = cluster_task({"TF_CONFIG": tf_config([1, 2], 0)})
    worker1 = cluster_task({"TF_CONFIG": tf_config([1, 2], 1)})
    assert (worker0.is_chief, worker1.is_chief, worker0.num_workers) == (True, False, 2)
    # With a chief task in the cluster, worker 0 is an ordinary worker.
    assert not cluster_task({"TF_CONFIG": tf_config([1, 2], 0, chief_port=3)}).is_chief
    chief = cluster_task({"TF_CONFIG": tf_config([1, 2], 0, kind="chief", chief_port=3)})
    assert chief.is_chief and chief.num_workers == 3 and chief.name == "chief 0"


@pytest.mark.parametrize("value, fragment", [
    ("", "TF_CONFIG, which is not set"),
    ("{not json", "TF_CONFIG is not a cluster and task"),
    (json.dumps({"cluster": {"worker": ["a:1"]}}), "TF_CONFIG is not a cluster and task"),
    (tf_config([1, 2], 2), "task worker 2 is not in its cluster"),
    (tf_config([1], 0, kind="ps"), "task ps 0 is not in its cluster"),
])
def test_a_bad_tf_config_is_named(value, fragment):
    with pytest.raises(UserError, match=fragment):
        cluster_task({"TF_CONFIG": value})


def test_a_cluster_run_needs_a_run_name_and_no_init_from(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", tf_config([1, 2], 1))
    config = SimpleNamespace(strategy="multi_worker")
    assert run_task(SimpleNamespace(strategy="default"), None) is None
    assert run_task(config, "r").name == "worker 1"
    with pytest.raises(UserError, match="needs --run-name: every worker must name the same run"):
        run_task(config, None)
    with pytest.raises(UserError, match="--init-from is not supported with --strategy multi_worker"):
        run_task(config, "r", init_from="other")


def test_multi_worker_without_tf_config_or_run_name_fails_in_one_line(data_dir, tmp_path):
    env = {name: value for name, value in os.environ.items() if name != "TF_CONFIG"}
    common = [TRAIN_SCRIPT, "--strategy", "multi_worker", "--data-dir", data_dir,
              "--output-root", tmp_path]
    completed = subprocess.run([sys.executable, *map(str, common), "--run-name", "r"], cwd=ROOT,
                               capture_output=True, text=True, timeout=120, env=env)
    assert_one_line_failure(completed, "TF_CONFIG, which is not set")
    env["TF_CONFIG"] = tf_config([1, 2], 0)
    completed = subprocess.run([sys.executable, *map(str, common)], cwd=ROOT,
                               capture_output=True, text=True, timeout=120, env=env)
    assert_one_line_failure(completed, "needs --run-name")
    assert os.listdir(tmp_path) == []


def test_a_resuming_worker_takes_the_chiefs_rollback_record(tmp_path):
    from utils.training.collapse_guard import Rollbacks

    chief_logs, worker_logs = tmp_path / "chief", tmp_path / "worker"
    chief_logs.mkdir()
    record = [{"collapsed_at": 50, "restored_step": 40, "data_offset": 10}]
    (chief_logs / "rollbacks.json").write_text(json.dumps(record))
    rollbacks = Rollbacks(3, str(worker_logs))
    rollbacks.count.assign(1)
    rollbacks.data_offset.assign(10)
    rollbacks.adopt(str(chief_logs))
    rollbacks.sync(45)  # without the chief's record, sync would zero both
    assert (int(rollbacks.count.numpy()), int(rollbacks.data_offset.numpy())) == (1, 10)
    assert json.loads((worker_logs / "rollbacks.json").read_text()) == record
    # A chief without a record: the worker's stale one goes.
    (chief_logs / "rollbacks.json").unlink()
    rollbacks.adopt(str(chief_logs))
    assert not (worker_logs / "rollbacks.json").exists()


# -- two workers on this machine -------------------------------------------------------------

def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


RUN_FLAGS = ["--recipe", "default", "--epochs", "1", "--steps-per-epoch", "200",
             "--batch-size", "16", "--eval-batch-size", "64", "--target-val-size", "32",
             "--log-every-steps", "50", "--checkpoint-every-steps", "100", "--no-progress",
             "--tensorboard-extras", "false"]


def start_workers(data_dir, output_root, scratch, extra=(), ports=None):
    """The two workers of run `mw` (worker 0 is the chief); each one's temporary folders go
    under scratch/<index>, so the test can see that they are removed."""
    ports = ports or free_ports(2)
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=tf_config(ports, index),
                   TMPDIR=str(scratch / str(index)), CUDA_VISIBLE_DEVICES="")
        os.makedirs(env["TMPDIR"], exist_ok=True)
        processes.append(subprocess.Popen(
            [sys.executable, TRAIN_SCRIPT, "--strategy", "multi_worker", "--run-name", "mw",
             "--data-dir", data_dir, "--output-root", str(output_root), *RUN_FLAGS, *extra],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return processes


def wait_all(processes, timeout=300):
    outputs = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            raise
        outputs.append((process.returncode, out, err))
    return outputs


def final_weights(output_root, run):
    import h5py

    path = os.path.join(output_root, "checkpoints", run, "final.weights.h5")
    arrays = []
    with h5py.File(path) as handle:
        handle.visititems(lambda name, item: arrays.append((name, item[()]))
                          if hasattr(item, "shape") else None)
    return dict(arrays)


def run_files(output_root):
    """The run's files, each event file as "<folder>/events" (their names hold host and time)."""
    return sorted(os.path.relpath(os.path.join(folder, "events" if "events.out" in name else name),
                                  output_root)
                  for folder, _, names in os.walk(output_root) for name in names)


@pytest.mark.slow  # about 50 s: two TensorFlow processes and a single-process reference
def test_two_workers_train_what_one_process_trains(data_dir, tmp_path):
    single = tmp_path / "single"
    completed = run_script(TRAIN_SCRIPT, "--run-name", "mw", "--data-dir", data_dir,
                           "--output-root", single, *RUN_FLAGS, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    multi, scratch = tmp_path / "multi", tmp_path / "scratch"
    outputs = wait_all(start_workers(data_dir, multi, scratch))
    for status, out, err in outputs:
        assert status == 0, err[-3000:]
    assert "worker 0 of 2 workers (the chief" in outputs[0][1]
    assert "worker 1 of 2 workers (writes nothing" in outputs[1][1]
    # The chief's weights are the single process's after the same 200 updates.
    reference, chief = final_weights(single, "mw"), final_weights(multi, "mw")
    assert reference.keys() == chief.keys()
    for name in reference:
        np.testing.assert_allclose(chief[name], reference[name], rtol=1e-4, atol=2e-5,
                                   err_msg=name)
    # The worker wrote nothing of the run: its files are the single process's, and its
    # temporary folders are gone.
    assert run_files(multi) == run_files(single)
    assert os.listdir(scratch / "1") == []
    results = json.loads((multi / "logs" / "mw" / "results.json").read_text())
    assert results["steps"] == 200 and results["collapsed"] is False


def wait_for(path, process, timeout=240):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline and process.poll() is None, \
            process.communicate()[1][-3000:]
        time.sleep(0.1)


@pytest.mark.slow  # about 2 minutes
def test_a_stopped_chief_stops_every_worker_and_a_killed_worker_leaves_a_resumable_run(
        data_dir, tmp_path):
    output_root, scratch = tmp_path / "run", tmp_path / "scratch"
    # Wall-time checkpoints every 0.3 s (agreed by the workers, or they would hang) and the
    # collapse guard at every validation point (its verdict agreed too).
    flags = ["--steps-per-epoch", "600", "--checkpoint-every-seconds", "0.3",
             "--eval-every-steps", "100"]
    checkpoints = output_root / "checkpoints" / "mw"
    # SIGINT reaches the chief alone: the workers agree to stop at the same step, both
    # save it (only the chief's copy is kept) and exit as stopped.
    processes = start_workers(data_dir, output_root, scratch, extra=flags)
    wait_for(checkpoints / "ckpt-100.index", processes[0])
    processes[0].send_signal(signal.SIGINT)
    (chief_status, _, chief_err), (worker_status, _, worker_err) = wait_all(processes)
    assert (chief_status, worker_status) == (130, 143), chief_err[-2000:] + worker_err[-2000:]
    assert "Traceback" not in chief_err + worker_err
    stopped = [int(name[5:-6]) for name in os.listdir(checkpoints) if name.endswith(".index")]
    assert "checkpoint saved" in worker_err and f"at step {max(stopped)}" in worker_err
    # kill -9 of the worker: the chief says in one line that a worker is gone, and how to go on.
    processes = start_workers(data_dir, output_root, scratch, extra=flags + ["--resume"])
    wait_for(checkpoints / "ckpt-300.index", processes[0])
    processes[1].send_signal(signal.SIGKILL)
    status, _, err = wait_all(processes[:1])[0]
    processes[1].wait()
    assert status != 0 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err[-3000:]
    assert "a worker of the cluster stopped or cannot be reached" in errors[0]
    assert "--resume" in errors[0] and "on every worker, with its TF_CONFIG" in errors[0]
    # Both restarted with --resume: the run ends at its last step.
    outputs = wait_all(start_workers(data_dir, output_root, scratch, extra=flags + ["--resume"]))
    for status, out, err in outputs:
        assert status == 0, err[-3000:]
        assert "resuming from" in out
    results = json.loads((output_root / "logs" / "mw" / "results.json").read_text())
    assert results["steps"] == 600 and results["collapsed"] is False
    # The folder the killed worker left was removed when it started again (TensorFlow's own
    # autograph files, which a kill leaves too, are not the run's).
    assert [name for name in os.listdir(scratch / "1") if name.startswith("dann-")] == []


@pytest.mark.slow  # about 30 s each
@pytest.mark.parametrize("failing", [1, 0])
def test_a_worker_that_fails_before_the_workers_meet_stops_the_others(data_dir, tmp_path,
                                                                       failing):
    """Bad data on one host (here a missing --source): that worker fails in one line, and
    the others, which wait for it to join, stop in one line too instead of waiting for
    ever; nothing of the run is written."""
    ports, output_root = free_ports(2), tmp_path / "run"
    processes = []
    for index in range(2):
        extra = ["--source", str(tmp_path / "missing")] if index == failing else []
        env = dict(os.environ, TF_CONFIG=tf_config(ports, index), CUDA_VISIBLE_DEVICES="")
        processes.append(subprocess.Popen(
            [sys.executable, TRAIN_SCRIPT, "--strategy", "multi_worker", "--run-name", "mw",
             "--data-dir", data_dir, "--output-root", str(output_root), *RUN_FLAGS, *extra],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = wait_all(processes, timeout=180)
    status, _, err = outputs[failing]
    assert status == 2 and "Traceback" not in err, err[-3000:]
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        next(line for line in err.splitlines() if "no such folder or .npz file" in line)]
    status, _, err = outputs[1 - failing]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert status != 0 and "Traceback" not in err, err[-3000:]
    assert len(errors) == 1 and "a worker of the cluster stopped" in errors[0], err[-3000:]
    assert not (output_root / "checkpoints" / "mw").exists()
    assert not (output_root / "logs" / "mw").exists()
