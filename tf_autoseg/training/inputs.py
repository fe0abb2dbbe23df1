"""The one input builder: a part of a dataset (a `DataConfig`) in memory, streamed from its
files, from prepared records, or through tf.data service.

`build(data, labels)` chooses, from the part's own fields:

- `prepared_dir`: a folder written by `python -m tf_autoseg.prepare`: the part is read from
  its records (`tf_autoseg.data.records`); labels that were not prepared (a folder prepared
  without masks) are read in memory.
- `pipeline="auto"|"memory"|"stream"`: the training part (images only) of a dataset that
  streams (folder, dubai, camvid, Potsdam crops) is streamed (`tf_autoseg.data.stream`, the
  same batches as in memory) with "stream", or with "auto" when its decoded pixels would pass
  `MEMORY_LIMIT` bytes or go to tf.data service. Labelled parts (evaluation) stay in memory:
  they are read once, in order. COCO-Stuff and Potsdam's raw TIFFs stream only once prepared.
- `data_service="grpc://host:port"`: the training part runs on tf.data service
  (`tf_autoseg.data_service`).

Under MultiWorkerMirroredStrategy (TF_CONFIG) each worker reads its own share of the training
part: examples k with k mod workers = its index when streamed, whole shard files when prepared;
together the workers read, step by step, the batches a single trainer would.
"""

import concurrent.futures
import json
import os

from tf_autoseg import datasets
from tf_autoseg.data import images as imageio
from tf_autoseg.data import records
from tf_autoseg.data import service as data_service
from tf_autoseg.modeling import transforms

# "auto" keeps a training set in memory up to this many decoded bytes (it is then also the
# size of the serialized dataset graph, which must stay well below protobuf's 2 GB).
MEMORY_LIMIT = 1 << 30


def worker_split(distribution):
    """(workers, this worker's index) of a MultiWorkerMirroredStrategy run, from TF_CONFIG;
    (1, 0) unless `distribution` is "auto" or "multiworker"."""
    if distribution not in ("auto", "multiworker"):
        return 1, 0
    cluster_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    cluster, task = cluster_config.get("cluster", {}), cluster_config.get("task", {})
    chiefs, workers = len(cluster.get("chief", [])), len(cluster.get("worker", []))
    if chiefs + workers <= 1:
        return 1, 0
    index = 0 if task.get("type") == "chief" else chiefs + int(task.get("index", 0))
    return chiefs + workers, index


def build(data, labels=False, *, start_batch=0, workers=(1, 0), job_name="tf_autoseg"):
    """The (dataset, DatasetInfo) of the part `data` describes, or None when it does not exist
    (a folder's labels without masks).

    Args:
        data: a `tf_autoseg.datasets.DataConfig`.
        labels: the labelled view, read once in order at full resolution (evaluation), or the
            images only (training): repeated, shuffled, flipped and shrunk by `downsample`.
        start_batch: batches already trained on (a resumed run): the training part starts
            after them, reading none of them.
        workers: (workers, this worker's index) that share the training part (`worker_split`).
        job_name: the tf.data service job of the training part (the run folder's name).
    """
    dataset = datasets.get(data.dataset)
    training = not labels
    service = data.data_service if training else None
    if labels:  # scored at its own resolution: the model shrinks what it segments itself
        data = data.replace(downsample=1)
    count, index = workers if training and not service else (1, 0)
    if data.batch_size % count:
        raise ValueError(
            f"--batch_size={data.batch_size} must divide evenly between the {count} workers"
        )
    # Evaluation sets keep their last, partial batch: every labelled pixel counts.
    options = dict(batch_size=data.batch_size, seed=data.seed, shuffle=training, repeat=training,
                   augment=training, drop_remainder=training)  # fmt: skip
    split = dict(start=start_batch * data.batch_size if training else 0, num_workers=count,
                 worker=index)  # fmt: skip
    built = None
    # Labels that were not prepared (a folder prepared without masks) are read in memory.
    prepared = data.prepared_dir and (
        not labels
        or records.info(data.prepared_dir, data.part, True, data.num_classes).num_examples
    )
    if prepared:
        built = records.load(data.prepared_dir, data.part, labels=labels,
                             num_classes=data.num_classes, **options, **split)  # fmt: skip
    elif training and data.pipeline != "memory":
        built = _streamed(dataset, data, options, split, force=data.pipeline == "stream" or service)
        if built is None and service:
            raise ValueError(
                f"--data_service: {data.dataset} in {data.data_dir} streams only once prepared "
                "(COCO-Stuff, Potsdam's TIFFs; synthetic: never): run `python -m "
                "tf_autoseg.prepare` and pass --prepared_dir"
            )
    if built is None:
        built = dataset.read(data, labels, options)
        if built is None:
            return None
        if start_batch and training:
            built = (built[0].skip(start_batch), built[1])
    examples, info = built
    if training and workers[0] > 1:
        # Keras 3's fit all-reduces the first batch to build the model there
        # (Trainer._maybe_symbolic_build), and collective ops refuse uint8: the batches go as
        # float32 in [0, 1], exactly what the model makes of uint8.
        examples = examples.map(transforms.to_float_images, deterministic=True)
    if service:
        examples = data_service.distribute(examples, service, job_name=job_name)
    return examples, info


def _streamed(dataset, data, options, split, force):
    """The streamed training part, or None when "auto" finds it small enough for memory (or
    the dataset streams only once prepared)."""
    if dataset.streamed is None:
        return None

    def small(sources, downsample=1, shrink=1):
        return not force and _decoded_bytes(sources, downsample) // shrink <= MEMORY_LIMIT

    return dataset.streamed(data, options, split, small)


def _decoded_bytes(sources, downsample=1, channels=3):
    """Bytes the decoded images would take in memory, from their headers (read in threads)."""
    paths = imageio.list_files(sources)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        sizes = list(pool.map(imageio.image_size, paths))
    return sum(h * w for h, w in sizes) * channels // downsample**2
