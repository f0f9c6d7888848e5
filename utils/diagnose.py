"""Replays a run's updates from one of its checkpoints and records what each update looked like.

    python -m utils.diagnose --run R --from-checkpoint ckpt-32000 --steps 2000

Restores checkpoints/<R>/ckpt-N (weights, optimizer state with its momentum,
the weight average) and applies the same updates the run applied from step
N: the input pipeline restarts exactly at any step, and the train step is the
trainer's own. Before each update it takes the gradient of every loss term on
its own (label L_y, domain L_d, and each recipe term: target entropy, VAT)
and records, per step:

  * each term's value and the norm of its gradient, over all weights and per
    layer of G_f, G_y and G_d, and the norm of their sum (what SGD applies,
    and what `--clip-norm` clips);
  * the norm of the update each layer then received (weights after minus
    before: the learning rate and SGD momentum included);
  * the live ReLU units of every layer on the collapse guard's probe images
    (utils/training/collapse_guard.py).

It writes logs/<R>/diagnostics/replay-<N>.csv (one row per step) and prints
the steps around the first one the guard would call collapsed. Nothing of
the run is changed: the replay trains a copy in memory. Without
`--deterministic` in the run's config, TensorFlow may sum in another order
than the original run did, so a replay can drift from it; the trainer's
per-window losses in the CSV show whether it did.
"""
import csv
import os

import numpy as np

from utils.io import ArgumentParser, UserError, atomic_save, run_main
from utils.runs import add_output_root_argument, add_run_argument, run_config, run_dirs


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_argument(parser, "run name (as --run-name of the training)")
    parser.add_argument("--from-checkpoint", required=True,
                        help="checkpoint of the run to start from, e.g. ckpt-32000")
    parser.add_argument("--steps", type=int, default=1000,
                        help="updates to replay (default: %(default)s)")
    add_output_root_argument(parser, "folder holding logs/, checkpoints/ and config/ "
                                     "(default: %(default)s)")
    parser.add_argument("--data-dir", default=None,
                        help="folder holding the pickles (default: the run's own)")
    parser.add_argument("--clip-norm", type=float, default=None,
                        help="replay with this global gradient-norm clip instead of the run's "
                        "(a counterfactual: what the same updates would have done clipped; "
                        "default: the run's own)")
    parser.add_argument("--stop-after-collapse", type=int, default=50,
                        help="steps to go on once the guard calls the model collapsed "
                        "(default: %(default)s)")
    args = parser.parse_args(argv)
    if args.steps <= 0:
        raise UserError(f"--steps must be positive, got {args.steps}")
    return args


def layer_groups(dann):
    """{"G_f/conv1": [variables], ...}: each layer's trainable variables, named by sub-model."""
    groups = {}
    for prefix, model in (("G_f", dann.feature_extractor), ("G_y", dann.label_classifier),
                          ("G_d", dann.domain_classifier)):
        for variable in model.trainable_variables:
            groups.setdefault(f"{prefix}/{variable.path.split('/')[0]}", []).append(variable)
    return groups


def make_probe(trainer):
    """A compiled function of one batch: each loss term of the adaptation objective
    (utils/training/objective.py), and its gradient norm per layer."""
    import tensorflow as tf

    adaptation = trainer.phases.steps["adaptation"]
    groups = layer_groups(trainer.dann)
    variables = [v for group in groups.values() for v in group]

    def norms(gradients):
        by_variable = dict(zip((id(v) for v in variables), gradients))
        per_layer = {name: tf.linalg.global_norm([by_variable[id(v)] for v in group])
                     for name, group in groups.items()}
        return tf.linalg.global_norm(gradients), per_layer

    @tf.function(autograph=False)
    def probe(labelled_images, labels, unlabelled_images):
        step = adaptation.global_step.read_value()
        with tf.GradientTape(persistent=True) as tape:
            terms, outputs = adaptation.objective.forward(
                (labelled_images, labels, unlabelled_images), step)
        stats, summed = {}, None
        for name, term in terms.items():
            # A term that does not reach a layer (L_d and G_y) gives None: a zero gradient.
            gradients = [tf.zeros(v.shape) if g is None else g
                         for v, g in zip(variables, tape.gradient(term, variables))]
            summed = gradients if summed is None else [a + b for a, b in zip(summed, gradients)]
            total, per_layer = norms(gradients)
            stats[f"{name}/loss"] = term
            stats[f"{name}/grad_norm"] = total
            stats.update({f"{name}/grad_norm/{layer}": value for layer, value in per_layer.items()})
        # The update's own gradient, all terms together: what --clip-norm would clip.
        stats["total/grad_norm"] = tf.linalg.global_norm(summed)
        correct = tf.equal(tf.argmax(outputs["class_logits"], axis=1, output_type=tf.int32), labels)
        stats["source_batch_accuracy"] = tf.reduce_mean(tf.cast(correct, tf.float32))
        stats["max_abs_logit"] = tf.reduce_max(tf.abs(outputs["class_logits"]))
        return stats

    return probe, groups


