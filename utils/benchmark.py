"""Throughput of the DANN training loop against an eager reference, on this machine.

    python -m utils.benchmark [--data-dir model_data/dataset] [--rounds 3]

Times, in one process and with the two loops alternating round by round:
  * `project`: the project's compiled train step fed by its real tf.data
    pipeline, with the hyperparameter summaries at the training cadence;
  * `reference`: the original repository's style of loop on the same model: an
    eager step that runs the feature extractor on the source batch and again
    on the mixed batch, and writes a summary every step;
and once each: the bare compiled step on one in-memory batch (no pipeline, no
logging), the input pipeline alone, and a full `create_mnistm.py` build (when
--mnist-path and --bsds-path are given).
"""
import argparse
import os
import platform
import statistics
import tempfile
import time

from utils.io import UserError, run_main

def cpu_model():
    """The CPU's marketing name from /proc/cpuinfo (or the platform's guess)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


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


def benchmark_training(trainer, rounds, project_steps, reference_steps):
    """ms/step of the project loop and the reference loop, alternating; median over rounds."""
    import tensorflow as tf

    config = trainer.config
    log_dir = tempfile.mkdtemp(prefix="dann-benchmark-")
    writer = tf.summary.create_file_writer(log_dir)
    iterator = iter(trainer.make_dataset())
    reference_iterator = iter(trainer.make_dataset())
    reference_step = make_reference_step(trainer, writer)

    def project_steps_call():
        first = trainer.step
        for step in range(first, first + project_steps):
            if step % config.log_every_steps == 0:
                trainer.log_hyperparameters(writer, step)
            trainer.train_step(iterator)
        trainer.step  # reading the step waits for the last update

    def reference_steps_call():
        for _ in range(reference_steps):
            reference_step(*next(reference_iterator))

    project_steps_call()  # trace and warm up both loops before timing
    reference_steps_call()
    project, reference = [], []
    for _ in range(rounds):
        project.append(1000 * _seconds_per_call(project_steps_call, 1) / project_steps)
        reference.append(1000 * _seconds_per_call(reference_steps_call, 1) / reference_steps)
    return statistics.median(project), statistics.median(reference)


def benchmark_bare_step(trainer, steps):
    """ms/step of the compiled update on one fixed in-memory batch: the floor for the loop."""
    import tensorflow as tf

    batch = next(iter(trainer.make_dataset()))
    bare_step = tf.function(trainer._train_step_on_batch)

    def step_and_wait():
        bare_step(batch)
        trainer.step  # reading the step waits for the update

    step_and_wait()
    return 1000 * _seconds_per_call(step_and_wait, steps)


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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.path.join("model_data", "dataset"))
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of both loops")
    parser.add_argument("--project-steps", type=int, default=300, help="project steps per round")
    parser.add_argument("--reference-steps", type=int, default=40, help="reference steps per round")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per step, half source and half target (default: the "
                             "config's; 128 is the paper's)")
    parser.add_argument("--mnist-path", help="time a full MNIST-M build from this mnist.npz")
    parser.add_argument("--bsds-path", help="... and this BSR_bsds500.tgz")
    args = parser.parse_args(argv)
    if min(args.rounds, args.project_steps, args.reference_steps) <= 0:
        raise UserError("--rounds, --project-steps and --reference-steps must be positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    import keras

    from config.config import DANNConfig
    from utils.data import load_mnist_and_mnistm
    from utils.trainer import Trainer

    build_seconds = (benchmark_build(args.mnist_path, args.bsds_path)
                     if args.mnist_path and args.bsds_path else None)
    overrides = {"batch_size": args.batch_size} if args.batch_size else {}
    config = DANNConfig(data_dir=args.data_dir, run_name="benchmark", **overrides)
    mnist, mnist_m = load_mnist_and_mnistm(config.data_dir)
    keras.utils.set_random_seed(config.seed)
    with tempfile.TemporaryDirectory() as output_root:
        trainer = Trainer(config, mnist, mnist_m, output_root=output_root)
        project_ms, reference_ms = benchmark_training(trainer, args.rounds, args.project_steps,
                                                      args.reference_steps)
        bare_ms = benchmark_bare_step(trainer, args.project_steps)
        pipeline_ms = benchmark_pipeline(trainer, 10 * args.project_steps)
    images = config.batch_size
    print(f"\nCPU: {cpu_model()}; batch {images // 2} source + {images // 2} target images per "
          f"step; median of {args.rounds} alternating rounds")
    print(f"{'loop':<34}{'ms/step':>10}{'images/s':>12}")
    for name, ms in (("project (pipeline + logging)", project_ms),
                     ("reference eager loop", reference_ms),
                     ("bare compiled step", bare_ms)):
        print(f"{name:<34}{ms:>10.2f}{1000 * images / ms:>12.0f}")
    print(f"{'input pipeline alone (per batch)':<34}{pipeline_ms:>10.2f}")
    print(f"project vs reference: {reference_ms / project_ms:.2f}x faster")
    print(f"project vs bare step: {project_ms / bare_ms:.3f}x (pipeline + logging overhead "
          f"{100 * (project_ms / bare_ms - 1):+.1f}%)")
    if build_seconds is not None:
        print(f"create_mnistm.py full build: {build_seconds:.2f} s")


if __name__ == "__main__":
    run_main(main)
