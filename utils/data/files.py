"""Image-folder domains: image files decoded once and cached. One format of
utils/data/formats.py: a SPEC that is a folder.

Folders follow `keras.utils.image_dataset_from_directory` (labels="inferred"):
one subfolder per class, class names sorted, images found by walking each
class folder, and only .bmp, .gif, .jpeg, .jpg and .png files read (any
case). A folder with no subfolders is one unlabelled domain. Either may sit
below `train/` and `test/`. Images are decoded with TensorFlow's
`tf.io.decode_image` (the first frame of a GIF), converted to the network's
channels (grey is repeated to RGB, RGB is made grey with ITU-R 601 weights
as `tf.image.rgb_to_grayscale` does, and an alpha channel is dropped) and,
with --input-shape, resized as Keras resizes: `tf.image.resize`, bilinear.
Deviation from Keras: images are kept as uint8 (rounded after resizing),
since the network normalises them itself.

Decoded images are cached as an uncompressed uint8 `.npz` in a hidden
`.dann-cache/` folder inside the domain's folder, keyed by the list of files
with their sizes and modification times, their labels and the shape, so a
second run does not decode again and any change to the files decodes anew.
"""
import hashlib
import os

import numpy as np

from utils.data.domain import LAYOUT_HINT, Domain
from utils.io import UserError, atomic_save

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
CACHE_FOLDER = ".dann-cache"
# Bumped whenever decoding changes what lands in the cache.
DECODE_VERSION = 2
DECODE_BATCH = 256


def is_image(name):
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _visible(names):
    return sorted(name for name in names if not name.startswith("."))


def _listdir(folder, flag):
    try:
        return _visible(os.listdir(folder))
    except PermissionError:
        raise UserError(f"{flag} {folder}: cannot read the folder (permission denied); make it "
                        "readable") from None
    except NotADirectoryError:
        raise UserError(f"{flag} {folder} is not a folder; {LAYOUT_HINT}") from None


class Listing:
    """The image files of one split of a folder domain, their labels and what was skipped."""

    def __init__(self, folder, flag):
        self.folder = folder
        names = _listdir(folder, flag)
        classes = [name for name in names if os.path.isdir(os.path.join(folder, name))]
        self.ignored = []
        if classes:
            self.class_names = tuple(classes)
            self.files, labels = [], []
            # Like Keras, files beside the class folders belong to no class.
            self.ignored += [os.path.join(folder, name) for name in names if name not in classes]
            for label, name in enumerate(classes):
                found = self._walk(os.path.join(folder, name), flag)
                if not found:
                    raise UserError(f"{flag}: class folder {os.path.join(folder, name)} holds no "
                                    f"images ({', '.join(IMAGE_EXTENSIONS)}); add some or remove "
                                    "the folder")
                self.files += found
                labels += [label] * len(found)
            self.labels = np.array(labels, np.int64)
        else:
            self.class_names, self.labels = (), None
            self.files = [os.path.join(folder, name) for name in names if is_image(name)]
            self.ignored += [os.path.join(folder, name) for name in names if not is_image(name)]
        if not self.files:
            raise UserError(f"{flag} {folder} holds no images; {LAYOUT_HINT}")

    def _walk(self, folder, flag):
        found, others = walk_images(folder, flag)
        self.ignored += others
        return found

    def cache_key(self, shape):
        """A digest of the file list, sizes, modification times, labels and output shape.

        Not of whether other sizes may be resized: a run resumed (its config now
        names the input shape) must find the cache its start wrote. The cache says
        whether it holds resized images instead (`load_listing`)."""
        digest = hashlib.sha256(f"v{DECODE_VERSION} {shape} {self.class_names}\n".encode())
        labels = self.labels if self.labels is not None else [-1] * len(self.files)
        for path, label in zip(self.files, labels):
            stat = os.stat(path)
            digest.update(f"{os.path.relpath(path, self.folder)}\t{stat.st_size}\t"
                          f"{stat.st_mtime_ns}\t{label}\n".encode())
        return digest.hexdigest()[:20]


def walk_images(folder, flag):
    """(image files, other files) below `folder`, in sorted order, hidden names skipped."""
    def unreadable(error):
        raise UserError(f"{flag}: cannot read {error.filename} ({error.strerror}); make it "
                        "readable")

    images, others = [], []
    for root, dirs, names in os.walk(folder, onerror=unreadable):
        dirs[:] = _visible(dirs)
        for name in _visible(names):
            (images if is_image(name) else others).append(os.path.join(root, name))
    return images, others


