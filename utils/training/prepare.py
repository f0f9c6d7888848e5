"""A run's data before training: held-out validation splits, training pools, what each half of
a batch holds, and the seeded training stream.

The labelled half of every batch comes from the source (the target in `target_only` mode),
the unlabelled half from the other domain; domain label 0 is the source and 1 the target
(Ganin & Lempitsky, 2015, Sec. 3.2: d_i = 0 for source and 1 for target samples).
"""
import dataclasses

import numpy as np

from utils.data import hold_out_source_validation, hold_out_target_validation
from utils.data.domains import evaluation_sets, pool_size_problem
from utils.data.splits import held_out_count
from utils.io import UserError


@dataclasses.dataclass
class RunData:
    """What the trainer reads of the two domains (utils/data/domains.py, Domain)."""

    source: object
    target: object
    source_pool: dict        # the source's training images (and labels) after the split
    target_pool: dict
    source_val: dict         # the validators' labelled source split (utils/validators.py)
    target_val: dict         # the labelled target split behind acc/target_val_acc
    test_sets: dict          # {"source"/"target": (images, labels) or None}
    train_images: tuple      # (labelled images, their labels, unlabelled images)
    labelled_domain: float   # the domain label of the labelled half: 0 source, 1 target
    half_batch: int


def prepare(config, source, target):
    """The splits and pools of one run, checked; a UserError names what does not fit."""
    half_batch = config.batch_size // 2
    if config.mode == "target_only" and not target.labelled:
        raise UserError(f"--mode target_only trains on the target's labels, but --target "
                        f"{target.spec} has none; give it class folders or use another mode")
    # The labelled validation split leaves the training pool before anything
    # else sees the target's training images, so no mode ever trains on it.
    # At most an eighth of the target's images, like the source split: 1,000 of MNIST-M's
    # 59,001, but a smaller target of the user's keeps most of its images for training.
    target_val_size = (held_out_count(config.target_val_size, len(target.train))
                       if target.labelled else 0)
    if target.labelled and target_val_size < config.target_val_size:
        print(f"target validation split: {target_val_size} {target.title} images, not "
              f"{config.target_val_size} (at most an eighth of the target's training images "
              "is held out)", flush=True)
    if not target.labelled:
        tested = target.test is not None and target.test_labels is not None
        accuracy = (f"the target accuracy is measured on its {len(target.test)} labelled test "
                    "images" if tested else "no target accuracy")
        print(f"the target {target.title}'s training images have no labels: no target "
              f"validation split, {accuracy}; the label-free validators still choose "
              "checkpoints (python -m utils.select)", flush=True)
    target_pool, target_val = hold_out_target_validation(target, target_val_size,
                                                         config.target_val_seed)
    # Likewise the source validation split of the validators (utils/validators.py)
    # leaves the source's training images in every mode, labelled or unlabelled.
    source_pool, source_val = hold_out_source_validation(source, config.source_val_size,
                                                         config.target_val_seed)
    if len(source_val["labels"]) < config.source_val_size:
        print(f"source validation split: {len(source_val['labels'])} {source.title} "
              f"images, not {config.source_val_size} (at most an eighth of the source's "
              "training images is held out)")
    test_sets = evaluation_sets(source, target, source_val)
    target_only = config.mode == "target_only"
    labelled, unlabelled = (target_pool, source_pool) if target_only else (source_pool, target_pool)
    for name, pool in (("the source", source_pool), ("the target", target_pool)):
        problem = pool_size_problem(name, len(pool["images"]), half_batch)
        if problem:
            raise UserError(problem)
    return RunData(source=source, target=target, source_pool=source_pool,
                   target_pool=target_pool, source_val=source_val, target_val=target_val,
                   test_sets=test_sets,
                   train_images=(labelled["images"], labelled["labels"], unlabelled["images"]),
                   labelled_domain=1.0 if target_only else 0.0, half_batch=half_batch)


def training_stream(data, config, start_step, refining, strategy):
    """The seeded stream of training batches from `start_step` (utils/data/pipeline.py),
    distributed by `strategy`.

    The refinement phase reads target images only: two independent streams of
    them take the place of the labelled and the unlabelled half (the labels are
    not used), numbered from the phase's first update.
    """
    import tensorflow as tf

    from utils.data.pipeline import make_train_dataset

    if refining:
        target = data.train_images[2]
        dataset = make_train_dataset(target, np.zeros(len(target), np.int32), target,
                                     data.half_batch, config.seed,
                                     start_step=start_step - config.adaptation_steps)
    else:
        dataset = make_train_dataset(*data.train_images, data.half_batch, config.seed,
                                     start_step=start_step)
    # Several workers: each computes the same stream and keeps its share of every
    # global batch (the stream comes from memory, not files, so there is no file to
    # shard; DATA is what AUTO would fall back to, said here to skip its warning).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))
