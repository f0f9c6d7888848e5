"""The batch-norm statistics a run evaluates and saves: the target's own (AdaBN).

A keras.applications backbone normalises each layer by the statistics of the
batch in training and by running averages of them at evaluation. Off
ImageNet weights those averages are wrong at evaluation. They start at mean
0 and variance 1 and move by 0.1 % an update (MobileNetV3's momentum, 0.999),
they mix the source and target halves of each batch, and they average over a
network that kept changing. In inference mode the error compounds layer
after layer, until G_f's pooled features no longer depend on the image and
every image gets one class, while the training batches score 0.99
(docs/domains.md).

`bn_statistics`:
  target   before every evaluation, each trained batch-norm layer's mean and
           variance are recomputed on the target's training images (no label
           is read): the network in training mode, over fixed batches of up
           to TARGET_IMAGES images. This is AdaBN: "Revisiting Batch
           Normalization For Practical Domain Adaptation", Li et al., 2016
           (arXiv 1603.04779), Alg. 1, the target domain's own statistics in
           every batch-norm layer. It is also how `torch.optim.swa_utils.update_bn`
           recomputes the statistics of averaged weights (Izmailov et al.,
           "Averaging Weights Leads to Wider Optima", UAI 2018, Sec. 3.2),
           which applies to the weight average here too. The saved weights
           carry these statistics, so utils.predict and the exported model
           use them. The source test accuracy is read with them as well: the
           run's one model, as the target will use it.
  moving   Keras' running averages from training, as they are.

A network without batch norm (the paper's columns, small_resnet) and a backbone
whose batch norm is frozen (--freeze-backbone-bn, inference mode in training
too) have nothing to recompute: evaluation is then unchanged, bit for bit.
"""
import keras
import numpy as np
import tensorflow as tf

# Target images the statistics are computed on (all of them when the target has fewer).
TARGET_IMAGES = 2048


def trained_batch_norm_layers(model):
    """The BatchNormalization layers inside `model` (nested models included) that run in
    training mode when it trains: not frozen."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            if layer.trainable:
                found.append(layer)
        elif isinstance(layer, keras.Model):
            found += trained_batch_norm_layers(layer)
    return found


class TargetStatistics:
    """`recompute()`: the target's batch-norm statistics in `model` (a DANN Keras model).

    `images` are the target's training images; a seeded choice of up to
    TARGET_IMAGES of them, in batches of `batch_size`, is used every time, so a
    resumed run recomputes the same statistics from the same weights.
    """

    def __init__(self, model, images, batch_size, seed):
        self.feature_extractor = model.get_layer("feature_extractor")
        self.layers = trained_batch_norm_layers(self.feature_extractor)
        count = min(len(images), TARGET_IMAGES) // batch_size * batch_size
        if count == 0:  # fewer images than a batch: one batch of them all
            batch_size = count = len(images)
        order = np.sort(np.random.default_rng(seed).permutation(len(images))[:count])
        self.batches = [images[order[start:start + batch_size]]
                        for start in range(0, count, batch_size)]
        self.batch_statistics = tf.function(self._batch_statistics)

    def _batch_statistics(self, images):
        """Each layer's batch mean and variance on `images`, read from its moving statistics
        after a training-mode call at momentum 0 (which sets them to the batch's)."""
        self.feature_extractor(images, training=True)
        return ([tf.identity(layer.moving_mean) for layer in self.layers],
                [tf.identity(layer.moving_variance) for layer in self.layers])

    def recompute(self):
        """Sets every trained batch-norm layer's moving mean and variance to the target's
        population statistics: the mean of the batch means, and by the law of total
        variance the mean of the batch variances plus the variance of the batch means."""
        if not self.layers or not self.batches:
            return
        momenta = [layer.momentum for layer in self.layers]
        try:
            # Momentum 0 while this function is traced and run: a training-mode call then
            # leaves exactly its batch's statistics in the moving ones.
            for layer in self.layers:
                layer.momentum = 0.0
            per_batch = [self.batch_statistics(batch) for batch in self.batches]
        finally:
            for layer, momentum in zip(self.layers, momenta):
                layer.momentum = momentum
        for index, layer in enumerate(self.layers):
            means = np.stack([means[index].numpy() for means, _ in per_batch]).astype(np.float64)
            variances = np.stack([variances[index].numpy() for _, variances in per_batch])
            layer.moving_mean.assign(means.mean(axis=0).astype(np.float32))
            layer.moving_variance.assign(
                (variances.mean(axis=0) + means.var(axis=0)).astype(np.float32))


def target_statistics(model, data, config):
    """The run's TargetStatistics, or None when there is nothing to recompute (module
    docstring): `moving`, or no trained batch-norm layer."""
    if config.bn_statistics != "target":
        return None
    statistics = TargetStatistics(model, data.target_pool["images"], 2 * data.half_batch,
                                  config.target_val_seed)
    return statistics if statistics.layers else None
