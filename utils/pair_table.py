"""Trains the own-domains table: every pair of `python -m utils.make_pairs` with default settings.

    python -m utils.make_pairs --out model_data/pairs
    python -m utils.pair_table --suite model_data/pairs

Per pair, with no flag beyond the pair's own (--source, --target, --target-test; any train
flag given here is added to every run, and recorded; the table itself is made without any):
source-only, DANN and `--recipe improved` over --seeds seeds (3), and train-on-target (the
bound, where the target has labels) over the first seed. One run at a time, each its own
process, as a user types it, into logs/, checkpoints/ and config/ of --output-root. Each
finished run is recorded in <output-root>/logs/pair_table/pair_table.json as it ends, with
its output beside it, so a stopped table continues where it stopped (a run cut short is
trained again from its start); then the table is written to pair_table.md there: per pair,
the target test accuracy of each row (mean +- std and worst seed), collapsed and diverged
runs, and the cost of a DANN run (ms per update, wall time, disk). MNIST -> MNIST-M, the
reference row, takes 10-30 minutes a run here: it is trained only when named in --pairs,
and otherwise shown from its recorded 5-seed rows (docs/results/recipe_seeds.csv). No test
label chooses anything here: the table reports.
"""
import csv
import json
import os
import subprocess
import sys
import time

import numpy as np

from utils.device import cpu_model
from utils.io import ArgumentParser, UserError, atomic_write_json, atomic_write_text, run_main
from utils.runs import add_output_root_argument, run_dirs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORDED = os.path.join(ROOT, "docs", "results", "recipe_seeds.csv")
REFERENCE = "mnist-mnist_m"
# Row name: (extra flags, whether it runs every seed or the first only).
ROWS = {"source_only": (["--mode", "source_only"], True),
        "dann": (["--mode", "dann"], True),
        "improved": (["--recipe", "improved"], True),
        "target_only": (["--mode", "target_only"], False)}
EXIT_STATES = {0: "finished", 3: "diverged", 4: "collapsed"}


def table_dir(output_root):
    """logs/pair_table/ of the output root: the record, the table and each run's output."""
    return os.path.join(output_root, "logs", "pair_table")


def folder_bytes(folders):
    """Bytes on disk under `folders`, each hard-linked file counted once."""
    seen, total = set(), 0
    for folder in folders:
        for parent, _, names in os.walk(folder):
            for name in names:
                stat = os.stat(os.path.join(parent, name))
                if (stat.st_dev, stat.st_ino) not in seen:
                    seen.add((stat.st_dev, stat.st_ino))
                    total += stat.st_blocks * 512
    return total


def pair_flags(entry, suite):
    """The pair's train flags, its paths made absolute (pairs.json holds them relative)."""
    flags = list(entry["flags"])
    for index, flag in enumerate(flags[:-1]):
        value = flags[index + 1]
        if flag in ("--source", "--target", "--target-test") and value not in ("mnist", "mnist_m"):
            flags[index + 1] = os.path.join(suite, value)
    return flags


def train(entry, row, seed, args):
    """One run of the table, as its own process; its record (state, accuracies, cost)."""
    name = f"{entry['name']}-{row}-s{seed}"
    command = [sys.executable, os.path.join(ROOT, "train_MNIST2MNIST_M.py"),
               *pair_flags(entry, args.suite), *ROWS[row][0], "--seed", str(seed),
               "--run-name", name, "--output-root", args.output_root, "--no-progress",
               "--overwrite", *args.extra_flags]
    log_path = os.path.join(table_dir(args.output_root), name + ".out")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    print(f"{entry['name']}: {row}, seed {seed} ...", flush=True)
    started = time.perf_counter()
    with open(log_path, "w") as log:
        status = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    wall = time.perf_counter() - started
    if status not in EXIT_STATES:
        raise UserError(f"{name} failed with exit status {status}; see {log_path}")
    dirs = run_dirs(args.output_root, name)
    results_path = os.path.join(dirs["logs"], "results.json")
    results = {}
    if os.path.exists(results_path):
        with open(results_path) as handle:
            results = json.load(handle)
    record = {"pair": entry["name"], "row": row, "seed": seed, "state": EXIT_STATES[status],
              "target_accuracy": results.get("target_accuracy"),
              "target_val_accuracy": results.get("target_val_accuracy"),
              "ms_per_step": results.get("ms_per_step"), "steps": results.get("steps"),
              "rollbacks": len(results.get("rollbacks", [])), "wall_seconds": round(wall, 1),
              "disk_bytes": folder_bytes(dirs.values()), "run": name,
              "extra_flags": args.extra_flags}
    print(f"    {record['state']}, target test accuracy {record['target_accuracy']}, "
          f"{record['wall_seconds']} s", flush=True)
    return record


def summary(records):
    """"mean +- std (worst w)" of the finished runs' target accuracies ("n/a" without any)."""
    finished = [r["target_accuracy"] for r in records
                if r["state"] == "finished" and r["target_accuracy"] is not None]
    if not finished:
        return "n/a"
    return (f"{np.mean(finished):.3f}" if len(finished) == 1 else
            f"{np.mean(finished):.3f} ± {np.std(finished):.3f} (worst {min(finished):.3f})")


def recorded_reference():
    """{row: "mean +- std (worst)"} of MNIST -> MNIST-M from the recorded recipe rows."""
    rows = {}
    with open(RECORDED) as handle:
        for line in csv.DictReader(handle):
            key = {("default", "source_only"): "source_only", ("default", "dann"): "dann",
                   ("improved", "dann"): "improved",
                   ("default", "target_only"): "target_only"}.get((line["recipe"], line["mode"]))
            if key:
                rows.setdefault(key, []).append({"state": "finished",
                                                 "target_accuracy": float(line["test_accuracy"])})
    return {key: summary(records) for key, records in rows.items()}


