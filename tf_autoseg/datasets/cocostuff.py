"""COCO-Stuff-15 / -3 with IIC's curation: `load(path, split, num_classes)` returns `(dataset, info)`.

`class_map` maps label values to the 15 stuff supercategories or to IIC's sky, plant,
ground; `curate` is the preparation step that reads the labels once to apply IIC's
curation, so that a training pipeline opens images only. See `tf_autoseg.data.core`.
"""

import json
from pathlib import Path

import numpy as np

from tf_autoseg import arguments
from tf_autoseg import atomic
from tf_autoseg.data import core
from tf_autoseg.data import images as imageio
from tf_autoseg.data.prepared import Part
from tf_autoseg.data.prepared import Reader
from tf_autoseg.datasets.catalog import Dataset

COCOSTUFF3 = ("sky", "plant", "ground")  # IIC's order (datasets/segmentation/cocostuff.py)
NUM_CLASSES = (15, 3)  # COCO-Stuff-15, COCO-Stuff-3


def class_map(categories, num_classes=15):
    """Maps COCO-Stuff label values (category id - 1) to COCO-Stuff-15 or -3 classes.

    COCO-Stuff-15: the 15 stuff supercategories of `categories.json` (isthing 0; the catch-all
    "other" left out) in alphabetical order: building, ceiling, floor, food-stuff,
    furniture-stuff, ground, plant, raw-material, sky, solid, structural, textile, wall, water,
    window. COCO-Stuff-3: IIC's sky, plant, ground (0, 1, 2), exactly those supercategories:
    sky = clouds, sky-other; plant = branch, bush, flower, grass, leaves, moss, plant-other,
    straw, tree; ground = dirt, gravel, ground-other, mud, pavement, platform, playingfield,
    railroad, road, sand, snow. Everything else (things, other stuff such as solid or water,
    unlabelled 255) maps to 255.

    Args:
        categories: path of `categories.json` (entries with id, name, supercategory, isthing).
        num_classes: 15 or 3.

    Returns:
        (lut, class_names): uint8 lut[256] from label value to class id or 255.
    """
    arguments.choice("num_classes", num_classes, NUM_CLASSES)
    try:
        entries = json.loads(Path(categories).read_text())
        stuff = sorted(
            {e["supercategory"] for e in entries if not e["isthing"]} - {"other"},
        )
        ids = [(int(e["id"]), e["supercategory"], e["isthing"]) for e in entries]
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ValueError(f"Cannot read COCO-Stuff categories from {categories}: {error}") from error
    names = tuple(stuff) if num_classes == 15 else COCOSTUFF3
    if (num_classes == 15 and len(stuff) != 15) or not set(names) <= set(stuff):
        raise ValueError(f"{categories}: expected the 15 stuff supercategories, found {stuff}")
    lut = np.full(256, core.IGNORE, np.uint8)
    for category_id, supercategory, isthing in ids:
        if not isthing and supercategory in names and 1 <= category_id <= core.IGNORE:
            lut[category_id - 1] = names.index(supercategory)
    return lut, names


def curate(path, split="train", num_classes=15, *, min_side=360, min_target_share=0.75):
    """IIC's curated image list for a split, made once from its label files.

    Keeps images whose shorter side is >= `min_side` and at least `min_target_share` of whose
    pixels (of all pixels, unlabelled included, as IIC counts) are target classes. This is the
    preparation step that reads labels; a training pipeline given the list opens none.

    Returns:
        (stems, skipped): the kept file stems, and image path -> reason for the others.
    """
    lut, _ = class_map(Path(path) / "categories.json", num_classes)
    stems, skipped = [], {}
    for image_path in imageio.list_files(Path(path) / f"{split}_img"):
        label = imageio.read_index_mask(_coco_label_path(path, split, image_path))
        reason = _coco_reason(label.shape, min_side, label, lut, min_target_share)
        if reason:
            skipped[str(image_path)] = reason
        else:
            stems.append(image_path.stem)
    return tuple(stems), skipped


