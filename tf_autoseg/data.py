"""Input pipelines. Here: `synthetic`, textured scenes with known labels, made from a seed.

The synthetic set is the embedded default data (quickstart, tests): no files,
identical for the same seed, different across seeds.
"""

import numpy as np
import tensorflow as tf

# Per class: base RGB colour, stripe orientation (radians) and period (pixels).
# Colours are close and noise is strong, so a pixel's colour alone is ambiguous
# and the texture around it matters.
_PALETTE = np.array(
    [
        [0.55, 0.45, 0.35],
        [0.35, 0.55, 0.45],
        [0.45, 0.35, 0.55],
        [0.50, 0.50, 0.30],
        [0.30, 0.45, 0.60],
        [0.60, 0.35, 0.45],
    ],
    np.float32,
)
_ORIENTATION = np.array([0.0, np.pi / 2, np.pi / 4, 3 * np.pi / 4, np.pi / 8, 5 * np.pi / 8])
_PERIOD = np.array([4.0, 6.0, 8.0, 5.0, 7.0, 9.0])
MAX_SYNTHETIC_CLASSES = len(_PALETTE)


def synthetic_scenes(num_images, size=64, num_classes=3, regions=6, noise=0.08, seed=0):
    """Textured scenes: a Voronoi partition whose cells each take one class.

    Each class has its own colour, stripe orientation and period; pixel noise
    is added. Every class is present in every image when `regions >=
    num_classes`.

    Args:
        num_images: number of images (>= 1).
        size: height and width.
        num_classes: 2 to 6.
        regions: Voronoi cells per image.
        noise: standard deviation of the Gaussian pixel noise.
        seed: the only source of randomness.

    Returns:
        (images, labels): float32 (N, size, size, 3) in [0, 1] and int32 (N, size, size).
    """
    if not 2 <= num_classes <= MAX_SYNTHETIC_CLASSES:
        raise ValueError(
            f"`num_classes` must be in [2, {MAX_SYNTHETIC_CLASSES}] for synthetic scenes. "
            f"Received: num_classes={num_classes}"
        )
    if num_images < 1 or size < 4 or regions < 1:
        raise ValueError(
            "`num_images` >= 1, `size` >= 4 and `regions` >= 1 are required. Received: "
            f"num_images={num_images}, size={size}, regions={regions}"
        )
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    images = np.empty((num_images, size, size, 3), np.float32)
    labels = np.empty((num_images, size, size), np.int32)
    for n in range(num_images):
        centres = rng.uniform(0, size, size=(regions, 2))
        distance = (rows[..., None] - centres[:, 0]) ** 2 + (cols[..., None] - centres[:, 1]) ** 2
        cell = distance.argmin(-1)
        cell_class = rng.permutation(np.resize(np.arange(num_classes), regions))
        label = cell_class[cell]
        angle = _ORIENTATION[label]
        phase = (rows * np.sin(angle) + cols * np.cos(angle)) * 2 * np.pi / _PERIOD[label]
        stripes = 0.15 * np.sin(phase)[..., None]
        image = _PALETTE[label] + stripes + rng.normal(0, noise, (size, size, 3))
        images[n] = np.clip(image, 0.0, 1.0)
        labels[n] = label
    return images, labels


def synthetic_dataset(num_images, size=64, num_classes=3, batch_size=8, seed=0, labels=False):
    """`synthetic_scenes` as a batched, cached, prefetched `tf.data.Dataset`.

    Yields images only, or (images, labels) with `labels=True`.
    """
    images, masks = synthetic_scenes(num_images, size, num_classes, seed=seed)
    elements = (images, masks) if labels else images
    dataset = tf.data.Dataset.from_tensor_slices(elements).cache()
    return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
