import numpy as np

from utils.data.pipeline import make_train_dataset


def _batches(start_step, count, seed=3):
    images = np.arange(50, dtype=np.uint8).reshape(50, 1, 1, 1) * np.ones((1, 2, 2, 3), np.uint8)
    labels = np.arange(50) % 10
    targets = 200 - images[:40]
    dataset = make_train_dataset(images, labels, targets, 8, seed, start_step=start_step)
    return [tuple(t.numpy() for t in batch) for batch in dataset.take(count)]


def test_each_pass_is_a_permutation_and_passes_differ():
    batches = _batches(0, 12)  # 50 // 8 = 6 batches per pass of the labelled domain
    first, second = (np.concatenate([b[0][:, 0, 0, 0] for b in batches[k:k + 6]]) for k in (0, 6))
    assert len(set(first)) == 48 and len(set(second)) == 48
    assert not np.array_equal(first, second)
    for images, labels, targets in batches:
        np.testing.assert_array_equal(images[:, 0, 0, 0] % 10, labels)  # labels follow images
        assert images.dtype == np.uint8 and targets.shape == (8, 2, 2, 3)


def test_starting_at_a_step_continues_the_same_sequence():
    full = _batches(0, 15)
    resumed = _batches(9, 6)
    for a, b in zip(full[9:], resumed):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    assert not np.array_equal(_batches(0, 1, seed=4)[0][0], full[0][0])