def folder_splits(root, flag):
    """{"train": Listing, "test": Listing or None} of a folder domain."""
    names = _listdir(root, flag)
    if "train" in names and set(names) <= {"train", "test"} and os.path.isdir(
            os.path.join(root, "train")):
        test = os.path.join(root, "test")
        return {"train": Listing(os.path.join(root, "train"), flag),
                "test": Listing(test, flag) if os.path.isdir(test) else None}
    return {"train": Listing(root, flag), "test": None}


def _report_ignored(flag, root, splits):
    ignored = [path for listing in splits.values() if listing for path in listing.ignored]
    if ignored:
        print(f"{flag} {root}: ignored {len(ignored)} file{'s' if len(ignored) > 1 else ''} that "
              f"{'are' if len(ignored) > 1 else 'is'} not an image in a class folder "
              f"({', '.join(IMAGE_EXTENSIONS)}), e.g. {os.path.relpath(ignored[0], root)}",
              flush=True)


def _decode_one(path, channels):
    """One image file as a uint8 H x W x `channels` tensor (channels 0: as stored)."""
    import tensorflow as tf

    image = tf.io.decode_image(tf.io.read_file(path), channels=0, expand_animations=False)
    if channels == 0:
        return image
    stored = tf.shape(image)[-1]
    # 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA: the alpha channel is dropped.
    if channels == 3:
        return tf.cond(stored >= 3, lambda: image[..., :3],
                       lambda: tf.image.grayscale_to_rgb(image[..., :1]))

    def grey():
        luminance = tf.image.rgb_to_grayscale(tf.cast(image[..., :3], tf.float32))
        return tf.cast(tf.round(luminance), tf.uint8)

    return tf.cond(stored >= 3, grey, lambda: image[..., :1])


def _first_image_problem(path):
    import tensorflow as tf

    try:
        _decode_one(path, 0)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.OpError) as error:
        return str(error).strip().splitlines()[-1][:160] or type(error).__name__
    return None


def _unreadable(flag, path, reason):
    return UserError(f"{flag}: {path} is not a readable image ({reason}); delete or replace it")


def probe_image(path, flag):
    """((H, W), channels as stored) of one image file."""
    import tensorflow as tf

    try:
        image = _decode_one(path, 0)
    except tf.errors.OpError as error:
        raise _unreadable(flag, path, str(error).strip().splitlines()[-1][:160]) from None
    return tuple(int(n) for n in image.shape[:2]), int(image.shape[-1])


def decode_files(paths, shape, resize, flag):
    """All `paths` decoded into one uint8 array of `shape` (H, W, C) (`decode_and_report`)."""
    return decode_and_report(paths, shape, resize, flag)[0]


def decode_and_report(paths, shape, resize, flag):
    """(images, whether any was resized): all `paths` decoded into one uint8 array of `shape`
    (H, W, C).

    With `resize`, images of another size are resized (bilinear, as Keras
    does); without, one of another size is an error that names it. A file
    that does not decode is named too. Decoding runs in parallel in tf.data;
    the result is written into one preallocated array, so peak memory is
    about that array plus a batch.
    """
    import tensorflow as tf

    height, width, channels = shape

    def decode(path):
        image = _decode_one(path, channels)
        size = tf.shape(image)[:2]
        same = tf.reduce_all(tf.equal(size, [height, width]))

        def resized():
            scaled = tf.image.resize(image, [height, width], method="bilinear")
            return tf.cast(tf.round(tf.clip_by_value(scaled, 0.0, 255.0)), tf.uint8)

        image = tf.cond(same, lambda: image, resized)
        image.set_shape([height, width, channels])
        return image, size

    dataset = (tf.data.Dataset.from_tensor_slices(paths)
               .map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
               .batch(DECODE_BATCH).prefetch(2))
    images = np.empty((len(paths), height, width, channels), np.uint8)
    iterator, start, any_resized = iter(dataset), 0, False
    while start < len(paths):
        try:
            batch, sizes = next(iterator)
        except tf.errors.OpError:
            # Name the first file of this batch that does not decode.
            for path in paths[start:start + DECODE_BATCH]:
                problem = _first_image_problem(path)
                if problem:
                    raise _unreadable(flag, path, problem) from None
            raise
        sizes = sizes.numpy()
        other = np.flatnonzero((sizes != [height, width]).any(axis=1))
        any_resized = any_resized or bool(len(other))
        if not resize:
            if len(other):
                path, (h, w) = paths[start + other[0]], sizes[other[0]]
                raise UserError(f"{flag}: images of mixed sizes ({height}x{width}, but {path} is "
                                f"{h}x{w}); pass --input-shape H,W,C (e.g. {height},{width},"
                                f"{channels}) to resize them all")
        images[start:start + len(batch)] = batch.numpy()
        start += len(batch)
    return images, any_resized


