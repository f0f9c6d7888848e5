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
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time

import create_mnistm
from config.cli import add_config_arguments, config_from_args
from config.config import DANNConfig
from utils.data import MNIST_M_PICKLE, MNIST_PICKLE, load_run_domains
from utils.data.domains import fill_config, is_builtin
from utils.io import (ArgumentParser, UserError, ensure_writable_dir, free_space, one_line,
                      run_main)
from utils.training.run_lock import RunLock, process_alive
from utils.runs import check_run_name, config_file, results_file, run_dirs

# What TensorFlow's file writers say when the disk or the folder fails them.
WRITE_FAILURES = ("No space left", "Disk quota", "Read-only file system", "Permission denied",
                  "Input/output error")


def build_parser():
    """The command line: one flag per DANNConfig field, plus the run and data flags."""
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_arguments(parser)
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
    parser.add_argument("--output-root", default=".",
                        help="folder holding logs/, checkpoints/ and config/ "
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


def cluster_task(config, args):
    """This process's Task in a `--strategy multi_worker` run (None for other strategies)."""
    if config.strategy != "multi_worker":
        return None
    from utils.training.distribute import cluster_task as task_from_tf_config

    task = task_from_tf_config()
    if not args.run_name:
        raise UserError("--strategy multi_worker needs --run-name: every worker must name the "
                        "same run")
    if args.init_from:
        raise UserError("--init-from is not supported with --strategy multi_worker; train the "
                        "refinement phase on one process")
    return task


def ensure_pickles(data_dir, mnist_path=None, bsds_path=None, resume=False):
    """Builds MNIST and MNIST-M into `data_dir` when it holds neither pickle (issue 10).

    Only for a new run, only into the default folder or an empty or missing one,
    and only when both are missing: a folder with one
    pickle is damaged, and rebuilding would silently replace the other; a
    resumed run must continue on the data it started with. Loading then names
    the missing file. --mnist-path/--bsds-path are refused when they would be
    ignored, rather than silently dropped.
    """
    present = [os.path.exists(os.path.join(data_dir, sub))
               for sub in (MNIST_PICKLE, MNIST_M_PICKLE)]
    if (mnist_path or bsds_path) and resume:
        raise UserError("--mnist-path/--bsds-path cannot be used with --resume: a resumed run "
                        "continues on the data it started with; drop them")
    if (mnist_path or bsds_path) and any(present):
        raise UserError(f"{data_dir} already holds pickles, so --mnist-path/--bsds-path would be "
                        "ignored; drop them, or rebuild with `python create_mnistm.py --out-dir "
                        f"{data_dir}` and those flags")
    if resume or any(present):
        return
    # Built on first use only into the default folder, or into one that is empty or
    # missing: a mistyped --data-dir, or a folder of the user's own images, would
    # otherwise get 330 MB of pickles written into it (issue 19).
    others = sorted(name for name in (os.listdir(data_dir) if os.path.isdir(data_dir) else [])
                    if not name.startswith(".") and name not in ("MNIST", "MNIST_M"))
    is_default = os.path.abspath(data_dir) == os.path.abspath(create_mnistm.DEFAULT_DATA_DIR)
    if others and not is_default:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise UserError(f"--data-dir {data_dir} holds other files ({shown}) but not "
                        f"{MNIST_PICKLE} and {MNIST_M_PICKLE}; point --data-dir at the folder "
                        "that holds the pickles, or at an empty folder to build them there "
                        f"(`python create_mnistm.py --out-dir {data_dir}`)")
    print(f"no pickles in {data_dir}; building MNIST-M first (as `python create_mnistm.py "
          f"--out-dir {data_dir}` does)", flush=True)
    # Several workers on a shared --data-dir take turns; the later ones find them built.
    create_mnistm.build_pickles(data_dir, mnist_path, bsds_path, unless_built=True)


def finished_results(output_root, run_name):
    """The path of the run's results.json if the run has finished, else None."""
    path = results_file(run_name, output_root)
    return path if os.path.exists(path) else None


def resolve_config(args):
    """The run's config: from the flags, or (with --resume) the saved one, unchanged."""
    if args.run_name is not None:
        # Before any path is built from it: config/<run> of `--resume` included.
        check_run_name(args.run_name)
    if not args.resume:
        config = config_from_args(args, run_name=args.run_name or time.strftime("%Y%m%d-%H%M%S"))
        saved = config_file(config.run_name, args.output_root)
        if os.path.exists(saved) and not args.overwrite:
            raise UserError(f"run {config.run_name!r} already exists ({saved}); pass --resume to "
                            "continue it, --overwrite to delete it and start again, or choose "
                            "another --run-name")
        return config
    if not args.run_name:
        raise UserError("--resume needs --run-name to say which run to continue")
    config = DANNConfig.load(config_file(args.run_name, args.output_root))
    # What a collapse does may change on resume: it acts on nothing until one happens.
    for name in ("on_collapse", "max_rollbacks"):
        if getattr(args, name, None) is not None:
            setattr(config, name, getattr(args, name))
    config.validate()
    changed = [name for name, value in config_from_args(args, **config.to_dict()).to_dict().items()
               if getattr(args, name, None) is not None and getattr(args, name) != value]
    if changed:
        raise UserError(f"cannot change {', '.join(changed)} when resuming run {args.run_name!r}; "
                        "drop those flags or start a new run")
    return config


def delete_run(output_root, run_name, lock):
    """--overwrite: deletes the run's three folders (the lock, which this process holds, stays)."""
    folders = run_dirs(output_root, run_name)
    present = [folder for folder in folders.values() if os.path.exists(folder)]
    if not present:
        return
    print(f"--overwrite: deleting run {run_name!r} ({', '.join(present)})", flush=True)
    for kind, folder in folders.items():
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if kind == "checkpoints" and path == lock.path:
                continue
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)


