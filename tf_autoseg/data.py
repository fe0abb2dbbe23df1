"""Input pipelines: each returns `(dataset, info)`, a batched `tf.data.Dataset` and a `DatasetInfo`.

- `synthetic`: textured scenes with known labels, made from a seed (quickstart, tests).
- `tf_autoseg.potsdam.load`: ISPRS Potsdam as IIC prepares it, from the raw release (4-band
  TIFFs, colour labels) or from a folder of cut PNG crops (`img_dir/`, `ann_dir/`).
- `tf_autoseg.cocostuff.load`: COCO-Stuff-15 / -3 with IIC's curation.
- `folder`: any images, optionally with index or colour masks; `dubai` builds on it.

The dataset yields uint8 images (B, H, W, C), or `(images, labels)` with `labels=True`:
int32 (B, H, W), 255 = ignore. Training never reads labels: with `labels=False` no label file
is opened. Files are decoded and validated when the dataset is built (errors name the file, see
`tf_autoseg.images`); the prepared examples are held in memory, which is the cache. Order,
crops and flips come from stateless draws on `seed`: the same seed gives the same batches,
and each repeated epoch is reshuffled the same way.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from tf_autoseg import arguments
from tf_autoseg import images as imageio
from tf_autoseg import shuffling

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


def synthetic(
    num_images,
    size=64,
    num_classes=3,
    *,
    batch_size=8,
    seed=0,
    labels=False,
    shuffle=True,
    repeat=False,
    drop_remainder=True,
    augment=False,
):
    """`synthetic_scenes` in the common `(dataset, info)` form, images as uint8.

    Args:
        num_images, size, num_classes: as in `synthetic_scenes`.
        batch_size, seed, labels, shuffle, repeat, drop_remainder, augment: see `folder`.
            `seed` makes the scenes as well as the order and flips.

    Returns:
        (dataset, info): the same for the same seed, different across seeds.
    """
    images, masks = synthetic_scenes(num_images, size, num_classes, seed=seed)
    images = np.round(images * 255).astype(np.uint8)
    dataset = in_memory_dataset(
        images,
        masks.astype(np.uint8) if labels else None,
        **pipeline_options(batch_size, seed, shuffle, repeat, drop_remainder, augment),
    )
    names = tuple(f"class {k}" for k in range(num_classes))
    info = DatasetInfo(
        num_classes=num_classes, channels=3, class_names=names, num_examples=len(images)
    )
    return dataset, info


# ------------------------------------------------------------------------ folders, Dubai
def folder(
    images,
    masks=None,
    *,
    mask_format="index",
    colours=None,
    label_map=None,
    num_classes=None,
    class_names=None,
    tile=None,
    downsample=1,
    size_tolerance=2,
    channels=3,
    vertical_flip=False,
    batch_size=8,
    seed=0,
    labels=False,
    shuffle=True,
    repeat=False,
    drop_remainder=True,
    augment=False,
):
    """Any images, for training without labels, or with masks for evaluation.

    Args:
        images: a folder (its image files), a glob pattern, or a list of folders, patterns
            or files.
        masks: a folder holding each image's mask under the image's stem (`.png` first), or a
            function from image path to mask path. Opened only with `labels=True`.
        mask_format: "index" (one channel of class ids, 255 = ignore) or "colour" (RGB,
            mapped by `colours`; colours it does not list become 255).
        colours: for "colour": a dict or a JSON file mapping "#RRGGBB" (or "r,g,b") to a
            class id, or to 255 / null for ignored colours.
        label_map: for "index": an optional sequence mapping each of the masks' own class ids
            (0..len-1; other values but 255 are an error) to a class id or 255 (ignore), e.g.
            to merge classes; `num_classes` then counts the mapped classes.
        num_classes: classes: mask values must be below it or 255. Default: the largest class
            id of `colours` + 1, or for index masks the largest id they hold + 1 (None when
            `labels=False`: no mask is read).
        class_names: one per class; default "0", "1", ...
        tile: cut images (and masks) into non-overlapping tile x tile pieces, dropping the
            remainder; an image smaller than a tile is skipped (in `info.skipped`). None:
            whole images, which must then all have one size.
        downsample: a positive int n: shrink each image n times before tiling, each n x n
            block (the remainder dropped) to its mean colour and its mask's majority label
            (ties to the top-left pixel). The tile size is counted after it.
        size_tolerance: a mask up to this many pixels off its image's size is cropped, with
            the image, to the common size (in `info.adjusted`); beyond it, an error.
        channels: 3 (default), 4 or None; see `tf_autoseg.images.read_image`.
        vertical_flip: with `augment`, flip up-down as well (overhead imagery).
        batch_size: examples per batch.
        seed: the order, crops and flips; the same seed gives the same batches.
        labels: yield (images, labels) instead of images.
        shuffle: a new seeded order every epoch; else file order, tiles in raster order.
        repeat: repeat forever.
        drop_remainder: drop the last incomplete batch.
        augment: random left-right flips (and up-down with `vertical_flip`).

    Returns:
        (dataset, info).
    """
    arguments.choice("mask_format", mask_format, ("index", "colour"))
    if tile is not None and not (isinstance(tile, int) and tile >= 1):
        raise ValueError(f"`tile` must be None or a positive int. Received: tile={tile!r}")
    downsample = arguments.integer("downsample", downsample)
    table = None
    if mask_format == "colour" and colours is not None:
        table = imageio.parse_colours(colours)
        class_ids = [v for v in table.values() if v != IGNORE]
        if num_classes is None and class_ids:
            num_classes = max(class_ids) + 1
    if label_map is not None:
        lut = np.full(256, IGNORE, np.uint8)
        lut[: len(label_map)] = np.asarray(label_map, np.uint8)
    if labels and masks is None:
        raise ValueError("labels=True needs `masks`: a folder or a function image -> mask path")
    if labels and mask_format == "colour" and table is None:
        raise ValueError("mask_format='colour' needs `colours`, a dict or a JSON file")
    paths = imageio.list_files(images)
    xs, ys, skipped, adjusted = [], [], {}, {}
    for image_path in paths:
        if tile is not None:
            h, w = imageio.image_size(image_path)
            if h // downsample < tile or w // downsample < tile:
                shrunk = f" once shrunk {downsample} times" if downsample > 1 else ""
                skipped[str(image_path)] = f"{h}x{w} is smaller than the {tile}x{tile} tile{shrunk}"
                continue
        image, note = imageio.read_image(image_path, channels)
        notes = [note] if note else []
        if labels:
            mask_path = _mask_path(masks, image_path)
            if mask_format == "colour":
                mask = imageio.read_colour_mask(mask_path, table)
            elif label_map is None:
                mask = imageio.read_index_mask(mask_path, num_classes)
            else:
                mask = lut[imageio.read_index_mask(mask_path, len(label_map))]
            image, mask, note = imageio.match_sizes(image, mask, mask_path, size_tolerance)
            notes += [note] if note else []
        if notes:
            adjusted[str(image_path)] = "; ".join(notes)
        if downsample > 1:
            image = imageio.downscale_mean(image, downsample)
            if labels:
                mask = imageio.downscale_mode(mask, downsample)
        if xs and image.shape[-1] != xs[0].shape[-1]:
            raise ValueError(
                f"{image_path} has {image.shape[-1]} channels, earlier images {xs[0].shape[-1]}"
            )
        if tile is None and xs and image.shape != xs[0].shape[1:]:
            raise ValueError(
                f"{image_path} is {image.shape[0]}x{image.shape[1]}, {paths[0]} "
                f"{xs[0].shape[1]}x{xs[0].shape[2]}: pass `tile` to cut images of several sizes"
            )
        pieces = imageio.cut_tiles(image, tile) if tile else image[None]
        if not len(pieces):  # the mask crop took it below one tile
            h, w = image.shape[:2]
            skipped[str(image_path)] = f"{h}x{w} once cropped to its mask is below one tile"
            continue
        xs.append(pieces)
        if labels:
            ys.append(imageio.cut_tiles(mask, tile) if tile else mask[None])
    if not xs:
        raise ValueError(f"No usable image in {images}: {skipped}")
    if labels and num_classes is None:  # index masks: the largest id they hold, + 1
        num_classes = int(max(np.max(y, initial=0, where=y != IGNORE) for y in ys)) + 1
    dataset = in_memory_dataset(
        np.concatenate(xs),
        np.concatenate(ys) if labels else None,
        vertical_flip=vertical_flip,
        **pipeline_options(batch_size, seed, shuffle, repeat, drop_remainder, augment),
    )
    if class_names is None and num_classes is not None:
        class_names = tuple(str(k) for k in range(num_classes))
    info = DatasetInfo(
        num_classes=num_classes,
        channels=xs[0].shape[-1],
        class_names=tuple(class_names or ()),
        num_examples=sum(len(x) for x in xs),
        skipped=skipped,
        adjusted=adjusted,
    )
    return dataset, info


def _mask_path(masks, image_path):
    if callable(masks):
        mask_path = Path(masks(image_path))
        if not mask_path.is_file():
            raise ValueError(f"No mask {mask_path} for {image_path}")
        return mask_path
    if not Path(masks).is_dir():
        raise ValueError(f"No such mask folder: {masks}")
    for suffix in (".png", *imageio.IMAGE_SUFFIXES):
        mask_path = Path(masks) / f"{image_path.stem}{suffix}"
        if mask_path.is_file():
            return mask_path
    raise ValueError(f"No mask for {image_path} in {masks} (expected {image_path.stem}.png)")


DUBAI_IGNORED = ("Unlabeled",)


def dubai(
    path,
    tiles=(1, 2, 3, 4, 5, 6, 7, 8),
    *,
    tile=200,
    downsample=1,
    size_tolerance=2,
    batch_size=8,
    seed=0,
    labels=False,
    shuffle=True,
    repeat=False,
    drop_remainder=True,
    augment=False,
):
    """Dubai aerial imagery (MBRSC, Humans in the Loop) through `folder`.

    "Semantic segmentation of aerial imagery": `tile-N/images/*.jpg` with colour masks
    `tile-N/masks/<stem>.png`. Classes (Dubai-5) are those of `classes.json` in its order,
    "Unlabeled" left out: Water, Land (unpaved area), Road, Building, Vegetation. Unlabeled
    (#9B9B9B) and any colour the file does not list (a little pure black) are 255. Masks a
    pixel or two larger than their image are cropped with it to the common size (in
    `info.adjusted`); more than `size_tolerance` px is an error naming the mask.

    Args:
        path: the folder with `classes.json` and `tile-1` ... `tile-8`.
        tiles: which `tile-N` folders to read.
        tile: side of the pieces the images are cut into (remainder dropped).
        downsample: shrink images (block mean) and masks (block majority) this many times
            before cutting them; see `folder`.
        size_tolerance, batch_size, seed, labels, shuffle, repeat, drop_remainder, augment:
            see `folder`; `augment` flips left-right and up-down.

    Returns:
        (dataset, info).
    """
    path = Path(path)
    try:
        entries = json.loads((path / "classes.json").read_text())["classes"]
        colours = {e["color"]: None if e["title"] in DUBAI_IGNORED else e["title"] for e in entries}
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ValueError(
            f"Cannot read the Dubai classes from {path / 'classes.json'}: {error}"
        ) from error
    names = tuple(title for title in colours.values() if title is not None)
    colours = {
        colour: None if title is None else names.index(title) for colour, title in colours.items()
    }
    folders = [path / f"tile-{t}" / "images" for t in tiles]
    for images in folders:
        if not images.is_dir():
            raise ValueError(f"No such folder: {images}")
    return folder(
        folders,
        lambda image_path: image_path.parent.parent / "masks" / f"{image_path.stem}.png",
        mask_format="colour",
        colours=colours,
        num_classes=len(names),
        class_names=names,
        tile=tile,
        downsample=downsample,
        size_tolerance=size_tolerance,
        vertical_flip=True,
        **pipeline_options(batch_size, seed, shuffle, repeat, drop_remainder, augment),
        labels=labels,
    )


# ------------------------------------------------------------------- shared by every pipeline
def pipeline_options(batch_size, seed, shuffle, repeat, drop_remainder, augment):
    """Validates the arguments every pipeline shares; returns them for `in_memory_dataset`."""
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(
            f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}"
        )
    if not isinstance(seed, (int, np.integer)):
        raise ValueError(f"`seed` must be an int. Received: seed={seed!r}")
    return dict(
        batch_size=int(batch_size),
        seed=int(seed),
        shuffle=bool(shuffle),
        repeat=bool(repeat),
        drop_remainder=bool(drop_remainder),
        augment=bool(augment),
    )


def in_memory_dataset(
    images,
    labels,
    *,
    batch_size,
    seed,
    shuffle,
    repeat,
    drop_remainder,
    augment,
    vertical_flip=False,
    crop=None,
    shapes=None,
):
    """Batches in-memory examples in a seeded order, with optional random crops and flips.

    Every draw is stateless: the order of epoch e comes from (seed, -1 - e), the crop and
    flips of example i in epoch e from (seed, e * N + i) (`tf_autoseg.shuffling`, which the
    streaming pipelines share). So the same seed gives the same batches from any iterator,
    and a repeated epoch is reshuffled.

    Args:
        images: uint8 (N, H, W, C).
        labels: uint8 (N, H, W), or None.
        crop: with `shapes`, each example is a random crop x crop window of its top-left
            `shapes[i]` region (the rest is padding).
    """
    n = len(images)
    if drop_remainder and not repeat and n < batch_size:
        raise ValueError(
            f"Only {n} examples for batch_size={batch_size}: with drop_remainder=True and "
            "repeat=False the dataset would be empty. Lower `batch_size`, or pass "
            "drop_remainder=False or repeat=True"
        )
    channels = images.shape[-1]
    stacked = images if labels is None else np.concatenate([images, labels[..., None]], -1)
    data = tf.constant(stacked)
    sizes = tf.constant(np.zeros((n, 2), np.int32) if shapes is None else shapes, tf.int32)
    seed = tf.constant(seed, tf.int64)
    height, width = (crop, crop) if crop else images.shape[1:3]

    def example(epoch, index):
        x = tf.gather(data, index)
        draws = shuffling.example_draws(seed, n, epoch, index)
        if crop:
            top, left = shuffling.random_window(draws, tf.gather(sizes, index), crop)
            x = x[top : top + crop, left : left + crop]
        if augment:
            x = shuffling.random_flips(x, draws, vertical_flip)
        x = tf.ensure_shape(x, (height, width, stacked.shape[-1]))
        if labels is None:
            return x
        return x[..., :channels], tf.cast(x[..., channels], tf.int32)

    dataset = shuffling.example_stream(n, seed, shuffle, repeat)
    dataset = dataset.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return shuffling.batched(dataset, n, batch_size, drop_remainder, repeat)
