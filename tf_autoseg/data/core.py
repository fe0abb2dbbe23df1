"""The core every input pipeline shares: what it yields (`DatasetInfo`) and how it batches
(`PipelineOptions`, `in_memory_dataset`).

The datasets are its siblings, each a module whose `load` returns `(dataset, info)`, a batched
`tf.data.Dataset` and a `DatasetInfo`:

- `tf_autoseg.datasets.synthetic`: textured scenes with known labels, made from a seed (quickstart, tests).
- `tf_autoseg.datasets.folder`: any images, optionally with index or colour masks; `tf_autoseg.datasets.dubai`
  and `tf_autoseg.datasets.camvid` build on it.
- `tf_autoseg.datasets.potsdam`: ISPRS Potsdam as IIC prepares it, from the raw release (4-band TIFFs,
  colour labels) or from a folder of cut PNG crops (`img_dir/`, `ann_dir/`).
- `tf_autoseg.datasets.cocostuff`: COCO-Stuff-15 / -3 with IIC's curation.

Their streamed and prepared forms are `tf_autoseg.data.stream` and `tf_autoseg.data.records`.

The dataset yields uint8 images (B, H, W, C), or `(images, labels)` with `labels=True`:
int32 (B, H, W), 255 = ignore. Training never reads labels: with `labels=False` no label file
is opened. Files are decoded and validated when the dataset is built (errors name the file, see
`tf_autoseg.data.images`); the prepared examples are held in memory, which is the cache. Order,
crops and flips come from stateless draws on `seed`: the same seed gives the same batches,
and each repeated epoch is reshuffled the same way.

TensorFlow is imported by `in_memory_dataset` only, so that the dataset modules (and their
class counts, `NUM_CLASSES`, which the training program's flag checks read) load without it.
"""

import dataclasses

import numpy as np

from tf_autoseg import arguments
from tf_autoseg.data import images as imageio

IGNORE = imageio.IGNORE


@dataclasses.dataclass(frozen=True, kw_only=True)
class DatasetInfo:
    """What a pipeline yields.

    Attributes:
        num_classes: ground-truth classes (None for unlabelled folders without a class count).
        channels: image channels (3 = RGB, 4 = RGB+IR).
        class_names: one name per class id.
        ignore_index: label value of pixels left out of the loss and the evaluation.
        num_examples: examples in one epoch, before batching.
        skipped: file -> reason, for files left out by a documented rule (too small for the
            crop, curated out, no label file).
        adjusted: file -> what was done, for files read with a documented conversion
            (grayscale to RGB, alpha dropped, 16 to 8 bit, mask cropped to its image).
    """

    num_classes: int | None
    channels: int
    class_names: tuple[str, ...]
    ignore_index: int = IGNORE
    num_examples: int
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    adjusted: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PipelineOptions:
    """How a pipeline orders and batches its examples: the keywords every dataset's `load` takes.

    Attributes:
        batch_size: examples per batch.
        seed: the order, crops and flips; the same seed gives the same batches.
        shuffle: a new seeded order every epoch; else file order, tiles in raster order.
        repeat: repeat forever.
        drop_remainder: drop the last incomplete batch.
        augment: random left-right flips (up-down as well where the dataset says so).
    """

    batch_size: int = 8
    seed: int = 0
    shuffle: bool = True
    repeat: bool = False
    drop_remainder: bool = True
    augment: bool = False

    def __post_init__(self):
        arguments.integer("batch_size", self.batch_size)
        if not isinstance(self.seed, (int, np.integer)):
            raise ValueError(f"`seed` must be an int. Received: seed={self.seed!r}")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            object.__setattr__(self, field.name, int(value) if field.type is int else bool(value))


def label_lut(label_map):
    """(256,) uint8 lookup table of label values: `label_map[v]` for v below its length,
    `IGNORE` for every other value (255 included). Index masks go through it by `lut[mask]`."""
    lut = np.full(256, IGNORE, np.uint8)
    lut[: len(label_map)] = np.asarray(label_map, np.uint8)
    return lut


def tile_corners(height, width, tile, downsample=1):
    """(corners, reason) of a file of height x width cut into `tile`-pixel tiles after
    shrinking it `downsample` times: the top-left corners of the whole tiles in the file's
    own pixels, raster order, and None; or ([], the reason it is skipped) when not one fits.

    The one rule of the in-memory, streamed and prepared pipelines (`folder.load`,
    `stream.folder`, `prepared.tiled_part`), so the three cut the same tiles.
    """
    d = downsample
    if height // d < tile or width // d < tile:
        shrunk = f" once shrunk {d} times" if d > 1 else ""
        return [], f"{height}x{width} is smaller than the {tile}x{tile} tile{shrunk}"
    rows, cols = height // d // tile, width // d // tile
    return [(r * tile * d, c * tile * d) for r in range(rows) for c in range(cols)], None


def check_batch_size(n, options):
    """Refuses a batch that `n` examples can never fill (every pipeline's rule): without
    `repeat` and with `drop_remainder`, the dataset would be empty. (With `repeat`, batches
    run across epochs; the training program refuses a batch larger than its data.)"""
    if n < options.batch_size and options.drop_remainder and not options.repeat:
        raise ValueError(
            f"Only {n} examples for batch_size={options.batch_size}: with drop_remainder=True "
            "and repeat=False the dataset would be empty. Lower `batch_size`, or pass "
            "drop_remainder=False or repeat=True"
        )


def in_memory_dataset(images, labels, options, *, vertical_flip=False, crop=None, shapes=None):
    """Batches in-memory examples in a seeded order, with optional random crops and flips.

    Every draw is stateless: the order of epoch e comes from (seed, -1 - e), the crop and
    flips of example i in epoch e from (seed, e * N + i) (`tf_autoseg.data.shuffling`, which the
    streaming pipelines share). So the same seed gives the same batches from any iterator,
    and a repeated epoch is reshuffled.

    Args:
        images: uint8 (N, H, W, C).
        labels: uint8 (N, H, W), or None.
        options: a `PipelineOptions`.
        vertical_flip: with `options.augment`, flip up-down as well (overhead imagery).
        crop: with `shapes`, each example is a random crop x crop window of its top-left
            `shapes[i]` region (the rest is padding).
    """
    import tensorflow as tf

    from tf_autoseg.data import shuffling

    batch_size, repeat, drop_remainder = options.batch_size, options.repeat, options.drop_remainder
    n = len(images)
    check_batch_size(n, options)
    channels = images.shape[-1]
    stacked = images if labels is None else np.concatenate([images, labels[..., None]], -1)
    data = tf.constant(stacked)
    sizes = tf.constant(np.zeros((n, 2), np.int32) if shapes is None else shapes, tf.int32)
    seed = tf.constant(options.seed, tf.int64)
    height, width = (crop, crop) if crop else images.shape[1:3]

    def example(epoch, index):
        return shuffling.example_step(
            tf.gather(data, index),
            shuffling.example_draws(seed, n, epoch, index),
            (height, width, stacked.shape[-1]),
            crop=crop,
            size=tf.gather(sizes, index) if crop else None,
            augment=options.augment,
            vertical_flip=vertical_flip,
            channels=None if labels is None else channels,
        )

    dataset = shuffling.example_stream(n, seed, options.shuffle, repeat)
    dataset = dataset.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return shuffling.batched(dataset, n, batch_size, drop_remainder, repeat)
