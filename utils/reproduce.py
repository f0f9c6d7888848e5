"""Reproduces the MNIST -> MNIST-M row of the paper's results with a named recipe.

    python -m utils.reproduce --recipe default --seeds 3

Trains `source_only`, `dann` and `target_only` with the recipe (config/recipes.py)
for seeds 0, 1, ..., one run at a time, each in a fresh process, and writes
logs/reproduce/<recipe>/results.json and results.md: per mode, the mean +- std
of the final-step accuracy on the MNIST-M test set and on the labelled
validation split held out of MNIST-M train, next to both published versions
of the paper: ICML 2015 (arXiv 1409.7495, Table 1) and JMLR 2016 (arXiv
1505.07818, Table 2). No checkpoint is chosen by target accuracy.

Finished runs are reused only when their saved config equals the one asked
for now, so an interrupted reproduction continues where it stopped, and a
changed flag never relabels old results. Any other flag (e.g. `--epochs 2`)
is passed to train_MNIST2MNIST_M.py for every run.

A command rewrites the rows of the modes it runs and keeps the rows earlier
commands wrote for other modes (so `--modes dann` after `--modes source_only
target_only` gives a three-row table), each with its own seeds and command,
as long as every run behind such a row still has the config its command
asked for and the results it listed, and the row read the same data; a row
whose runs changed, were retrained or are gone is dropped, with a message.
"""
import json
import os
import subprocess
import sys
import time

from utils.device import cpu_model
from utils.data import DATA_DIR
from utils.io import ArgumentParser, UserError, atomic_write_json, atomic_write_text, run_main
from utils.reproduce_table import summarise, to_markdown
from utils.runs import add_output_root_argument, config_file, results_file

MODES = ("source_only", "dann", "target_only")
# Config fields that act only on a collapse (irrelevant to a run that never had one).
ONLY_ON_COLLAPSE = {"on_collapse", "max_rollbacks"}
# The train script's exit status for a run the collapse guard stopped.
COLLAPSED_EXIT = 4
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_name(recipe, mode, seed):
    return f"reproduce/{recipe}/{mode}-seed{seed}"


def requested_config(recipe, mode, seed, name, data_dir, extra_flags):
    """The DANNConfig the train script would build for this run (checked before training)."""
    import train_MNIST2MNIST_M
    from config.cli import config_from_args

    args = train_MNIST2MNIST_M.parse_args(["--recipe", recipe, "--mode", mode, "--seed", str(seed),
                                           "--data-dir", data_dir, *extra_flags])
    return config_from_args(args, run_name=name)


def saved_config_changes(recipe, mode, seed, output_root, data_dir, extra_flags):
    """How a saved run's config differs from the one asked for now.

    Returns "field old -> new" strings (empty when they are equal), or None
    when the run has no saved config.
    """
    from config.config import FROM_DATA, DANNConfig, config_changes

    name = run_name(recipe, mode, seed)
    saved_path = config_file(name, output_root)
    requested = requested_config(recipe, mode, seed, name, data_dir, extra_flags)
    if not os.path.exists(saved_path):
        return None
    saved = DANNConfig.load(saved_path).to_dict()
    wanted = requested.to_dict()
    # A field asked for as None comes from the data (input shape, classes, network): the
    # run saved what the data gave. What a collapse would do cannot matter to a run that
    # finished without one.
    ignored = {field for field, value in wanted.items() if value is None and field in FROM_DATA}
    if not _rolled_back(name, output_root):
        # Until a run has rolled back, what a collapse does has changed nothing of it: it is
        # resumed with what is asked now (a run that stopped on a collapse, as the rollback it
        # did not take).
        ignored |= ONLY_ON_COLLAPSE
    return config_changes(saved, dict(sorted(wanted.items())), ignored)


def _stopped_collapse_to_roll_back(recipe, mode, seed, output_root, data_dir, extra_flags):
    """True for a run that stopped on a collapse (--on-collapse stop) when rollbacks are asked
    for now: it is resumed as the rollback it did not take."""
    from config.config import DANNConfig

    name = run_name(recipe, mode, seed)
    path = results_file(name, output_root)
    if not os.path.exists(path):
        return False
    with open(path) as handle:
        collapsed = json.load(handle).get("collapsed")
    wanted = requested_config(recipe, mode, seed, name, data_dir, extra_flags).on_collapse
    saved = DANNConfig.load(config_file(name, output_root)).on_collapse
    return bool(collapsed) and wanted == "rollback" and saved == "stop"


