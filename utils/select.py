"""Which checkpoint each label-free validator picks, and how good that pick is.

    python -m utils.select --run <run> [--validator NAME|all]
    python -m utils.select --study --runs <run> <run> ... [--out logs/select_study.md]

A run trained with validators (utils/validators.py; DANNConfig.source_val_size
> 0) logs every validator's score at each validation point in
logs/<run>/validators.json and keeps each validator's best checkpoint,
checkpoints/<run>/best-<name>.weights.h5. The pick is read from that record
alone: no image and no label is loaded to make it. Only afterwards is the
pick evaluated on the MNIST-M test set, next to the final step's accuracy
(logs/<run>/results.json), to judge the validator; that is reporting, never
selection. Writes logs/<run>/selection.json.

`--study` does this for several runs (e.g. the seeds `utils.reproduce` trains)
and writes a markdown table: per validator, the mean Spearman correlation
between its score and the MNIST-M test accuracy over the validation points
(Musgrave et al., 2022, rank validators the same way), and the mean test
accuracy of its pick, of the final step and of the oracle (the best test
accuracy over the validation points: a ceiling no honest rule can reach).
"""
import json
import os

import numpy as np

from utils.io import ArgumentParser, UserError, atomic_write_json, atomic_write_text, run_main
from utils.runs import (add_output_root_argument, add_run_argument, results_file, run_config,
                        run_dirs)
from utils.validators import NAMES


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_argument(parser, "run to select from, as given to --run-name", required=False)
    parser.add_argument("--runs", nargs="+", help="several runs (with --study)")
    parser.add_argument("--validator", default="all",
                        help=f"one of {', '.join(NAMES)}, or all (default: all)")
    parser.add_argument("--study", action="store_true",
                        help="compare the validators over --runs and write a markdown table")
    parser.add_argument("--out", help="where --study writes its table "
                                      "(default: <output-root>/logs/select_study.md)")
    add_output_root_argument(parser)
    parser.add_argument("--data-dir", help="dataset folder (default: the one in the run's config)")
    return parser.parse_args(argv)


def validator_names(choice):
    if choice == "all":
        return list(NAMES)
    if choice not in NAMES:
        raise UserError(f"no validator {choice!r}; use one of {', '.join(NAMES)} or all")
    return [choice]


def read_json(path, missing):
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise UserError(missing) from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is not valid JSON; retrain the run or restore the file") from None


def read_record(run, output_root="."):
    """The run's validators.json (a UserError for a missing run or one from before validators)."""
    run_config(run, output_root)  # names a missing run before anything else
    path = os.path.join(run_dirs(output_root, run)["logs"], "validators.json")
    record = read_json(path, f"run {run!r} has no {path}: it was trained before validators were "
                             "logged (or with --source-val-size 0); train it again to select "
                             "without target labels")
    if not record.get("points"):
        raise UserError(f"{path} records no validation point; did run {run!r} start training?")
    return record


def picks(run, names, output_root="."):
    """{validator: {step, score, checkpoint path}} read from the run's record only.

    This is the whole selection: it reads logs/<run>/validators.json and no
    data, so it cannot depend on MNIST-M test labels.
    """
    record = read_record(run, output_root)
    chosen = {}
    for name in names:
        best = record.get("best", {}).get(name)
        if best is None:
            raise UserError(f"run {run!r} has no checkpoint for validator {name!r} "
                            f"(its validators.json names {', '.join(record.get('best', {}))})")
        path = os.path.join(run_dirs(output_root, run)["checkpoints"], best["checkpoint"])
        if not os.path.isfile(path):
            raise UserError(f"{path} is missing; was checkpoints/{run} cleaned up?")
        chosen[name] = {"step": best["step"], "score": best["score"], "checkpoint": path}
    return chosen


def _class_logits(model, images, batch_size):
    from utils.training.evaluation import apply_in_batches

    return apply_in_batches(lambda batch: model(batch, training=False)[0], images, batch_size)


def select(run, names, output_root=".", data_dir=None, test_sets=None):
    """Picks per validator, evaluates them, writes logs/<run>/selection.json; returns it."""
    from utils.runs import find_run, load_test_sets

    chosen = picks(run, names, output_root)
    results_path = results_file(run, output_root)
    results = read_json(results_path, f"run {run!r} has no {results_path}; let it finish "
                                      "(or resume it) before selecting")
    config = run_config(run, output_root)
    key = data_dir or config.data_dir
    if test_sets is None or key not in test_sets:
        target = load_test_sets(config, data_dir)[1]
        if test_sets is not None:
            test_sets[key] = target
    else:
        target = test_sets[key]
    images, labels = target
    by_step = {}
    for name, pick in chosen.items():
        if labels is None:
            # An unlabelled target: the picks stand, but nothing can score them.
            pick["target_test_accuracy"] = None
            continue
        # Validators that chose the same step chose the same weights: evaluate once.
        if pick["step"] not in by_step:
            dann = find_run(run, output_root, pick["checkpoint"]).load_model()
            logits = _class_logits(dann.model, images, config.eval_batch_size)
            by_step[pick["step"]] = float(np.mean(np.argmax(logits, axis=1) == labels))
        pick["target_test_accuracy"] = by_step[pick["step"]]
    selection = {"run": run, "final_step": results["steps"],
                 "final_target_test_accuracy": results["target_accuracy"],
                 "higher_is_better": True, "picks": chosen}
    atomic_write_json(os.path.join(run_dirs(output_root, run)["logs"], "selection.json"), selection)
    return selection


