"""Writes the built-in domains as image folders: the worked example of "your own domains".

    python -m utils.export_folders --out model_data/folders
    python train_MNIST2MNIST_M.py --source model_data/folders/mnist \
        --target model_data/folders/mnist_m

Each domain becomes <out>/<domain>/train/<class>/<index>.png and
<out>/<domain>/test/<class>/<index>.png, the layout of
`keras.utils.image_dataset_from_directory` that `--source` and `--target`
read (utils/data/files.py). PNG is lossless, so the folders hold exactly the
pickles' pixels; only the order in which the images are listed differs.
`--unlabelled mnist_m` writes that domain's train split as one flat folder
of images, as an unlabelled target would come.
"""
import os

import cv2
import numpy as np

from utils.data.builtin import DATA_DIR, PICKLES, load_pickle_domain
from utils.io import ArgumentParser, UserError, atomic_folder, run_main


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=DATA_DIR,
                        help="folder holding the pickles (default: %(default)s)")
    parser.add_argument("--out", default=os.path.join("model_data", "folders"),
                        help="where the domain folders go (default: %(default)s)")
    parser.add_argument("--domains", nargs="+", choices=sorted(PICKLES),
                        default=sorted(PICKLES), help="domains to write (default: both)")
    parser.add_argument("--unlabelled", nargs="*", choices=sorted(PICKLES), default=[],
                        help="domains whose train split is written flat, without class folders "
                             "(default: none)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a domain folder that exists (default: refuse)")
    return parser.parse_args(argv)


def write_split(folder, images, labels):
    """PNG files of `images`, one subfolder per label (labels None: one flat folder)."""
    for index, image in enumerate(images):
        sub = folder if labels is None else os.path.join(folder, str(int(labels[index])))
        if index == 0 or labels is not None:
            os.makedirs(sub, exist_ok=True)
        # OpenCV writes BGR; the arrays are RGB (or grey).
        pixels = image[..., ::-1] if image.shape[-1] == 3 else image
        if not cv2.imwrite(os.path.join(sub, f"{index:05d}.png"), np.ascontiguousarray(pixels)):
            raise UserError(f"could not write {os.path.join(sub, f'{index:05d}.png')}; check the "
                            "folder and free space")


def export_domain(name, data_dir, out, unlabelled=False, overwrite=False):
    """Writes one built-in domain under `out`; returns its folder. The folder appears whole or
    not at all: it is written beside, then renamed into place."""
    data = load_pickle_domain(os.path.join(data_dir, PICKLES[name]))
    final = os.path.join(out, name)
    if os.path.exists(final) and not overwrite:
        raise UserError(f"{final} exists; pass --overwrite to replace it, or another --out")
    with atomic_folder(final) as partial:
        write_split(os.path.join(partial, "train"), data["train"],
                    None if unlabelled else data["train_label"])
        write_split(os.path.join(partial, "test"), data["val"], data["val_label"])
    return final, len(data["train"]), len(data["val"])


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for name in args.domains:
        folder, num_train, num_test = export_domain(name, args.data_dir, args.out,
                                                    name in args.unlabelled, args.overwrite)
        layout = "flat, unlabelled" if name in args.unlabelled else "one folder per class"
        print(f"wrote {folder}: {num_train} train images ({layout}) and {num_test} test images")


if __name__ == "__main__":
    run_main(main)
