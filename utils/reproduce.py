"""Reproduces the MNIST -> MNIST-M row of Table 2 of Ganin & Lempitsky (2015).

    python -m utils.reproduce --seeds 3

Trains `source_only`, `dann` and `target_only` with the default recipe for
each seed, one run at a time (each in a fresh process), and writes
logs/reproduce/results.json and logs/reproduce/results.md: mean +- std of the
final-step MNIST-M test accuracy per mode, next to the paper's figures. No
checkpoint is ever chosen by target accuracy. Runs that already finished
(their results.json exists) are reused, so an interrupted reproduction
continues where it stopped.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from utils.benchmark import cpu_model
from utils.io import UserError, atomic_write_json, atomic_write_text, run_main

MODES = ("source_only", "dann", "target_only")
# Table 2 of the paper, MNIST -> MNIST-M column.
PAPER_ACCURACY = {"source_only": 0.5225, "dann": 0.7666, "target_only": 0.9596}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_name(mode, seed):
    return f"reproduce/{mode}-seed{seed}"


def train(mode, seed, output_root, data_dir, extra_flags):
    """Trains one run in a fresh process (unless it already finished); returns its results."""
    name = run_name(mode, seed)
    results_path = os.path.join(output_root, "logs", name, "results.json")
    if not os.path.exists(results_path):
        command = [sys.executable, os.path.join(ROOT, "train_MNIST2MNIST_M.py"), "--mode", mode,
                   "--seed", str(seed), "--run-name", name, "--output-root", output_root,
                   "--data-dir", data_dir, "--no-progress", *extra_flags]
        if os.path.exists(os.path.join(output_root, "config", name, "config.json")):
            command.append("--resume")
        print(f"== {name}: {' '.join(command[1:])}", flush=True)
        start = time.perf_counter()
        status = subprocess.call(command)
        if status != 0:
            raise UserError(f"run {name} failed with exit status {status}; fix it and rerun "
                            "the same command to continue")
        # The run's own wall_seconds starts after start-up; this is the whole command.
        process_seconds = time.perf_counter() - start
        with open(results_path) as handle:
            results = json.load(handle)
        results["process_wall_seconds"] = round(process_seconds, 2)
        atomic_write_json(results_path, results)
    with open(results_path) as handle:
        return json.load(handle)


def summarise(results_by_mode):
    """Per mode: mean and sample std of target accuracy, steps and mean wall minutes."""
    summary = {}
    for mode, runs in results_by_mode.items():
        accuracies = [run["target_accuracy"] for run in runs]
        summary[mode] = {
            "target_accuracy_mean": statistics.mean(accuracies),
            "target_accuracy_std": statistics.stdev(accuracies) if len(runs) > 1 else 0.0,
            "target_accuracies": accuracies,
            "source_accuracy_mean": statistics.mean(run["source_accuracy"] for run in runs),
            "steps": runs[0]["steps"],
            # Whole command (start-up, data loading, training, evaluation, saving).
            "wall_minutes_mean": statistics.mean(run["process_wall_seconds"] for run in runs) / 60,
            "wall_minutes_max": max(run["process_wall_seconds"] for run in runs) / 60,
            "ms_per_step_mean": statistics.mean(run["ms_per_step"] for run in runs),
            "paper_target_accuracy": PAPER_ACCURACY[mode],
        }
    return summary


def to_markdown(summary, seeds, command):
    lines = [
        f"MNIST -> MNIST-M, MNIST-M test accuracy at the final step, mean ± std over "
        f"{len(seeds)} seeds ({', '.join(map(str, seeds))}).",
        f"Machine: {cpu_model()}. Command: `{command}`.",
        "",
        "| mode | paper | ours (mean ± std) | per seed | MNIST test acc | steps | wall min per run (mean / max) | ms/step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, row in summary.items():
        per_seed = ", ".join(f"{a:.4f}" for a in row["target_accuracies"])
        lines.append(
            f"| {mode} | {row['paper_target_accuracy']:.4f} | "
            f"{row['target_accuracy_mean']:.4f} ± {row['target_accuracy_std']:.4f} | {per_seed} | "
            f"{row['source_accuracy_mean']:.4f} | {row['steps']} | "
            f"{row['wall_minutes_mean']:.2f} / {row['wall_minutes_max']:.2f} | "
            f"{row['ms_per_step_mean']:.1f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--data-dir", default=os.path.join("model_data", "dataset"))
    parser.add_argument("--output-root", default=".")
    args, extra_flags = parser.parse_known_args(argv)
    if args.seeds <= 0:
        raise UserError(f"--seeds must be positive, got {args.seeds}")
    return args, extra_flags


def main(argv=None):
    args, extra_flags = parse_args(argv)
    seeds = list(range(args.seeds))
    start = time.perf_counter()
    results = {mode: [train(mode, seed, args.output_root, args.data_dir, extra_flags)
                      for seed in seeds] for mode in args.modes}
    summary = summarise(results)
    command = " ".join(["python -m utils.reproduce"] + (argv if argv is not None else sys.argv[1:]))
    out_dir = os.path.join(args.output_root, "logs", "reproduce")
    atomic_write_json(os.path.join(out_dir, "results.json"),
                      {"seeds": seeds, "cpu": cpu_model(), "command": command, "modes": summary,
                       "runs": results})
    markdown = to_markdown(summary, seeds, command)
    atomic_write_text(os.path.join(out_dir, "results.md"), markdown)
    print(markdown)
    print(f"total {(time.perf_counter() - start) / 60:.1f} min; written to {out_dir}")


if __name__ == "__main__":
    run_main(main)
