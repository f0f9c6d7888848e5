"""Training curves of one run from its TensorBoard event files.

    python -m utils.plot_curves --run <run> [--output-root .] [--logs-root LOGS] [--out DIR]

Writes three PNGs into --out (default logs/<run>/figures/, so that the
README's own figures in image/ are only replaced when `--out image` says so):
  * hyperparameter.png: the schedules of Ganin & Lempitsky (2015), Sec. 5.2.2,
    learning rate mu_p = mu_0 / (1 + alpha p)^beta and GRL coefficient
    lambda_p = 2 / (1 + exp(-gamma p)) - 1, against the training step;
  * acc.png: label and domain accuracy, training batches in blue, test sets in red;
  * loss.png: label loss L_y and domain loss L_d (Eq. 9-10), same colours;
and, for a run with a refinement phase (`--refine-steps`), a fourth:
  * refinement.png: that phase's KL to the teacher, entropy and VAT terms and
    how often the student agrees with the teacher.

    python -m utils.plot_curves --run <run> --original-logs PATH [--out DIR]

writes only compare_original.png instead: the run's label and domain accuracy
beside those of the original TF2 repository (Daipuwei/DANN-MNIST-tf2), read
from its run folder PATH (train/ and validation/ event files, step = epoch of
468 updates of 128 + 128 images). The x axis is source images seen, so runs
with different batches and epoch lengths line up.
"""
import os

from utils.io import ArgumentParser, UserError, run_main
from utils.runs import add_output_root_argument, add_run_argument

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
        ("acc/label_acc", "label accuracy\n(train: source batches; validation: target test)",
         "accuracy"),
        ("acc/domain_acc",
         "domain classifier accuracy\n(train: batches of both; validation: both tests)", "accuracy"),
    ]),
    "loss.png": ("Loss (train: blue, validation: red)", [
        ("loss/label_loss", r"label loss $L_y$ (cross-entropy)", "loss"),
        ("loss/domain_loss", r"domain loss $L_d$ (binary cross-entropy)", "loss"),
    ]),
}
# Written only for a run that logged its tags: the refinement phase's terms
# (utils/training/refinement.py), logged by the train writer after adaptation.
OPTIONAL_FIGURES = {
    "refinement.png": ("Refinement phase (DIRT-T, Eq. 14), unweighted terms", [
        ("loss/refine_kl", "KL(teacher || student) on target", "nats"),
        ("loss/refine_entropy", "target conditional entropy", "nats"),
        ("loss/refine_vat", "target VAT loss", "nats"),
        ("acc/teacher_agreement", "student's class = teacher's", "fraction"),
    ]),
}

# The original repository's tags, mapped by meaning onto ours. Its validation
# writer logs the domain *accuracy* under loss/domain_cls_loss (it feeds
# domain_cls_acc to that metric in eval_one_epoch), so that one is not mapped.
ORIGINAL_TAGS = {
    "train": {"acc/image_cls_acc": "acc/label_acc", "acc/domain_cls_acc": "acc/domain_acc",
              "loss/image_cls_loss": "loss/label_loss", "loss/domain_cls_loss": "loss/domain_loss",
              "loss/loss": "loss/total_loss"},
    "validation": {"acc/image_cls_acc": "acc/label_acc", "acc/domain_cls_acc": "acc/domain_acc",
                   "loss/image_cls_loss": "loss/label_loss", "loss/loss": "loss/total_loss"},
}
# One original epoch: 468 updates of 128 source + 128 target images.
ORIGINAL_SOURCE_IMAGES_PER_EPOCH = 468 * 128
COMPARE_FILE = "compare_original.png"
RUN_COLOURS = {"ours": "tab:blue", "original": "tab:orange"}
WRITER_LINES = {"validation": dict(linestyle="-", alpha=1.0),
                "train": dict(linestyle=":", alpha=0.7)}
COMPARE_PANELS = [
    ("acc/label_acc", "label accuracy\n(train: source batches; validation: target test)"),
    ("acc/domain_acc", "domain classifier accuracy\n(train: batches of both; validation: ours "
                       "both tests,\noriginal MNIST-M test only)"),
]


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_argument(parser, "run name, as given to --run-name")
    add_output_root_argument(parser, "folder holding logs/ and config/ (default: .)")
    parser.add_argument("--logs-root", help="folder holding logs/<run> (default: OUTPUT_ROOT/logs)")
    parser.add_argument("--out", help="folder for the PNGs (default: LOGS/<run>/figures)")
    parser.add_argument("--original-logs", metavar="PATH",
                        help="the original repository's run folder (holding train/ and "
                             f"validation/): write only {COMPARE_FILE}, its curves beside --run's "
                             "(which needs config/<run>/ under --output-root)")
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
    """Writes the PNGs of `run` into `out_dir` (three, four with refinement); returns their paths."""
    log_dir = os.path.join(logs_root, run)
    check_event_files(log_dir, run)

    from utils.summaries import read_scalars

    scalars = read_scalars(log_dir)
    if not any(scalars.values()):
        raise UserError(f"run {run!r} logged no scalars in {log_dir}; did training reach its "
                        "first logging step?")
    logged = {tag for tags in scalars.values() for tag in tags}
    figures = {**FIGURES, **{name: figure for name, figure in OPTIONAL_FIGURES.items()
                             if any(tag in logged for tag, _, _ in figure[1])}}
    return [plot_figure(scalars, title, panels, os.path.join(out_dir, file_name))
            for file_name, (title, panels) in figures.items()]


