"""What a finished run gives TensorBoard besides its curves: HParams, Text, Images, Projector.

    python -m utils.tensorboard_extras --run <run>     # for a run trained before they existed

A run writes these once, at its end (never per step, so they cost no training
time), into logs/<run>/ itself, the TensorBoard run that holds train/,
validation/ and hyperparameter/:

  * HParams (`tensorboard.plugins.hparams.api`): the run's settings (recipe,
    mode, seed, batch, updates, input norm, recipe components, data) as one
    session named after the run, and the experiment's columns (SHOWN_HPARAMS).
    Its metrics are the last values of scalars the run already logs:
    validation/acc/label_acc (the target test accuracy), .../target_val_acc,
    .../source_label_acc, .../domain_acc, plus run/ms_per_step here;
    `tensorboard --logdir logs/reproduce/<recipe>` shows one row per seed.
  * Text: the config, the results and the command that made the run.
  * Images: a grid of target test images with predicted and true class
    (mistakes in red), the target confusion matrix, and source and target
    test samples side by side.
  * Projector (logs/<run>/projector/, the TensorBoard run "<run>/projector"):
    G_f's features of a seeded subset of up to 2,000 test images per domain
    (as utils.visualize_features), with a sprite of the images and metadata
    columns domain, label, predicted and correct, so the paper's Fig. 2 can
    be explored with PCA, t-SNE or UMAP in the browser, coloured by domain or
    class (written by utils/tensorboard_projector.py).

Nothing is written per step. A second call replaces what the first wrote.
A run with no validation scalars of its own (one imported from the original
repository) first gets its final figures, by utils.evaluate on the whole
test sets, as validation/ scalars at step 0, so that it has a row in HParams.
"""
import glob
import json
import os
import time

import numpy as np

from utils.io import ArgumentParser, UserError, run_main
from utils.runs import (add_output_root_argument, add_run_argument, find_run, load_test_sets,
                        results_file, run_dirs)
from utils.tensorboard_projector import write_projector

GRID_IMAGES = 64


# The columns the HParams dashboard shows: what tells runs apart (recipe,
# mode, seed, data, batch, updates, input norm and the recipe components), so
# that a table of many runs stays readable. Every other field is in the
# session too, and in Text's run/config.
SHOWN_HPARAMS = ("recipe", "mode", "seed", "source", "target", "network", "input_norm",
                 "batch_size", "updates", "learning_rate", "domain_loss_weight",
                 "entropy_weight", "vat_weight", "ema_decay", "refine_steps", "refine_kl_weight",
                 "clip_norm", "precision", "on_collapse")
# (sub-run, tag, column title): the final figures of a run, read by the
# dashboard from the scalars the run already logs.
SHOWN_METRICS = (("validation", "acc/label_acc", "target test acc"),
                 ("validation", "acc/target_val_acc", "target val acc"),
                 ("validation", "acc/source_label_acc", "source test acc"),
                 ("validation", "acc/domain_acc", "domain acc"),
                 (None, "run/ms_per_step", "ms per step"))


def hparams_of(config):
    """The settings in HParams: every config field TensorBoard can hold, as such, and
    `updates` (all the run's: the adaptation phase's epochs x steps per epoch, then any
    refinement's)."""
    values = {}
    for name, value in config.to_dict().items():
        if isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        values[name] = "none" if value is None else value
    values["updates"] = config.total_steps
    return values


def hparams_experiment(values):
    """The experiment `tensorboard.plugins.hparams.api` declares: which columns to show."""
    from tensorboard.plugins.hparams import api as hp

    return dict(hparams=[hp.HParam(name) for name in SHOWN_HPARAMS if name in values],
                metrics=[hp.Metric(tag, group=group, display_name=title)
                         for group, tag, title in SHOWN_METRICS])


