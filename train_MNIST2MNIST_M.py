"""Trains DANN (Ganin & Lempitsky, 2015) from MNIST to MNIST-M, or a baseline.

    python train_MNIST2MNIST_M.py                          # DANN, default recipe
    python train_MNIST2MNIST_M.py --mode source_only       # lower bound
    python train_MNIST2MNIST_M.py --run-name r --resume    # continue run r

Every DANNConfig field is a flag (see config/config.py). Outputs go to
logs/<run>/ (TensorBoard, log.txt, results.json), checkpoints/<run>/ and
config/<run>/. Accuracy is reported at the final step; no model is ever
selected on target labels.
"""
import json
import os
import sys
import time

from config.config import DANNConfig, add_config_arguments, config_from_args
from utils.data import load_mnist_and_mnistm
from utils.io import ArgumentParser, UserError, ensure_writable_dir, run_main


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_arguments(parser)
    parser.add_argument("--resume", action="store_true",
                        help="continue --run-name from its latest checkpoint")
    parser.add_argument("--output-root", default=".",
                        help="folder holding logs/, checkpoints/ and config/")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser.parse_args(argv)


def resolve_config(args):
    """The run's config: from the flags, or (with --resume) the saved one, unchanged."""
    if not args.resume:
        config = config_from_args(args, run_name=args.run_name or time.strftime("%Y%m%d-%H%M%S"))
        saved = os.path.join(args.output_root, "config", config.run_name, "config.json")
        if os.path.exists(saved):
            raise UserError(f"run {config.run_name!r} already exists ({saved}); pass --resume to "
                            "continue it or choose another --run-name")
        return config
    if not args.run_name:
        raise UserError("--resume needs --run-name to say which run to continue")
    config = DANNConfig.load(os.path.join(args.output_root, "config", args.run_name, "config.json"))
    changed = [name for name, value in config_from_args(args, **config.to_dict()).to_dict().items()
               if getattr(args, name, None) is not None and getattr(args, name) != value]
    if changed:
        raise UserError(f"cannot change {', '.join(changed)} when resuming run {args.run_name!r}; "
                        "drop those flags or start a new run")
    return config


def main(argv=None):
    args = parse_args(argv)
    config = resolve_config(args)
    # Bad data or an unwritable output folder should fail in a second, not
    # after the TensorFlow import and model build.
    ensure_writable_dir(args.output_root)
    mnist, mnist_m = load_mnist_and_mnistm(config.data_dir, config.input_shape, config.num_classes)

    import keras
    import tensorflow as tf

    from utils.trainer import Diverged, Interrupted, Trainer

    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    print(f"run {config.run_name}: mode {config.mode}, seed {config.seed}, "
          f"{config.epochs} epochs x {config.steps_per_epoch} steps, batch {config.batch_size}")
    trainer = Trainer(config, mnist, mnist_m, output_root=args.output_root)
    try:
        results = trainer.fit(resume=args.resume, show_progress=not args.no_progress)
    except Interrupted as stop:
        print(f"stopped by {stop} at step {trainer.step}; checkpoint saved. Continue with: "
              f"python train_MNIST2MNIST_M.py --run-name {config.run_name} --resume", file=sys.stderr)
        sys.exit(stop.exit_status)
    except Diverged as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(3)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    run_main(main)
