"""SavedModel export of a trained `AutoSegModel` for TensorFlow Serving.

`export_model` writes `<output_dir>/<name>/<version>/` (the layout TensorFlow
Serving watches) with `keras.export.ExportArchive`, never overwriting an
existing version, and keeps `<output_dir>/models.config` (a TensorFlow Serving
model server config) listing the model. The export holds two signatures; both
take images of any height and width and compute, inside the graph, what
`model.predict_labels` and `model(images)` compute:

- `serving_default`: `images` uint8 [batch, height, width, C] -> `labels`
  int32 [batch, height, width], `probabilities` float32 [batch, height, width, K].
- `serving_float`: the same with `images` float32 in [0, 1].

With a mapping of clusters to named classes (`tf_autoseg.serving.classes`, written by
`name_clusters`), `labels` are the user's class ids (ignored clusters: the mapping's
`ignore_id`, 255), `clusters` the cluster ids of the mapping's head and `probabilities` that
head's. The mapping travels with the model, readable without tf_autoseg: as
`<version>/assets.extra/classes.json` (TensorFlow Serving ignores that file) and as the
string variable `tf.saved_model.load(<version>).classes_json[0]`.

Command line (`--model` is a training run directory holding `model.keras`, or
a `.keras` file; `tf_autoseg.serving.loading` loads it):

    python -m tf_autoseg.export --model runs/f2 --name autoseg --output_dir saved_models

TensorFlow is imported when a function needs it, so the command answers `--help` and
checks its flags first. An export killed midway leaves a hidden `.export-<hex>/` folder
(never a version folder); the next export of the same name removes it.

Long (about 340 lines) because it is the one owner of the export's layout: the serving
signatures, atomic versioned publishing under a lock, models.config and the command.
"""

import contextlib
import os
import re
import shutil
import uuid
from pathlib import Path

from absl import logging
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tf_autoseg.serving import classes as named_classes
from tf_autoseg.serving import loading
from tf_autoseg.serving import paths

CONFIG_FILE = "models.config"
# TensorFlow Serving puts the name in REST paths (/v1/models/<name>:predict).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Temporary export folders: TensorFlow Serving loads only all-digit folder names.
TEMP_PREFIX = ".export-"


def serving_functions(model, classes=None):
    """The two serving functions of `model`, with their input signatures.

    Args:
        model: an `AutoSegModel`.
        classes: None, or a `tf_autoseg.serving.classes.Classes` for one of the model's
            heads: `labels` are then class ids, and `clusters` is added.

    Returns:
        A dict signature name -> (function, input signature): `serving_default`
        takes uint8 images, `serving_float` float32 images in [0, 1]; both
        take any height and width, and return a dict with `labels` (int32
        [batch, height, width]) and `probabilities` (float32
        [batch, height, width, K]).

    Raises:
        ValueError: `classes` is for a head the model lacks, or another cluster count.
    """
    import tensorflow as tf

    from tf_autoseg.modeling.model import cluster_ids

    channels = model.image_shape[-1]
    if classes is not None:
        named_classes.check_model(model, classes)
        lookup = tf.constant(classes.lookup())

    def outputs(images):
        if classes is None:
            probabilities = model(images, training=False)
            return {"labels": cluster_ids(probabilities), "probabilities": probabilities}
        probabilities = model.inference(images, heads=(classes.head,))[classes.head]
        clusters = cluster_ids(probabilities)
        return {
            "labels": tf.gather(lookup, clusters),
            "clusters": clusters,
            "probabilities": probabilities,
        }

    # The signature's TensorSpec is checked when the function is called from Python, but a
    # server feeding the graph directly skips that check, and a tensor of another rank would
    # reach the convolutions (where oneDNN aborts the process): the model's own front door,
    # `AutoSegModel.inference` (`transforms.checked_images`), checks rank, channels, size and
    # range inside the graph, before any layer.
    def spec(dtype):
        return [tf.TensorSpec([None, None, None, channels], dtype, name="images")]

    return {
        "serving_default": (outputs, spec(tf.uint8)),
        "serving_float": (outputs, spec(tf.float32)),
    }


def _write_archive(model, directory, classes=None):
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, (function, signature) in serving_functions(model, classes).items():
        archive.add_endpoint(name, function, input_signature=signature)
    if classes is not None:
        text = tf.Variable(classes.dumps(), trainable=False, name="classes_json")
        archive.add_variable_collection("classes_json", [text])
    archive.write_out(str(directory), verbose=False)
    if classes is not None:
        (Path(directory) / named_classes.IN_EXPORT).parent.mkdir(exist_ok=True)
        (Path(directory) / named_classes.IN_EXPORT).write_text(classes.dumps())


