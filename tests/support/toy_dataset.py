"""A dataset that lives in the test tree: importing this module is all `--dataset=toy` needs.

Two classes: a dark left half and a bright right half, with noise; another seed's images for
evaluation. tests/training/test_train.py trains and evaluates on it through the training program.
"""

import numpy as np

from tf_autoseg import datasets
from tf_autoseg.data import core

NUM_CLASSES = (2,)  # the num_classes it accepts


def read_part(data, labels, options):
    """`tf_autoseg.datasets.Dataset`'s `read`: 24 scenes of 32x32 for a part."""
    rng = np.random.default_rng(0 if data.part == "train" else 1)
    masks = np.zeros((24, 32, 32), np.uint8)
    for mask, edge in zip(masks, rng.integers(8, 24, len(masks))):
        mask[:, edge:] = 1
    images = np.where(masks[..., None] == 1, 200, 50) + rng.normal(0, 10, (*masks.shape, 3))
    images = np.clip(images, 0, 255).astype(np.uint8)
    dataset = core.in_memory_dataset(
        images, masks if labels else None, core.PipelineOptions(**options)
    )
    info = core.DatasetInfo(
        num_classes=2, channels=3, class_names=("dark", "bright"), num_examples=len(images)
    )
    return dataset, info


datasets.register(datasets.Dataset("toy", read_part, num_classes=NUM_CLASSES, files=False))
