"""Colours for label maps: a fixed palette, colourised maps and overlays."""

import numpy as np
import tensorflow as tf

# 20 distinguishable colours (cluster ids beyond wrap around); 255 (ignored) is black.
PALETTE = np.array(
    [
        [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
        [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
        [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0],
        [170, 255, 195], [128, 128, 0], [255, 215, 180], [0, 0, 128], [128, 128, 128],
    ],
    np.uint8,
)  # fmt: skip


def colorize(labels):
    """(..., H, W) integer ids -> (..., H, W, 3) uint8 colours; 255 becomes black."""
    labels = tf.convert_to_tensor(labels)
    ids = tf.math.floormod(tf.cast(labels, tf.int32), len(PALETTE))
    colours = tf.gather(tf.constant(PALETTE), ids)
    return tf.where((labels == 255)[..., None], tf.zeros_like(colours), colours)


def overlay(images, labels, alpha=0.5):
    """Blends colourised `labels` over the RGB channels of uint8 or [0, 1] `images`."""
    images = tf.convert_to_tensor(images)
    if images.dtype != tf.uint8:
        images = tf.cast(tf.clip_by_value(images, 0.0, 1.0) * 255.0 + 0.5, tf.uint8)
    rgb = images[..., :3]
    if rgb.shape[-1] == 1:
        rgb = tf.image.grayscale_to_rgb(rgb)
    mixed = (1 - alpha) * tf.cast(rgb, tf.float32) + alpha * tf.cast(colorize(labels), tf.float32)
    return tf.cast(tf.round(mixed), tf.uint8)
