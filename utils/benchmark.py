"""Throughput of the DANN training loop against a minimal step and an eager reference.

    python -m utils.benchmark [--data-dir model_data/dataset] [--rounds 5] [--recipe paper]
        [--batch-size 16] [--precisions float32,mixed_bfloat16] [--loops project,floor]

Times, in one process and with the three loops alternating round by round:
  * `project`: the project's real training loop (Trainer.train_until): the
    compiled train loop fed by its tf.data pipeline, with the NaN guard,
    metrics, tf.distribute strategy and TensorBoard summaries at their cadence;
  * `minimal`: the floor: a minimal compiled DANN step of the same math on a
    fresh copy of the network: one forward pass over the concatenated batch,
    the two losses, SGD with momentum; no metrics, no NaN guard, no strategy,
    no summaries, no input pipeline (one in-memory batch) and no wait between
    steps, called from Python once per update;
  * `floor`: the fair floor: the same minimal update, run
    `steps_per_call` times per call inside one compiled `tf.range` loop, as
    the project's loop runs its updates, so the per-call overhead is paid
    alike and the ratio project / floor is what the project adds;
  * `reference`: the original repository's style of loop on the same model: an
    eager step that runs the feature extractor on the source batch and again
    on the mixed batch, and writes a summary every step;
and once each: the input pipeline alone, and a full `create_mnistm.py` build
(when --mnist-path and --bsds-path are given). With several --precisions, the
project and floor loops of each precision (utils/training/precision.py)
alternate in the same rounds, and a table gives each one's speed-up over the
first. The ratios to the fair floor and the speed-ups are medians of per-round ratios
(`paired_ratio`); the other two ratios are of the loops' medians.

    python -m utils.benchmark --decode-folder model_data/folders/mnist

times instead the loading of an image-folder domain (utils/data/files.py), each
in a fresh process: the first decode (its cache deleted first), then the
cached load; and the peak memory the load adds to the process, against the
size of the uint8 arrays it returns.
"""
import argparse
import os
import statistics
import tempfile
import time

from utils.data import DATA_DIR
from utils.device import cpu_model
from utils.io import ArgumentParser, UserError, run_main


def _seconds_per_call(call, repeats):
    """Mean wall seconds of `call()` over `repeats`; `call` must block until its work is done."""
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats


def make_reference_step(trainer, writer):
    """The original style of update: eager, G_f run twice, one summary per step."""
    import tensorflow as tf

    dann, optimizer = trainer.dann, trainer.optimizer

    def reference_step(labelled_images, labels, unlabelled_images):
        mixed = tf.concat([labelled_images, unlabelled_images], axis=0)
        domain_labels = tf.concat([tf.zeros(tf.shape(labelled_images)[0]),
                                   tf.ones(tf.shape(unlabelled_images)[0])], axis=0)
        with tf.GradientTape() as tape:
            class_logits = dann.label_classifier(dann.feature_extractor(labelled_images))
            domain_logits = dann.domain_classifier(dann.feature_extractor(mixed))[:, 0]
            label_loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels, class_logits))
            domain_loss = tf.reduce_mean(
                tf.nn.sigmoid_cross_entropy_with_logits(domain_labels, domain_logits))
            total_loss = label_loss + domain_loss
        variables = dann.model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(total_loss, variables), variables))
        with writer.as_default(step=int(optimizer.iterations.numpy())):
            tf.summary.scalar("loss/total_loss", total_loss)

    return reference_step


def make_minimal_step(config, half):
    """The floor: the same DANN update with nothing else, compiled (see the module docstring),
    its network built under `config`'s precision policy (no loss scaling), for batches of
    `half` source + `half` target images. Also times networks in utils.network_cost.
    Returns (step, loop, optimizer, dann)."""
    import keras
    import tensorflow as tf

    from model import build_dann
    from utils.training.precision import policy

    with policy(config.precision):
        dann = build_dann(config.input_shape, config.num_classes, input_norm=config.input_norm,
                          network=config.network)
    dann.gradient_reversal.grl_lambda.assign(0.5)
    optimizer = keras.optimizers.SGD(config.learning_rate, momentum=config.momentum)
    variables = dann.model.trainable_variables
    domain_labels = tf.concat([tf.zeros(half), tf.ones(half)], axis=0)

    @tf.function
    def minimal_step(labelled_images, labels, unlabelled_images):
        with tf.GradientTape() as tape:
            features = dann.feature_extractor(
                tf.concat([labelled_images, unlabelled_images], axis=0), training=True)
            label_loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels, dann.label_classifier(features[:half], training=True)))
            domain_loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
                domain_labels, dann.domain_classifier(features, training=True)[:, 0]))
            total_loss = label_loss + domain_loss
        optimizer.apply_gradients(zip(tape.gradient(total_loss, variables), variables))

    @tf.function
    def minimal_loop(labelled_images, labels, unlabelled_images, num_steps):
        for _ in tf.range(num_steps):
            minimal_step(labelled_images, labels, unlabelled_images)

    return minimal_step, minimal_loop, optimizer, dann


