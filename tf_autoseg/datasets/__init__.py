"""One module per dataset (synthetic, folder, dubai, camvid, potsdam, cocostuff): each owns
how its files are found, read, labelled and cut, in memory and streamed.

The programs know a dataset only through its `Dataset` entry here: `register` adds one (a
module of the user's own: see `Dataset`), `get(name)` finds it, `names()` lists them. A
package can register its datasets for the command line with an entry point in the group
`tf_autoseg.datasets` naming a module that calls `register` when imported.
"""

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Dataset:
    """What the programs need to know of a dataset; its module holds the rest.

    Attributes:
        name: the `--dataset` value.
        module: the importable module holding the dataset's hooks (imported on first use;
            its `NUM_CLASSES`, if any, are the `--num_classes` it accepts):
            `training_part(config, part, labels, common, downsample)`: the in-memory
            `(dataset, DatasetInfo)` of `part` ("train" or "eval"; labelled when `labels`),
            with `common` the `tf_autoseg.data.core.PipelineOptions` keywords and
            `downsample` the shrink factor to apply (1 for labelled parts), or None when the
            part does not exist (a folder's labels without masks); and, when `streams`,
            `streamed_part(config, common, split, small)`: the streamed training part, or
            None to keep it in memory; `small(sources, downsample=1, shrink=1)` says whether
            the decoded images of `sources` fit the in-memory limit.
            With `prepared`, `prepared_parts(config)`: the (parts, manifest fields) that
            `python -m tf_autoseg.prepare` writes, built from `tf_autoseg.data.prepared`.
            `NUM_CLASSES`' first entry is `prepare`'s default `--num_classes`.
        files: whether it reads files (`--data_dir`); synthetic scenes are generated.
        held_out: whether it has an evaluation split of its own; without one, evaluation
            reads the training images with their labels (`--eval_mode=same` only).
        downsample: whether `--downsample` applies.
        streams: whether `streamed_part` exists (`--pipeline=stream`).
        prepared: whether `prepared_parts` exists (`python -m tf_autoseg.prepare`).
    """

    name: str
    module: str
    files: bool = True
    held_out: bool = True
    downsample: bool = False
    streams: bool = False
    prepared: bool = False

    def hooks(self):
        """The dataset's module, imported (dataset modules import no TensorFlow)."""
        return importlib.import_module(self.module)

    def classes(self):
        """The `--num_classes` the module accepts (its `NUM_CLASSES`), or None for any from 2."""
        return getattr(self.hooks(), "NUM_CLASSES", None)


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


_HERE = __name__
for _dataset in (
    Dataset("synthetic", f"{_HERE}.synthetic", files=False),
    Dataset("potsdam", f"{_HERE}.potsdam", streams=True, prepared=True),
    Dataset("cocostuff", f"{_HERE}.cocostuff", prepared=True),
    Dataset("folder", f"{_HERE}.folder", held_out=False, downsample=True, streams=True,
            prepared=True),
    Dataset("dubai", f"{_HERE}.dubai", downsample=True, streams=True, prepared=True),
    Dataset("camvid", f"{_HERE}.camvid", downsample=True, streams=True, prepared=True),
):  # fmt: skip
    register(_dataset)

# The built-in datasets the programs take by name (`--dataset`), and those `prepare` writes.
NAMES = tuple(_REGISTRY)
PREPARED = tuple(name for name, dataset in _REGISTRY.items() if dataset.prepared)
