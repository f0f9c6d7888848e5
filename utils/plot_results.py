"""Draws results.png: MNIST-M test accuracy per recipe, every seed a dot, the papers as lines.

    python -m utils.plot_results [--table docs/results/recipe_seeds.csv] [--output-root ROOT]
                                 [--out logs/figures/results.png]

The README's figure is `--out image/results.png`; the default never replaces it.

Each column is one recipe and mode (source-only, DANN, train-on-target) and each dot
one seed's final-step accuracy on the MNIST-M test set, as the tables of
docs/results.md and docs/refinement.md give them: --table holds those figures, one
row per seed, each naming the table it comes from, so the figure shows exactly what
the docs say. A short bar marks each column's mean. The horizontal lines are the
published MNIST -> MNIST-M figures of both versions of the paper, drawn across the
columns of their mode: Ganin & Lempitsky, ICML 2015 (arXiv 1409.7495), Table 1, and
Ganin et al., JMLR 2016 (arXiv 1505.07818), Table 2 (utils.reproduce_table.PUBLISHED).

With --output-root, the seeds of your own reproductions
(`logs/reproduce/<recipe>/results.json` under ROOT, written by `utils.reproduce`)
are drawn beside the table's, in another colour; a run the collapse guard stopped is
a cross at the accuracy it fell to, never mixed into the dots.
"""
import csv
import glob
import json
import os
import statistics

from utils.figures import new_figure, save_png
from utils.io import ArgumentParser, UserError, run_main
from utils.reproduce import MODES
from utils.reproduce_table import PUBLISHED

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE = os.path.join(ROOT, "docs", "results", "recipe_seeds.csv")
COLUMNS = ("recipe", "mode", "seed", "test_accuracy", "machine", "table")
# Left to right within a mode; recipes not listed follow in alphabetical order.
RECIPE_ORDER = ("paper", "default", "improved", "improved_48k", "refined", "original")
MODE_NAMES = {"source_only": "source-only", "dann": "DANN", "target_only": "train-on-target"}
PAPER_STYLES = {"ICML 2015, Table 1": dict(color="black", linestyle="-"),
                "JMLR 2016, Table 2": dict(color="dimgray", linestyle="--")}
TABLE_COLOUR, YOURS_COLOUR = "tab:blue", "tab:orange"


