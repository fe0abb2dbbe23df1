"""Which input path a training run reads: in memory, streamed from files, or prepared records.

`pipeline_for(config, part, labels, start_batch)` is what `tf_autoseg.training.experiment.pipeline`
asks first; None means the in-memory pipelines (`tf_autoseg.data.core` and its neighbours). The
flags (in the config dict of `tf_autoseg.train`):

- `--prepared_dir`: a folder written by `python -m tf_autoseg.prepare`: every part is read
  from its records (`tf_autoseg.data.records`).
- `--pipeline=auto|memory|stream`: the unlabelled training part of folder, dubai, camvid and
  Potsdam crops is streamed (`tf_autoseg.data.stream`, the same batches as in memory) with
  "stream", or with "auto" when its decoded pixels would pass `MEMORY_LIMIT` bytes or go to
  tf.data service. Labelled parts (evaluation) stay in memory: they are read once, in order.
  COCO-Stuff and Potsdam's raw TIFFs stream only once prepared.
- `--data_service=grpc://host:port`: the training part runs on tf.data service
  (`tf_autoseg.data_service`).

Under MultiWorkerMirroredStrategy (TF_CONFIG) each worker reads its own share: examples k with
k mod workers = its index when streamed, whole shard files when prepared; together the workers
read, step by step, the batches a single trainer would.
"""

import concurrent.futures
import json
import os

from tf_autoseg import arguments
from tf_autoseg import datasets
from tf_autoseg.data import images as imageio
from tf_autoseg.data import records
from tf_autoseg.data import service as data_service
from tf_autoseg.modeling import transforms

PIPELINES = ("auto", "memory", "stream")
# "auto" keeps a training set in memory up to this many decoded bytes (it is then also the
# size of the serialized dataset graph, which must stay well below protobuf's 2 GB).
MEMORY_LIMIT = 1 << 30


def validate(config):
    """Checks the input flags; raises a ValueError naming the flag."""
    choice = config.get("pipeline", "auto")
    arguments.choice("pipeline", choice, PIPELINES)
    prepared = config.get("prepared_dir")
    service = config.get("data_service")
    if service:
        data_service.check_address(service)
        if choice == "memory" and not prepared:
            raise ValueError(
                "--data_service needs --pipeline=stream or auto (or --prepared_dir): an "
                "in-memory pipeline ships every pixel to the dispatcher in its graph"
            )
    if prepared:
        records.read_manifest(prepared)
    if choice == "stream" and not prepared and not datasets.get(config["dataset"]).streams:
        raise ValueError(
            f"--pipeline=stream: {config['dataset']} streams once prepared; run "
            f"`python -m tf_autoseg.prepare --dataset={config['dataset']} "
            f"--data_dir={config.get('data_dir')} --output_dir=<folder>` and pass "
            "--prepared_dir=<folder>"
        )


def worker_split(config):
    """(workers, this worker's index) of a MultiWorkerMirroredStrategy run, from TF_CONFIG."""
    if config.get("distribution", "auto") not in ("auto", "multiworker"):
        return 1, 0
    cluster_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    cluster, task = cluster_config.get("cluster", {}), cluster_config.get("task", {})
    chiefs, workers = len(cluster.get("chief", [])), len(cluster.get("worker", []))
    if chiefs + workers <= 1:
        return 1, 0
    index = 0 if task.get("type") == "chief" else chiefs + int(task.get("index", 0))
    return chiefs + workers, index


def pipeline_for(config, part, labels, start_batch=0):
    """The (dataset, info) of one part when it is not read in memory; else None.

    Args:
        config: the run's flag dict.
        part: "train" or "eval".
        labels: the labelled view (evaluation) or images only (training).
        start_batch: batches already trained on (a resumed run): the training part starts
            after them, reading none of them.

    Returns:
        (dataset, DatasetInfo), or None for the in-memory path.
    """
    validate(config)
    training = part == "train" and not labels
    batch_size = config["batch_size"]
    service = config.get("data_service") if training else None
    workers, worker = (1, 0) if (service or not training) else worker_split(config)
    if batch_size % workers:
        raise ValueError(
            f"--batch_size={batch_size} must divide evenly between the {workers} workers"
        )
    common = dict(batch_size=batch_size, seed=config["seed"], shuffle=training, repeat=training,
                  augment=training, drop_remainder=training)  # fmt: skip
    split = dict(start=start_batch * batch_size if training else 0, num_workers=workers,
                 worker=worker)  # fmt: skip
    if config.get("prepared_dir"):
        num_classes = config["num_classes"]
        if (
            labels
            and not records.info(config["prepared_dir"], part, True, num_classes).num_examples
        ):
            return None  # no labels were prepared (a folder without masks has none)
        dataset, info = records.load(
            config["prepared_dir"], part, labels=labels, num_classes=num_classes, **common, **split
        )
    elif not training or config.get("pipeline", "auto") == "memory":
        return None
    else:
        built = _streamed(
            config, common, split, force=config.get("pipeline") == "stream" or service
        )
        if built is None and service:
            raise ValueError(
                f"--data_service: {config['dataset']} in {config['data_dir']} streams only once "
                "prepared (COCO-Stuff, Potsdam's TIFFs; synthetic: never): run `python -m "
                "tf_autoseg.prepare` and pass --prepared_dir"
            )
        if built is None:
            return None
        dataset, info = built
    dataset = for_workers(config, dataset, training)
    if service:
        job = os.path.basename(os.path.normpath(config.get("run_dir") or "tf_autoseg"))
        dataset = data_service.distribute(dataset, service, job_name=job)
    return dataset, info


def for_workers(config, dataset, training):
    """The training part as fit needs it under MultiWorkerMirroredStrategy (else as it is).

    Keras 3's fit all-reduces the first batch to build the model there
    (Trainer._maybe_symbolic_build), and collective ops refuse uint8: the batches go as
    float32 in [0, 1], exactly what the model makes of uint8. Every input path calls this.
    """
    if training and worker_split(config)[0] > 1:
        return dataset.map(transforms.to_float_images, deterministic=True)
    return dataset


def _streamed(config, common, split, force):
    """The streamed training part, or None when "auto" finds it small enough for memory."""
    dataset = datasets.get(config["dataset"])
    if not dataset.streams:
        return None

    def small(sources, downsample=1, shrink=1):
        return not force and _decoded_bytes(sources, downsample) // shrink <= MEMORY_LIMIT

    return dataset.hooks().streamed_part(config, common, split, small)


def _decoded_bytes(sources, downsample=1, channels=3):
    """Bytes the decoded images would take in memory, from their headers (read in threads)."""
    paths = imageio.list_files(sources)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        sizes = list(pool.map(imageio.image_size, paths))
    return sum(h * w for h, w in sizes) * channels // downsample**2
