"""The results table of utils.reproduce: per mode, the mean +- std over seeds of the
final-step accuracies, beside both published versions of the paper's MNIST -> MNIST-M row
(Ganin & Lempitsky, ICML 2015, Table 1; Ganin et al., JMLR 2016, Table 2), as a dict for
results.json and as markdown for results.md.
"""
import statistics

# MNIST -> MNIST-M, MNIST-M test accuracy, as published.
PUBLISHED = {
    "ICML 2015, Table 1": {"source_only": 0.5749, "dann": 0.8149, "target_only": 0.9891},
    "JMLR 2016, Table 2": {"source_only": 0.5225, "dann": 0.7666, "target_only": 0.9596},
}


def _mean_std(values):
    """(mean, sample std); NaN when no run finished, 0 std for one run."""
    if not values:
        return float("nan"), float("nan")
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(results_by_mode):
    """Per mode: mean and sample std of the final-step accuracies, steps and wall minutes.

    A collapsed run (utils/training/collapse_guard.py) has no final-step accuracy: the
    means are over the runs that finished, and the row lists the collapsed
    seeds and counts them, so a collapse is never averaged in silently nor
    left out unsaid. The worst seed is the finished run with the lowest
    test accuracy.
    """
    summary = {}
    for mode, runs in results_by_mode.items():
        finished = [run for run in runs if not run.get("collapsed")]
        collapsed = [run for run in runs if run.get("collapsed")]
        # An unlabelled target has no accuracy to average (None in results.json).
        scored = [run for run in finished if run["target_accuracy"] is not None]
        accuracies = [run["target_accuracy"] for run in scored]
        val_accuracies = [run.get("target_val_accuracy", float("nan")) for run in finished]
        mean, std = _mean_std(accuracies)
        val_mean, val_std = _mean_std(val_accuracies)
        worst = min(scored, key=lambda run: run["target_accuracy"], default=None)
        summary[mode] = {
            "target_accuracy_mean": mean,
            "target_accuracy_std": std,
            "target_accuracies": accuracies,
            "target_val_accuracy_mean": val_mean,
            "target_val_accuracy_std": val_std,
            "worst_seed": None if worst is None else worst["seed"],
            "worst_target_accuracy": None if worst is None else worst["target_accuracy"],
            "finished_seeds": [run["seed"] for run in finished],
            "collapsed_seeds": [run["seed"] for run in collapsed],
            "collapsed_at": [run["collapsed_at"] for run in collapsed],
            # Collapses a run went back from (--on-collapse rollback) and then finished.
            "rollbacks": [[run["seed"], entry["collapsed_at"]] for run in finished
                          for entry in run.get("rollbacks", [])],
            "source_accuracy_mean": _mean_std([run["source_accuracy"] for run in finished
                                               if run["source_accuracy"] is not None])[0],
            "steps": runs[0]["steps"] if not finished else finished[0]["steps"],
            # Whole command (start-up, data loading, training, evaluation, saving).
            "wall_minutes_mean": statistics.mean(map(_command_seconds, runs)) / 60,
            "wall_minutes_max": max(map(_command_seconds, runs)) / 60,
            "ms_per_step_mean": statistics.mean(run["ms_per_step"] for run in runs),
            "published": {version: figures[mode] for version, figures in PUBLISHED.items()},
        }
    return summary


def _command_seconds(run):
    """The whole command's seconds; for a run whose timing command was stopped before it
    could add them, the run's own wall time (from after start-up), which is a few seconds less."""
    return run["process_wall_seconds"] if "process_wall_seconds" in run else run["wall_seconds"]


def _collapses(row):
    """The collapse column: the count, then each collapsed seed and its step, then the
    collapses that finished runs rolled back from."""
    seeds, steps = row.get("collapsed_seeds", []), row.get("collapsed_at", [])
    text = str(len(seeds))
    if seeds:
        text += f" ({', '.join(f'seed {s} at step {t}' for s, t in zip(seeds, steps))})"
    rollbacks = row.get("rollbacks", [])
    if rollbacks:
        text += (f"; {len(rollbacks)} rolled back ("
                 + ", ".join(f"seed {s} at step {t}" for s, t in rollbacks) + ")")
    return text


def to_markdown(summary, recipe, pair="MNIST -> MNIST-M"):
    """The results table; each row of `summary` carries its own seeds, command and machine.
    The published columns are the paper's MNIST -> MNIST-M figures whatever `pair` is."""
    lines = [
        f"{pair}, recipe `{recipe}`: accuracy at the final step, mean ± std over the "
        "seeds listed that finished; a collapsed run (the label classifier died, "
        "utils/training/collapse_guard.py) has no final accuracy and is counted in its own column, beside "
        "the collapses a finished run rolled back from (--on-collapse rollback). "
        "\"val\" is the labelled split held out of MNIST-M train (settings are chosen on it); "
        "\"test\" is the MNIST-M test set.",
        "",
        "| mode | seeds | ICML 2015 | JMLR 2016 | ours, test (mean ± std) | per seed | worst seed | "
        "collapsed | ours, val | MNIST test | steps | wall min per run (mean / max) | ms/step |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, row in summary.items():
        per_seed = ", ".join(f"{a:.4f}" for a in row["target_accuracies"])
        published = row["published"]
        worst = ("—" if row.get("worst_seed") is None
                 else f"{row['worst_target_accuracy']:.4f} (seed {row['worst_seed']})")
        lines.append(
            f"| {mode} | {', '.join(map(str, row['seeds']))} | "
            f"{published['ICML 2015, Table 1']:.4f} | {published['JMLR 2016, Table 2']:.4f} | "
            f"{row['target_accuracy_mean']:.4f} ± {row['target_accuracy_std']:.4f} | {per_seed} | "
            f"{worst} | {_collapses(row)} | "
            f"{row['target_val_accuracy_mean']:.4f} ± {row['target_val_accuracy_std']:.4f} | "
            f"{row['source_accuracy_mean']:.4f} | {row['steps']} | "
            f"{row['wall_minutes_mean']:.2f} / {row['wall_minutes_max']:.2f} | "
            f"{row['ms_per_step_mean']:.1f} |")
    lines += ["", "Rows and the commands that made them:"]
    lines += [f"- {mode}: `{row['command']}` ({row['cpu']})" for mode, row in summary.items()]
    return "\n".join(lines) + "\n"
