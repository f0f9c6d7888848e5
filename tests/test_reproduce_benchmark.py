import json
import shutil

import pytest

from utils import benchmark, reproduce
from utils.io import UserError


def test_summary_is_mean_and_sample_std_of_final_accuracies():
    runs = [{"target_accuracy": a, "target_val_accuracy": a - 0.01, "source_accuracy": 0.99,
             "steps": 10, "wall_seconds": 50.0 * m, "process_wall_seconds": 60.0 * m,
             "ms_per_step": 20.0, "seed": m - 1, "collapsed": False}
            for a, m in ((0.70, 1), (0.80, 2), (0.75, 3))]
    row = reproduce.summarise({"dann": runs})["dann"]
    assert row["target_accuracy_mean"] == pytest.approx(0.75)
    assert row["target_accuracy_std"] == pytest.approx(0.05)
    assert row["target_val_accuracy_mean"] == pytest.approx(0.74)
    assert row["wall_minutes_mean"] == pytest.approx(2.0) and row["wall_minutes_max"] == 3.0
    assert row["published"] == {"ICML 2015, Table 1": 0.8149, "JMLR 2016, Table 2": 0.7666}
    row.update(seeds=[0, 1, 2], command="python -m utils.reproduce", cpu="a CPU")
    markdown = reproduce.to_markdown({"dann": row}, "default")
    assert ("| dann | 0, 1, 2 | 0.8149 | 0.7666 | 0.7500 ± 0.0500 | 0.7000, 0.8000, 0.7500 | "
            "0.7000 (seed 0) | 0 | 0.7400 ± 0.0500 |") in markdown
    assert "- dann: `python -m utils.reproduce` (a CPU)" in markdown


def test_collapsed_run_is_counted_and_shown_never_averaged_in():
    runs = [{"target_accuracy": a, "target_val_accuracy": a, "source_accuracy": 0.99,
             "steps": steps, "process_wall_seconds": 60.0, "ms_per_step": 20.0, "seed": seed,
             "collapsed": collapsed, **({"collapsed_at": steps} if collapsed else {})}
            for seed, a, steps, collapsed in ((0, 0.96, 48, False), (1, 0.1135, 33, True),
                                              (2, 0.94, 48, False))]
    row = reproduce.summarise({"dann": runs})["dann"]
    assert row["target_accuracy_mean"] == pytest.approx(0.95)
    assert row["target_accuracies"] == [0.96, 0.94] and row["steps"] == 48
    assert row["collapsed_seeds"] == [1] and row["worst_seed"] == 2
    row.update(seeds=[0, 1, 2], command="c", cpu="a CPU")
    markdown = reproduce.to_markdown({"dann": row}, "improved")
    assert "| 0.9500 ± 0.0141 | 0.9600, 0.9400 | 0.9400 (seed 2) | 1 (seed 1 at step 33) |" \
        in markdown
    # A collapse a finished run rolled back from is shown beside the collapsed runs.
    runs[2]["rollbacks"] = [{"collapsed_at": 21, "restored_step": 20, "skipped_batches": 1}]
    row = {**reproduce.summarise({"dann": runs})["dann"], "seeds": [0, 1, 2], "command": "c",
           "cpu": "a CPU"}
    assert row["rollbacks"] == [[2, 21]] and row["target_accuracies"] == [0.96, 0.94]
    assert "| 1 (seed 1 at step 33); 1 rolled back (seed 2 at step 21) |" \
        in reproduce.to_markdown({"dann": row}, "improved")
    # Every run collapsed: no mean is made up.
    only = reproduce.summarise({"dann": [runs[1]]})["dann"]
    assert only["target_accuracies"] == [] and only["worst_seed"] is None
    assert only["target_accuracy_mean"] != only["target_accuracy_mean"]  # NaN


