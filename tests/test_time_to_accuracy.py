"""utils.time_to_accuracy: target validation accuracy against wall-clock minutes, per recipe."""
import pytest

from tests.conftest import assert_one_line_failure, png_size, run_script
from utils import time_to_accuracy
from utils.io import UserError


def write_events(folder, points):
    """An event file in `folder` holding (wall time, step, tag, value) scalars as written."""
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2
    from tensorflow.core.util import event_pb2

    folder.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(folder / "events.out.tfevents.1.test")) as writer:
        for wall, step, tag, value in points:
            summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag,
                                                                           simple_value=value)])
            writer.write(event_pb2.Event(wall_time=wall, step=step,
                                         summary=summary).SerializeToString())


def test_minutes_count_from_the_first_logged_step_and_thresholds_take_the_first_crossing(
        tmp_path, capsys):
    run = tmp_path / "logs" / "fast"
    write_events(run / "hyperparameter", [(1000.0, 0, "hyperparameter/grl_lambda", 0.0)])
    write_events(run / "validation", [(1060.0, 100, time_to_accuracy.TAG, 0.5),
                                      (1120.0, 200, time_to_accuracy.TAG, 0.95),
                                      (1180.0, 300, time_to_accuracy.TAG, 0.93),
                                      (1300.0, 400, time_to_accuracy.TAG, 0.97)])
    curve = time_to_accuracy.validation_curve(str(run))
    # (simple_value is a float32)
    assert [minutes for minutes, _, _ in curve] == [1.0, 2.0, 3.0, 5.0]
    assert [step for _, step, _ in curve] == [100, 200, 300, 400]
    assert [value for _, _, value in curve] == pytest.approx([0.5, 0.95, 0.93, 0.97])
    assert time_to_accuracy.minutes_to(curve, 0.9) == 2.0
    assert time_to_accuracy.minutes_to(curve, 0.96) == 5.0
    assert time_to_accuracy.minutes_to(curve, 0.99) is None
    out = tmp_path / "figure" / "tta.png"
    time_to_accuracy.main(["--curve", "fast=fast", "--output-root", str(tmp_path),
                           "--threshold", "0.96", "--threshold", "0.99", "--out", str(out)])
    row = "| fast | fast | 5.00 | not reached | 0.9700 | 5.00 |"
    assert row in capsys.readouterr().out
    assert row in (tmp_path / "figure" / "tta.md").read_text()
    assert png_size(out) == (800, 500)


def test_runs_of_a_training_plot_one_line_each(smoke_runs, tmp_path):
    out = tmp_path / "tta.png"
    time_to_accuracy.main(["--curve", "adapted=dann", "--curve", "baseline=source_only",
                           "--output-root", smoke_runs, "--out", str(out)])
    table = (tmp_path / "tta.md").read_text().splitlines()
    assert [line.split(" | ")[0:2] for line in table[2:]] == [["| adapted", "dann"],
                                                              ["| baseline", "source_only"]]


@pytest.mark.parametrize("argv, fragment", [
    (["--curve", "nolabel"], "expected LABEL=RUN"),
    (["--curve", "a=missing"], "no validation event files"),
    (["--curve", "a=dann", "--out", "figure.svg"], "must name a .png"),
])
def test_bad_arguments_are_one_line(smoke_runs, argv, fragment):
    with pytest.raises(UserError, match=fragment):
        time_to_accuracy.main(argv + ["--output-root", smoke_runs])


def test_the_command_fails_in_one_line(tmp_path):
    result = run_script("-m", "utils.time_to_accuracy", "--curve", "a=none",
                        "--output-root", tmp_path)
    assert_one_line_failure(result, "no validation event files")
