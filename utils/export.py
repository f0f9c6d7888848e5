"""Exports a trained run as a TensorFlow SavedModel that needs no code from this repository.

    python -m utils.export --run <run> --out exported/<run>

The SavedModel is written with Keras' own exporter (`keras.export.ExportArchive`).
Its `serve` endpoint, also the `serving_default` signature, takes uint8 images
[N, H, W, C] of the run's input shape and returns class probabilities
[N, K]: the input normalisation is inside the model, so nothing but decoding
and resizing is left to the caller. The class names, in the order of the
probabilities, are in class_names.txt beside saved_model.pb. Load it with

    import tensorflow as tf
    model = tf.saved_model.load("exported/<run>")
    probabilities = model.serve(tf.zeros([1, 28, 28, 3], tf.uint8))

The folder appears whole or not at all: it is written beside --out, then
renamed into place.

    python -m utils.export --run <run> --backbone-only --out backbone.weights.h5

writes instead only the weights of a keras.applications run's backbone
(model/applications.py), the file another run starts from with
`--backbone-weights backbone.weights.h5` (any input size: they are convolutions).
"""
import os

from utils.io import (ArgumentParser, UserError, atomic_folder, atomic_write_text,
                      ensure_writable_dir, run_main)
from utils.runs import (add_checkpoint_argument, add_output_root_argument, add_run_argument,
                        find_run)


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_argument(parser, "trained run, as given to --run-name")
    parser.add_argument("--out", required=True, help="folder to write the SavedModel to")
    add_checkpoint_argument(parser, "weights to export instead of the run's final ones")
    add_output_root_argument(parser)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out if it exists (default: refuse)")
    parser.add_argument("--backbone-only", action="store_true",
                        help="write only the backbone's weights, as --out (a .weights.h5 file), "
                             "for another run's --backbone-weights (default: the SavedModel)")
    args = parser.parse_args(argv)
    if args.backbone_only and not args.out.endswith(".weights.h5"):
        raise UserError(f"--out {args.out}: with --backbone-only, name a file ending in "
                        ".weights.h5 (Keras 3 saves weights only under that suffix)")
    return args


def export_backbone(run, out):
    """Writes the backbone's weights of `run` to `out` (.weights.h5), whole or not at all."""
    from utils.training.backbone import backbone_of

    backbone = backbone_of(run.load_model())
    if backbone is None:
        raise UserError(f"run {run.name!r} trained network {run.config.network}, which has no "
                        "keras.applications backbone to export; drop --backbone-only")
    partial = out[:-len(".weights.h5")] + ".partial.weights.h5"
    backbone.save_weights(partial)
    os.replace(partial, out)


def export(run, out):
    """Writes the SavedModel of `run` (a utils.runs.Run, from find_run) to `out`; returns the
    class names."""
    import keras
    import tensorflow as tf

    from utils.predict import class_names

    config, model = run.config, run.load_model().model

    def serve(images):
        return tf.nn.softmax(model(images, training=False)[0])

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serve", fn=serve, input_signature=[
        tf.TensorSpec((None,) + tuple(config.input_shape), tf.uint8, name="images")])
    names = class_names(config)
    with atomic_folder(out) as partial:
        archive.write_out(partial, verbose=False)
        atomic_write_text(os.path.join(partial, "class_names.txt"), "\n".join(names) + "\n")
    return names


def main(argv=None):
    args = parse_args(argv)
    run = find_run(args.run, args.output_root, args.checkpoint)
    if os.path.exists(args.out) and not args.overwrite:
        raise UserError(f"{args.out} exists; pass --overwrite to replace it, or another --out")
    ensure_writable_dir(os.path.dirname(os.path.abspath(args.out)))
    if args.backbone_only:
        export_backbone(run, args.out)
        print(f"wrote the backbone of run {args.run} ({run.config.network}) to {args.out}; "
              f"start another run from it with --network {run.config.network} "
              f"--backbone-weights {args.out}")
        return
    names = export(run, args.out)
    print(f"wrote the SavedModel of run {args.run} to {args.out}: serve(uint8 images "
          f"[N, ...]) -> probabilities of {len(names)} classes ({args.out}/class_names.txt)")


if __name__ == "__main__":
    run_main(main)