LOOPS = ("project", "minimal", "floor", "reference")


def training_loops(trainer, project_steps, reference_steps, names=LOOPS):
    """{loop name: (call, updates per call)} of the loops in `names` (out of LOOPS) on
    `trainer`."""
    import tensorflow as tf

    from utils.summaries import create_writers

    log_dir = tempfile.mkdtemp(prefix="dann-benchmark-")
    writers = create_writers(log_dir)
    iterator = iter(trainer.make_dataset())
    reference_iterator = iter(trainer.make_dataset())
    reference_step = make_reference_step(trainer, writers["train"])
    minimal_step, minimal_loop, minimal_optimizer, _ = make_minimal_step(trainer.config,
                                                                      trainer.half_batch)
    batch = next(iter(make_plain_batches(trainer)))

    def project_steps_call():
        # The real loop; it waits for the device at its own logging cadence and at its end.
        trainer.train_until(trainer.step + project_steps, iterator, writers)

    def minimal_steps_call():
        for _ in range(project_steps):
            minimal_step(*batch)
        minimal_optimizer.iterations.numpy()  # one wait, for the last update

    def floor_steps_call():
        calls, left = divmod(project_steps, trainer.config.steps_per_call)
        for count in [trainer.config.steps_per_call] * calls + ([left] if left else []):
            minimal_loop(*batch, tf.constant(count, tf.int32))
        minimal_optimizer.iterations.numpy()

    def reference_steps_call():
        for _ in range(reference_steps):
            reference_step(*next(reference_iterator))

    loops = {"project": (project_steps_call, project_steps),
             "minimal": (minimal_steps_call, project_steps),
             "floor": (floor_steps_call, project_steps),
             "reference": (reference_steps_call, reference_steps)}
    return {name: loops[name] for name in names}


def benchmark_training(trainers, rounds, project_steps, reference_steps, names=LOOPS):
    """{(precision, loop): [ms/step of each round]} for every trainer (one per precision, in
    order) and loop in `names`, the loops of all precisions alternating round by round. The
    minimal and reference loops are timed for the first precision only."""
    loops = {}
    for index, (precision, trainer) in enumerate(trainers.items()):
        kept = [name for name in names if index == 0 or name in ("project", "floor")]
        for name, loop in training_loops(trainer, project_steps, reference_steps, kept).items():
            loops[(precision, name)] = loop
    for call, _ in loops.values():
        call()  # trace and warm up every loop before timing
    times = {key: [] for key in loops}
    for _ in range(rounds):
        for key, (call, steps) in loops.items():
            times[key].append(1000 * _seconds_per_call(call, 1) / steps)
    return times


def paired_ratio(numerators, denominators):
    """(median, lowest, highest) of the per-round ratios of two loops timed in the same rounds.

    The machine's speed drifts between rounds (other tenants, clocks): a ratio taken within
    each round, its loops seconds apart, cancels that drift, which a ratio of the two
    medians does not."""
    ratios = [a / b for a, b in zip(numerators, denominators)]
    return statistics.median(ratios), min(ratios), max(ratios)


def make_plain_batches(trainer):
    """The training batches as plain tensors (no distribution), for the minimal step."""
    from utils.data.pipeline import make_train_dataset

    return make_train_dataset(*trainer.train_images, trainer.half_batch, trainer.config.seed)


def benchmark_pipeline(trainer, batches):
    """ms/batch of the input pipeline alone."""
    iterator = iter(trainer.make_dataset())
    next(iterator)
    return 1000 * _seconds_per_call(lambda: next(iterator), batches)


def benchmark_build(mnist_path, bsds_path):
    """Seconds for a full create_mnistm.py build (inputs read, 70,000 images, pickles written)."""
    import create_mnistm

    with tempfile.TemporaryDirectory() as out_dir:
        start = time.perf_counter()
        create_mnistm.main(["--mnist-path", mnist_path, "--bsds-path", bsds_path,
                            "--out-dir", out_dir])
        return time.perf_counter() - start