def check_original_logs(folder):
    """Fails fast when `folder` is not the original's run folder."""
    if not any(os.path.isdir(os.path.join(folder, writer)) and
               any("tfevents" in name for name in os.listdir(os.path.join(folder, writer)))
               for writer in ORIGINAL_TAGS):
        raise UserError(f"no event files in {folder}/train or {folder}/validation; pass "
                        "--original-logs the original's run folder, the one holding train/ and "
                        "validation/")


def read_original_scalars(folder):
    """The original's curves under our tags: {writer: {our tag: [(epoch, value), ...]}}."""
    from utils.summaries import read_scalars

    scalars = read_scalars(folder, writers=tuple(ORIGINAL_TAGS), tag_names=ORIGINAL_TAGS)
    if not any(scalars.values()):
        raise UserError(f"the event files in {folder} hold none of the original's tags "
                        f"({', '.join(ORIGINAL_TAGS['train'])}); is it the original's run folder?")
    return scalars


def plot_comparison(curves, path):
    """One panel per tag of COMPARE_PANELS: validation solid, train dotted, one colour per run.

    `curves` maps a run label ("ours (<run>)" or "original") to
    (colour, source images per step, {writer: {tag: [(step, value)]}}).
    """
    from utils.figures import new_figure, save_png

    figure, axes = new_figure(len(COMPARE_PANELS),
                              title="Ours and the original TF2 repository (Daipuwei/DANN-MNIST-tf2)")
    for axis, (tag, panel_title) in zip(axes, COMPARE_PANELS):
        for label, (colour, images_per_step, scalars) in curves.items():
            for writer, style in WRITER_LINES.items():
                points = scalars.get(writer, {}).get(tag)
                if points:
                    steps, values = zip(*points)
                    axis.plot([step * images_per_step for step in steps], values, color=colour,
                              label=f"{label}, {writer}", marker="." if len(steps) < 30 else None,
                              **style)
        axis.set_xscale("log")
        axis.set(title=panel_title, ylabel="accuracy",
                 xlabel="source images seen, log scale\n(ours: step x batch_size/2; "
                        "original: epoch x 468 x 128)")
        axis.grid(alpha=0.3)
    # One legend below both panels, clear of the curves: the panel with most lines has them all.
    fullest = max(axes, key=lambda axis: len(axis.lines))
    if fullest.lines:
        figure.legend(handles=fullest.lines, loc="outside lower center", ncols=4, fontsize="small")
    return save_png(figure, path)


def compare_with_original(run, output_root, logs_root, original_logs, out_dir):
    """Writes compare_original.png of `run` against the original's run folder; returns its path."""
    from utils.runs import run_config

    config = run_config(run, output_root)
    log_dir = os.path.join(logs_root, run)
    check_event_files(log_dir, run)
    check_original_logs(original_logs)

    from utils.summaries import read_scalars

    ours = read_scalars(log_dir)
    if not any(ours.values()):
        raise UserError(f"run {run!r} logged no scalars in {log_dir}; did training reach its "
                        "first logging step?")
    curves = {
        f"ours ({run})": (RUN_COLOURS["ours"], config.batch_size // 2, ours),
        "original": (RUN_COLOURS["original"], ORIGINAL_SOURCE_IMAGES_PER_EPOCH,
                     read_original_scalars(original_logs)),
    }
    return plot_comparison(curves, os.path.join(out_dir, COMPARE_FILE))


def main(argv=None):
    args = parse_args(argv)
    logs_root = args.logs_root or os.path.join(args.output_root, "logs")
    out_dir = args.out or os.path.join(logs_root, args.run, "figures")
    if args.original_logs:
        paths = [compare_with_original(args.run, args.output_root, logs_root, args.original_logs,
                                       out_dir)]
    else:
        paths = plot_run(args.run, logs_root, out_dir)
    for path in paths:
        print(f"wrote {path}")


if __name__ == "__main__":
    run_main(main)
