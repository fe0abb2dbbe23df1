"""Any folder of images, with optional masks: `load(images, masks)` returns `(dataset, info)`.

Images are cut into tiles (or kept whole), optionally shrunk first; masks hold class ids or
colours. `tf_autoseg.datasets.dubai` and `tf_autoseg.datasets.camvid` are such folders. See `tf_autoseg.data.core`
for what every pipeline yields.
"""

import json
from pathlib import Path

import numpy as np

from tf_autoseg import arguments
from tf_autoseg.data import core
from tf_autoseg.data import images as imageio
from tf_autoseg.data.prepared import Reader
from tf_autoseg.data.prepared import tiled_part
from tf_autoseg.datasets.catalog import Dataset


def load(
    images,
    masks=None,
    *,
    mask_format=None,
    colours=None,
    label_map=None,
    num_classes=None,
    class_names=None,
    tile=None,
    downsample=1,
    size_tolerance=2,
    channels=3,
    vertical_flip=False,
    labels=False,
    **options,
):
    """Any images, for training without labels, or with masks for evaluation.

    Args:
        images: a folder (its image files), a glob pattern, or a list of folders, patterns
            or files.
        masks: a folder holding each image's mask under the image's stem (`.png` first), or a
            function from image path to mask path. Opened only with `labels=True`.
        mask_format: "index" (one channel of class ids, 255 = ignore) or "colour" (RGB,
            mapped by `colours`; colours it does not list become 255); default: "colour" when
            `colours` is given, else "index".
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
        channels: 3 (default), 4 or None; see `tf_autoseg.data.images.read_image`.
        vertical_flip: with `augment`, flip up-down as well (overhead imagery).
        labels: yield (images, labels) instead of images.
        **options: the keywords of `tf_autoseg.data.core.PipelineOptions` (`batch_size`, `seed`,
            `shuffle`, `repeat`, `drop_remainder`, `augment`).

    Returns:
        (dataset, info).
    """
    options = core.PipelineOptions(**options)
    if mask_format is None:
        mask_format = "colour" if colours else "index"
    arguments.choice("mask_format", mask_format, ("index", "colour"))
    tile = arguments.optional_integer("tile", tile, imageio.MIN_TILE)
    downsample = arguments.integer("downsample", downsample)
    table = None
    if mask_format == "colour" and colours is not None:
        table = imageio.parse_colours(colours)
        class_ids = [v for v in table.values() if v != core.IGNORE]
        if num_classes is None and class_ids:
            num_classes = max(class_ids) + 1
    if label_map is not None:
        lut = core.label_lut(label_map)
    if labels and masks is None:
        raise ValueError("labels=True needs `masks`: a folder or a function image -> mask path")
    if labels and mask_format == "colour" and table is None:
        raise ValueError("mask_format='colour' needs `colours`, a dict or a JSON file")
    paths = imageio.list_files(images)
    xs, ys, skipped, adjusted = [], [], {}, {}
    for image_path in paths:
        if tile is not None:
            reason = core.tile_corners(*imageio.image_size(image_path), tile, downsample)[1]
            if reason:
                skipped[str(image_path)] = reason
                continue
        image, note = imageio.read_image(image_path, channels)
        notes = [note] if note else []
        if labels:
            mask_path = find_mask(masks, image_path)
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
        num_classes = int(max(np.max(y, initial=0, where=y != core.IGNORE) for y in ys)) + 1
    dataset = core.in_memory_dataset(
        np.concatenate(xs),
        np.concatenate(ys) if labels else None,
        options,
        vertical_flip=vertical_flip,
    )
    if class_names is None and num_classes is not None:
        class_names = tuple(str(k) for k in range(num_classes))
    info = core.DatasetInfo(
        num_classes=num_classes,
        channels=xs[0].shape[-1],
        class_names=tuple(class_names or ()),
        num_examples=sum(len(x) for x in xs),
        skipped=skipped,
        adjusted=adjusted,
    )
    return dataset, info


def find_mask(masks, image_path):
    """The mask file of `image_path`: `masks(image_path)` when `masks` is a function, else the
    file of the folder `masks` named with the image's stem (`.png` first). ValueError if none."""
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


# ------------------------------------------------------------ the programs' dataset
def read_part(data, labels, options):
    """The in-memory part of `data` (see `tf_autoseg.datasets.Dataset`).

    A folder has no split of its own: the labelled part is its own images with the masks
    of `masks_dir` (None without them).
    """
    if labels and not data.masks_dir:
        return None
    return load(
        data.data_dir, masks=data.masks_dir if labels else None, num_classes=data.num_classes,
        colours=data.colours, tile=data.tile, downsample=data.downsample, labels=labels,
        **options,
    )  # fmt: skip


def streamed_part(data, options, split, small):
    """The streamed training part, or None when it fits in memory."""
    from tf_autoseg.data import stream  # TensorFlow: loaded only to stream

    if small(data.data_dir, data.downsample):
        return None
    return stream.folder(data.data_dir, num_classes=data.num_classes, tile=data.tile,
                         downsample=data.downsample, check=data.file_check, **options, **split)  # fmt: skip


def prepared_parts(train, held_out, work_dir):
    """(parts, manifest fields) that `python -m tf_autoseg.prepare` writes (see
    `tf_autoseg.datasets.Dataset`), from the files' headers: the training part only."""
    k, colours = train.num_classes, train.colours
    if colours:
        colours = json.loads(Path(colours).read_text())
    reader = Reader(
        mask_format=("colour" if colours else "index") if train.masks_dir else None,
        colours=colours,
        num_classes=k,
    )
    masks = train.masks_dir
    pairs = [
        (f, find_mask(masks, f) if masks else None)
        for f in imageio.list_files(Path(train.data_dir))
    ]
    part = tiled_part(pairs, reader, train.tile, train.downsample, vertical_flip=False)
    return {"train": part}, dict(num_classes=k, class_names=tuple(str(c) for c in range(k)))


DATASET = Dataset("folder", read_part, held_out=False, downsample=True, streamed=streamed_part,
                  prepared=prepared_parts)  # fmt: skip