@pytest.mark.slow  # about 80 s: five reproduce commands
def test_reproduce_reuses_only_identical_runs_and_keeps_other_commands_rows(data_dir, tmp_path, capsys):
    argv = ["--seeds", "2", "--modes", "dann", "--data-dir", data_dir, "--output-root",
            str(tmp_path), "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "8",
            "--target-val-size", "32", "--eval-batch-size", "16"]
    reproduce.main(argv)
    out_dir = tmp_path / "logs" / "reproduce" / "default"
    results = json.loads((out_dir / "results.json").read_text())
    assert [run["seed"] for run in results["runs"]["dann"]] == [0, 1]
    assert results["modes"]["dann"]["steps"] == 2 and results["recipe"] == "default"
    assert all(run["process_wall_seconds"] > run["wall_seconds"] for run in results["runs"]["dann"])
    assert "| dann | 0, 1 | 0.8149 | 0.7666 |" in (out_dir / "results.md").read_text()
    capsys.readouterr()
    reproduce.main(argv)  # both runs finished with the same config: nothing is trained again
    assert "==" not in capsys.readouterr().out
    # Another batch size must not relabel the finished runs.
    with pytest.raises(UserError, match=r"exists with other settings \(batch_size 8 -> 16\)"):
        reproduce.main([*argv[:-6], "--batch-size", "16", *argv[-4:]])
    with pytest.raises(UserError, match="unrecognized arguments: --seed 5"):
        reproduce.main(["--seed", "5", "--data-dir", data_dir])

    # Another command's modes are added to the table; the dann row keeps its own seeds and command.
    source_only = ["--seeds", "1", "--modes", "source_only", *argv[4:]]
    reproduce.main(source_only)
    markdown = (out_dir / "results.md").read_text()
    assert "| source_only | 0 | 0.5749 | 0.5225 |" in markdown
    assert "| dann | 0, 1 | 0.8149 | 0.7666 |" in markdown
    assert markdown.index("| source_only |") < markdown.index("| dann |")
    assert f"- dann: `python -m utils.reproduce {' '.join(argv)}`" in markdown
    results = json.loads((out_dir / "results.json").read_text())
    assert set(results["runs"]) == {"source_only", "dann"}
    # A row whose runs are gone (or changed) no longer describes its command: it is dropped.
    shutil.rmtree(tmp_path / "logs" / "reproduce" / "default" / "dann-seed1")
    capsys.readouterr()
    reproduce.main(source_only)
    assert "reproduce/default/dann-seed1 is gone" in capsys.readouterr().out
    assert "| dann |" not in (out_dir / "results.md").read_text()


def test_benchmark_reports_every_figure(data_dir, capsys):
    benchmark.main(["--data-dir", data_dir, "--rounds", "1", "--project-steps", "3",
                    "--reference-steps", "2"])
    out = capsys.readouterr().out
    for label in ("project (real training loop)", "reference eager loop", "minimal compiled step",
                  "fair floor (compiled loop)", "project vs fair floor (10 updates per call)",
                  "input pipeline alone", "project vs reference", "project vs minimal step", "CPU:"):
        assert label in out


def test_paired_ratio_cancels_drift_between_rounds():
    # The machine slows down by half in the last round: both loops of that round are slower,
    # the per-round ratio is unchanged, while a ratio of medians would move.
    project, floor = [1.1, 1.1, 2.2], [1.0, 1.0, 2.0]
    assert benchmark.paired_ratio(project, floor) == pytest.approx((1.1, 1.1, 1.1))
    median, lowest, highest = benchmark.paired_ratio([1.0, 3.0, 1.2], [1.0, 2.0, 1.0])
    assert (median, lowest, highest) == pytest.approx((1.2, 1.0, 1.5))


def test_benchmark_times_only_the_loops_asked_for(data_dir, capsys):
    benchmark.main(["--data-dir", data_dir, "--rounds", "2", "--project-steps", "3",
                    "--loops", "floor,project"])
    out = capsys.readouterr().out
    assert "project (real training loop)" in out and "fair floor (compiled loop)" in out
    assert "median of the 2 rounds' ratios" in out
    for absent in ("reference eager loop", "minimal compiled step", "project vs reference",
                   "project vs minimal step"):
        assert absent not in out


@pytest.mark.parametrize("argv, message", [
    (["--loops", "floor"], "project among them"),
    (["--loops", "project,fast"], "out of project, minimal, floor, reference"),
    (["--loops", "project,minimal", "--precisions", "float32,mixed_bfloat16"], "add floor"),
])
def test_benchmark_refuses_bad_loops(argv, message):
    with pytest.raises(UserError, match=message):
        benchmark.parse_args(argv)
