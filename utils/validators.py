"""Label-free model selection for unsupervised domain adaptation.

In unsupervised domain adaptation no target labels exist, so a checkpoint (or
a hyperparameter) cannot honestly be chosen by target accuracy. A *validator*
scores a model from what a real user has: labelled source validation images
and unlabelled target images. The five here are those benchmarked by Musgrave
et al., "Three New Validators and a Large-Scale Benchmark Ranking for
Unsupervised Domain Adaptation" (arXiv 2208.07360, 2022), who found the simple
baselines often as good as the newer scores.

Convention: for every validator HIGHER IS BETTER. Scores that are naturally
minimised (entropy, the DEV risk) are negated here, so the best checkpoint of
any validator is its arg-max.

The target images come from the target's *training* images (the unlabelled
pool, without labels; MNIST-M train by default), never from its test set.
"""
import json
import os
import time

import numpy as np

from utils.data import seeded_subset_indices

# The order in which validators are computed, logged and reported.
NAMES = ("source_acc", "entropy", "im", "snd", "dev")
# Sizes of the fixed, seeded subsets scored at every validation point: small
# enough that all five validators cost well under a second per point.
SOURCE_VAL_IMAGES = 1000
SOURCE_TRAIN_IMAGES = 1000
TARGET_IMAGES = 1000
SND_TEMPERATURE = 0.05


