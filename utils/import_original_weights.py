"""Imports the original TF2 repository's released DANN weights as a run of ours.

    python -m utils.import_original_weights --weights trained_dann_mnist2mnist_m.h5
        --run-name original [--pixel-mean 45.652287] [--output-root .]
        [--data-dir model_data/dataset]

The original repository (Daipuwei/DANN-MNIST-tf2, TensorFlow 2.4) saves a full
Keras 2.4 model whose three `keras.Sequential` parts hold the network of
Ganin & Lempitsky (2015), Sec. 5.2 (MNIST column of Fig. 4), the same as
model/dann.py. Its h5 file is read with h5py alone, no code of the original:

    h5 group under model_weights/        ours (model.build_dann)
    sequential/conv2d                    feature_extractor/conv1
    sequential/conv2d_1                  feature_extractor/conv2
    sequential_1/dense                   label_classifier/fc1
    sequential_1/dense_1                 label_classifier/fc2
    sequential_1/image_cls_pred          label_classifier/class_logits (softmax -> logits)
    sequential_2/dense_2                 domain_classifier/fc1
    sequential_2/domain_cls_pred         domain_classifier/domain_logit

The domain head is a 2-way softmax whose index 1 is the target domain. A
2-way softmax is a sigmoid of the difference of its two logits, so our single
logit takes kernel[:, 1] - kernel[:, 0] and bias[1] - bias[0], exactly.

The original feeds (x - pixel_mean) / 255 with a scalar pixel_mean on the 0-255
scale (45.652287 in its saved run config); our MeanSubtraction computes
x / 255 - m per channel, so m = pixel_mean / 255 on all three channels.

Writes config/<run>/config.json (and config.txt) with recipe `original`, and
checkpoints/<run>/final.weights.h5, each atomically, so that utils.evaluate,
utils.visualize_features and utils.plot_curves can read the run. The whole
file is checked before anything is written: a missing, truncated or non-HDF5
file, or an h5 of another architecture (a missing group, a wrong shape), ends
with one line and exit status 2, and writes nothing.
"""
import hashlib
import os

import numpy as np

from utils.data import DATA_DIR
from utils.io import ArgumentParser, UserError, atomic_save, ensure_writable_dir, run_main
from utils.runs import FINAL_WEIGHTS, add_output_root_argument, config_file, run_dirs

ORIGINAL_PIXEL_MEAN = 45.652287
ROOT_GROUP = "model_weights"
NUM_CLASSES = 10
FEATURE_DIM = 4 * 4 * 48
# (our sub-model, our layer, the original's h5 group, kernel shape, bias shape)
LAYERS = (
    ("feature_extractor", "conv1", "sequential/conv2d", (5, 5, 3, 32), (32,)),
    ("feature_extractor", "conv2", "sequential/conv2d_1", (5, 5, 32, 48), (48,)),
    ("label_classifier", "fc1", "sequential_1/dense", (FEATURE_DIM, 100), (100,)),
    ("label_classifier", "fc2", "sequential_1/dense_1", (100, 100), (100,)),
    ("label_classifier", "class_logits", "sequential_1/image_cls_pred", (100, NUM_CLASSES),
     (NUM_CLASSES,)),
    ("domain_classifier", "fc1", "sequential_2/dense_2", (FEATURE_DIM, 100), (100,)),
    ("domain_classifier", "domain_logit", "sequential_2/domain_cls_pred", (100, 2), (2,)),
)


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True,
                        help="the original's full-model h5 (trained_dann_mnist2mnist_m.h5)")
    parser.add_argument("--run-name", required=True, help="name of the run to write, e.g. original")
    parser.add_argument("--pixel-mean", type=float, default=ORIGINAL_PIXEL_MEAN,
                        help="the original's scalar pixel mean on the 0-255 scale "
                             f"(default: {ORIGINAL_PIXEL_MEAN}, from its saved config.txt)")
    add_output_root_argument(parser, "folder that gets config/<run>/ and checkpoints/<run>/ "
                                     "(default: .)")
    parser.add_argument("--data-dir", default=DATA_DIR,
                        help="dataset folder recorded in the run's config, where the analysis "
                             f"tools find the test sets (default: {DATA_DIR})")
    return parser.parse_args(argv)


