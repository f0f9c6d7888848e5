"""What each DANNConfig field may hold: the allowed values of the named choices, and
`check_fields`, the rules DANNConfig.validate applies (one line naming the first bad field
and how to fix it).

Kept apart from config/config.py so that the dataclass reads as the list of settings;
it needs no import of it (a config is any object with DANNConfig's attributes).
"""
import os

from model import NETWORKS
from utils.io import UserError

MODES = ("dann", "source_only", "target_only")
INPUT_NORMALISATIONS = ("mean", "instance")
STRATEGIES = ("default", "mirrored", "multi_worker")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
ON_COLLAPSE = ("rollback", "stop")
BN_STATISTICS = ("domain", "moving")
TARGET_TERMS_SCOPES = ("network", "label_head")

# Fields that must be > 0, and fields that must be >= 0.
POSITIVE = ("learning_rate", "epochs", "steps_per_epoch", "epoch_scale", "log_every_steps",
            "checkpoint_every_steps", "checkpoint_every_seconds", "max_to_keep",
            "keep_checkpoints_at_end", "eval_batch_size",
            "eval_every_steps", "steps_per_call", "vat_every", "refine_interval",
            "refine_learning_rate")
NON_NEGATIVE = ("lr_alpha", "lr_beta", "grl_gamma", "target_val_size", "entropy_weight",
                "diversity_weight", "pseudo_label_weight",
                "vat_weight", "domain_loss_weight", "clip_norm", "eval_subset", "source_val_size",
                "collapse_probe_size", "max_rollbacks", "refine_steps", "refine_kl_weight",
                "refine_entropy_weight", "refine_vat_weight", "backbone_lr_mult")


def check_choice(config, name, choices):
    value = getattr(config, name)
    if value not in choices:
        raise UserError(f"unknown {name} {value!r}; use one of {', '.join(choices)}")


def check_positive(config, name):
    if not getattr(config, name) > 0:
        raise UserError(f"{name} must be positive, got {getattr(config, name)}; "
                        f"pass --{name.replace('_', '-')} with a value > 0")


def check_fields(config):
    """Raises UserError naming the first invalid field of `config` and how to fix it."""
    for name, choices in (("mode", MODES), ("on_collapse", ON_COLLAPSE),
                          ("precision", PRECISIONS), ("strategy", STRATEGIES),
                          ("bn_statistics", BN_STATISTICS)):
        check_choice(config, name, choices)
    check_positive(config, "batch_size")
    if config.batch_size % 2:
        raise UserError(f"batch_size must be even to split into source and target halves, "
                        f"got {config.batch_size}; pass e.g. --batch-size {config.batch_size + 1}")
    for name in POSITIVE:
        # Those two come from the data when unset (the schedule's length, config/config.py).
        if getattr(config, name) is None and name in ("steps_per_epoch", "eval_every_steps"):
            continue
        check_positive(config, name)
    if config.num_classes is not None:
        check_positive(config, "num_classes")
    if config.network is not None:
        check_choice(config, "network", tuple(NETWORKS))
    for name in ("source", "target"):
        if not str(getattr(config, name)).strip():
            raise UserError(f"{name} is empty; pass --{name} mnist, mnist_m, a folder or a .npz")
    for name in NON_NEGATIVE:
        if getattr(config, name) < 0:
            raise UserError(f"{name} must be >= 0, got {getattr(config, name)}; pass "
                            f"--{name.replace('_', '-')} with a value >= 0")
    if not 0 <= config.momentum < 1:
        raise UserError(f"momentum must be in [0, 1), got {config.momentum}")
    if not 0 <= config.ema_decay < 1:
        raise UserError(f"ema_decay must be in [0, 1), got {config.ema_decay}; 0 turns it off")
    for name in ("entropy_start", "vat_start"):
        if not 0 <= getattr(config, name) < 1:
            raise UserError(f"{name} must be in [0, 1), got {getattr(config, name)}; pass "
                            f"--{name.replace('_', '-')} with a value in [0, 1)")
    check_positive(config, "vat_radius")
    if not 0 < config.vat_fraction <= 1:
        raise UserError(f"vat_fraction must be in (0, 1], got {config.vat_fraction}; pass "
                        f"--vat-fraction with a value in (0, 1], 1 for all target images")
    if not 0 < config.pseudo_label_threshold < 1:
        raise UserError(f"pseudo_label_threshold must be in (0, 1), got "
                        f"{config.pseudo_label_threshold}; pass --pseudo-label-threshold 0.9, say")
    if not config.entropy_start < config.pseudo_label_stop <= 1:
        raise UserError(f"pseudo_label_stop must be in (entropy_start, 1] = "
                        f"({config.entropy_start}, 1], got {config.pseudo_label_stop}; pass "
                        f"--pseudo-label-stop 1 to keep the term to the end")
    if config.pseudo_label_weight > 0 and config.ema_decay <= 0:
        raise UserError("pseudo_label_weight takes its labels from the weight average, which is "
                        "off; pass --ema-decay 0.999 or --pseudo-label-weight 0")
    if config.refine_steps and config.mode != "dann":
        raise UserError(f"refine_steps refines a domain-adapted model on the target, but mode is "
                        f"{config.mode!r}; use --mode dann or --refine-steps 0")
    check_choice(config, "input_norm", INPUT_NORMALISATIONS)
    check_choice(config, "target_terms_scope", TARGET_TERMS_SCOPES)
    shape = config.input_shape
    if shape is not None and (len(shape) != 3 or min(shape) <= 0 or shape[2] not in (1, 3)):
        raise UserError(f"input_shape must be height, width and 1 or 3 channels, got "
                        f"{shape}; pass e.g. --input-shape 64,64,3")
    if config.run_name is not None:
        check_run_name(config.run_name)


def check_run_name(name):
    """Raises UserError unless `name` can name a run's folders: a relative path without `..`,
    not colliding with config/'s code and not hidden behind a dot.

    logs/<run>, checkpoints/<run> and config/<run> are joined under the output
    root; an absolute name or a `..` component would put them elsewhere.
    """
    parts = str(name).replace("\\", "/").split("/")
    if not str(name).strip() or os.path.isabs(name) or ".." in parts \
            or all(part in ("", ".") for part in parts):
        raise UserError(f"run name {name!r} must stay inside the output root: a relative name "
                        "without '..', e.g. --run-name my_run (use --output-root to choose "
                        "where runs go)")
    # config/<run> shares config/ with the config package's code: a run named after a
    # module, or a hidden or cache folder, would collide with it or be hidden.
    first = [part for part in parts if part not in ("", ".")][0]
    if first.endswith(".py") or first.startswith("__init__") or first == "__pycache__":
        raise UserError(f"run name {name!r} collides with the code in config/; choose another "
                        "--run-name, e.g. my_run")
    hidden = next((part for part in parts if part.startswith(".") and part != "."), None)
    if hidden:
        raise UserError(f"run name {name!r} has a part starting with a dot ({hidden!r}), which "
                        "would hide its folders; choose another --run-name, e.g. my_run")