def _rolled_back(name, output_root):
    """True when the run went back from a collapse (its result depends on that setting)."""
    path = os.path.join(os.path.dirname(results_file(name, output_root)), "rollbacks.json")
    if not os.path.exists(path):
        return False
    with open(path) as handle:
        return bool(json.load(handle))


def check_reusable(recipe, mode, seed, output_root, data_dir, extra_flags):
    """Refuses a saved run whose config differs from the one asked for now (names the fields)."""
    changes = saved_config_changes(recipe, mode, seed, output_root, data_dir, extra_flags)
    if changes:
        raise UserError(f"run {run_name(recipe, mode, seed)!r} exists with other settings "
                        f"({', '.join(changes)}); rerun with the flags it was made with, "
                        "or pass another --output-root")


def train(recipe, mode, seed, output_root, data_dir, extra_flags):
    """Trains one run in a fresh process (unless it already finished); returns its results.

    The caller has checked with `check_reusable` that a saved run has the same config.
    """
    name = run_name(recipe, mode, seed)
    results_path = results_file(name, output_root)
    saved_config = config_file(name, output_root)
    rollback = _stopped_collapse_to_roll_back(recipe, mode, seed, output_root, data_dir,
                                              extra_flags)
    if not os.path.exists(results_path) or rollback:
        command = [sys.executable, os.path.join(ROOT, "train_MNIST2MNIST_M.py"), "--recipe", recipe,
                   "--mode", mode, "--seed", str(seed), "--run-name", name, "--output-root",
                   output_root, "--data-dir", data_dir, "--no-progress", *extra_flags]
        start_from = _adaptation_run(recipe, mode, seed, output_root)
        if start_from and not os.path.exists(saved_config):
            # Its adaptation phase is that run, step for step: only the refinement is trained.
            command += ["--init-from", start_from]
        if os.path.exists(saved_config):
            asked = requested_config(recipe, mode, seed, name, data_dir, extra_flags)
            command = [*command[:2], "--run-name", name, "--output-root", output_root,
                       "--no-progress", "--resume", "--on-collapse", asked.on_collapse,
                       "--max-rollbacks", str(asked.max_rollbacks)]
        print(f"== {name}: {' '.join(command[1:])}", flush=True)
        start = time.perf_counter()
        status = subprocess.call(command)
        # Exit status 4: the collapse guard stopped the run (utils/training/collapse_guard.py). Its
        # results.json says so, and the row counts it as collapsed rather than averaging it.
        if status != 0 and not (status == COLLAPSED_EXIT and os.path.exists(results_path)):
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


def _adaptation_run(recipe, mode, seed, output_root):
    """The finished, uncollapsed run of the recipe's adaptation recipe (config/recipes.py,
    ADAPTATION_RECIPE) of the same mode and seed under `output_root`, or None."""
    from config.recipes import ADAPTATION_RECIPE

    if recipe not in ADAPTATION_RECIPE:
        return None
    name = run_name(ADAPTATION_RECIPE[recipe], mode, seed)
    path = results_file(name, output_root)
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return None if json.load(handle).get("collapsed") else name


def _row_problems(recipe, mode, row, listed_runs, output_root, data_dir):
    """Why an earlier command's row no longer describes its runs (empty when it still does)."""
    if os.path.abspath(row["data_dir"]) != os.path.abspath(data_dir):
        return [f"it read {row['data_dir']!r}, this command reads {data_dir!r}"]
    if listed_runs is None or len(listed_runs) != len(row["seeds"]):
        return ["its runs are not all listed"]
    problems = []
    for seed, listed in zip(row["seeds"], listed_runs):
        name = run_name(recipe, mode, seed)
        try:
            changes = saved_config_changes(recipe, mode, seed, output_root, row["data_dir"],
                                           row["extra_flags"])
        except UserError as error:  # e.g. a flag this version no longer has
            problems.append(str(error))
            continue
        results_path = results_file(name, output_root)
        if changes is None or not os.path.exists(results_path):
            problems.append(f"{name} is gone")
            continue
        if changes:
            problems.append(f"{name} has {', '.join(changes)}")
        with open(results_path) as handle:
            saved = json.load(handle)
        # A run trained again under the same name no longer has the listed results.
        if any(saved.get(key) != listed.get(key) for key in ("target_accuracy", "steps")):
            problems.append(f"{name} was trained again")
    return problems