def _op_error_cause(message):
    """What a TensorFlow op error says went wrong, without its graph trace (node, file lines)."""
    # Without the "{{function_node ...}}" prefix naming the op's graph function.
    message = re.sub(r"^\{\{[^}]*\}\}\s*", "", message)
    lines = [line.strip() for line in message.splitlines()
             if line.strip() and not line[:1].isspace()
             and not line.startswith(("Graph execution error", "Detected at node", "[[", "File "))]
    return one_line(" ".join(lines[:2]))[:240]


def write_failure(error, folder, checkpoint):
    """The one line for an OS error while the run writes (a full disk, a lost mount...)."""
    reason = getattr(error, "strerror", None) or one_line(getattr(error, "message", error))
    free = free_space(folder).replace(",", ";", 1)
    last = (f"the last good checkpoint {checkpoint} is intact" if checkpoint
            else "no checkpoint was written yet")
    return f"writing the run failed: {reason}{free}; {last}. Free space (or fix the folder), then"


def main(argv=None):
    args = parse_args(argv)
    config = resolve_config(args)
    task = cluster_task(config, args)
    try:
        prepared = prepare_run(args, config, task)
    except UserError:
        if task:
            # The other workers wait for this one to meet them: meet them and go, so that
            # they learn it has gone instead of waiting for ever.
            from utils.training.distribute import meet_and_leave

            meet_and_leave()
        raise
    if prepared:
        start_run(args, config, task, *prepared)


def prepare_run(args, config, task):
    """Everything before TensorFlow: the finished-run check, the output folder, the data and
    the starting run. Returns (source, target, collapse to resume), or None when there is
    nothing to train; bad input is a UserError here, in a second."""
    results_path = finished_results(args.output_root, config.run_name) if args.resume else None
    collapsed = None
    if results_path:
        with open(results_path) as handle:
            results = json.load(handle)
        collapsed_at = results.get("collapsed_at")
        if collapsed_at is not None and config.on_collapse == "rollback":
            # A run that stopped on a collapse, resumed with --on-collapse rollback: it goes
            # back to its last good checkpoint (the newest on disk) past the batches since.
            from utils.training.collapse_guard import Collapsed

            collapsed = Collapsed(collapsed_at, results["collapse"], results["last_good_checkpoint"])
        else:
            # Resuming would retrain nothing but rewrite results.json with the
            # timing of a no-op (issue 10): say so and leave the run untouched.
            state = (f"collapsed at step {collapsed_at}; pass --on-collapse rollback to go "
                     "back to its last good checkpoint and continue" if collapsed_at is not None
                     else "is already finished")
            print(f"run {config.run_name!r} {state} ({results_path}); nothing to resume. "
                  "Start a new run with another --run-name to train again.")
            return None
    # Bad data or an unwritable output folder should fail in a second, not
    # after the TensorFlow import and model build.
    if task is None or task.is_chief:
        ensure_writable_dir(args.output_root)
    if any(is_builtin(spec) for spec in (config.source, config.target, config.target_test)):
        ensure_pickles(config.data_dir, args.mnist_path, args.bsds_path, resume=args.resume)
    elif args.mnist_path or args.bsds_path:
        raise UserError("--mnist-path/--bsds-path build the built-in mnist_m domain, which this "
                        "run does not use; drop them")
    source, target = load_run_domains(config)
    from model import NETWORKS

    chosen = config.network
    fill_config(config, source, target)
    print(f"domains: source {source.title} ({len(source.train)} training images), target "
          f"{target.title} ({len(target.train)}, {'labelled' if target.labelled else 'unlabelled'}"
          f"); {len(config.class_names)} classes; input {'x'.join(map(str, config.input_shape))}; "
          f"network {config.network}" + ("" if chosen else " (chosen by input size; --network "
                                         f"picks one of {', '.join(NETWORKS)})"), flush=True)
    if args.init_from:
        from utils.training.init_from import init_problem

        problem = init_problem(config, args.init_from, args.output_root)
        if problem:
            raise UserError(f"cannot start run {config.run_name!r} from run {args.init_from!r}: "
                            f"{problem}")
    return source, target, collapsed