def seeded_subsets(test_sets, num, seed):
    """{domain: (images, labels or -1)}: the same seeded choice utils.visualize_features makes."""
    rng = np.random.default_rng(seed)
    subsets = {}
    for name, pair in zip(("source", "target"), test_sets):
        images, labels = pair if pair is not None else (None, None)
        if images is None:
            continue
        count = min(num, len(images))
        chosen = np.sort(rng.choice(len(images), size=count, replace=False))
        subsets[name] = (images[chosen], (np.asarray(labels)[chosen] if labels is not None
                                          else np.full(count, -1)))
    return subsets


def _png(figure):
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


def prediction_grid(images, labels, predicted, names):
    """PNG bytes: up to 64 target images titled "predicted / true", mistakes in red."""
    from skimage.util import montage

    from utils.figures import new_figure

    count = min(GRID_IMAGES, len(images))
    columns = 8
    rows = -(-count // columns)
    # One montage with a caption band under each tile: one image to draw, not 64 axes.
    height, width, channels = images.shape[1:]
    band = max(8, height // 2)
    tiles = np.full((count, height + band, width, channels), 255, np.uint8)
    tiles[:, :height] = images[:count]
    grid = montage(tiles, grid_shape=(rows, columns), padding_width=2,
                   fill=(255,) * channels, channel_axis=-1)
    figure, (axis,) = new_figure(1, panel_size=(columns * 1.2, rows * 1.4),
                                 title="target test images: predicted / true (red: mistakes)")
    axis.imshow(grid[..., 0] if channels == 1 else grid, cmap="gray", vmin=0, vmax=255)
    for index in range(count):
        row, column = divmod(index, columns)
        truth = names[labels[index]] if labels[index] >= 0 else "?"
        wrong = labels[index] >= 0 and labels[index] != predicted[index]
        axis.text(2 + column * (width + 2) + width / 2, 2 + row * (height + band + 2) + height
                  + band / 2, f"{names[predicted[index]]} / {truth}"[:16], ha="center",
                  va="center", fontsize=7, color="red" if wrong else "black")
    axis.set(xticks=[], yticks=[])
    return _png(figure)


def samples_grid(subsets, names):
    """PNG bytes: 16 source and 16 target test images side by side."""
    from skimage.util import montage

    from utils.figures import new_figure

    figure, axes = new_figure(len(subsets), panel_size=(4.0, 4.3), title="test samples")
    for axis, (domain, (images, _)) in zip(axes, subsets.items()):
        grid = montage(images[:16], grid_shape=(4, 4), padding_width=2,
                       fill=(255,) * images.shape[-1], channel_axis=-1)
        axis.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray")
        axis.set(title=names[domain], xticks=[], yticks=[])
    return _png(figure)


def write_extras(log_dir, config, results, model, test_sets, command, num=2000, seed=0):
    """Writes HParams, Text, Images and the Projector for a finished run; returns the seconds.

    `model` is the evaluated functional DANN; `test_sets` is ((source images,
    labels), (target images, labels or None)), either pair possibly None.
    """
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    from utils.data.domains import describe_spec
    from utils.evaluate import plot_confusion_matrix_figure

    started = time.perf_counter()
    # Only what this function wrote lives directly in logs/<run>/: replace it.
    for path in glob.glob(os.path.join(log_dir, "events.out.tfevents.*")):
        os.remove(path)
    names = list(config.class_names or [str(label) for label in range(config.num_classes)])
    domain_names = {"source": describe_spec(config.source),
                    "target": describe_spec(config.target_test or config.target)}
    subsets = seeded_subsets(test_sets, num, seed)
    extractor = model.get_layer("feature_extractor")
    classifier = model.get_layer("label_classifier")
    outputs = {}
    for domain, (images, labels) in subsets.items():
        features = np.concatenate([extractor(images[i:i + 500], training=False).numpy()
                                   for i in range(0, len(images), 500)])
        predicted = np.argmax(classifier(features, training=False).numpy(), axis=1)
        outputs[domain] = (features, predicted)
    writer = tf.summary.create_file_writer(log_dir)
    step = int(results.get("steps", 0))
    with writer.as_default(step=step):
        values = hparams_of(config)
        hp.hparams_config(**hparams_experiment(values))
        hp.hparams(values, trial_id=config.run_name)
        if results.get("ms_per_step") is not None:
            tf.summary.scalar("run/ms_per_step", results["ms_per_step"])
        table = "| field | value |\n|---|---|\n" + "".join(
            f"| {name} | {value} |\n" for name, value in values.items())
        tf.summary.text("run/config", table)
        tf.summary.text("run/results", "```\n" + json.dumps(results, indent=2) + "\n```")
        tf.summary.text("run/command", f"`{command}`")
        if "target" in subsets:
            images, labels = subsets["target"]
            predicted = outputs["target"][1]
            grid = prediction_grid(images, labels, predicted, names)
            tf.summary.image("target/predictions", tf.image.decode_png(grid)[None])
            if (labels >= 0).all():
                from sklearn.metrics import confusion_matrix

                matrix = confusion_matrix(labels, predicted, labels=list(range(len(names))))
                png = _png(plot_confusion_matrix_figure(
                    matrix, f"{config.run_name}: target test (subset of {len(labels)})", names))
                tf.summary.image("target/confusion_matrix", tf.image.decode_png(png)[None])
        if subsets:
            tf.summary.image("data/samples", tf.image.decode_png(
                samples_grid(subsets, domain_names))[None])
    writer.close()
    if subsets:
        rows, features, images = [], [], []
        for domain, (domain_images, labels) in subsets.items():
            domain_features, predicted = outputs[domain]
            for label, guess in zip(labels, predicted):
                rows.append((domain_names[domain], names[label] if label >= 0 else "?",
                             names[guess], "?" if label < 0 else str(bool(label == guess)).lower()))
            features.append(domain_features)
            images.append(domain_images)
        write_projector(log_dir, np.concatenate(features), rows, np.concatenate(images))
    return time.perf_counter() - started


def write_final_figures(run, log_dir, test_sets):
    """For a run trained elsewhere (imported from the original repository): the final
    weights of `run` (a utils.runs.Run) evaluated on the whole test sets (utils.evaluate),
    written as the validation scalars HParams reads, at step 0. Returns the evaluation."""
    import tensorflow as tf

    from utils.evaluate import evaluate_run

    evaluation = evaluate_run(run, test_sets)
    figures = {"acc/source_label_acc": evaluation["source_accuracy"],
               "acc/label_acc": evaluation["target_accuracy"],
               "acc/domain_acc": evaluation.get("domain_classifier_accuracy", {}).get("both")}
    writer = tf.summary.create_file_writer(os.path.join(log_dir, "validation"))
    with writer.as_default(step=0):
        for tag, value in figures.items():
            if value is not None:
                tf.summary.scalar(tag, value)
    writer.close()
    return {key: value for key, value in evaluation.items()
            if not key.startswith("target_confusion")}


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_argument(parser, "finished run, as given to --run-name")
    add_output_root_argument(parser)
    parser.add_argument("--data-dir", help="dataset folder (default: the one in the run's config)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    run = find_run(args.run, args.output_root)
    path = results_file(args.run, args.output_root)
    results = {}
    if os.path.exists(path):
        with open(path) as handle:
            results = json.load(handle)
    config, dann = run.config, run.load_model()
    source, target = load_test_sets(config, args.data_dir)
    if source[0] is None:
        raise UserError(f"run {args.run!r} has no source test images")
    log_dir = run_dirs(args.output_root, args.run)["logs"]
    if not glob.glob(os.path.join(log_dir, "validation", "events.out.tfevents.*")):
        results = write_final_figures(run, log_dir, (source, target))
    seconds = write_extras(log_dir, config, results, dann.model,
                           (source, target if target[0] is not None else None),
                           command="(written afterwards by python -m utils.tensorboard_extras)")
    print(f"wrote HParams, Text, Images and the Projector of run {args.run} into {log_dir} in "
          f"{seconds:.1f} s; view with: tensorboard --logdir {os.path.dirname(log_dir)}")


if __name__ == "__main__":
    run_main(main)
