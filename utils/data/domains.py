"""Domains: the one place where a run's source, target and target test set are loaded and checked.

A domain is named on the command line by a SPEC (`--source`, `--target`,
`--target-test`), one of:

  * `mnist` or `mnist_m`: the built-in pickles in --data-dir
    (utils/data/builtin.py, written by create_mnistm.py);
  * a folder in the layout of `keras.utils.image_dataset_from_directory`:
    one subfolder per class (class names sorted) holding .png, .jpg, .jpeg,
    .bmp or .gif files, optionally below `train/` and `test/`; or a flat
    folder of images, which is an unlabelled domain (utils/data/files.py);
  * a `.npz` in the layout of Keras' `mnist.npz` (`x_train`, `y_train`,
    `x_test`, `y_test`), read with allow_pickle=False (utils/data/npz.py).

Each is one case of one loader (utils/data/formats.py); this module checks a
run's domains against each other. The source must have labels. The target
may be unlabelled: its labels, when it has them, are used only for
evaluation and the validation split. The
classes of the three must agree by name: the target's are the source's, and
the target test set's are among them. Image size and channels come from
the data (the source's first image; colour wins over grey, judged on each
domain's first image), unless `--input-shape` is given, in which case every
image of a folder or .npz is resized to it the way Keras resizes (bilinear);
the built-in domains are 28x28x3 and are not resized.
"""
import dataclasses
import os

import numpy as np

import utils.data.formats as formats
from utils.data.builtin import TITLES, is_builtin
from utils.data.splits import held_out_count
from utils.io import UserError


def describe_spec(spec):
    """How a SPEC is shown in tables and figures: MNIST, MNIST-M, or the file or folder name."""
    return TITLES.get(spec) or os.path.basename(os.path.normpath(spec))


def resolve_shape(specs, input_shape, data_dir):
    """The network's input shape: `input_shape` when given, else from the data.

    `specs` is [(flag, spec)], the source first. Height and width are the
    source's; every other domain must have them too (or --input-shape resizes
    all but the built-in domains, which stay 28x28x3). Channels are 3 if the
    first image of any domain is colour (RGBA counts as colour: its alpha is
    dropped), else 1.
    """
    if input_shape is not None:
        return tuple(input_shape)
    probes = [(flag, spec, *formats.probe(spec, flag, data_dir)) for flag, spec in specs]
    _, _, size, _ = probes[0]
    for flag, spec, other, _ in probes[1:]:
        if other != size:
            # The built-in domains are not resized: the others must come to their size.
            builtin = [probe for probe in probes if is_builtin(probe[1])]
            fit = builtin[0][2] if builtin else size
            raise UserError(f"--source images are {size[0]}x{size[1]} but {flag} images are "
                            f"{other[0]}x{other[1]}; pass --input-shape H,W,C (e.g. "
                            f"{fit[0]},{fit[1]},3) to resize every image to one size")
    channels = 3 if any(c >= 3 for *_, c in probes) else 1
    return (size[0], size[1], channels)


def network_input_shape(network, shape):
    """(shape, resized): the images' `shape`, or the native size of the network that will
    train on them (given, or chosen by size) when it has one and they differ: the paper's
    columns stay at the size they were drawn for, with the run saying so."""
    from model import NETWORKS, default_network

    name = network or default_network(shape)
    native = getattr(NETWORKS.get(name), "native_size", 0)
    if not native or tuple(shape[:2]) == (native, native):
        return tuple(shape), False
    print(f"network {name} takes {native}x{native} images, the size the paper trained it on: "
          f"the {shape[0]}x{shape[1]} images are resized (--input-shape "
          f"{shape[0]},{shape[1]},{shape[2]} keeps them)", flush=True)
    return (native, native, shape[2]), True


