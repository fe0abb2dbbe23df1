"""The datasets the programs take by name: `Dataset` (a name and the callables that read it),
`register`, `get`, `names` (detectron2's `DatasetCatalog.register(name, func)`, no module paths).

Each dataset module builds its own `Dataset` (`tf_autoseg.datasets.dubai.DATASET`, ...);
`tf_autoseg.datasets` registers the built-in ones. A package registers its datasets for the
command line with an entry point in the group `tf_autoseg.datasets` naming a module that calls
`register` when imported. No TensorFlow: the programs check their flags before it loads.
"""

import dataclasses
from collections.abc import Callable
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset as the programs know it; its module holds the rest.

    Every callable takes a `tf_autoseg.datasets.config.DataConfig` (`data`) and reads the
    fields it needs.

    Attributes:
        name: the `dataset` value (`--dataset`).
        read: `read(data, labels, options)`: the in-memory `(tf.data.Dataset, DatasetInfo)` of
            `data.part`, labelled (evaluation) or images only (training), with `options` the
            `tf_autoseg.data.core.PipelineOptions` keywords; None when the part does not exist
            (a folder's labels without `masks_dir`).
        num_classes: the `num_classes` it accepts (the first is `prepare`'s default), or None
            for any from 2.
        files: whether it reads files (`data_dir`); synthetic scenes are generated.
        held_out: whether it has an evaluation part of its own; without one, evaluation reads
            the training part with its labels (`eval_mode="same"` only).
        downsample: whether `downsample` applies.
        streamed: `streamed(data, options, split, small)`: the training part streamed
            (`split`: `start`, `num_workers`, `worker` of `tf_autoseg.data.stream.folder`), or
            None to keep it in memory; `small(sources, downsample=1, shrink=1)` says whether the
            decoded images of `sources` fit the in-memory limit. None: it streams only once
            prepared.
        prepared: `prepared(train, eval, work_dir)`: the (parts, manifest fields) that
            `python -m tf_autoseg.prepare` writes, built from `tf_autoseg.data.prepared`
            (`work_dir` may hold what the preparation caches). None: it cannot be prepared.
        checks: `checks(data)`: the dataset's own checks of its arguments, before TensorFlow
            loads (a ValueError naming the argument), beyond those of `check`.
    """

    name: str
    read: Callable
    num_classes: tuple | None = None
    files: bool = True
    held_out: bool = True
    downsample: bool = False
    streamed: Callable | None = None
    prepared: Callable | None = None
    checks: Callable | None = None

    def __post_init__(self):
        for name in ("read", "streamed", "prepared", "checks"):
            value = getattr(self, name)
            if not (callable(value) or (value is None and name != "read")):
                raise ValueError(f"`{name}` must be a callable. Received: {name}={value!r}")

    def check(self, data):
        """Checks `data` (a DataConfig) against this dataset before any file is read."""
        if self.files:
            # Prepared records hold everything training reads: then `data_dir` is optional.
            if not data.data_dir and not data.prepared_dir:
                raise ValueError(
                    f"`data_dir` is required for dataset={self.name!r} (or a `prepared_dir`)."
                )
            if data.data_dir and not Path(data.data_dir).is_dir():
                raise ValueError(
                    f"`data_dir` is no directory. Received: data_dir={data.data_dir!r}"
                )
        if self.num_classes is not None and data.num_classes not in self.num_classes:
            raise ValueError(
                f"`num_classes` must be one of {self.num_classes} for dataset={self.name!r}. "
                f"Received: num_classes={data.num_classes!r}"
            )
        if data.downsample > 1 and not self.downsample:
            shrinks = ", ".join(name for name in names() if get(name).downsample)
            raise ValueError(
                f"`downsample` applies to {shrinks}, not {self.name}. "
                f"Received: downsample={data.downsample}"
            )
        if data.prepared_dir and not (Path(data.prepared_dir) / "manifest.json").is_file():
            raise ValueError(
                "`prepared_dir` holds no manifest.json: write one with python -m "
                f"tf_autoseg.prepare. Received: prepared_dir={data.prepared_dir!r}"
            )
        if data.pipeline == "stream" and not data.prepared_dir and self.streamed is None:
            raise ValueError(
                f"pipeline='stream': {self.name} streams once prepared; run `python -m "
                f"tf_autoseg.prepare --dataset={self.name} --data_dir={data.data_dir} "
                "--output_dir=<folder>` and pass --prepared_dir=<folder>"
            )
        if self.checks is not None:
            self.checks(data)


_REGISTRY = {}
_DISCOVERED = []


def register(dataset):
    """Adds `dataset` (a `Dataset`) under its name, replacing one of the same name."""
    if not isinstance(dataset, Dataset):
        raise ValueError(f"`dataset` must be a Dataset. Received: {dataset!r}")
    _REGISTRY[dataset.name] = dataset
    return dataset


def _discover():
    """Imports the modules that packages list in the `tf_autoseg.datasets` entry points."""
    if _DISCOVERED:
        return
    _DISCOVERED.append(True)
    from importlib import metadata

    for entry in metadata.entry_points(group="tf_autoseg.datasets"):
        entry.load()


def names():
    """The registered dataset names, built-in ones first."""
    _discover()
    return tuple(_REGISTRY)


def get(name):
    """The `Dataset` registered as `name`; a ValueError listing the names otherwise."""
    _discover()
    if name not in _REGISTRY:
        raise ValueError(f"`dataset` must be one of {names()}. Received: dataset={name!r}")
    return _REGISTRY[name]
