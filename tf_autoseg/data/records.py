"""Prepared datasets: sharded TFRecord files and their manifest, written by `tf_autoseg.prepare`.

A prepared folder holds `manifest.json` and, per part ("train", "eval"), shards
`<part>-00000-of-00042.tfrecord` of `tf.train.Example`s: `image` (PNG, 3 or 4 bands),
`label` (PNG of class ids, 255 = ignore; absent when the source had none), `has_label`, and
`source` (the file and corner the example was cut from). `load` reads one part as a batched
dataset: the same for the same seed, resumable at any step without decoding what it skips, and
split between MultiWorkerMirroredStrategy workers by shard file.

Order: records are read in sequence, so the order is not the in-memory pipeline's. Epoch e
reads the shards in an order drawn from (seed, -1 - e), and shuffles each run of `window`
consecutive examples with keys drawn from (seed, e, run); the crop and flips of the example at
position i of epoch e come from (seed, e * N + i) (`tf_autoseg.data.shuffling`).
"""

import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from tf_autoseg.data import core
from tf_autoseg.data import shuffling

MANIFEST = "manifest.json"
FORMAT = "tf_autoseg.prepared/1"
PARTS = ("train", "eval")
_FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "has_label": tf.io.FixedLenFeature([], tf.int64, default_value=0),
}


def shard_name(part, index, count):
    return f"{part}-{index:05d}-of-{count:05d}.tfrecord"


def serialize(image, label=None, source=""):
    """One example as bytes: uint8 (H, W, C) image, optional uint8 (H, W) label."""
    feature = {
        "image": _bytes(tf.io.encode_png(image).numpy()),
        "has_label": tf.train.Feature(
            int64_list=tf.train.Int64List(value=[int(label is not None)])
        ),
        "source": _bytes(str(source).encode()),
    }
    if label is not None:
        feature["label"] = _bytes(tf.io.encode_png(label[..., None]).numpy())
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _bytes(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def read_manifest(folder):
    """The manifest of a prepared folder, checked; a ValueError names what is wrong."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{path}: not a prepared dataset ({error}); write one with "
            "`python -m tf_autoseg.prepare`"
        ) from error
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    for part in manifest["parts"].values():
        for shard in part["shards"]:
            if not (Path(folder) / shard["file"]).is_file():
                raise ValueError(f"{path} lists {shard['file']}, which is missing")
    return manifest


def check_part(folder, part="train"):
    """Checks what can be checked cheaply before training; a ValueError names the file.

    The manifest's counts add up; each shard has the size the manifest recorded (a truncated
    or replaced copy does not); the first record of each shard decodes to the manifest's
    channels and, where the part has one, its shape.
    """
    manifest = read_manifest(folder)
    entry = _part(manifest, folder, part)
    path = Path(folder) / MANIFEST
    for key in ("examples", "labelled"):
        total = sum(int(s.get(key, 0)) for s in entry["shards"])
        if key in entry and int(entry[key]) != total:
            raise ValueError(
                f"{path}: the {part} part says {entry[key]} {key}, its shards {total}: the "
                "manifest was edited or mixed with another; prepare the folder again"
            )
    for shard in entry["shards"]:
        file = Path(folder) / shard["file"]
        if "bytes" in shard and file.stat().st_size != shard["bytes"]:
            raise ValueError(
                f"{file}: {file.stat().st_size} bytes, {path} recorded {shard['bytes']} "
                "(truncated or replaced); prepare the folder again"
            )
        try:
            record = next(iter(tf.data.TFRecordDataset(str(file)).take(1)), None)
            if record is None:
                raise ValueError(f"{file}: no record, the manifest lists {shard['examples']}")
            parsed = tf.io.parse_single_example(record, _FEATURES)
            image = tf.io.decode_png(parsed["image"])
        except tf.errors.OpError as error:
            raise ValueError(f"{file}: unreadable record ({error.message})") from None
        if image.shape[-1] != manifest["channels"]:
            raise ValueError(
                f"{file}: images of {image.shape[-1]} channels, {path} says {manifest['channels']}"
            )
        if entry.get("shape") and list(image.shape[:2]) != list(entry["shape"])[:2]:
            raise ValueError(
                f"{file}: images of {image.shape[0]}x{image.shape[1]}, {path} says "
                f"{entry['shape'][0]}x{entry['shape'][1]}"
            )


def damaged_shard(folder):
    """(path, reason) of the first shard of a prepared folder whose records fail to read (a
    CRC mismatch: damaged after it was written, its header intact), or None.

    Reads every record of every shard: called once a run has met a `DataLossError`, whose
    message gives an offset but no file.
    """
    manifest = read_manifest(folder)
    for part in manifest["parts"].values():
        for shard in part["shards"]:
            path = Path(folder) / shard["file"]
            try:
                for _ in tf.data.TFRecordDataset(str(path)):
                    pass
            except tf.errors.OpError as error:
                return path, error.message.split(" [Op:", 1)[0].split("}} ")[-1].strip()
    return None


def info(folder, part="train", labels=False, num_classes=None):
    """The `DatasetInfo` of one part of a prepared folder."""
    manifest = read_manifest(folder)
    entry = _part(manifest, folder, part)
    num_classes, names, _ = _classes(manifest, num_classes)
    count = sum(s["labelled" if labels else "examples"] for s in entry["shards"])
    return core.DatasetInfo(
        num_classes=num_classes,
        channels=manifest["channels"],
        class_names=tuple(names),
        num_examples=count,
        skipped=dict(entry.get("skipped", {})),
        adjusted=dict(entry.get("adjusted", {})),
    )


def _part(manifest, folder, part):
    if part not in manifest["parts"]:
        raise ValueError(
            f"{folder} has no part {part!r}; it holds {sorted(manifest['parts'])}. "
            "Received: part={part!r}"
        )
    return manifest["parts"][part]


def _classes(manifest, num_classes):
    """(num_classes, names, lut): the manifest's classes, or a merge it lists (Potsdam-3)."""
    lut = np.arange(256, dtype=np.uint8)
    if num_classes is None or num_classes == manifest["num_classes"]:
        return manifest["num_classes"], manifest["class_names"], lut
    merges = manifest.get("merges", {})
    if str(num_classes) not in merges:
        raise ValueError(
            f"`num_classes`={num_classes}: the prepared labels have {manifest['num_classes']} classes "
            f"and list merges to {sorted(merges) or 'none'}"
        )
    merge = merges[str(num_classes)]
    lut = core.label_lut(merge["map"])
    return num_classes, merge["class_names"], lut