def _class_difference(names, expected):
    missing = [name for name in expected if name not in names]
    extra = [name for name in names if name not in expected]
    parts = []
    if extra:
        parts.append("only in it: " + ", ".join(extra[:10]) + (" ..." if len(extra) > 10 else ""))
    if missing:
        parts.append("missing: " + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
    return "; ".join(parts)


def _remap(labels, names, source_names):
    """Labels indexing `names` re-expressed as indices into `source_names`."""
    lookup = np.array([source_names.index(name) for name in names], np.int64)
    return lookup[labels]


def load_run_domains(config, data_dir=None):
    """(source, target) of a run, checked against each other; the target's test split is
    `--target-test` when given. Fills nothing in: see `fill_config`."""
    data_dir = data_dir or config.data_dir
    specs = [("--source", config.source), ("--target", config.target)]
    if config.target_test:
        specs.append(("--target-test", config.target_test))
    shape = resolve_shape(specs, config.input_shape, data_dir)
    resize = config.input_shape is not None
    if not resize and not any(is_builtin(spec) for _, spec in specs):
        shape, resize = network_input_shape(config.network, shape)
    loaded = [formats.load(spec, flag, shape, resize, data_dir, config.num_classes)
              for flag, spec in specs]
    source, target = loaded[:2]
    if not source.labelled:
        raise UserError(f"--source {source.spec} has no labels: DANN needs a labelled source; "
                        "give it one subfolder per class (or y_train/y_test in a .npz)")
    names = list(source.class_names)
    if target.labelled and list(target.class_names) != names:
        raise UserError(f"the classes of --target {target.spec} differ from those of --source "
                        f"{source.spec} ({_class_difference(target.class_names, names)}); "
                        "name the class folders alike in both")
    flag, test = "--target", target
    if config.target_test:
        flag, test = "--target-test", loaded[2]
    images, labels = ((test.test, test.test_labels) if test.test is not None
                      else (test.train, test.train_labels) if test is not target else (None, None))
    if labels is None and test is not target:
        raise UserError(f"--target-test {test.spec} has no labels, so no target accuracy can be "
                        "measured on it; give it one subfolder per class (or y_test in a .npz)")
    if labels is not None:
        # A test set may lack classes, but every class it has must be one of the source's.
        unknown = [name for name in test.class_names if name not in names]
        if unknown:
            raise UserError(f"{flag} {test.spec} has test classes the source does not have: "
                            f"{', '.join(unknown[:10])}; remove them or rename them to source "
                            "classes")
        labels = _remap(labels, list(test.class_names), names)
    target = dataclasses.replace(target, test=images, test_labels=labels)
    return source, target


def fill_config(config, source, target):
    """Sets the config fields that come from the data (input shape, classes, network) and
    checks the ones given against it; returns the config."""
    from model import default_network, get_network

    shape = source.shape
    if config.input_shape is not None and tuple(config.input_shape) != shape:
        raise UserError(f"the domains hold {'x'.join(map(str, shape))} images but --input-shape "
                        f"is {','.join(map(str, config.input_shape))}; pass --input-shape "
                        f"{','.join(map(str, shape))} or drop it")
    names = tuple(source.class_names)
    if config.class_names is not None and tuple(config.class_names) != names:
        raise UserError(f"--class-names lists {', '.join(config.class_names)} but the source's "
                        f"classes are {', '.join(names)} "
                        f"({_class_difference(names, config.class_names)}); drop --class-names "
                        "(a resumed run must find the classes it started with)")
    if config.num_classes is not None and config.num_classes != len(names):
        raise UserError(f"--num-classes is {config.num_classes} but the source has "
                        f"{len(names)} classes; drop --num-classes (it comes from the data)")
    config.input_shape, config.class_names, config.num_classes = shape, names, len(names)
    # The schedule follows the source images trained on: its training split less the
    # validators' split (utils/data/splits.py).
    config.fill_schedule(len(source.train) - held_out_count(config.source_val_size,
                                                           len(source.train)))
    if config.network is None:
        config.network = default_network(shape)
    try:
        network = get_network(config.network)
    except ValueError as error:  # the model's own words: "unknown network ..."
        raise UserError(str(error)) from None
    if not network.fits(shape):
        need = network.min_input_size()
        raise UserError(f"--input-shape {','.join(map(str, shape))} is too small for "
                        f"--network {config.network}, which needs at least {need}x{need} images; "
                        f"pass a larger --input-shape (e.g. {need},{need},{shape[2]}) or another "
                        "--network")
    return config


def evaluation_sets(source, target, source_val):
    """{"target": (images, labels), "source": (images, labels)}: the test sets a run is
    evaluated on, each None when there is none. The target's is its test split (or
    --target-test; labels None when unknown). A source without a test split is measured
    on its validation split `source_val` (utils/data/splits.py), which no run trains on."""
    return {
        "target": (target.test, target.test_labels) if target.test is not None else None,
        "source": ((source.test, source.test_labels) if source.test is not None
                   else (source_val["images"], source_val["labels"])
                   if len(source_val["labels"]) else None),
    }


def pool_size_problem(name, count, half_batch):
    """Why a training pool of `count` images cannot feed batches of `half_batch` (or None)."""
    if count < half_batch:
        return (f"{name} has {count} training image{'s' if count != 1 else ''} left for "
                f"training, fewer than the {half_batch} per step each domain gives; add images "
                f"or lower --batch-size (to {2 * max(1, count // 2) if count > 1 else 2} or less)")
    return None

