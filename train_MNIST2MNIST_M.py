"""Trains DANN (Ganin & Lempitsky, 2015) from MNIST to MNIST-M, or a baseline, or between
any two domains of the user's own images.

    python train_MNIST2MNIST_M.py                          # DANN, default recipe
    python train_MNIST2MNIST_M.py --mode source_only       # lower bound
    python train_MNIST2MNIST_M.py --run-name r --resume    # continue run r
    python train_MNIST2MNIST_M.py --source my/source --target my/target   # your own folders

Every DANNConfig field is a flag (see config/config.py). Outputs go to
logs/<run>/ (TensorBoard, log.txt, results.json), checkpoints/<run>/ and
config/<run>/. Accuracy is reported at the final step; no model is ever
selected on target labels.

When a built-in domain is used and --data-dir holds neither pickle, they are
built first, exactly as `python create_mnistm.py --out-dir <data-dir>` would
(same input lookup, same seed), so one command trains on a fresh machine.
Other domains (--source, --target, --target-test) are image folders or .npz
files: utils/data/domains.py.
"""
import sys

import create_mnistm
from config.cli import add_config_arguments, resolve_config
from model import NETWORKS
from utils.data import load_run_domains
from utils.data.domains import fill_config, is_builtin
from utils.device import describe_device
from utils.io import ArgumentParser, UserError, ensure_writable_dir, run_main, to_json
from utils.runs import add_output_root_argument, run_dirs
from utils.training import distribute, outcome
from utils.training.init_from import check_start_from, copy_run
from utils.training.run_lock import delete_run, run_writer


def build_parser():
    """The command line: one flag per DANNConfig field, plus the run and data flags."""
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_arguments(parser)
    parser.add_argument("--config", metavar="FILE",
                        help="start a new run from a saved config.json (config/<run>/config.json); "
                        "flags given beside it override its values (default: off)")
    parser.add_argument("--resume", action="store_true",
                        help="continue --run-name from its newest intact checkpoint, or from "
                        "step 0 when it has none (default: off)")
    parser.add_argument("--resume-from", metavar="CHECKPOINT",
                        help="continue --run-name from this checkpoint, e.g. ckpt-2000 "
                        "(implies --resume; default: the newest intact one)")
    parser.add_argument("--init-from", metavar="RUN",
                        help="start this new run from RUN's finished adaptation phase: RUN's "
                        "last checkpoint and logs are copied, and only the refinement phase "
                        "(--refine-steps) is trained; RUN must have the same settings "
                        "otherwise (utils/training/init_from.py; default: off)")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the run's logs, checkpoints and config, then train it anew "
                        "(default: off)")
    add_output_root_argument(parser, "folder holding logs/, checkpoints/ and config/ "
                                     "(default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true",
                        help="hide the progress bars (default: off)")
    create_mnistm.add_source_arguments(
        parser, use=", to build the pickles when --data-dir holds none")
    return parser


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    # The command as typed, for the run's TensorBoard Text.
    args.command = "python train_MNIST2MNIST_M.py " + " ".join(
        sys.argv[1:] if argv is None else map(str, argv))
    if args.resume_from is not None:
        args.resume = True
    if args.overwrite and args.resume:
        raise UserError("--overwrite deletes the run that --resume would continue; pass one of them")
    if args.init_from and args.resume:
        raise UserError("--init-from starts a new run, and --resume continues one; pass one of them")
    return args


def main(argv=None):
    args = parse_args(argv)
    config = resolve_config(args)
    task = distribute.run_task(config, args.run_name, args.init_from)
    with distribute.leaving_on_bad_input(task):
        prepared = prepare_run(args, config, task)
    if prepared:
        start_run(args, config, task, *prepared)


def prepare_run(args, config, task):
    """Everything before TensorFlow: the ended-run check, the output folder, the data and
    the starting run. Returns (source, target, collapse to resume), or None when there is
    nothing to train; bad input is a UserError here, in a second."""
    collapsed, notice = outcome.ended_run(config, args.output_root) if args.resume else (None, None)
    if notice:
        print(notice)
        return None
    # Bad data or an unwritable output folder fail in a second, before TensorFlow loads.
    if task is None or task.is_chief:
        ensure_writable_dir(args.output_root)
    create_mnistm.ensure_pickles(config.data_dir, args.mnist_path, args.bsds_path, args.resume,
                                 builtin_used=any(map(is_builtin, (config.source, config.target,
                                                                   config.target_test))))
    source, target = load_run_domains(config)
    chosen = config.network
    fill_config(config, source, target)
    print(f"domains: source {source.title} ({len(source.train)} training images), target "
          f"{target.title} ({len(target.train)}, {'labelled' if target.labelled else 'unlabelled'}"
          f"); {len(config.class_names)} classes; input {'x'.join(map(str, config.input_shape))}; "
          f"network {config.network}" + ("" if chosen else " (the default; --network "
                                         f"picks one of {', '.join(NETWORKS)})"), flush=True)
    if args.init_from:
        check_start_from(config, args.init_from, args.output_root)
    if config.backbone_weights and not args.resume:
        from utils.training import backbone

        backbone.check_weights(config)  # a bad file is one line, before anything is written
    return source, target, collapsed


def start_run(args, config, task, source, target, collapsed):
    """The strategy, the run's writer and the Trainer, then training to its outcome."""
    import keras
    import tensorflow as tf

    from utils.training.loop import Trainer

    # Before any other TensorFlow op: MultiWorkerMirroredStrategy sets up the collective ops.
    strategy = distribute.create_strategy(config.strategy)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    print(f"run {config.run_name}: mode {config.mode}, seed {config.seed}, "
          f"{config.epochs} epochs x {config.steps_per_epoch} steps, batch {config.batch_size}; "
          f"{describe_device()}"
          + (f"; {task.name} of {task.num_workers} workers"
             + (" (the chief: it writes the run)" if task.is_chief else
                " (writes nothing to the run; the chief does)") if task else ""))
    with run_writer(args.output_root, config.run_name, task) as (lock, output_root, resume_root):
        if lock and args.overwrite:
            delete_run(args.output_root, config.run_name, lock)
        if args.init_from:
            copy_run(config, args.init_from, args.output_root)
            print(f"run {config.run_name}: starting from run {args.init_from}'s step "
                  f"{config.adaptation_steps} (its adaptation phase), then "
                  f"{config.refine_steps} refinement steps", flush=True)
        with outcome.before_training(config):
            trainer = Trainer(config, source, target, output_root=output_root,
                              strategy=strategy, resume_root=resume_root)
        if args.resume_changes:
            from utils.summaries import append_log_line

            line = (f"resumed after a divergence with {', '.join(args.resume_changes)} "
                    "(from the resumed step on)")
            print(line, flush=True)
            append_log_line(trainer.dirs["logs"], line)
        # A run started from another run continues from the checkpoint copied into it.
        resume = args.resume or bool(args.init_from)
        results = outcome.train(trainer, args.output_root, resume=resume,
                                show_progress=not args.no_progress, resume_from=args.resume_from,
                                command=args.command, collapsed=collapsed)
    print(to_json(results, indent=2))
    dirs = run_dirs(args.output_root, config.run_name)
    if task is None or task.is_chief:
        print(f"run {config.run_name} saved: logs and results.json in {dirs['logs']} "
              f"(tensorboard --logdir {dirs['logs']}), weights in {dirs['checkpoints']}, "
              f"config in {dirs['config']}", flush=True)


if __name__ == "__main__":
    run_main(main)