def read_original_weights(path):
    """{h5 group: (kernel, bias)} of every layer in LAYERS, as NumPy arrays.

    Reads with h5py only. Raises a UserError naming the first missing group or
    dataset, or wrong shape, so a file of another architecture is refused.
    """
    import h5py

    if not os.path.isfile(path):
        raise UserError(f"no weights file at {path}; pass --weights with the original's "
                        "trained_dann_mnist2mnist_m.h5")
    fix = "pass the full-model h5 saved by the original repository (trained_dann_mnist2mnist_m.h5)"
    weights = {}
    try:
        with h5py.File(path, "r") as handle:
            # A full-model save nests the layers under model_weights/; a
            # save_weights file of the same model holds them at the root.
            root = handle[ROOT_GROUP] if ROOT_GROUP in handle else handle
            prefix = f"{ROOT_GROUP}/" if ROOT_GROUP in handle else ""
            for _, _, group, kernel_shape, bias_shape in LAYERS:
                arrays = []
                for name, shape in (("kernel:0", kernel_shape), ("bias:0", bias_shape)):
                    dataset = f"{group}/{name}"
                    if dataset not in root:
                        raise UserError(f"{path} has no {prefix}{dataset}, so it is not the original "
                                        f"DANN model; {fix}")
                    array = np.asarray(root[dataset][()])
                    if array.shape != shape:
                        raise UserError(f"{path}: {prefix}{dataset} has shape {array.shape}, the "
                                        f"original DANN has {shape}; {fix}")
                    if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
                        raise UserError(f"{path}: {prefix}{dataset} is not all finite floats; {fix}")
                    arrays.append(array.astype(np.float32))
                weights[group] = tuple(arrays)
    except OSError as error:
        # h5py reports a truncated or non-HDF5 file, or an unreadable dataset, as OSError.
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"cannot read {path} as HDF5 ({reason}): it is truncated or not an h5 "
                        f"file; {fix}") from None
    return weights


def to_our_layers(weights):
    """{(sub-model, layer): [kernel, bias]} for model.build_dann, the 2-way softmax
    domain head folded into one logit: logit = z[1] - z[0] (target = 1)."""
    layers = {}
    for model_name, layer_name, group, _, _ in LAYERS:
        kernel, bias = weights[group]
        if layer_name == "domain_logit":
            kernel = kernel[:, 1:2] - kernel[:, 0:1]
            bias = bias[1:2] - bias[0:1]
        layers[(model_name, layer_name)] = [kernel, bias]
    return layers


def imported_config(run_name, data_dir):
    """The run's DANNConfig: the `original` recipe (config/recipes.py), as trained there."""
    from config.config import DANNConfig
    from config.recipes import recipe_fields

    return DANNConfig(**{**recipe_fields("original"), "mode": "dann", "learning_rate": 0.01,
                         "momentum": 0.9, "data_dir": data_dir, "run_name": run_name,
                         "input_shape": (28, 28, 3), "num_classes": NUM_CLASSES,
                         "class_names": tuple(str(d) for d in range(NUM_CLASSES)),
                         "network": "mnist"})


def build_imported_model(layers, pixel_mean_255):
    """Our DANN with the original's weights and its input normalisation."""
    from model import build_dann

    dann = build_dann((28, 28, 3), NUM_CLASSES, pixel_mean=[pixel_mean_255 / 255.0] * 3,
                      input_norm="mean")
    for (model_name, layer_name), arrays in layers.items():
        getattr(dann, model_name).get_layer(layer_name).set_weights(arrays)
    return dann


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def import_weights(weights_path, run_name, pixel_mean=ORIGINAL_PIXEL_MEAN, output_root=".",
                   data_dir=DATA_DIR):
    """Checks everything, then writes the run; returns (config path, weights path)."""
    if not 0.0 <= pixel_mean < 255.0:
        raise UserError(f"--pixel-mean is on the 0-255 scale, got {pixel_mean}; the original's "
                        f"is {ORIGINAL_PIXEL_MEAN}")
    config = imported_config(run_name, data_dir)
    config_dir = run_dirs(output_root, run_name)["config"]
    weights_out = os.path.join(run_dirs(output_root, run_name)["checkpoints"], FINAL_WEIGHTS)
    for existing in (config_file(run_name, output_root), weights_out):
        if os.path.exists(existing):
            raise UserError(f"run {run_name!r} already exists ({existing}); choose another "
                            "--run-name or --output-root")
    layers = to_our_layers(read_original_weights(weights_path))
    ensure_writable_dir(output_root)

    dann = build_imported_model(layers, pixel_mean)
    # Weights first, then the config that makes the run visible to the tools;
    # if the config cannot be written, the weights go too.
    atomic_save(weights_out, dann.model.save_weights)
    try:
        config.save(config_dir)
    except BaseException:
        os.remove(weights_out)
        raise
    return config_file(run_name, output_root), weights_out


def main(argv=None):
    args = parse_args(argv)
    config_path, weights_path = import_weights(args.weights, args.run_name, args.pixel_mean,
                                               args.output_root, args.data_dir)
    print(f"imported {args.weights} (sha256 {file_sha256(args.weights)[:16]}) with pixel mean "
          f"{args.pixel_mean}/255")
    print(f"wrote {config_path} and {weights_path}")
    print(f"evaluate with: python -m utils.evaluate --run {args.run_name} "
          f"--output-root {args.output_root}")


if __name__ == "__main__":
    run_main(main)
