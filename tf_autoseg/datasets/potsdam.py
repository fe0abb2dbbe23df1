"""ISPRS Potsdam as IIC prepares it: `load(path, split, num_classes)` returns `(dataset, info)`.

From the raw release (4-band `top_potsdam_<row>_<col>_RGBIR.tif` with colour-coded
`*_label.tif`) or from a folder of cut crops (`img_dir/` PNGs with index labels in
`ann_dir/`). See `tf_autoseg.data.core` for what every pipeline yields.
"""

from pathlib import Path
from typing import NamedTuple

import numpy as np

from tf_autoseg import arguments
from tf_autoseg.data import core
from tf_autoseg.data import images as imageio
from tf_autoseg.data.prepared import Part
from tf_autoseg.data.prepared import Reader
from tf_autoseg.datasets.catalog import Dataset

POTSDAM_CLASSES = ("impervious surfaces", "building", "low vegetation", "tree", "car", "clutter")
POTSDAM_COLOURS = {
    "#FFFFFF": 0,
    "#0000FF": 1,
    "#00FFFF": 2,
    "#00FF00": 3,
    "#FFFF00": 4,
    "#FF0000": 5,
}
POTSDAM3_CLASSES = ("roads and cars", "buildings and clutter", "vegetation and trees")
# Potsdam-6 id -> Potsdam-3 id, IIC's merge: road+car, building+clutter, low vegetation+tree.
POTSDAM6_TO_3 = (0, 1, 2, 2, 0, 1)
POTSDAM6 = len(POTSDAM_CLASSES)  # the classes labels are stored in (and prepared as)
NUM_CLASSES = (POTSDAM6, 3)  # Potsdam-6, Potsdam-3
# IIC's preparation, the defaults of `load` and `streamed` alike (one value each, so that the
# two give the same crops and split): 400 px crops halved to 200 px, a seeded 10% test split.
CROP, SIZE, TEST_FRACTION, SPLIT_SEED = 400, 200, 0.1, 0


def load(
    path,
    split="train",
    num_classes=POTSDAM6,
    *,
    crop=CROP,
    size=SIZE,
    test_fraction=TEST_FRACTION,
    split_seed=SPLIT_SEED,
    channels=None,
    labels=False,
    **options,
):
    """ISPRS Potsdam as IIC prepares it: non-overlapping `crop` px crops shrunk to `size` px.

    Two layouts under `path`:
    - the raw release: `top_potsdam_<row>_<col>_RGBIR.tif` (4-band 8-bit TIFF, at any depth
      below `path`) with colour-coded `top_potsdam_<row>_<col>_label.tif`: impervious
      (255,255,255), building (0,0,255), low vegetation (0,255,255), tree (0,255,0), car
      (255,255,0), clutter (255,0,0); any other colour is 255 (ignored);
    - cut crops: `img_dir/**/*.png` with index labels `ann_dir/**/<same name>.png` (0..5 in the
      order above, 255 ignored). The PNGs of that layout carry RGB only: `info.channels` is 3
      there and there is no IR band.

    Images shrink by block averaging (at a factor of 2, exactly bilinear half-size resizing as
    IIC does), labels by block majority with ties to the block's top-left pixel: ids are never
    interpolated. A source image smaller than `crop` is skipped (in `info.skipped`); the
    remainder of each image beyond a whole number of crops is dropped.

    The split is over crops, as IIC's: a permutation drawn from `split_seed` holds out
    round(test_fraction x labelled crops) labelled crops as "test"; "train" is every other crop,
    including those of images without a label file when `labels=False`; "all" is every crop.

    Args:
        path: the folder.
        split: "train", "test" or "all".
        num_classes: 6 (Potsdam-6) or 3 (Potsdam-3: IIC's merge, see `POTSDAM6_TO_3`).
        crop, size: crop side in source pixels and output side; `crop` a multiple of `size`.
        test_fraction, split_seed: the held-out share of labelled crops and its seed (kept
            apart from `seed`, so that reshuffling never moves crops between splits).
        channels: None (as stored: 4 for the raw TIFFs), 3 (RGB) or 4 (required).
        labels: yield (images, labels) instead of images.
        **options: the keywords of `tf_autoseg.data.core.PipelineOptions`; `augment` flips
            left-right and up-down.

    Returns:
        (dataset, info).
    """
    options = core.PipelineOptions(**options)
    sources, crops, chosen, skipped = plan(
        path, split, num_classes, crop, size, test_fraction, split_seed, labels
    )
    adjusted = {}
    factor = crop // size
    lut = core.label_lut(POTSDAM6_TO_3 if num_classes == 3 else range(POTSDAM6))
    table = imageio.parse_colours(POTSDAM_COLOURS)
    xs, ys, bands = [], [], None
    for s in sorted({crops[i][0] for i in chosen}):
        image_path, label_path, colour_labels = sources[s]
        image, note = imageio.read_image(image_path, channels)
        if note:
            adjusted[str(image_path)] = note
        bands = bands or image.shape[-1]
        if image.shape[-1] != bands:
            raise ValueError(f"{image_path} has {image.shape[-1]} bands, earlier images {bands}")
        if labels:
            if colour_labels:
                mask = imageio.read_colour_mask(label_path, table)
            else:
                mask = imageio.read_index_mask(label_path, num_classes=POTSDAM6)
            image, mask, _ = imageio.match_sizes(image, mask, label_path, tolerance=0)
        for _, top, left in (crops[i] for i in chosen if crops[i][0] == s):
            window = np.s_[top : top + crop, left : left + crop]
            xs.append(imageio.downscale_mean(image[window], factor))
            if labels:
                ys.append(lut[imageio.downscale_mode(mask[window], factor)])
    dataset = core.in_memory_dataset(
        np.stack(xs),
        np.stack(ys) if labels else None,
        options,
        vertical_flip=True,
    )
    info = core.DatasetInfo(
        num_classes=num_classes,
        channels=bands,
        class_names=POTSDAM_CLASSES if num_classes == POTSDAM6 else POTSDAM3_CLASSES,
        num_examples=len(xs),
        skipped=skipped,
        adjusted=adjusted,
    )
    return dataset, info


