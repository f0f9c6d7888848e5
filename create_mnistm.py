"""Builds MNIST-M (Ganin & Lempitsky, 2015, Sec. 5) and the matching MNIST pickle.

Each MNIST digit is binarised (x > 0 -> 255), made RGB, and blended with a
random 28x28 crop of a random BSDS500 training image by absolute difference:
mnist_m = |crop - digit|. The build is vectorised and seeded (--seed): the
same inputs and seed give byte-identical pickles.

Data are found by explicit flags first, then in model_data/dataset/, then
(MNIST) the Keras cache, and downloaded only as a last resort.

    python create_mnistm.py --mnist-path mnist.npz --bsds-path BSR_bsds500.tgz
"""
import contextlib
import glob
import io
import os
import signal
import sys
import tarfile
import urllib.request
import zipfile
import zlib

import cv2
import numpy as np

from utils.data import DATA_DIR, MNIST_M_PICKLE, MNIST_PICKLE, pixel_mean
from utils.io import (ArgumentParser, UserError, atomic_write_bytes, atomic_write_pickle,
                      ensure_writable_dir, free_space, run_main)
from utils.training.run_lock import folder_lock

DEFAULT_DATA_DIR = DATA_DIR
DEFAULT_SEED = 42  # also ensure_pickles' seed: both builds give the same bytes
BSDS_TRAIN_PREFIX = "BSR/BSDS500/data/images/train/"
BSDS_URLS = (
    "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/BSR/BSR_bsds500.tgz",
    "https://github.com/Daipuwei/DANN-MNIST-tf2/releases/download/master/BSR_bsds500.zip",
)
MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
MNIST_KEYS = ("x_train", "y_train", "x_test", "y_test")
DIGIT_SIZE = 28


# First bytes of file kinds a user may pass by mistake for mnist.npz.
NPZ_MAGIC = b"PK\x03\x04"
OTHER_MAGIC = {b"\x1f\x8b": "a gzip file, e.g. a .tgz like the BSDS500 archive",
               b"\x93NUMPY": "a single .npy array", b"BZh": "a bzip2 file",
               b"\x80": "a pickle, e.g. a dataset pickle"}


def check_npz(path):
    """Raises UserError when `path` exists but is not an npz (zip) file: np.load would read
    a .tgz as a pickle (and advise about allow_pickle), or a .npy as a bare array."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except (FileNotFoundError, NotADirectoryError):
        return  # load_mnist reports a missing file
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror}") from None
    if head.startswith(NPZ_MAGIC):
        return
    kind = next((f"it is {what}" for magic, what in OTHER_MAGIC.items() if head.startswith(magic)),
                "it has no zip header")
    raise UserError(f"{path} is not an npz file: {kind}; --mnist-path takes the Keras "
                    f"mnist.npz (download: {MNIST_URL})")


def load_mnist(path):
    """Reads a Keras-layout mnist.npz; returns (x_train, y_train, x_test, y_test)."""
    check_npz(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in MNIST_KEYS if key not in npz.files]
            if missing:
                raise UserError(f"{path} lacks {missing}; expected the Keras mnist.npz layout "
                                f"({', '.join(MNIST_KEYS)})")
            arrays = tuple(npz[key] for key in MNIST_KEYS)
    except FileNotFoundError:
        raise UserError(f"MNIST not found at {path}; pass --mnist-path to a Keras mnist.npz") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise UserError(f"{path} is not a readable mnist.npz ({type(error).__name__}: {error}); "
                        f"download it again from {MNIST_URL}") from None
    x_train, y_train, x_test, y_test = arrays
    for name, images, labels in (("train", x_train, y_train), ("test", x_test, y_test)):
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (DIGIT_SIZE, DIGIT_SIZE) \
                or labels.shape != (len(images),):
            raise UserError(f"{path}: x_{name} must be uint8 Nx28x28 with N labels, found "
                            f"{images.dtype} {images.shape} and {labels.shape} labels")
    return arrays


def _read_archive_members(path):
    """Yields (name, bytes) of the BSDS500 training JPEGs in a .tgz or .zip, unextracted."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for name in sorted(archive.namelist()):
                if name.startswith(BSDS_TRAIN_PREFIX) and name.endswith(".jpg"):
                    yield name, archive.read(name)
        return
    with tarfile.open(path, "r:*") as archive:
        members = sorted((m for m in archive.getmembers()
                          if m.isfile() and m.name.startswith(BSDS_TRAIN_PREFIX)
                          and m.name.endswith(".jpg")), key=lambda m: m.name)
        # Reading to the end makes gzip/bz2/xz check the CRC, which tarfile never does: a
        # flipped byte would decode as another background, a cut-off trailer go unnoticed.
        while archive.fileobj.read(1 << 20):
            pass
        for member in members:
            yield member.name, archive.extractfile(member).read()


