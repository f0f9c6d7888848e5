import json

import pytest

from utils import benchmark, reproduce


def test_summary_is_mean_and_sample_std_of_final_accuracies():
    runs = [{"target_accuracy": a, "source_accuracy": 0.99, "steps": 10, "wall_seconds": 50.0 * m,
             "process_wall_seconds": 60.0 * m, "ms_per_step": 20.0}
            for a, m in ((0.70, 1), (0.80, 2), (0.75, 3))]
    row = reproduce.summarise({"dann": runs})["dann"]
    assert row["target_accuracy_mean"] == pytest.approx(0.75)
    assert row["target_accuracy_std"] == pytest.approx(0.05)
    assert row["wall_minutes_mean"] == pytest.approx(2.0) and row["wall_minutes_max"] == 3.0
    assert row["paper_target_accuracy"] == 0.7666
    markdown = reproduce.to_markdown({"dann": row}, [0, 1, 2], "python -m utils.reproduce")
    assert "| dann | 0.7666 | 0.7500 ± 0.0500 |" in markdown


def test_reproduce_runs_each_seed_and_reuses_finished_runs(data_dir, tmp_path, capsys):
    argv = ["--seeds", "2", "--modes", "dann", "--data-dir", data_dir, "--output-root",
            str(tmp_path), "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "8",
            "--eval-batch-size", "16"]
    reproduce.main(argv)
    results = json.loads((tmp_path / "logs" / "reproduce" / "results.json").read_text())
    assert [run["seed"] for run in results["runs"]["dann"]] == [0, 1]
    assert results["modes"]["dann"]["steps"] == 2
    assert all(run["process_wall_seconds"] > run["wall_seconds"] for run in results["runs"]["dann"])
    assert "| dann | 0.7666 |" in (tmp_path / "logs" / "reproduce" / "results.md").read_text()
    capsys.readouterr()
    reproduce.main(argv)  # both runs finished: nothing is trained again
    assert "==" not in capsys.readouterr().out


def test_benchmark_reports_every_figure(data_dir, capsys):
    benchmark.main(["--data-dir", data_dir, "--rounds", "1", "--project-steps", "3",
                    "--reference-steps", "2"])
    out = capsys.readouterr().out
    for label in ("project (pipeline + logging)", "reference eager loop", "bare compiled step",
                  "input pipeline alone", "project vs reference", "project vs bare step", "CPU:"):
        assert label in out