def _cache_path(root, split, shape, key):
    return os.path.join(root, CACHE_FOLDER, f"{split}-{'x'.join(map(str, shape))}-{key}.npz")


def _read_cache(path):
    """(images, whether any was resized) of the cache at `path`, or (None, None)."""
    if not os.path.exists(path):
        return None, None
    try:
        with np.load(path, allow_pickle=False) as cached:
            return cached["images"], bool(cached["resized"])
    except Exception as error:  # noqa: BLE001 -- a damaged cache is decoded again
        print(f"ignoring the damaged cache {path} ({type(error).__name__}); decoding again",
              flush=True)
        return None, None


def _write_cache(path, images, resized):
    folder = os.path.dirname(path)
    # "<split>-<HxWxC>-": a cache of this split and shape with another key is stale now; one
    # of another shape (the folder used at two input shapes) is kept.
    prefix = os.path.basename(path).rsplit("-", 1)[0] + "-"
    try:
        def save(tmp_path):
            with open(tmp_path, "wb") as handle:
                np.savez(handle, images=images, resized=np.bool_(resized))

        atomic_save(path, save)
        for name in os.listdir(folder):
            if name.startswith(prefix) and name.endswith(".npz") and name != os.path.basename(path):
                os.remove(os.path.join(folder, name))
    except (OSError, UserError) as error:
        print(f"could not cache the decoded images in {folder} "
              f"({getattr(error, 'strerror', None) or error}); the next run decodes them again",
              flush=True)


def load_listing(root, split, listing, shape, resize, flag):
    """The images of one split: from the cache when the files are unchanged, else decoded."""
    path = _cache_path(root, split, shape, listing.cache_key(shape))
    images, resized = _read_cache(path)
    # Resized images serve only a load that may resize: without, decoding names the odd file.
    if images is None or len(images) != len(listing.files) or (resized and not resize):
        print(f"{flag} {root}: decoding {len(listing.files)} {split} images (cached for the "
              "next run)", flush=True)
        images, resized = decode_and_report(listing.files, shape, resize, flag)
        _write_cache(path, images, resized)
    return images


def is_folder(spec):
    """True when `spec` is a folder (this format's test in utils/data/formats.py)."""
    return os.path.isdir(spec)


def probe(spec, flag, data_dir=None):
    """((H, W), channels) of a folder domain's first image, decoding only that one."""
    return probe_image(folder_splits(spec, flag)["train"].files[0], flag)


def load(spec, flag, shape, resize, data_dir=None, num_classes=None):
    """The Domain of the folder `spec` at `shape` (`data_dir` and `num_classes` do not apply:
    the classes are the subfolders)."""
    splits = folder_splits(spec, flag)
    _report_ignored(flag, spec, splits)
    train, test = splits["train"], splits["test"]
    if test is not None and train.labels is not None and test.class_names != train.class_names:
        raise UserError(f"{flag} {spec}: train/ and test/ have different classes "
                        f"({', '.join(train.class_names) or 'none'} vs "
                        f"{', '.join(test.class_names) or 'none'}); name them alike")
    train_images = load_listing(spec, "train", train, shape, resize, flag)
    test_images = (load_listing(spec, "test", test, shape, resize, flag)
                   if test is not None else None)
    # An unlabelled train split may come with a labelled test split: its classes name the labels.
    names = train.class_names if train.labels is not None else test.class_names if test else ()
    return Domain(spec, os.path.basename(os.path.normpath(spec)), names,
                  train_images, train.labels, test_images,
                  test.labels if test is not None else None)