def describe(entry):
    height, width, channels = entry["input_shape"]
    return (f"{height}x{width} {'colour' if entry['colour'] else 'grey'}, "
            f"{len(entry['classes'])} classes, {entry['images']:,} images"
            + ("" if entry["target_labelled"] else ", unlabelled target"))


def to_markdown(entries, records, seeds):
    head = ("| pair | data | source-only | DANN | improved | target-only (bound) | "
            "collapsed / diverged | DANN ms per update | DANN wall s | DANN disk MB |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for entry in entries:
        mine = [r for r in records if r["pair"] == entry["name"]]
        if entry["name"] == REFERENCE and not mine:
            cells = recorded_reference()
            lines.append(f"| {REFERENCE} (recorded: docs/results.md) | {describe(entry)} | "
                         f"{cells.get('source_only', 'n/a')} | {cells.get('dann', 'n/a')} | "
                         f"{cells.get('improved', 'n/a')} | {cells.get('target_only', 'n/a')} "
                         "| see docs/results.md | | | |")
            continue
        by_row = {row: [r for r in mine if r["row"] == row] for row in ROWS}
        dann = [r for r in by_row["dann"] if r["state"] == "finished"]
        bad = (sum(r["state"] == "collapsed" for r in mine),
               sum(r["state"] == "diverged" for r in mine))

        def median(key, scale=1.0, digits=0):
            values = [r[key] for r in dann if r.get(key) is not None]
            return f"{np.median(values) * scale:.{digits}f}" if values else ""

        lines.append(f"| {entry['name']} | {describe(entry)} | {summary(by_row['source_only'])} "
                     f"| {summary(by_row['dann'])} | {summary(by_row['improved'])} | "
                     f"{summary(by_row['target_only']) if entry['target_labelled'] else 'no labels'}"
                     f" | {bad[0]} / {bad[1]} | {median('ms_per_step', digits=1)} | "
                     f"{median('wall_seconds')} | {median('disk_bytes', 1e-6, 1)} |")
    return (head + "\n".join(lines) + f"\n\nTarget test accuracy, seeds {', '.join(map(str, seeds))}"
            f" (source-only, DANN, improved) and {seeds[0]} (target-only); mean ± std over the "
            f"finished runs, worst seed. Costs: median over the DANN runs. CPU: {cpu_model()}.\n")


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", required=True,
                        help="the folder `python -m utils.make_pairs --out` wrote (pairs.json)")
    add_output_root_argument(parser, "folder holding the runs' logs/, checkpoints/ and config/; "
                                     "the table goes to its logs/pair_table/ (default: %(default)s)")
    parser.add_argument("--pairs", nargs="+", metavar="NAME",
                        help=f"only these pairs (default: every pair but {REFERENCE}, shown "
                        "from its recorded rows)")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS),
                        help="only these rows (default: all)")
    parser.add_argument("--table-only", action="store_true",
                        help="write the table from the runs recorded so far; train nothing")
    parser.add_argument("--seeds", type=int, default=3,
                        help="seeds of the source-only, DANN and improved rows, 0, 1, ... "
                             "(default: 3)")
    args, args.extra_flags = parser.parse_known_args(argv)
    # Train flags for every run (e.g. --epochs 1 for a first look); the table's own are refused.
    owned = [flag for flag in args.extra_flags
             if flag.split("=")[0] in ("--seed", "--mode", "--recipe", "--run-name", "--resume",
                                       "--source", "--target", "--target-test", "--output-root")]
    if owned:
        raise UserError(f"{owned[0]} is set per run by this tool; pass only other train flags")
    manifest = os.path.join(args.suite, "pairs.json")
    if not os.path.isfile(manifest):
        raise UserError(f"--suite {args.suite} holds no pairs.json; write the suite first with "
                        f"python -m utils.make_pairs --out {args.suite}")
    with open(manifest) as handle:
        args.entries = json.load(handle)["pairs"]
    names = [entry["name"] for entry in args.entries]
    unknown = [name for name in args.pairs or () if name not in names]
    if unknown:
        raise UserError(f"unknown pair {', '.join(unknown)}; the suite holds {', '.join(names)}")
    if args.seeds <= 0:
        raise UserError(f"--seeds must be positive, got {args.seeds}")
    return args


def main(argv=None):
    args = parse_args(argv)
    record_path = os.path.join(table_dir(args.output_root), "pair_table.json")
    records = []
    if os.path.exists(record_path):
        with open(record_path) as handle:
            records = json.load(handle)
    by_name = {entry["name"]: entry for entry in args.entries}
    chosen = ([by_name[name] for name in args.pairs] if args.pairs  # in the order given
              else [entry for entry in args.entries if entry["name"] != REFERENCE])
    seeds = list(range(args.seeds))
    for entry in [] if args.table_only else chosen:
        for row in args.rows:
            if row == "target_only" and not entry["target_labelled"]:
                continue
            for seed in seeds if ROWS[row][1] else seeds[:1]:
                if any(r["pair"] == entry["name"] and r["row"] == row and r["seed"] == seed
                       and r["extra_flags"] == args.extra_flags for r in records):
                    continue  # recorded by an earlier command
                records.append(train(entry, row, seed, args))
                atomic_write_json(record_path, records)
    shown = [entry for entry in args.entries
             if entry["name"] == REFERENCE or any(r["pair"] == entry["name"] for r in records)]
    markdown = to_markdown(shown, records, seeds)
    atomic_write_text(os.path.join(table_dir(args.output_root), "pair_table.md"), markdown)
    print(markdown)


if __name__ == "__main__":
    run_main(main)