def parse_args(argv=None):
    from config.recipes import RECIPES

    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=DATA_DIR,
                        help="folder holding the pickles (default: %(default)s)")
    parser.add_argument("--recipe", choices=list(RECIPES), default="default",
                        help="recipe whose model and batch are timed (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per step, half source and half target (default: the "
                             "recipe's; 128 is the paper's)")
    parser.add_argument("--precisions", default="float32",
                        help="comma-separated --precision values to time side by side, rounds "
                             "alternating, e.g. float32,mixed_bfloat16 (default: %(default)s)")
    parser.add_argument("--loops", default=",".join(LOOPS),
                        help="comma-separated loops to time, out of " + ", ".join(LOOPS) +
                             "; e.g. project,floor for many short rounds of the overhead ratio "
                             "alone (default: all)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternating rounds of the loops (default: %(default)s)")
    parser.add_argument("--project-steps", type=int, default=300,
                        help="project and minimal steps per round (default: %(default)s)")
    parser.add_argument("--reference-steps", type=int, default=40,
                        help="reference steps per round (default: %(default)s)")
    parser.add_argument("--mnist-path", help="time a full MNIST-M build from this mnist.npz "
                                             "(default: no build is timed)")
    parser.add_argument("--bsds-path", help="... and this BSR_bsds500.tgz (default: none)")
    parser.add_argument("--decode-folder", metavar="FOLDER",
                        help="time only the loading of this image-folder domain: first decode "
                             "and cached load (default: time training)")
    parser.add_argument("--decode-probe", metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.rounds, args.project_steps, args.reference_steps) <= 0:
        raise UserError("--rounds, --project-steps and --reference-steps must be positive")
    from config.config import PRECISIONS

    args.precisions = [name.strip() for name in args.precisions.split(",") if name.strip()]
    unknown = [name for name in args.precisions if name not in PRECISIONS]
    if unknown or not args.precisions or len(set(args.precisions)) < len(args.precisions):
        raise UserError(f"--precisions {','.join(args.precisions)}: give distinct names out of "
                        f"{', '.join(PRECISIONS)}, e.g. float32,mixed_bfloat16")
    args.loops = [name.strip() for name in args.loops.split(",") if name.strip()]
    if (not set(args.loops) <= set(LOOPS) or "project" not in args.loops
            or len(set(args.loops)) < len(args.loops)):
        raise UserError(f"--loops {','.join(args.loops)}: give distinct names out of "
                        f"{', '.join(LOOPS)}, project among them, e.g. project,floor")
    args.loops = [name for name in LOOPS if name in args.loops]
    if len(args.precisions) > 1 and "floor" not in args.loops:
        raise UserError("--precisions with several values compares project and floor loops: "
                        "add floor to --loops")
    return args


def decode_probe(folder):
    """In this process: load `folder` as a domain; print seconds, peak memory added, array bytes."""
    import json
    import resource

    import tensorflow as tf  # noqa: F401 -- imported before the baseline, as a run has it

    from utils.data import files
    from utils.data.domains import resolve_shape

    def rss_bytes():
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    baseline = rss_bytes()
    start = time.perf_counter()
    domain = files.load(folder, "--source", resolve_shape([("--source", folder)], None, None),
                        False)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    arrays = domain.train.nbytes + (domain.test.nbytes if domain.test is not None else 0)
    print(json.dumps({"seconds": seconds, "added_bytes": peak - baseline, "array_bytes": arrays,
                      "images": len(domain.train) + (len(domain.test) if domain.test is not None
                                                     else 0),
                      "train_images": len(domain.train)}))


def benchmark_decode(folder):
    """{"first": ..., "cached": ...} of decode_probe, each in a fresh process."""
    import json
    import shutil
    import subprocess
    import sys

    from utils.data.files import CACHE_FOLDER

    if not os.path.isdir(folder):
        raise UserError(f"--decode-folder {folder} is not a folder; write one with "
                        "`python -m utils.export_folders`")
    shutil.rmtree(os.path.join(folder, CACHE_FOLDER), ignore_errors=True)
    results = {}
    for kind in ("first", "cached"):
        output = subprocess.run([sys.executable, "-m", "utils.benchmark", "--decode-probe", folder],
                                capture_output=True, text=True, check=True).stdout
        results[kind] = json.loads(output.strip().splitlines()[-1])
    return results


