"""One module per dataset (synthetic, folder, dubai, camvid, potsdam, cocostuff): each owns
how its files are found, read, labelled and cut, in memory and streamed, and its `DATASET`.

The programs know a dataset only through its `Dataset` (`tf_autoseg.datasets.catalog`):
`register` adds one (a module of the user's own: see `Dataset`), `get(name)` finds it,
`names()` lists them. Importing this package registers the built-in ones.
"""

from tf_autoseg.datasets import camvid
from tf_autoseg.datasets import cocostuff
from tf_autoseg.datasets import dubai
from tf_autoseg.datasets import folder
from tf_autoseg.datasets import potsdam
from tf_autoseg.datasets import synthetic
from tf_autoseg.datasets.catalog import Dataset
from tf_autoseg.datasets.catalog import get
from tf_autoseg.datasets.catalog import names
from tf_autoseg.datasets.catalog import register
from tf_autoseg.datasets.config import DataConfig

__all__ = ["DataConfig", "Dataset", "get", "names", "register"]

_BUILT_IN = tuple(m.DATASET for m in (synthetic, potsdam, cocostuff, folder, dubai, camvid))
for _dataset in _BUILT_IN:
    register(_dataset)

# The built-in datasets the programs take by name (`--dataset`), and those `prepare` writes.
NAMES = tuple(dataset.name for dataset in _BUILT_IN)
PREPARED = tuple(dataset.name for dataset in _BUILT_IN if dataset.prepared is not None)
