"""Test-set evaluation of a trained run (MNIST -> MNIST-M, or the run's own domains).

    python -m utils.evaluate --run <run> [--checkpoint PATH] [--compare-run <run>]

Reports what Table 1 of Ganin & Lempitsky (2015) reports, source (MNIST test)
and target (MNIST-M test) accuracy, plus per-class target accuracy, the target
confusion matrix, the accuracy of the trained domain classifier G_d on both
test sets, and the proxy A-distance d_A = 2 (1 - 2 eps) of Ben-David et al.
(2007), which the journal version of the paper (Ganin et al., JMLR 2016) uses
to show that DANN features make the domains harder to tell apart: eps is the
held-out error of a fresh linear classifier trained to separate frozen G_f
features of source test images from those of target test images.

Target labels are used only for reporting, never to fit anything.
Writes logs/<run>/evaluation.json and logs/<run>/confusion_matrix.png.
"""
import os

import numpy as np

from utils.io import ArgumentParser, UserError, atomic_write_json, run_main
from utils.runs import (add_checkpoint_argument, add_output_root_argument, add_run_argument,
                        check_same_data, find_run, load_test_sets, run_dirs)


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_argument(parser, "run to evaluate, as given to --run-name")
    add_checkpoint_argument(parser, "weights to evaluate instead of the run's final ones: a "
                                    ".weights.h5 file or a checkpoint prefix such as "
                                    "checkpoints/<run>/ckpt-1000")
    parser.add_argument("--compare-run",
                        help="a second run (usually source_only) evaluated the same way and "
                             "shown side by side")
    add_output_root_argument(parser)
    parser.add_argument("--data-dir", help="dataset folder (default: the one in the run's config)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the half/half split for the proxy A-distance (default: 0)")
    return parser.parse_args(argv)


def proxy_a_distance(source_features, target_features, seed):
    """d_A = 2 (1 - 2 eps), eps the held-out error of a fresh linear domain classifier.

    Each domain's features are split in half with `seed`; the classifier
    (logistic regression on standardized features) is fit on one half of
    both and eps is measured on the other.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = np.concatenate([source_features, target_features])
    domains = np.concatenate([np.zeros(len(source_features)), np.ones(len(target_features))])
    # Stratifying by domain splits each test set into halves rather than the union.
    train_x, test_x, train_y, test_y = train_test_split(
        features, domains, test_size=0.5, random_state=seed, stratify=domains)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(train_x, train_y)
    error = float(np.mean(probe.predict(test_x) != test_y))
    return {"proxy_a_distance": 2.0 * (1.0 - 2.0 * error), "domain_probe_error": error,
            "domain_probe_train_size": len(train_y), "domain_probe_test_size": len(test_y)}


def predict(dann, images, batch_size):
    """Frozen G_f features, predicted classes and G_d's domain logits of `images`."""
    from utils.training.evaluation import apply_in_batches, inference

    features = apply_in_batches(inference(dann.feature_extractor), images, batch_size)
    classes = np.argmax(apply_in_batches(inference(dann.label_classifier), features, batch_size), axis=1)
    domain_logits = apply_in_batches(inference(dann.domain_classifier), features, batch_size)[:, 0]
    return features, classes, domain_logits


def evaluate_run(run, test_sets, seed=0):
    """Evaluates `run` (a utils.runs.Run, from find_run) on ((source images, labels),
    (target images, labels)).

    The target's labels may be None (an unlabelled target: no target
    accuracy, only what needs no labels) and so may its images (no target
    test set: source accuracy only). Writes evaluation.json and, with target
    labels, confusion_matrix.png into logs/<run>/; returns the evaluation dict.
    """
    from sklearn.metrics import confusion_matrix

    from utils.data.domains import describe_spec

    config, dann = run.config, run.load_model()
    log_dir = run_dirs(run.output_root, run.name)["logs"]
    (source_images, source_labels), (target_images, target_labels) = test_sets
    source_features, source_classes, source_domain_logits = predict(
        dann, source_images, config.eval_batch_size)
    evaluation = {
        "run": run.name,
        "mode": config.mode,
        "weights": run.weights,
        "source": describe_spec(config.source),
        "target": describe_spec(config.target_test or config.target),
        "source_accuracy": float(np.mean(source_classes == source_labels)),
        "target_accuracy": None,
        "num_source_test": len(source_labels),
        "num_target_test": 0 if target_images is None else len(target_images),
        "seed": seed,
    }
    if target_images is None:
        evaluation["note"] = ("the target has no test images: pass --target-test when training "
                              "to measure target accuracy")
        atomic_write_json(os.path.join(log_dir, "evaluation.json"), evaluation)
        return evaluation
    target_features, target_classes, target_domain_logits = predict(
        dann, target_images, config.eval_batch_size)
    # G_d predicts the target (domain 1) for a positive logit.
    source_domain_correct = source_domain_logits <= 0
    target_domain_correct = target_domain_logits > 0
    evaluation["domain_classifier_accuracy"] = {
        "source_test": float(np.mean(source_domain_correct)),
        "target_test": float(np.mean(target_domain_correct)),
        "both": float(np.mean(np.concatenate([source_domain_correct, target_domain_correct]))),
    }
    evaluation.update(proxy_a_distance(source_features, target_features, seed))
    if target_labels is None:
        evaluation["note"] = "the target has no labels: no target accuracy"
    else:
        names = list(config.class_names)
        classes = list(range(config.num_classes))
        target_confusion = confusion_matrix(target_labels, target_classes, labels=classes)
        per_class_totals = target_confusion.sum(axis=1)
        evaluation["target_accuracy"] = float(np.mean(target_classes == target_labels))
        # None for a class absent from the test set: there is no accuracy to report.
        evaluation["target_per_class_accuracy"] = {
            names[label]: (float(target_confusion[label, label] / total) if total else None)
            for label, total in zip(classes, per_class_totals)}
        evaluation["target_confusion_matrix"] = target_confusion.tolist()
        plot_confusion_matrix(target_confusion, f"{run.name} ({config.mode}): target test, "
                                                f"accuracy {evaluation['target_accuracy']:.3f}",
                              os.path.join(log_dir, "confusion_matrix.png"), names)
    atomic_write_json(os.path.join(log_dir, "evaluation.json"), evaluation)
    return evaluation


