"""The one place that writes TensorBoard scalars and the per-epoch log.txt line.

The scalars of a run, by writer (logs/<run>/<writer>/), each written at step t:

hyperparameter/  of the update at t (pure functions of the step)
  hyperparameter/learning_rate  SGD's mu_p (Sec. 5.2.2); in the refinement phase, Adam's rate
  hyperparameter/grl_lambda     lambda_p; 0 outside `dann` mode and in the refinement phase
train/  means over the logging window that ends at t (utils/training/window_sums.py)
  loss/label_loss       L_y: cross-entropy over the labelled half's images, unweighted
  loss/domain_loss      L_d: binary cross-entropy over the batch's images, unweighted
  loss/<term>           each recipe term on the unlabelled half (utils/training/objective.py,
                        TARGET_TERMS: loss/entropy, loss/vat), weighted as minimised
  loss/total_loss       the objective as minimised, per update: L_y + domain_loss_weight * L_d
                        + the recipe terms; in the refinement phase, Eq. 14's weighted sum
  acc/source_label_acc  accuracy on the labelled half: source images (acc/target_label_acc
                        instead in target_only mode, where the labelled half is the target)
  acc/label_acc         the same number under the original repository's tag (its plots,
                        utils/plot_curves.py, read it)
  acc/domain_acc        G_d's accuracy over the batch
  loss/refine_kl, loss/refine_entropy, loss/refine_vat
                        the refinement phase's terms (utils/training/refinement.py), unweighted
  acc/teacher_agreement how often the student's class is the refinement teacher's
validation/  of the evaluated model at t, on the test sets (whole, or fixed subsets)
  loss/label_loss       cross-entropy on the target test set
  loss/domain_loss      G_d's binary cross-entropy over both test sets pooled
  loss/total_loss       the sum of those two (no recipe term: they are training losses)
  acc/target_label_acc  accuracy on the target test set (the paper's Table 1 number)
  acc/label_acc         the same number under the original repository's tag
  acc/source_label_acc  accuracy on the source test set
  acc/domain_acc        G_d's accuracy over both test sets pooled
  acc/target_val_acc    accuracy on the held-out labelled target training images
  validator/<name>      the label-free validators' scores (utils/validators.py)

Each tag says one thing, and no two say the same, but for acc/label_acc, the
original's tag, kept beside the name that says its domain.
"""
import os

import tensorflow as tf

WRITERS = ("hyperparameter", "train", "validation")
# Validation tags left out of the log.txt line: each repeats another tag of the line, which
# keeps the fields it had before the tag existed.
NOT_IN_LOG_LINE = ("acc/target_label_acc",)


def create_writers(log_dir):
    """One summary writer per TensorBoard run: logs/<run>/{hyperparameter,train,validation}."""
    return {name: tf.summary.create_file_writer(os.path.join(log_dir, name)) for name in WRITERS}


def write_scalars(writer, scalars, step):
    """Writes {tag: value} at `step` with `writer`, e.g. {"loss/label_loss": 0.3}."""
    with writer.as_default(step=step):
        for tag, value in scalars.items():
            tf.summary.scalar(tag, value)


def truncate_events(log_dir, step):
    """Drops what a run logged after `step` from its event files.

    A run resumed from its checkpoint at `step` logs the later steps again;
    without this, a kill after that checkpoint would leave every such step
    twice in TensorBoard. The training and validation scalars of `step`
    itself were written before its checkpoint and stay; the hyperparameters
    of `step` describe the update that follows it, so they go. A last record
    cut short by the kill is dropped. Each writer's events are rewritten into
    its first event file, atomically; untouched folders are not rewritten.
    """
    from tensorflow.core.util import event_pb2

    from utils.io import atomic_save

    for name in WRITERS:
        folder = os.path.join(log_dir, name)
        files = sorted(f for f in os.listdir(folder) if "tfevents" in f) if os.path.isdir(folder) else []
        if not files:
            continue
        last_kept = step - 1 if name == "hyperparameter" else step
        kept, seen, dropped = [], set(), False
        for index, file_name in enumerate(files):
            try:
                for record in tf.data.TFRecordDataset(os.path.join(folder, file_name)):
                    data = record.numpy()
                    event = event_pb2.Event.FromString(data)
                    if event.HasField("summary") and event.step > last_kept:
                        dropped = True
                    elif data in seen:
                        # A kill between the rewrite below and its removals leaves the later
                        # files' events twice; each event carries its wall time, so a copy
                        # is the same bytes.
                        dropped = True
                    elif index == 0 or not event.HasField("file_version"):
                        kept.append(data)  # one file_version header, the first file's
                        seen.add(data)
            except tf.errors.DataLossError:
                dropped = True  # a record cut short by the kill
        if not dropped:
            continue

        def write(tmp_path, records=kept):
            with tf.io.TFRecordWriter(tmp_path) as writer:
                for record in records:
                    writer.write(record)

        atomic_save(os.path.join(folder, files[0]), write)
        for file_name in files[1:]:
            os.remove(os.path.join(folder, file_name))


def format_validation_line(step, total_steps, whole, validation):
    """One human-readable line per validation point for logs/<run>/log.txt: every validation
    scalar but the names that repeat another (NOT_IN_LOG_LINE), so that the line keeps the
    fields it always had."""
    scalars = " ".join(f"{tag.split('/')[-1]}={value:.4f}" for tag, value in validation.items()
                       if tag not in NOT_IN_LOG_LINE)
    sets = "whole test sets" if whole else "test subsets"
    return f"step {step}/{total_steps} ({sets}) | {scalars}"


def append_log_line(log_dir, line):
    """Prints `line` and appends it to logs/<run>/log.txt."""
    print(line, flush=True)
    with open(os.path.join(log_dir, "log.txt"), "a") as log:
        log.write(line + "\n")


def read_scalars(log_dir, writers=WRITERS, tag_names=None, wall_times=False):
    """Reads every scalar a run logged: {writer: {tag: [(step, value), ...]}}, sorted by step;
    with `wall_times`, (step, value, wall time in seconds since the epoch) triples.

    `tag_names` ({writer: {tag in the files: tag returned}}) keeps and renames
    only those tags, e.g. to read the original repository's event files under
    ours. Values written as tensors (TF2) and as `simple_value`s (TF1) both read.
    """
    from tensorflow.core.util import event_pb2

    from utils.io import UserError

    scalars = {}
    for name in writers:
        folder = os.path.join(log_dir, name)
        if not os.path.isdir(folder):
            continue
        tags = scalars.setdefault(name, {})
        rename = None if tag_names is None else tag_names.get(name, {})
        for file_name in sorted(os.listdir(folder)):
            if "tfevents" not in file_name:
                continue
            path = os.path.join(folder, file_name)
            try:
                for record in tf.data.TFRecordDataset(path):
                    event = event_pb2.Event.FromString(record.numpy())
                    for value in event.summary.value:
                        if rename is not None and value.tag not in rename:
                            continue
                        tag = value.tag if rename is None else rename[value.tag]
                        point = (event.step, _scalar_value(value))
                        tags.setdefault(tag, []).append(
                            point + (event.wall_time,) if wall_times else point)
            except tf.errors.DataLossError:
                raise UserError(f"{path} is truncated or not an event file; delete it or copy "
                                "it again") from None
        for points in tags.values():
            points.sort()
    return scalars


def _scalar_value(value):
    """A scalar summary value, written as a tensor (TF2) or a simple_value (TF1)."""
    if value.WhichOneof("value") == "simple_value":
        return float(value.simple_value)
    return float(tf.make_ndarray(value.tensor))
