"""Experiment configuration for DANN on MNIST -> MNIST-M.

The method is that of Ganin & Lempitsky, "Unsupervised Domain Adaptation by
Backpropagation" (ICML 2015, arXiv 1409.7495, Sec. 3 and 5.2.2; journal version
Ganin et al., JMLR 2016, arXiv 1505.07818). The field defaults below are the
`default` recipe, stated only here: the other recipes of config/recipes.py
state only how they differ from them; `--recipe paper` restores the paper's
settings. Every recipe setting was chosen on the labelled validation split
held out of MNIST-M train (`target_val_size`), never on the MNIST-M test set
(the runs behind each choice: docs/choosing-recipes.md).

Deviations of the default from the paper, and why:
  * Input normalisation: each image's channels are standardised
    (`input_norm="instance"`, Shu et al., ICLR 2018) instead of subtracting
    the dataset's pixel mean (the paper's "mean-subtracted" input, `mean`
    here: images scaled to [0, 1] minus the per-channel mean of both training
    sets). Chosen on the validation split (README).
  * Batch and length: 32 source + 32 target images per step for 32,000
    updates (4 epochs of 8,000 steps), instead of 64 + 64 for a length the
    paper does not state. The length fits the 8-minute budget of a default
    run on a 2-core CPU. The number of updates is epochs x steps_per_epoch and
    does not change with the batch size. On another source the epoch keeps
    MNIST's number of passes over the source (`steps_per_epoch` from the data,
    `scaled_steps_per_epoch`), so 600 images get a short schedule.
  * Loss weighting: L_y is the mean over the source half and L_d the mean
    over the whole batch (`domain_loss_weight=1`), as the authors' released
    Caffe code normalises them (the Office example of their gradient-reversal
    branch of Caffe, which also scales L_d by 0.1 there; we do not). Eq. 9 as
    printed, source mean plus target mean, is `domain_loss_weight=2`; the
    `paper` recipe uses it. Chosen on the validation split (README).
  * Held-out images: 1,000 MNIST-M training images (`target_val_size`) and
    1,000 MNIST training images (`source_val_size`, for the label-free
    validators of utils/validators.py) never enter training.
  * `source_only` keeps training the domain head behind a gradient-reversal
    coefficient of 0, so the features get no domain gradient (the paper's
    source-only baseline) while the domain accuracy still reports how
    separable the two domains are.
"""
import dataclasses
import json
import os
from typing import Optional, Tuple

# The allowed values live with the rules that check them; importable from here as well.
from config.checks import (INPUT_NORMALISATIONS, MODES, ON_COLLAPSE, PRECISIONS,  # noqa: F401
                           STRATEGIES, check_fields)
from utils.data import DATA_DIR
from utils.io import UserError, atomic_write_json, atomic_write_text

# Fields that, left unset (None), are filled from the data when a run starts.
FROM_DATA = ("input_shape", "num_classes", "class_names", "network", "steps_per_epoch")
# An epoch of the default recipe: 8,000 updates over MNIST's 59,000 training images (60,000
# less the 1,000 of the source validation split), at 32 source images an update.
MNIST_EPOCH_STEPS, MNIST_TRAIN_POOL = 8000, 59000
# The shortest epoch a small source gets (docs/own-domains.md, "How the schedule was chosen").
MIN_STEPS_PER_EPOCH = 250


# Keys of config.json that record the run rather than set it (`save`'s `record`).
RECORD_KEYS = ("device",)


# Values of fields added after the first release, for configs saved without them:
# those runs used mean subtraction, no held-out split and no recipe components.
LEGACY_VALUES = {"recipe": "none", "input_norm": "mean", "target_val_size": 0,
                 "ema_decay": 0.0, "entropy_weight": 0.0, "source_val_size": 0,
                 # Runs saved before rollbacks existed stop on a collapse (and their
                 # checkpoints have no rollback state to restore).
                 "on_collapse": "stop",
                 # and trained MNIST -> MNIST-M with the paper's MNIST network.
                 "source": "mnist", "target": "mnist_m", "network": "mnist"}


