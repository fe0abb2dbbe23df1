"""Prepares a large dataset once: sharded TFRecord files and a manifest that training reads.

    python -m tf_autoseg.prepare --dataset=potsdam --data_dir=/data/potsdam \\
        --output_dir=/data/potsdam-prepared [--jobs=16]

then `python -m tf_autoseg.train ... --prepared_dir=/data/potsdam-prepared`. What it does once,
so that training only reads and decodes PNG records (`tf_autoseg.data.records`):

- potsdam: IIC's 400 px crops of the 4-band TIFFs (read with tifffile; TensorFlow cannot decode
  TIFF) shrunk to 200 px, labels by block majority; "train" is `potsdam.load`'s train split
  (unlabelled crops included), "eval" its seeded test split. Labels are kept as Potsdam-6 ids;
  the manifest lists the Potsdam-3 merge, chosen when training (`--classes=3`).
- cocostuff: IIC's curation (`cocostuff.curate`, which reads every label file once and is cached
  in the output folder), images scaled by 1/3 and kept whole: training draws its 128 px crops,
  evaluation takes the centre; "train" and "eval" are the train and val splits.
- dubai, camvid, folder: the tiles (`--crop`) the in-memory pipelines cut, after `--downsample`.
  "eval" holds dubai's `--eval_tiles` or camvid's val frames, whole.

The manifest (`manifest.json`) counts examples per part and shard, names the classes, and lists
the files skipped (with the reason) or converted. Preparing is resumable: each shard is written
under a temporary name and renamed when complete, and a rerun with the same flags skips the
shards already there (the flags and the example list are recorded in `plan.json` first; a rerun
with other flags or changed sources is refused). A bad file stops it, named, as in training.

Long (~470 lines) because it is one program: the plan of every dataset's parts, the shard
writer, the resumable run and its flags; split it by dataset if another one joins.
"""

import concurrent.futures
import dataclasses
import hashlib
import json
import multiprocessing
import time
from pathlib import Path

import numpy as np

from tf_autoseg import arguments
from tf_autoseg import atomic
from tf_autoseg import datasets
from tf_autoseg.data import core
from tf_autoseg.data import images as imageio
from tf_autoseg.data import records
from tf_autoseg.datasets import camvid
from tf_autoseg.datasets import cocostuff
from tf_autoseg.datasets import dubai
from tf_autoseg.datasets import potsdam
from tf_autoseg.datasets.folder import find_mask

PLAN = "plan.json"


@dataclasses.dataclass(frozen=True)
class Reader:
    """How a part's files become arrays: the conversions of the in-memory pipeline."""

    channels: int | None = 3
    mask_format: str | None = None  # "colour", "index" or None (no masks)
    colours: dict | None = None  # "#RRGGBB" -> class id or None, for "colour"
    label_map: tuple | None = None  # index masks: own id -> class id (255 ignore)
    num_classes: int | None = None  # index masks: values must be below it or 255
    tolerance: int = 2  # mask size mismatch cropped away, in pixels

    def read(self, image_path, mask_path, scaled):
        """(image, mask or None, note) of one file, scaled to `scaled` (h, w) when given."""
        image, note = imageio.read_image(image_path, self.channels)
        mask = None
        if mask_path is not None:
            if self.mask_format == "colour":
                mask = imageio.read_colour_mask(mask_path, imageio.parse_colours(self.colours))
            elif self.label_map is not None:
                lut = np.full(256, core.IGNORE, np.uint8)
                lut[: len(self.label_map)] = self.label_map
                mask = lut[imageio.read_index_mask(mask_path, len(self.label_map))]
            else:
                mask = imageio.read_index_mask(mask_path, self.num_classes)
            image, mask, crop_note = imageio.match_sizes(image, mask, mask_path, self.tolerance)
            note = "; ".join(n for n in (note, crop_note) if n) or None
        if scaled is not None:
            image = imageio.resize(image, *scaled)
            if mask is not None:
                mask = imageio.resize(mask, *scaled, labels=True)
        return image, mask, note


@dataclasses.dataclass
class Part:
    """The examples of one part: each a window of a file (or the whole file), in order.

    Attributes:
        files: [(image path, mask path or None, scaled (h, w) or None)].
        examples: [(file, top, left)].
        window: (h, w) in the file's pixels, or None for whole files.
        factor: each window shrinks this many times (block mean; masks block majority).
        shape: (h, w) of every example, or None when sizes differ (then `crop` is set).
        crop: the training crop side for parts of several sizes.
        vertical_flip: training flips up-down as well.
        skipped: file -> reason, for the files left out by a documented rule.
    """

    files: list
    examples: list
    window: tuple | None
    factor: int
    shape: tuple | None
    reader: Reader
    crop: int | None = None
    vertical_flip: bool = False
    skipped: dict = dataclasses.field(default_factory=dict)

    def digest(self):
        """A fingerprint of the example list: a rerun into the same folder must match it."""
        text = json.dumps([self.files, self.examples, self.window, self.factor], default=str)
        return hashlib.sha256(text.encode()).hexdigest()


