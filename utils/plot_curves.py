"""Training curves of one run from its TensorBoard event files.

    python -m utils.plot_curves --run <run> [--output-root .] [--logs-root LOGS] [--out DIR]

Writes three PNGs into --out (default <output-root>/image):
  * hyperparameter.png: the schedules of Ganin & Lempitsky (2015), Sec. 5.2.2,
    learning rate mu_p = mu_0 / (1 + alpha p)^beta and GRL coefficient
    lambda_p = 2 / (1 + exp(-gamma p)) - 1, against the training step;
  * acc.png: label and domain accuracy, training batches in blue, test sets in red;
  * loss.png: label loss L_y and domain loss L_d (Eq. 9-10), same colours.
"""
import os

from utils.io import ArgumentParser, UserError, run_main

WRITER_STYLES = {
    "hyperparameter": ("black", "schedule"),
    "train": ("tab:blue", "train"),
    "validation": ("tab:red", "validation"),
}
# file name -> (figure title, [(tag, panel title, y-axis label)])
FIGURES = {
    "hyperparameter.png": ("Schedules of Sec. 5.2.2", [
        ("hyperparameter/learning_rate", r"learning rate $\mu_p$", "learning rate"),
        ("hyperparameter/grl_lambda", r"GRL coefficient $\lambda_p$", r"$\lambda_p$"),
    ]),
    "acc.png": ("Accuracy (train: blue, validation: red)", [
        ("acc/label_acc", "label accuracy\n(train: MNIST batches; validation: MNIST-M test)",
         "accuracy"),
        ("acc/domain_acc",
         "domain classifier accuracy\n(train: batches of both; validation: both tests)", "accuracy"),
    ]),
    "loss.png": ("Loss (train: blue, validation: red)", [
        ("loss/label_loss", r"label loss $L_y$ (cross-entropy)", "loss"),
        ("loss/domain_loss", r"domain loss $L_d$ (binary cross-entropy)", "loss"),
    ]),
}


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="run name, as given to --run-name")
    parser.add_argument("--output-root", default=".",
                        help="folder holding logs/ and image/ (default: .)")
    parser.add_argument("--logs-root", help="folder holding logs/<run> (default: OUTPUT_ROOT/logs)")
    parser.add_argument("--out", help="folder for the PNGs (default: OUTPUT_ROOT/image)")
    return parser.parse_args(argv)


def check_event_files(log_dir, run):
    """Fails fast, before TensorFlow loads, when there is nothing to read."""
    if not os.path.isdir(log_dir):
        raise UserError(f"no logs for run {run!r} at {log_dir}; is the run name right?")
    if not any("tfevents" in name for _, _, names in os.walk(log_dir) for name in names):
        raise UserError(f"run {run!r} has no TensorBoard event files under {log_dir}")


def plot_figure(scalars, title, panels, path):
    """One panel per tag, one line per writer that logged the tag."""
    from utils.figures import new_figure, save_png

    figure, axes = new_figure(len(panels), title=title)
    for axis, (tag, panel_title, y_label) in zip(axes, panels):
        for writer, (colour, label) in WRITER_STYLES.items():
            points = scalars.get(writer, {}).get(tag)
            if points:
                steps, values = zip(*points)
                # Markers keep a short run's few points visible.
                axis.plot(steps, values, color=colour, label=label,
                          marker="." if len(steps) < 30 else None)
        if axis.lines:
            axis.legend(fontsize="small")
        else:
            axis.text(0.5, 0.5, f"{tag} was not logged", ha="center", va="center",
                      transform=axis.transAxes)
        axis.set(title=panel_title, xlabel="training step", ylabel=y_label)
        axis.grid(alpha=0.3)
    return save_png(figure, path)


def plot_run(run, logs_root, out_dir):
    """Writes the three PNGs of `run` into `out_dir`; returns their paths."""
    log_dir = os.path.join(logs_root, run)
    check_event_files(log_dir, run)

    from utils.summaries import read_scalars

    scalars = read_scalars(log_dir)
    if not any(scalars.values()):
        raise UserError(f"run {run!r} logged no scalars in {log_dir}; did training reach its "
                        "first logging step?")
    return [plot_figure(scalars, title, panels, os.path.join(out_dir, file_name))
            for file_name, (title, panels) in FIGURES.items()]


def main(argv=None):
    args = parse_args(argv)
    logs_root = args.logs_root or os.path.join(args.output_root, "logs")
    out_dir = args.out or os.path.join(args.output_root, "image")
    for path in plot_run(args.run, logs_root, out_dir):
        print(f"wrote {path}")


if __name__ == "__main__":
    run_main(main)