def earlier_rows(out_dir, recipe, modes_run, output_root, data_dir):
    """(summary rows, runs) an earlier command wrote for modes this one does not run.

    A row is kept only while every run behind it still has the config its
    command asked for and the results it listed, and it read the same data:
    a changed recipe, a deleted or retrained run, or other data would
    otherwise leave a row that no longer describes what its command trains.
    """
    path = os.path.join(out_dir, "results.json")
    if not os.path.exists(path):
        return {}, {}
    try:
        with open(path) as handle:
            earlier = json.load(handle)
        if not isinstance(earlier, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as error:
        print(f"not keeping earlier rows: {path} is unreadable ({error})")
        return {}, {}
    rows, runs = {}, {}
    for mode, row in earlier.get("modes", {}).items():
        if mode in modes_run or mode not in MODES:
            continue
        if not all(key in row for key in ("seeds", "command", "cpu", "extra_flags", "data_dir")):
            print(f"dropped the {mode} row: written by an older utils.reproduce that did not "
                  f"record its flags; rerun `{earlier.get('command', 'its command')}` to restore it")
            continue
        listed_runs = earlier.get("runs", {}).get(mode)
        problems = _row_problems(recipe, mode, row, listed_runs, output_root, data_dir)
        if problems:
            print(f"dropped the {mode} row of `{row['command']}`: {'; '.join(problems)}")
            continue
        rows[mode], runs[mode] = row, listed_runs
    return rows, runs


def parse_args(argv=None):
    from config.recipes import RECIPES

    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", choices=list(RECIPES), default="default",
                        help="named recipe of config/recipes.py (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=3,
                        help="number of seeds, run as 0, 1, ... (default: %(default)s)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                        help="modes to train (default: all three)")
    parser.add_argument("--data-dir", default=DATA_DIR,
                        help="folder holding the pickles (default: %(default)s)")
    add_output_root_argument(parser)
    args, extra_flags = parser.parse_known_args(argv)
    # Flags this tool sets for every run may not be passed through: `--seed 5` would
    # silently override the seed of every run (and argparse would not call it an error).
    owned = [flag for flag in extra_flags
             if flag.split("=")[0] in ("--seed", "--mode", "--run-name", "--resume")]
    if owned:
        raise UserError(f"unrecognized arguments: {' '.join(extra_flags)} ({owned[0]} is set "
                        "per run by this tool; use --seeds N for seeds 0..N-1)")
    if args.seeds <= 0:
        raise UserError(f"--seeds must be positive, got {args.seeds}")
    return args, extra_flags


def main(argv=None):
    args, extra_flags = parse_args(argv)
    seeds = list(range(args.seeds))
    # Every run's flags are checked (and saved configs compared) before any training starts.
    for mode in args.modes:
        for seed in seeds:
            check_reusable(args.recipe, mode, seed, args.output_root, args.data_dir, extra_flags)
    out_dir = os.path.join(args.output_root, "logs", "reproduce", args.recipe)
    # Rows other commands wrote for other modes, checked before the (long) training.
    kept_rows, kept_runs = earlier_rows(out_dir, args.recipe, args.modes, args.output_root,
                                        args.data_dir)
    start = time.perf_counter()
    results = {mode: [train(args.recipe, mode, seed, args.output_root, args.data_dir, extra_flags)
                      for seed in seeds] for mode in args.modes}
    command = " ".join(["python -m utils.reproduce"] + (argv if argv is not None else sys.argv[1:]))
    summary, cpu = summarise(results), cpu_model()
    for row in summary.values():
        row.update(seeds=seeds, command=command, cpu=cpu, extra_flags=extra_flags,
                   data_dir=args.data_dir)
    rows, runs = {**kept_rows, **summary}, {**kept_runs, **results}
    # Rows in the order of MODES, whichever command made them.
    summary = {mode: rows[mode] for mode in MODES if mode in rows}
    results = {mode: runs[mode] for mode in summary}
    atomic_write_json(os.path.join(out_dir, "results.json"),
                      {"recipe": args.recipe, "modes": summary, "runs": results})
    from utils.data.domains import describe_spec

    asked = requested_config(args.recipe, args.modes[0], 0, "pair", args.data_dir, extra_flags)
    markdown = to_markdown(summary, args.recipe, f"{describe_spec(asked.source)} -> "
                           f"{describe_spec(asked.target_test or asked.target)}")
    atomic_write_text(os.path.join(out_dir, "results.md"), markdown)
    print(markdown)
    print(f"total {(time.perf_counter() - start) / 60:.1f} min; written to {out_dir}")


if __name__ == "__main__":
    run_main(main)
