"""Colours for label maps: a fixed palette, colourised maps and overlays.

TensorFlow is imported by the functions that draw, not with the palette.
"""

import numpy as np

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


def colorize(labels, palette=None):
    """(..., H, W) integer ids -> (..., H, W, 3) uint8 colours; 255 becomes black.

    `palette`: (N, 3) uint8 colours by id (named classes' own, `Classes.palette()`); the
    package's `PALETTE` by default. Ids wrap around it.
    """
    import tensorflow as tf

    palette = PALETTE if palette is None else np.asarray(palette, np.uint8)
    labels = tf.convert_to_tensor(labels)
    ids = tf.math.floormod(tf.cast(labels, tf.int32), len(palette))
    colours = tf.gather(tf.constant(palette), ids)
    return tf.where((labels == 255)[..., None], tf.zeros_like(colours), colours)


def overlay(images, labels, alpha=0.5, palette=None):
    """Blends colourised `labels` (`colorize`'s colours) over the RGB of uint8 or [0, 1] `images`."""
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    if images.dtype != tf.uint8:
        images = tf.cast(tf.clip_by_value(images, 0.0, 1.0) * 255.0 + 0.5, tf.uint8)
    rgb = images[..., :3]
    if rgb.shape[-1] == 1:
        rgb = tf.image.grayscale_to_rgb(rgb)
    mixed = (1 - alpha) * tf.cast(rgb, tf.float32) + alpha * tf.cast(
        colorize(labels, palette), tf.float32
    )
    return tf.cast(tf.round(mixed), tf.uint8)


def legend(entries, row=22):
    """(H, W, 3) uint8 picture of a legend: one row per (name, (r, g, b)) entry.

    A swatch of the colour, then the name, in Pillow's default font (no font file needed).
    """
    from PIL import Image
    from PIL import ImageDraw
    from PIL import ImageFont

    font = ImageFont.load_default()
    width = 16 + row + max(int(font.getlength(name)) for name, _ in entries) + 16
    picture = Image.new("RGB", (max(width, 120), 8 + row * len(entries)), "white")
    draw = ImageDraw.Draw(picture)
    for i, (name, colour) in enumerate(entries):
        top = 4 + i * row
        draw.rectangle(
            [8, top + 2, 8 + row - 6, top + row - 4], fill=tuple(colour), outline="black"
        )
        draw.text((8 + row + 2, top + 5), name, fill="black", font=font)
    return np.asarray(picture)