def start_run(args, config, task, source, target, collapsed):
    """The strategy, the run's writer and the Trainer, then training (`train`)."""
    import keras
    import tensorflow as tf

    from utils.training.distribute import create_strategy
    from utils.training.loop import Trainer

    # Before any other TensorFlow op: MultiWorkerMirroredStrategy sets up the collective ops.
    strategy = create_strategy(config.strategy)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    print(f"run {config.run_name}: mode {config.mode}, seed {config.seed}, "
          f"{config.epochs} epochs x {config.steps_per_epoch} steps, batch {config.batch_size}"
          + (f"; {task.name} of {task.num_workers} workers"
             + (" (the chief: it writes the run)" if task.is_chief else
                " (writes nothing to the run; the chief does)") if task else ""))
    with run_writer(args, config, task) as (lock, output_root, resume_root):
        if lock and args.overwrite:
            delete_run(args.output_root, config.run_name, lock)
        if args.init_from:
            from utils.training.init_from import copy_run

            copy_run(config, args.init_from, args.output_root)
            print(f"run {config.run_name}: starting from run {args.init_from}'s step "
                  f"{config.adaptation_steps} (its adaptation phase), then "
                  f"{config.refine_steps} refinement steps", flush=True)
            # From here on it is this run's own checkpoint: it resumes from it.
            args.resume = True
        try:
            trainer = Trainer(config, source, target, output_root=output_root,
                              strategy=strategy, resume_root=resume_root)
        except tf.errors.OpError as error:
            if not is_peer_failure(error, config):
                raise
            # A worker failed before the workers met (see meet_and_leave).
            raise UserError(f"a worker of the cluster stopped before training began "
                            f"({type(error).__name__}: {_op_error_cause(error.message)}); "
                            "nothing was trained. See that worker's error, then start every "
                            "worker again") from None
        results = train(trainer, args, collapsed)
    print(json.dumps(results, indent=2))


@contextlib.contextmanager
def run_writer(args, config, task):
    """Where this process writes: (lock, output root, output root of the run it resumes).

    One writer per run: the run lock refuses a second process before it writes
    anything. In a multi-worker run that writer is the chief; another worker writes
    into a temporary folder outside the run, removed when it exits, and resumes
    from the chief's checkpoints (utils/training/distribute.py).
    """
    if task is None or task.is_chief:
        with RunLock(run_dirs(args.output_root, config.run_name)["checkpoints"],
                     config.run_name) as lock:
            yield lock, args.output_root, None
        return
    # Named with the PID, so that the folder a killed worker left is removed by the next one.
    prefix = f"dann-{config.run_name.replace(os.sep, '_')}-{task.type}{task.id}-pid"
    for name in os.listdir(tempfile.gettempdir()):
        pid = name[len(prefix):].split("-", 1)[0]
        if name.startswith(prefix) and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(os.path.join(tempfile.gettempdir(), name), ignore_errors=True)
    scratch = tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-")
    try:
        yield None, scratch, args.output_root
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def is_peer_failure(error, config):
    """Whether a TensorFlow error is what the collectives raise when another worker died or
    cannot be reached."""
    import tensorflow as tf

    return config.strategy == "multi_worker" and isinstance(
        error, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                tf.errors.CancelledError, tf.errors.AbortedError))


def train(trainer, args, collapsed=None):
    """fit() with every way it can stop turned into one line and the shell's exit status."""
    import tensorflow as tf

    from utils.training.collapse_guard import Collapsed
    from utils.training.loop import Diverged, Interrupted

    config = trainer.config
    resume_command = (f"python train_MNIST2MNIST_M.py --run-name {config.run_name} --resume"
                      + (f" --output-root {args.output_root}" if args.output_root != "." else "")
                      + (" on every worker, with its TF_CONFIG" if config.strategy == "multi_worker"
                         else ""))
    try:
        return trainer.fit(resume=args.resume, show_progress=not args.no_progress,
                           resume_from=args.resume_from, command=args.command,
                           collapsed=collapsed)
    except Interrupted as stop:
        print(f"stopped by {stop} at step {trainer.step}; checkpoint saved. Continue with: "
              f"{resume_command}", file=sys.stderr)
        sys.exit(stop.exit_status)
    except Diverged as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(3)
    except Collapsed as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(4)
    except (OSError, tf.errors.OpError) as error:
        if isinstance(error, tf.errors.OpError) and not any(
                text in str(error) for text in WRITE_FAILURES):
            if is_peer_failure(error, config):
                latest = trainer.last_good_checkpoint()
                # Named in the run's own folder: a worker's copy was temporary.
                latest = (os.path.join(trainer.checkpoints_from, os.path.basename(latest))
                          if latest else "none yet")
                raise UserError(f"a worker of the cluster stopped or cannot be reached "
                                f"({type(error).__name__}: {_op_error_cause(error.message)}); the "
                                f"last good checkpoint is {latest}. Continue with: "
                                f"{resume_command}") from None
            raise
        message = write_failure(error, trainer.dirs["checkpoints"], trainer.manager.latest_checkpoint)
        raise UserError(f"{message} continue with: {resume_command}") from None


if __name__ == "__main__":
    run_main(main)
