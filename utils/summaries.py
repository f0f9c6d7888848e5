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


def format_epoch_line(epoch, epochs, step, train, validation):
    """One human-readable line per epoch for logs/<run>/log.txt."""
    def fmt(prefix, scalars):
        return " ".join(f"{prefix}{tag.split('/')[-1]}={value:.4f}" for tag, value in scalars.items())

    return f"epoch {epoch}/{epochs} step {step} | {fmt('train_', train)} | {fmt('val_', validation)}"
