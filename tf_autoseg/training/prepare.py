"""Prepares a large dataset once: sharded TFRecord files and a manifest that training reads.

    python -m tf_autoseg.prepare --dataset=potsdam --data_dir=/data/potsdam \\
        --output_dir=/data/potsdam-prepared [--jobs=16]

then `python -m tf_autoseg.train ... --prepared_dir=/data/potsdam-prepared`. What it does once,
so that training only reads and decodes PNG records (`tf_autoseg.data.records`):

- potsdam: IIC's 400 px crops of the 4-band TIFFs (read with tifffile; TensorFlow cannot decode
  TIFF) shrunk to 200 px, labels by block majority; "train" is `potsdam.load`'s train split
  (unlabelled crops included), "eval" its seeded test split. Labels are kept as Potsdam-6 ids;
  the manifest lists the Potsdam-3 merge, chosen when training (`--num_classes=3`).
- cocostuff: IIC's curation (`cocostuff.curate`, which reads every label file once and is cached
  in the output folder), images scaled by 1/3 and kept whole: training draws its 128 px crops,
  evaluation takes the centre; "train" and "eval" are the train and val splits.
- dubai, camvid, folder: the tiles (`--tile`) the in-memory pipelines cut, after `--downsample`.
  "eval" holds dubai's `--eval_tiles` or camvid's val frames, whole.

The manifest (`manifest.json`) counts examples per part and shard, names the classes, and lists
the files skipped (with the reason) or converted. Preparing is resumable: each shard is written
under a temporary name and renamed when complete, and a rerun with the same flags skips the
shards already there (the flags and the example list are recorded in `plan.json` first; a rerun
with other flags or changed sources is refused). A bad file stops it, named, as in training.

Each dataset's module says what its parts are (`prepared_parts`, built from
`tf_autoseg.data.prepared`); this module writes them: the shard writer, the resumable run and
its flags.
"""

import concurrent.futures
import dataclasses
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
from tf_autoseg.training.config import upgrade

PLAN = "plan.json"


def plan(train, held_out, work_dir):
    """(parts, manifest fields) of the dataset of `train` and `held_out` (its two DataConfigs),
    from its `prepared` callable (`tf_autoseg.datasets.Dataset`): headers only (and, for
    cocostuff, the label files once, for the curation, cached in `work_dir`)."""
    dataset = datasets.get(train.dataset)
    if dataset.prepared is None:
        prepared = ", ".join(n for n in datasets.names() if datasets.get(n).prepared is not None)
        raise ValueError(
            f"`dataset` must be one of {prepared}. Received: dataset={train.dataset!r}"
        )
    return dataset.prepared(train, held_out, work_dir)


def write_shard(folder, name, part, chosen):
    """Writes one shard atomically (its sidecar first); returns its manifest entry.

    Args:
        folder: the output folder.
        name: the shard's file name.
        part: the `tf_autoseg.data.prepared.Part` (its files and examples are not used: see
            `chosen`).
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


def recorded_flags(train, held_out, shard_size):
    """What identifies a preparation (plan.json, the manifest): the flags of `python -m
    tf_autoseg.prepare` that made it, by name, as every preparation recorded them."""
    return dict(sorted({
        "dataset": train.dataset, "data_dir": train.data_dir, "num_classes": train.num_classes,
        "tile": train.tile, "downsample": train.downsample, "min_side": train.min_side,
        "min_target_share": train.min_target_share, "masks_dir": train.masks_dir,
        "colours": train.colours, "scale": train.scale, "shard_size": shard_size,
        "train_tiles": list(train.tiles), "eval_tiles": list(held_out.tiles),
        "train_sequences": list(train.sequences), "eval_sequences": list(held_out.sequences),
    }.items()))  # fmt: skip


def _read_plan(path):
    """A plan.json, its flags under today's names (a plan of before `--classes` was
    `--num_classes` is the same plan)."""
    plan = json.loads(path.read_text())
    plan["flags"] = upgrade(plan.get("flags", {}))
    return plan


def _key(shard):
    """(part, index) of a shard file name."""
    part, index, _, _ = shard.removesuffix(".tfrecord").split("-")
    return part, int(index)


def _write_job(job):
    return write_shard(*job)


def prepare(train, held_out, output_dir, *, shard_size=512, jobs=1, log=print):
    """Writes (or completes) the prepared folder of a dataset's parts; returns its manifest.

    Args:
        train, held_out: the `tf_autoseg.datasets.DataConfig` of the "train" and "eval" parts.
        output_dir: the folder of the shards and the manifest.
        shard_size: examples per shard file.
        jobs: shards written at once, in separate processes (>= 1).
        log: called with a line per shard written or found.
    """
    arguments.integer("shard_size", shard_size)
    workers = arguments.integer("jobs", jobs)  # 0 or -3 wrote with one process, silently
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts, fields = plan(train, held_out, out)
    flags = recorded_flags(train, held_out, shard_size)
    recorded = {
        "flags": flags,
        "parts": {
            name: {"examples": len(p.examples), "digest": p.digest()} for name, p in parts.items()
        },
    }
    plan_path = out / PLAN
    if plan_path.is_file() and _read_plan(plan_path) != json.loads(json.dumps(recorded)):
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
    pending, entries = [], {}
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
                pending.append((str(out), shard.name, light, chosen))
    if workers == 1:
        results = map(_write_job, pending)
    else:  # spawned, not forked: TensorFlow's threads do not survive a fork
        context = multiprocessing.get_context("spawn")
        pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)
        results = pool.map(_write_job, pending)
    start = time.time()
    for job, entry in zip(pending, results):
        entries[_key(job[1])] = entry
        log(f"{entry['file']}: {entry['examples']} examples ({time.time() - start:.0f} s)")
    if workers > 1:
        pool.shutdown()
    manifest = {
        "format": records.FORMAT,
        "dataset": train.dataset,
        "source": str(Path(train.data_dir).resolve()),
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
