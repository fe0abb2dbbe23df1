"""Streaming input: image files read and decoded inside tf.data, never all held in memory.

`folder` (and the datasets' `streamed` functions built on it: `tf_autoseg.datasets.dubai`,
`camvid`, `potsdam` for its PNG crop layout) takes the arguments of its in-memory namesake
(`tf_autoseg.datasets.folder.load`) for unlabelled training data and give the same batches for the same seed: the same examples in the
same order (`tf_autoseg.data.shuffling`), decoded to the same pixels. Only the file names, each
example's file and corner, and a few sizes are in the dataset's graph, so the graph and the
memory the pipeline needs stay small whatever the number of files.

How the pixels come out equal:
- PNG: `tf.io.decode_png` matches Pillow for every mode `tf_autoseg.data.images` accepts (grey,
  grey + alpha, palette with or without transparency, RGB(A), 16 bits: the high byte).
- JPEG: `tf.io.decode_jpeg(dct_method="INTEGER_ACCURATE")` is Pillow's decoder (libjpeg's
  accurate integer DCT; TensorFlow's default, the fast DCT, differs by up to 7 levels). A tile
  is decoded with `decode_and_crop_jpeg` over a window widened by `_JPEG_MARGIN` pixels and
  aligned to it, then cut: at the window's own edge chroma upsampling has no neighbour, so an
  unwidened crop differs from a full decode by a few levels (measured on the Dubai images).
- Downsampling is the same integer block mean as `tf_autoseg.data.images.downscale_mean`.

Labels are never opened: these pipelines are for training. Bad files are found before
training starts: `tf_autoseg.data.headers.scan` reads each file's header and checks its end (a
truncated copy is named); `check="decode"` decodes every file once as well, in parallel. TIFF and other formats
TensorFlow cannot decode go through `python -m tf_autoseg.prepare` first.

Long (~360 lines) because each streamed dataset sits beside the example reader it shares, so
that the proof of equal batches (the decoding above) is read in one place.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from tf_autoseg import arguments
from tf_autoseg.data import core
from tf_autoseg.data import headers
from tf_autoseg.data import images as imageio
from tf_autoseg.data import shuffling

# A JPEG tile is decoded from a window widened by this many pixels and aligned to it: the
# largest iMCU (4x chroma subsampling x 8 px), so every pixel of the tile has its neighbours.
_JPEG_MARGIN = 32


@dataclasses.dataclass(frozen=True)
class Examples:
    """The examples of a streamed set: each a `window` of a file at a corner, in order.

    Attributes:
        headers: the files (`tf_autoseg.data.headers.scan`).
        file: int32 (N,): each example's file.
        corners: int32 (N, 2): each example's (top, left) in the file's pixels.
        window: (height, width) in the file's pixels, the same for every example.
        downsample: each window shrinks this many times (block mean) after decoding.
    """

    headers: tuple[headers.Header, ...]
    file: np.ndarray
    corners: np.ndarray
    window: tuple[int, int]
    downsample: int = 1

    def __len__(self):
        return len(self.file)


def examples_dataset(
    examples, options, *, channels=3, vertical_flip=False, start=0, num_workers=1, worker=0
):
    """The batched dataset of `examples`: files read, decoded, cut and flipped in parallel.

    Args:
        examples: an `Examples`.
        options: a `tf_autoseg.data.core.PipelineOptions`.
        channels: 3 or 4.
        vertical_flip: as in `tf_autoseg.data.core.in_memory_dataset`, with which the batches agree.
        start: leave out the first `start` examples (a resumed run: steps done x batch size),
            without reading them.
        num_workers, worker: read only this worker's share (see
            `tf_autoseg.data.shuffling.example_stream`); with `repeat` only.

    Returns:
        A `tf.data.Dataset` of uint8 (batch, height, width, channels).
    """
    batch_size, repeat, drop_remainder = options.batch_size, options.repeat, options.drop_remainder
    n = len(examples)
    core.check_batch_size(n, options)
    if num_workers > 1 and not repeat:
        raise ValueError(f"Splitting between {num_workers} workers needs repeat=True")
    paths = [str(h.path) for h in examples.headers]
    root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    # Names relative to their common folder: the graph grows by a short name per file.
    names = tf.constant([os.path.relpath(p, root) for p in paths])
    root = tf.constant(root + os.sep)
    jpeg = tf.constant([h.jpeg for h in examples.headers])
    sizes = tf.constant([(h.height, h.width) for h in examples.headers], tf.int32)
    file = tf.constant(examples.file, tf.int32)
    corners = tf.constant(examples.corners, tf.int32)
    seed = tf.constant(options.seed, tf.int64)
    window = examples.window
    factor = examples.downsample
    shape = (window[0] // factor, window[1] // factor, channels)

    def example(epoch, index):
        f = tf.gather(file, index)
        corner = tf.gather(corners, index)
        contents = tf.io.read_file(tf.strings.join([root, tf.gather(names, f)]))
        x = tf.cond(
            tf.gather(jpeg, f),
            lambda: _jpeg_window(contents, corner, window, tf.gather(sizes, f), channels),
            lambda: tf.io.decode_png(contents, channels)[
                corner[0] : corner[0] + window[0], corner[1] : corner[1] + window[1]
            ],
        )
        x = block_mean(tf.ensure_shape(x, (*window, channels)), factor)
        draws = shuffling.example_draws(seed, n, epoch, index)
        return shuffling.example_step(
            x, draws, shape, augment=options.augment, vertical_flip=vertical_flip
        )

    dataset = shuffling.example_stream(n, seed, options.shuffle, repeat, start, num_workers, worker)
    dataset = dataset.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    # The split between workers is done above, by example, before any file is read.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    dataset = dataset.with_options(options)
    return shuffling.batched(dataset, n, batch_size, drop_remainder, repeat, start, num_workers)


def _jpeg_window(contents, corner, window, size, channels):
    """The window of a JPEG at `corner`, decoded from a widened, aligned crop (see module)."""
    top = tf.maximum(corner[0] // _JPEG_MARGIN * _JPEG_MARGIN - _JPEG_MARGIN, 0)
    left = tf.maximum(corner[1] // _JPEG_MARGIN * _JPEG_MARGIN - _JPEG_MARGIN, 0)
    bottom = tf.minimum(corner[0] + window[0] + _JPEG_MARGIN, size[0])
    right = tf.minimum(corner[1] + window[1] + _JPEG_MARGIN, size[1])
    crop = tf.stack([top, left, bottom - top, right - left])
    x = tf.io.decode_and_crop_jpeg(contents, crop, channels, dct_method="INTEGER_ACCURATE")
    y, z = corner[0] - top, corner[1] - left
    return x[y : y + window[0], z : z + window[1]]


def block_mean(x, factor):
    """(H, W, C) uint8 shrunk `factor` times: each block's rounded mean, as `images.downscale_mean`."""
    if factor == 1:
        return x
    h, w, c = x.shape
    blocks = tf.reshape(tf.cast(x, tf.int32), (h // factor, factor, w // factor, factor, c))
    area = factor * factor
    return tf.cast((tf.reduce_sum(blocks, (1, 3)) + area // 2) // area, tf.uint8)


def tiled(found, tile, downsample):
    """`Examples` cutting each file into tile x tile pieces after shrinking, as `folder.load`.

    Returns:
        (examples, skipped): files smaller than one tile are skipped, with the reason
        `tf_autoseg.datasets.folder.load` gives. With `tile=None` each file is one example, and all must then
        have one size once shrunk.
    """
    d = downsample
    file, corners, skipped, kept = [], [], {}, []
    for h in found:
        if tile is not None:
            tiles, reason = core.tile_corners(h.height, h.width, tile, d)
            if reason:
                skipped[str(h.path)] = reason
                continue
            corners += tiles
            file += [len(kept)] * len(tiles)
        else:
            first = kept[0] if kept else h
            if (h.height // d, h.width // d) != (first.height // d, first.width // d):
                raise ValueError(
                    f"{h.path} is {h.height // d}x{h.width // d}, {first.path} "
                    f"{first.height // d}x{first.width // d}: pass `tile` to cut images of "
                    "several sizes"
                )
            corners.append((0, 0))
            file.append(len(kept))
        kept.append(h)
    if not kept:
        raise ValueError(f"No usable image: {skipped}")
    first = kept[0]
    side = (tile * d, tile * d) if tile else (first.height // d * d, first.width // d * d)
    examples = Examples(
        tuple(kept),
        np.array(file, np.int32),
        np.array(corners, np.int32).reshape(-1, 2),
        side,
        d,
    )
    return examples, skipped


def folder(
    images,
    *,
    tile=None,
    downsample=1,
    channels=3,
    num_classes=None,
    class_names=None,
    vertical_flip=False,
    check="header",
    start=0,
    num_workers=1,
    worker=0,
    **options,
):
    """`tf_autoseg.datasets.folder.load` for training (no masks), streamed: the same batches.

    Args:
        images, tile, downsample, channels, num_classes, class_names, vertical_flip: see
            `tf_autoseg.datasets.folder.load`.
        check: "header" (fast) or "decode": see `tf_autoseg.data.headers.scan`.
        start, num_workers, worker: see `examples_dataset`.
        **options: the keywords of `tf_autoseg.data.core.PipelineOptions`.

    Returns:
        (dataset, info).
    """
    tile = arguments.optional_integer("tile", tile, imageio.MIN_TILE)
    downsample = arguments.integer("downsample", downsample)
    options = core.PipelineOptions(**options)
    found = headers.scan(imageio.list_files(images), channels, check)
    examples, skipped = tiled(found, tile, downsample)
    dataset = examples_dataset(
        examples,
        options,
        channels=channels or 3,
        vertical_flip=vertical_flip,
        start=start,
        num_workers=num_workers,
        worker=worker,
    )
    if class_names is None and num_classes is not None:
        class_names = tuple(str(k) for k in range(num_classes))
    info = core.DatasetInfo(
        num_classes=num_classes,
        channels=channels or 3,
        class_names=tuple(class_names or ()),
        num_examples=len(examples),
        skipped=skipped,
        adjusted={str(h.path): h.note for h in examples.headers if h.note},
    )
    return dataset, info