def read_table(path):
    """{(recipe, mode): [accuracy, ...]} from the committed per-seed table."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise UserError(f"cannot read --table {path}: {error.strerror}") from None
    if not rows or set(COLUMNS) - set(rows[0]):
        raise UserError(f"--table {path} needs the columns {', '.join(COLUMNS)}")
    groups = {}
    for line, row in enumerate(rows, start=2):
        if row["mode"] not in MODES:
            raise UserError(f"{path}, line {line}: mode {row['mode']!r} is not one of "
                            f"{', '.join(MODES)}")
        try:
            accuracy = float(row["test_accuracy"])
        except ValueError:
            raise UserError(f"{path}, line {line}: test_accuracy {row['test_accuracy']!r} is "
                            "not a number") from None
        groups.setdefault((row["recipe"], row["mode"]), []).append(accuracy)
    return groups


def read_reproductions(output_root):
    """{(recipe, mode): ([finished accuracy, ...], [collapsed accuracy, ...])} from every
    `logs/reproduce/<recipe>/results.json` under `output_root`."""
    paths = sorted(glob.glob(os.path.join(output_root, "logs", "reproduce", "*", "results.json")))
    if not paths:
        raise UserError(f"no logs/reproduce/<recipe>/results.json under --output-root "
                        f"{output_root}; run `python -m utils.reproduce --recipe <recipe>` there "
                        "first, or leave out --output-root")
    groups = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as handle:
                saved = json.load(handle)
            recipe, runs = saved["recipe"], saved["runs"]
        except (OSError, ValueError, KeyError, TypeError):
            raise UserError(f"{path} is not a results.json of utils.reproduce") from None
        for mode, mode_runs in runs.items():
            finished, collapsed = groups.setdefault((recipe, mode), ([], []))
            for run in mode_runs:
                # An unlabelled target has no accuracy to draw.
                if run.get("target_accuracy") is not None:
                    (collapsed if run.get("collapsed") else finished).append(
                        run["target_accuracy"])
    return groups


def column_order(keys):
    """Source-only columns first, then DANN, then train-on-target; recipes in RECIPE_ORDER."""
    def rank(key):
        recipe, mode = key
        known = RECIPE_ORDER.index(recipe) if recipe in RECIPE_ORDER else len(RECIPE_ORDER)
        return (MODES.index(mode) if mode in MODES else len(MODES), known, recipe)
    return sorted(set(keys), key=rank)


def column_label(recipe, mode, seeds):
    name = recipe if mode == "dann" else f"{MODE_NAMES.get(mode, mode)}\n({recipe}'s input)"
    return f"{name}\n{seeds} seeds" if seeds else name


def spread(count, centre, width=0.28):
    """`count` x positions spread evenly around `centre`, so equal values stay visible."""
    if count == 1:
        return [centre]
    return [centre - width / 2 + width * i / (count - 1) for i in range(count)]


def draw(table, yours=None):
    """The figure: one column per (recipe, mode), dots per seed, published lines per mode."""
    yours = yours or {}
    columns = column_order(list(table) + list(yours))
    figure, (axis,) = new_figure(1, panel_size=(max(6.0, 1.15 * len(columns) + 1.5), 4.8),
                                 title="MNIST → MNIST-M: test accuracy at the final step, "
                                       "one dot per seed")
    for x, key in enumerate(columns):
        offset = 0.17 if key in yours and key in table else 0.0
        if key in table:
            values = table[key]
            axis.scatter(spread(len(values), x - offset), values, s=22, color=TABLE_COLOUR,
                         zorder=3, label="ours (docs/results.md)")
            mean = statistics.mean(values)
            axis.hlines(mean, x - offset - 0.2, x - offset + 0.2, color=TABLE_COLOUR, linewidth=2,
                        label="ours, mean of the seeds")
        if key in yours:
            finished, collapsed = yours[key]
            if finished:
                axis.scatter(spread(len(finished), x + offset), finished, s=22,
                             color=YOURS_COLOUR, zorder=3, label="your runs (--output-root)")
            if collapsed:
                axis.scatter(spread(len(collapsed), x + offset), collapsed, s=40, marker="x",
                             color="tab:red", zorder=3, label="your collapsed runs")
    for version, figures in PUBLISHED.items():
        labelled = False
        for x, (recipe, mode) in enumerate(columns):
            if mode in figures:
                axis.hlines(figures[mode], x - 0.45, x + 0.45, linewidth=1.2,
                            label=None if labelled else version, **PAPER_STYLES.get(version, {}))
                labelled = True
    axis.set_xticks(range(len(columns)))
    axis.set_xticklabels([column_label(*key, len(table.get(key, ()))) for key in columns])
    # A faint rule between modes: source-only | DANN | train-on-target.
    for x in range(1, len(columns)):
        if columns[x][1] != columns[x - 1][1]:
            axis.axvline(x - 0.5, color="lightgray", linewidth=1)
    axis.set_xlim(-0.6, len(columns) - 0.4)
    axis.set_ylabel("MNIST-M test accuracy")
    axis.grid(axis="y", alpha=0.3)
    # One legend entry per label (scatter calls per column repeat them).
    handles, labels = axis.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    axis.legend(unique.values(), unique.keys(), loc="lower right", fontsize="small")
    return figure


def build_parser():
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", default=TABLE,
                        help="per-seed figures of the docs' tables (default: "
                             "docs/results/recipe_seeds.csv)")
    parser.add_argument("--output-root", default=None,
                        help="also draw the seeds of logs/reproduce/<recipe>/results.json under "
                             "this folder (your own utils.reproduce runs)")
    parser.add_argument("--out", default=os.path.join("logs", "figures", "results.png"),
                        help="PNG to write (default: %(default)s; the README's is "
                             "image/results.png)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    table = read_table(args.table)
    yours = read_reproductions(args.output_root) if args.output_root else None
    save_png(draw(table, yours), args.out, dpi=120)
    seeds = sum(map(len, table.values()))
    mine = sum(len(f) + len(c) for f, c in (yours or {}).values())
    print(f"{seeds} seeds of {len(table)} columns from {args.table}"
          + (f", {mine} of your runs" if yours else "") + f" -> {args.out}")


if __name__ == "__main__":
    run_main(main)
