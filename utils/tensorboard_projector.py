"""The Projector part of utils.tensorboard_extras: G_f's features of test images as a
TensorBoard embedding, with a sprite of the images and a metadata table, so that Fig. 2 of
Ganin & Lempitsky (2015) can be explored with PCA, t-SNE or UMAP in the browser.
"""
import os

import numpy as np

from utils.io import atomic_write_bytes, atomic_write_text

PROJECTOR_FOLDER = "projector"
SPRITE_LIMIT = 8192  # TensorBoard's largest sprite side, in pixels


def sprite(images):
    """One square sprite of `images` (thumbnails shrunk to fit TensorBoard's 8192 pixels)."""
    import cv2

    side = int(np.ceil(np.sqrt(len(images))))
    height, width = images.shape[1:3]
    scale = min(1.0, SPRITE_LIMIT / (side * max(height, width)))
    size = (max(1, int(width * scale)), max(1, int(height * scale)))
    thumbs = [cv2.resize(image, size, interpolation=cv2.INTER_AREA) if scale < 1 else image
              for image in images]
    thumbs = [thumb[..., None] if thumb.ndim == 2 else thumb for thumb in thumbs]
    channels = images.shape[-1]
    canvas = np.full((side * size[1], side * size[0], channels), 255, np.uint8)
    for index, thumb in enumerate(thumbs):
        row, column = divmod(index, side)
        canvas[row * size[1]:(row + 1) * size[1], column * size[0]:(column + 1) * size[0]] = thumb
    pixels = canvas[..., 0] if channels == 1 else canvas[..., ::-1]  # OpenCV writes BGR
    return cv2.imencode(".png", pixels)[1].tobytes(), size


def write_projector(log_dir, features, metadata_rows, images):
    """logs/<run>/projector/: the features as a checkpoint, metadata.tsv, sprite.png, config.

    Laid out as `tensorboard.plugins.projector` expects (its tutorial's
    layout): projector_config.pbtxt beside a checkpoint whose variable
    `embedding` holds one row per point, the metadata TSV and the sprite.
    """
    import tensorflow as tf
    from tensorboard.plugins import projector

    folder = os.path.join(log_dir, PROJECTOR_FOLDER)
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        os.remove(os.path.join(folder, name))
    embedding = tf.Variable(features, name="features")
    # TensorBoard's Projector looks for its config in a *run* (a folder with an
    # event file) and for the tensors in that folder's latest checkpoint (a
    # `checkpoint` state file, which Checkpoint.write does not leave): so the
    # folder gets both, and shows as run "<run>/projector".
    tf.train.CheckpointManager(tf.train.Checkpoint(embedding=embedding), folder,
                               max_to_keep=1, checkpoint_name="embedding.ckpt").save()
    # An event file with no summaries: enough to make the folder a run, without
    # a card in any other dashboard.
    tf.summary.create_file_writer(folder).close()
    atomic_write_text(os.path.join(folder, "metadata.tsv"),
                      "domain\tlabel\tpredicted\tcorrect\n"
                      + "".join("\t".join(map(str, row)) + "\n" for row in metadata_rows))
    sprite_png, (thumb_width, thumb_height) = sprite(images)
    atomic_write_bytes(os.path.join(folder, "sprite.png"), sprite_png)
    config = projector.ProjectorConfig()
    info = config.embeddings.add()
    info.tensor_name = "embedding/.ATTRIBUTES/VARIABLE_VALUE"
    info.metadata_path = "metadata.tsv"
    info.sprite.image_path = "sprite.png"
    info.sprite.single_image_dim.extend([thumb_width, thumb_height])
    projector.visualize_embeddings(folder, config)
    return folder