def format_selection(selection):
    if selection["final_target_test_accuracy"] is None:
        lines = [f"run {selection['run']}: final step {selection['final_step']}; the target has "
                 "no test labels, so the picks below cannot be scored"]
        lines += [f"  {name:<10} picks step {pick['step']:>6} ({pick['checkpoint']}), score "
                  f"{pick['score']:.4f}" for name, pick in selection["picks"].items()]
        return "\n".join(lines)
    lines = [f"run {selection['run']}: final step {selection['final_step']}, target test "
             f"accuracy {selection['final_target_test_accuracy']:.4f}"]
    for name, pick in selection["picks"].items():
        lines.append(f"  {name:<10} picks step {pick['step']:>6} ({pick['checkpoint']}), score "
                     f"{pick['score']:.4f}, target test accuracy {pick['target_test_accuracy']:.4f} "
                     f"({pick['target_test_accuracy'] - selection['final_target_test_accuracy']:+.4f} "
                     "vs final)")
    return "\n".join(lines)


def rank(values):
    """Ranks 1..n of `values`, ties given their mean rank (as scipy.stats.rankdata)."""
    values = np.asarray(values, np.float64)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    _, inverse = np.unique(values, return_inverse=True)
    return (np.bincount(inverse, ranks) / np.bincount(inverse))[inverse]


def spearman(x, y):
    """Spearman's rank correlation: Pearson's on the ranks; nan if either is constant."""
    rx, ry = rank(x), rank(y)
    if len(rx) < 2 or np.std(rx) == 0 or np.std(ry) == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def study(runs, output_root=".", data_dir=None):
    """Per validator over `runs`: mean Spearman correlation with test accuracy, and the mean
    test accuracy of its pick, of the final step and of the oracle. Returns (rows, selections)."""
    for run in runs:
        read_record(run, output_root)  # every run checked before the slow part
    test_sets, selections, correlations = {}, [], {name: [] for name in NAMES}
    oracles = []
    for run in runs:
        selection = select(run, list(NAMES), output_root, data_dir, test_sets)
        selections.append(selection)
        points = read_record(run, output_root)["points"]
        accuracy = [p["report_only"]["target_test_accuracy"] for p in points]
        oracles.append(max(accuracy))
        for name in NAMES:
            correlations[name].append(spearman([p["scores"][name] for p in points], accuracy))
    final = float(np.mean([s["final_target_test_accuracy"] for s in selections]))
    rows = [{"validator": name,
             "spearman": float(np.nanmean(correlations[name])) if any(
                 np.isfinite(correlations[name])) else float("nan"),
             "pick": float(np.mean([s["picks"][name]["target_test_accuracy"] for s in selections])),
             "pick_steps": [s["picks"][name]["step"] for s in selections],
             "final": final, "oracle": float(np.mean(oracles))} for name in NAMES]
    return rows, selections


def format_study(rows, runs, command):
    lines = [f"Label-free model selection over {len(runs)} runs: {', '.join(runs)}.", "",
             f"Command: `{command}`", "",
             "| validator | mean Spearman vs test acc | test acc of pick (mean) | steps picked | "
             "final step | oracle (ceiling) |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['validator']} | {row['spearman']:.3f} | {row['pick']:.4f} | "
                     f"{', '.join(map(str, row['pick_steps']))} | {row['final']:.4f} | "
                     f"{row['oracle']:.4f} |")
    lines += ["", "Spearman: over each run's validation points, between the validator's score and "
              "the MNIST-M test accuracy logged there (a 2,000-image test subset at intermediate "
              "points, the whole test set at the last), then averaged over runs. Pick and final "
              "step: whole MNIST-M test set. Oracle: the best logged test accuracy over the "
              "validation points, which no label-free rule can know: a ceiling, not a method."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    import sys

    args = parse_args(argv)
    names = validator_names(args.validator)
    if args.study:
        runs = args.runs or ([args.run] if args.run else None)
        if not runs:
            raise UserError("--study needs --runs RUN [RUN ...]")
        rows, selections = study(runs, args.output_root, args.data_dir)
        for selection in selections:
            print(format_selection(selection))
        command = "python -m utils.select " + " ".join(argv if argv is not None else sys.argv[1:])
        table = format_study(rows, runs, command)
        out = args.out or os.path.join(args.output_root, "logs", "select_study.md")
        atomic_write_text(out, table)
        print(table)
        print(f"wrote {out}")
        return
    if not args.run or args.runs:
        raise UserError("pass one --run (or --study with --runs)")
    selection = select(args.run, names, args.output_root, args.data_dir)
    print(format_selection(selection))
    print(f"wrote {os.path.join(args.output_root, 'logs', args.run, 'selection.json')}")


if __name__ == "__main__":
    run_main(main)
