"""How a run ends (utils/training/outcome.py): each way fit() stops is one line and an exit
status, and --resume of an ended run is told apart; checked on a stand-in trainer, in a
fraction of a second (the real runs are in test_stop_and_resume, test_collapse_guard,
test_crash_safety and test_multi_worker)."""
import errno
import json
import signal
from types import SimpleNamespace

import pytest

from config.config import DANNConfig
from utils.io import UserError
from utils.training import outcome


class StandInTrainer:
    """What outcome.train reads of a Trainer; fit() raises `error`."""

    def __init__(self, error, strategy="default", checkpoint="out/checkpoints/r/ckpt-20",
                 logs="."):
        self.error, self.step, self.checkpoint = error, 25, checkpoint
        self.config = SimpleNamespace(run_name="r", strategy=strategy, learning_rate=0.01,
                                      clip_norm=0.0)
        self.dirs = {"checkpoints": ".", "logs": str(logs)}
        self.checkpoints_from = "out/checkpoints/r"

    def fit(self, **options):
        raise self.error

    def last_good_checkpoint(self):
        return self.checkpoint


def exit_of(error, capsys, **trainer_options):
    with pytest.raises(SystemExit) as raised:
        outcome.train(StandInTrainer(error, **trainer_options), "out", resume=False)
    return raised.value.code, capsys.readouterr().err


def test_each_stop_has_its_exit_status_and_one_line(capsys, tmp_path):
    from utils.training.collapse_guard import Collapsed
    from utils.training.loop import Diverged, Interrupted

    status, err = exit_of(Interrupted(signal.SIGTERM), capsys)
    assert status == 143 and err == ("stopped by SIGTERM at step 25; checkpoint saved. Continue "
                                     "with: python train_MNIST2MNIST_M.py --run-name r --resume "
                                     "--output-root out\n")
    # A divergence says what to change, as a command that can be run, and records itself
    # (logs/<run>/diverged.json) so that the resume may change the learning rate.
    assert exit_of(Diverged(7, "loss is NaN."), capsys, logs=tmp_path) == (
        outcome.DIVERGED_EXIT, "error: loss is NaN. Continue from that checkpoint with smaller "
        "updates: python train_MNIST2MNIST_M.py --run-name r --resume --output-root out "
        "--learning-rate 0.001 (and/or --clip-norm 5)\n")
    assert json.loads((tmp_path / "diverged.json").read_text()) == {
        "diverged_at": 7, "learning_rate": 0.01, "clip_norm": 0.0}
    status, err = exit_of(Collapsed(60, "all in class 0", None), capsys)
    assert status == outcome.COLLAPSED_EXIT and err.startswith("error: the label classifier")


def test_a_failed_write_names_the_last_good_checkpoint_and_the_command_to_continue():
    trainer = StandInTrainer(OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(UserError) as raised:
        outcome.train(trainer, ".")
    message = str(raised.value)
    assert message.startswith("writing the run failed: No space left on device")
    assert "the last good checkpoint out/checkpoints/r/ckpt-20 is intact" in message
    assert message.endswith("continue with: python train_MNIST2MNIST_M.py --run-name r --resume")
    assert "no checkpoint was written yet" in outcome.write_failure(OSError("x"), ".", None)


def test_a_lost_worker_is_one_line_and_other_tensorflow_errors_are_not_hidden():
    import tensorflow as tf

    lost = tf.errors.UnavailableError(None, None, "{{function_node __inference_x}} Socket "
                                      "closed\n\t [[{{node CollectiveReduceV2}}]]\nFile \"a.py\"")
    with pytest.raises(UserError) as raised:
        outcome.train(StandInTrainer(lost, strategy="multi_worker"), ".")
    assert "(UnavailableError: Socket closed); the last good checkpoint is " \
           "out/checkpoints/r/ckpt-20. Continue with:" in str(raised.value)
    assert str(raised.value).endswith("on every worker, with its TF_CONFIG")
    with pytest.raises(tf.errors.UnavailableError):  # one process: not a peer's failure
        outcome.train(StandInTrainer(lost), ".")
    with pytest.raises(UserError, match="stopped before training began .UnavailableError: "
                                        "Socket closed.; nothing was trained"):
        with outcome.before_training(SimpleNamespace(strategy="multi_worker")):
            raise lost


def test_resume_tells_a_finished_run_from_a_collapsed_one(tmp_path):
    config = DANNConfig(run_name="r", on_collapse="stop")
    assert outcome.ended_run(config, str(tmp_path)) == (None, None)  # not ended: train on
    results = tmp_path / "logs" / "r" / "results.json"
    results.parent.mkdir(parents=True)
    results.write_text(json.dumps({"steps": 20}))
    collapsed, notice = outcome.ended_run(config, str(tmp_path))
    assert collapsed is None and notice.startswith("run 'r' is already finished (")
    results.write_text(json.dumps({"collapsed_at": 60, "collapse": "all in class 0",
                                   "last_good_checkpoint": "ckpt-40"}))
    collapsed, notice = outcome.ended_run(config, str(tmp_path))
    assert collapsed is None and "collapsed at step 60; pass --on-collapse rollback" in notice
    config.on_collapse = "rollback"
    collapsed, notice = outcome.ended_run(config, str(tmp_path))
    assert notice is None and (collapsed.step, collapsed.last_good_checkpoint) == (60, "ckpt-40")