def load_bsds_backgrounds(path):
    """Decodes the BSDS500 training images (RGB uint8) straight from the archive."""
    try:
        members = list(_read_archive_members(path))
    except FileNotFoundError:
        raise UserError(f"BSDS500 archive not found at {path}; pass --bsds-path "
                        f"(download: {BSDS_URLS[0]})") from None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as error:
        raise UserError(f"{path} is not a readable BSDS500 archive ({type(error).__name__}); "
                        f"download it again from {BSDS_URLS[0]}") from None
    if not members:
        raise UserError(f"{path} holds no training images under {BSDS_TRAIN_PREFIX}; "
                        f"is it BSR_bsds500.tgz? (download: {BSDS_URLS[0]})")
    backgrounds = []
    for name, data in members:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise UserError(f"{path}: {name} is not a decodable JPEG; download the archive again")
        backgrounds.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    return backgrounds


def blend_digits(digits, backgrounds, rng):
    """MNIST-M images: |random 28x28 crop of a random background - binarised RGB digit|.

    With the digit 0 or 255, |crop - digit| is `255 - crop` on the stroke and `crop`
    elsewhere. The crops of all digits drawn on one background are one gather."""
    strokes = (digits > 0)[..., None]
    choice = rng.integers(len(backgrounds), size=len(digits))
    # Crop corners for every digit, drawn up front so the result does not depend on grouping.
    corner = rng.random((len(digits), 2))
    out = np.empty(digits.shape + (3,), np.uint8)
    for index, background in enumerate(backgrounds):
        which = np.flatnonzero(choice == index)
        if not len(which):
            continue
        height, width = background.shape[:2]
        rows = (corner[which, 0] * (height - DIGIT_SIZE + 1)).astype(np.int64)
        cols = (corner[which, 1] * (width - DIGIT_SIZE + 1)).astype(np.int64)
        windows = np.lib.stride_tricks.sliding_window_view(background, (DIGIT_SIZE, DIGIT_SIZE),
                                                           axis=(0, 1))
        crops = windows[rows, cols].transpose(0, 2, 3, 1)
        out[which] = np.where(strokes[which], 255 - crops, crops)
    return out


def _download(urls, destination):
    """Fetches the first URL that answers into `destination`, with a progress bar."""
    from tqdm import tqdm

    ensure_writable_dir(os.path.dirname(destination) or ".")
    errors = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                buffer = io.BytesIO()
                with tqdm(total=total, unit="B", unit_scale=True, desc=os.path.basename(url)) as bar:
                    while chunk := response.read(1 << 20):
                        buffer.write(chunk)
                        bar.update(len(chunk))
            suffix = os.path.splitext(url)[1]
            target = os.path.splitext(destination)[0] + suffix
            atomic_write_bytes(target, buffer.getvalue())
            return target
        except OSError as error:
            errors.append(f"{url}: {error}")
    raise UserError(f"{os.path.basename(destination)} not found at {destination} and the download "
                    f"failed ({'; '.join(errors)}); download {urls[0]} by hand and pass "
                    "--bsds-path")


def resolve_bsds(path, data_dir):
    """An explicit path, then BSR_bsds500.tgz or .zip in `data_dir`, then a download (which
    keeps the URL's suffix: looking for the mirror's .zip too spares the next build a download)."""
    if path:
        return path
    local = os.path.join(data_dir, "BSR_bsds500.tgz")
    for candidate in (local, os.path.splitext(local)[0] + ".zip"):
        if os.path.exists(candidate):
            return candidate
    print(f"BSDS500 not found at {local} (or .zip); downloading", file=sys.stderr)
    return _download(BSDS_URLS, local)