def replay(trainer, steps, stop_after_collapse=50):
    """Applies `steps` updates from the trainer's current step; returns one dict per update."""
    import tensorflow as tf

    probe, groups = make_probe(trainer)
    # The run's own update (utils/training/step.py), one per call.
    train_step = tf.function(trainer.phases.steps["adaptation"].update)
    iterator = iter(trainer.make_dataset())  # past any batches a rollback skipped
    rows, collapsed_at = [], None
    for _ in range(steps):
        step = trainer.step
        batch = next(iterator)
        hyperparameters = trainer.phases.hyperparameters(step)
        row = {"step": step,
               "learning_rate": float(hyperparameters["hyperparameter/learning_rate"]),
               "grl_lambda": float(hyperparameters["hyperparameter/grl_lambda"])}
        row.update({name: float(value) for name, value in probe(*batch).items()})
        before = {name: [v.numpy() for v in group] for name, group in groups.items()}
        train_step(batch)
        for name, group in groups.items():
            row[f"update_norm/{name}"] = float(np.sqrt(sum(
                np.sum((v.numpy() - old) ** 2) for v, old in zip(group, before[name]))))
        if trainer.collapse_guard:
            for layer, (live, units) in trainer.collapse_guard.live_units().items():
                row[f"live_units/{layer}"] = live / units
            if collapsed_at is None and trainer.collapse_guard.diagnosis():
                collapsed_at = step
        rows.append(row)
        if collapsed_at is not None and step - collapsed_at >= stop_after_collapse:
            break
    return rows, collapsed_at


def write_csv(path, rows):
    def write(tmp_path):
        with open(tmp_path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    atomic_save(path, write)


def summary_lines(rows, collapsed_at, context=5):
    """The rows around the first collapsed step (or the last few), the largest columns only."""
    index = next((i for i, row in enumerate(rows) if row["step"] == collapsed_at), len(rows) - 1)
    shown = rows[max(index - context, 0):index + 2]
    columns = ["step", "source_batch_accuracy", "max_abs_logit", "total/grad_norm"]
    columns += [key for key in rows[0] if key.endswith("/grad_norm") and key != "total/grad_norm"]
    columns += [key for key in rows[0] if key.startswith(("update_norm/G_y", "live_units/"))]
    lines = ["  ".join(f"{c.replace('grad_norm', 'g').replace('update_norm', 'du')}" for c in columns)]
    for row in shown:
        lines.append("  ".join(f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c])
                               for c in columns))
    return lines


def main(argv=None):
    args = parse_args(argv)
    config = run_config(args.run, args.output_root)
    checkpoint = os.path.join(run_dirs(args.output_root, args.run)["checkpoints"],
                              os.path.basename(args.from_checkpoint))
    if not os.path.exists(checkpoint + ".index"):
        raise UserError(f"no checkpoint {checkpoint}; list checkpoints/{args.run}/ for the ckpt-N "
                        "names it holds (a finished run keeps only its newest unless trained "
                        "with --keep-checkpoints-at-end N)")
    from utils.data import load_run_domains

    source, target = load_run_domains(config, args.data_dir)
    if args.clip_norm is not None:
        config.clip_norm = args.clip_norm
        config.validate()
    import keras
    import tensorflow as tf

    from utils.training.loop import Trainer

    if config.strategy == "multi_worker":
        # Replayed on this one process: the same updates, within float rounding.
        config.strategy = "default"
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    # The replay writes nothing of the run: its trainer gets a scratch output root, and
    # resumes from the run's checkpoint with a copy of the run's rollback record, as a
    # multi-worker run's worker resumes from the chief's.
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(config, source, target, output_root=scratch,
                          resume_root=args.output_root)
        trainer.restore(resume_from=checkpoint)
        start = trainer.step
        rows, collapsed_at = replay(trainer, args.steps, args.stop_after_collapse)
    suffix = "" if args.clip_norm is None else f"-clip{args.clip_norm:g}"
    path = os.path.join(run_dirs(args.output_root, args.run)["logs"], "diagnostics",
                        f"replay-{start}{suffix}.csv")
    write_csv(path, rows)
    print(f"replayed steps {start}-{rows[-1]['step']} of run {args.run}; "
          + (f"the guard calls the model collapsed after step {collapsed_at}" if collapsed_at
             is not None else "no collapse"))
    print("\n".join(summary_lines(rows, collapsed_at)))
    print(f"written to {path}")


if __name__ == "__main__":
    run_main(main)