def load(
    folder,
    part="train",
    *,
    labels=False,
    num_classes=None,
    crop=None,
    window=1024,
    start=0,
    num_workers=1,
    worker=0,
    **options,
):
    """One part of a prepared folder as a batched dataset, and its `DatasetInfo`.

    Args:
        folder: written by `python -m tf_autoseg.prepare`.
        part: "train" or "eval".
        labels: yield (images, labels), reading only examples that have labels.
        num_classes: the manifest's classes (None) or a merge it lists (Potsdam 6 -> 3).
        crop: the side of square crops, for parts of several image sizes (COCO-Stuff): drawn
            at random with `augment`, else centred. Default: the manifest's.
        window: consecutive examples shuffled together.
        start: leave out the first `start` examples of the whole stream (steps done x batch
            size), reading but not decoding the records of at most one shard.
        num_workers, worker: this worker's shards only (shard i goes to worker i mod
            num_workers); `start` is then split evenly between the workers.
        **options: the keywords of `tf_autoseg.data.core.PipelineOptions`; flips follow the
            manifest (up-down as well for overhead imagery).

    Returns:
        (dataset, info).
    """
    options = core.PipelineOptions(**options)
    batch_size, repeat, drop_remainder = options.batch_size, options.repeat, options.drop_remainder
    check_part(folder, part)
    manifest = read_manifest(folder)
    entry = _part(manifest, folder, part)
    shards = entry["shards"][worker::num_workers]
    if num_workers > 1 and (len(entry["shards"]) < num_workers or not repeat):
        raise ValueError(
            f"{folder}: {len(entry['shards'])} {part} shard(s) for num_workers={num_workers}: "
            "each worker needs a shard of its own, and repeat=True (prepare with a smaller "
            "--shard_size)"
        )
    count_key = "labelled" if labels else "examples"
    counts = np.array([s[count_key] for s in shards], np.int64)
    n = int(counts.sum())
    if n == 0:
        raise ValueError(f"{folder}: no {part} examples{' with labels' if labels else ''}")
    try:
        core.check_batch_size(n, options)
    except ValueError as error:
        raise ValueError(f"{folder} ({part}): {error}") from None
    num_classes, names, lut = _classes(manifest, num_classes)
    crop = crop or entry.get("crop")
    shape = entry.get("shape")
    if shape is None and not crop:
        raise ValueError(f"{folder}: the {part} images differ in size: pass `crop`")
    channels = manifest["channels"]
    start = int(start) // num_workers
    files = tf.constant([str(Path(folder) / s["file"]) for s in shards])
    counts_t = tf.constant(counts)
    seed_t = tf.constant(options.seed, tf.int64)
    lut_t = tf.constant(lut)
    first_epoch, offset = divmod(start, n)
    if not repeat and first_epoch:
        raise ValueError(f"start={start} is past the single epoch of {n} examples")
    window = max(1, min(int(window), n)) if options.shuffle else 1
    window_start = offset // window * window

    def epoch_records(epoch):
        order = shuffling.epoch_order(len(shards), seed_t, epoch, options.shuffle)
        begin = tf.where(epoch == first_epoch, tf.constant(window_start, tf.int64), 0)
        sizes = tf.gather(counts_t, order)
        ends = tf.cumsum(sizes)
        whole = tf.reduce_sum(tf.cast(ends <= begin, tf.int64))  # shards read before `begin`
        done = tf.concat([[0], ends], 0)[whole]
        records = tf.data.Dataset.from_tensor_slices(tf.gather(files, order[whole:]))
        records = records.flat_map(tf.data.TFRecordDataset)
        if labels:
            records = records.filter(
                lambda r: (
                    tf.io.parse_single_example(r, {"has_label": _FEATURES["has_label"]})[
                        "has_label"
                    ]
                    > 0
                )
            )
        records = records.skip(begin - done).batch(window)
        first_run = begin // window
        runs = tf.data.Dataset.range(first_run, tf.int64.max)

        def shuffled(run, batch):
            if not options.shuffle:
                return batch
            run_seed = tf.random.experimental.stateless_fold_in(tf.stack([seed_t, epoch]), run)
            keys = tf.random.stateless_uniform(tf.shape(batch)[:1], run_seed)
            return tf.gather(batch, tf.argsort(keys, stable=True))

        records = tf.data.Dataset.zip((runs, records)).map(shuffled).unbatch()
        positions = tf.data.Dataset.range(begin, n)
        pairs = tf.data.Dataset.zip((tf.data.Dataset.from_tensors(epoch).repeat(), positions))
        stream = tf.data.Dataset.zip((pairs, records))
        skip = tf.where(epoch == first_epoch, tf.constant(offset, tf.int64) - begin, 0)
        return stream.skip(skip)

    def example(pair, record):
        epoch, position = pair
        parsed = tf.io.parse_single_example(record, _FEATURES)
        x = tf.io.decode_png(parsed["image"], channels)
        if labels:
            y = tf.gather(lut_t, tf.cast(tf.io.decode_png(parsed["label"], 1), tf.int32))
            x = tf.concat([x, y], -1)
        side = (crop, crop) if shape is None else tuple(shape)
        return shuffling.example_step(
            x,
            shuffling.example_draws(seed_t, n, epoch, position),
            (*side, channels + int(labels)),
            crop=crop if shape is None else None,
            centred=not options.augment,
            augment=options.augment,
            vertical_flip=entry.get("vertical_flip", False),
            channels=channels if labels else None,
        )

    last_epoch = 2**62 if repeat else 1
    dataset = tf.data.Dataset.range(first_epoch, last_epoch).flat_map(epoch_records)
    dataset = dataset.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    distribute = tf.data.Options()
    # Each worker reads its own shard files (above); tf.distribute must not split them again.
    distribute.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    dataset = shuffling.batched(
        dataset.with_options(distribute),
        n,
        batch_size,
        drop_remainder,
        repeat,
        start,
    )
    return dataset, info(folder, part, labels, num_classes)
