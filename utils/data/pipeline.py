"""The tf.data training input: seeded, resumable, uint8 in memory."""
import numpy as np
import tensorflow as tf

from utils.io import UserError


def _index_batches(num_examples, batch_size, seed, stream_id, start_batch):
    """Endless batches of example indices; pass e is a permutation seeded by (seed, stream, e).

    Each pass yields num_examples // batch_size batches (the few examples left
    over differ from pass to pass). Being a pure function of its arguments,
    the stream restarts exactly at any batch, which makes resuming exact.
    """
    batches_per_pass = num_examples // batch_size
    if batches_per_pass == 0:
        raise UserError(f"a domain has {num_examples} training images, fewer than the "
                        f"{batch_size} per step; lower --batch-size")
    first_pass, offset = divmod(start_batch, batches_per_pass)

    def permutation(pass_index):
        noise = tf.random.stateless_uniform(
            [num_examples], seed=tf.stack([tf.constant(seed, tf.int64),
                                           stream_id * (1 << 32) + pass_index]))
        order = tf.argsort(noise)[:batches_per_pass * batch_size]
        return tf.data.Dataset.from_tensor_slices(tf.reshape(order, [batches_per_pass, batch_size]))

    return (tf.data.Dataset.range(first_pass, np.iinfo(np.int64).max)
            .flat_map(permutation).skip(offset))


def make_train_dataset(labelled_images, labelled_labels, unlabelled_images, half_batch, seed,
                       start_step=0):
    """Zipped (labelled images, labels, unlabelled images) batches, shuffled and repeated.

    Images stay uint8 in memory; only index batches flow through tf.data and
    the images are gathered per batch (normalisation happens in the model).
    `start_step` resumes the exact sequence a run from step 0 would see.
    """
    labelled_images = tf.constant(labelled_images)
    labelled_labels = tf.constant(labelled_labels, tf.int32)
    unlabelled_images = tf.constant(unlabelled_images)
    labelled = _index_batches(len(labelled_labels), half_batch, seed, 0, start_step)
    unlabelled = _index_batches(unlabelled_images.shape[0], half_batch, seed, 1, start_step)
    return (tf.data.Dataset.zip(labelled, unlabelled)
            .map(lambda source, target: (tf.gather(labelled_images, source),
                                         tf.gather(labelled_labels, source),
                                         tf.gather(unlabelled_images, target)))
            .prefetch(tf.data.AUTOTUNE))