class Plan(NamedTuple):
    """Which crops a split holds, worked out from file headers alone (no pixel is decoded).

    Attributes:
        sources: [(image path, label path or None, labels colour-coded?)] in name order.
        crops: [(source index, top, left)] of every whole crop, source by source.
        chosen: indices into `crops` of the split's crops, in order.
        skipped: image path -> reason, for sources left out.
    """

    sources: list
    crops: list
    chosen: list
    skipped: dict


def plan(path, split, num_classes, crop, size, test_fraction, split_seed, labels):
    """The crops of a split, as `load` takes them (see `load` for the arguments)."""
    arguments.choice("split", split, ("train", "test", "all"))
    arguments.choice("num_classes", num_classes, NUM_CLASSES)
    if not (isinstance(crop, int) and isinstance(size, int) and size >= 1 and crop % size == 0):
        raise ValueError(
            f"`crop` must be a positive multiple of `size`. Received: crop={crop!r}, size={size!r}"
        )
    if not 0 <= test_fraction < 1:
        raise ValueError(f"`test_fraction` must be in [0, 1). Received: {test_fraction!r}")
    path = Path(path)
    sources = _sources(path)
    skipped, crops = {}, []
    for s, (image_path, _, _) in enumerate(sources):
        h, w = imageio.image_size(image_path)
        if h < crop or w < crop:
            skipped[str(image_path)] = f"{h}x{w} is smaller than the {crop}x{crop} crop"
        crops += [(s, y * crop, x * crop) for y in range(h // crop) for x in range(w // crop)]
    labelled = [i for i, (s, _, _) in enumerate(crops) if sources[s][1] is not None]
    held_out = np.random.default_rng(split_seed).permutation(len(labelled))
    test = {labelled[k] for k in held_out[: round(test_fraction * len(labelled))]}
    chosen = [i for i in range(len(crops)) if split == "all" or (i in test) == (split == "test")]
    if labels:
        for s in sorted({crops[i][0] for i in chosen if sources[crops[i][0]][1] is None}):
            skipped[str(sources[s][0])] = "no label file"
        chosen = [i for i in chosen if sources[crops[i][0]][1] is not None]
    if not chosen:
        raise ValueError(
            f"No {split!r} crops of {crop}x{crop} px in {path} "
            f"({len(crops)} crops in all, {len(labelled)} labelled)"
        )
    return Plan(sources, crops, chosen, skipped)


def _sources(path):
    """[(image path, label path or None, labels colour-coded?)] in name order."""
    if not path.is_dir():
        raise ValueError(f"No such folder: {path}")
    if (path / "img_dir").is_dir():
        root = path / "img_dir"
        found = imageio.list_files(str(root / "**" / "*"), (".png", ".tif", ".tiff"))
        sources = []
        for image_path in found:
            label_path = (path / "ann_dir" / image_path.relative_to(root)).with_suffix(".png")
            sources.append((image_path, label_path if label_path.is_file() else None, False))
        return sources
    found = sorted(path.rglob("top_potsdam_*_RGBIR.tif"))
    if not found:
        raise ValueError(
            f"No Potsdam data in {path}: expected img_dir/ and ann_dir/, or "
            "top_potsdam_<row>_<col>_RGBIR.tif tiles"
        )
    label_files = {
        p.name.removesuffix("_label.tif"): p for p in path.rglob("top_potsdam_*_label.tif")
    }
    return [(p, label_files.get(p.name.removesuffix("_RGBIR.tif")), True) for p in found]


def streamed(
    path,
    split="train",
    num_classes=POTSDAM6,
    *,
    crop=CROP,
    size=SIZE,
    test_fraction=TEST_FRACTION,
    split_seed=SPLIT_SEED,
    channels=None,
    check="header",
    start=0,
    num_workers=1,
    worker=0,
    **options,
):
    """`load` for training, streamed, from the PNG crop layout (`img_dir/`).

    The same crops, split and batches. The raw release's 4-band TIFFs cannot be decoded by
    TensorFlow: convert them once with `python -m tf_autoseg.prepare --dataset=potsdam`.
    Arguments: see `load`; `check`, `start`, `num_workers`, `worker`: see `tf_autoseg.data.stream.folder`.
    """
    from tf_autoseg.data import headers
    from tf_autoseg.data import stream  # TensorFlow: loaded only to stream

    options = core.PipelineOptions(**options)
    layout = plan(path, split, num_classes, crop, size, test_fraction, split_seed, labels=False)
    tiffs = [str(s[0]) for s in layout.sources if s[0].suffix.lower() in (".tif", ".tiff")]
    if tiffs:
        raise ValueError(
            f"{tiffs[0]} (and {len(tiffs) - 1} more) are TIFF, which TensorFlow cannot decode: "
            f"prepare the set once with `python -m tf_autoseg.prepare --dataset=potsdam "
            f"--data_dir={path}` and train from the prepared folder"
        )
    used = sorted({layout.crops[i][0] for i in layout.chosen})
    found = headers.scan([layout.sources[s][0] for s in used], channels or 3, check)
    position = {s: k for k, s in enumerate(used)}
    file = np.array([position[layout.crops[i][0]] for i in layout.chosen], np.int32)
    corners = np.array([layout.crops[i][1:] for i in layout.chosen], np.int32).reshape(-1, 2)
    examples = stream.Examples(tuple(found), file, corners, (crop, crop), crop // size)
    dataset = stream.examples_dataset(
        examples,
        options,
        channels=channels or 3,
        vertical_flip=True,
        start=start,
        num_workers=num_workers,
        worker=worker,
    )
    info = core.DatasetInfo(
        num_classes=num_classes,
        channels=channels or 3,
        class_names=POTSDAM_CLASSES if num_classes == POTSDAM6 else POTSDAM3_CLASSES,
        num_examples=len(examples),
        skipped=layout.skipped,
        adjusted={str(h.path): h.note for h in found if h.note},
    )
    return dataset, info


# ------------------------------------------------------------ the programs' dataset
def read_part(data, labels, options):
    """The in-memory part of `data` (see `tf_autoseg.datasets.Dataset`): IIC's train or test
    crops."""
    split = "train" if data.part == "train" else "test"
    return load(data.data_dir, split=split, num_classes=data.num_classes, labels=labels, **options)


def streamed_part(data, options, split, small):
    """The streamed training part of the PNG crop layout; None for raw TIFFs (in memory or
    prepared) or when the crops fit in memory (see `tf_autoseg.datasets.Dataset`)."""
    root = Path(data.data_dir)
    if not (root / "img_dir").is_dir():
        return None
    if small(str(root / "img_dir" / "**" / "*"), shrink=(CROP // SIZE) ** 2):  # crops shrink
        return None
    return streamed(data.data_dir, "train", data.num_classes, check=data.file_check, **options,
                    **split)  # fmt: skip


# ------------------------------------------------------------ prepared records
def prepared_parts(train, held_out, work_dir):
    """(parts, manifest fields) that `python -m tf_autoseg.prepare` writes (see
    `tf_autoseg.datasets.Dataset`), from the files' headers: IIC's crops as Potsdam-6 (the
    3-class merge is chosen when training)."""
    root = Path(train.data_dir)
    parts = {}
    for part, split in (("train", "train"), ("eval", "test")):
        found = plan(root, split, POTSDAM6, CROP, SIZE, TEST_FRACTION, SPLIT_SEED,
                     labels=part == "eval")  # fmt: skip
        colour = found.sources[0][2]  # the raw release: colour-coded TIFF labels
        reader = Reader(
            channels=None,
            mask_format="colour" if colour else "index",
            colours=POTSDAM_COLOURS if colour else None,
            num_classes=POTSDAM6,
            tolerance=0,
        )
        used = sorted({found.crops[i][0] for i in found.chosen})
        position = {s: j for j, s in enumerate(used)}
        files = [
            (
                str(found.sources[s][0]),
                None if found.sources[s][1] is None else str(found.sources[s][1]),
                None,
            )
            for s in used
        ]
        examples = [(position[found.crops[i][0]], *found.crops[i][1:]) for i in found.chosen]
        parts[part] = Part(
            files, examples, (CROP, CROP), CROP // SIZE, (SIZE, SIZE), reader, vertical_flip=True,
            skipped=found.skipped,
        )  # fmt: skip
    merges = {"3": {"map": list(POTSDAM6_TO_3), "class_names": POTSDAM3_CLASSES}}
    return parts, dict(num_classes=POTSDAM6, class_names=POTSDAM_CLASSES, merges=merges)


DATASET = Dataset("potsdam", read_part, num_classes=NUM_CLASSES, streamed=streamed_part,
                  prepared=prepared_parts)  # fmt: skip
