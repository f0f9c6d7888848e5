"""The tf.data training input: seeded, resumable, uint8 in memory."""
import numpy as np
import tensorflow as tf


def _index_stream(num_examples, seed, stream_id, start_element):
    """Endless example indices: pass e is a permutation seeded by (seed, stream, e).

    Being a pure function of its arguments, the stream restarts exactly at any
    element, which is what makes resuming a run exact.
    """
    first_pass, offset = divmod(start_element, num_examples)

    def permutation(pass_index):
        noise = tf.random.stateless_uniform(
            [num_examples], seed=tf.stack([tf.constant(seed, tf.int64),
                                           stream_id * (1 << 32) + pass_index]))
        return tf.data.Dataset.from_tensor_slices(tf.argsort(noise))

    return (tf.data.Dataset.range(first_pass, np.iinfo(np.int64).max)
            .flat_map(permutation).skip(offset))


def make_train_dataset(labelled_images, labelled_labels, unlabelled_images, half_batch, seed,
                       start_step=0):
    """Zipped (labelled images, labels, unlabelled images) batches, shuffled and repeated.

    Images stay uint8 in memory; only index batches flow through tf.data and
    the images are gathered per batch (normalisation happens in the model).
    """
    labelled_images = tf.constant(labelled_images)
    labelled_labels = tf.constant(labelled_labels, tf.int32)
    unlabelled_images = tf.constant(unlabelled_images)
    start = start_step * half_batch
    labelled = (_index_stream(len(labelled_labels), seed, 0, start)
                .batch(half_batch, drop_remainder=True)
                .map(lambda idx: (tf.gather(labelled_images, idx), tf.gather(labelled_labels, idx))))
    unlabelled = (_index_stream(unlabelled_images.shape[0], seed, 1, start)
                  .batch(half_batch, drop_remainder=True)
                  .map(lambda idx: tf.gather(unlabelled_images, idx)))
    return (tf.data.Dataset.zip(labelled, unlabelled)
            .map(lambda source, target: (source[0], source[1], target))
            .prefetch(tf.data.AUTOTUNE))
