"""Dubai aerial imagery (Semantic segmentation of aerial imagery, MBRSC): `load(path, tiles)`.

A folder of the images and colour masks of tiles `tile-1` ... `tile-8`, read through
`tf_autoseg.datasets.folder`. See `tf_autoseg.data.core` for what every pipeline yields.
"""

import json
from pathlib import Path

from tf_autoseg.data import images as imageio
from tf_autoseg.data.prepared import Reader
from tf_autoseg.data.prepared import tiled_part
from tf_autoseg.datasets import folder
from tf_autoseg.datasets.catalog import Dataset

IGNORED = ("Unlabeled",)  # classes.json titles whose colour is ignored (255)
NUM_CLASSES = (5,)  # Dubai-5: the classes of classes.json but "Unlabeled"


def load(
    path,
    tiles=(1, 2, 3, 4, 5, 6, 7, 8),
    *,
    tile=200,
    downsample=1,
    size_tolerance=2,
    labels=False,
    **options,
):
    """Dubai aerial imagery (MBRSC, Humans in the Loop) through `tf_autoseg.datasets.folder.load`.

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
            before cutting them; see `tf_autoseg.datasets.folder.load`.
        size_tolerance, labels: see `tf_autoseg.datasets.folder.load`.
        **options: the keywords of `tf_autoseg.data.core.PipelineOptions`; `augment` flips
            left-right and up-down.

    Returns:
        (dataset, info).
    """
    names, colours = classes(path)
    return folder.load(
        tile_folders(path, tiles),
        lambda image_path: image_path.parent.parent / "masks" / f"{image_path.stem}.png",
        mask_format="colour",
        colours=colours,
        num_classes=len(names),
        class_names=names,
        tile=tile,
        downsample=downsample,
        size_tolerance=size_tolerance,
        vertical_flip=True,
        labels=labels,
        **options,
    )


def tile_folders(path, tiles):
    """The `tile-N/images` folders of `tiles` under `path`; ValueError naming a missing one."""
    folders = [Path(path) / f"tile-{t}" / "images" for t in tiles]
    for images in folders:
        if not images.is_dir():
            raise ValueError(f"No such folder: {images}")
    return folders


def classes(path):
    """(class names, {colour: class id or None}) of a Dubai folder's `classes.json`.

    The names leave out `IGNORED` ("Unlabeled"), whose colour maps to None.
    """
    path = Path(path) / "classes.json"
    try:
        entries = json.loads(path.read_text())["classes"]
        titles = {e["color"]: e["title"] for e in entries}
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ValueError(f"Cannot read the Dubai classes from {path}: {error}") from error
    names = tuple(t for t in titles.values() if t not in IGNORED)
    colours = {c: None if t in IGNORED else names.index(t) for c, t in titles.items()}
    return names, colours


def streamed(path, tiles=(1, 2, 3, 4, 5, 6, 7, 8), *, tile=200, downsample=1, **options):
    """`load` for training, streamed: `tile-N/images/*.jpg`, flipped both ways.

    `options`: those of `tf_autoseg.data.stream.folder` (not `vertical_flip`, which is on).
    """
    from tf_autoseg.data import stream  # TensorFlow: loaded only to stream

    names, _ = classes(path)
    return stream.folder(
        tile_folders(path, tiles),
        tile=tile,
        downsample=downsample,
        num_classes=len(names),
        class_names=names,
        vertical_flip=True,
        **options,
    )


# ------------------------------------------------------------ the programs' dataset
def read_part(data, labels, options):
    """The in-memory part of `data` (see `tf_autoseg.datasets.Dataset`): its `tiles`."""
    return load(data.data_dir, tiles=list(data.tiles), tile=data.tile, downsample=data.downsample,
                labels=labels, **options)  # fmt: skip


def streamed_part(data, options, split, small):
    """The streamed training tiles, or None when they fit in memory."""
    if small(tile_folders(data.data_dir, data.tiles), data.downsample):
        return None
    return streamed(data.data_dir, tiles=list(data.tiles), tile=data.tile,
                    downsample=data.downsample, check=data.file_check, **options, **split)  # fmt: skip


def prepared_parts(train, held_out, work_dir):
    """(parts, manifest fields) that `python -m tf_autoseg.prepare` writes (see
    `tf_autoseg.datasets.Dataset`), from the files' headers: the tiles of each part."""
    root = Path(train.data_dir)
    names, colours = classes(root)
    reader = Reader(mask_format="colour", colours=colours)
    parts = {}
    for part, data in (("train", train), ("eval", held_out)):
        pairs = []
        for t in data.tiles:
            for image_path in imageio.list_files(root / f"tile-{t}" / "images"):
                pairs.append(
                    (image_path, image_path.parent.parent / "masks" / f"{image_path.stem}.png")
                )
        parts[part] = tiled_part(pairs, reader, data.tile, data.downsample, vertical_flip=True)
    return parts, dict(num_classes=len(names), class_names=names)


DATASET = Dataset("dubai", read_part, num_classes=NUM_CLASSES, downsample=True,
                  streamed=streamed_part, prepared=prepared_parts)  # fmt: skip