def plot_confusion_matrix(confusion, title, path, class_names=None):
    """Row-normalised confusion matrix with the raw counts written in each cell, as a PNG."""
    from utils.figures import save_png

    return save_png(plot_confusion_matrix_figure(confusion, title, class_names), path)


def plot_confusion_matrix_figure(confusion, title, class_names=None):
    """The figure of `plot_confusion_matrix` (TensorBoard's Images take it too)."""
    from utils.figures import new_figure

    figure, (axis,) = new_figure(1, panel_size=(6.0, 5.5), title=title)
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    image = axis.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axis, label="fraction of the true class")
    for (true, predicted), count in np.ndenumerate(confusion):
        axis.text(predicted, true, str(count), ha="center", va="center", fontsize="x-small",
                  color="white" if rates[true, predicted] > 0.5 else "black")
    ticks = range(len(confusion))
    names = class_names or [str(tick) for tick in ticks]
    axis.set(xticks=ticks, yticks=ticks, xlabel="predicted class", ylabel="true class")
    axis.set_xticklabels(names, rotation=90 if max(map(len, names)) > 2 else 0)
    axis.set_yticklabels(names)
    return figure


def _accuracy(value):
    return "n/a" if value is None else f"{value:.4f}"


def format_report(evaluation):
    source, target = (f"source accuracy ({evaluation['source']} test)",
                      f"target accuracy ({evaluation['target']} test)")
    lines = [f"run {evaluation['run']} ({evaluation['mode']}), weights {evaluation['weights']}",
             f"  {source:<30}  {evaluation['source_accuracy']:.4f}",
             f"  {target:<30}  {_accuracy(evaluation['target_accuracy'])}"]
    if "target_per_class_accuracy" in evaluation:
        per_class = " ".join(f"{label}:{'n/a' if value is None else f'{value:.3f}'}"
                             for label, value in evaluation["target_per_class_accuracy"].items())
        lines.append(f"  target accuracy per class       {per_class}")
    if "domain_classifier_accuracy" in evaluation:
        domain = evaluation["domain_classifier_accuracy"]
        lines += [f"  domain classifier G_d accuracy  source {domain['source_test']:.4f}, "
                  f"target {domain['target_test']:.4f}, both {domain['both']:.4f}",
                  f"  proxy A-distance                {evaluation['proxy_a_distance']:.4f} "
                  f"(held-out error of a fresh linear domain classifier "
                  f"{evaluation['domain_probe_error']:.4f})"]
    if "note" in evaluation:
        lines.append(f"  note: {evaluation['note']}")
    return "\n".join(lines)


def format_comparison(evaluations):
    rows = [("", lambda e: f"{e['run']} ({e['mode']})"),
            ("proxy A-distance", lambda e: _accuracy(e.get("proxy_a_distance"))),
            ("linear domain probe error", lambda e: _accuracy(e.get("domain_probe_error"))),
            ("target accuracy", lambda e: _accuracy(e["target_accuracy"])),
            ("source accuracy", lambda e: _accuracy(e["source_accuracy"]))]
    width = max(len(fmt(e)) for _, fmt in rows for e in evaluations) + 2
    return "\n".join(f"{name:<26}" + "".join(f"{fmt(e):>{width}}" for e in evaluations)
                     for name, fmt in rows)


def main(argv=None):
    args = parse_args(argv)
    if args.compare_run == args.run:
        raise UserError("--compare-run names the same run as --run; pass a different run")
    # Every run must exist before the slow imports and the data load.
    runs = [find_run(args.run, args.output_root, args.checkpoint)]
    if args.compare_run:
        runs.append(find_run(args.compare_run, args.output_root))

    # Both runs are scored on the same test images, those of --run's data folder.
    check_same_data({run.name: run.config for run in runs})
    test_sets = load_test_sets(runs[0].config, args.data_dir)
    evaluations = []
    for run in runs:
        evaluation = evaluate_run(run, test_sets, args.seed)
        print(format_report(evaluation))
        wrote = " and confusion_matrix.png" if evaluation["target_accuracy"] is not None else ""
        print(f"  wrote {os.path.join(args.output_root, 'logs', run.name, 'evaluation.json')}"
              f"{wrote}")
        evaluations.append(evaluation)
    if len(evaluations) > 1:
        print(format_comparison(evaluations))


if __name__ == "__main__":
    run_main(main)