def export_model(model, name, output_dir="saved_models", serving_root="/models", classes=None):
    """Exports `model` as the next version of `<output_dir>/<name>/`.

    The SavedModel is written into a temporary folder inside
    `<output_dir>/<name>/` (a name TensorFlow Serving ignores) and renamed to
    the version folder once complete, so the server never sees a partial
    version; on failure the temporary folder is removed. Then
    `<output_dir>/models.config` lists `name` with base path
    `<serving_root>/<name>`.

    Args:
        model: an `AutoSegModel`, a training run directory holding
            `model.keras`, or a `.keras` file (loaded by `tf_autoseg.serving.loading.load`).
        name: the model name TensorFlow Serving serves it under (letters,
            digits, `_`, `.`, `-`; not starting with `.`, `_` or `-`).
        output_dir: the base directory (`saved_models` by default).
        serving_root: where the server sees `output_dir` (the container
            mount point, `/models` by default), used for `base_path` in
            `models.config`; None writes the absolute local path.
        classes: None (signatures answer cluster ids), or a mapping of the model's clusters
            to named classes: a `tf_autoseg.serving.classes.Classes` or the path of a
            `classes.json`, checked against the model before anything is written.

    Returns:
        The `Path` of the new version folder, `<output_dir>/<name>/<version>`.

    Raises:
        ValueError: a bad `name` or `output_dir`, `model` is not an
            `AutoSegModel` (a SavedModel included), or `models.config` cannot be parsed.
        FileNotFoundError: `model` names a missing file or run directory.
    """
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(
            f"`name` must match {NAME_PATTERN.pattern} (letters, digits, '_', '.', '-'). "
            f"Received: name={name!r}"
        )
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(
            f"`output_dir` must be a directory (or a new path). Received: {str(output_dir)!r}, "
            "an existing file"
        )
    model = loading.load(model, saved_model=False)
    if classes is not None:
        classes = named_classes.for_model(model, classes)
    read_models_config(output_dir)  # a broken models.config fails before the export
    model_dir = output_dir / name
    created = not model_dir.exists()
    model_dir.mkdir(parents=True, exist_ok=True)
    with _locked(model_dir) as locked:
        if locked:  # no other export of this name runs: hidden folders are a killed one's
            remove_leftovers(model_dir)
        # Not tempfile.mkdtemp: its 0700 mode would survive the rename and hide
        # the version from a server running as another user.
        temp = model_dir / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        temp.mkdir()
        try:
            _write_archive(model, temp, classes)
            target = _publish(temp, model_dir)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            if created and not any(model_dir.iterdir()):
                model_dir.rmdir()
            raise
    base_path = (
        str(model_dir.resolve()) if serving_root is None else f"{serving_root.rstrip('/')}/{name}"
    )
    write_models_config(output_dir, name, base_path)
    return target


def remove_leftovers(model_dir):
    """Removes the temporary folders of killed exports from `model_dir`; returns their paths.

    Call it only while no other export of the model runs (`export_model` holds a lock on
    `model_dir` meanwhile): a running export's temporary folder would go too.
    """
    removed = []
    for path in sorted(Path(model_dir).glob(f"{TEMP_PREFIX}*")):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
            logging.info("Removed %s, left by an interrupted export.", path)
    return removed


@contextlib.contextmanager
def _locked(directory):
    """Holds an exclusive `flock` on `directory` for the block; yields whether it got one.

    Exports of one name (and updates of one models.config) then run one at a time. Where
    locks are not available (no `fcntl`, a file system that refuses them) it yields False.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield False
        return
    handle = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            locked = True
        except OSError:
            locked = False
        yield locked
    finally:
        os.close(handle)  # releases the lock


def _publish(temp, model_dir):
    # rename() fails on a non-empty target, so a version another export took
    # meanwhile is never overwritten: take the next number instead.
    for _ in range(100):
        target = model_dir / str(max(paths.versions(model_dir), default=0) + 1)
        try:
            os.rename(temp, target)
            return target
        except OSError:
            if not target.exists():
                raise
    raise RuntimeError(f"could not claim a new version folder in {str(model_dir)!r}")


def read_models_config(output_dir):
    """The `ModelServerConfig` in `<output_dir>/models.config` (empty if absent).

    Args:
        output_dir: the base directory of the exports.

    Returns:
        A `tensorflow.serving.ModelServerConfig` message.

    Raises:
        ValueError: the file exists but is not a text-format ModelServerConfig.
    """
    path = Path(output_dir) / CONFIG_FILE
    config = model_server_config_pb2.ModelServerConfig()
    if path.exists():
        try:
            text_format.Parse(path.read_text(), config)
        except text_format.ParseError as error:
            raise ValueError(
                f"{str(path)!r} is not a text-format tensorflow.serving.ModelServerConfig: {error}"
            ) from error
    return config


def write_models_config(output_dir, name, base_path):
    """Adds or updates `name` in `<output_dir>/models.config`, keeping other entries.

    Args:
        output_dir: the base directory of the exports.
        name: the model name.
        base_path: the directory holding its version folders, as the server sees it.

    Returns:
        The `Path` of `models.config`.

    The file is replaced atomically (a polling server never reads half of
    it), under a lock on `output_dir`, so two exports updating it at the same
    moment both keep their entry (where the file system supports `flock`).
    """
    path = Path(output_dir) / CONFIG_FILE
    with _locked(output_dir) as locked:
        if locked:  # no other update runs: hidden copies are a killed one's
            for stale in Path(output_dir).glob(f".{CONFIG_FILE}.*"):
                stale.unlink(missing_ok=True)
        config = read_models_config(output_dir)
        entries = config.model_config_list.config
        entry = next((e for e in entries if e.name == name), None) or entries.add()
        entry.name = name
        entry.base_path = base_path
        entry.model_platform = "tensorflow"
        temp = path.with_name(f".{CONFIG_FILE}.{uuid.uuid4().hex}")
        try:
            temp.write_text(text_format.MessageToString(config))
            os.replace(temp, path)
        finally:
            temp.unlink(missing_ok=True)
    return path
