"""The batch-norm statistics a run evaluates and saves: each domain's own (AdaBN).

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
  domain   at every evaluation, each trained batch-norm layer's mean and
           variance are recomputed on the training images of the domain
           being evaluated (no label is read): the network in training
           mode, over fixed batches of up to IMAGES_PER_DOMAIN images. The
           source test set is scored with the source's statistics, the
           target's sets with the target's, which stay in the model: the
           saved weights, utils.predict and the exported model use the
           target's. This is AdaBN: Li et al., "Revisiting Batch
           Normalization For Practical Domain Adaptation", 2016 (arXiv
           1603.04779), Alg. 1, each domain's own statistics in every
           batch-norm layer. It is also how `torch.optim.swa_utils.update_bn`
           recomputes the statistics of averaged weights (Izmailov et al.,
           "Averaging Weights Leads to Wider Optima", UAI 2018, Sec. 3.2),
           which covers the weight average here too. The validators score
           the model with the target's statistics. A `source_only` run
           never reads a target image: it uses the source's statistics for
           every set, so that it stays the baseline without adaptation.
  moving   Keras' running averages from training, as they are.

A network without batch norm (the paper's columns, small_resnet) and a backbone
whose batch norm is frozen (--freeze-backbone-bn, inference mode in training
too) have nothing to recompute: evaluation is then unchanged, bit for bit.
"""
import keras
import numpy as np
import tensorflow as tf

# Training images of a domain its statistics are computed on (all of them when it has fewer).
IMAGES_PER_DOMAIN = 2048


def _layers_of(model, kind):
    """The layers of type `kind` inside `model`, nested models included."""
    found = []
    for layer in model.layers:
        if isinstance(layer, kind):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found += _layers_of(layer, kind)
    return found


def trained_batch_norm_layers(model):
    """The BatchNormalization layers inside `model` (nested models included) that run in
    training mode when it trains: not frozen."""
    return [layer for layer in _layers_of(model, keras.layers.BatchNormalization)
            if layer.trainable]


class DomainStatistics:
    """The batch-norm statistics of each domain in `model` (a DANN Keras model): `use(name)`
    puts those of domain `name` in its layers, `refresh()` forgets them after an update.

    `images` maps a domain's name to its training images; a seeded choice of up to
    IMAGES_PER_DOMAIN of them, in batches of `batch_size`, is used every time, so a resumed
    run computes the same statistics from the same weights.
    """

    def __init__(self, model, images, batch_size, seed):
        self.feature_extractor = model.get_layer("feature_extractor")
        self.layers = trained_batch_norm_layers(self.feature_extractor)
        self.dropouts = _layers_of(self.feature_extractor, keras.layers.Dropout)
        self.batches = {name: _fixed_batches(domain_images, batch_size, seed)
                        for name, domain_images in images.items()}
        self.batch_statistics = tf.function(self._batch_statistics)
        self.computed, self.current = {}, None

    def _batch_statistics(self, images):
        """Each layer's batch mean and variance on `images`, read from its moving statistics
        after a training-mode call at momentum 0 (which sets them to the batch's)."""
        self.feature_extractor(images, training=True)
        return ([tf.identity(layer.moving_mean) for layer in self.layers],
                [tf.identity(layer.moving_variance) for layer in self.layers])

    def compute(self, name):
        """Each layer's (mean, variance) over domain `name`'s fixed images: the mean of the
        batch means, and by the law of total variance the mean of the batch variances plus
        the variance of the batch means."""
        momenta = [layer.momentum for layer in self.layers]
        rates = [layer.rate for layer in self.dropouts]
        try:
            # Momentum 0 while this function is traced and run: a training-mode call then
            # leaves exactly its batch's statistics in the moving ones. No dropout either
            # (EfficientNet has it inside its blocks): the statistics are those of the network
            # as it is evaluated, and no random state moves.
            for layer in self.layers:
                layer.momentum = 0.0
            for layer in self.dropouts:
                layer.rate = 0.0
            images, batches = self.batches[name]
            per_batch = [self.batch_statistics(images[batch]) for batch in batches]
        finally:
            for layer, momentum in zip(self.layers, momenta):
                layer.momentum = momentum
            for layer, rate in zip(self.dropouts, rates):
                layer.rate = rate
        statistics = []
        for index in range(len(self.layers)):
            means = np.stack([means[index].numpy() for means, _ in per_batch]).astype(np.float64)
            variances = np.stack([variances[index].numpy() for _, variances in per_batch])
            statistics.append((means.mean(axis=0).astype(np.float32),
                               (variances.mean(axis=0) + means.var(axis=0)).astype(np.float32)))
        return statistics

    def use(self, name):
        """Puts domain `name`'s statistics in the model (computed once per `refresh`)."""
        if name == self.current:
            return
        if name not in self.computed:
            # Domains given the same images (a source_only run's) share one computation.
            twin = next((other for other in self.computed
                         if self.batches[other][0] is self.batches[name][0]), None)
            self.computed[name] = self.computed[twin] if twin else self.compute(name)
        for layer, (mean, variance) in zip(self.layers, self.computed[name]):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)
        self.current = name

    def refresh(self):
        """Forgets the statistics computed so far: the weights have changed."""
        self.computed, self.current = {}, None


def _fixed_batches(images, batch_size, seed):
    """(images, index batches): whole batches of a seeded choice of up to IMAGES_PER_DOMAIN
    of `images` (one batch of them all when there are fewer than `batch_size`), as indices,
    so that no copy of the images is kept."""
    count = min(len(images), IMAGES_PER_DOMAIN) // batch_size * batch_size
    if count == 0:
        batch_size = count = len(images)
    order = np.sort(np.random.default_rng(seed).permutation(len(images))[:count])
    return images, [order[start:start + batch_size] for start in range(0, count, batch_size)]


def domain_statistics(model, data, config):
    """The run's DomainStatistics, or None when there is nothing to recompute (module
    docstring): `moving`, or no trained batch norm. Its domains are the names the Evaluator
    asks for, "source" and "target"; in a source_only run both are the source's images."""
    if config.bn_statistics != "domain":
        return None
    source = data.source_pool["images"]
    target = source if config.mode == "source_only" else data.target_pool["images"]
    statistics = DomainStatistics(model, {"source": source, "target": target},
                                  2 * data.half_batch, config.target_val_seed)
    return statistics if statistics.layers else None