def resolve_mnist(path, data_dir):
    """An explicit path, then model_data/dataset/mnist.npz, the Keras cache, then a download."""
    if path:
        return load_mnist(path)
    candidates = (os.path.join(data_dir, "mnist.npz"),
                  os.path.join(os.path.expanduser("~"), ".keras", "datasets", "mnist.npz"))
    for candidate in candidates:
        if os.path.exists(candidate):
            return load_mnist(candidate)
    print(f"MNIST not found at {' or '.join(candidates)}; trying keras.datasets.mnist",
          file=sys.stderr)
    try:
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception as error:  # any failure here is the network's, reported as one line
        raise UserError(f"MNIST not found at {candidates[0]} and keras.datasets.mnist could not "
                        f"download it ({type(error).__name__}); download {MNIST_URL} and pass "
                        "--mnist-path") from None
    return x_train, y_train, x_test, y_test


def build(mnist, backgrounds, seed):
    """Returns the MNIST and MNIST-M dicts ({train, train_label, val, val_label})."""
    x_train, y_train, x_test, y_test = mnist
    rng = np.random.default_rng(seed)
    mnist_m = {"train": blend_digits(x_train, backgrounds, rng), "train_label": y_train.astype(np.int64),
               "val": blend_digits(x_test, backgrounds, rng), "val_label": y_test.astype(np.int64)}
    grey = {"train": np.repeat(x_train[..., None], 3, axis=-1), "train_label": y_train.astype(np.int64),
            "val": np.repeat(x_test[..., None], 3, axis=-1), "val_label": y_test.astype(np.int64)}
    return grey, mnist_m


@contextlib.contextmanager
def _sigterm_as_exit():
    """SIGTERM raises SystemExit(143) in the block, as SIGINT raises KeyboardInterrupt, so
    the atomic writes remove their temporary files on either (a killed build leaves none)."""
    def stop(signum, frame):
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def pickle_paths(out_dir):
    """The paths of the MNIST and MNIST-M pickles under `out_dir`."""
    return [os.path.join(out_dir, sub) for sub in (MNIST_PICKLE, MNIST_M_PICKLE)]


def remove_stale_temporaries(out_dir):
    """Deletes the `.tmp-*` files an earlier, killed build of these pickles left behind."""
    for pickle_path in pickle_paths(out_dir):
        pattern = os.path.join(os.path.dirname(pickle_path), ".tmp-*" + os.path.basename(pickle_path))
        for path in glob.glob(pattern):
            os.remove(path)
            print(f"removed {path}, left by an interrupted build")


def write_pickle(path, data):
    """atomic_write_pickle, with a full disk (or another OS error) as one line, not a trace."""
    try:
        atomic_write_pickle(path, data)
    except OSError as error:
        needed = sum(value.nbytes for value in data.values()) / 2**20
        free = free_space(os.path.dirname(os.path.abspath(path)))
        raise UserError(f"writing {path} failed: {error.strerror or error} (it needs about "
                        f"{needed:.0f} MiB{free}); nothing half-written was left; free space "
                        "or choose another --out-dir, then run the command again") from None


# SIGTERM, as SIGINT, leaves no temporary file of the build behind.
@_sigterm_as_exit()
def build_pickles(out_dir, mnist_path=None, bsds_path=None, seed=DEFAULT_SEED,
                  source_dir=DEFAULT_DATA_DIR, unless_built=False):
    """Finds the inputs (flags, then `source_dir`, then the Keras cache or a download),
    builds MNIST and MNIST-M and writes both pickles under `out_dir`; `ensure_pickles`
    uses it too, so both find the data alike.

    The output folders are made first (a bad --out-dir fails before any work) and removed
    if the build fails (no empty MNIST/ is later taken for data). A build removes the
    temporary files of a killed one. Builds into one folder take turns (`folder_lock`);
    with `unless_built`, one that finds the pickles built meanwhile builds nothing.
    """
    folders = [out_dir] + [os.path.dirname(path) for path in pickle_paths(out_dir)]
    created = []  # every folder this call makes, parents before children
    try:
        for folder in folders:
            missing, parent = [], os.path.abspath(folder)
            while not os.path.exists(parent):
                missing.insert(0, parent)
                parent = os.path.dirname(parent)
            ensure_writable_dir(folder)
            created.extend(missing)
        with folder_lock(out_dir, f"another process is building the pickles in {out_dir}; "
                         "waiting for it"):
            # Written atomically: a pickle present is whole.
            if unless_built and all(map(os.path.exists, pickle_paths(out_dir))):
                print(f"the pickles in {out_dir} were built meanwhile by another process")
                return
            # Under the lock, any temporary file is a dead build's, never a live one's.
            remove_stale_temporaries(out_dir)
            backgrounds = load_bsds_backgrounds(resolve_bsds(bsds_path, source_dir))
            mnist, mnist_m = build(resolve_mnist(mnist_path, source_dir), backgrounds, seed)
            for name, data, sub in (("MNIST", mnist, MNIST_PICKLE),
                                    ("MNIST-M", mnist_m, MNIST_M_PICKLE)):
                path = os.path.join(out_dir, sub)
                write_pickle(path, data)
                mean = pixel_mean(data["train"])
                print(f"{name}: train {data['train'].shape}, val {data['val'].shape}, "
                      f"pixel mean (RGB, train) {[round(float(v), 4) for v in mean]} -> {path}")
    except BaseException:
        for folder in reversed(created):
            try:
                os.rmdir(folder)  # only if still empty: never removes a written pickle
            except OSError:
                pass
        raise
    print(f"{len(backgrounds)} BSDS500 backgrounds, seed {seed}")


