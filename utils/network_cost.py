"""What each network costs per image size: time per update, peak memory and disk.

    python -m utils.network_cost [--networks mnist,small_resnet,...] [--sizes 28,64,128,224]
        [--updates 5] [--rounds 1] [--out docs/results/network_cost.md]

For every network of the registry (model/networks.py) and image size, in a fresh
process each (so that peak memory is that case's alone), one after the other:
  * the size the network runs at: the paper's columns resize every image to their
    native size (28, 32 or 40 pixels), as a run does (utils/data/domains.py);
  * ms per update: the floor update of utils.benchmark (one compiled DANN step:
    forward over 32 source + 32 target images, L_y + L_d, SGD with momentum), the
    median over at least --updates updates and 3 seconds, after a first call that
    traces it;
  * peak memory: the process's peak resident set (ru_maxrss), TensorFlow included;
    the first row, `(none)`, is TensorFlow and Keras loaded with no network;
  * the `.weights.h5` file of the whole DANN, and a checkpoint of the model and
    its optimizer (SGD's momentum doubles it), as a run writes each of them;
and the ratios of every network's update at 64 and 128 pixels to `mnist`'s at 28.
With --rounds N the whole list of cases is timed N times over, one round after
the other: a case's ms is its median over the rounds, and each ratio is the
median of the ratios within a round (the two cases timed minutes apart, not
tens of minutes), with the rounds' range beside it. Fresh processes on these
machines differ by a third from minute to minute; a ratio from one round is
one draw of that.
Applications are built from random weights here (no download). A case that does
not fit (an input too small for the network) is listed as such.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from utils.device import cpu_model
from utils.io import ArgumentParser, UserError, atomic_write_text, run_main

HALF_BATCH = 32
DEFAULT_SIZES = (28, 64, 128, 224)
MIN_SECONDS = 3.0


def _sizes(text):
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"--sizes {text!r}: expected comma-separated pixel sizes, "
                        "e.g. 28,64") from None
    if not sizes or min(sizes) < 8:
        raise UserError(f"--sizes {text!r}: every size must be at least 8 pixels")
    return sizes


def parse_args(argv=None):
    from model import NETWORKS

    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", default=",".join(NETWORKS),
                        help=f"networks to time (default: all: {','.join(NETWORKS)})")
    parser.add_argument("--sizes", type=_sizes, default=DEFAULT_SIZES,
                        help="square image sizes, 3 channels (default: 28,64,128,224)")
    parser.add_argument("--updates", type=int, default=5,
                        help="timed updates per case, after the tracing one (default: 5)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="time every case this many times over, one round after the other, "
                             "and give medians (default: 1)")
    parser.add_argument("--out", help="also write the table to this Markdown file")
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # one case, in the child process
    args = parser.parse_args(argv)
    args.networks = tuple(name.strip() for name in args.networks.split(","))
    unknown = [name for name in args.networks if name not in NETWORKS]
    if unknown:
        raise UserError(f"unknown network {unknown[0]!r}; use some of {', '.join(NETWORKS)}")
    if args.updates < 1:
        raise UserError("--updates must be at least 1")
    if args.rounds < 1:
        raise UserError("--rounds must be at least 1")
    return args


def probe(network, size, updates):
    """One case, in this process: {runs_at, fits, params, ms, weights_bytes, checkpoint_bytes}."""
    import keras
    import numpy as np
    import tensorflow as tf

    from config.config import DANNConfig
    from model import NETWORKS
    from utils.benchmark import make_minimal_step

    native = getattr(NETWORKS[network], "native_size", 0)
    runs_at = native or size
    if not NETWORKS[network].fits((runs_at, runs_at, 3)):
        return dict(runs_at=runs_at, fits=False)
    config = DANNConfig(network=network, input_shape=(runs_at, runs_at, 3), num_classes=10)
    keras.utils.set_random_seed(0)
    step, _, optimizer, dann = make_minimal_step(config, HALF_BATCH)
    rng = np.random.default_rng(0)
    source, target = (tf.constant(rng.integers(0, 256, (HALF_BATCH, runs_at, runs_at, 3)),
                                  tf.float32) for _ in range(2))
    labels = tf.constant(rng.integers(0, 10, HALF_BATCH), tf.int32)
    step(source, labels, target)  # traces
    times = []
    # At least `updates`, and at least MIN_SECONDS of them (fast networks get more).
    while len(times) < updates or (sum(times) < MIN_SECONDS and len(times) < 500):
        start = time.perf_counter()
        step(source, labels, target)
        optimizer.iterations.numpy()  # waits for the update to finish
        times.append(time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as folder:
        weights = os.path.join(folder, "dann.weights.h5")
        dann.model.save_weights(weights)
        prefix = tf.train.Checkpoint(model=dann.model, optimizer=optimizer).write(
            os.path.join(folder, "ckpt"))
        checkpoint_bytes = sum(os.path.getsize(os.path.join(folder, name))
                               for name in os.listdir(folder)
                               if name.startswith(os.path.basename(prefix) + "."))
        return dict(runs_at=runs_at, fits=True, params=int(dann.model.count_params()),
                    ms=1000 * statistics.median(times), weights_bytes=os.path.getsize(weights),
                    checkpoint_bytes=checkpoint_bytes)


def baseline():
    """TensorFlow and Keras loaded, one op run, no network."""
    import keras  # noqa: F401
    import tensorflow as tf

    tf.reduce_sum(tf.ones([8, 8])).numpy()
    return dict(runs_at=None, fits=True)


def run_probe(text, updates):
    """The --probe child: prints one JSON line with the case's figures and its peak memory."""
    import resource

    network, _, size = text.partition(",")
    result = baseline() if network == "(none)" else probe(network, int(size), updates)
    # ru_maxrss is in KiB on Linux.
    result["peak_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print("PROBE " + json.dumps(result), flush=True)


def measure(network, size, updates):
    """One case in a fresh process; its figures."""
    process = subprocess.run([sys.executable, "-m", "utils.network_cost", "--probe",
                              f"{network},{size}", "--updates", str(updates)],
                             capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    lines = [line for line in process.stdout.splitlines() if line.startswith("PROBE ")]
    if process.returncode or not lines:
        tail = (process.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"timing {network} at {size} px failed: {tail}")
    return json.loads(lines[-1][len("PROBE "):])


def _mib(count):
    return f"{count / 2 ** 20:.1f}"


def table(rounds):
    """The Markdown table, then the ratios to `mnist` at 28 pixels. `rounds`: one
    {(network, size): result} per round, the same cases in each."""
    results = {case: dict(result, ms=statistics.median(r[case]["ms"] for r in rounds))
               if "ms" in result else result for case, result in rounds[0].items()}
    lines = ["| network | images | runs at | parameters | ms per update (32 + 32) "
             "| peak memory MiB | weights file MiB | checkpoint MiB |",
             "|---|---|---|---|---|---|---|---|"]
    for (network, size), result in results.items():
        if network == "(none)":
            lines.append("| (none: TensorFlow and Keras alone) | | | | | "
                         f"{_mib(result['peak_bytes'])} | | |")
        elif not result["fits"]:
            lines.append(f"| {network} | {size} | too small for it | | | | | |")
        else:
            lines.append(f"| {network} | {size} | {result['runs_at']} | {result['params']:,} | "
                         f"{result['ms']:.1f} | {_mib(result['peak_bytes'])} | "
                         f"{_mib(result['weights_bytes'])} | {_mib(result['checkpoint_bytes'])} |")
    reference = results.get(("mnist", 28))
    if reference and reference.get("fits"):
        lines.append("")
        over_rounds = " (medians over the rounds)" if len(rounds) > 1 else ""
        lines.append(f"ms per update against `mnist` at 28 px ({reference['ms']:.1f} ms)"
                     f"{over_rounds}:")
        for case, result in results.items():
            if case[1] in (64, 128) and result.get("fits") and case[0] != "(none)":
                ratios = [r[case]["ms"] / r[("mnist", 28)]["ms"] for r in rounds]
                spread = (f" (rounds: {', '.join(f'{x:.1f}x' for x in ratios)})"
                          if len(rounds) > 1 else "")
                lines.append(f"- {case[0]} at {case[1]} px: {statistics.median(ratios):.1f}x{spread}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    if args.probe:
        return run_probe(args.probe, args.updates)
    cases = [("(none)", 0)] + [(network, size) for network in args.networks for size in args.sizes]
    rounds = []
    for number in range(1, args.rounds + 1):
        results = {}
        for network, size in cases:
            print(f"timing {network}" + (f" at {size} px" if size else "")
                  + (f" (round {number} of {args.rounds})" if args.rounds > 1 else "") + " ...",
                  flush=True)
            results[(network, size)] = measure(network, size, args.updates)
        rounds.append(results)
    over = f"; {args.rounds} rounds of all cases, medians" if args.rounds > 1 else ""
    text = (f"CPU: {cpu_model()}; each case in a fresh process, one after the other; median of "
            f"at least {args.updates} updates and {MIN_SECONDS:g} s after the tracing one"
            f"{over}\n\n" + table(rounds))
    print(text, end="")
    if args.out:
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}")
    return None


if __name__ == "__main__":
    run_main(main)
