"""Synthetic scenes with known labels, made from a seed: `load(num_images, size, num_classes)`.

Each class has its own colour, stripe orientation and period over a Voronoi partition, with
pixel noise: the quickstart's data and the tests'. See `tf_autoseg.data.core` for what every
pipeline yields.
"""

import numpy as np

from tf_autoseg.data import core
from tf_autoseg.datasets.catalog import Dataset

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
MAX_CLASSES = len(_PALETTE)
NUM_CLASSES = tuple(range(2, MAX_CLASSES + 1))  # the accepted `num_classes`


def scenes(num_images, size=64, num_classes=3, regions=6, noise=0.08, seed=0):
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
    if not 2 <= num_classes <= MAX_CLASSES:
        raise ValueError(
            f"`num_classes` must be in [2, {MAX_CLASSES}] for synthetic scenes. "
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


def load(num_images, size=64, num_classes=3, *, labels=False, **options):
    """`scenes` in the common `(dataset, info)` form, images as uint8.

    Args:
        num_images, size, num_classes: as in `scenes`.
        labels: yield (images, labels) instead of images.
        **options: the keywords of `tf_autoseg.data.core.PipelineOptions`; `seed` makes the scenes
            as well as the order and flips.

    Returns:
        (dataset, info): the same for the same seed, different across seeds.
    """
    options = core.PipelineOptions(**options)
    images, masks = scenes(num_images, size, num_classes, seed=options.seed)
    images = np.round(images * 255).astype(np.uint8)
    dataset = core.in_memory_dataset(images, masks.astype(np.uint8) if labels else None, options)
    names = tuple(f"class {k}" for k in range(num_classes))
    info = core.DatasetInfo(
        num_classes=num_classes, channels=3, class_names=names, num_examples=len(images)
    )
    return dataset, info


# ------------------------------------------------------------ the programs' dataset
def read_part(data, labels, options):
    """The in-memory part of `data` (see `tf_autoseg.datasets.Dataset`).

    The evaluation scenes are another seed's: scenes the training never saw.
    """
    seed = options["seed"] + (0 if data.part == "train" else 1000)
    return load(data.synthetic_images, data.synthetic_size, data.num_classes, labels=labels,
                **{**options, "seed": seed})  # fmt: skip


DATASET = Dataset("synthetic", read_part, num_classes=NUM_CLASSES, files=False)
