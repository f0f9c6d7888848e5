"""Loading a finished run for the analysis tools: the trained G_f, G_y and G_d of
Ganin & Lempitsky (2015), Sec. 5, and the MNIST / MNIST-M test sets of Table 1.

A run is what train_MNIST2MNIST_M.py leaves under an output root:
config/<run>/config.json, checkpoints/<run>/ and logs/<run>/. A tool declares
--run, --checkpoint and --output-root with the add_*_argument functions here,
finds each run once with `find_run` (only the config is read, so a misspelt
run name fails before TensorFlow loads) and later loads its model from the
Run that returns.
"""
import dataclasses
import os

import numpy as np

from config.checks import check_run_name  # noqa: F401 (the run-folder rules, re-exported)
from config.config import DANNConfig
from utils.io import UserError

FINAL_WEIGHTS = "final.weights.h5"


def run_dirs(output_root, run):
    """The run's three folders: logs/<run>, checkpoints/<run> and config/<run>."""
    return {kind: os.path.join(output_root, kind, run)
            for kind in ("logs", "checkpoints", "config")}


def config_file(run, output_root="."):
    """config/<run>/config.json: the DANNConfig the run was trained with."""
    return os.path.join(run_dirs(output_root, run)["config"], "config.json")


def results_file(run, output_root="."):
    """logs/<run>/results.json: what a finished run reports."""
    return os.path.join(run_dirs(output_root, run)["logs"], "results.json")


def diverged_file(run, output_root="."):
    """logs/<run>/diverged.json: the step and settings of a run stopped by a NaN or Inf,
    kept until it is resumed (with a lower --learning-rate, say)."""
    return os.path.join(run_dirs(output_root, run)["logs"], "diverged.json")


def run_config(run, output_root="."):
    """The run's saved DANNConfig; a UserError if the run does not exist."""
    return DANNConfig.load(config_file(run, output_root))


# The three flags every analysis tool shares, defined once (each tool passes its own help for
# --run and --checkpoint: what the run is to it, and what the weights are for).
OUTPUT_ROOT_HELP = "folder holding logs/, checkpoints/ and config/ (default: .)"


def add_run_argument(parser, help, required=True):
    """--run RUN: a run name, as given to the train script's --run-name."""
    parser.add_argument("--run", required=required, help=help)


def add_checkpoint_argument(parser, help):
    """--checkpoint PATH: weights to load instead of the run's final ones (see `find_run`)."""
    parser.add_argument("--checkpoint", help=help)


def add_output_root_argument(parser, help=OUTPUT_ROOT_HELP):
    """--output-root DIR (default .): the folder holding the runs' logs/, checkpoints/, config/."""
    parser.add_argument("--output-root", default=".", help=help)


@dataclasses.dataclass(frozen=True)
class Run:
    """A run found on disk: its name, output root, saved config and the weights to load.

    `find_run` makes one cheaply (a JSON file and a file test), so tools check
    every run they were given before the slow imports and the data load; its
    `load_model` then builds and restores the network without looking again.
    """

    name: str
    output_root: str
    config: DANNConfig
    weights: str

    def load_model(self):
        """The run's DANN (model/dann.py) with its weights: a Keras `.weights.h5` file or
        the prefix of a training checkpoint (`checkpoints/<run>/ckpt-N`, as written every
        few steps)."""
        import tensorflow as tf

        from model import build_dann

        config = self.config
        dann = build_dann(config.input_shape, config.num_classes, input_norm=config.input_norm,
                          network=config.network)
        try:
            if self.weights.endswith(".weights.h5"):
                dann.model.load_weights(self.weights)
            else:
                tf.train.Checkpoint(model=dann.model).restore(
                    self.weights).assert_existing_objects_matched()
        except (ValueError, OSError, AssertionError, tf.errors.OpError) as error:
            raise UserError(f"cannot load {self.weights} into the model of run {self.name!r} "
                            f"({type(error).__name__}); is it a checkpoint of this run?") from None
        return dann


def find_run(run, output_root=".", checkpoint=None):
    """The Run `run` under `output_root`, with its final weights or those of `checkpoint`.

    Raises a UserError when the run's config or the weights are missing; reads
    nothing else, and imports no TensorFlow.
    """
    config = run_config(run, output_root)
    path = checkpoint or os.path.join(run_dirs(output_root, run)["checkpoints"], FINAL_WEIGHTS)
    if not (os.path.isfile(path) or os.path.isfile(path + ".index")):
        raise UserError(f"no weights at {path}; did run {run!r} finish? Pass --checkpoint with a "
                        f".weights.h5 file or a checkpoint prefix such as "
                        f"{os.path.join(output_root, 'checkpoints', run, 'ckpt-1000')}")
    return Run(run, output_root, config, path)


def load_run(run, output_root=".", checkpoint=None):
    """(config, dann) of `run`, with its final weights or those of `checkpoint`: `find_run`
    and `Run.load_model` in one call."""
    found = find_run(run, output_root, checkpoint)
    return found.config, found.load_model()


def load_test_sets(config, data_dir=None):
    """(source, target) test images and labels of the run's domains, as (images, labels) pairs.

    These are the sets the trainer evaluates on (utils/data/domains.py,
    evaluation_sets). The target's pair is (None, None) when it has no test
    images, and its labels None when they are unknown. `data_dir` overrides the folder of the built-in pickles
    saved in the run's config.
    """
    from utils.data import hold_out_source_validation, load_run_domains
    from utils.data.domains import evaluation_sets

    source, target = load_run_domains(config, data_dir)
    sets = evaluation_sets(source, target, hold_out_source_validation(
        source, config.source_val_size, config.target_val_seed)[1])
    if sets["source"] is None:
        raise UserError(f"the source {source.title} has no test split and the run held out no "
                        "validation split (--source-val-size 0), so there is nothing to "
                        "evaluate it on; give the source a test/ folder")
    return sets["source"], sets["target"] or (None, None)


# What two runs must share to be scored on the same images.
DATA_FIELDS = ("source", "target", "target_test", "input_shape", "class_names")


def check_same_data(configs):
    """Refuses runs ({run: config}) trained on different domains, shapes or classes."""
    (first, reference), *others = configs.items()
    for run, config in others:
        differ = [field for field in DATA_FIELDS
                  if getattr(config, field) != getattr(reference, field)]
        if differ:
            shown = ", ".join(f"{field} {getattr(reference, field)!r} vs {getattr(config, field)!r}"
                              for field in differ)
            raise UserError(f"runs {first!r} and {run!r} were trained on different data "
                            f"({shown}); compare runs of the same domains")