def main(argv=None):
    args = parse_args(argv)
    if args.decode_probe:
        return decode_probe(args.decode_probe)
    if args.decode_folder:
        results = benchmark_decode(args.decode_folder)
        print(f"CPU: {cpu_model()}; loading {args.decode_folder}: "
              f"{results['first']['images']} images ({results['first']['train_images']} train)")
        for kind, label in (("first", "first decode (no cache)"), ("cached", "cached load")):
            result = results[kind]
            print(f"{label:<26}{result['seconds']:>8.2f} s   peak memory added "
                  f"{result['added_bytes'] / 2 ** 20:>7.0f} MiB = "
                  f"{result['added_bytes'] / result['array_bytes']:.2f}x the "
                  f"{result['array_bytes'] / 2 ** 20:.0f} MiB of uint8 images")
        return None
    import keras

    from config.config import DANNConfig
    from config.recipes import recipe_fields
    from utils.data import load_run_domains
    from utils.training.loop import Trainer

    build_seconds = (benchmark_build(args.mnist_path, args.bsds_path)
                     if args.mnist_path and args.bsds_path else None)
    overrides = {"batch_size": args.batch_size} if args.batch_size else {}
    # No held-out split: it changes which images are drawn, not the cost of a step.
    configs = {precision: DANNConfig(**{**recipe_fields(args.recipe), **overrides,
                                        "data_dir": args.data_dir, "run_name": "benchmark",
                                        "target_val_size": 0, "precision": precision})
               for precision in args.precisions}
    config = configs[args.precisions[0]]
    source, target = load_run_domains(config)
    keras.utils.set_random_seed(config.seed)
    with tempfile.TemporaryDirectory() as output_root:
        trainers = {precision: Trainer(configs[precision], source, target,
                                       output_root=os.path.join(output_root, precision))
                    for precision in args.precisions}
        rounds = benchmark_training(trainers, args.rounds, args.project_steps, args.reference_steps,
                                    args.loops)
        pipeline_ms = benchmark_pipeline(trainers[args.precisions[0]], 10 * args.project_steps)
    times = {key: statistics.median(values) for key, values in rounds.items()}
    ms = {name: value for (precision, name), value in times.items()
          if precision == args.precisions[0]}
    images = config.batch_size
    print(f"\nCPU: {cpu_model()}; recipe {args.recipe}, batch {images // 2} source + "
          f"{images // 2} target images per step; median of {args.rounds} alternating rounds")
    print(f"{'loop':<34}{'ms/step':>10}{'images/s':>12}")
    for name, label in (("project", "project (real training loop)"),
                        ("minimal", "minimal compiled step"),
                        ("floor", "fair floor (compiled loop)"),
                        ("reference", "reference eager loop")):
        if name in ms:
            print(f"{label:<34}{ms[name]:>10.2f}{1000 * images / ms[name]:>12.0f}")
    print(f"{'input pipeline alone (per batch)':<34}{pipeline_ms:>10.2f}")
    if "minimal" in ms:
        print(f"project vs minimal step: {ms['project'] / ms['minimal']:.3f}x")
    if "floor" in ms:
        ratio, lowest, highest = paired_ratio(rounds[(args.precisions[0], "project")],
                                              rounds[(args.precisions[0], "floor")])
        print(f"project vs fair floor ({config.steps_per_call} updates per call): {ratio:.3f}x "
              f"(median of the {args.rounds} rounds' ratios, {lowest:.3f}-{highest:.3f})")
    if "reference" in ms:
        print(f"project vs reference: {ms['reference'] / ms['project']:.2f}x faster")
    if len(args.precisions) > 1:
        print(f"\nprecision (rounds alternating; vs floor and speed-up: medians of per-round "
              f"ratios; speed-up: {args.precisions[0]}'s project loop / this one's)")
        print(f"{'precision':<18}{'project ms':>12}{'floor ms':>10}{'vs floor':>10}{'speed-up':>10}")
        for precision in args.precisions:
            project, floor = times[(precision, "project")], times[(precision, "floor")]
            vs_floor = paired_ratio(rounds[(precision, "project")], rounds[(precision, "floor")])[0]
            speed_up = paired_ratio(rounds[(args.precisions[0], "project")],
                                    rounds[(precision, "project")])[0]
            print(f"{precision:<18}{project:>12.2f}{floor:>10.2f}{vs_floor:>9.3f}x"
                  f"{speed_up:>9.3f}x")
    if build_seconds is not None:
        print(f"create_mnistm.py full build: {build_seconds:.2f} s")


if __name__ == "__main__":
    run_main(main)