def ensure_pickles(data_dir, mnist_path=None, bsds_path=None, resume=False, builtin_used=True):
    """For train_MNIST2MNIST_M.py: builds the pickles into `data_dir` when it holds neither.

    Only for a run that uses a built-in domain, only for a new run (a resumed one continues
    on its data), only when both are missing (one alone is a damaged folder: loading names
    the missing file, where a rebuild would replace the other), and only into the default
    folder or an empty or missing one. --mnist-path/--bsds-path are refused where they
    would be ignored, not dropped."""
    if not builtin_used:
        if mnist_path or bsds_path:
            raise UserError("--mnist-path/--bsds-path build the built-in mnist_m domain, which "
                            "this run does not use; drop them")
        return
    present = [os.path.exists(path) for path in pickle_paths(data_dir)]
    if (mnist_path or bsds_path) and resume:
        raise UserError("--mnist-path/--bsds-path cannot be used with --resume: a resumed run "
                        "continues on the data it started with; drop them")
    if (mnist_path or bsds_path) and any(present):
        raise UserError(f"{data_dir} already holds pickles, so --mnist-path/--bsds-path would be "
                        "ignored; drop them, or rebuild with `python create_mnistm.py --out-dir "
                        f"{data_dir}` and those flags")
    if resume or any(present):
        return
    # Else a mistyped --data-dir, or a folder of the user's images, gets 330 MB of pickles.
    others = sorted(name for name in (os.listdir(data_dir) if os.path.isdir(data_dir) else [])
                    if not name.startswith(".") and name not in ("MNIST", "MNIST_M"))
    if others and os.path.abspath(data_dir) != os.path.abspath(DEFAULT_DATA_DIR):
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise UserError(f"--data-dir {data_dir} holds other files ({shown}) but not "
                        f"{MNIST_PICKLE} and {MNIST_M_PICKLE}; point --data-dir at the folder "
                        "that holds the pickles, or at an empty folder to build them there "
                        f"(`python create_mnistm.py --out-dir {data_dir}`)")
    print(f"no pickles in {data_dir}; building MNIST-M first (as `python create_mnistm.py "
          f"--out-dir {data_dir}` does)", flush=True)
    # Several workers on a shared --data-dir take turns; the later ones find them built.
    build_pickles(data_dir, mnist_path, bsds_path, unless_built=True)


def add_source_arguments(parser, use=""):
    """--mnist-path and --bsds-path, shared with train_MNIST2MNIST_M.py (`use` says when
    that script reads them)."""
    parser.add_argument("--mnist-path", help=f"Keras-layout mnist.npz{use} (default: "
                        f"{os.path.join(DEFAULT_DATA_DIR, 'mnist.npz')}, then the Keras cache "
                        "~/.keras/datasets/mnist.npz, then a download)")
    parser.add_argument("--bsds-path", help=f"BSR_bsds500.tgz or the .zip mirror{use} (default: "
                        f"{os.path.join(DEFAULT_DATA_DIR, 'BSR_bsds500.tgz')} or .zip, then a "
                        "download)")


def build_parser():
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    add_source_arguments(parser)
    parser.add_argument("--out-dir", default=DEFAULT_DATA_DIR,
                        help="writes MNIST/mnist_data.pkl and MNIST_M/mnist_m_data.pkl here "
                        "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="seeds the choice of background and crop of every digit "
                        "(default: %(default)s)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    build_pickles(args.out_dir, args.mnist_path, args.bsds_path, args.seed)


if __name__ == "__main__":
    run_main(main)
