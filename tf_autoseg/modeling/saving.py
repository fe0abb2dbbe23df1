"""Loading a saved `AutoSegModel` (`.keras`), those of earlier versions included.

Keras stores a subclassed model's weights under the attribute path of each layer. Until
2026-12-06 (main at 8dc798d) the model held its layers itself (`head`, `front_layer`,
`ar_layers`, ...) and its centres and moving marginals as its own weights; since then the
network is one layer (`AutoSegNetwork`), the marginals belong to the objective and the centres
are a layer. `load` reads either: a file of the older layout is rewritten to today's paths in
a temporary copy (same weights, same optimizer state), so older runs' checkpoints resume and
their `model.keras` files evaluate, segment and export as before.
"""

import io
import json
import tempfile
import zipfile
from pathlib import Path

WEIGHTS = "model.weights.h5"
CONFIG = "config.json"
NETWORK = "layers/auto_seg_network"  # where today's model keeps its network's weights


def load(path, compile=True):
    """The model saved in the `.keras` file `path`, in today's layout whatever its version."""
    import keras

    from tf_autoseg.modeling import model  # noqa: F401 - registers the classes for loading

    if not older_layout(path):
        return keras.saving.load_model(path, compile=compile)
    with tempfile.TemporaryDirectory() as folder:
        converted = Path(folder) / Path(path).name
        convert(path, converted)
        return keras.saving.load_model(converted, compile=compile)


def older_layout(path):
    """Whether the `.keras` file holds an `AutoSegModel` saved before the network was a layer
    (its weights file has the main head at the top)."""
    import h5py

    with zipfile.ZipFile(path) as archive:
        if WEIGHTS not in archive.namelist():
            return False
        with h5py.File(io.BytesIO(archive.read(WEIGHTS)), "r") as weights:
            return "head" in weights


def convert(source, target):
    """Writes `target`: the older-layout `.keras` file `source` with its weights at today's
    paths (the configuration and the optimizer's state are the same)."""
    import h5py

    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    options = json.loads(members[CONFIG])["config"]
    own = _own_weights(options)
    buffer = io.BytesIO()
    with (
        h5py.File(io.BytesIO(members[WEIGHTS]), "r") as old,
        h5py.File(buffer, "w") as new,
    ):

        def copy(name, item):
            mapped = _new_path(name, own)
            if isinstance(item, h5py.Dataset):
                new.create_dataset(mapped, data=item[()])
            else:
                new.require_group(mapped)

        old.visititems(copy)
    members[WEIGHTS] = buffer.getvalue()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _own_weights(options):
    """{older path of a weight the model held itself: today's path}: the moving marginals
    (created first, main then overclustering head), then the centres and their scale."""
    owned = []
    if options.get("marginal_momentum", 0.0) > 0:
        owned += ["layers/objective/vars/0"]
        if options.get("overclustering"):
            owned += ["layers/objective/vars/1"]
    if options.get("labels_from", "head") != "head":
        owned += ["centres/vars/0", "centres/vars/1"]
    return {f"vars/{i}": path for i, path in enumerate(owned)}


def _new_path(name, own):
    first, _, rest = name.partition("/")
    if first in ("front_layer", "ar_layers", "head"):
        return f"{NETWORK}/{name}"
    if first == "layers" and rest:  # the overclustering head, the one layer saved there
        rest = rest.partition("/")[2]
        return f"{NETWORK}/over_head" + (f"/{rest}" if rest else "")
    return own.get(name, name)