def tiled_part(pairs, reader, tile, downsample, vertical_flip, whole=False):
    """A part cutting (image, mask) files into tiles as `tf_autoseg.datasets.folder.load` does (from headers).

    Files smaller than one tile are skipped; with `whole`, each file is one example and all
    must have one size once shrunk.
    """
    d = downsample
    files, examples, skipped, shape = [], [], {}, None
    for image_path, mask_path in pairs:
        h, w = imageio.image_size(image_path)
        if mask_path is not None:  # the pipelines crop both to the common region
            mh, mw = imageio.image_size(mask_path)
            if abs(h - mh) > reader.tolerance or abs(w - mw) > reader.tolerance:
                raise ValueError(
                    f"Mask {mask_path} is {mh}x{mw} but its image is {h}x{w} "
                    f"(more than {reader.tolerance} px apart)"
                )
            h, w = min(h, mh), min(w, mw)
        if whole:
            if shape is not None and (h // d, w // d) != shape:
                raise ValueError(
                    f"{image_path} is {h // d}x{w // d}, earlier images {shape[0]}x{shape[1]}"
                )
            shape = (h // d, w // d)
            examples.append((len(files), 0, 0))
        elif h // d < tile or w // d < tile:
            shrunk = f" once shrunk {d} times" if d > 1 else ""
            skipped[str(image_path)] = f"{h}x{w} is smaller than the {tile}x{tile} tile{shrunk}"
            continue
        else:
            rows, cols = h // d // tile, w // d // tile
            examples += [
                (len(files), r * tile * d, c * tile * d) for r in range(rows) for c in range(cols)
            ]
        files.append((str(image_path), None if mask_path is None else str(mask_path), None))
    if not files:
        raise ValueError(f"No usable image: {skipped}")
    window = (shape[0] * d, shape[1] * d) if whole else (tile * d, tile * d)
    shape = shape if whole else (tile, tile)
    return Part(
        files, examples, window, d, shape, reader, vertical_flip=vertical_flip, skipped=skipped
    )


def plan(config):
    """(parts, manifest fields) of the dataset the config describes; reads headers only
    (and, for cocostuff, the label files once, for the curation, cached in output_dir)."""
    name, root = config["dataset"], Path(config["data_dir"])
    arguments.choice("dataset", name, datasets.PREPARED)
    k, crop, d = config["classes"], config["crop"], config["downsample"]
    if name == "potsdam":
        parts = {}
        for part, split in (("train", "train"), ("eval", "test")):
            found = potsdam.plan(root, split, 6, 400, 200, 0.1, 0, labels=part == "eval")
            colour = found.sources[0][2]  # the raw release: colour-coded TIFF labels
            reader = Reader(
                channels=None,
                mask_format="colour" if colour else "index",
                colours=potsdam.POTSDAM_COLOURS if colour else None,
                num_classes=6,
                tolerance=0,
            )
            used = sorted({found.crops[i][0] for i in found.chosen})
            position = {s: j for j, s in enumerate(used)}
            files = [(str(found.sources[s][0]), _str(found.sources[s][1]), None) for s in used]
            examples = [(position[found.crops[i][0]], *found.crops[i][1:]) for i in found.chosen]
            parts[part] = Part(
                files, examples, (400, 400), 2, (200, 200), reader, vertical_flip=True,
                skipped=found.skipped,
            )  # fmt: skip
        merges = {
            "3": {"map": list(potsdam.POTSDAM6_TO_3), "class_names": potsdam.POTSDAM3_CLASSES}
        }
        return parts, dict(num_classes=6, class_names=potsdam.POTSDAM_CLASSES, merges=merges)
    if name == "cocostuff":
        lut, names = cocostuff.class_map(root / "categories.json", k)
        parts = {}
        for part, split in (("train", "train"), ("eval", "val")):
            stems, skipped = _curation(config, split)
            keep = set(stems)
            files = []
            for image_path in imageio.list_files(root / f"{split}_img"):
                if image_path.stem not in keep:
                    continue
                h, w = (round(n * config["scale"]) for n in imageio.image_size(image_path))
                if min(h, w) < crop:
                    skipped[str(image_path)] = (
                        f"{h}x{w} after scale={config['scale']:g} is smaller than the "
                        f"{crop}x{crop} crop"
                    )
                    continue
                label = root / f"{split}_label" / f"{image_path.stem}.png"
                files.append((str(image_path), str(label), (h, w)))
            label_map = tuple(int(v) for v in lut)
            reader = Reader(channels=3, mask_format="index", label_map=label_map, tolerance=0)
            examples = [(f, 0, 0) for f in range(len(files))]
            parts[part] = Part(files, examples, None, 1, None, reader, crop=crop, skipped=skipped)
        return parts, dict(num_classes=k, class_names=names)
    if name == "dubai":
        names, colours = dubai.classes(root)
        reader = Reader(mask_format="colour", colours=colours)
        parts = {}
        for part, tiles in (("train", config["train_tiles"]), ("eval", config["eval_tiles"])):
            pairs = []
            for t in tiles:
                for image_path in imageio.list_files(root / f"tile-{t}" / "images"):
                    pairs.append(
                        (image_path, image_path.parent.parent / "masks" / f"{image_path.stem}.png")
                    )
            parts[part] = tiled_part(pairs, reader, crop, d, vertical_flip=True)
        return parts, dict(num_classes=len(names), class_names=names)
    if name == "camvid":
        arguments.choice("classes", k, camvid.NUM_CLASSES)
        label_map = camvid.MERGE3 if k == 3 else tuple(range(11))
        reader = Reader(mask_format="index", label_map=label_map)
        parts = {}
        for part, split in (("train", "train"), ("eval", "val")):
            sequences = config.get("train_sequences" if part == "train" else "eval_sequences")
            frames = imageio.list_files(camvid.frames(root, split, sequences))
            pairs = [(f, root / "labels" / f"{f.stem}.png") for f in frames]
            parts[part] = tiled_part(pairs, reader, crop, d, False, whole=part == "eval")
        names = camvid.CLASSES3 if k == 3 else camvid.CLASSES11
        return parts, dict(num_classes=k, class_names=names)
    masks = config.get("masks_dir")
    colours = config.get("colours")
    if colours:
        colours = json.loads(Path(colours).read_text())
    reader = Reader(
        mask_format=("colour" if colours else "index") if masks else None,
        colours=colours,
        num_classes=k,
    )
    pairs = [(f, find_mask(masks, f) if masks else None) for f in imageio.list_files(root)]
    part = tiled_part(pairs, reader, crop, d, vertical_flip=False)
    return {"train": part}, dict(num_classes=k, class_names=tuple(str(c) for c in range(k)))


def _str(path):
    return None if path is None else str(path)


def _curation(config, split):
    """`cocostuff.curate`'s (stems, skipped), cached in the output folder: it reads every label."""
    key = f"{split}-{config['classes']}-{config['min_side']}-{config['min_target_share']}"
    cache = Path(config["output_dir"]) / f"curation-{key}.json"
    if cache.is_file():
        saved = json.loads(cache.read_text())
        return saved["stems"], saved["skipped"]
    stems, skipped = cocostuff.curate(
        config["data_dir"], split, config["classes"],
        min_side=config["min_side"], min_target_share=config["min_target_share"],
    )  # fmt: skip
    atomic.write_json(cache, {"stems": list(stems), "skipped": skipped})
    return list(stems), skipped


def write_shard(folder, name, part, chosen):
    """Writes one shard atomically (its sidecar first); returns its manifest entry.

    Args:
        folder: the output folder.
        name: the shard's file name.
        part: the `Part` (its files and examples are not used: see `chosen`).
        chosen: [((image path, mask path or None, scaled or None), top, left)] to write.
    """
    import tensorflow as tf

    adjusted, cached, serialized, bands = {}, (None, None), [], set()
    for source, top, left in chosen:
        if cached[0] != source:
            image, mask, note = part.reader.read(*source)
            if note:
                adjusted[source[0]] = note
            cached = (source, (image, mask))
        image, mask = cached[1]
        if part.window is not None:
            h, w = part.window
            image = imageio.downscale_mean(image[top : top + h, left : left + w], part.factor)
            if mask is not None:
                window = mask[top : top + h, left : left + w]
                padded = np.full((h, w), core.IGNORE, np.uint8)  # beyond a smaller mask
                padded[: window.shape[0], : window.shape[1]] = window
                mask = imageio.downscale_mode(padded, part.factor)
        bands.add(int(image.shape[-1]))
        serialized.append(records.serialize(image, mask, f"{source[0]}@{top},{left}"))
    if len(bands) > 1:
        raise ValueError(f"{name}: its sources have {sorted(bands)} bands; expected one count")

    def write(tmp):
        with tf.io.TFRecordWriter(tmp) as writer:
            for record in serialized:
                writer.write(record)

    entry = {
        "file": name,
        "examples": len(chosen),
        "labelled": sum(source[1] is not None for source, _, _ in chosen),
        "channels": bands.pop(),
        "adjusted": adjusted,
    }
    atomic.write_json(Path(folder) / f"{name}.json", entry)
    atomic.write(Path(folder) / name, write)
    return entry


def _key(shard):
    """(part, index) of a shard file name."""
    part, index, _, _ = shard.removesuffix(".tfrecord").split("-")
    return part, int(index)


def _write_job(job):
    return write_shard(*job)


def prepare(config, log=print):
    """Writes (or completes) the prepared folder the config describes; returns its manifest.

    Args:
        config: dataset, data_dir, output_dir, classes, crop, downsample, scale, min_side,
            min_target_share, train_tiles, eval_tiles, masks_dir, colours, shard_size, jobs.
        log: called with a line per shard written or found.
    """
    out = Path(config["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    shard_size = config["shard_size"]
    if not (isinstance(shard_size, int) and shard_size >= 1):
        raise ValueError(f"`shard_size` must be a positive int. Received: {shard_size!r}")
    parts, fields = plan(config)
    flags = {k: v for k, v in sorted(config.items()) if k not in ("output_dir", "jobs")}
    recorded = {
        "flags": flags,
        "parts": {
            name: {"examples": len(p.examples), "digest": p.digest()} for name, p in parts.items()
        },
    }
    plan_path = out / PLAN
    if plan_path.is_file() and json.loads(plan_path.read_text()) != json.loads(
        json.dumps(recorded)
    ):
        if (out / records.MANIFEST).is_file():
            raise ValueError(
                f"{out} holds a preparation with other flags or sources ({plan_path}): "
                "choose another --output_dir, or remove this one to start again"
            )
        # An unfinished preparation of other sources (one that failed on a bad file, since
        # removed) must not lock its own folder: its shards are dropped, the plan replaced.
        log(f"{out}: an unfinished preparation with other flags or sources; starting again")
        for leftover in [*out.glob("*.tfrecord"), *out.glob("*.tfrecord.json")]:
            leftover.unlink()
        plan_path.unlink()
    if not plan_path.is_file():
        atomic.write_json(plan_path, recorded)
    jobs, entries = [], {}
    for name, part in parts.items():
        count = max(1, -(-len(part.examples) // shard_size))
        for index in range(count):
            shard = out / records.shard_name(name, index, count)
            sidecar = out / f"{shard.name}.json"
            if shard.is_file() and sidecar.is_file():
                entries[(name, index)] = json.loads(sidecar.read_text())
                log(f"{shard.name}: already written")
            else:
                chosen = [
                    (part.files[f], top, left)
                    for f, top, left in part.examples[index * shard_size : (index + 1) * shard_size]
                ]
                light = dataclasses.replace(part, files=[], examples=[])
                jobs.append((str(out), shard.name, light, chosen))
    workers = max(1, int(config.get("jobs") or 1))
    if workers == 1:
        results = map(_write_job, jobs)
    else:  # spawned, not forked: TensorFlow's threads do not survive a fork
        context = multiprocessing.get_context("spawn")
        pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)
        results = pool.map(_write_job, jobs)
    start = time.time()
    for job, entry in zip(jobs, results):
        entries[_key(job[1])] = entry
        log(f"{entry['file']}: {entry['examples']} examples ({time.time() - start:.0f} s)")
    if workers > 1:
        pool.shutdown()
    manifest = {
        "format": records.FORMAT,
        "dataset": config["dataset"],
        "source": str(Path(config["data_dir"]).resolve()),
        "flags": flags,
        "channels": next(iter(entries.values()))["channels"],
        **{
            key: list(value) if isinstance(value, tuple) else value for key, value in fields.items()
        },
        "parts": {},
    }
    for name, part in parts.items():
        shards = [entries[key] for key in sorted(entries) if key[0] == name]
        for shard in shards:  # what records.load checks before training: a truncated copy
            shard["bytes"] = (out / shard["file"]).stat().st_size
        adjusted = {path: note for s in shards for path, note in s.pop("adjusted").items()}
        manifest["parts"][name] = {
            "examples": len(part.examples),
            "labelled": sum(s["labelled"] for s in shards),
            "shape": list(part.shape) if part.shape else None,
            "crop": part.crop,
            "vertical_flip": part.vertical_flip,
            "shards": shards,
            "skipped": part.skipped,
            "adjusted": adjusted,
        }
    atomic.write_json(out / records.MANIFEST, manifest)
    return manifest