def load(
    path,
    split="train",
    num_classes=15,
    *,
    crop=128,
    scale=1 / 3,
    min_side=360,
    min_target_share=0.75,
    curated=None,
    random_crop=None,
    labels=False,
    **options,
):
    """COCO-Stuff-15 / -3 with IIC's curation: `<split>_img/*.jpg`, `<split>_label/*.png`.

    Label PNGs are stuffthingmaps (value = category id - 1, 255 = unlabelled), mapped by
    `class_map`; thing, non-target and unlabelled pixels are 255. Curation: images
    with a shorter side below `min_side`, or with less than `min_target_share` target pixels,
    are skipped (in `info.skipped`). Kept images are scaled by `scale` (images bilinear,
    labels nearest) and cropped to `crop` px: randomly for training, centred otherwise; an
    image smaller than the crop after scaling is skipped (IIC zero-pads it instead).

    Training never reads labels: with `labels=False` no label file is opened, so the share
    rule needs `curated`, the list `curate` makes from the labels once; without it
    `min_target_share` must be 0.

    Args:
        path: the folder with `categories.json`, `<split>_img/` and `<split>_label/`.
        split: "train" or "val".
        num_classes: 15 or 3.
        crop, scale, min_side, min_target_share: IIC's 128, 1/3, 360, 0.75 by default.
        curated: file stems to keep (a sequence, or a text file with one per line).
        random_crop: True for random crops (drawn from `seed` per epoch); default
            `not labels`: random for training, centred for evaluation.
        labels: yield (images, labels) instead of images.
        **options: the keywords of `tf_autoseg.data.core.PipelineOptions`; `augment` flips
            left-right only.

    Returns:
        (dataset, info).
    """
    options = core.PipelineOptions(**options)
    arguments.choice("split", split, ("train", "val"))
    arguments.integer("crop", crop)
    if not arguments.positive("scale", scale) <= 1:
        raise ValueError(f"`scale` must be in (0, 1]. Received: scale={scale!r}")
    path = Path(path)
    lut, names = class_map(path / "categories.json", num_classes)
    if not labels and curated is None and min_target_share > 0:
        raise ValueError(
            "`min_target_share` needs the label files, which a labels=False (training) "
            "pipeline never opens: pass curated=cocostuff.curate(path, split, num_classes)[0] "
            f"or min_target_share=0. Received: min_target_share={min_target_share}"
        )
    keep = None if curated is None else set(_read_stems(curated))
    random_crop = not labels if random_crop is None else random_crop
    skipped, adjusted, xs, ys = {}, {}, [], []
    for image_path in imageio.list_files(path / f"{split}_img"):
        if keep is not None and image_path.stem not in keep:
            skipped[str(image_path)] = "not in `curated`"
            continue
        size = imageio.image_size(image_path)
        if labels:
            label_path = _coco_label_path(path, split, image_path)
            label = imageio.read_index_mask(label_path)
            reason = _coco_reason(label.shape, min_side, label, lut, min_target_share)
        else:
            reason = _coco_reason(size, min_side)
        h, w = (round(n * scale) for n in size)
        if not reason and min(h, w) < crop:
            reason = f"{h}x{w} after scale={scale:g} is smaller than the {crop}x{crop} crop"
        if reason:
            skipped[str(image_path)] = reason
            continue
        image, note = imageio.read_image(image_path, channels=3)
        if note:
            adjusted[str(image_path)] = note
        if labels:
            imageio.match_sizes(image, label, label_path, tolerance=0)
            ys.append(lut[imageio.resize(label, h, w, labels=True)])
        xs.append(imageio.resize(image, h, w))
    if not xs:
        raise ValueError(f"No image of {path / f'{split}_img'} passes the curation: {skipped}")

    shapes = np.array([x.shape[:2] for x in xs], np.int32)
    if random_crop:  # pad to one size; each crop is drawn inside the image's own region
        images = np.zeros((len(xs), *shapes.max(0), 3), np.uint8)
        masks = np.full(images.shape[:3], core.IGNORE, np.uint8) if labels else None
        for k, (x, (h, w)) in enumerate(zip(xs, shapes)):
            images[k, :h, :w] = x
            if labels:
                masks[k, :h, :w] = ys[k]
    else:
        offsets = [((h - crop) // 2, (w - crop) // 2) for h, w in shapes]
        images = np.stack([x[t : t + crop, u : u + crop] for x, (t, u) in zip(xs, offsets)])
        masks = (
            np.stack([y[t : t + crop, u : u + crop] for y, (t, u) in zip(ys, offsets)])
            if labels
            else None
        )
    dataset = core.in_memory_dataset(
        images,
        masks,
        options,
        crop=crop if random_crop else None,
        shapes=shapes,
    )
    info = core.DatasetInfo(
        num_classes=num_classes,
        channels=3,
        class_names=names,
        num_examples=len(xs),
        skipped=skipped,
        adjusted=adjusted,
    )
    return dataset, info


def _coco_label_path(path, split, image_path):
    label_path = Path(path) / f"{split}_label" / f"{image_path.stem}.png"
    if not label_path.is_file():
        raise ValueError(f"No label file {label_path} for {image_path}")
    return label_path


def _coco_reason(shape, min_side, label=None, lut=None, min_target_share=0.0):
    """Why IIC's curation drops an image, or None."""
    if min(shape) < min_side:
        return f"shorter side {min(shape)} < min_side={min_side}"
    if label is not None and min_target_share > 0:
        share = np.count_nonzero(lut[label] != core.IGNORE) / label.size
        if share < min_target_share:
            return f"target share {share:.3f} < min_target_share={min_target_share}"
    return None


def _read_stems(curated):
    if isinstance(curated, (str, Path)):
        try:
            return [line.strip() for line in Path(curated).read_text().splitlines() if line.strip()]
        except OSError as error:
            raise ValueError(f"Cannot read the curated list {curated}: {error}") from error
    return [str(stem) for stem in curated]


# ------------------------------------------------------------ the programs' dataset
def read_part(data, labels, options):
    """The in-memory part of `data` (see `tf_autoseg.datasets.Dataset`).

    IIC's curation reads the label files once, as a preparation step; the pipeline then
    opens images only.
    """
    split = "train" if data.part == "train" else "val"
    curation = dict(min_side=data.min_side, min_target_share=data.min_target_share)
    curated = curate(data.data_dir, split, data.num_classes, **curation)[0]
    return load(data.data_dir, split=split, num_classes=data.num_classes, crop=data.tile,
                scale=data.scale, curated=curated, **curation, labels=labels, **options)  # fmt: skip


def prepared_parts(train, held_out, work_dir):
    """(parts, manifest fields) that `python -m tf_autoseg.prepare` writes (see
    `tf_autoseg.datasets.Dataset`), from the files' headers; the curation, which reads every
    label file, is cached in `work_dir`."""
    root, k = Path(train.data_dir), train.num_classes
    lut, names = class_map(root / "categories.json", k)
    parts = {}
    for part, split, data in (("train", "train", train), ("eval", "val", held_out)):
        stems, skipped = _curation(data, split, work_dir)
        keep, crop = set(stems), data.tile
        files = []
        for image_path in imageio.list_files(root / f"{split}_img"):
            if image_path.stem not in keep:
                continue
            h, w = (round(n * data.scale) for n in imageio.image_size(image_path))
            if min(h, w) < crop:
                skipped[str(image_path)] = (
                    f"{h}x{w} after scale={data.scale:g} is smaller than the {crop}x{crop} crop"
                )
                continue
            label = root / f"{split}_label" / f"{image_path.stem}.png"
            files.append((str(image_path), str(label), (h, w)))
        label_map = tuple(int(v) for v in lut)
        reader = Reader(channels=3, mask_format="index", label_map=label_map, tolerance=0)
        examples = [(f, 0, 0) for f in range(len(files))]
        parts[part] = Part(files, examples, None, 1, None, reader, crop=crop, skipped=skipped)
    return parts, dict(num_classes=k, class_names=names)


def _curation(data, split, work_dir):
    """`curate`'s (stems, skipped), cached in `work_dir`: it reads every label."""
    key = f"{split}-{data.num_classes}-{data.min_side}-{data.min_target_share}"
    cache = Path(work_dir) / f"curation-{key}.json"
    if cache.is_file():
        saved = json.loads(cache.read_text())
        return saved["stems"], saved["skipped"]
    stems, skipped = curate(
        data.data_dir, split, data.num_classes,
        min_side=data.min_side, min_target_share=data.min_target_share,
    )  # fmt: skip
    atomic.write_json(cache, {"stems": list(stems), "skipped": skipped})
    return list(stems), skipped


DATASET = Dataset("cocostuff", read_part, num_classes=NUM_CLASSES, prepared=prepared_parts)