@dataclasses.dataclass
class DANNConfig:
    """All settings of one training run; every field is a train-script flag.

    Attributes:
      mode: `dann` (domain-adversarial), `source_only` (no domain gradient into the
        features, lower bound) or `target_only` (trained on labelled MNIST-M, upper bound).
      learning_rate: mu_0, the initial SGD learning rate of the annealing
        schedule mu_p = mu_0 / (1 + alpha * p) ** beta (Sec. 5.2.2).
      lr_alpha: alpha of the learning-rate schedule.
      lr_beta: beta of the learning-rate schedule.
      momentum: SGD momentum.
      clip_norm: if positive, every update's gradient is rescaled to at most this global
        L2 norm (over all weights, all loss terms together) before SGD applies it (Keras'
        `global_clipnorm`; Pascanu et al., ICML 2013); 0 leaves the gradients as they
        are. Under `mirrored` each replica clips its share before the replicas are summed.
      grl_gamma: gamma of the adaptation factor lambda_p = 2 / (1 + exp(-gamma * p)) - 1 (Sec. 5.2.2).
      batch_size: images per step, half source and half target (64 + 64 in the
        paper, 128 + 128 in the original TF2 repository). Must be even.
      input_shape: image height, width and channels; none takes them from the data (the
        source's first image; 3 channels if any domain is colour). When given, every
        image of another size is resized to it (bilinear, as Keras resizes).
      num_classes: number of classes; none takes it from the data (the
        source's class folders, or 10 for the built-in domains).
      source: the labelled source domain: mnist, mnist_m, a folder with one subfolder of
        images per class (optionally below train/ and test/), or a .npz with x_train,
        y_train, x_test, y_test (utils/data/domains.py).
      target: the target domain, as --source; it may also be a flat folder of
        unlabelled images (its labels, if any, are used only for evaluation
        and the validation split).
      target_test: the labelled images the target accuracy is measured on (its test
        split if it has one, else all of it); none uses the target's own test split.
      class_names: the class names, in label order; none takes them from the data
        (recorded in the run's config).
      network: the feature extractor (model/networks.py): a column of the
        paper, mnist, svhn or gtsrb, trained at the size the paper drew it
        for (28, 32, 40 pixels: other images are resized unless --input-shape
        is given), or small_resnet (any size; its parameters do not grow with
        the image), or a keras.applications backbone (resnet50,
        efficientnet_b0, mobilenet_v3_small); none means mnist, at 28x28.
      epochs: number of epochs, each of steps_per_epoch updates (with a fixed
        steps_per_epoch the batch size does not change the number of updates).
      steps_per_epoch: optimisation steps per epoch; none takes it from the
        source: 8,000 x (source training images / 59,000), i.e. at 32 source
        images an update the 4.3 passes over the source that an epoch of the
        default makes over MNIST (8,000 on MNIST), at least 250.
      epoch_scale: when steps_per_epoch is unset, that epoch times this factor, so that a
        recipe shortens its schedule on every pair alike (0.9375: 7,500 on MNIST).
      seed: seeds Python, NumPy, TensorFlow and the input pipeline.
      data_dir: folder of MNIST/mnist_data.pkl and MNIST_M/mnist_m_data.pkl (built-in domains).
      run_name: names logs/<run>, checkpoints/<run> and config/<run>; None: a timestamp.
      log_every_steps: how often the learning rate and lambda are logged.
      checkpoint_every_steps: how often a checkpoint is written (and every epoch's end).
      checkpoint_every_seconds: a checkpoint is also written when this many seconds have
        passed since the last one, so a kill loses at most about that much training.
      max_to_keep: checkpoints kept on disk during the run (`--keep-checkpoints`).
      keep_checkpoints_at_end: how many of the newest checkpoints a finished run
        keeps (at most max_to_keep): the older ones served a resume after a
        crash and the collapse guard's rollback, which a finished run no longer
        needs; --init-from starts from the newest.
      eval_batch_size: batch size of the compiled evaluation function.
      deterministic: turn on TensorFlow op determinism (bit-exact resume).
      strategy: `default` (one device), `mirrored` (tf.distribute over all
        visible devices) or `multi_worker` (over the processes TF_CONFIG lists,
        usually on several machines; utils/training/distribute.py).
      recipe: the named group of field values the run starts from (documented
        in config/recipes.py); any other flag given beside it overrides the
        recipe's value for that field.
      input_norm: `mean` (scale to [0, 1], subtract the per-channel pixel mean
        of both training sets: the paper's "mean-subtracted" input) or
        `instance` (standardise each image's channels: Shu et al., ICLR 2018).
      target_val_size: labelled target images held out of the target's training
        images (MNIST-M train by default) and out of the unlabelled pool, to
        choose recipe settings on; at most an eighth of them; 0 disables (as
        does an unlabelled target).
      target_val_seed: seed of that split; fixed so that all runs are judged on the same images.
      source_val_size: labelled source images held out of the source's
        training images (MNIST train by default; seeded by target_val_seed,
        never trained on in any mode) for the label-free model selection
        validators logged at every validation point (utils/validators.py,
        `python -m utils.select`); at most an eighth of them; 0 disables them.
      ema_decay: decay of an exponential moving average of the weights, evaluated and
        saved instead of the raw weights (utils/training/weight_average.py); 0 disables.
      entropy_weight: weight of the target conditional-entropy loss
        (utils/training/target_entropy.py, Grandvalet & Bengio 2004); 0 disables.
      entropy_start: training progress p in [0, 1) at which that weight starts to ramp up.
      diversity_weight: weight of log K minus the entropy of the target batch's mean
        prediction (utils/training/prediction_diversity.py; Krause et al. 2010), on the
        entropy term's schedule; 0 disables.
      pseudo_label_weight: weight of the cross-entropy to the weight average's class on the
        target images it gives >= pseudo_label_threshold (utils/training/pseudo_labels.py),
        on the entropy term's schedule; needs ema_decay; 0 disables.
      pseudo_label_threshold: the average's probability a target image needs for a label.
      pseudo_label_stop: progress p in (entropy_start, 1] from which that term is off again
        (its teacher pass skipped); 1 keeps it to the end.
      target_terms_scope: the weights the target terms train: "network" (G_f and G_y) or
        "label_head" (G_y only; G_f learns from the label and domain losses alone).
      vat_weight: weight of virtual adversarial training on target images (utils/training/
        virtual_adversarial.py, Miyato et al., TPAMI 2018; VADA's second target term, Shu
        et al., ICLR 2018); 0 disables; about doubles an update's cost while it is on.
      vat_radius: L2 norm of the virtual adversarial perturbation, in [0, 1] pixel units
        over the whole image (1.5 is DIRT-T's 3.5 at the same size per pixel).
      vat_start: progress p in [0, 1) at which the VAT weight starts to ramp up (free before).
      vat_every: VAT on every this many updates only, with this many times its weight
        there (the same gradient per update on average, at 1/k of its cost); 1: all.
      vat_fraction: VAT on this fraction of each update's target images only (the first
        of them; they come shuffled), at about that fraction of its cost; 1 is all.
      eval_every_steps: steps between validation points (TensorBoard `validation/`);
        None means total_steps // 20, i.e. 20 points. The end is always evaluated.
      eval_subset: images per test set at the intermediate validation points (a fixed,
        seeded subset; 0: the whole sets); the final point always uses the whole sets.
      domain_loss_weight: L_d is this times the mean domain loss over the whole
        batch: 1 is how the authors' Caffe code normalises it, 2 is Eq. 9 as
        printed (source mean plus target mean).
      steps_per_call: updates run by one call of the compiled loop; more amortise its
        overhead, a stop signal waits for at most this many; what is computed is the same.
      collapse_probe_size: labelled training images on which the collapse guard
        (utils/training/collapse_guard.py) checks, before every checkpoint and at the end,
        that G_f and G_y still have live ReLU units and an output that depends
        on the image; what a dead run does is `on_collapse`. 0 disables the
        guard.
      on_collapse: what a collapse found by the guard does: `rollback` restores
        the last good checkpoint and continues from it, skipping the batches
        trained on since (recorded in results.json, "rollbacks"); `stop` ends
        the run with exit status 4.
      max_rollbacks: rollbacks allowed per run before a collapse stops it.
      tensorboard_extras: at the end of the run, write its HParams, config,
        results and command (Text), target predictions, confusion matrix and
        samples (Images) and the features of up to 2,000 test images per
        domain (Projector) for TensorBoard (utils/tensorboard_extras.py).
      precision: `float32`, or a Keras mixed-precision policy: `mixed_bfloat16`
        (fast on CPUs with AVX512_BF16 or AMX, emulated and slower elsewhere)
        or `mixed_float16` (GPUs; with dynamic loss scaling). Variables,
        checkpoints and weight files stay float32; the input normalisation,
        logits, losses and lambda are float32 (utils/training/precision.py).
      refine_steps: updates of a refinement phase after the adaptation phase's
        epochs x steps_per_epoch (utils/training/refinement.py: DIRT-T, Shu et
        al., ICLR 2018, Sec. 5, Eq. 14): on target images only, no source and
        no domain loss; 0 (the default) has none. The adaptation phase's
        schedules (learning rate, lambda, the target terms' ramps) run over
        the adaptation phase alone, so it is the same with or without one.
      refine_interval: updates between the refreshes of the refinement's
        teacher, a frozen copy of the evaluated model (the weight average
        when there is one): DIRT-T's 5,000.
      refine_learning_rate: learning rate of the refinement's own Adam
        optimizer (beta_1 = 0.5, as DIRT-T's released code).
      refine_kl_weight: beta, the weight of KL(teacher || student) on target images in refinement.
      refine_entropy_weight: the weight of the target conditional entropy in refinement.
      refine_vat_weight: the weight of target VAT in refinement (radius `vat_radius`).
      backbone_weights: the starting weights of a keras.applications network
        (resnet50, efficientnet_b0, mobilenet_v3_small): imagenet (Keras
        fetches and caches them) or a local file, the one Keras caches in
        ~/.keras/models/ or a .weights.h5 saved from the same application
        without its top; none starts from random weights
        (utils/training/backbone.py).
      backbone_lr_mult: such a backbone learns at this times the learning
        rate of the heads (0.1, as DAN and the Transfer-Learning-Library's
        DANN fine-tune a pretrained backbone).
      freeze_backbone_bn: keep such a backbone's batch-norm statistics and
        scales as they start (not trained).
      bn_statistics: the batch-norm statistics a run evaluates with: domain
        recomputes them at every evaluation on the training images of the
        domain evaluated, and saves the target's (AdaBN, Li et al. 2016);
        moving keeps Keras' running averages. Only networks with trained
        batch norm have any (utils/training/batch_norm_statistics.py).
    """

    mode: str = "dann"
    learning_rate: float = 0.01
    lr_alpha: float = 10.0
    lr_beta: float = 0.75
    momentum: float = 0.9
    clip_norm: float = 0.0
    grl_gamma: float = 10.0
    batch_size: int = 64
    input_shape: Optional[Tuple[int, int, int]] = None
    num_classes: Optional[int] = None
    source: str = "mnist"
    target: str = "mnist_m"
    target_test: Optional[str] = None
    class_names: Optional[Tuple[str, ...]] = None
    network: Optional[str] = None
    epochs: int = 4
    steps_per_epoch: Optional[int] = None
    epoch_scale: float = 1.0
    seed: int = 42
    data_dir: str = DATA_DIR
    run_name: Optional[str] = None
    log_every_steps: int = 100
    checkpoint_every_steps: int = 1000
    checkpoint_every_seconds: float = 60.0
    max_to_keep: int = 3
    keep_checkpoints_at_end: int = 1
    eval_batch_size: int = 2000
    deterministic: bool = False
    strategy: str = "default"
    recipe: str = "default"
    input_norm: str = "instance"
    target_val_size: int = 1000
    target_val_seed: int = 0
    source_val_size: int = 1000
    ema_decay: float = 0.0
    entropy_weight: float = 0.0
    entropy_start: float = 0.5
    diversity_weight: float = 0.0
    pseudo_label_weight: float = 0.0
    pseudo_label_threshold: float = 0.9
    pseudo_label_stop: float = 1.0
    target_terms_scope: str = "network"
    vat_weight: float = 0.0
    vat_radius: float = 1.5
    vat_start: float = 0.5
    vat_every: int = 1
    vat_fraction: float = 1.0
    eval_every_steps: Optional[int] = None
    eval_subset: int = 2000
    domain_loss_weight: float = 1.0
    steps_per_call: int = 10
    collapse_probe_size: int = 500
    on_collapse: str = "rollback"
    max_rollbacks: int = 2
    tensorboard_extras: bool = True
    precision: str = "float32"
    refine_steps: int = 0
    refine_interval: int = 5000
    refine_learning_rate: float = 1e-3
    refine_kl_weight: float = 0.01
    refine_entropy_weight: float = 0.01
    refine_vat_weight: float = 0.01
    backbone_weights: Optional[str] = None
    backbone_lr_mult: float = 0.1
    freeze_backbone_bn: bool = False
    bn_statistics: str = "domain"

    def __post_init__(self):
        if self.steps_per_epoch is None and self.source == "mnist":
            # The default recipe's epoch, chosen on MNIST (the scaling below gives it too).
            self.steps_per_epoch = scaled_steps_per_epoch(MNIST_TRAIN_POOL, self.epoch_scale)
        self.space_validation_points()
        if self.input_shape is not None:
            self.input_shape = tuple(self.input_shape)
        if self.class_names is not None:
            self.class_names = tuple(self.class_names)
        self.validate()

    def space_validation_points(self):
        """eval_every_steps, when unset, from the schedule's length (once that is known)."""
        if self.eval_every_steps is None and self.steps_per_epoch and self.epochs > 0:
            # Spaced over the adaptation phase, so a refinement phase adds points at the
            # same spacing and leaves the adaptation phase's points where they were.
            self.eval_every_steps = max(self.adaptation_steps // 20, 1)

    def fill_schedule(self, source_pool_size):
        """steps_per_epoch, when unset, from the number of source training images the run
        trains on (after its validation split), then the validation points."""
        if self.steps_per_epoch is None:
            self.steps_per_epoch = scaled_steps_per_epoch(source_pool_size, self.epoch_scale)
        self.space_validation_points()

    @property
    def adaptation_steps(self):
        """Updates of the adaptation phase (epochs x steps_per_epoch): the length the
        schedules of Sec. 5.2.2 and the target terms' ramps run over."""
        return self.epochs * self.steps_per_epoch

    @property
    def total_steps(self):
        """Updates of the whole run: the adaptation phase, then any refinement phase."""
        return self.adaptation_steps + self.refine_steps

    def validate(self):
        """Raises UserError naming the first invalid field and how to fix it (config/checks.py)."""
        check_fields(self)

    def to_dict(self):
        return dataclasses.asdict(self)

    def save(self, folder, **record):
        """Writes config.txt (one `name: value` line per field) and config.json, with `record`
        (RECORD_KEYS: facts of the run, such as its device, that are not settings)."""
        items = {**self.to_dict(), **record}
        atomic_write_text(os.path.join(folder, "config.txt"),
                          "".join(f"{name}: {value}\n" for name, value in items.items()))
        atomic_write_json(os.path.join(folder, "config.json"), items)

    @classmethod
    def load(cls, path):
        """Reads a config.json written by `save`."""
        try:
            with open(path) as handle:
                items = json.load(handle)
        except FileNotFoundError:
            raise UserError(f"no config at {path}; is the run name right?") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(f"{path} is not a valid config.json; delete it or pick another run") from None
        for key in RECORD_KEYS:
            items.pop(key, None)
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(items) - known)
        if unknown:
            raise UserError(f"{path} has unknown keys {unknown}")
        # A run saved before a field existed was trained as the field's value here says.
        return cls(**{**LEGACY_VALUES, **items})


def scaled_steps_per_epoch(source_pool_size, epoch_scale=1.0):
    """The default epoch for `source_pool_size` training images: MNIST's 8,000 updates scaled
    by the source's size against MNIST's 59,000 (at the default 32 source images an update,
    the 4.3 passes an epoch makes over MNIST) and by `epoch_scale`, at least
    MIN_STEPS_PER_EPOCH updates. Like the fixed 8,000 before it, it does not change with
    the batch size: 8,000 on MNIST."""
    steps = round(MNIST_EPOCH_STEPS * source_pool_size / MNIST_TRAIN_POOL * epoch_scale)
    return max(steps, MIN_STEPS_PER_EPOCH)


def config_changes(saved, wanted, ignored=()):
    """"field old -> new" for each field of the `wanted` dict whose value differs from the
    `saved` dict's, in `wanted`'s order; lists and tuples alike (config.json stores tuples
    as lists)."""
    def shown(value):
        return tuple(value) if isinstance(value, (list, tuple)) else value

    return [f"{field} {shown(saved.get(field))!r} -> {shown(value)!r}"
            for field, value in wanted.items()
            if field not in ignored and shown(saved.get(field)) != shown(value)]

