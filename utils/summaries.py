"""The one place that writes TensorBoard scalars and the per-epoch log.txt line."""
import os

import tensorflow as tf

WRITERS = ("hyperparameter", "train", "validation")


def create_writers(log_dir):
    """One summary writer per TensorBoard run: logs/<run>/{hyperparameter,train,validation}."""
    return {name: tf.summary.create_file_writer(os.path.join(log_dir, name)) for name in WRITERS}


def write_scalars(writer, scalars, step):
    """Writes {tag: value} at `step` with `writer`, e.g. {"loss/label_loss": 0.3}."""
    with writer.as_default(step=step):
        for tag, value in scalars.items():
            tf.summary.scalar(tag, value)


def format_validation_line(step, total_steps, whole, validation):
    """One human-readable line per validation point for logs/<run>/log.txt."""
    scalars = " ".join(f"{tag.split('/')[-1]}={value:.4f}" for tag, value in validation.items())
    sets = "whole test sets" if whole else "test subsets"
    return f"step {step}/{total_steps} ({sets}) | {scalars}"


def read_scalars(log_dir):
    """Reads every scalar a run logged: {writer: {tag: [(step, value), ...]}}, sorted by step."""
    from tensorflow.core.util import event_pb2

    scalars = {}
    for name in WRITERS:
        folder = os.path.join(log_dir, name)
        if not os.path.isdir(folder):
            continue
        tags = scalars.setdefault(name, {})
        for file_name in sorted(os.listdir(folder)):
            if "tfevents" not in file_name:
                continue
            for record in tf.data.TFRecordDataset(os.path.join(folder, file_name)):
                event = event_pb2.Event.FromString(record.numpy())
                for value in event.summary.value:
                    tags.setdefault(value.tag, []).append(
                        (event.step, float(tf.make_ndarray(value.tensor))))
        for points in tags.values():
            points.sort()
    return scalars
