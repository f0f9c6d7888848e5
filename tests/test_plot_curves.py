"""utils.plot_curves: three PNGs of a run's TensorBoard scalars, one-line errors otherwise."""
import os

import pytest

from tests.conftest import assert_one_line_failure, png_size, run_script
from utils import plot_curves
from utils.io import UserError


def test_writes_the_three_figures(smoke_runs, tmp_path, capsys):
    plot_curves.main(["--run", "dann", "--output-root", smoke_runs, "--out", str(tmp_path)])
    assert sorted(os.listdir(tmp_path)) == ["acc.png", "hyperparameter.png", "loss.png"]
    for name in plot_curves.FIGURES:
        width, height = png_size(tmp_path / name)
        # Two panels of 5 x 4 inches at 100 dpi.
        assert (width, height) == (1000, 400)
        assert (tmp_path / name).stat().st_size > 10_000
    assert capsys.readouterr().out.count("wrote ") == 3


def test_default_out_is_under_the_run_never_the_readme_figures(smoke_runs):
    plot_curves.main(["--run", "source_only", "--output-root", smoke_runs])
    figures = os.path.join(smoke_runs, "logs", "source_only", "figures")
    assert sorted(os.listdir(figures)) == ["acc.png", "hyperparameter.png", "loss.png"]
    assert not os.path.exists(os.path.join(smoke_runs, "image"))


def test_every_plotted_tag_is_logged_by_training(smoke_runs):
    from utils.summaries import read_scalars

    scalars = read_scalars(os.path.join(smoke_runs, "logs", "dann"))
    logged = {tag for tags in scalars.values() for tag in tags}
    plotted = {tag for _, panels in plot_curves.FIGURES.values() for tag, _, _ in panels}
    assert plotted <= logged


def test_event_files_without_scalars_are_a_user_error(tmp_path):
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(tmp_path / "logs" / "empty" / "train"))
    writer.flush()
    with pytest.raises(UserError, match="logged no scalars"):
        plot_curves.plot_run("empty", str(tmp_path / "logs"), str(tmp_path / "image"))
    assert not (tmp_path / "image").exists()


@pytest.mark.parametrize("make_folder, fragment", [
    (False, "no logs for run 'missing'"),
    (True, "no TensorBoard event files"),
])
def test_missing_run_or_events_exit_with_one_line(tmp_path, make_folder, fragment):
    if make_folder:
        os.makedirs(tmp_path / "logs" / "missing" / "train")
    completed = run_script("-m", "utils.plot_curves", "--run", "missing",
                           "--output-root", tmp_path)
    assert completed.returncode == 2
    assert_one_line_failure(completed, fragment)
