"""Target validation accuracy against wall-clock time: where each recipe gets its accuracy.

    python -m utils.time_to_accuracy --curve default=reproduce/default/dann-seed0 \
        --curve improved=reproduce/improved/dann-seed0,reproduce/improved/dann-seed1 \
        [--output-root .] [--threshold 0.96] [--out image/time_to_accuracy.png]

Each `--curve LABEL=RUN[,RUN...]` draws the runs' acc/target_val_acc (the labelled
validation split held out of the target's training images; never the test set) at
every validation point against the minutes since the run's first logged step, one
colour per label. The time is the event files' wall clock, so it counts training and
the validation points and leaves out the start-up (data loading, building the
model); a resumed run's pause would count too, so time only runs that were not
stopped. A RUN is a run name under OUTPUT_ROOT/logs, or the path of a run's log
folder (one holding validation/).

Prints, and writes beside the PNG as a Markdown table (same name, .md), each run's
minutes to reach each --threshold (the first validation point at or above it),
its final validation accuracy and its minutes in all.
"""
import os

from utils.io import ArgumentParser, UserError, atomic_write_text, run_main
from utils.runs import add_output_root_argument

TAG = "acc/target_val_acc"
COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
           "tab:pink", "tab:grey")


def parse_curve(text):
    """'LABEL=RUN[,RUN...]' -> (label, [run, ...])."""
    label, _, runs = text.partition("=")
    runs = [run.strip() for run in runs.split(",") if run.strip()]
    if not label.strip() or not runs:
        raise UserError(f"--curve {text!r}: expected LABEL=RUN[,RUN...], e.g. "
                        "default=reproduce/default/dann-seed0")
    return label.strip(), runs


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--curve", action="append", required=True, metavar="LABEL=RUN[,RUN...]",
                        help="a label and its runs (repeat the flag for each label)")
    add_output_root_argument(parser, "folder holding logs/ (default: .)")
    parser.add_argument("--threshold", type=float, action="append",
                        help="validation accuracy to time (repeatable; default 0.9 and 0.96)")
    parser.add_argument("--out", default=os.path.join("image", "time_to_accuracy.png"),
                        help="the PNG to write; its table goes beside it as .md "
                             "(default: image/time_to_accuracy.png)")
    args = parser.parse_args(argv)
    args.curves = [parse_curve(text) for text in args.curve]
    args.threshold = sorted(args.threshold or [0.9, 0.96])
    if not args.out.endswith(".png"):
        raise UserError(f"--out {args.out!r} must name a .png file")
    return args


def log_folder(run, output_root):
    """The run's log folder: a path given as is, else OUTPUT_ROOT/logs/RUN; checked."""
    folder = run if os.path.isdir(os.path.join(run, "validation")) else \
        os.path.join(output_root, "logs", run)
    if not os.path.isdir(os.path.join(folder, "validation")):
        raise UserError(f"run {run!r}: no validation event files at {folder}/validation; "
                        "give a run name under --output-root or a run's log folder")
    return folder


def validation_curve(folder):
    """[(minutes since the run's first logged step, step, target validation accuracy)]."""
    from utils.summaries import read_scalars

    scalars = read_scalars(folder, wall_times=True)
    points = scalars.get("validation", {}).get(TAG)
    if not points:
        raise UserError(f"{folder} logged no {TAG}: the run has no labelled target "
                        "validation split (target_val_size 0, or an unlabelled target)")
    start = min(wall for tags in scalars.values() for curve in tags.values()
                for _, _, wall in curve)
    return [((wall - start) / 60.0, step, value) for step, value, wall in points]


def minutes_to(curve, threshold):
    """Minutes at the first validation point at or above `threshold`; None if never."""
    return next((minutes for minutes, _, value in curve if value >= threshold), None)


def table(rows, thresholds):
    """The Markdown table of `rows` [(label, run, curve)]."""
    head = ["recipe", "run"] + [f"min to {t:g}" for t in thresholds] + ["final val", "min in all"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, run, curve in rows:
        reached = [minutes_to(curve, t) for t in thresholds]
        cells = [label, run] + ["not reached" if m is None else f"{m:.2f}" for m in reached]
        cells += [f"{curve[-1][2]:.4f}", f"{curve[-1][0]:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows, thresholds, path):
    from utils.figures import new_figure, save_png

    figure, (axis,) = new_figure(1, panel_size=(8.0, 5.0),
                                 title="Target validation accuracy against wall-clock time")
    colours = {}
    for label, _, curve in rows:
        # One legend entry per label: only its first run's line carries the label.
        first = label not in colours
        colour = colours.setdefault(label, COLOURS[len(colours) % len(COLOURS)])
        minutes, _, values = zip(*curve)
        axis.plot(minutes, values, color=colour, marker=".", alpha=0.8,
                  label=label if first else None)
    for threshold in thresholds:
        axis.axhline(threshold, color="black", linestyle=":", linewidth=0.8)
    low = min(value for _, _, curve in rows for _, _, value in curve)
    axis.set(xlabel="minutes since the first logged step", ylabel="accuracy on the target "
             "validation split", ylim=(max(0.0, min(low, thresholds[0]) - 0.02), 1.0))
    axis.grid(alpha=0.3)
    axis.legend()
    return save_png(figure, path)


def main(argv=None):
    args = parse_args(argv)
    folders = [(label, run, log_folder(run, args.output_root))
               for label, runs in args.curves for run in runs]
    rows = [(label, run, validation_curve(folder)) for label, run, folder in folders]
    text = table(rows, args.threshold)
    print(text, end="")
    plot(rows, args.threshold, args.out)
    atomic_write_text(args.out[:-len(".png")] + ".md", text)
    print(f"wrote {args.out} and its table {args.out[:-len('.png')]}.md")


if __name__ == "__main__":
    run_main(main)