def softmax(logits):
    """Row-wise softmax of a NumPy array, computed stably."""
    shifted = logits - np.max(logits, axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / np.sum(exp, axis=1, keepdims=True)


def _entropies(probabilities):
    """Per-row entropy (nats); 0 log 0 is taken as 0."""
    p = np.clip(probabilities, 1e-12, 1.0)
    return -np.sum(probabilities * np.log(p), axis=-1)


def source_accuracy(logits, labels):
    """Accuracy on the labelled source validation split: the classic baseline.

    It assumes source and target risks move together, which domain shift
    breaks; it is still the first baseline of Musgrave et al. (2022) and the
    selection rule of much UDA work (e.g. Ganin et al., JMLR 2016, Sec. 5.1.2,
    who contrast it with their reverse validation). Higher is better.
    """
    return float(np.mean(np.argmax(logits, axis=1) == np.asarray(labels)))


def target_entropy(logits):
    """Minus the mean entropy of the target predictions (higher is better).

    Confident target predictions are taken as a sign of good adaptation:
    Morerio, Cavazza & Murino, "Minimal-Entropy Correlation Alignment for
    Unsupervised Deep Domain Adaptation" (ICLR 2018), who select on it, and the
    "Entropy" validator of Musgrave et al. (2022). Negated, since lower entropy
    is better: 0 is the best possible score, -ln K the worst.
    """
    return -float(np.mean(_entropies(softmax(logits))))


def information_maximization(logits):
    """IM = H(mean prediction) - mean H(prediction) on target images (higher is better).

    The mutual information between inputs and predicted labels, estimated on
    the sample: Gomes, Krause & Perona, "Discriminative Clustering by
    Regularized Information Maximization" (NIPS 2010); Shi & Sha,
    "Information-Theoretical Learning of Discriminative Clusters for
    Unsupervised Domain Adaptation" (ICML 2012); benchmarked as the "IM"
    validator by Musgrave et al. (2022). Confident (low mean H) and diverse
    (high H of the mean) predictions score high: uniform predictions give 0,
    confident predictions balanced over K classes give ln K.
    """
    probabilities = softmax(logits)
    return float(_entropies(probabilities.mean(axis=0)) - np.mean(_entropies(probabilities)))


def soft_neighborhood_density(logits, temperature=SND_TEMPERATURE):
    """SND of Saito, Kim, Teterwak, Sclaroff, Darrell & Saenko, "Tune it the Right
    Way: Unsupervised Validation of Domain Adaptation via Soft Neighborhood
    Density" (ICCV 2021), Eq. 1-3. Higher is better.

    The target softmax outputs are L2-normalised; their cosine similarities,
    each row without its own entry, divided by the temperature (0.05 in the
    paper) and soft-maxed, give each sample's soft neighbourhood; SND is the
    mean entropy of those distributions. It is high when target predictions
    form dense clusters (each sample has many close neighbours), low when they
    are scattered.
    """
    probabilities = softmax(logits)
    normalized = probabilities / np.maximum(np.linalg.norm(probabilities, axis=1, keepdims=True),
                                            1e-12)
    similarity = normalized @ normalized.T / temperature
    # A sample is not its own neighbour (the paper drops the diagonal).
    np.fill_diagonal(similarity, -np.inf)
    return float(np.mean(_entropies(softmax(similarity))))


def density_ratio(source_train_features, target_features, source_val_features, seed=0):
    """w(x) = p_t(x) / p_s(x) on source validation features, from a domain classifier.

    Step 2 of deep embedded validation (You, Wang, Long & Jordan, "Towards
    Accurate Model Selection in Deep Unsupervised Domain Adaptation", ICML
    2019, Alg. 1): a logistic regression separates source-train from target
    features; by Bayes, w = p(target|x) / p(source|x) * n_s / n_t. The
    features are standardised first, and the probabilities clipped, so a
    perfectly separable pair gives large but finite weights.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    features = np.concatenate([source_train_features, target_features]).astype(np.float64)
    domains = np.concatenate([np.zeros(len(source_train_features)), np.ones(len(target_features))])
    # One BLAS thread: beside TensorFlow's threads (and a training run), a multi-threaded
    # fit of this size spends its time waiting; measured 14 ms with one thread, 170 ms without.
    with threadpool_limits(1):
        scaler = StandardScaler().fit(features)
        classifier = LogisticRegression(max_iter=100, tol=1e-3, random_state=seed)
        classifier.fit(scaler.transform(features), domains)
        p_target = np.clip(classifier.predict_proba(
            scaler.transform(np.asarray(source_val_features, np.float64)))[:, 1], 1e-6, 1 - 1e-6)
    return p_target / (1.0 - p_target) * len(source_train_features) / len(target_features)


def deep_embedded_validation(losses, weights):
    """The DEV risk of You et al. (ICML 2019), Alg. 1, step 3: an importance-weighted
    source validation loss with a control variate. Lower is better (not negated here).

    With L_w = W * L, eta = -Cov(L_w, W) / Var(W) and
    DEV = mean(L_w) + eta * mean(W) - eta. Since E[W] = 1 under the source
    distribution, the control variate keeps the estimate unbiased while
    cutting its variance. Cov is taken with L_w, as in the authors' released
    code (`np.cov(weighted_loss, weight)`). With constant weights (the domains
    cannot be told apart) Var(W) = 0, eta is taken as 0, and DEV is the plain
    mean of W * L, i.e. the mean source loss when W = 1.
    """
    losses, weights = np.asarray(losses, np.float64), np.asarray(weights, np.float64)
    weighted = weights * losses
    variance = np.var(weights, ddof=1) if len(weights) > 1 else 0.0
    eta = 0.0
    if variance > 1e-12:
        eta = -np.cov(weighted, weights)[0, 1] / variance
    return float(np.mean(weighted) + eta * np.mean(weights) - eta)


def dev_score(source_train_features, target_features, source_val_features, source_val_logits,
              source_val_labels, seed=0):
    """Minus the DEV risk (You et al., ICML 2019), so that higher is better."""
    weights = density_ratio(source_train_features, target_features, source_val_features, seed)
    log_probabilities = np.log(np.clip(softmax(source_val_logits), 1e-12, 1.0))
    losses = -log_probabilities[np.arange(len(source_val_labels)), np.asarray(source_val_labels)]
    return -deep_embedded_validation(losses, weights)


class ValidatorSuite:
    """All five validators of one run, scored at every validation point.

    Built from the trainer's data once: fixed, seeded subsets of the labelled
    source validation split, of the source training pool (DEV's domain
    classifier) and of the unlabelled target training pool. The target test
    set, and any target label, is never given to it. `outputs(images)` is a
    compiled function returning (G_f features, class logits) of the model being
    evaluated.

    It also keeps the run's record: logs/<run>/validators.json (every point's
    scores, plus the target test accuracy that the trainer computes anyway,
    under `report_only`: for the study, never for choosing) and the best-so-far
    weights of each validator, checkpoints/<run>/best-<name>.weights.h5.
    """

    def __init__(self, source_val, source_train, target_train, outputs, log_dir, checkpoint_dir,
                 seed=0, batch_size=2000):
        rng = np.random.default_rng(seed)
        keep = seeded_subset_indices(len(source_val["images"]), SOURCE_VAL_IMAGES, rng)
        self.source_val_images = source_val["images"][keep]
        self.source_val_labels = np.asarray(source_val["labels"])[keep].astype(np.int64)
        self.source_train_images = source_train[
            seeded_subset_indices(len(source_train), SOURCE_TRAIN_IMAGES, rng)]
        # Images only: the target labels never reach the validators.
        self.target_images = target_train[
            seeded_subset_indices(len(target_train), TARGET_IMAGES, rng)]
        self.outputs, self.batch_size, self.seed = outputs, batch_size, seed
        self.path = os.path.join(log_dir, "validators.json")
        self.checkpoint_dir = checkpoint_dir
        self.record = {"validators": list(NAMES), "higher_is_better": True,
                       "points": [], "best": {}}

    def _apply(self, images):
        """(features, logits) of `images`, in batches."""
        from utils.training.evaluation import apply_in_batches

        return apply_in_batches(self.outputs, images, self.batch_size)

    def scores(self):
        """{validator: score} of the model as it is now; higher is better for all."""
        val_features, val_logits = self._apply(self.source_val_images)
        train_features, _ = self._apply(self.source_train_images)
        target_features, target_logits = self._apply(self.target_images)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):  # see density_ratio
            return {
                "source_acc": source_accuracy(val_logits, self.source_val_labels),
                "entropy": target_entropy(target_logits),
                "im": information_maximization(target_logits),
                "snd": soft_neighborhood_density(target_logits),
                "dev": dev_score(train_features, target_features, val_features, val_logits,
                                 self.source_val_labels, self.seed),
            }

    def load(self, up_to_step=None):
        """Continues the record of a resumed run (a no-op for a new one), without the points
        after `up_to_step`: the run scores those steps again. The best-so-far weights are
        kept as they are: each is the model of a step this run reached."""
        if os.path.exists(self.path):
            with open(self.path) as handle:
                self.record = json.load(handle)
            if up_to_step is not None:
                self.record["points"] = [p for p in self.record["points"] if p["step"] <= up_to_step]

    def update(self, step, scores, report_only, save_weights, seconds=None):
        """Records one point, and saves the weights for every validator whose score improved.

        `save_weights(path)` writes the evaluated model's weights. Ties keep the
        earlier checkpoint. A point at a step already recorded replaces it.
        """
        from utils.io import atomic_save, atomic_write_json, link_or_copy

        started = time.perf_counter()
        points = [p for p in self.record["points"] if p["step"] != step]
        point = {"step": step, "scores": scores, "report_only": report_only}
        points.append(point)
        self.record["points"] = sorted(points, key=lambda p: p["step"])
        improved = [name for name in NAMES
                    if np.isfinite(scores[name]) and (name not in self.record["best"]
                                                      or scores[name] > self.record["best"][name]["score"])]
        first = None
        for name in improved:
            path = os.path.join(self.checkpoint_dir, f"best-{name}.weights.h5")
            if first is None:
                atomic_save(path, save_weights)
                first = path
            else:
                # The same weights again: a hard link to the file just written, so that
                # five validators agreeing on a step store its weights once on disk.
                atomic_save(path, lambda tmp, source=first: link_or_copy(source, tmp))
            self.record["best"][name] = {"step": step, "score": scores[name],
                                         "checkpoint": os.path.basename(path)}
        if seconds is not None:
            # What this point cost: the scoring (`seconds`) plus the checkpoints saved.
            point["seconds"] = round(seconds + time.perf_counter() - started, 4)
        atomic_write_json(self.path, self.record)
        return improved
